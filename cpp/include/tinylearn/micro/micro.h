// tinylearn micro: the freestanding int8 inference core.
//
// Usage (bare metal or host, same source):
//
//   #include "tinylearn/micro/micro.h"
//   #include "sine_model.h"                 // written by q.export_c(dir, "sine_model")
//
//   static uint8_t arena[SINE_MODEL_ARENA_BYTES] __attribute__((aligned(4)));
//   tlm_model model;
//   if (tlm_model_init(&model, sine_model, sine_model_len) != TLM_OK) { /* corrupt blob */ }
//   tlm_input(&model, arena)[0] = x_q;      // int8 input, quantized with the input scale/zero point
//   if (tlm_invoke(&model, arena, sizeof arena) != TLM_OK) { /* ... */ }
//   int8_t y_q = tlm_output(&model, arena)[0];
//
// Rules of this core: C++17 compiled with a C-compatible API, no heap, no exceptions, no RTTI,
// no static constructors. The model blob is read in place (it may live in flash) and is never
// written; every tensor of the running model lives in the caller's arena. tlm_model_init()
// validates the whole blob once (checksum, bounds, shapes, accumulator ranges), so tlm_invoke()
// never reads or writes outside the blob or the arena, whatever the blob holds.
//
// The blob format is documented in tinylearn/micro/format.h.
#ifndef TINYLEARN_MICRO_MICRO_H
#define TINYLEARN_MICRO_MICRO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Status codes. Append-only: the numbers are part of the Python error messages and of firmware logs.
typedef enum tlm_status {
  TLM_OK = 0,
  TLM_ERR_NULL = 1,               // a required pointer was null
  TLM_ERR_TRUNCATED = 2,          // the blob is shorter than its header says, or than a header
  TLM_ERR_MAGIC = 3,              // not a tinylearn model blob
  TLM_ERR_VERSION = 4,            // a format version this core does not know (newer)
  TLM_ERR_CHECKSUM = 5,           // CRC-32 mismatch: the blob is corrupted
  TLM_ERR_ALIGNMENT = 6,          // the blob or the arena is not 4-byte aligned
  TLM_ERR_BAD_TENSOR = 7,         // a tensor record is invalid (type, rank, dims, offset, size)
  TLM_ERR_BAD_OP = 8,             // an operator record is invalid (tensor index, params range)
  TLM_ERR_UNKNOWN_OP = 9,         // an operator code this core does not implement (or was built
                                  // without: cpp/micro/ops_config.h)
  TLM_ERR_SHAPE = 10,             // operator operands do not have compatible shapes or types
  TLM_ERR_ACCUMULATOR_RANGE = 11, // shapes or biases for which the int32 accumulator could overflow
  TLM_ERR_ARENA_TOO_SMALL = 12,   // the arena given to tlm_invoke is smaller than the model needs
  TLM_ERR_BAD_PARAMS = 13,        // operator parameters out of their valid range
  TLM_ERR_BAD_HEADER = 14,        // header fields out of range (counts, header size, io tensors)
  TLM_ERR_UNUSED_TENSOR = 15,     // a tensor that no operator reads or writes (and that is not
                                  // the model's input or output; ops_config.h)
} tlm_status;

// A validated model: a few fields pointing into the caller's blob. Plain data, caller-owned.
typedef struct tlm_model {
  const uint8_t* blob;
  uint32_t blob_bytes;
  uint32_t arena_bytes;
  uint16_t tensor_count;
  uint16_t op_count;
  uint16_t input_tensor;
  uint16_t output_tensor;
  // Where tlm_model_init found the blob invalid: the index of the operator whose record, operands
  // or parameters it rejected, and of the tensor whose record it rejected (or that no operator
  // uses); TLM_NO_INDEX for neither. Both TLM_NO_INDEX after TLM_OK. (Written by cores built with
  // TLM_WITH_HOST_VALIDATION, cpp/micro/ops_config.h: the host's; firmware leaves them out.)
  uint16_t error_op;
  uint16_t error_tensor;
} tlm_model;

#define TLM_NO_INDEX 0xFFFFu

// A tensor's description, as read from the blob.
typedef struct tlm_tensor_info {
  uint8_t type;        // TLM_TYPE_INT8, TLM_TYPE_INT32 or TLM_TYPE_FLOAT32 (format.h)
  uint8_t rank;        // 1..4
  int32_t dims[4];     // dims[rank..3] are 1
  uint32_t bytes;      // element count times element size
  float scale;         // real = scale * (q - zero_point); 0 for tensors without quantization
  int32_t zero_point;
} tlm_tensor_info;

