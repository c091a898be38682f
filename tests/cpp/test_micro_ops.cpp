// The interpreter (cpp/micro/model.cpp) with every operator: blobs built with BlobBuilder, checked
// by tlm_model_init (valid ones accepted; wrong shapes, types, parameters, overlaps and left-out
// operators rejected with the right status) and run by tlm_invoke, whose outputs must equal the
// direct kernel calls on the same data. Blobs are edited in place (offsets, types, records) with
// the CRC recomputed, so the edits reach the structural checks.

// A second copy of the interpreter compiled without SOFTMAX and CONV_2D (ops_config.h), under
// other names: a blob using a left-out operator must be rejected with TLM_ERR_UNKNOWN_OP.
#include "tinylearn/micro/micro.h"  // the real declarations, before the renaming below
#define TLM_WITH_SOFTMAX 0
#define TLM_WITH_CONV_2D 0
#define tlm_model_init tlm_model_init_reduced
#define tlm_arena_bytes tlm_arena_bytes_reduced
#define tlm_tensor tlm_tensor_reduced
#define tlm_input_data tlm_input_data_reduced
#define tlm_output_data tlm_output_data_reduced
#define tlm_input tlm_input_reduced
#define tlm_output tlm_output_reduced
#define tlm_invoke tlm_invoke_reduced
#define tlm_status_str tlm_status_str_reduced
#define tlm_invoke_host tlm_invoke_host_reduced
#define tlm_invoke_host_samples tlm_invoke_host_samples_reduced
#define tlm_host_packed_bytes tlm_host_packed_bytes_reduced
#define tlm_host_pack tlm_host_pack_reduced
#define tlm_host_staging_bytes tlm_host_staging_bytes_reduced
#define tlm_host_scratch_bytes tlm_host_scratch_bytes_reduced
#include "model.cpp"
#undef tlm_model_init
#undef tlm_arena_bytes
#undef tlm_tensor
#undef tlm_input_data
#undef tlm_output_data
#undef tlm_input
#undef tlm_output
#undef tlm_invoke
#undef tlm_status_str
#undef tlm_invoke_host
#undef tlm_invoke_host_samples
#undef tlm_host_packed_bytes
#undef tlm_host_pack
#undef tlm_host_staging_bytes
#undef tlm_host_scratch_bytes

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "../../cpp/convert/op_params.h"
#include "add_s8.h"
#include "avg_pool2d_s8.h"
#include "concatenation_s8.h"
#include "conv2d_s8.h"
#include "depthwise_conv2d_s8.h"
#include "dequantize_s8.h"
#include "fully_connected_s8.h"
#include "max_pool2d_s8.h"
#include "mean_s8.h"
#include "quantize_s8.h"
#include "relu_s8.h"
#include "softmax_s8.h"
#include "tinylearn/convert/convert.h"
#include "tinylearn/micro/format.h"
#include "tl_reference.h"

