// Fixed-point requantization and the converter's quantization helpers against exact references.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "requantize.h"
#include "requantize_fp64.h"
#include "tinylearn/convert/convert.h"
#include "tl_reference.h"

namespace {

std::vector<std::int32_t> edge_values() {
  std::vector<std::int32_t> v{0, 1, -1, 2, -2, 3, -3, INT32_MIN, INT32_MIN + 1, INT32_MAX,
                              INT32_MAX - 1, 1 << 30, -(1 << 30), (1 << 30) + 1, -(1 << 30) - 1,
                              (1 << 30) - 1, 12345, -12345, 1 << 15, -(1 << 15), 3 << 14, -(3 << 14)};
  for (int k = 0; k < 31; ++k) {  // powers of two and halves at every position
    v.push_back(std::int32_t(1) << k);
    v.push_back(-(std::int32_t(1) << k));
    v.push_back((std::int32_t(1) << k) + 1);
    v.push_back(-(std::int32_t(1) << k) - 1);
    v.push_back(3 * (std::int32_t(1) << k) / 2);
    v.push_back(-3 * (std::int32_t(1) << k) / 2);
  }
  return v;
}

}  // namespace

TEST_CASE("Reference self-check: exact rounding definitions on hand-computed values") {
  // These pin the reference itself to the TFLite definitions (worked out by hand):
  // SRDHM(a, b) = round(a*b / 2^31), exact halves toward +infinity (gemmlowp / NEON VQRDMULH).
  CHECK(tlref::srdhm(1 << 30, 1) == 1);        // 0.5 -> 1
  CHECK(tlref::srdhm(-(1 << 30), 1) == 0);     // -0.5 -> 0 (not -1: this is not half-away)
  CHECK(tlref::srdhm(-3 * (1 << 29), 2) == -1);  // -1.5 -> -1
  CHECK(tlref::srdhm(INT32_MIN, INT32_MIN) == INT32_MAX);
  CHECK(tlref::srdhm(INT32_MIN, INT32_MAX) == -INT32_MAX);  // -(2^31 - 1) exactly
  // RoundingDivideByPOT: halves away from zero.
  CHECK(tlref::rounding_divide_by_pot(5, 1) == 3);
  CHECK(tlref::rounding_divide_by_pot(-5, 1) == -3);
  CHECK(tlref::rounding_divide_by_pot(-6, 2) == -2);  // -1.5 -> -2
  CHECK(tlref::rounding_divide_by_pot(-5, 2) == -1);  // -1.25 -> -1
  CHECK(tlref::rounding_divide_by_pot(INT32_MIN, 31) == -1);
  CHECK(tlref::rounding_divide_by_pot(INT32_MAX, 31) == 1);
  CHECK(tlref::rounding_divide_by_pot(-(1 << 30), 31) == -1);  // -0.5 -> -1
  CHECK(tlref::rounding_divide_by_pot((1 << 30) - 1, 31) == 0);
}

TEST_CASE("saturating_rounding_doubling_high_mul and rounding_divide_by_pot match the exact definitions") {
  const std::vector<std::int32_t> edges = edge_values();
  for (std::int32_t a : edges)
    for (std::int32_t b : edges) {
      CAPTURE(a);
      CAPTURE(b);
      REQUIRE(tlm_detail::saturating_rounding_doubling_high_mul(a, b) == tlref::srdhm(a, b));
    }
  for (std::int32_t x : edges)
    for (int e = 0; e <= 31; ++e) {
      CAPTURE(x);
      CAPTURE(e);
      REQUIRE(tlm_detail::rounding_divide_by_pot(x, e) == tlref::rounding_divide_by_pot(x, e));
    }
  tlref::Rng rng(2024);
  for (int i = 0; i < 200000; ++i) {
    const auto a = std::int32_t(std::uint32_t(rng.u64()));
    const auto b = std::int32_t(std::uint32_t(rng.u64()));
    const int e = int(rng.range(0, 31));
    REQUIRE(tlm_detail::saturating_rounding_doubling_high_mul(a, b) == tlref::srdhm(a, b));
    REQUIRE(tlm_detail::rounding_divide_by_pot(a, e) == tlref::rounding_divide_by_pot(a, e));
  }
}

