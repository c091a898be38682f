// Model blob validation and the interpreter loop of the freestanding core.
#include <string.h>

#include "ops_config.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"
#include "host_simd.h"
#if TLM_WITH_SPARSE
#include "sparse_s8.h"
#endif
#if TLM_WITH_FULLY_CONNECTED
#include "fully_connected_s8.h"
#if TLM_WITH_SPARSE
#include "fully_connected_s8_sparse.h"
#endif
#endif
#if TLM_WITH_CONV_2D
#include "conv2d_s8.h"
#if TLM_WITH_SPARSE
#include "conv2d_s8_sparse.h"
#endif
#endif
#if TLM_WITH_DEPTHWISE_CONV_2D
#include "depthwise_conv2d_s8.h"
#endif
#if TLM_WITH_MAX_POOL_2D
#include "max_pool2d_s8.h"
#endif
#if TLM_WITH_AVERAGE_POOL_2D
#include "avg_pool2d_s8.h"
#endif
#if TLM_WITH_MEAN
#include "mean_s8.h"
#endif
#if TLM_WITH_ADD
#include "add_s8.h"
#endif
#if TLM_WITH_CONCATENATION
#include "concatenation_s8.h"
#endif
#if TLM_WITH_SOFTMAX
#include "softmax_s8.h"
#endif
#if TLM_WITH_RELU
#include "relu_s8.h"
#endif
#if TLM_WITH_QUANTIZE
#include "quantize_s8.h"
#endif
#if TLM_WITH_DEQUANTIZE
#include "dequantize_s8.h"
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tinylearn micro reads its little-endian blob in place: big-endian targets are not supported"
#endif

namespace {

// Unaligned-safe little-endian reads (memcpy compiles to plain loads on Cortex-M4 and x86).
inline uint16_t rd_u16(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return v; }
inline uint32_t rd_u32(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }
inline int32_t rd_i32(const uint8_t* p) { int32_t v; memcpy(&v, p, 4); return v; }
inline float rd_f32(const uint8_t* p) { float v; memcpy(&v, p, 4); return v; }

inline bool aligned4(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 3u) == 0; }