namespace {

using Bytes = std::vector<std::uint8_t>;
using I8 = std::vector<std::int8_t>;
using I32 = std::vector<std::int32_t>;
using Dims = std::vector<std::int32_t>;

template <typename T>
T rd(const Bytes& b, std::size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
template <typename T>
void wr(Bytes& b, std::size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}

// Field offsets of records, from format.h.
std::size_t tensor_at(std::uint16_t i) { return 32 + 32 * std::size_t(i); }
std::size_t op_at(const Bytes& b, std::size_t k) { return 32 + 32 * (rd<std::uint16_t>(b, 20) + k); }
std::uint32_t tensor_offset(const Bytes& b, std::uint16_t i) { return rd<std::uint32_t>(b, tensor_at(i) + 20); }
std::uint32_t params_at(const Bytes& b, std::size_t k) { return rd<std::uint32_t>(b, op_at(b, k) + 20); }

void fix_crc(Bytes& b) { wr<std::uint32_t>(b, 12, tlref::crc32(b.data() + 16, b.size() - 16)); }

// Edits, each followed by a CRC fix.
Bytes with(Bytes b, const std::function<void(Bytes&)>& edit) {
  edit(b);
  fix_crc(b);
  return b;
}
// Puts arena tensor i at `offset`.
std::function<void(Bytes&)> move_to(std::uint16_t i, std::uint32_t offset) {
  return [=](Bytes& b) { wr<std::uint32_t>(b, tensor_at(i) + 20, offset); };
}
// Places every arena tensor after the previous one (no sharing) and sets the header's arena size
// to the total: after a shape edit, the blob's plan still holds and only the shape checks speak.
void relayout(Bytes& b) {
  const std::uint16_t n = rd<std::uint16_t>(b, 20);
  std::uint32_t at = 0;
  for (std::uint16_t i = 0; i < n; ++i) {
    const std::size_t r = tensor_at(i);
    if (b[r + 2] != TLM_STORAGE_ARENA) continue;
    std::uint64_t count = 1;
    for (int k = 0; k < 4; ++k) count *= std::uint64_t(rd<std::int32_t>(b, r + 4 + 4 * std::size_t(k)));
    wr<std::uint32_t>(b, r + 20, at);
    at += std::uint32_t((count * (b[r] == TLM_TYPE_INT8 ? 1 : 4) + 3) & ~std::uint64_t{3});
  }
  wr<std::uint32_t>(b, 16, at);
}
// Sets dim k of tensor t to v and relayouts.
std::function<void(Bytes&)> dim(std::uint16_t t, int k, std::int32_t v) {
  return [=](Bytes& b) {
    wr<std::int32_t>(b, tensor_at(t) + 4 + 4 * std::size_t(k), v);
    relayout(b);
  };
}
// Sets field `at` of operator 0's params to v.
std::function<void(Bytes&)> param(std::size_t at, std::int32_t v) {
  return [=](Bytes& b) { wr<std::int32_t>(b, params_at(b, 0) + at, v); };
}
// Sets operand slot `slot` (0..5 inputs, 6..7 outputs) of operator k to tensor t.
std::function<void(Bytes&)> operand(std::size_t k, int slot, std::uint16_t t) {
  return [=](Bytes& b) { wr<std::uint16_t>(b, op_at(b, k) + 4 + 2 * std::size_t(slot), t); };
}

// A validated model with its exactly-sized arena (heap blocks: ASan sees any overrun).
struct Loaded {
  std::uint32_t* blob = nullptr;
  std::uint8_t* arena = nullptr;
  tlm_model m{};
  tlm_status status = TLM_ERR_NULL;
  Bytes bytes;

  explicit Loaded(const Bytes& b) : bytes(b) {
    blob = static_cast<std::uint32_t*>(std::malloc(b.size() + 4));
    std::memcpy(blob, b.data(), b.size());
    status = tlm_model_init(&m, blob, b.size());
    if (status == TLM_OK) {
      const std::size_t n = tlm_arena_bytes(&m) ? tlm_arena_bytes(&m) : 1;
      arena = static_cast<std::uint8_t*>(std::malloc(n));
      std::memset(arena, 0, n);
    }
  }
  ~Loaded() {
    std::free(blob);
    std::free(arena);
  }
  Loaded(const Loaded&) = delete;
  Loaded& operator=(const Loaded&) = delete;

  std::int8_t* at(std::uint16_t t) { return reinterpret_cast<std::int8_t*>(arena) + tensor_offset(bytes, t); }
  void set(std::uint16_t t, const I8& v) { std::memcpy(at(t), v.data(), v.size()); }
  I8 get(std::uint16_t t, std::size_t n) { return I8(at(t), at(t) + n); }
  tlm_status invoke() { return tlm_invoke(&m, arena, tlm_arena_bytes(&m)); }
};

tlm_status init_status(const Bytes& b) { return Loaded(b).status; }

I8 rand_i8(tlref::Rng& rng, std::size_t n) {
  I8 v(n);
  for (auto& e : v) e = std::int8_t(rng.range(-128, 127));
  return v;
}

// Random corruption of a valid blob (CRC recomputed): whatever comes of it, init and invoke stay
// inside their buffers (ASan / UBSan builds check it). Returns how many variants ran.
int fuzz(const Bytes& good, std::uint64_t seed, int trials) {
  tlref::Rng rng(seed);
  int ran = 0;
  const std::uint32_t values[] = {0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF,
                                  0x80000000u, 0xFFFFFFFFu, 0xFFFFFF80u, 31, 32, 23, 4095, 4096};
  for (int t = 0; t < trials; ++t) {
    Bytes b = good;
    const int edits = int(rng.range(1, 3));
    for (int e = 0; e < edits; ++e) {
      // Mostly the records and the params, where the new checks are.
      const std::size_t at = 4 * std::size_t(rng.range(4, std::int64_t(b.size() / 4) - 1));
      if (rng.range(0, 1) == 0)
        wr<std::uint32_t>(b, at, values[rng.range(0, std::size(values) - 1)]);
      else
        b[at + std::size_t(rng.range(0, 3))] ^= std::uint8_t(1u << rng.range(0, 7));
    }
    fix_crc(b);
    Loaded l(b);
    if (l.status != TLM_OK) continue;
    if (tlm_arena_bytes(&l.m) > (64u << 20)) continue;
    for (std::uint32_t i = 0; i < tlm_arena_bytes(&l.m); ++i) l.arena[i] = std::uint8_t(rng.u64());
    CHECK(l.invoke() == TLM_OK);
    ++ran;
  }
  return ran;
}

}  // namespace

// ---- CONV_2D and DEPTHWISE_CONV_2D ------------------------------------------------------------

namespace {

const tinylearn::QuantParams kIn{0.05f, -3}, kOut{0.1f, 5};

struct ConvModel {
  Bytes blob;
  std::uint16_t input, filter, bias, mult, shift, output;
  tlm_conv2d_params conv;
  tlm_depthwise_conv2d_params dw;
  tlm_conv_dims dims;
  I8 filter_data;
  I32 bias_data, mult_data, shift_data;
};

// input [2, 6, 5, 3] -> conv 3x3 SAME stride (2, 1) to 4 channels, or depthwise 3x3 SAME with
// depth multiplier 2 (6 channels). Per-channel scales from op_params.
ConvModel make_conv(bool depthwise, std::uint64_t seed) {
  tlref::Rng rng(seed);
  ConvModel c;
  const int n = 2, h = 6, w = 5, ic = 3, k = 3, dm = 2;
  const int oc = depthwise ? ic * dm : 4;
  std::vector<float> scales;
  for (int o = 0; o < oc; ++o) scales.push_back(float(rng.uniform(0.002, 0.02)));
  tinylearn::Conv2DOptions o;
  o.stride_h = 2;
  o.padding = tinylearn::Padding::Same;
  o.activation = tinylearn::FusedActivation::Relu;
  const tinylearn::Conv2DParams p = tinylearn::conv2d_params(kIn, scales, kOut, o, h, w, k, k);
  c.conv = p.params;
  c.dw = {p.params.input_offset, p.params.output_offset, p.params.stride_h, p.params.stride_w,
          p.params.dilation_h,   p.params.dilation_w,    p.params.pad_top,  p.params.pad_left,
          dm,                    p.params.activation_min, p.params.activation_max};
  c.mult_data = p.multipliers;
  c.shift_data = p.shifts;
  c.dims = {n, h, w, ic, k, k, p.output_h, p.output_w, oc};
  c.filter_data = rand_i8(rng, std::size_t(oc) * k * k * (depthwise ? 1 : ic));
  for (int i = 0; i < oc; ++i) c.bias_data.push_back(std::int32_t(rng.range(-3000, 3000)));
  tinylearn::BlobBuilder bb;
  c.input = bb.add_arena_tensor(TLM_TYPE_INT8, {n, h, w, ic}, kIn);
  c.filter = bb.add_const_tensor(TLM_TYPE_INT8, depthwise ? Dims{1, k, k, oc} : Dims{oc, k, k, ic},
                                 c.filter_data.data(), {0.01f, 0});
  c.bias = bb.add_const_tensor(TLM_TYPE_INT32, {oc}, c.bias_data.data(), {0.0005f, 0});
  c.mult = bb.add_const_tensor(TLM_TYPE_INT32, {oc}, c.mult_data.data(), {0.0f, 0});
  c.shift = bb.add_const_tensor(TLM_TYPE_INT32, {oc}, c.shift_data.data(), {0.0f, 0});
  c.output = bb.add_arena_tensor(TLM_TYPE_INT8, {n, p.output_h, p.output_w, oc}, kOut);
  if (depthwise)
    bb.add_op(TLM_OP_DEPTHWISE_CONV_2D, {c.input, c.filter, c.bias, c.mult, c.shift}, {c.output}, &c.dw, sizeof c.dw);
  else
    bb.add_op(TLM_OP_CONV_2D, {c.input, c.filter, c.bias, c.mult, c.shift}, {c.output}, &c.conv, sizeof c.conv);
  c.blob = bb.finish(c.input, c.output);
  return c;
}

}  // namespace

TEST_CASE("CONV_2D and DEPTHWISE_CONV_2D: tlm_invoke equals the direct kernel call") {
  for (bool depthwise : {false, true}) {
    CAPTURE(depthwise);
    const ConvModel c = make_conv(depthwise, 11);
    Loaded l(c.blob);
    REQUIRE(l.status == TLM_OK);
    tlref::Rng rng(12);
    const std::size_t in_n = 2 * 6 * 5 * 3, out_n = std::size_t(c.dims.batches) * c.dims.output_h * c.dims.output_w * c.dims.output_c;
    for (int trial = 0; trial < 5; ++trial) {
      const I8 x = rand_i8(rng, in_n);
      l.set(c.input, x);
      REQUIRE(l.invoke() == TLM_OK);
      I8 want(out_n);
      if (depthwise)
        tlm_depthwise_conv2d_s8(&c.dw, &c.dims, c.mult_data.data(), c.shift_data.data(), x.data(), c.filter_data.data(), c.bias_data.data(), want.data());
      else
        tlm_conv2d_s8(&c.conv, &c.dims, c.mult_data.data(), c.shift_data.data(), x.data(), c.filter_data.data(), c.bias_data.data(), want.data());
      CHECK(l.get(c.output, out_n) == want);
    }
  }
}

TEST_CASE("CONV_2D and DEPTHWISE_CONV_2D: tlm_model_init rejects bad records, shapes, params, overlaps") {
  for (bool depthwise : {false, true}) {
    CAPTURE(depthwise);
    const ConvModel c = make_conv(depthwise, 21);
    const Bytes& b = c.blob;
    REQUIRE(init_status(b) == TLM_OK);
    const std::size_t op = op_at(b, 0);
    // Without a bias (TLM_NO_TENSOR) the operator is valid too: only the bias tensor, then used by
    // nothing, is refused (after every operator has been checked).
    CHECK(init_status(with(b, operand(0, 2, TLM_NO_TENSOR))) == TLM_ERR_UNUSED_TENSOR);
    // Record: operand counts, params size.
    CHECK(init_status(with(b, [&](Bytes& m) { m[op + 2] = 4; })) == TLM_ERR_BAD_OP);
    CHECK(init_status(with(b, [&](Bytes& m) { m[op + 3] = 2; })) == TLM_ERR_BAD_OP);
    CHECK(init_status(with(b, [&](Bytes& m) { wr<std::uint32_t>(m, op + 24, depthwise ? 40 : 36); })) == TLM_ERR_BAD_OP);
    CHECK(init_status(with(b, operand(0, 3, TLM_NO_TENSOR))) == TLM_ERR_BAD_OP);  // multipliers are required
    CHECK(init_status(with(b, operand(0, 4, 999))) == TLM_ERR_BAD_OP);
    // Operand types and storage.
    CHECK(init_status(with(b, operand(0, 2, c.filter))) == TLM_ERR_SHAPE);  // int8 bias
    CHECK(init_status(with(b, operand(0, 3, c.filter))) == TLM_ERR_SHAPE);  // int8 multipliers
    CHECK(init_status(with(b, operand(0, 1, c.input))) == TLM_ERR_SHAPE);   // filter in the arena
    CHECK(init_status(with(b, operand(0, 0, c.filter))) == TLM_ERR_SHAPE);  // input a constant
    // Shapes: filter channels, output channels and batches, per-channel lengths, ranks.
    CHECK(init_status(with(b, dim(c.input, 3, 2))) == TLM_ERR_SHAPE);
    CHECK(init_status(with(b, dim(c.output, 3, 3))) == TLM_ERR_SHAPE);
    CHECK(init_status(with(b, dim(c.output, 0, 1))) == TLM_ERR_SHAPE);
    CHECK(init_status(with(b, dim(c.mult, 0, 2))) == TLM_ERR_SHAPE);
    CHECK(init_status(with(b, dim(c.shift, 0, 2))) == TLM_ERR_SHAPE);
    CHECK(init_status(with(b, dim(c.bias, 0, 2))) == TLM_ERR_SHAPE);
    CHECK(init_status(with(b, [&](Bytes& m) {  // filter rank 3
            m[tensor_at(c.filter) + 1] = 3;
            wr<std::int32_t>(m, tensor_at(c.filter) + 16, 1);
            wr<std::int32_t>(m, tensor_at(c.filter) + 12, depthwise ? 6 * 3 : 3 * 3);
          })) == TLM_ERR_SHAPE);
    // Params (offsets into tlm_conv2d_params / tlm_depthwise_conv2d_params).
    CHECK(init_status(with(b, param(8, 0))) == TLM_ERR_BAD_PARAMS);    // stride_h 0
    CHECK(init_status(with(b, param(24, 3))) == TLM_ERR_BAD_PARAMS);   // pad_top = filter
    CHECK(init_status(with(b, param(0, 200))) == TLM_ERR_BAD_PARAMS);  // input offset
    CHECK(init_status(with(b, param(depthwise ? 40 : 36, 300))) == TLM_ERR_BAD_PARAMS);  // act max
    if (depthwise) CHECK(init_status(with(b, param(32, 3))) == TLM_ERR_SHAPE);  // depth multiplier
    CHECK(init_status(with(b, [&](Bytes& m) { wr<std::int32_t>(m, tensor_offset(m, c.shift) + 4, 31); })) == TLM_ERR_BAD_PARAMS);
    CHECK(init_status(with(b, [&](Bytes& m) { wr<std::int32_t>(m, tensor_offset(m, c.mult), -1); })) == TLM_ERR_BAD_PARAMS);
    CHECK(init_status(with(b, [&](Bytes& m) { wr<std::int32_t>(m, tensor_offset(m, c.bias), INT32_MAX - 100); })) == TLM_ERR_ACCUMULATOR_RANGE);
    // The output over the input (in the arena): never allowed for a convolution.
    CHECK(init_status(with(b, move_to(c.output, tensor_offset(b, c.input)))) == TLM_ERR_BAD_OP);
    const std::uint32_t in_at = tensor_offset(b, c.input);
    CHECK(init_status(with(b, move_to(c.output, in_at >= 8 ? in_at - 8 : in_at + 8))) == TLM_ERR_BAD_OP);
    CHECK(fuzz(b, depthwise ? 31 : 32, 1500) > 50);
  }
}

// ---- Pools and MEAN --------------------------------------------------------------------------------

TEST_CASE("MAX_POOL_2D, AVERAGE_POOL_2D and MEAN: invoke equals the kernels; init rejects bad blobs") {
  const tinylearn::QuantParams q{0.1f, 7};
  tinylearn::Pool2DOptions o;
  o.filter_h = 3, o.filter_w = 2, o.stride_h = 2, o.stride_w = 2;
  o.padding = tinylearn::Padding::Same;
  const tinylearn::Pool2DParams pp = tinylearn::pool2d_params(q, q, o, 7, 6);
  const tlm_pool_dims pd{2, 7, 6, 3, pp.output_h, pp.output_w};
  for (std::uint16_t opcode : {std::uint16_t(TLM_OP_MAX_POOL_2D), std::uint16_t(TLM_OP_AVERAGE_POOL_2D)}) {
    CAPTURE(opcode);
    tinylearn::BlobBuilder bb;
    const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 7, 6, 3}, q);
    const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {2, pp.output_h, pp.output_w, 3}, q);
    bb.add_op(opcode, {in}, {out}, &pp.params, sizeof pp.params);
    const Bytes b = bb.finish(in, out);
    Loaded l(b);
    REQUIRE(l.status == TLM_OK);
    tlref::Rng rng(40 + opcode);
    const I8 x = rand_i8(rng, 2 * 7 * 6 * 3);
    l.set(in, x);
    REQUIRE(l.invoke() == TLM_OK);
    I8 want(std::size_t(2) * pp.output_h * pp.output_w * 3);
    if (opcode == TLM_OP_MAX_POOL_2D)
      tlm_max_pool2d_s8(&pp.params, &pd, x.data(), want.data());
    else
      tlm_avg_pool2d_s8(&pp.params, &pd, x.data(), want.data());
    CHECK(l.get(out, want.size()) == want);

    CHECK(init_status(with(b, [&](Bytes& m) { wr<std::int32_t>(m, tensor_at(out) + 28, 8); })) == TLM_ERR_SHAPE);  // zero point
    CHECK(init_status(with(b, [&](Bytes& m) { wr<float>(m, tensor_at(out) + 24, 0.2f); })) == TLM_ERR_SHAPE);    // scale
    CHECK(init_status(with(b, dim(out, 3, 2))) == TLM_ERR_SHAPE);  // channels
    CHECK(init_status(with(b, dim(out, 0, 1))) == TLM_ERR_SHAPE);  // batches
    CHECK(init_status(with(b, param(16, 3))) == TLM_ERR_BAD_PARAMS);  // pad_top = filter_h
    CHECK(init_status(with(b, param(0, 3))) == TLM_ERR_SHAPE);        // stride 3: 4 rows overrun
    CHECK(init_status(with(b, [&](Bytes& m) { m[op_at(m, 0) + 2] = 2; })) == TLM_ERR_BAD_OP);
    CHECK(init_status(with(b, move_to(out, tensor_offset(b, in)))) == TLM_ERR_BAD_OP);
    CHECK(fuzz(b, 50 + opcode, 1000) > 50);
  }

  // MEAN: [2, 5, 4, 3] -> [2, 3] and -> [2, 1, 1, 3].
  const tinylearn::QuantParams mq_in{0.05f, -10}, mq_out{0.04f, 3};
  const tlm_mean_params mp = tinylearn::mean_params(mq_in, mq_out, 20);
  const tlm_mean_dims md{2, 5, 4, 3};
  for (const Dims& out_dims : {Dims{2, 3}, Dims{2, 1, 1, 3}}) {
    tinylearn::BlobBuilder bb;
    const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 5, 4, 3}, mq_in);
    const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, out_dims, mq_out);
    bb.add_op(TLM_OP_MEAN, {in}, {out}, &mp, sizeof mp);
    const Bytes b = bb.finish(in, out);
    Loaded l(b);
    REQUIRE(l.status == TLM_OK);
    tlref::Rng rng(60);
    const I8 x = rand_i8(rng, 120);
    l.set(in, x);
    REQUIRE(l.invoke() == TLM_OK);
    I8 want(6);
    tlm_mean_s8(&mp, &md, x.data(), want.data());
    CHECK(l.get(out, 6) == want);
    CHECK(init_status(with(b, dim(out, int(out_dims.size()) - 1, 2))) == TLM_ERR_SHAPE);
    if (out_dims.size() == 4) CHECK(init_status(with(b, dim(out, 1, 2))) == TLM_ERR_SHAPE);
    CHECK(init_status(with(b, param(12, 31))) == TLM_ERR_BAD_PARAMS);
    CHECK(init_status(with(b, move_to(out, tensor_offset(b, in)))) == TLM_ERR_BAD_OP);
    CHECK(fuzz(b, 61, 500) > 20);
  }
  {  // [1, 2, 1, 3] -> [1, 2, 1, 3]: not a mean over H and W.
    tinylearn::BlobBuilder bb;
    const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 2, 3}, mq_in);
    const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 1, 3}, mq_out);
    bb.add_op(TLM_OP_MEAN, {in}, {out}, &mp, sizeof mp);
    CHECK(init_status(bb.finish(in, out)) == TLM_ERR_SHAPE);
  }
  {  // h * w = 2^23 + 2: the int32 sum could overflow.
    tinylearn::BlobBuilder bb;
    const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {1, (1 << 22) + 1, 2, 1}, mq_in);
    const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 1}, mq_out);
    bb.add_op(TLM_OP_MEAN, {in}, {out}, &mp, sizeof mp);
    CHECK(init_status(bb.finish(in, out)) == TLM_ERR_ACCUMULATOR_RANGE);
  }
}