TEST_CASE("multiply_by_quantized_multiplier matches the exact double-rounding definition") {
  tlref::Rng rng(77);
  const std::vector<std::int32_t> edges = edge_values();
  std::int64_t checked = 0;
  for (int shift = -31; shift <= 30; ++shift) {
    const std::int32_t multipliers[] = {1 << 30, (1 << 30) + 1, INT32_MAX, INT32_MAX - 1,
                                        3 << 29, std::int32_t(rng.range(1 << 30, INT32_MAX))};
    for (std::int32_t m : multipliers)
      for (std::int32_t x : edges) {
        CAPTURE(x);
        CAPTURE(m);
        CAPTURE(shift);
        REQUIRE(tlm_detail::multiply_by_quantized_multiplier(x, m, shift) ==
                tlref::multiply_by_quantized_multiplier(x, m, shift));
        ++checked;
      }
  }
  for (int i = 0; i < 300000; ++i) {
    // Mostly accumulator-sized x, sometimes any int32.
    const std::int32_t x = i % 4 == 0 ? std::int32_t(std::uint32_t(rng.u64()))
                                      : std::int32_t(rng.range(-(1 << 22), 1 << 22));
    const auto m = std::int32_t(rng.range(std::int64_t(1) << 30, INT32_MAX));
    const int shift = int(rng.range(-31, 30));
    CAPTURE(x);
    CAPTURE(m);
    CAPTURE(shift);
    REQUIRE(tlm_detail::multiply_by_quantized_multiplier(x, m, shift) ==
            tlref::multiply_by_quantized_multiplier(x, m, shift));
    ++checked;
  }
  CHECK(checked > 300000);

  // Exact ties of the final rounding: x * 2^-2 with multiplier 2^30 (= 0.5) and shift -1.
  // x = 2 -> 0.5 -> 1 and x = -2 -> -0.5 -> -1 (away from zero in RoundingDivideByPOT).
  CHECK(tlm_detail::multiply_by_quantized_multiplier(2, 1 << 30, -1) == 1);
  CHECK(tlm_detail::multiply_by_quantized_multiplier(-2, 1 << 30, -1) == -1);
  CHECK(tlm_detail::multiply_by_quantized_multiplier(6, 1 << 30, -1) == 2);    // 1.5 -> 2
  CHECK(tlm_detail::multiply_by_quantized_multiplier(-6, 1 << 30, -1) == -2);  // -1.5 -> -2
  // A tie in the high multiply: -1 * 0.5 = -0.5 -> 0 (TFLite's double rounding, not -1).
  CHECK(tlm_detail::multiply_by_quantized_multiplier(-1, 1 << 30, 0) == 0);
  CHECK(tlm_detail::multiply_by_quantized_multiplier(1, 1 << 30, 0) == 1);
}

TEST_CASE("multiply_by_quantized_multiplier(x, quantize_multiplier(r)) approximates x * r") {
  tlref::Rng rng(5);
  for (int i = 0; i < 100000; ++i) {
    const double r = std::ldexp(0.5 + 0.5 * rng.uniform(), int(rng.range(-20, 5)));
    const tinylearn::QuantizedMultiplier q = tinylearn::quantize_multiplier(r);
    const auto x = std::int32_t(rng.range(-(1 << 20), 1 << 20));
    const long double exact = (long double)x * (long double)r;
    if (std::fabs(double(exact)) > 2e9) continue;
    const std::int32_t got = tlm_detail::multiply_by_quantized_multiplier(x, q.multiplier, q.shift);
    // Two roundings of at most 1/2 each, plus the multiplier's relative error 2^-31 * |x r|.
    CAPTURE(x);
    CAPTURE(r);
    REQUIRE(std::fabs(double((long double)got - exact)) <= 1.0 + 1e-9 * std::fabs(double(exact)));
  }
}