// Bitwise CRC-32 (reflected, polynomial 0xEDB88320), as zlib.crc32. No table: it runs once at
// init, and a table would cost 1 KB of flash.
uint32_t crc32(const uint8_t* p, uint32_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (uint32_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

const uint8_t* tensor_record(const tlm_model* m, uint32_t i) {
  return m->blob + TLM_HEADER_BYTES + i * TLM_TENSOR_RECORD_BYTES;
}
const uint8_t* op_record(const tlm_model* m, uint32_t i) {
  return m->blob + TLM_HEADER_BYTES + (m->tensor_count + i) * TLM_OP_RECORD_BYTES;
}

struct Tensor {
  uint8_t type, rank, storage;
  int32_t dims[4];
  uint32_t offset, bytes;
};

void read_tensor(const tlm_model* m, uint32_t i, Tensor* t) {
  const uint8_t* r = tensor_record(m, i);
  t->type = r[0];
  t->rank = r[1];
  t->storage = r[2];
  for (int k = 0; k < 4; ++k) t->dims[k] = rd_i32(r + 4 + 4 * k);
  t->offset = rd_u32(r + 20);
#if TLM_WITH_SPARSE
  if (t->type == TLM_TYPE_INT8_SPARSE) {  // the encoding's bytes (checked by check_tensor)
    t->bytes = static_cast<uint32_t>(
        tlm_sparse_s8_bytes(static_cast<uint32_t>(t->dims[0]), rd_u32(m->blob + t->offset)));
    return;
  }
#endif
  uint32_t n = 1;
  for (int k = 0; k < t->rank; ++k) n *= static_cast<uint32_t>(t->dims[k]);
  t->bytes = n * (t->type == TLM_TYPE_INT8 ? 1u : 4u);
}

#if TLM_WITH_SPARSE
// The sections of a sparse tensor (validated by check_tensor).
inline tlm_sparse_s8 sparse_view(const tlm_model* m, const Tensor& t) {
  int32_t cols = 1;
  for (int k = 1; k < t.rank; ++k) cols *= t.dims[k];
  return tlm_sparse_s8_view(m->blob + t.offset, t.dims[0], cols);
}
#endif

// Validates one tensor record. `payload` is where constant data may start.
tlm_status check_tensor(const tlm_model* m, uint32_t i, uint32_t payload) {
  const uint8_t* r = tensor_record(m, i);
  const uint8_t type = r[0], rank = r[1], storage = r[2];
  // float32 tensors live in the arena only (no operator takes float constants); sparse int8
  // tensors are constants of rank 2 or more (rows, and the rest of the dims per row).
  if ((type != TLM_TYPE_INT8 && type != TLM_TYPE_INT32 &&
       (type != TLM_TYPE_FLOAT32 || storage != TLM_STORAGE_ARENA) &&
#if TLM_WITH_SPARSE
       (type != TLM_TYPE_INT8_SPARSE || storage != TLM_STORAGE_BLOB || rank < 2)
#else
       true
#endif
           ) ||
      rank < 1 || rank > 4 || (storage != TLM_STORAGE_ARENA && storage != TLM_STORAGE_BLOB) ||
      r[3] != 0)
    return TLM_ERR_BAD_TENSOR;
  uint64_t count = 1;
  for (int k = 0; k < 4; ++k) {
    const int32_t d = rd_i32(r + 4 + 4 * k);
    if (d < 1 || (k >= rank && d != 1)) return TLM_ERR_BAD_TENSOR;
    count *= static_cast<uint64_t>(d);
    if (count > 0x10000000u) return TLM_ERR_BAD_TENSOR;  // 2^28 elements: no overflow below
  }
  const uint32_t offset = rd_u32(r + 20);
  if (offset & 3u) return TLM_ERR_BAD_TENSOR;
#if TLM_WITH_SPARSE
  if (type == TLM_TYPE_INT8_SPARSE) {
    if (offset < payload || offset >= m->blob_bytes) return TLM_ERR_BAD_TENSOR;
    const int32_t rows = rd_i32(r + 4);
    const uint64_t cols = count / static_cast<uint64_t>(rows);
    if (cols > TLM_SPARSE_MAX_COLS) return TLM_ERR_BAD_TENSOR;
    return tlm_sparse_s8_check(m->blob + offset, m->blob_bytes - offset, rows,
                               static_cast<int32_t>(cols), nullptr, nullptr);
  }
#endif
  const uint64_t bytes = count * (type == TLM_TYPE_INT8 ? 1u : 4u);
  const uint64_t end = uint64_t{offset} + bytes;
  if (storage == TLM_STORAGE_ARENA ? end > m->arena_bytes
                                   : (offset < payload || end > m->blob_bytes))
    return TLM_ERR_BAD_TENSOR;
  return TLM_OK;
}

bool overlap(const Tensor& a, const Tensor& b) {
  return a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
}

// Reads operand `t` of an operator and checks its type and storage.
tlm_status operand(const tlm_model* m, uint16_t index, uint8_t type, uint8_t storage, Tensor* t) {
  if (index >= m->tensor_count) return TLM_ERR_BAD_OP;
  read_tensor(m, index, t);
  return (t->type == type && t->storage == storage) ? TLM_OK : TLM_ERR_SHAPE;
}

// Reads a weights operand: int8 constant, dense, or sparse where `sparse_ok` (and the build has
// sparse weights).
tlm_status weights_operand(const tlm_model* m, uint16_t index, bool sparse_ok, Tensor* t) {
  if (index >= m->tensor_count) return TLM_ERR_BAD_OP;
  read_tensor(m, index, t);
  const bool type_ok = t->type == TLM_TYPE_INT8 ||
                       (TLM_WITH_SPARSE && sparse_ok && t->type == TLM_TYPE_INT8_SPARSE);
  return (type_ok && t->storage == TLM_STORAGE_BLOB) ? TLM_OK : TLM_ERR_SHAPE;
}

// ---- Operators ------------------------------------------------------------------------------
//
// Each operator but FULLY_CONNECTED has one function `op_<name>(m, r, arena)` that decodes its
// record (operands, shapes, parameters). With arena == nullptr (tlm_model_init) it validates
// everything: record layout, operand types and storage, shapes, aliasing, then the kernel's own
// *_check (parameter ranges, accumulator bounds). With an arena (tlm_invoke, after a successful
// init) it decodes the same way and runs the kernel: one code path for validation and execution,
// and a few loads per operand on every invoke instead of a cache.

// The record has exactly these operand counts and parameter bytes.
inline bool bad_record(const uint8_t* r, uint8_t inputs, uint8_t outputs, uint32_t params_bytes) {
  return r[2] != inputs || r[3] != outputs || rd_u32(r + 24) != params_bytes;
}

// Both tensors have the same rank and dims.
inline bool same_dims(const Tensor& a, const Tensor& b) {
  if (a.rank != b.rank) return false;
  for (int k = 0; k < 4; ++k)
    if (a.dims[k] != b.dims[k]) return false;
  return true;
}

// An elementwise operator may run in place: output and input exactly the same bytes, or disjoint.
inline bool alias_or_disjoint(const Tensor& a, const Tensor& b) {
  return (a.offset == b.offset && a.bytes == b.bytes) || !overlap(a, b);
}

#if TLM_WITH_CONV_2D || TLM_WITH_DEPTHWISE_CONV_2D || TLM_WITH_MAX_POOL_2D || \
    TLM_WITH_AVERAGE_POOL_2D
// The input and output of a window operator are disjoint, or the output trails the input by at
// least tlm_detail::window_lead (nn_types.h); any other overlap is rejected.
inline bool window_operands_ok(const Tensor& in, const Tensor& out, int32_t stride_h,
                               int32_t stride_w, int32_t dilation_h, int32_t dilation_w,
                               int32_t pad_top, int32_t pad_left) {
  if (!overlap(in, out)) return true;
  if (in.rank != 4 || out.rank != 4) return false;
  return int64_t{out.offset} +
             tlm_detail::window_lead(in.dims[0], in.dims[1], in.dims[2], in.dims[3], out.dims[1],
                                     out.dims[2], out.dims[3], stride_h, stride_w, dilation_h,
                                     dilation_w, pad_top, pad_left) <=
         int64_t{in.offset};
}
#endif

// Tensors i and j carry the same quantization (scale and zero point, bit for bit).
inline bool same_quantization(const tlm_model* m, uint16_t i, uint16_t j) {
  const uint8_t *a = tensor_record(m, i) + 24, *b = tensor_record(m, j) + 24;
  return rd_u32(a) == rd_u32(b) && rd_u32(a + 4) == rd_u32(b + 4);  // no newlib memcmp
}

inline int32_t zero_point(const tlm_model* m, uint16_t i) {
  return rd_i32(tensor_record(m, i) + 28);
}

// Copies the operator's parameters (the blob is a byte string, possibly in flash).
template <typename P>
inline void read_params(const tlm_model* m, const uint8_t* r, P* p) {
  memcpy(p, m->blob + rd_u32(r + 20), sizeof(P));
}

// A constant tensor's data: 4-byte aligned inside the 4-byte aligned blob.
template <typename T>
inline const T* blob_data(const tlm_model* m, const Tensor& t) {
  return reinterpret_cast<const T*>(m->blob + t.offset);
}

// Elements of an int8 tensor (< 2^28, check_tensor).
inline int32_t count(const Tensor& t) { return static_cast<int32_t>(t.bytes); }

#if TLM_WITH_FULLY_CONNECTED
// Everything one fully connected operator needs, read from its record: the fixed-point variant
// (24-byte params) or TFLite's reference requantization (36-byte params, optional scales input).
struct FcOp {
  tlm_fully_connected_ref_params params;  // .base only, for the fixed-point variant
  tlm_fc_dims dims;
  Tensor input, weights, bias, output, scales;
  bool has_bias, ref, has_scales, sparse;
};

tlm_status read_fc(const tlm_model* m, const uint8_t* r, FcOp* op) {
  const uint32_t params_bytes = rd_u32(r + 24);
  op->ref = params_bytes == sizeof(tlm_fully_connected_ref_params);
#if !TLM_WITH_FULLY_CONNECTED_FIXED_POINT
  if (!op->ref) return TLM_ERR_UNKNOWN_OP;  // the fixed-point variant is compiled out
#endif
  if (r[3] != 1 || !(op->ref ? (r[2] == 3 || r[2] == 4)
                             : (r[2] == 3 && params_bytes == sizeof(tlm_fully_connected_params))))
    return TLM_ERR_BAD_OP;
  tlm_status s;
  if ((s = operand(m, rd_u16(r + 4), TLM_TYPE_INT8, TLM_STORAGE_ARENA, &op->input)) != TLM_OK ||
      (s = weights_operand(m, rd_u16(r + 6), true, &op->weights)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 16), TLM_TYPE_INT8, TLM_STORAGE_ARENA, &op->output)) != TLM_OK)
    return s;
  op->sparse = op->weights.type == TLM_TYPE_INT8_SPARSE;
  const uint16_t bias = rd_u16(r + 8);
  op->has_bias = bias != TLM_NO_TENSOR;
  if (op->has_bias &&
      (s = operand(m, bias, TLM_TYPE_INT32, TLM_STORAGE_BLOB, &op->bias)) != TLM_OK)
    return s;
  const uint16_t scales = r[2] == 4 ? rd_u16(r + 10) : TLM_NO_TENSOR;
  op->has_scales = scales != TLM_NO_TENSOR;
#if TLM_WITH_FULLY_CONNECTED_PER_CHANNEL
  if (op->has_scales &&
      (s = operand(m, scales, TLM_TYPE_INT32, TLM_STORAGE_BLOB, &op->scales)) != TLM_OK)
    return s;
#else
  if (op->has_scales) return TLM_ERR_UNKNOWN_OP;  // per-channel weights are compiled out
#endif
  memcpy(&op->params, m->blob + rd_u32(r + 20), params_bytes);
  // weights [out, in]; the input, any shape, is read as [batches, in] (TFLite's implicit
  // flatten: its element count a multiple of in); output [..., out] of batches rows.
  if (op->weights.rank != 2) return TLM_ERR_SHAPE;
  const int32_t out_n = op->weights.dims[0], in_n = op->weights.dims[1];
  if (op->input.bytes % static_cast<uint32_t>(in_n) != 0 ||
      op->output.dims[op->output.rank - 1] != out_n)
    return TLM_ERR_SHAPE;
  op->dims.batches = static_cast<int32_t>(op->input.bytes / static_cast<uint32_t>(in_n));
  op->dims.in_features = in_n;
  op->dims.out_features = out_n;
  // In 64 bits: batches * out_n can exceed 2^32 (and wrap onto output.bytes) for hostile shapes.
  if (uint64_t{op->output.bytes} !=
      uint64_t{static_cast<uint32_t>(op->dims.batches)} * static_cast<uint32_t>(out_n))
    return TLM_ERR_SHAPE;
  if (op->has_bias && (op->bias.rank != 1 || op->bias.dims[0] != out_n)) return TLM_ERR_SHAPE;
#if TLM_WITH_FULLY_CONNECTED_PER_CHANNEL
  if (op->has_scales &&
      (op->scales.rank != 2 || op->scales.dims[0] != out_n || op->scales.dims[1] != 3))
    return TLM_ERR_SHAPE;
#endif
  if (overlap(op->input, op->output)) return TLM_ERR_BAD_OP;
  return TLM_OK;
}

#if TLM_HOST_AVX2
// ---- Host execution (tlm_invoke_host) ----------------------------------------------------------
//
// A host fast path computes a range [begin, end) of an operator's n items (output rows, output
// columns, elements), each part with its own slice of the host's scratch. Parts write disjoint
// output bytes and read only the inputs, so they may run at once, unless the output overlaps the
// input (an output trailing its input, or an elementwise operator in place): then one part runs,
// in raster order, as the plain kernel does.
struct HostParts {
  const tlm_host* host;
  int32_t n, parts;
  void (*run)(const void* op, int32_t begin, int32_t end, void* scratch);
  const void* op;
};

void run_host_part(void* arg, int32_t k) {
  const HostParts* s = static_cast<const HostParts*>(arg);
  const int32_t begin = static_cast<int32_t>(int64_t{s->n} * k / s->parts);
  const int32_t end = static_cast<int32_t>(int64_t{s->n} * (k + 1) / s->parts);
  s->run(s->op, begin, end, static_cast<uint8_t*>(s->host->scratch) + size_t(k) * s->host->scratch_bytes);
}

// Work (about one multiply-accumulate each) below which a part is not worth a thread hand-off.
constexpr int64_t kHostWorkPerPart = int64_t{1} << 16;

// Parts worth running for `work` over n items (1: the calling thread).
int32_t host_parts(const tlm_host* host, int32_t n, int64_t work) {
  int64_t parts = host->parallel ? work / kHostWorkPerPart : 1;
  if (parts > host->workers) parts = host->workers;
  if (parts > n) parts = n;
  return parts < 1 ? 1 : static_cast<int32_t>(parts);
}

void run_host_parts(const tlm_host* host, int32_t n, int32_t parts,
                    void (*run)(const void*, int32_t, int32_t, void*), const void* op) {
  if (parts <= 1) {
    run(op, 0, n, host->scratch);
    return;
  }
  HostParts s{host, n, parts, run, op};
  host->parallel(host->ctx, s.parts, run_host_part, &s);
}
#endif  // TLM_HOST_AVX2