// Validates `blob` (bytes long, 4-byte aligned) and fills `model`. Nothing else reads the blob's
// header, so after TLM_OK every other call may trust it. On failure `model` is unusable, and its
// error_op / error_tensor say which operator or tensor was rejected.
tlm_status tlm_model_init(tlm_model* model, const void* blob, size_t bytes);

// Arena bytes the model needs, exact (computed by the memory planner at conversion).
uint32_t tlm_arena_bytes(const tlm_model* model);

// Describes tensor `index` (< tensor_count). Returns TLM_ERR_BAD_TENSOR for an index out of range.
tlm_status tlm_tensor(const tlm_model* model, uint32_t index, tlm_tensor_info* info);

// The model's input and output tensors inside `arena` (one sample), for int8 models. For a
// float32 input or output (a model that starts with QUANTIZE or ends with DEQUANTIZE; the type is
// in tlm_tensor_info) these return the same address as tlm_input_data / tlm_output_data, as bytes.
// Null when model or arena is null.
int8_t* tlm_input(const tlm_model* model, void* arena);
int8_t* tlm_output(const tlm_model* model, void* arena);

// The same tensors for any element type: int8_t* or float* (4-byte aligned) by
// tlm_tensor_info.type. Null when model or arena is null.
void* tlm_input_data(const tlm_model* model, void* arena);
void* tlm_output_data(const tlm_model* model, void* arena);

// Runs every operator once. `arena` must be 4-byte aligned and at least tlm_arena_bytes() long.
tlm_status tlm_invoke(const tlm_model* model, void* arena, size_t arena_bytes);

// Host execution (what the Python extension uses; a device needs none of it). On x86-64 hosts
// with AVX2 the heaviest kernels have fast paths (cpp/micro/host_simd.h) that need scratch memory
// outside the arena, and an operator may be split into parts that run on several threads. The
// outputs are the same bytes tlm_invoke writes, always.
typedef void (*tlm_task_fn)(void* arg, int32_t part);
typedef struct tlm_host {
  void* scratch;         // workers * scratch_bytes bytes, one slice per part (any alignment)
  size_t scratch_bytes;  // per worker, at least tlm_host_scratch_bytes(model)
  int32_t workers;       // >= 1: the most parts one operator is split into
  // Runs task(arg, k) for every k in [0, parts), parts <= workers, on any threads, and returns
  // when all are done. Null: every operator runs whole on the calling thread.
  void (*parallel)(void* ctx, int32_t parts, tlm_task_fn task, void* arg);
  void* ctx;
  const void* packed;    // tlm_host_pack's weights for this model (32-byte aligned), or null
  // An operator whose output overlaps its input in the arena (the planner lets a convolution's
  // output trail its input) runs (in parts) into this buffer, then is copied into place; when it
  // is null or too small (< tlm_host_staging_bytes), such an operator runs whole on one thread,
  // in place.
  void* staging;
  size_t staging_bytes;
} tlm_host;

// Staging bytes that let every operator of the model be split over threads.
uint32_t tlm_host_staging_bytes(const tlm_model* model);

// Scratch bytes one worker needs for the host fast paths of this model (0 where there are none).
uint32_t tlm_host_scratch_bytes(const tlm_model* model);

// Some fast paths read weights rearranged once, outside the blob (and long ADDs a 64 KB table of
// their outputs, one per pair of int8 inputs, made by the add kernel): tlm_host_pack writes them into
// `packed` (tlm_host_packed_bytes(model) bytes, 32-byte aligned), for tlm_host.packed.
uint32_t tlm_host_packed_bytes(const tlm_model* model);
tlm_status tlm_host_pack(const tlm_model* model, void* packed, size_t bytes);

// tlm_invoke with host fast paths and threads; host == null is tlm_invoke.
tlm_status tlm_invoke_host(const tlm_model* model, void* arena, size_t arena_bytes,
                           const tlm_host* host);

// tlm_invoke_host on `samples` arenas laid end to end, each `arena_stride` bytes (a multiple of 4,
// at least tlm_arena_bytes), operator by operator over all of them, so that a fully connected
// operator reads its weights once for every sample. Each arena ends with the bytes
// tlm_invoke_host would leave in it (host == null: tlm_invoke on each arena).
tlm_status tlm_invoke_host_samples(const tlm_model* model, void* arenas, size_t arena_stride,
                                   int32_t samples, const tlm_host* host);

// A short constant name for a status ("ok", "checksum mismatch", ...). Never null.
const char* tlm_status_str(tlm_status status);

#ifdef __cplusplus
}
#endif

#endif  // TINYLEARN_MICRO_MICRO_H