// ---- ADD, RELU, QUANTIZE (int8): in place ----------------------------------------------------------

TEST_CASE("ADD: invoke equals the kernel, disjoint or in place over either input; partial overlap rejected") {
  const tlm_add_params p = tinylearn::add_params({0.1f, 3}, {0.05f, -7}, {0.12f, -2}, tinylearn::FusedActivation::Relu);
  tinylearn::BlobBuilder bb;
  const std::uint16_t a = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 3, 4}, {0.1f, 3});
  const std::uint16_t b2 = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 3, 4}, {0.05f, -7});
  const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 3, 4}, {0.12f, -2});
  bb.add_op(TLM_OP_ADD, {a, b2}, {out}, &p, sizeof p);
  const Bytes b = bb.finish(a, out);
  tlref::Rng rng(70);
  const I8 xa = rand_i8(rng, 24), xb = rand_i8(rng, 24);
  I8 want(24);
  tlm_add_s8(&p, 24, xa.data(), xb.data(), want.data());
  const std::uint32_t at_a = tensor_offset(b, a), at_b = tensor_offset(b, b2);
  for (const Bytes& variant : {b, with(b, move_to(out, at_a)), with(b, move_to(out, at_b))}) {
    Loaded l(variant);
    REQUIRE(l.status == TLM_OK);
    l.set(a, xa);
    l.set(b2, xb);
    REQUIRE(l.invoke() == TLM_OK);
    CHECK(l.get(out, 24) == want);
  }
  {  // Both inputs the same tensor, the output over it: a + a in place (a blob of its own: with
     // b's second input redirected, its tensor would be used by nothing).
    tinylearn::BlobBuilder ba;
    const std::uint16_t x = ba.add_arena_tensor(TLM_TYPE_INT8, {2, 3, 4}, {0.1f, 3});
    const std::uint16_t y = ba.add_arena_tensor(TLM_TYPE_INT8, {2, 3, 4}, {0.12f, -2});
    ba.share_arena(x, y);
    ba.add_op(TLM_OP_ADD, {x, x}, {y}, &p, sizeof p);
    const Bytes aa = ba.finish(x, y);
    REQUIRE(tensor_offset(aa, x) == tensor_offset(aa, y));
    Loaded l(aa);
    REQUIRE(l.status == TLM_OK);
    l.set(x, xa);
    REQUIRE(l.invoke() == TLM_OK);
    I8 twice(24);
    tlm_add_s8(&p, 24, xa.data(), xa.data(), twice.data());
    CHECK(l.get(y, 24) == twice);
    // The same through the two-input blob: the second input's tensor is then unused.
    CHECK(init_status(with(b, [&](Bytes& m) { operand(0, 1, a)(m); move_to(out, at_a)(m); })) ==
          TLM_ERR_UNUSED_TENSOR);
  }
  CHECK(init_status(with(b, move_to(out, at_a + 4))) == TLM_ERR_BAD_OP);
  CHECK(init_status(with(b, [&](Bytes& m) { dim(b2, 1, 4)(m); dim(b2, 2, 3)(m); })) == TLM_ERR_SHAPE);  // same count
  CHECK(init_status(with(b, dim(out, 0, 3))) == TLM_ERR_SHAPE);
  CHECK(init_status(with(b, param(8, 23))) == TLM_ERR_BAD_PARAMS);
  CHECK(init_status(with(b, param(16, 1))) == TLM_ERR_BAD_PARAMS);
  CHECK(init_status(with(b, [&](Bytes& m) { m[op_at(m, 0) + 2] = 3; })) == TLM_ERR_BAD_OP);
  CHECK(fuzz(b, 71, 1000) > 50);
}

