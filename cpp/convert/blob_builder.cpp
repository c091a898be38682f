#include <cstring>
#include <stdexcept>

#include <zlib.h>

#include "tinylearn/convert/convert.h"
#include "tinylearn/micro/format.h"

namespace tinylearn {

namespace {
void put_u16(std::vector<std::uint8_t>& b, std::size_t at, std::uint16_t v) {
  std::memcpy(b.data() + at, &v, 2);
}
void put_u32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) {
  std::memcpy(b.data() + at, &v, 4);
}
std::uint32_t align4(std::size_t v) { return std::uint32_t((v + 3) & ~std::size_t{3}); }
}  // namespace

std::uint32_t crc32(const std::uint8_t* data, std::size_t n) {
  return std::uint32_t(::crc32(::crc32(0L, Z_NULL, 0), data, uInt(n)));
}

std::uint16_t BlobBuilder::add(Tensor t) {
  if (t.dims.empty() || t.dims.size() > 4)
    throw std::invalid_argument("tensor rank must be 1..4, got " + std::to_string(t.dims.size()));
  std::uint64_t n = 1;
  for (std::int32_t d : t.dims) {
    if (d < 1) throw std::invalid_argument("tensor dims must be >= 1");
    n *= std::uint64_t(d);
  }
  t.bytes = std::uint32_t(n * (t.type == TLM_TYPE_INT8 ? 1 : 4));
  if (tensors_.size() >= TLM_MAX_TENSORS) throw std::invalid_argument("too many tensors");
  tensors_.push_back(std::move(t));
  share_.push_back(std::uint16_t(tensors_.size() - 1));
  share_offset_.push_back(0);
  return std::uint16_t(tensors_.size() - 1);
}

std::uint16_t BlobBuilder::add_arena_tensor(std::uint8_t type, const std::vector<std::int32_t>& dims,
                                            QuantParams q) {
  return add({type, TLM_STORAGE_ARENA, dims, q, {}, 0});
}

std::uint16_t BlobBuilder::add_const_tensor(std::uint8_t type, const std::vector<std::int32_t>& dims,
                                            const void* data, QuantParams q) {
  const std::uint16_t i = add({type, TLM_STORAGE_BLOB, dims, q, {}, 0});
  const auto* p = static_cast<const std::uint8_t*>(data);
  tensors_[i].data.assign(p, p + tensors_[i].bytes);
  return i;
}

std::uint16_t BlobBuilder::add_sparse_tensor(const std::vector<std::int32_t>& dims,
                                             std::vector<std::uint8_t> encoding, QuantParams q) {
  if (dims.size() < 2) throw std::invalid_argument("a sparse tensor has rank 2 or more");
  const std::uint16_t i = add({TLM_TYPE_INT8_SPARSE, TLM_STORAGE_BLOB, dims, q, {}, 0});
  tensors_[i].bytes = std::uint32_t(encoding.size());
  tensors_[i].data = std::move(encoding);
  return i;
}