// Operator `op`'s packed weights in tlm_host.packed (a table of op_count byte offsets, 0 for
// none, then the weights), or null.
#if TLM_HOST_AVX2
inline const void* host_packed(const tlm_host* host, uint32_t op) {
  if (!host->packed) return nullptr;
  uint32_t at;
  memcpy(&at, static_cast<const uint8_t*>(host->packed) + 4 * op, 4);
  return at ? static_cast<const uint8_t*>(host->packed) + at : nullptr;
}

inline uint32_t op_index(const tlm_model* m, const uint8_t* r) {
  return static_cast<uint32_t>((r - op_record(m, 0)) / TLM_OP_RECORD_BYTES);
}

struct FcRun {
  const tlm_fully_connected_ref_params* p;
  const tlm_fc_dims* d;
  const int8_t* input;
  const void* packed;
  const int32_t* scales;
  int32_t samples;
  size_t sample_stride;
  int8_t* output;
};

void fc_host_blocks(const void* op, int32_t begin, int32_t end, void* scratch) {
  const FcRun* a = static_cast<const FcRun*>(op);
  tlm_fully_connected_ref_s8_fast(a->p, a->d, a->input, a->packed, a->scales, a->samples,
                                  a->sample_stride, begin, end, scratch, a->output);
}
#endif

// Samples per operator call: one on a device (the loops fold away), any number on the host.
#if TLM_HOST_AVX2
#define TLM_HOST_SAMPLES(n) (n)
#else
#define TLM_HOST_SAMPLES(n) 1
#endif

// Validates (arena == nullptr) or runs a fully connected operator; on the host, on `samples`
// arenas `sample_stride` bytes apart (each weight read once for them all where there is a fast
// path).
tlm_status op_fully_connected(const tlm_model* m, const uint8_t* r, int8_t* arena,
                              const tlm_host* host = nullptr, int32_t samples = 1,
                              size_t sample_stride = 0) {
  FcOp op;
  const tlm_status s = read_fc(m, r, &op);
  if (s != TLM_OK) return s;
  const int32_t* bias = op.has_bias ? blob_data<int32_t>(m, op.bias) : nullptr;
#if TLM_WITH_FULLY_CONNECTED_PER_CHANNEL
  const int32_t* scales = op.has_scales ? blob_data<int32_t>(m, op.scales) : nullptr;
#else
  const int32_t* scales = nullptr;
#endif
  const int8_t* w = blob_data<int8_t>(m, op.weights);
#if TLM_WITH_SPARSE
  // Sparse weights: the sparse reference kernels, never a host fast path (they pack dense rows).
  if (op.sparse && arena) {
    const tlm_sparse_s8 sw = sparse_view(m, op.weights);
    for (int32_t k = 0; k < TLM_HOST_SAMPLES(samples); ++k) {
      const int8_t* x = arena + k * sample_stride + op.input.offset;
      int8_t* y = arena + k * sample_stride + op.output.offset;
#if TLM_WITH_FULLY_CONNECTED_FIXED_POINT
      if (!op.ref) {
        tlm_fully_connected_s8_sparse(&op.params.base, &op.dims, x, &sw, bias, y);
        continue;
      }
#endif
      tlm_fully_connected_ref_s8_sparse(&op.params, &op.dims, x, &sw, bias, scales, y);
    }
    return TLM_OK;
  }
#endif
#if TLM_WITH_FULLY_CONNECTED_FIXED_POINT
  if (!op.ref) {
    if (!arena) return tlm_fully_connected_s8_check(&op.params.base, &op.dims, bias);
    for (int32_t k = 0; k < TLM_HOST_SAMPLES(samples); ++k)
      tlm_fully_connected_s8(&op.params.base, &op.dims, arena + k * sample_stride + op.input.offset,
                             w, bias, arena + k * sample_stride + op.output.offset);
    return TLM_OK;
  }
#endif
  if (!arena) return tlm_fully_connected_ref_s8_check(&op.params, &op.dims, bias, scales);
#if TLM_HOST_AVX2
  const void* packed = host ? host_packed(host, op_index(m, r)) : nullptr;
  if (packed && tlm_fully_connected_ref_s8_fast_scratch_bytes(&op.dims) <= host->scratch_bytes) {
    const FcRun a{&op.params, &op.dims, arena + op.input.offset, packed, scales, samples,
                  sample_stride, arena + op.output.offset};
    if (tlm_fully_connected_ref_s8_fast(a.p, a.d, a.input, a.packed, a.scales, a.samples,
                                        a.sample_stride, 0, 0, host->scratch,
                                        a.output)) {  // it has a fast path
      const int32_t blocks = tlm_fully_connected_ref_s8_fast_blocks(&op.dims);
      // A multiply-accumulate counts 4: each weight streams from the cache once per row, so a
      // part's share of the weights, not its arithmetic, sets its time. (The FC autoencoder, one
      // sample on two cores, the best of 50-call batches over 6 runs: 5.9-8.4 us, median 6.6, with
      // its two 82 k layers split; 6.9-9.0, median 7.1, with none split; splitting its 16 k layers
      // too was slower.)
      const int64_t work = int64_t{samples} * op.dims.batches * op.dims.in_features *
                           op.dims.out_features * 4;
      run_host_parts(host, blocks, host_parts(host, blocks, work), fc_host_blocks, &a);
      return TLM_OK;
    }
  }
#else
  (void)host;
#endif
  for (int32_t k = 0; k < TLM_HOST_SAMPLES(samples); ++k)
    tlm_fully_connected_ref_s8(&op.params, &op.dims, arena + k * sample_stride + op.input.offset,
                               w, bias, scales, arena + k * sample_stride + op.output.offset);
  return TLM_OK;
}
#endif  // TLM_WITH_FULLY_CONNECTED

#if TLM_WITH_CONV_2D || TLM_WITH_DEPTHWISE_CONV_2D
// CONV_2D and DEPTHWISE_CONV_2D: input, filter, bias (optional), multipliers, shifts -> output.
struct ConvOp {
  tlm_conv_dims dims;
  Tensor input, filter, bias, multipliers, shifts, output;
  bool has_bias, sparse;
};

tlm_status read_conv(const tlm_model* m, const uint8_t* r, bool depthwise, uint32_t params_bytes,
                     ConvOp* op) {
  if (bad_record(r, 5, 1, params_bytes)) return TLM_ERR_BAD_OP;
  tlm_status s;
  if ((s = operand(m, rd_u16(r + 4), TLM_TYPE_INT8, TLM_STORAGE_ARENA, &op->input)) != TLM_OK ||
      (s = weights_operand(m, rd_u16(r + 6), !depthwise, &op->filter)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 10), TLM_TYPE_INT32, TLM_STORAGE_BLOB, &op->multipliers)) !=
          TLM_OK ||
      (s = operand(m, rd_u16(r + 12), TLM_TYPE_INT32, TLM_STORAGE_BLOB, &op->shifts)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 16), TLM_TYPE_INT8, TLM_STORAGE_ARENA, &op->output)) != TLM_OK)
    return s;
  op->sparse = op->filter.type == TLM_TYPE_INT8_SPARSE;
  const uint16_t bias = rd_u16(r + 8);
  op->has_bias = bias != TLM_NO_TENSOR;
  if (op->has_bias &&
      (s = operand(m, bias, TLM_TYPE_INT32, TLM_STORAGE_BLOB, &op->bias)) != TLM_OK)
    return s;
  const Tensor &in = op->input, &f = op->filter, &out = op->output;
  if (in.rank != 4 || f.rank != 4 || out.rank != 4) return TLM_ERR_SHAPE;
  // conv: filter [out_c, kh, kw, in_c]; depthwise: [1, kh, kw, out_c].
  const int32_t out_c = depthwise ? f.dims[3] : f.dims[0];
  if (out.dims[0] != in.dims[0] || out.dims[3] != out_c ||
      (depthwise ? f.dims[0] != 1 : f.dims[3] != in.dims[3]))
    return TLM_ERR_SHAPE;
  const Tensor* per_channel[3] = {&op->multipliers, &op->shifts, op->has_bias ? &op->bias : nullptr};
  for (const Tensor* t : per_channel)
    if (t && (t->rank != 1 || t->dims[0] != out_c)) return TLM_ERR_SHAPE;
  op->dims = {in.dims[0], in.dims[1], in.dims[2], in.dims[3], f.dims[1], f.dims[2],
              out.dims[1], out.dims[2], out_c};
  return TLM_OK;
}
#endif

#if TLM_WITH_CONV_2D || TLM_WITH_DEPTHWISE_CONV_2D
// Validates (arena == nullptr) or runs a CONV_2D (P = tlm_conv2d_params) or DEPTHWISE_CONV_2D
// (P = tlm_depthwise_conv2d_params) with its check and kernel.
#if TLM_HOST_AVX2
template <typename P>
struct ConvRun {
  const P* p;
  const tlm_conv_dims* d;
  const int32_t *multipliers, *shifts, *bias;
  const int8_t *input, *filter;
  int8_t* output;
  const void* packed;
};