TEST_CASE("RELU and int8 QUANTIZE: in place exact; SOFTMAX needs zero point -128, depth <= 4095") {
  tlref::Rng rng(80);
  const tinylearn::QuantParams qi{0.1f, -20}, qo{0.05f, -128};
  const tlm_relu_params rp = tinylearn::relu_params(qi, qo, tinylearn::FusedActivation::Relu6);
  const tlm_quantize_params qp = tinylearn::requantize_params(qi, {0.2f, 4});
  const tlm_softmax_params sp = tinylearn::softmax_params(0.1f);
  const I8 x = rand_i8(rng, 30);
  struct Case {
    std::uint16_t opcode;
    const void* params;
    std::uint32_t bytes;
    tinylearn::QuantParams out_q;
    bool in_place;
    std::function<void(const std::int8_t*, std::int8_t*)> kernel;
  };
  const Case cases[] = {
      {TLM_OP_RELU, &rp, sizeof rp, qo, true, [&](const std::int8_t* i, std::int8_t* o) { tlm_relu_s8(&rp, 30, i, o); }},
      {TLM_OP_QUANTIZE, &qp, sizeof qp, {0.2f, 4}, true, [&](const std::int8_t* i, std::int8_t* o) { tlm_requantize_s8(&qp, 30, i, o); }},
      {TLM_OP_SOFTMAX, &sp, sizeof sp, tinylearn::softmax_output_quantization(), false,
       [&](const std::int8_t* i, std::int8_t* o) { const tlm_softmax_dims d{3, 10}; tlm_softmax_s8(&sp, &d, i, o); }},
  };
  for (const Case& c : cases) {
    CAPTURE(c.opcode);
    tinylearn::BlobBuilder bb;
    const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {3, 10}, qi);
    const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {3, 10}, c.out_q);
    bb.add_op(c.opcode, {in}, {out}, c.params, c.bytes);
    const Bytes b = bb.finish(in, out);
    I8 want(30);
    c.kernel(x.data(), want.data());
    const Bytes aliased = with(b, move_to(out, tensor_offset(b, in)));
    for (const Bytes* variant : {&b, &aliased}) {
      Loaded l(*variant);
      if (variant == &aliased && !c.in_place) {
        CHECK(l.status == TLM_ERR_BAD_OP);
        continue;
      }
      REQUIRE(l.status == TLM_OK);
      l.set(in, x);
      REQUIRE(l.invoke() == TLM_OK);
      CHECK(l.get(out, 30) == want);
    }
    const std::uint32_t at = tensor_offset(b, in);
    CHECK(init_status(with(b, move_to(out, at >= 4 ? at - 4 : at + 4))) == TLM_ERR_BAD_OP);  // partial overlap
    CHECK(init_status(with(b, [&](Bytes& m) { dim(out, 0, 2)(m); dim(out, 1, 15)(m); })) == TLM_ERR_SHAPE);
    CHECK(fuzz(b, 81 + c.opcode, 800) > 30);
  }
  // SOFTMAX specifics.
  tinylearn::BlobBuilder bb;
  const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 4096}, qi);
  const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 4096}, tinylearn::softmax_output_quantization());
  bb.add_op(TLM_OP_SOFTMAX, {in}, {out}, &sp, sizeof sp);
  const Bytes b = bb.finish(in, out);
  CHECK(init_status(b) == TLM_ERR_ACCUMULATOR_RANGE);
  const Bytes shorter = with(b, [&](Bytes& m) {
    wr<std::int32_t>(m, tensor_at(in) + 8, 4095);
    wr<std::int32_t>(m, tensor_at(out) + 8, 4095);
  });
  CHECK(init_status(shorter) == TLM_OK);
  CHECK(init_status(with(shorter, [&](Bytes& m) { wr<std::int32_t>(m, tensor_at(out) + 28, -127); })) == TLM_ERR_SHAPE);
  CHECK(init_status(with(shorter, param(8, -100000000))) == TLM_ERR_BAD_PARAMS);  // diff_min beyond the radius
}

