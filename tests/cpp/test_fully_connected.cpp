// The int8 fully connected kernel against an int64 reference written from the TFLite formula.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "fully_connected_s8.h"
#include "requantize.h"
#include "tinylearn/convert/convert.h"
#include "tl_reference.h"

namespace {

tlm_fully_connected_params to_params(const tlref::FcParams& r) {
  tlm_fully_connected_params p;
  p.input_offset = r.input_offset;
  p.output_offset = r.output_offset;
  p.output_multiplier = r.multiplier;
  p.output_shift = r.shift;
  p.activation_min = r.act_min;
  p.activation_max = r.act_max;
  return p;
}

std::int32_t bias_limit(std::int32_t in_features) {
  return std::int32_t(std::int64_t(INT32_MAX) - std::int64_t(in_features) * 255 * 128);
}

}  // namespace

TEST_CASE("tlm_fully_connected_s8 matches the int64 TFLite reference over random shapes and params") {
  tlref::Rng rng(123);
  int saturated = 0, inner = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const int batches = int(rng.range(1, 4));
    const int in = trial % 50 == 0 ? int(rng.range(1000, 4000)) : int(rng.range(1, 64));
    const int out = int(rng.range(1, 24));
    tlref::FcParams r;
    r.input_offset = int(rng.range(-127, 128));
    r.output_offset = int(rng.range(-128, 127));
    r.multiplier = std::int32_t(rng.range(std::int64_t(1) << 30, INT32_MAX));
    // Mostly realistic scales (the output spans int8), sometimes any legal shift.
    r.shift = trial % 5 == 0 ? int(rng.range(-31, 30)) : int(rng.range(-16, -6));
    r.act_min = int(rng.range(-128, 127));
    r.act_max = int(rng.range(r.act_min, 127));
    if (trial % 3 == 0) r.act_min = -128, r.act_max = 127;
    std::vector<std::int8_t> x(std::size_t(batches) * in), w(std::size_t(out) * in);
    for (auto& v : x) v = std::int8_t(rng.range(-128, 127));
    for (auto& v : w) v = std::int8_t(rng.range(-128, 127));
    std::vector<std::int32_t> bias(out);
    const std::int32_t lim = bias_limit(in);
    for (auto& b : bias) b = trial % 7 == 0 ? std::int32_t(rng.range(-lim, lim))
                                           : std::int32_t(rng.range(-20000, 20000));
    const bool use_bias = trial % 4 != 1;

    const tlm_fully_connected_params p = to_params(r);
    const tlm_fc_dims dims{batches, in, out};
    REQUIRE(tlm_fully_connected_s8_check(&p, &dims, use_bias ? bias.data() : nullptr) == TLM_OK);
    std::vector<std::int8_t> got(std::size_t(batches) * out, 0x55);
    tlm_fully_connected_s8(&p, &dims, x.data(), w.data(), use_bias ? bias.data() : nullptr, got.data());
    std::vector<std::int64_t> accs;
    const std::vector<std::int8_t> want = tlref::fully_connected(
        r, batches, in, out, x.data(), w.data(), use_bias ? bias.data() : nullptr, &accs);
    for (std::int64_t a : accs) REQUIRE((a >= INT32_MIN && a <= INT32_MAX));
    CAPTURE(trial);
    REQUIRE(got == want);
    for (std::int8_t v : got) (v == r.act_min || v == r.act_max ? saturated : inner)++;
  }
  // The random parameters must exercise the requantization itself, not only the clamps.
  CHECK(inner > 1000);
  CHECK(saturated > 100);
}

TEST_CASE("tlm_fully_connected_s8: input and output buffers are exactly the documented sizes") {
  // Heap buffers of exactly [batches*in], [out*in], [out], [batches*out]: ASan flags any overrun.
  tlref::Rng rng(5);
  const int batches = 3, in = 17, out = 5;
  auto* x = new std::int8_t[batches * in];
  auto* w = new std::int8_t[out * in];
  auto* b = new std::int32_t[out];
  auto* y = new std::int8_t[batches * out];
  for (int i = 0; i < batches * in; ++i) x[i] = std::int8_t(rng.range(-128, 127));
  for (int i = 0; i < out * in; ++i) w[i] = std::int8_t(rng.range(-128, 127));
  for (int i = 0; i < out; ++i) b[i] = std::int32_t(rng.range(-5000, 5000));
  const tlref::FcParams r{-3, 7, 1518500250, -9, -128, 127};
  const tlm_fully_connected_params p = to_params(r);
  const tlm_fc_dims dims{batches, in, out};
  REQUIRE(tlm_fully_connected_s8_check(&p, &dims, b) == TLM_OK);
  tlm_fully_connected_s8(&p, &dims, x, w, b, y);
  const std::vector<std::int8_t> want = tlref::fully_connected(r, batches, in, out, x, w, b);
  CHECK(std::vector<std::int8_t>(y, y + batches * out) == want);
  delete[] x;
  delete[] w;
  delete[] b;
  delete[] y;
}

