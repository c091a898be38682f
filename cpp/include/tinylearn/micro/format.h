// tinylearn micro: the model blob format, version 1. This file is its one documentation.
//
// A model blob is a single little-endian byte string, read in place (from flash on a device).
// Every section starts at a 4-byte aligned offset; the blob itself must be 4-byte aligned.
//
//   offset  size  field
//   ------  ----  ----------------------------------------------------------------------------
//        0     4  magic "TLMB"
//        4     2  format version (TLM_FORMAT_VERSION); a reader rejects versions it does not know
//        6     2  header bytes (32)
//        8     4  total bytes of the blob
//       12     4  CRC-32 (IEEE 802.3, as zlib.crc32) of bytes [16, total)
//       16     4  arena bytes: the exact peak the memory planner computed
//       20     2  tensor count  (<= TLM_MAX_TENSORS)
//       22     2  operator count (<= TLM_MAX_OPS)
//       24     2  input tensor index  (an int8 arena tensor)
//       26     2  output tensor index (an int8 arena tensor)
//       28     4  flags (0 in version 1)
//       32        tensor records, 32 bytes each (tlm_tensor_record)
//        .        operator records, 32 bytes each (tlm_op_record)
//        .        payload: operator parameters and constant tensor data, each 4-byte aligned
//
// Quantization follows the TFLite int8 spec: real = scale * (q - zero_point); activations are
// asymmetric int8, weights symmetric int8 (zero point 0, per tensor or per channel), biases int32
// with scale input_scale * weight_scale and zero point 0. Requantization multipliers are
// precomputed by the converter (exactly as TFLite's QuantizeMultiplier does) and stored in the
// operator parameters, so the core does integer arithmetic only.
//
// Enumerations below are append-only: a number, once given, keeps its meaning forever.
#ifndef TINYLEARN_MICRO_FORMAT_H
#define TINYLEARN_MICRO_FORMAT_H

#include <stdint.h>

#define TLM_MAGIC_0 'T'
#define TLM_MAGIC_1 'L'
#define TLM_MAGIC_2 'M'
#define TLM_MAGIC_3 'B'
#define TLM_FORMAT_VERSION 1u
#define TLM_HEADER_BYTES 32u
#define TLM_TENSOR_RECORD_BYTES 32u
#define TLM_OP_RECORD_BYTES 32u
#define TLM_MAX_TENSORS 1024u
#define TLM_MAX_OPS 1024u
#define TLM_NO_TENSOR 0xFFFFu

// Tensor element types.
enum tlm_type { TLM_TYPE_INT8 = 1, TLM_TYPE_INT32 = 2 };

// Where a tensor's bytes live.
enum tlm_storage {
  TLM_STORAGE_ARENA = 1,  // offset is a byte offset into the arena
  TLM_STORAGE_BLOB = 2,   // offset is a byte offset into the blob (constant data)
};

// Tensor record (32 bytes):
//    0  u8   type (tlm_type)
//    1  u8   rank, 1..4
//    2  u8   storage (tlm_storage)
//    3  u8   reserved, 0
//    4  i32  dims[4]; dims >= 1; dims past the rank are 1
//   20  u32  offset (see tlm_storage); 4-byte aligned
//   24  f32  scale (0 when the tensor carries no quantization, e.g. requantization tables)
//   28  i32  zero point

// Operator codes.
enum tlm_opcode {
  TLM_OP_FULLY_CONNECTED = 1,
};

// Operator record (32 bytes):
//    0  u16  opcode (tlm_opcode)
//    2  u8   input count (<= 6)
//    3  u8   output count (<= 2)
//    4  u16  inputs[6]  (TLM_NO_TENSOR for an absent optional input)
//   16  u16  outputs[2]
//   20  u32  params offset in the blob (4-byte aligned)
//   24  u32  params bytes
//   28  u32  reserved, 0

// TLM_OP_FULLY_CONNECTED
//   inputs:  [0] input  int8 arena  [batches, in] (any rank; the last dim is `in`, rest flatten)
//            [1] weights int8 blob  [out, in], symmetric per tensor (zero point 0)
//            [2] bias   int32 blob  [out], or TLM_NO_TENSOR
//   outputs: [0] output int8 arena  [batches, out]
//   params:  tlm_fully_connected_params (6 x i32)
typedef struct tlm_fully_connected_params {
  int32_t input_offset;       // -input zero point, in [-127, 128]
  int32_t output_offset;      // output zero point, in [-128, 127]
  int32_t output_multiplier;  // Q31 fixed point, in [2^30, 2^31) (or 0 for a zero scale)
  int32_t output_shift;       // left shift if > 0, right shift if < 0; in [-31, 30]
  int32_t activation_min;     // fused activation clamp, -128 <= min <= max <= 127
  int32_t activation_max;
} tlm_fully_connected_params;

#endif  // TINYLEARN_MICRO_FORMAT_H