// ---- CONCATENATION, RESHAPE ------------------------------------------------------------------------

TEST_CASE("CONCATENATION: any axis, up to 6 inputs per operator, more by chaining") {
  const tinylearn::QuantParams q{0.1f, 1};
  const tlm_concatenation_params axis3{3}, axis1{1};
  tlref::Rng rng(90);
  SUBCASE("3 inputs along the channels") {
    tinylearn::BlobBuilder bb;
    const std::uint16_t i0 = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 1}, q);
    const std::uint16_t i1 = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 4}, q);
    const std::uint16_t i2 = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 2}, q);
    const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 7}, q);
    bb.add_op(TLM_OP_CONCATENATION, {i0, i1, i2}, {out}, &axis3, sizeof axis3);
    const Bytes b = bb.finish(i0, out);
    Loaded l(b);
    REQUIRE(l.status == TLM_OK);
    const I8 x0 = rand_i8(rng, 6), x1 = rand_i8(rng, 24), x2 = rand_i8(rng, 12);
    l.set(i0, x0);
    l.set(i1, x1);
    l.set(i2, x2);
    REQUIRE(l.invoke() == TLM_OK);
    I8 want;
    for (int p = 0; p < 6; ++p) {
      want.push_back(x0[std::size_t(p)]);
      for (int c = 0; c < 4; ++c) want.push_back(x1[std::size_t(p * 4 + c)]);
      for (int c = 0; c < 2; ++c) want.push_back(x2[std::size_t(p * 2 + c)]);
    }
    CHECK(l.get(out, 42) == want);
    CHECK(init_status(with(b, param(0, 4))) == TLM_ERR_BAD_PARAMS);   // axis = rank
    CHECK(init_status(with(b, param(0, -1))) == TLM_ERR_BAD_PARAMS);
    CHECK(init_status(with(b, param(0, 2))) == TLM_ERR_SHAPE);        // channels differ
    CHECK(init_status(with(b, dim(out, 3, 8))) == TLM_ERR_SHAPE);  // the inputs add up to 7
    CHECK(init_status(with(b, dim(i1, 2, 4))) == TLM_ERR_SHAPE);   // width differs
    CHECK(init_status(with(b, [&](Bytes& m) { wr<std::int32_t>(m, tensor_at(i2) + 28, 2); })) == TLM_ERR_SHAPE);  // zero point
    CHECK(init_status(with(b, [&](Bytes& m) { m[op_at(m, 0) + 2] = 0; })) == TLM_ERR_BAD_OP);
    CHECK(init_status(with(b, [&](Bytes& m) { m[op_at(m, 0) + 2] = 7; })) == TLM_ERR_BAD_OP);
    CHECK(init_status(with(b, move_to(out, tensor_offset(b, i1)))) == TLM_ERR_BAD_OP);
    // The same input twice is fine: x1 ++ x1 along the channels (a blob of its own, in which
    // every tensor is used).
    tinylearn::BlobBuilder b2;
    const std::uint16_t j1 = b2.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 4}, q);
    const std::uint16_t j_out = b2.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 8}, q);
    b2.add_op(TLM_OP_CONCATENATION, {j1, j1}, {j_out}, &axis3, sizeof axis3);
    Loaded twice(b2.finish(j1, j_out));
    REQUIRE(twice.status == TLM_OK);
    twice.set(j1, x1);
    REQUIRE(twice.invoke() == TLM_OK);
    I8 want2;
    for (int p = 0; p < 6; ++p)
      for (int k = 0; k < 2; ++k)
        for (int c = 0; c < 4; ++c) want2.push_back(x1[std::size_t(p * 4 + c)]);
    CHECK(twice.get(j_out, 48) == want2);
    CHECK(fuzz(b, 91, 1000) > 10);
  }
  SUBCASE("8 inputs along axis 1: two chained operators") {
    tinylearn::BlobBuilder bb;
    std::vector<std::uint16_t> in;
    for (int k = 0; k < 8; ++k) in.push_back(bb.add_arena_tensor(TLM_TYPE_INT8, {2, 1, 3}, q));
    const std::uint16_t mid = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 6, 3}, q);
    const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 8, 3}, q);
    bb.add_op(TLM_OP_CONCATENATION, {in[0], in[1], in[2], in[3], in[4], in[5]}, {mid}, &axis1, sizeof axis1);
    bb.add_op(TLM_OP_CONCATENATION, {mid, in[6], in[7]}, {out}, &axis1, sizeof axis1);
    const Bytes b = bb.finish(in[0], out);
    Loaded l(b);
    REQUIRE(l.status == TLM_OK);
    std::vector<I8> x;
    for (int k = 0; k < 8; ++k) {
      x.push_back(rand_i8(rng, 6));
      l.set(in[std::size_t(k)], x.back());
    }
    REQUIRE(l.invoke() == TLM_OK);
    I8 want;
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 8; ++k)
        for (int c = 0; c < 3; ++c) want.push_back(x[std::size_t(k)][std::size_t(n * 3 + c)]);
    CHECK(l.get(out, 48) == want);
  }
}