std::vector<std::uint8_t> encode_sparse_s8(const std::int8_t* w, std::int32_t rows,
                                           std::int32_t cols) {
  if (rows < 1 || cols < 1 || cols > 65535)
    throw std::invalid_argument("encode_sparse_s8: rows must be >= 1 and cols in [1, 65535], got " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  std::vector<std::uint16_t> counts(std::size_t(rows), 0);
  std::vector<std::uint8_t> steps;
  std::vector<std::int8_t> values;
  for (std::int32_t r = 0; r < rows; ++r) {
    const std::int8_t* row = w + std::size_t(r) * std::size_t(cols);
    std::int32_t pos = -1;
    std::size_t before = values.size();
    for (std::int32_t c = 0; c < cols; ++c) {
      if (row[c] == 0) continue;
      while (c - pos - 1 > 255) {  // a filler entry of value 0 bridges 256 positions
        pos += 256;
        steps.push_back(255);
        values.push_back(0);
      }
      steps.push_back(std::uint8_t(c - pos - 1));
      values.push_back(row[c]);
      pos = c;
    }
    counts[std::size_t(r)] = std::uint16_t(values.size() - before);
  }
  const std::size_t n = values.size();
  const std::size_t at_counts = 4, at_steps = at_counts + align4(2 * std::size_t(rows));
  const std::size_t at_values = at_steps + align4(n);
  std::vector<std::uint8_t> b(at_values + align4(n), 0);
  put_u32(b, 0, std::uint32_t(n));
  std::memcpy(b.data() + at_counts, counts.data(), 2 * counts.size());
  if (n) {
    std::memcpy(b.data() + at_steps, steps.data(), n);
    std::memcpy(b.data() + at_values, values.data(), n);
  }
  return b;
}

std::uint16_t BlobBuilder::root(std::uint16_t t, std::int64_t* offset) const {
  std::int64_t o = 0;
  while (share_[t] != t) {
    o += share_offset_[t];
    t = share_[t];
  }
  if (offset) *offset = o;
  return t;
}

void BlobBuilder::share_arena(std::uint16_t a, std::uint16_t b, std::int32_t delta) {
  if (a >= tensors_.size() || b >= tensors_.size() || tensors_[a].storage != TLM_STORAGE_ARENA ||
      tensors_[b].storage != TLM_STORAGE_ARENA)
    throw std::invalid_argument("share_arena: both tensors must be arena tensors");
  if (delta % 4 != 0) throw std::invalid_argument("share_arena: the offset must be a multiple of 4");
  std::int64_t oa, ob;
  const std::uint16_t ra = root(a, &oa), rb = root(b, &ob);
  if (ra == rb) {
    if (ob != oa + delta) throw std::invalid_argument("share_arena: the tensors already share at another offset");
    return;
  }
  // offset(b) = offset(a) + delta, so offset(rb) = offset(ra) + oa + delta - ob.
  share_[rb] = ra;
  share_offset_[rb] = oa + delta - ob;
}

void BlobBuilder::add_op(std::uint16_t opcode, const std::vector<std::uint16_t>& inputs,
                         const std::vector<std::uint16_t>& outputs, const void* params,
                         std::uint32_t params_bytes) {
  if (inputs.size() > 6 || outputs.size() > 2 || outputs.empty())
    throw std::invalid_argument("an operator takes at most 6 inputs and 1..2 outputs");
  const auto* p = static_cast<const std::uint8_t*>(params);
  ops_.push_back({opcode, inputs, outputs, std::vector<std::uint8_t>(p, p + params_bytes)});
}

std::vector<std::uint8_t> BlobBuilder::finish(std::uint16_t input, std::uint16_t output) const {
  // Lifetimes of arena tensors: the model input is live from before the first operator, the
  // output until after the last one; others from their producer to their last consumer.
  const int op_count = int(ops_.size());
  std::vector<int> first(tensors_.size(), op_count), last(tensors_.size(), -1);
  for (int k = 0; k < op_count; ++k) {
    for (std::uint16_t t : ops_[k].inputs)
      if (t != TLM_NO_TENSOR) last[t] = std::max(last[t], k), first[t] = std::min(first[t], k);
    for (std::uint16_t t : ops_[k].outputs)
      first[t] = std::min(first[t], k), last[t] = std::max(last[t], k);
  }
  first[input] = 0;
  last[output] = op_count;
  // Tensors sharing bytes form one buffer: it spans all of them (each at its offset in the group)
  // and lives over all their lifetimes.
  std::vector<PlanBuffer> buffers;
  std::vector<int> buffer_of(tensors_.size(), -1);
  std::vector<std::int64_t> rel(tensors_.size(), 0), group_lo(tensors_.size(), 0);
  std::vector<std::int64_t> group_hi(tensors_.size(), 0);
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    if (tensors_[t].storage != TLM_STORAGE_ARENA) continue;
    const std::uint16_t r = root(std::uint16_t(t), &rel[t]);
    if (buffer_of[r] < 0) {
      buffer_of[r] = int(buffers.size());
      buffers.push_back({0, op_count, -1});
      group_lo[r] = rel[t];
      group_hi[r] = rel[t] + tensors_[t].bytes;
    }
    group_lo[r] = std::min(group_lo[r], rel[t]);
    group_hi[r] = std::max(group_hi[r], rel[t] + std::int64_t(tensors_[t].bytes));
    PlanBuffer& pb = buffers[std::size_t(buffer_of[r])];
    pb.bytes = std::uint32_t(group_hi[r] - group_lo[r]);
    pb.first_op = std::min(pb.first_op, first[t]);
    pb.last_op = std::max({pb.last_op, last[t], first[t]});
    buffer_of[t] = buffer_of[r];
  }
  const MemoryPlan plan = plan_memory(buffers);

  // Layout: header, records, then payload (op params, then constant data), 4-byte aligned.
  const std::size_t records =
      TLM_HEADER_BYTES + (tensors_.size() + ops_.size()) * TLM_TENSOR_RECORD_BYTES;
  std::size_t size = records;
  std::vector<std::uint32_t> param_at(ops_.size()), data_at(tensors_.size(), 0);
  for (std::size_t k = 0; k < ops_.size(); ++k) {
    param_at[k] = align4(size);
    size = param_at[k] + ops_[k].params.size();
  }
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    if (tensors_[t].storage != TLM_STORAGE_BLOB) continue;
    data_at[t] = align4(size);
    size = data_at[t] + tensors_[t].data.size();
  }
  size = align4(size);
  if (size > 0xFFFFFFF0u) throw std::invalid_argument("model larger than 4 GiB");
  std::vector<std::uint32_t> arena_at(tensors_.size(), 0);
  for (std::size_t t = 0; t < tensors_.size(); ++t)
    if (buffer_of[t] >= 0)
      arena_at[t] = plan.offsets[std::size_t(buffer_of[t])] +
                    std::uint32_t(rel[t] - group_lo[root(std::uint16_t(t))]);

  std::vector<std::uint8_t> b(size, 0);
  b[0] = TLM_MAGIC_0; b[1] = TLM_MAGIC_1; b[2] = TLM_MAGIC_2; b[3] = TLM_MAGIC_3;
  put_u16(b, 4, TLM_FORMAT_VERSION);
  put_u16(b, 6, TLM_HEADER_BYTES);
  put_u32(b, 8, std::uint32_t(size));
  put_u32(b, 16, plan.arena_bytes);
  put_u16(b, 20, std::uint16_t(tensors_.size()));
  put_u16(b, 22, std::uint16_t(ops_.size()));
  put_u16(b, 24, input);
  put_u16(b, 26, output);
  for (std::size_t t = 0; t < tensors_.size(); ++t) {
    const Tensor& ts = tensors_[t];
    const std::size_t r = TLM_HEADER_BYTES + t * TLM_TENSOR_RECORD_BYTES;
    b[r] = ts.type;
    b[r + 1] = std::uint8_t(ts.dims.size());
    b[r + 2] = ts.storage;
    for (std::size_t k = 0; k < 4; ++k)
      put_u32(b, r + 4 + 4 * k, std::uint32_t(k < ts.dims.size() ? ts.dims[k] : 1));
    put_u32(b, r + 20, ts.storage == TLM_STORAGE_BLOB ? data_at[t] : arena_at[t]);
    std::memcpy(b.data() + r + 24, &ts.q.scale, 4);
    put_u32(b, r + 28, std::uint32_t(ts.q.zero_point));
    if (!ts.data.empty()) std::memcpy(b.data() + data_at[t], ts.data.data(), ts.data.size());
  }
  for (std::size_t k = 0; k < ops_.size(); ++k) {
    const Op& op = ops_[k];
    const std::size_t r = TLM_HEADER_BYTES + (tensors_.size() + k) * TLM_OP_RECORD_BYTES;
    put_u16(b, r, op.opcode);
    b[r + 2] = std::uint8_t(op.inputs.size());
    b[r + 3] = std::uint8_t(op.outputs.size());
    for (std::size_t i = 0; i < 6; ++i)
      put_u16(b, r + 4 + 2 * i, i < op.inputs.size() ? op.inputs[i] : TLM_NO_TENSOR);
    for (std::size_t i = 0; i < 2; ++i)
      put_u16(b, r + 16 + 2 * i, i < op.outputs.size() ? op.outputs[i] : TLM_NO_TENSOR);
    put_u32(b, r + 20, param_at[k]);
    put_u32(b, r + 24, std::uint32_t(op.params.size()));
    if (!op.params.empty()) std::memcpy(b.data() + param_at[k], op.params.data(), op.params.size());
  }
  put_u32(b, 12, crc32(b.data() + 16, size - 16));
  return b;
}

}  // namespace tinylearn