#if TLM_WITH_CONV_2D
inline bool conv_host_rows(const ConvRun<tlm_conv2d_params>& a, int32_t begin, int32_t end,
                           void* scratch) {
  return tlm_conv2d_s8_fast(a.p, a.d, a.multipliers, a.shifts, a.input, a.packed, a.bias, begin,
                            end, scratch, a.output);
}
inline size_t conv_host_scratch(const tlm_conv2d_params*, const tlm_conv_dims* d) {
  return tlm_conv2d_s8_fast_scratch_bytes(d);
}
#endif
#if TLM_WITH_DEPTHWISE_CONV_2D
inline bool conv_host_rows(const ConvRun<tlm_depthwise_conv2d_params>& a, int32_t begin,
                           int32_t end, void* scratch) {
  return tlm_depthwise_conv2d_s8_fast(a.p, a.d, a.multipliers, a.shifts, a.input, a.filter,
                                      a.bias, begin, end, scratch, a.output);
}
inline size_t conv_host_scratch(const tlm_depthwise_conv2d_params*, const tlm_conv_dims* d) {
  return tlm_depthwise_conv2d_s8_fast_scratch_bytes(d);
}
#endif

// Rows [begin, end) of a staged output copied into place.
struct CopyBack {
  const int8_t* staging;
  int8_t* output;
  int64_t row_bytes;
};
inline void copy_back_part(const void* op, int32_t begin, int32_t end, void*) {
  const CopyBack* c = static_cast<const CopyBack*>(op);
  memcpy(c->output + begin * c->row_bytes, c->staging + begin * c->row_bytes,
         size_t((end - begin) * c->row_bytes));
}

template <typename P>
void conv_host_part(const void* op, int32_t begin, int32_t end, void* scratch) {
  conv_host_rows(*static_cast<const ConvRun<P>*>(op), begin, end, scratch);
}
#endif  // TLM_HOST_AVX2

#if TLM_WITH_SPARSE && TLM_WITH_CONV_2D
inline void conv_sparse(const tlm_model* m, const tlm_conv2d_params* p, const ConvOp& op,
                        const int32_t* multipliers, const int32_t* shifts, const int32_t* bias,
                        int8_t* arena) {
  const tlm_sparse_s8 f = sparse_view(m, op.filter);
  tlm_conv2d_s8_sparse(p, &op.dims, multipliers, shifts, arena + op.input.offset, &f, bias,
                       arena + op.output.offset);
}
#endif
// Depthwise filters are never sparse (read_conv).
inline void conv_sparse(const tlm_model*, const tlm_depthwise_conv2d_params*, const ConvOp&,
                        const int32_t*, const int32_t*, const int32_t*, int8_t*) {}

template <typename P, typename Check, typename Kernel>
tlm_status op_conv(const tlm_model* m, const uint8_t* r, int8_t* arena, bool depthwise,
                   Check check, Kernel kernel, const tlm_host* host) {
  ConvOp op;
  const tlm_status s = read_conv(m, r, depthwise, sizeof(P), &op);
  if (s != TLM_OK) return s;
  P p;
  read_params(m, r, &p);
  if (!window_operands_ok(op.input, op.output, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                          p.pad_top, p.pad_left))
    return TLM_ERR_BAD_OP;
  const int32_t* bias = op.has_bias ? blob_data<int32_t>(m, op.bias) : nullptr;
  const int32_t* multipliers = blob_data<int32_t>(m, op.multipliers);
  const int32_t* shifts = blob_data<int32_t>(m, op.shifts);
  if (!arena) return check(&p, &op.dims, multipliers, shifts, bias);
#if TLM_WITH_SPARSE
  if (op.sparse) {  // the sparse reference kernel, never a host fast path
    conv_sparse(m, &p, op, multipliers, shifts, bias, arena);
    return TLM_OK;
  }
#endif
#if TLM_HOST_AVX2
  if (host && conv_host_scratch(&p, &op.dims) <= host->scratch_bytes) {
    const ConvRun<P> a{&p, &op.dims, multipliers, shifts, bias, arena + op.input.offset,
                       blob_data<int8_t>(m, op.filter), arena + op.output.offset,
                       host_packed(host, op_index(m, r))};
    if (conv_host_rows(a, 0, 0, host->scratch)) {  // it has a fast path
      const tlm_conv_dims& d = op.dims;
      const int32_t rows = d.batches * d.output_h;
      // Multiply-accumulates; a depthwise one costs about 4 of the GEMM's (no reuse of loads).
      const int64_t work = int64_t{rows} * d.output_w * d.output_c * d.filter_h * d.filter_w *
                           (depthwise ? 4 : d.input_c);
      const int32_t parts = host_parts(host, rows, work);
      if (overlap(op.input, op.output)) {
        // Parts in any order could overwrite input bytes another part still reads: they write
        // to the staging buffer, copied into place once all have run (each part's rows by the
        // same split, so mostly by the thread whose cache holds them: DS-CNN on both cores,
        // best of 200-call batches, 31-34 against 32.5-37 us with the caller copying it all);
        // else one part, in order.
        // (Staged even as one part: stores just behind the loads of a trailing output made the
        // first MobileNet convolution 1.5x slower on the host, from false store-to-load
        // dependencies; the copy costs far less.)
        if (host->staging && host->staging_bytes >= op.output.bytes) {
          ConvRun<P> staged = a;
          staged.output = static_cast<int8_t*>(host->staging);
          run_host_parts(host, rows, parts, conv_host_part<P>, &staged);
          const CopyBack c{static_cast<const int8_t*>(host->staging), arena + op.output.offset,
                           int64_t{op.dims.output_w} * op.dims.output_c};
          run_host_parts(host, rows, parts, copy_back_part, &c);
        } else {
          run_host_parts(host, rows, 1, conv_host_part<P>, &a);
        }
        return TLM_OK;
      }
      run_host_parts(host, rows, parts, conv_host_part<P>, &a);
      return TLM_OK;
    }
  }
#else
  (void)host;
#endif
  kernel(&p, &op.dims, multipliers, shifts, arena + op.input.offset,
         blob_data<int8_t>(m, op.filter), bias, arena + op.output.offset);
  return TLM_OK;
}
#endif

#if TLM_WITH_CONV_2D
tlm_status op_conv2d(const tlm_model* m, const uint8_t* r, int8_t* arena,
                     const tlm_host* host = nullptr) {
  return op_conv<tlm_conv2d_params>(m, r, arena, false, tlm_conv2d_s8_check, tlm_conv2d_s8, host);
}
#endif

#if TLM_WITH_DEPTHWISE_CONV_2D
tlm_status op_depthwise_conv2d(const tlm_model* m, const uint8_t* r, int8_t* arena,
                               const tlm_host* host = nullptr) {
  return op_conv<tlm_depthwise_conv2d_params>(m, r, arena, true, tlm_depthwise_conv2d_s8_check,
                                              tlm_depthwise_conv2d_s8, host);
}
#endif

// One int8 arena input and one int8 arena output (pools, MEAN, SOFTMAX, RELU, DEQUANTIZE's
// input, ...): reads and checks the record, the operands' types and storage.
inline tlm_status read_unary(const tlm_model* m, const uint8_t* r, uint32_t params_bytes,
                      uint8_t in_type, uint8_t out_type, Tensor* in, Tensor* out) {
  if (bad_record(r, 1, 1, params_bytes)) return TLM_ERR_BAD_OP;
  tlm_status s;
  if ((s = operand(m, rd_u16(r + 4), in_type, TLM_STORAGE_ARENA, in)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 16), out_type, TLM_STORAGE_ARENA, out)) != TLM_OK)
    return s;
  return TLM_OK;
}

#if TLM_WITH_MAX_POOL_2D || TLM_WITH_AVERAGE_POOL_2D
struct PoolOp {
  tlm_pool_params params;
  tlm_pool_dims dims;
  Tensor input, output;
};

tlm_status read_pool(const tlm_model* m, const uint8_t* r, PoolOp* op) {
  const tlm_status s = read_unary(m, r, sizeof(tlm_pool_params), TLM_TYPE_INT8, TLM_TYPE_INT8,
                                  &op->input, &op->output);
  if (s != TLM_OK) return s;
  const Tensor &in = op->input, &out = op->output;
  if (in.rank != 4 || out.rank != 4 || out.dims[0] != in.dims[0] || out.dims[3] != in.dims[3] ||
      !same_quantization(m, rd_u16(r + 4), rd_u16(r + 16)))
    return TLM_ERR_SHAPE;
  read_params(m, r, &op->params);
  const tlm_pool_params& p = op->params;
  if (!window_operands_ok(in, out, p.stride_h, p.stride_w, 1, 1, p.pad_top, p.pad_left))
    return TLM_ERR_BAD_OP;
  op->dims = {in.dims[0], in.dims[1], in.dims[2], in.dims[3], out.dims[1], out.dims[2]};
  return TLM_OK;
}