TEST_CASE("RESHAPE: aliased (nothing to do) or disjoint (a copy); same bytes, type and quantization") {
  // x -> RELU -> a [1, 2, 3, 4] -> RESHAPE -> r [1, 24] -> RELU -> y
  const tinylearn::QuantParams q{0.1f, 1};
  const tlm_relu_params rp = tinylearn::relu_params(q, q, tinylearn::FusedActivation::Relu);
  tinylearn::BlobBuilder bb;
  const std::uint16_t x = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 4}, q);
  const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 2, 3, 4}, q);
  const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 24}, q);
  const std::uint16_t y = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 24}, q);
  bb.add_op(TLM_OP_RELU, {x}, {in}, &rp, sizeof rp);
  bb.add_op(TLM_OP_RESHAPE, {in}, {out}, nullptr, 0);
  bb.add_op(TLM_OP_RELU, {out}, {y}, &rp, sizeof rp);
  const Bytes b = bb.finish(x, y);
  tlref::Rng rng(100);
  const I8 xs = rand_i8(rng, 24);
  I8 want(24);
  tlm_relu_s8(&rp, 24, xs.data(), want.data());
  for (const Bytes& variant : {b, with(b, move_to(out, tensor_offset(b, in)))}) {
    Loaded l(variant);
    REQUIRE(l.status == TLM_OK);
    l.set(x, xs);
    REQUIRE(l.invoke() == TLM_OK);
    CHECK(l.get(out, 24) == want);  // relu is idempotent here (same quantization)
    CHECK(l.get(y, 24) == want);
  }
  const std::uint32_t at = tensor_offset(b, in);
  CHECK(init_status(with(b, move_to(out, at >= 4 ? at - 4 : at + 4))) == TLM_ERR_BAD_OP);
  CHECK(init_status(with(b, [&](Bytes& m) { dim(out, 1, 23)(m); dim(y, 1, 23)(m); })) == TLM_ERR_SHAPE);
  CHECK(init_status(with(b, [&](Bytes& m) { wr<std::int32_t>(m, tensor_at(out) + 28, 0); })) == TLM_ERR_SHAPE);
  CHECK(init_status(with(b, [&](Bytes& m) { m[tensor_at(out)] = TLM_TYPE_INT32; dim(out, 1, 6)(m); })) == TLM_ERR_SHAPE);
  CHECK(init_status(with(b, [&](Bytes& m) { wr<std::uint32_t>(m, op_at(m, 1) + 24, 4); })) == TLM_ERR_BAD_OP);
  CHECK(fuzz(b, 101, 800) > 20);
}

