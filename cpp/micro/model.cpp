// Model blob validation and the interpreter loop of the freestanding core.
#include <string.h>

#include "fully_connected_s8.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

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
  uint32_t n = 1;
  for (int k = 0; k < t->rank; ++k) n *= static_cast<uint32_t>(t->dims[k]);
  t->bytes = n * (t->type == TLM_TYPE_INT32 ? 4u : 1u);
}

// Validates one tensor record. `payload` is where constant data may start.
tlm_status check_tensor(const tlm_model* m, uint32_t i, uint32_t payload) {
  const uint8_t* r = tensor_record(m, i);
  const uint8_t type = r[0], rank = r[1], storage = r[2];
  if ((type != TLM_TYPE_INT8 && type != TLM_TYPE_INT32) || rank < 1 || rank > 4 ||
      (storage != TLM_STORAGE_ARENA && storage != TLM_STORAGE_BLOB) || r[3] != 0)
    return TLM_ERR_BAD_TENSOR;
  uint64_t count = 1;
  for (int k = 0; k < 4; ++k) {
    const int32_t d = rd_i32(r + 4 + 4 * k);
    if (d < 1 || (k >= rank && d != 1)) return TLM_ERR_BAD_TENSOR;
    count *= static_cast<uint64_t>(d);
    if (count > 0x10000000u) return TLM_ERR_BAD_TENSOR;  // 2^28 elements: no overflow below
  }
  const uint64_t bytes = count * (type == TLM_TYPE_INT32 ? 4u : 1u);
  const uint32_t offset = rd_u32(r + 20);
  if (offset & 3u) return TLM_ERR_BAD_TENSOR;
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

// Everything one fully connected operator needs, read from its record.
struct FcOp {
  tlm_fully_connected_params params;
  tlm_fc_dims dims;
  Tensor input, weights, bias, output;
  bool has_bias;
};

tlm_status read_fc(const tlm_model* m, const uint8_t* r, FcOp* op) {
  if (r[2] != 3 || r[3] != 1 || rd_u32(r + 24) != sizeof(tlm_fully_connected_params))
    return TLM_ERR_BAD_OP;
  tlm_status s;
  if ((s = operand(m, rd_u16(r + 4), TLM_TYPE_INT8, TLM_STORAGE_ARENA, &op->input)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 6), TLM_TYPE_INT8, TLM_STORAGE_BLOB, &op->weights)) != TLM_OK ||
      (s = operand(m, rd_u16(r + 16), TLM_TYPE_INT8, TLM_STORAGE_ARENA, &op->output)) != TLM_OK)
    return s;
  const uint16_t bias = rd_u16(r + 8);
  op->has_bias = bias != TLM_NO_TENSOR;
  if (op->has_bias &&
      (s = operand(m, bias, TLM_TYPE_INT32, TLM_STORAGE_BLOB, &op->bias)) != TLM_OK)
    return s;
  const uint8_t* p = m->blob + rd_u32(r + 20);
  op->params.input_offset = rd_i32(p);
  op->params.output_offset = rd_i32(p + 4);
  op->params.output_multiplier = rd_i32(p + 8);
  op->params.output_shift = rd_i32(p + 12);
  op->params.activation_min = rd_i32(p + 16);
  op->params.activation_max = rd_i32(p + 20);
  // weights [out, in]; input [..., in]; output [..., out] with the same leading elements.
  if (op->weights.rank != 2) return TLM_ERR_SHAPE;
  const int32_t out_n = op->weights.dims[0], in_n = op->weights.dims[1];
  if (op->input.dims[op->input.rank - 1] != in_n || op->output.dims[op->output.rank - 1] != out_n)
    return TLM_ERR_SHAPE;
  op->dims.batches = static_cast<int32_t>(op->input.bytes / static_cast<uint32_t>(in_n));
  op->dims.in_features = in_n;
  op->dims.out_features = out_n;
  // In 64 bits: batches * out_n can exceed 2^32 (and wrap onto output.bytes) for hostile shapes.
  if (uint64_t{op->output.bytes} !=
      uint64_t{static_cast<uint32_t>(op->dims.batches)} * static_cast<uint32_t>(out_n))
    return TLM_ERR_SHAPE;
  if (op->has_bias && (op->bias.rank != 1 || op->bias.dims[0] != out_n)) return TLM_ERR_SHAPE;
  if (overlap(op->input, op->output)) return TLM_ERR_BAD_OP;
  return TLM_OK;
}