// Validates (arena == nullptr) or runs a MAX_POOL_2D or AVERAGE_POOL_2D with its check and kernel.
template <typename Check, typename Kernel>
tlm_status op_pool(const tlm_model* m, const uint8_t* r, int8_t* arena, Check check, Kernel kernel) {
  PoolOp op;
  const tlm_status s = read_pool(m, r, &op);
  if (s != TLM_OK) return s;
  if (!arena) return check(&op.params, &op.dims);
  kernel(&op.params, &op.dims, arena + op.input.offset, arena + op.output.offset);
  return TLM_OK;
}
#endif

#if TLM_WITH_MAX_POOL_2D
tlm_status op_max_pool2d(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  return op_pool(m, r, arena, tlm_max_pool2d_s8_check, tlm_max_pool2d_s8);
}
#endif

#if TLM_WITH_AVERAGE_POOL_2D
tlm_status op_avg_pool2d(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  return op_pool(m, r, arena, tlm_avg_pool2d_s8_check, tlm_avg_pool2d_s8);
}
#endif

#if TLM_WITH_MEAN
tlm_status op_mean(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  Tensor in, out;
  const tlm_status s =
      read_unary(m, r, sizeof(tlm_mean_params), TLM_TYPE_INT8, TLM_TYPE_INT8, &in, &out);
  if (s != TLM_OK) return s;
  // input [n, h, w, c]; output [n, 1, 1, c] or [n, c].
  if (in.rank != 4 || out.dims[0] != in.dims[0] || out.dims[out.rank - 1] != in.dims[3] ||
      !(out.rank == 2 || (out.rank == 4 && out.dims[1] == 1 && out.dims[2] == 1)))
    return TLM_ERR_SHAPE;
  if (overlap(in, out)) return TLM_ERR_BAD_OP;
  tlm_mean_params p;
  read_params(m, r, &p);
  const tlm_mean_dims dims = {in.dims[0], in.dims[1], in.dims[2], in.dims[3]};
  if (!arena) return tlm_mean_s8_check(&p, &dims);
  tlm_mean_s8(&p, &dims, arena + in.offset, arena + out.offset);
  return TLM_OK;
}
#endif

#if TLM_WITH_ADD
#if TLM_HOST_AVX2
// From this many elements an ADD gets its table of outputs (add_s8.h) in tlm_host.packed: below
// it, 64 KB of table would cost more cache than its lookups save.
constexpr int32_t kAddTableMin = 2048;

struct AddRun {
  const tlm_add_params* p;
  const int8_t* table;  // the outputs' table, or null: computed
  const int8_t *input1, *input2;
  int8_t* output;
};

void add_host_part(const void* op, int32_t begin, int32_t end, void*) {
  const AddRun* a = static_cast<const AddRun*>(op);
  if (a->table)
    tlm_add_s8_lookup(a->table, begin, end, a->input1, a->input2, a->output);
  else
    tlm_add_s8_fast(a->p, begin, end, a->input1, a->input2, a->output);
}
#endif

// An ADD record's operands and parameters, validated.
tlm_status read_add(const tlm_model* m, const uint8_t* r, Tensor* in1, Tensor* in2, Tensor* out,
                    tlm_add_params* p) {
  if (bad_record(r, 2, 1, sizeof(tlm_add_params))) return TLM_ERR_BAD_OP;
  tlm_status s;
  if ((s = operand(m, rd_u16(r + 4), TLM_TYPE_INT8, TLM_STORAGE_ARENA, in1)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 6), TLM_TYPE_INT8, TLM_STORAGE_ARENA, in2)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 16), TLM_TYPE_INT8, TLM_STORAGE_ARENA, out)) != TLM_OK)
    return s;
  if (!same_dims(*in1, *out) || !same_dims(*in2, *out)) return TLM_ERR_SHAPE;
  if (!alias_or_disjoint(*in1, *out) || !alias_or_disjoint(*in2, *out)) return TLM_ERR_BAD_OP;
  read_params(m, r, p);
  return TLM_OK;
}

tlm_status op_add(const tlm_model* m, const uint8_t* r, int8_t* arena,
                  const tlm_host* host = nullptr) {
  Tensor in1, in2, out;
  tlm_add_params p;
  const tlm_status s = read_add(m, r, &in1, &in2, &out, &p);
  if (s != TLM_OK) return s;
  if (!arena) return tlm_add_s8_check(&p, count(out));
#if TLM_HOST_AVX2
  // Elementwise: parts are disjoint ranges of elements, in place or not; a lookup costs about 60%
  // of the arithmetic (add_s8.cpp).
  const int8_t* table = host ? static_cast<const int8_t*>(host_packed(host, op_index(m, r)))
                             : nullptr;
  if (host && tlm_add_s8_fast(&p, 0, 0, arena + in1.offset, arena + in2.offset,
                              arena + out.offset)) {
    const AddRun a{&p, table, arena + in1.offset, arena + in2.offset, arena + out.offset};
    run_host_parts(host, count(out),
                   host_parts(host, count(out), int64_t{count(out)} * (table ? 5 : 8)),
                   add_host_part, &a);
    return TLM_OK;
  }
#else
  (void)host;
#endif
  tlm_add_s8(&p, count(out), arena + in1.offset, arena + in2.offset, arena + out.offset);
  return TLM_OK;
}
#endif

#if TLM_WITH_CONCATENATION
tlm_status op_concatenation(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  const uint8_t n = r[2];
  if (n < 1 || n > TLM_CONCATENATION_MAX_INPUTS ||
      bad_record(r, n, 1, sizeof(tlm_concatenation_params)))
    return TLM_ERR_BAD_OP;
  Tensor out;
  tlm_status s = operand(m, rd_u16(r + 16), TLM_TYPE_INT8, TLM_STORAGE_ARENA, &out);
  if (s != TLM_OK) return s;
  tlm_concatenation_params p;
  read_params(m, r, &p);
  if (p.axis < 0 || p.axis >= out.rank) return TLM_ERR_BAD_PARAMS;
  tlm_concatenation_dims dims;
  dims.outer = 1;
  dims.inner = 1;
  for (int k = 0; k < out.rank; ++k) {
    if (k < p.axis) dims.outer *= out.dims[k];
    if (k > p.axis) dims.inner *= out.dims[k];
  }
  dims.input_count = n;
  const int8_t* inputs[TLM_CONCATENATION_MAX_INPUTS];
  int64_t axis_sum = 0;
  for (uint8_t i = 0; i < n; ++i) {
    Tensor in;
    const uint16_t index = rd_u16(r + 4 + 2 * i);
    if ((s = operand(m, index, TLM_TYPE_INT8, TLM_STORAGE_ARENA, &in)) != TLM_OK) return s;
    if (in.rank != out.rank || !same_quantization(m, index, rd_u16(r + 16))) return TLM_ERR_SHAPE;
    for (int k = 0; k < out.rank; ++k)
      if (k != p.axis && in.dims[k] != out.dims[k]) return TLM_ERR_SHAPE;
    if (overlap(in, out)) return TLM_ERR_BAD_OP;
    dims.axis_sizes[i] = in.dims[p.axis];
    axis_sum += in.dims[p.axis];
    inputs[i] = arena ? arena + in.offset : nullptr;
  }
  if (axis_sum != out.dims[p.axis]) return TLM_ERR_SHAPE;
  if (!arena) return tlm_concatenation_s8_check(&dims);
  tlm_concatenation_s8(&dims, inputs, arena + out.offset);
  return TLM_OK;
}
#endif

#if TLM_WITH_SOFTMAX
tlm_status op_softmax(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  Tensor in, out;
  const tlm_status s =
      read_unary(m, r, sizeof(tlm_softmax_params), TLM_TYPE_INT8, TLM_TYPE_INT8, &in, &out);
  if (s != TLM_OK) return s;
  // TFLite requires the int8 output zero point -128 (scale 1/256): the kernel's output is so.
  if (!same_dims(in, out) || zero_point(m, rd_u16(r + 16)) != -128) return TLM_ERR_SHAPE;
  if (overlap(in, out)) return TLM_ERR_BAD_OP;
  tlm_softmax_params p;
  read_params(m, r, &p);
  const int32_t depth = in.dims[in.rank - 1];
  const tlm_softmax_dims dims = {count(in) / depth, depth};
  if (!arena) return tlm_softmax_s8_check(&p, &dims);
  tlm_softmax_s8(&p, &dims, arena + in.offset, arena + out.offset);
  return TLM_OK;
}
#endif