// ---- float32: QUANTIZE and DEQUANTIZE at the model's edges ------------------------------------------

namespace {

// BlobBuilder sizes arena tensors as int8 or int32: a float32 tensor is added as int32 (the same
// 4 bytes per element, so the plan is right) and retyped here.
Bytes retype_float(Bytes b, std::initializer_list<std::uint16_t> tensors) {
  for (std::uint16_t t : tensors) b[tensor_at(t)] = TLM_TYPE_FLOAT32;
  fix_crc(b);
  return b;
}

}  // namespace

TEST_CASE("float32 model: QUANTIZE -> RELU -> DEQUANTIZE; tlm_input_data / tlm_output_data") {
  const tinylearn::QuantParams q_in{0.05f, -10}, q_mid{0.03f, -128};
  const tlm_quantize_params qp = tinylearn::quantize_params(q_in);
  const tlm_relu_params rp = tinylearn::relu_params(q_in, q_mid, tinylearn::FusedActivation::Relu);
  const tlm_dequantize_params dp = tinylearn::dequantize_params(q_mid);
  tinylearn::BlobBuilder bb;
  const std::uint16_t x = bb.add_arena_tensor(TLM_TYPE_INT32, {2, 5}, {0.0f, 0});
  const std::uint16_t xq = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 5}, q_in);
  const std::uint16_t yq = bb.add_arena_tensor(TLM_TYPE_INT8, {2, 5}, q_mid);
  const std::uint16_t y = bb.add_arena_tensor(TLM_TYPE_INT32, {2, 5}, {0.0f, 0});
  bb.add_op(TLM_OP_QUANTIZE, {x}, {xq}, &qp, sizeof qp);
  bb.add_op(TLM_OP_RELU, {xq}, {yq}, &rp, sizeof rp);
  bb.add_op(TLM_OP_DEQUANTIZE, {yq}, {y}, &dp, sizeof dp);
  const Bytes b = retype_float(bb.finish(x, y), {x, y});
  Loaded l(b);
  REQUIRE(l.status == TLM_OK);
  tlm_tensor_info info;
  REQUIRE(tlm_tensor(&l.m, l.m.input_tensor, &info) == TLM_OK);
  CHECK(info.type == TLM_TYPE_FLOAT32);
  CHECK(info.bytes == 40);
  REQUIRE(tlm_tensor(&l.m, l.m.output_tensor, &info) == TLM_OK);
  CHECK(info.type == TLM_TYPE_FLOAT32);
  float* in = static_cast<float*>(tlm_input_data(&l.m, l.arena));
  const float* out = static_cast<const float*>(tlm_output_data(&l.m, l.arena));
  CHECK(static_cast<void*>(tlm_input(&l.m, l.arena)) == static_cast<void*>(in));
  CHECK(tlm_input_data(&l.m, nullptr) == nullptr);
  CHECK(tlm_output_data(nullptr, l.arena) == nullptr);
  const std::vector<float> xs{-1.0f, -0.025f, 0.0f, 0.025f, 0.07f, 1.0f, 3.3f, 6.4f, 100.0f, -100.0f};
  std::memcpy(in, xs.data(), 40);
  REQUIRE(l.invoke() == TLM_OK);
  I8 a(10), r(10);
  std::vector<float> want(10);
  tlm_quantize_f32_s8(&qp, 10, xs.data(), a.data());
  tlm_relu_s8(&rp, 10, a.data(), r.data());
  tlm_dequantize_s8(&dp, 10, r.data(), want.data());
  CHECK(std::vector<float>(out, out + 10) == want);
  CHECK(want[0] == 0.0f);  // relu
  CHECK(std::fabs(want[6] - 3.3f) < 0.05f);

  // float32 constants do not exist; float32 where int8 is expected and vice versa.
  CHECK(init_status(with(b, [&](Bytes& m) { m[tensor_at(xq)] = TLM_TYPE_FLOAT32; })) != TLM_OK);
  CHECK(init_status(with(b, [&](Bytes& m) { m[tensor_at(y)] = TLM_TYPE_INT8; })) == TLM_ERR_SHAPE);
  CHECK(init_status(with(b, [&](Bytes& m) { m[tensor_at(x)] = TLM_TYPE_INT32; })) == TLM_ERR_BAD_HEADER);  // int32 model input
  CHECK(init_status(with(b, param(8, 5))) == TLM_ERR_BAD_PARAMS);  // a multiplier on the float path
  CHECK(init_status(with(b, [&](Bytes& m) { wr<float>(m, params_at(m, 0) + 16, 0.0f); })) == TLM_ERR_BAD_PARAMS);
  CHECK(init_status(with(b, [&](Bytes& m) { wr<float>(m, params_at(m, 2) + 4, std::nanf("")); })) == TLM_ERR_BAD_PARAMS);
  // The float input and the int8 output of QUANTIZE may not overlap (no in place across types).
  CHECK(init_status(with(b, move_to(xq, tensor_offset(b, x)))) == TLM_ERR_BAD_OP);
  CHECK(init_status(with(b, move_to(y, tensor_offset(b, yq)))) == TLM_ERR_BAD_OP);
  CHECK(fuzz(b, 111, 1500) > 50);

  // A float32 tensor stored in the blob is refused (its record, before anything else: the
  // constant is used by no operator, which the core refuses next).
  tinylearn::BlobBuilder cb;
  const std::uint16_t ci = cb.add_arena_tensor(TLM_TYPE_INT8, {4}, q_in);
  const std::uint16_t cc = cb.add_const_tensor(TLM_TYPE_INT32, {4}, I32{1, 2, 3, 4}.data(), {0.0f, 0});
  const std::uint16_t co = cb.add_arena_tensor(TLM_TYPE_INT8, {4}, q_in);
  cb.add_op(TLM_OP_RELU, {ci}, {co}, &rp, sizeof rp);
  const Bytes cblob = cb.finish(ci, co);
  CHECK(init_status(cblob) == TLM_ERR_UNUSED_TENSOR);
  CHECK(init_status(retype_float(cblob, {cc})) == TLM_ERR_BAD_TENSOR);
}