TEST_CASE("quantize_multiplier: multiplier in 2^30..2^31-1, real reproduced within 2^-31 relative") {
  tlref::Rng rng(9);
  for (int i = 0; i < 100000; ++i) {
    const double real = std::ldexp(0.5 + 0.5 * rng.uniform(), int(rng.range(-30, 30)));
    const tinylearn::QuantizedMultiplier q = tinylearn::quantize_multiplier(real);
    CAPTURE(real);
    REQUIRE(q.multiplier >= (1 << 30));
    REQUIRE(q.shift >= -31);
    REQUIRE(q.shift <= 30);
    const long double back = std::ldexp((long double)q.multiplier, q.shift - 31);
    REQUIRE(std::fabs(double((back - real) / real)) <= std::ldexp(1.0, -31) * (1 + 1e-9));
  }
  // Powers of two are exact: 2^k = 2^30 * 2^(k + 1 - 31).
  for (int k = -32; k <= 29; ++k) {
    const tinylearn::QuantizedMultiplier q = tinylearn::quantize_multiplier(std::ldexp(1.0, k));
    CAPTURE(k);
    CHECK(q.multiplier == (1 << 30));
    CHECK(q.shift == k + 1);
  }
  // Values just below a power of two round up to 2^31: renormalized to 2^30 with shift + 1.
  for (int k = -20; k <= 29; ++k) {
    const double real = std::ldexp(1.0 - std::ldexp(1.0, -40), k);
    const tinylearn::QuantizedMultiplier q = tinylearn::quantize_multiplier(real);
    CAPTURE(k);
    CHECK(q.multiplier == (1 << 30));
    CHECK(q.shift == k + 1);  // = 2^30 * 2^(k + 1 - 31) = 2^k
  }
  // The largest multiplier that does not round up.
  {
    const double real = std::ldexp(double(INT32_MAX), -31 - 3);  // (2^31 - 1) * 2^(-3 - 31)
    const tinylearn::QuantizedMultiplier q = tinylearn::quantize_multiplier(real);
    CHECK(q.multiplier == INT32_MAX);
    CHECK(q.shift == -3);
  }
  // Zero, and values too small to survive any shift (< 2^-32), give {0, 0}.
  for (double tiny : {0.0, std::ldexp(1.0, -33), std::ldexp(1.5, -34), 1e-30, 5e-324}) {
    const tinylearn::QuantizedMultiplier q = tinylearn::quantize_multiplier(tiny);
    CAPTURE(tiny);
    CHECK(q.multiplier == 0);
    CHECK(q.shift == 0);
  }
  // 2^-32 itself is representable (2^30 * 2^(-31 - 31)); just below it rounds up to it.
  CHECK(tinylearn::quantize_multiplier(std::ldexp(1.0, -32)).multiplier == (1 << 30));
  CHECK(tinylearn::quantize_multiplier(std::ldexp(1.0, -32)).shift == -31);
  CHECK(tinylearn::quantize_multiplier(std::ldexp(1.0 - std::ldexp(1.0, -40), -32)).shift == -31);
  // Invalid and too large.
  CHECK_THROWS_AS(tinylearn::quantize_multiplier(-1e-3), std::invalid_argument);
  CHECK_THROWS_AS(tinylearn::quantize_multiplier(std::nan("")), std::invalid_argument);
  CHECK_THROWS_AS(tinylearn::quantize_multiplier(INFINITY), std::invalid_argument);
  CHECK_THROWS_AS(tinylearn::quantize_multiplier(std::ldexp(1.0, 30)), std::invalid_argument);
  CHECK_THROWS_AS(tinylearn::quantize_multiplier(std::ldexp(1.0 - std::ldexp(1.0, -40), 30)),
                  std::invalid_argument);
  CHECK(tinylearn::quantize_multiplier(std::ldexp(1.0, 29)).shift == 30);
}

TEST_CASE("choose_activation_params: range widened to hold 0, zero exactly representable") {
  tlref::Rng rng(13);
  for (int i = 0; i < 20000; ++i) {
    // Ranges straddling 0, all positive, all negative, and of very different magnitudes.
    const double mag = std::ldexp(1.0, int(rng.range(-12, 12)));
    float lo = float(rng.uniform(-1, 1) * mag), hi = float(rng.uniform(-1, 1) * mag);
    if (lo > hi) std::swap(lo, hi);
    const tinylearn::QuantParams p = tinylearn::choose_activation_params(lo, hi);
    const double wlo = std::min(double(lo), 0.0), whi = std::max(double(hi), 0.0);
    CAPTURE(lo);
    CAPTURE(hi);
    REQUIRE(p.scale > 0.0f);
    if (whi > wlo) CHECK(std::fabs(double(p.scale) - (whi - wlo) / 255.0) <= 1e-6 * (whi - wlo) / 255.0);
    REQUIRE(p.zero_point >= -128);
    REQUIRE(p.zero_point <= 127);
    // 0 quantizes to the zero point and dequantizes back to exactly 0.
    CHECK(tinylearn::quantize_value(0.0f, p) == p.zero_point);
    CHECK(double(p.scale) * double(tinylearn::quantize_value(0.0f, p) - p.zero_point) == 0.0);
    // The widened range's ends map to (near) the ends of int8.
    CHECK(int(tinylearn::quantize_value(float(wlo), p)) <= -127);
    CHECK(int(tinylearn::quantize_value(float(whi), p)) >= 126);
    if (lo >= 0.0f) CHECK(p.zero_point == -128);
    if (hi <= 0.0f && lo < 0.0f) CHECK(p.zero_point == 127);
    // Every real value inside the range is reproduced within half a step (+ float error).
    for (int k = 0; k < 4; ++k) {
      const double v = rng.uniform(wlo, whi);
      const int q = tinylearn::quantize_value(float(v), p);
      const double back = double(p.scale) * (q - p.zero_point);
      CHECK(std::fabs(back - v) <= 0.5 * double(p.scale) * (1 + 1e-5) + std::fabs(v) * 1e-6 +
                                       // the rounded zero point can push an end of the range
                                       // half a step past int8, where it is clamped
                                       0.5 * double(p.scale));
    }
  }
  // Degenerate range [0, 0] still gets a usable scale.
  const tinylearn::QuantParams z = tinylearn::choose_activation_params(0.0f, 0.0f);
  CHECK(z.scale > 0.0f);
  CHECK(tinylearn::quantize_value(0.0f, z) == z.zero_point);
  CHECK_THROWS_AS(tinylearn::choose_activation_params(1.0f, -1.0f), std::invalid_argument);
  CHECK_THROWS_AS(tinylearn::choose_activation_params(std::nanf(""), 1.0f), std::invalid_argument);
  CHECK_THROWS_AS(tinylearn::choose_activation_params(0.0f, INFINITY), std::invalid_argument);
}