#if TLM_WITH_RELU
tlm_status op_relu(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  Tensor in, out;
  const tlm_status s =
      read_unary(m, r, sizeof(tlm_relu_params), TLM_TYPE_INT8, TLM_TYPE_INT8, &in, &out);
  if (s != TLM_OK) return s;
  if (!same_dims(in, out)) return TLM_ERR_SHAPE;
  if (!alias_or_disjoint(in, out)) return TLM_ERR_BAD_OP;
  tlm_relu_params p;
  read_params(m, r, &p);
  if (!arena) return tlm_relu_s8_check(&p, count(out));
  tlm_relu_s8(&p, count(out), arena + in.offset, arena + out.offset);
  return TLM_OK;
}
#endif

#if TLM_WITH_RESHAPE
tlm_status op_reshape(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  if (bad_record(r, 1, 1, 0)) return TLM_ERR_BAD_OP;
  Tensor in, out;
  const uint16_t in_index = rd_u16(r + 4), out_index = rd_u16(r + 16);
  if (in_index >= m->tensor_count || out_index >= m->tensor_count) return TLM_ERR_BAD_OP;
  read_tensor(m, in_index, &in);
  tlm_status s = operand(m, out_index, in.type, TLM_STORAGE_ARENA, &out);
  if (s != TLM_OK) return s;
  if (in.storage != TLM_STORAGE_ARENA || in.bytes != out.bytes ||
      !same_quantization(m, in_index, out_index))
    return TLM_ERR_SHAPE;
  if (!alias_or_disjoint(in, out)) return TLM_ERR_BAD_OP;
  if (arena && in.offset != out.offset) {
    // Disjoint (checked at init): a plain copy, no newlib memcpy for an operator the converter
    // normally aliases away.
    const int8_t* x = arena + in.offset;
    int8_t* y = arena + out.offset;
    for (uint32_t i = 0; i < out.bytes; ++i) y[i] = x[i];
  }
  return TLM_OK;
}
#endif

#if TLM_WITH_QUANTIZE
tlm_status op_quantize(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  if (bad_record(r, 1, 1, sizeof(tlm_quantize_params))) return TLM_ERR_BAD_OP;
  Tensor in, out;
  const uint16_t in_index = rd_u16(r + 4);
  if (in_index >= m->tensor_count) return TLM_ERR_BAD_OP;
  read_tensor(m, in_index, &in);
  const bool from_float = in.type == TLM_TYPE_FLOAT32;
  tlm_status s = read_unary(m, r, sizeof(tlm_quantize_params),
                            from_float ? TLM_TYPE_FLOAT32 : TLM_TYPE_INT8, TLM_TYPE_INT8, &in, &out);
  if (s != TLM_OK) return s;
  if (!same_dims(in, out)) return TLM_ERR_SHAPE;
  if (from_float ? overlap(in, out) : !alias_or_disjoint(in, out)) return TLM_ERR_BAD_OP;
  tlm_quantize_params p;
  read_params(m, r, &p);
  if (from_float) {
    if (!arena) return tlm_quantize_f32_s8_check(&p, count(out));
    tlm_quantize_f32_s8(&p, count(out), reinterpret_cast<const float*>(arena + in.offset),
                        arena + out.offset);
  } else {
    if (!arena) return tlm_requantize_s8_check(&p, count(out));
    tlm_requantize_s8(&p, count(out), arena + in.offset, arena + out.offset);
  }
  return TLM_OK;
}
#endif

#if TLM_WITH_DEQUANTIZE
tlm_status op_dequantize(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  Tensor in, out;
  const tlm_status s = read_unary(m, r, sizeof(tlm_dequantize_params), TLM_TYPE_INT8,
                                  TLM_TYPE_FLOAT32, &in, &out);
  if (s != TLM_OK) return s;
  if (!same_dims(in, out)) return TLM_ERR_SHAPE;
  if (overlap(in, out)) return TLM_ERR_BAD_OP;
  tlm_dequantize_params p;
  read_params(m, r, &p);
  if (!arena) return tlm_dequantize_s8_check(&p, count(in));
  tlm_dequantize_s8(&p, count(in), arena + in.offset, reinterpret_cast<float*>(arena + out.offset));
  return TLM_OK;
}
#endif

// Every operator but FULLY_CONNECTED (dispatched inline, the one the smallest firmware has):
// validates (arena == nullptr) or runs it. Operators left out of the build are unknown.
tlm_status run_op(const tlm_model* m, const uint8_t* r, int8_t* arena) {
  switch (rd_u16(r)) {
#if TLM_WITH_CONV_2D
    case TLM_OP_CONV_2D: return op_conv2d(m, r, arena);
#endif
#if TLM_WITH_DEPTHWISE_CONV_2D
    case TLM_OP_DEPTHWISE_CONV_2D: return op_depthwise_conv2d(m, r, arena);
#endif
#if TLM_WITH_MAX_POOL_2D
    case TLM_OP_MAX_POOL_2D: return op_max_pool2d(m, r, arena);
#endif
#if TLM_WITH_AVERAGE_POOL_2D
    case TLM_OP_AVERAGE_POOL_2D: return op_avg_pool2d(m, r, arena);
#endif
#if TLM_WITH_MEAN
    case TLM_OP_MEAN: return op_mean(m, r, arena);
#endif
#if TLM_WITH_ADD
    case TLM_OP_ADD: return op_add(m, r, arena);
#endif
#if TLM_WITH_CONCATENATION
    case TLM_OP_CONCATENATION: return op_concatenation(m, r, arena);
#endif
#if TLM_WITH_SOFTMAX
    case TLM_OP_SOFTMAX: return op_softmax(m, r, arena);
#endif
#if TLM_WITH_RELU
    case TLM_OP_RELU: return op_relu(m, r, arena);
#endif
#if TLM_WITH_RESHAPE
    case TLM_OP_RESHAPE: return op_reshape(m, r, arena);
#endif
#if TLM_WITH_QUANTIZE
    case TLM_OP_QUANTIZE: return op_quantize(m, r, arena);
#endif
#if TLM_WITH_DEQUANTIZE
    case TLM_OP_DEQUANTIZE: return op_dequantize(m, r, arena);
#endif
    default:
      (void)m;
      (void)arena;
      return TLM_ERR_UNKNOWN_OP;
  }
}

tlm_status check_op(const tlm_model* m, uint32_t i, uint32_t payload) {
  const uint8_t* r = op_record(m, i);
  const uint32_t params = rd_u32(r + 20), params_bytes = rd_u32(r + 24);
  if ((params & 3u) || params < payload || uint64_t{params} + params_bytes > m->blob_bytes ||
      rd_u32(r + 28) != 0)
    return TLM_ERR_BAD_OP;
  switch (rd_u16(r)) {
#if TLM_WITH_FULLY_CONNECTED
    case TLM_OP_FULLY_CONNECTED: return op_fully_connected(m, r, nullptr);
#endif
    default:
      return run_op(m, r, nullptr);
  }
}

#if TLM_HOST_AVX2 && (TLM_WITH_CONV_2D || TLM_WITH_DEPTHWISE_CONV_2D)
// Reads operator i when it is a CONV_2D or a DEPTHWISE_CONV_2D (validated by tlm_model_init).
bool read_host_conv(const tlm_model* m, uint32_t i, bool* depthwise, ConvOp* op) {
  const uint8_t* r = op_record(m, i);
  switch (rd_u16(r)) {
#if TLM_WITH_CONV_2D
    case TLM_OP_CONV_2D:
      *depthwise = false;
      return read_conv(m, r, false, sizeof(tlm_conv2d_params), op) == TLM_OK && !op->sparse;
#endif
#if TLM_WITH_DEPTHWISE_CONV_2D
    case TLM_OP_DEPTHWISE_CONV_2D:
      *depthwise = true;
      return read_conv(m, r, true, sizeof(tlm_depthwise_conv2d_params), op) == TLM_OK;
#endif
    default: return false;
  }
}
#endif