// ---- Operators left out of the build -----------------------------------------------------------------

TEST_CASE("A core built without SOFTMAX and CONV_2D rejects them with TLM_ERR_UNKNOWN_OP, runs the rest") {
  const tlm_softmax_params sp = tinylearn::softmax_params(0.1f);
  tinylearn::BlobBuilder bb;
  const std::uint16_t in = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 10}, {0.1f, 0});
  const std::uint16_t out = bb.add_arena_tensor(TLM_TYPE_INT8, {1, 10}, tinylearn::softmax_output_quantization());
  bb.add_op(TLM_OP_SOFTMAX, {in}, {out}, &sp, sizeof sp);
  Bytes b = bb.finish(in, out);
  std::vector<std::uint32_t> aligned((b.size() + 3) / 4);
  std::memcpy(aligned.data(), b.data(), b.size());
  tlm_model m;
  CHECK(tlm_model_init(&m, aligned.data(), b.size()) == TLM_OK);
  CHECK(tlm_model_init_reduced(&m, aligned.data(), b.size()) == TLM_ERR_UNKNOWN_OP);

  const ConvModel conv = make_conv(false, 5), dw = make_conv(true, 5);
  for (const ConvModel* c : {&conv, &dw}) {
    std::vector<std::uint32_t> a((c->blob.size() + 3) / 4);
    std::memcpy(a.data(), c->blob.data(), c->blob.size());
    CHECK(tlm_model_init(&m, a.data(), c->blob.size()) == TLM_OK);
    const tlm_status s = tlm_model_init_reduced(&m, a.data(), c->blob.size());
    CHECK(s == (c == &conv ? TLM_ERR_UNKNOWN_OP : TLM_OK));  // depthwise stays in
    if (s == TLM_OK) {
      std::vector<std::uint32_t> arena((tlm_arena_bytes_reduced(&m) + 3) / 4);
      CHECK(tlm_invoke_reduced(&m, arena.data(), arena.size() * 4) == TLM_OK);
    }
  }
  CHECK(std::string(tlm_status_str_reduced(TLM_ERR_UNKNOWN_OP)) == tlm_status_str(TLM_ERR_UNKNOWN_OP));
}

// ---- Window operators with the output trailing the input ---------------------------------------

TEST_CASE("CONV_2D and DEPTHWISE_CONV_2D: an output trailing its input by the lead runs exactly") {
  for (bool depthwise : {false, true}) {
    CAPTURE(depthwise);
    const ConvModel ref = make_conv(depthwise, 41);
    const int n = ref.dims.batches, h = ref.dims.input_h, w = ref.dims.input_w, ic = ref.dims.input_c;
    const int oh = ref.dims.output_h, ow = ref.dims.output_w, oc = ref.dims.output_c;
    // lead = max over output pixels q of (q + 1) * oc - (first input byte of q's window).
    std::int64_t lead = 0, q = 0;
    for (int b = 0; b < n; ++b)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x, ++q) {
          const int iy = std::min(std::max(y * ref.conv.stride_h - ref.conv.pad_top, 0), h - 1);
          const int ix = std::min(std::max(x * ref.conv.stride_w - ref.conv.pad_left, 0), w - 1);
          lead = std::max(lead, (q + 1) * oc - std::int64_t((b * h + iy) * w + ix) * ic);
        }
    const std::int32_t aligned = std::int32_t((lead + 3) / 4 * 4);
    for (std::int32_t shift : {aligned, aligned - 4}) {
      CAPTURE(shift);
      tinylearn::BlobBuilder bb;
      const Dims fdims = depthwise ? Dims{1, 3, 3, oc} : Dims{oc, 3, 3, ic};
      const auto in = bb.add_arena_tensor(TLM_TYPE_INT8, {n, h, w, ic}, kIn);
      const auto f = bb.add_const_tensor(TLM_TYPE_INT8, fdims, ref.filter_data.data(), {0.01f, 0});
      const auto bias = bb.add_const_tensor(TLM_TYPE_INT32, {oc}, ref.bias_data.data(), {0.0005f, 0});
      const auto mult = bb.add_const_tensor(TLM_TYPE_INT32, {oc}, ref.mult_data.data(), {0.0f, 0});
      const auto shf = bb.add_const_tensor(TLM_TYPE_INT32, {oc}, ref.shift_data.data(), {0.0f, 0});
      const auto out = bb.add_arena_tensor(TLM_TYPE_INT8, {n, oh, ow, oc}, kOut);
      // A second op reading nothing of the first keeps the input alive only until the conv.
      bb.share_arena(in, out, -shift);
      if (depthwise)
        bb.add_op(TLM_OP_DEPTHWISE_CONV_2D, {in, f, bias, mult, shf}, {out}, &ref.dw, sizeof ref.dw);
      else
        bb.add_op(TLM_OP_CONV_2D, {in, f, bias, mult, shf}, {out}, &ref.conv, sizeof ref.conv);
      const Bytes blob = bb.finish(in, out);
      if (shift < lead) {  // not enough: the core must refuse it
        CHECK(init_status(blob) == TLM_ERR_BAD_OP);
        continue;
      }
      Loaded l(blob);
      REQUIRE(l.status == TLM_OK);
      tlref::Rng rng(42);
      const std::size_t out_n = std::size_t(n) * oh * ow * oc;
      for (int trial = 0; trial < 3; ++trial) {
        const I8 x = rand_i8(rng, std::size_t(n) * h * w * ic);
        l.set(in, x);
        REQUIRE(l.invoke() == TLM_OK);
        I8 want(out_n);
        if (depthwise)
          tlm_depthwise_conv2d_s8(&ref.dw, &ref.dims, ref.mult_data.data(), ref.shift_data.data(), x.data(), ref.filter_data.data(), ref.bias_data.data(), want.data());
        else
          tlm_conv2d_s8(&ref.conv, &ref.dims, ref.mult_data.data(), ref.shift_data.data(), x.data(), ref.filter_data.data(), ref.bias_data.data(), want.data());
        CHECK(l.get(out, out_n) == want);
      }
    }
  }
}