TEST_CASE("quantize_value rounds half away from zero, adds the zero point, clamps to int8") {
  // scale 0.5 (and other powers of two) make x / scale exact, so the ties are real ties.
  auto ref = [](double v, int zp) {  // round half away from zero, from the definition
    const double r = v < 0 ? -std::floor(-v + 0.5) : std::floor(v + 0.5);
    return int(std::min(127.0, std::max(-128.0, r + zp)));
  };
  for (float scale : {0.5f, 0.25f, 2.0f, 1.0f / 64})
    for (int zp : {-128, -5, 0, 3, 127})
      for (int k = -300; k <= 300; ++k) {
        const float x = float(k) * 0.5f * scale;  // x / scale = k / 2: integers and exact halves
        CAPTURE(x);
        CAPTURE(zp);
        REQUIRE(int(tinylearn::quantize_value(x, {scale, zp})) == ref(double(k) * 0.5, zp));
      }
  CHECK(tinylearn::quantize_value(0.25f, {0.5f, 0}) == 1);
  CHECK(tinylearn::quantize_value(-0.25f, {0.5f, 0}) == -1);
  CHECK(tinylearn::quantize_value(0.75f, {0.5f, 0}) == 2);
  CHECK(tinylearn::quantize_value(-0.75f, {0.5f, 0}) == -2);
  CHECK(tinylearn::quantize_value(1e30f, {0.5f, 0}) == 127);
  CHECK(tinylearn::quantize_value(-1e30f, {0.5f, 0}) == -128);
  // Random non-tie values against round-half-away of the exact quotient.
  tlref::Rng rng(3);
  for (int i = 0; i < 20000; ++i) {
    const float scale = float(rng.uniform(1e-3, 1.0));
    const int zp = int(rng.range(-128, 127));
    const float x = float(rng.uniform(-200, 200)) * scale;
    const double v = double(x) / double(scale);
    if (std::fabs(v - std::floor(v) - 0.5) < 1e-3) continue;  // float division may break a near-tie
    REQUIRE(int(tinylearn::quantize_value(x, {scale, zp})) == ref(v, zp));
  }
}

// The integer emulation of TFLite's reference fully connected requantization,
// round(double(acc) * scale), against the double arithmetic itself (this host's IEEE-754).
TEST_CASE("requantize_fp64 equals round(double(acc) * scale) below 2^52") {
  auto split = [](double scale, std::uint64_t& m, std::int32_t& e) {
    int exp2;
    const double f = std::frexp(scale, &exp2);  // scale = f * 2^exp2, f in [0.5, 1)
    m = std::uint64_t(std::ldexp(f, 53));      // exact: 53 significant bits
    e = 53 - exp2;
  };
  auto reference = [](std::int32_t acc, double scale) -> std::int64_t {  // saturated at 2^52
    const double v = std::round(double(acc) * scale), limit = 4503599627370496.0;
    return std::int64_t(std::min(limit, std::max(-limit, v)));
  };
  tlref::Rng rng(11);
  std::vector<double> scales{1.0, 0.5, 0.25, 1.0 / 3.0, 0.006014905905824048, 1e-9, 3.7, 1e5};
  for (int i = 0; i < 200; ++i) scales.push_back(std::exp(rng.uniform(-25.0, 3.0)));
  std::vector<std::int32_t> accs = edge_values();
  for (int i = 0; i < 2000; ++i) accs.push_back(std::int32_t(rng.range(-2000000, 2000000)));
  for (double scale : scales) {
    std::uint64_t m;
    std::int32_t e;
    split(scale, m, e);
    REQUIRE(std::ldexp(double(m), -e) == scale);
    for (std::int32_t acc : accs) {
      CAPTURE(acc);
      CAPTURE(scale);
      REQUIRE(tlm_detail::requantize_fp64(acc, m, e) == reference(acc, scale));
    }
  }
  // Exact halves round away from zero; products that double rounds onto a half do too.
  std::uint64_t m;
  std::int32_t e;
  split(0.5, m, e);
  CHECK(tlm_detail::requantize_fp64(5, m, e) == 3);
  CHECK(tlm_detail::requantize_fp64(-5, m, e) == -3);
  // The case that separates it from the fixed-point path (double rounding gives 136).
  split(0.006014905905824048, m, e);
  CHECK(tlm_detail::requantize_fp64(22527, m, e) == 135);
}