#if TLM_HOST_AVX2 && (TLM_WITH_CONV_2D || TLM_WITH_FULLY_CONNECTED || TLM_WITH_ADD)
// tlm_host_pack's layout: a table of op_count byte offsets (0: none), then each CONV_2D's packed
// filter, each fully connected operator's packed weights (reference requantization) and each
// long ADD's table of outputs, 32-byte aligned. Returns its bytes; with `base`, also writes it.
uint64_t host_pack(const tlm_model* m, uint8_t* base) {
  uint64_t at = (4 * uint64_t{m->op_count} + 31) / 32 * 32;
  for (uint32_t i = 0; i < m->op_count; ++i) {
    uint32_t here = 0;
#if TLM_WITH_CONV_2D
    ConvOp op;
    bool depthwise;
    if (read_host_conv(m, i, &depthwise, &op) && !depthwise) {
      here = static_cast<uint32_t>(at);
      if (base) tlm_conv2d_s8_fast_pack(&op.dims, blob_data<int8_t>(m, op.filter), base + at);
      at += (tlm_conv2d_s8_fast_packed_bytes(&op.dims) + 31) / 32 * 32;
    }
#endif
#if TLM_WITH_FULLY_CONNECTED
    FcOp fc;
    const uint8_t* r = op_record(m, i);
    if (rd_u16(r) == TLM_OP_FULLY_CONNECTED && read_fc(m, r, &fc) == TLM_OK && fc.ref &&
        !fc.sparse) {
      here = static_cast<uint32_t>(at);
      if (base) {
#if TLM_WITH_FULLY_CONNECTED_PER_CHANNEL
        const int32_t* scales = fc.has_scales ? blob_data<int32_t>(m, fc.scales) : nullptr;
#else
        const int32_t* scales = nullptr;
#endif
        tlm_fully_connected_ref_s8_fast_pack(&fc.params, &fc.dims, blob_data<int8_t>(m, fc.weights),
                                             fc.has_bias ? blob_data<int32_t>(m, fc.bias) : nullptr,
                                             scales, base + at);
      }
      at += (tlm_fully_connected_ref_s8_fast_packed_bytes(&fc.dims) + 31) / 32 * 32;
    }
#endif
#if TLM_WITH_ADD
    const uint8_t* ra = op_record(m, i);
    Tensor in1, in2, out;
    tlm_add_params ap;
    if (rd_u16(ra) == TLM_OP_ADD && read_add(m, ra, &in1, &in2, &out, &ap) == TLM_OK &&
        tlm_add_s8_check(&ap, count(out)) == TLM_OK && count(out) >= kAddTableMin) {
      here = static_cast<uint32_t>(at);
      if (base) tlm_add_s8_fast_table(&ap, reinterpret_cast<int8_t*>(base + at));
      at += TLM_ADD_TABLE_BYTES;
    }
#endif
    if (base) memcpy(base + 4 * i, &here, 4);
  }
  return at;
}
#endif

#if TLM_WITH_HOST_VALIDATION
// Tensor i is the model's input or output, or an operand of one of its operators (validated:
// each has exactly one output, at offset 16, and at most 6 inputs from offset 4).
__attribute__((noinline)) bool tensor_used(const tlm_model* m, uint32_t i) {
  if (i == m->input_tensor || i == m->output_tensor) return true;
  for (uint32_t k = 0; k < m->op_count; ++k) {
    const uint8_t* r = op_record(m, k);
    if (rd_u16(r + 16) == i) return true;
    for (uint32_t j = 0; j < r[2]; ++j)
      if (rd_u16(r + 4 + 2 * j) == i) return true;
  }
  return false;
}
#endif

// Where tlm_model_init rejected a blob (ops_config.h: TLM_WITH_HOST_VALIDATION).
inline void set_error(tlm_model* model, uint32_t op, uint32_t tensor) {
#if TLM_WITH_HOST_VALIDATION
  model->error_op = static_cast<uint16_t>(op);
  model->error_tensor = static_cast<uint16_t>(tensor);
#else
  (void)model, (void)op, (void)tensor;
#endif
}

}  // namespace