tlm_status check_op(const tlm_model* m, uint32_t i, uint32_t payload) {
  const uint8_t* r = op_record(m, i);
  const uint32_t params = rd_u32(r + 20), params_bytes = rd_u32(r + 24);
  if ((params & 3u) || params < payload || uint64_t{params} + params_bytes > m->blob_bytes ||
      rd_u32(r + 28) != 0)
    return TLM_ERR_BAD_OP;
  switch (rd_u16(r)) {
    case TLM_OP_FULLY_CONNECTED: {
      FcOp op;
      tlm_status s = read_fc(m, r, &op);
      if (s != TLM_OK) return s;
      const int32_t* bias =
          op.has_bias ? reinterpret_cast<const int32_t*>(m->blob + op.bias.offset) : nullptr;
      return tlm_fully_connected_s8_check(&op.params, &op.dims, bias);
    }
    default:
      return TLM_ERR_UNKNOWN_OP;
  }
}

}  // namespace

extern "C" {

tlm_status tlm_model_init(tlm_model* model, const void* blob, size_t bytes) {
  if (!model || !blob) return TLM_ERR_NULL;
  model->blob = nullptr;  // unusable until validated (no memset: it would link 160 B of newlib)
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
    if (s != TLM_OK) return s;
    read_tensor(&m, i, &t);
    if (t.storage == TLM_STORAGE_ARENA) arena_sum += (t.bytes + 3u) & ~3u;
  }
  if (m.arena_bytes > arena_sum) return TLM_ERR_BAD_HEADER;
  const uint16_t io_tensors[2] = {m.input_tensor, m.output_tensor};
  for (const uint16_t io : io_tensors) {
    if (io >= m.tensor_count) return TLM_ERR_BAD_HEADER;
    read_tensor(&m, io, &t);
    if (t.type != TLM_TYPE_INT8 || t.storage != TLM_STORAGE_ARENA) return TLM_ERR_BAD_HEADER;
  }
  for (uint32_t i = 0; i < m.op_count; ++i) {
    const tlm_status s = check_op(&m, i, payload);
    if (s != TLM_OK) return s;
  }
  *model = m;
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

int8_t* tlm_input(const tlm_model* model, void* arena) {
  return arena_tensor(model, arena, model ? model->input_tensor : 0);
}

int8_t* tlm_output(const tlm_model* model, void* arena) {
  return arena_tensor(model, arena, model ? model->output_tensor : 0);
}

tlm_status tlm_invoke(const tlm_model* model, void* arena, size_t arena_bytes) {
  if (!model || !model->blob || !arena) return TLM_ERR_NULL;
  if (!aligned4(arena)) return TLM_ERR_ALIGNMENT;
  if (arena_bytes < model->arena_bytes) return TLM_ERR_ARENA_TOO_SMALL;
  int8_t* a = static_cast<int8_t*>(arena);
  for (uint32_t i = 0; i < model->op_count; ++i) {
    const uint8_t* r = op_record(model, i);
    switch (rd_u16(r)) {
      case TLM_OP_FULLY_CONNECTED: {
        FcOp op;
        // Validated by tlm_model_init; reading it again costs less flash than caching it.
        read_fc(model, r, &op);
        const int32_t* bias =
            op.has_bias ? reinterpret_cast<const int32_t*>(model->blob + op.bias.offset) : nullptr;
        tlm_fully_connected_s8(&op.params, &op.dims, a + op.input.offset,
                               reinterpret_cast<const int8_t*>(model->blob + op.weights.offset),
                               bias, a + op.output.offset);
        break;
      }
      default:
        return TLM_ERR_UNKNOWN_OP;
    }
  }
  return TLM_OK;
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
  }
  return "unknown status";
}

}  // extern "C"