TEST_CASE("tlm_fully_connected_s8_check rejects shapes, biases and params outside the documented bounds") {
  const tlm_fully_connected_params good{-3, 7, 1 << 30, -8, -128, 127};
  tlm_fc_dims dims{2, 10, 3};
  std::vector<std::int32_t> bias(3, 0);
  REQUIRE(tlm_fully_connected_s8_check(&good, &dims, bias.data()) == TLM_OK);
  REQUIRE(tlm_fully_connected_s8_check(&good, &dims, nullptr) == TLM_OK);

  SUBCASE("shapes") {
    for (const tlm_fc_dims d : {tlm_fc_dims{0, 10, 3}, tlm_fc_dims{2, 0, 3}, tlm_fc_dims{2, 10, 0},
                                tlm_fc_dims{-1, 10, 3}, tlm_fc_dims{2, -5, 3}, tlm_fc_dims{2, 10, INT32_MIN}})
      CHECK(tlm_fully_connected_s8_check(&good, &d, nullptr) == TLM_ERR_SHAPE);
    const tlm_fc_dims deep{1, TLM_FC_MAX_IN_FEATURES + 1, 1}, deepest{1, TLM_FC_MAX_IN_FEATURES, 1},
        huge{1, INT32_MAX, 1};
    CHECK(tlm_fully_connected_s8_check(&good, &deep, nullptr) == TLM_ERR_ACCUMULATOR_RANGE);
    CHECK(tlm_fully_connected_s8_check(&good, &huge, nullptr) == TLM_ERR_ACCUMULATOR_RANGE);
    CHECK(tlm_fully_connected_s8_check(&good, &deepest, nullptr) == TLM_OK);
  }
  SUBCASE("bias bound |bias| <= INT32_MAX - in_features * 255 * 128") {
    for (std::int32_t in : {1, 10, 1000, TLM_FC_MAX_IN_FEATURES}) {
      const tlm_fc_dims d{1, in, 3};
      const std::int32_t lim = bias_limit(in);
      CAPTURE(in);
      for (std::int32_t ok : {lim, -lim, 0}) {
        std::vector<std::int32_t> b{0, ok, 0};
        CHECK(tlm_fully_connected_s8_check(&good, &d, b.data()) == TLM_OK);
      }
      for (std::int32_t bad : {lim + 1, -lim - 1, INT32_MAX, INT32_MIN}) {
        std::vector<std::int32_t> b{0, 0, bad};
        CHECK(tlm_fully_connected_s8_check(&good, &d, b.data()) == TLM_ERR_ACCUMULATOR_RANGE);
      }
    }
  }
  SUBCASE("params") {
    auto with = [&](auto change) {
      tlm_fully_connected_params p = good;
      change(p);
      return tlm_fully_connected_s8_check(&p, &dims, bias.data());
    };
    using P = tlm_fully_connected_params;
    CHECK(with([](P& p) { p.input_offset = -128; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.input_offset = 129; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.input_offset = INT32_MIN; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.input_offset = -127; }) == TLM_OK);
    CHECK(with([](P& p) { p.input_offset = 128; }) == TLM_OK);
    CHECK(with([](P& p) { p.output_offset = -129; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_offset = 128; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_offset = -128; }) == TLM_OK);
    CHECK(with([](P& p) { p.output_offset = 127; }) == TLM_OK);
    CHECK(with([](P& p) { p.output_multiplier = -1; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_multiplier = INT32_MIN; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_multiplier = 0; }) == TLM_OK);  // a zero scale is legal
    CHECK(with([](P& p) { p.output_shift = -32; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_shift = 31; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_shift = -31; }) == TLM_OK);
    CHECK(with([](P& p) { p.output_shift = 30; }) == TLM_OK);
    CHECK(with([](P& p) { p.activation_min = -129; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.activation_max = 128; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.activation_min = 5, p.activation_max = 4; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.activation_min = 4, p.activation_max = 4; }) == TLM_OK);
  }
}