extern "C" {

tlm_status tlm_model_init(tlm_model* model, const void* blob, size_t bytes) {
  if (!model || !blob) return TLM_ERR_NULL;
  model->blob = nullptr;  // unusable until validated (no memset: it would link 160 B of newlib)
  set_error(model, TLM_NO_INDEX, TLM_NO_INDEX);
  const uint8_t* b = static_cast<const uint8_t*>(blob);
  if (!aligned4(b)) return TLM_ERR_ALIGNMENT;
  if (bytes < TLM_HEADER_BYTES) return TLM_ERR_TRUNCATED;
  if (b[0] != TLM_MAGIC_0 || b[1] != TLM_MAGIC_1 || b[2] != TLM_MAGIC_2 || b[3] != TLM_MAGIC_3)
    return TLM_ERR_MAGIC;
  const uint16_t version = rd_u16(b + 4);
  if (version != TLM_FORMAT_VERSION) return TLM_ERR_VERSION;
  const uint32_t total = rd_u32(b + 8);
  if (rd_u16(b + 6) != TLM_HEADER_BYTES || total < TLM_HEADER_BYTES) return TLM_ERR_BAD_HEADER;
  if (total > bytes) return TLM_ERR_TRUNCATED;
  if (crc32(b + 16, total - 16) != rd_u32(b + 12)) return TLM_ERR_CHECKSUM;

  tlm_model m;
  m.blob = b;
  m.blob_bytes = total;
  m.arena_bytes = rd_u32(b + 16);
  m.tensor_count = rd_u16(b + 20);
  m.op_count = rd_u16(b + 22);
  m.input_tensor = rd_u16(b + 24);
  m.output_tensor = rd_u16(b + 26);
  const uint32_t payload =
      TLM_HEADER_BYTES + (uint32_t{m.tensor_count} + m.op_count) * TLM_TENSOR_RECORD_BYTES;
  if (m.tensor_count < 1 || m.tensor_count > TLM_MAX_TENSORS || m.op_count > TLM_MAX_OPS ||
      rd_u32(b + 28) != 0 || payload > total)
    return TLM_ERR_BAD_HEADER;
  // No plan needs more arena than all arena tensors side by side: a larger claim is corrupt
  // (and would make a host runner allocate it).
  uint64_t arena_sum = 0;
  Tensor t;
  for (uint32_t i = 0; i < m.tensor_count; ++i) {
    const tlm_status s = check_tensor(&m, i, payload);
    if (s != TLM_OK) {
      set_error(model, TLM_NO_INDEX, i);
      return s;
    }
    read_tensor(&m, i, &t);
    if (t.storage == TLM_STORAGE_ARENA) arena_sum += (t.bytes + 3u) & ~3u;
  }
  if (m.arena_bytes > arena_sum) return TLM_ERR_BAD_HEADER;
  const uint16_t io_tensors[2] = {m.input_tensor, m.output_tensor};
  for (const uint16_t io : io_tensors) {
    if (io >= m.tensor_count) return TLM_ERR_BAD_HEADER;
    read_tensor(&m, io, &t);
    // int8 or float32 (check_tensor keeps float32 in the arena), in the arena.
    if (t.type == TLM_TYPE_INT32 || t.storage != TLM_STORAGE_ARENA) return TLM_ERR_BAD_HEADER;
  }
  for (uint32_t i = 0; i < m.op_count; ++i) {
    const tlm_status s = check_op(&m, i, payload);
    if (s != TLM_OK) {
      set_error(model, i, TLM_NO_INDEX);
      return s;
    }
  }
#if TLM_WITH_HOST_VALIDATION
  // Every tensor is an operand of some operator, or the model's input or output: a tensor nothing
  // uses only costs memory (an unused arena tensor would also inflate the arena claim checked
  // above). A scan per tensor, no table: init runs once, and a table's zeroing links memset.
  for (uint32_t i = 0; i < m.tensor_count; ++i)
    if (!tensor_used(&m, i)) {
      set_error(model, TLM_NO_INDEX, i);
      return TLM_ERR_UNUSED_TENSOR;
    }
#endif
  *model = m;
  set_error(model, TLM_NO_INDEX, TLM_NO_INDEX);
  return TLM_OK;
}

uint32_t tlm_arena_bytes(const tlm_model* model) { return model ? model->arena_bytes : 0; }

tlm_status tlm_tensor(const tlm_model* model, uint32_t index, tlm_tensor_info* info) {
  if (!model || !info || !model->blob) return TLM_ERR_NULL;
  if (index >= model->tensor_count) return TLM_ERR_BAD_TENSOR;
  Tensor t;
  read_tensor(model, index, &t);
  const uint8_t* r = tensor_record(model, index);
  info->type = t.type;
  info->rank = t.rank;
  for (int k = 0; k < 4; ++k) info->dims[k] = t.dims[k];
  info->bytes = t.bytes;
  info->scale = rd_f32(r + 24);
  info->zero_point = rd_i32(r + 28);
  return TLM_OK;
}

static int8_t* arena_tensor(const tlm_model* model, void* arena, uint16_t index) {
  if (!model || !arena || !model->blob) return nullptr;
  Tensor t;
  read_tensor(model, index, &t);
  return static_cast<int8_t*>(arena) + t.offset;
}

void* tlm_input_data(const tlm_model* model, void* arena) {
  return arena_tensor(model, arena, model ? model->input_tensor : 0);
}

void* tlm_output_data(const tlm_model* model, void* arena) {
  return arena_tensor(model, arena, model ? model->output_tensor : 0);
}

int8_t* tlm_input(const tlm_model* model, void* arena) {
  return arena_tensor(model, arena, model ? model->input_tensor : 0);
}

int8_t* tlm_output(const tlm_model* model, void* arena) {
  return arena_tensor(model, arena, model ? model->output_tensor : 0);
}

#if TLM_HOST_AVX2
// One operator (validated by tlm_model_init) on `samples` arenas `stride` bytes apart, with the
// host's fast paths: a fully connected operator over all of them at once, the others one arena at
// a time.
static void run_host_op(const tlm_model* model, const uint8_t* r, int8_t* a,
                        const tlm_host* host, int32_t samples, size_t stride) {
#if TLM_WITH_FULLY_CONNECTED
  if (rd_u16(r) == TLM_OP_FULLY_CONNECTED) {
    op_fully_connected(model, r, a, host, samples, stride);
    return;
  }
#endif
  for (int32_t k = 0; k < samples; ++k) {
    int8_t* ak = a + k * stride;
    switch (rd_u16(r)) {
#if TLM_WITH_CONV_2D
      case TLM_OP_CONV_2D: op_conv2d(model, r, ak, host); break;
#endif
#if TLM_WITH_DEPTHWISE_CONV_2D
      case TLM_OP_DEPTHWISE_CONV_2D: op_depthwise_conv2d(model, r, ak, host); break;
#endif
#if TLM_WITH_ADD
      case TLM_OP_ADD: op_add(model, r, ak, host); break;
#endif
      default: run_op(model, r, ak);
    }
  }
}
#endif

// tlm_invoke and tlm_invoke_host(_samples): one loop, inlined into each (the firmware links only
// the first). Operator by operator, each over `samples` arenas `stride` bytes apart.
__attribute__((always_inline)) static inline tlm_status invoke_ops(const tlm_model* model,
                                                                   void* arena,
                                                                   size_t arena_bytes,
                                                                   const tlm_host* host,
                                                                   int32_t samples = 1,
                                                                   size_t stride = 0) {
  if (!model || !model->blob || !arena) return TLM_ERR_NULL;
#if TLM_HOST_AVX2
  if (host && (host->workers < 1 || (host->scratch_bytes > 0 && !host->scratch)))
    return TLM_ERR_NULL;
#endif
  if (!aligned4(arena)) return TLM_ERR_ALIGNMENT;
  if (arena_bytes < model->arena_bytes) return TLM_ERR_ARENA_TOO_SMALL;
  int8_t* a = static_cast<int8_t*>(arena);
  for (uint32_t i = 0; i < model->op_count; ++i) {
    const uint8_t* r = op_record(model, i);
#if TLM_HOST_AVX2
    if (host) {
      run_host_op(model, r, a, host, samples, stride);
      continue;
    }
#else
    (void)host, (void)samples, (void)stride;
#endif
    switch (rd_u16(r)) {
#if TLM_WITH_FULLY_CONNECTED
      case TLM_OP_FULLY_CONNECTED:
        op_fully_connected(model, r, a);  // validated by tlm_model_init
        break;
#endif
      default:
        // Every operator was validated by tlm_model_init, so this one is known and runs.
        run_op(model, r, a);
    }
  }
  return TLM_OK;
}

tlm_status tlm_invoke(const tlm_model* model, void* arena, size_t arena_bytes) {
  return invoke_ops(model, arena, arena_bytes, nullptr);
}

tlm_status tlm_invoke_host(const tlm_model* model, void* arena, size_t arena_bytes,
                           const tlm_host* host) {
  return invoke_ops(model, arena, arena_bytes, host);
}

tlm_status tlm_invoke_host_samples(const tlm_model* model, void* arenas, size_t arena_stride,
                                   int32_t samples, const tlm_host* host) {
  if (samples < 1) return TLM_ERR_SHAPE;
  if (arena_stride % 4) return TLM_ERR_ALIGNMENT;
  if (!host) {  // tlm_invoke on each arena
    uint8_t* a = static_cast<uint8_t*>(arenas);
    for (int32_t k = 0; k < samples; ++k) {
      const tlm_status s = invoke_ops(model, a ? a + k * arena_stride : nullptr, arena_stride,
                                      nullptr);
      if (s != TLM_OK) return s;
    }
    return TLM_OK;
  }
  return invoke_ops(model, arenas, arena_stride, host, samples, arena_stride);
}

uint32_t tlm_host_packed_bytes(const tlm_model* model) {
#if TLM_HOST_AVX2 && (TLM_WITH_CONV_2D || TLM_WITH_FULLY_CONNECTED || TLM_WITH_ADD)
  if (!model || !model->blob) return 0;
  const uint64_t bytes = host_pack(model, nullptr);
  return bytes > UINT32_MAX ? 0 : static_cast<uint32_t>(bytes);
#else
  (void)model;
  return 0;
#endif
}

tlm_status tlm_host_pack(const tlm_model* model, void* packed, size_t bytes) {
  if (!model || !model->blob || !packed) return TLM_ERR_NULL;
  if (reinterpret_cast<uintptr_t>(packed) % 32) return TLM_ERR_ALIGNMENT;
#if TLM_HOST_AVX2 && (TLM_WITH_CONV_2D || TLM_WITH_FULLY_CONNECTED || TLM_WITH_ADD)
  const uint64_t needed = host_pack(model, nullptr);
  if (needed > UINT32_MAX || bytes < needed) return TLM_ERR_ARENA_TOO_SMALL;
  host_pack(model, static_cast<uint8_t*>(packed));
#else
  (void)bytes;
#endif
  return TLM_OK;
}

uint32_t tlm_host_staging_bytes(const tlm_model* model) {
  uint32_t most = 0;
#if TLM_HOST_AVX2 && (TLM_WITH_CONV_2D || TLM_WITH_DEPTHWISE_CONV_2D)
  if (!model || !model->blob) return 0;
  for (uint32_t i = 0; i < model->op_count; ++i) {
    ConvOp op;
    bool depthwise;
    if (read_host_conv(model, i, &depthwise, &op) && overlap(op.input, op.output) &&
        op.output.bytes > most)
      most = op.output.bytes;
  }
#else
  (void)model;
#endif
  return most;
}

uint32_t tlm_host_scratch_bytes(const tlm_model* model) {
  size_t most = 0;
#if TLM_HOST_AVX2
  if (!model || !model->blob) return 0;
  for (uint32_t i = 0; i < model->op_count; ++i) {
    size_t bytes = 0;
#if TLM_WITH_CONV_2D || TLM_WITH_DEPTHWISE_CONV_2D
    ConvOp op;
    bool depthwise;
    if (read_host_conv(model, i, &depthwise, &op)) {
#if TLM_WITH_CONV_2D
      if (!depthwise) bytes = tlm_conv2d_s8_fast_scratch_bytes(&op.dims);
#endif
#if TLM_WITH_DEPTHWISE_CONV_2D
      if (depthwise) bytes = tlm_depthwise_conv2d_s8_fast_scratch_bytes(&op.dims);
#endif
    }
#endif
#if TLM_WITH_FULLY_CONNECTED
    FcOp fc;
    const uint8_t* r = op_record(model, i);
    if (rd_u16(r) == TLM_OP_FULLY_CONNECTED && read_fc(model, r, &fc) == TLM_OK && fc.ref &&
        !fc.sparse)
      bytes = tlm_fully_connected_ref_s8_fast_scratch_bytes(&fc.dims);
#endif
    if (bytes > most) most = bytes;
  }
#else
  (void)model;
#endif
  return static_cast<uint32_t>(most);
}

const char* tlm_status_str(tlm_status s) {
  switch (s) {
    case TLM_OK: return "ok";
    case TLM_ERR_NULL: return "null pointer";
    case TLM_ERR_TRUNCATED: return "truncated model";
    case TLM_ERR_MAGIC: return "not a tinylearn model (bad magic)";
    case TLM_ERR_VERSION: return "unsupported format version";
    case TLM_ERR_CHECKSUM: return "checksum mismatch (corrupted model)";
    case TLM_ERR_ALIGNMENT: return "buffer not 4-byte aligned";
    case TLM_ERR_BAD_TENSOR: return "invalid tensor record";
    case TLM_ERR_BAD_OP: return "invalid operator record";
    case TLM_ERR_UNKNOWN_OP: return "unknown operator code";
    case TLM_ERR_SHAPE: return "operand shapes or types do not match";
    case TLM_ERR_ACCUMULATOR_RANGE: return "int32 accumulator could overflow";
    case TLM_ERR_ARENA_TOO_SMALL: return "arena too small";
    case TLM_ERR_BAD_PARAMS: return "operator parameters out of range";
    case TLM_ERR_BAD_HEADER: return "invalid header";
    case TLM_ERR_UNUSED_TENSOR: return "a tensor no operator uses";
  }
  return "unknown status";
}

}  // extern "C"