TEST_CASE("Extreme legal FC: in_features = 32768, |x + offset| = 255, weights -128, bias at the bound") {
  // The int64 reference shows the accumulator reaches exactly +/-INT32_MAX and never leaves int32;
  // under UBSan the kernel's int32 arithmetic proves it does not overflow either.
  const std::int32_t in = TLM_FC_MAX_IN_FEATURES;
  const std::int32_t lim = bias_limit(in);
  REQUIRE(std::int64_t(lim) + std::int64_t(in) * 255 * 128 == INT32_MAX);
  struct Case { std::int8_t x; std::int32_t input_offset; std::int32_t bias; std::int64_t acc; };
  const Case cases[] = {
      {-128, -127, lim, std::int64_t(INT32_MAX)},    // (-255) * (-128) per product, bias +lim
      {127, 128, -lim, -std::int64_t(INT32_MAX)},    // 255 * (-128) per product, bias -lim
  };
  for (const Case& c : cases) {
    const int batches = 2, out = 2;
    std::vector<std::int8_t> x(std::size_t(batches) * in, c.x), w(std::size_t(out) * in, -128);
    std::vector<std::int32_t> bias(out, c.bias);
    // real multiplier 2^-24: INT32_MAX * 2^-24 ~ 128 -> clamps at +-127 only after the offset.
    const tlref::FcParams r{c.input_offset, -5, 1 << 30, -23, -128, 127};
    const tlm_fully_connected_params p = to_params(r);
    const tlm_fc_dims dims{batches, in, out};
    REQUIRE(tlm_fully_connected_s8_check(&p, &dims, bias.data()) == TLM_OK);
    std::vector<std::int64_t> accs;
    const std::vector<std::int8_t> want =
        tlref::fully_connected(r, batches, in, out, x.data(), w.data(), bias.data(), &accs);
    for (std::int64_t a : accs) CHECK(a == c.acc);
    std::vector<std::int8_t> got(std::size_t(batches) * out);
    tlm_fully_connected_s8(&p, &dims, x.data(), w.data(), bias.data(), got.data());
    CHECK(got == want);
    // round(+-(2^31 - 1) * 2^-24) = +-128, then -5: 123 or -133 -> clamped to -128.
    CHECK(int(got[0]) == (c.acc > 0 ? 123 : -128));
    // One more unit of bias would make the accumulator leave int32: the check refuses it.
    std::vector<std::int32_t> over(out, c.bias > 0 ? c.bias + 1 : c.bias - 1);
    CHECK(tlm_fully_connected_s8_check(&p, &dims, over.data()) == TLM_ERR_ACCUMULATOR_RANGE);
  }
}

// Blobs written before the reference requantization (24-byte fixed-point params) still load and
// run, with the fixed-point kernel; the reference variant (36 bytes) runs round(double(acc) * s).
TEST_CASE("FULLY_CONNECTED blobs: the fixed-point variant still runs; both variants through tlm_invoke") {
  tlref::Rng rng(77);
  const int in_n = 7, out_n = 5;
  std::vector<std::int8_t> w(static_cast<std::size_t>(in_n * out_n)), x(static_cast<std::size_t>(in_n));
  for (auto& v : w) v = std::int8_t(rng.range(-127, 127));
  for (auto& v : x) v = std::int8_t(rng.range(-128, 127));
  std::vector<std::int32_t> bias(static_cast<std::size_t>(out_n));
  for (auto& v : bias) v = std::int32_t(rng.range(-2000, 2000));
  for (bool reference : {false, true}) {
    CAPTURE(reference);
    tinylearn::BlobBuilder bb;
    const auto in = bb.add_arena_tensor(TLM_TYPE_INT8, {1, in_n}, {0.05f, 3});
    const auto wt = bb.add_const_tensor(TLM_TYPE_INT8, {out_n, in_n}, w.data(), {0.01f, 0});
    const auto bt = bb.add_const_tensor(TLM_TYPE_INT32, {out_n}, bias.data(), {0.0005f, 0});
    const auto out = bb.add_arena_tensor(TLM_TYPE_INT8, {1, out_n}, {0.1f, -4});
    tlm_fully_connected_ref_params p{};
    p.base = {-3, -4, 0, 0, -128, 127};
    const double scale = 0.05 * 0.01 / 0.1;
    int e2;
    const double f = std::frexp(scale, &e2);
    const std::uint64_t m = std::uint64_t(std::ldexp(f, 53));
    p.scale_mantissa_lo = std::uint32_t(m), p.scale_mantissa_hi = std::uint32_t(m >> 32), p.scale_exponent = 53 - e2;
    if (reference) {
      bb.add_op(TLM_OP_FULLY_CONNECTED, {in, wt, bt}, {out}, &p, sizeof p);
    } else {
      const tinylearn::QuantizedMultiplier qm = tinylearn::quantize_multiplier(scale);
      p.base.output_multiplier = qm.multiplier;
      p.base.output_shift = qm.shift;
      bb.add_op(TLM_OP_FULLY_CONNECTED, {in, wt, bt}, {out}, &p.base, sizeof p.base);
    }
    const std::vector<std::uint8_t> blob = bb.finish(in, out);
    tinylearn::Int8Model model(blob.data(), blob.size());
    std::vector<std::int8_t> y(static_cast<std::size_t>(out_n));
    model.invoke(x.data(), y.data(), 1);
    for (int o = 0; o < out_n; ++o) {
      std::int64_t acc = bias[std::size_t(o)];
      for (int i = 0; i < in_n; ++i) acc += std::int64_t(w[std::size_t(o * in_n + i)]) * (x[std::size_t(i)] - 3);  // input_offset = -zero point
      const std::int64_t want =
          reference ? std::int64_t(std::round(double(acc) * scale))
                    : std::int64_t(tlm_detail::multiply_by_quantized_multiplier(std::int32_t(acc), p.base.output_multiplier,
                                                                                p.base.output_shift));
      CHECK(int(y[std::size_t(o)]) == int(std::min<std::int64_t>(127, std::max<std::int64_t>(-128, want - 4))));
    }
  }
}
