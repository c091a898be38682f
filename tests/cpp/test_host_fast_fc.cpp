// The host fast path of fully connected with TFLite's reference requantization
// (tlm_fully_connected_ref_s8_fast: int16 input row + AVX2 madd over four weight rows, the
// requantization in native doubles) against the plain kernel, byte for byte, over random shapes,
// offsets, clamps, biases and scales (per tensor and per channel, from tiny subnormal ones to
// saturating ones) with fixed seeds, computed in random column ranges as the host interpreter
// splits an operator over threads. The plain kernel itself is checked against TFLite's formula in
// test_fully_connected.cpp and requantize_fp64 in test_requantize.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <random>
#include <vector>

#include "fully_connected_s8.h"
#include "host_simd.h"
#include "requantize_fp64.h"

namespace {

struct Scale {
  std::uint32_t lo = 0, hi = 0;
  std::int32_t e = 0;
};

// mantissa * 2^-exponent from a double, as the converter splits it (cpp/convert/lower.cpp).
Scale split(double eff) {
  int exp2 = 0;
  const double f = std::frexp(eff, &exp2);
  const std::uint64_t m = std::uint64_t(std::ldexp(f, 53));
  Scale s;
  s.lo = std::uint32_t(m & 0xFFFFFFFFu);
  s.hi = std::uint32_t(m >> 32);
  s.e = eff == 0.0 ? 0 : 53 - exp2;
  return s;
}

// A random scale of the kind `kind` picks: realistic for the depth, tiny (subnormal doubles and
// the normal ones just above), huge (saturating), zero, or any legal (mantissa, exponent).
Scale random_scale(std::mt19937& rng, int kind, int32_t in_features) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto u = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  switch (kind) {
    case 0: {  // outputs spread over int8: |acc| is about sqrt(in) * 1e4
      const double typical = std::sqrt(double(in_features)) * 1e4;
      return split(100.0 / typical * std::exp2(unit(rng) * 8.0 - 4.0));
    }
    case 1:  // exponent 1060..1100: normal near the boundary (e <= 1074) and subnormal
      return split(std::ldexp(0.5 + 0.5 * unit(rng), 53 - u(1060, 1100)));
    case 2:  // huge: most outputs saturate
      return split(std::ldexp(0.5 + 0.5 * unit(rng), u(0, 53)));
    case 3:
      return Scale{};
    default: {  // any normalized mantissa, any exponent in [0, 1100]
      const std::uint64_t m = (std::uint64_t{1} << 52) |
                              (std::uint64_t(rng()) << 20 ^ std::uint64_t(rng())) %
                                  (std::uint64_t{1} << 52);
      Scale s;
      s.lo = std::uint32_t(m & 0xFFFFFFFFu);
      s.hi = std::uint32_t(m >> 32);
      s.e = u(0, 3) == 0 ? u(0, 1100) : u(40, 80);
      return s;
    }
  }
}

struct Case {
  tlm_fully_connected_ref_params p{};
  tlm_fc_dims d{};
  std::vector<std::int8_t> input, weights;
  std::vector<std::int32_t> bias, scales;
  bool with_bias = true, per_channel = false;
};

bool random_case(std::mt19937& rng, int trial, Case* c) {
  auto u = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  tlm_fc_dims& d = c->d;
  d.batches = u(1, 4);
  static const int32_t kDeep[] = {640, 1024, 16, 32, 48, 2000};
  d.in_features = trial % 10 == 0 ? kDeep[u(0, 5)] : u(1, 300);
  if (trial == 7) d.in_features = TLM_FC_MAX_IN_FEATURES;  // the accumulator bound's edge
  d.out_features = u(0, 3) == 0 ? u(1, 9) : u(1, 200);
  if (trial == 7) d.out_features = u(1, 5);
  tlm_fully_connected_params& b = c->p.base;
  b.input_offset = u(-127, 128);
  b.output_offset = u(-128, 127);
  b.activation_min = u(-128, 0);
  b.activation_max = u(b.activation_min, 127);
  if (u(0, 3) == 0) b.activation_min = -128, b.activation_max = 127;
  // Inputs and weights: random, or at the extremes (largest products) now and then.
  const int extreme = u(0, 7);
  c->input.resize(size_t(d.batches) * d.in_features);
  c->weights.resize(size_t(d.out_features) * d.in_features);
  for (auto& v : c->input)
    v = static_cast<std::int8_t>(extreme == 0 ? (b.input_offset > 0 ? 127 : -128) : u(-128, 127));
  for (auto& v : c->weights) v = static_cast<std::int8_t>(extreme == 0 ? -128 : u(-128, 127));
  const int64_t limit = INT32_MAX - int64_t{d.in_features} * 32640;
  c->bias.resize(d.out_features);
  for (auto& v : c->bias) {
    const int r = u(0, 9);
    if (r == 0)
      v = static_cast<int32_t>(u(0, 1) ? limit : -limit);  // the check's bound itself
    else if (r == 1)
      v = static_cast<int32_t>(std::uniform_int_distribution<int64_t>(-limit, limit)(rng));
    else
      v = u(-100000, 100000);
  }
  c->with_bias = u(0, 4) != 0;
  // Scales: one kind for the case, now and then another kind per channel.
  const int kind = u(0, 9) < 5 ? 0 : u(1, 4);
  c->per_channel = u(0, 1);
  const Scale t = random_scale(rng, kind, d.in_features);
  c->p.scale_mantissa_lo = t.lo;
  c->p.scale_mantissa_hi = t.hi;
  c->p.scale_exponent = t.e;
  c->scales.resize(size_t(3) * d.out_features);
  for (int32_t o = 0; o < d.out_features; ++o) {
    const Scale s = random_scale(rng, u(0, 5) == 0 ? u(0, 4) : kind, d.in_features);
    c->scales[3 * o] = int32_t(s.lo);
    c->scales[3 * o + 1] = int32_t(s.hi);
    c->scales[3 * o + 2] = s.e;
  }
  return tlm_fully_connected_ref_s8_check(&c->p, &d, c->with_bias ? c->bias.data() : nullptr,
                                          c->per_channel ? c->scales.data() : nullptr) == TLM_OK;
}

// Runs the fast path over [0, out_features) in random pieces, checking after each piece that no
// column at or beyond its end was written; false if there is no fast path.
// The plain kernel's output for the case.
std::vector<std::int8_t> plain_output(const Case& c) {
  std::vector<std::int8_t> out(size_t(c.d.batches) * c.d.out_features);
  tlm_fully_connected_ref_s8(&c.p, &c.d, c.input.data(), c.weights.data(),
                             c.with_bias ? c.bias.data() : nullptr,
                             c.per_channel ? c.scales.data() : nullptr, out.data());
  return out;
}

bool run_fast_in_pieces(std::mt19937& rng, const Case& c, std::vector<std::int8_t>* got) {
  const tlm_fc_dims& d = c.d;
  const int32_t* bias = c.with_bias ? c.bias.data() : nullptr;
  const int32_t* scales = c.per_channel ? c.scales.data() : nullptr;
  // Misaligned on purpose (the kernel aligns it) and dirty (the kernel zero-pads it).
  std::vector<std::uint8_t> scratch(tlm_fully_connected_ref_s8_fast_scratch_bytes(&d) + 1, 0xAB);
  for (int32_t o0 = 0; o0 < d.out_features;) {
    const int max_piece = std::uniform_int_distribution<int>(0, 2)(rng) == 0 ? d.out_features : 9;
    const int32_t o1 =
        std::min(d.out_features, o0 + std::uniform_int_distribution<int>(1, max_piece)(rng));
    if (!tlm_fully_connected_ref_s8_fast(&c.p, &d, c.input.data(), c.weights.data(), bias,
                                         scales, o0, o1, scratch.data() + 1, got->data()))
      return false;
    for (int32_t b = 0; b < d.batches; ++b)
      for (int32_t o = o1; o < d.out_features; ++o)
        REQUIRE((*got)[size_t(b) * d.out_features + o] == 0x55);
    o0 = o1;
  }
  return true;
}

}  // namespace

TEST_CASE("fully connected (reference requantization) fast path equals the plain kernel") {
  std::mt19937 rng(20261207);
  int checked = 0, rejected = 0, subnormal = 0;
  size_t outputs = 0, inside = 0;  // inside: strictly between the activation bounds
  const int trials = 1500;
  for (int trial = 0; trial < trials; ++trial) {
    Case c;
    if (!random_case(rng, trial, &c)) {
      ++rejected;
      continue;
    }
    const tlm_fc_dims& d = c.d;
    const std::vector<std::int8_t> expected = plain_output(c);
    std::vector<std::int8_t> got(expected.size(), 0x55);
    if (!run_fast_in_pieces(rng, c, &got)) {
      CHECK_FALSE(tlm_host_avx2());
      break;
    }
    REQUIRE(tlm_host_avx2());
    ++checked;
    if (c.p.scale_exponent > 1074) ++subnormal;
    outputs += expected.size();
    for (std::int8_t v : expected)
      inside += v > c.p.base.activation_min && v < c.p.base.activation_max;
    for (size_t i = 0; i < expected.size(); ++i) {
      if (got[i] != expected[i]) {
        INFO("trial " << trial << " element " << i << " batches " << d.batches << " in "
                      << d.in_features << " out " << d.out_features << " per_channel "
                      << c.per_channel);
        REQUIRE(int(got[i]) == int(expected[i]));
      }
    }
  }
  if (tlm_host_avx2()) {
    CHECK(rejected < trials / 20);
    CHECK(checked >= trials * 19 / 20);
    CHECK(subnormal > 0);
    CHECK(inside > outputs / 4);  // most cases test rounding, not just the clamp
    MESSAGE(checked << " cases, " << outputs << " outputs, " << inside << " inside the clamp, "
                    << subnormal << " with a subnormal per-tensor scale");
  }
}

TEST_CASE("fully connected fast path writes only its columns, and nothing for an empty range") {
  std::mt19937 rng(77);
  for (int trial = 0; trial < 200; ++trial) {
    Case c;
    if (!random_case(rng, trial + 1, &c)) continue;
    const tlm_fc_dims& d = c.d;
    const std::vector<std::int8_t> expected = plain_output(c);
    std::vector<std::int8_t> got(expected.size(), 0x55);
    const int32_t o0 = std::uniform_int_distribution<int>(0, d.out_features)(rng);
    const int32_t o1 = std::uniform_int_distribution<int>(o0, d.out_features)(rng);
    std::vector<std::uint8_t> scratch(tlm_fully_connected_ref_s8_fast_scratch_bytes(&d));
    const bool ran = tlm_fully_connected_ref_s8_fast(
        &c.p, &d, c.input.data(), c.weights.data(), c.with_bias ? c.bias.data() : nullptr,
        c.per_channel ? c.scales.data() : nullptr, o0, o1, scratch.data(), got.data());
    CHECK(ran == tlm_host_avx2());
    for (int32_t b = 0; b < d.batches; ++b)
      for (int32_t o = 0; o < d.out_features; ++o) {
        const size_t i = size_t(b) * d.out_features + o;
        REQUIRE(int(got[i]) == (ran && o >= o0 && o < o1 ? int(expected[i]) : 0x55));
      }
  }
}

TEST_CASE("fully connected fast path requantizes as round(double(acc) * scale), ties included") {
  // in_features 1 with input 0 and offset 0: acc is the bias, exactly. Per channel, each channel
  // gets one (acc, scale) pair; the same pairs also run per tensor.
  std::mt19937 rng(4242);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto u = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int64_t limit = INT32_MAX - 32640;
  std::vector<std::int32_t> accs;
  std::vector<double> effs;
  auto add = [&](int64_t acc, double eff) {
    if (acc < -limit || acc > limit || !(eff >= 0.0) || eff >= 9007199254740992.0) return false;
    const Scale s = split(eff);
    if (s.e < 0 || s.e > 1100) return false;
    accs.push_back(int32_t(acc));
    effs.push_back(eff);
    return true;
  };
  add(1, 0.49999999999999994);
  add(-1, 0.49999999999999994);
  add(1, 0.5);
  add(-1, 0.5);
  add(3, 0.5);
  add(-5, 0.5);
  add(1, 1.4999999999999998);
  add(-1, 1.4999999999999998);
  add(limit, 0.49999999999999994 / double(limit));
  int ties = 0;
  for (int i = 0; i < 20000; ++i) {
    // An acc of any size and a target n + 0.5 in or near the int8 range; the scale that hits it,
    // and its neighbours a few ulps away (products just below, at and above the tie).
    int64_t acc = u(0, 2) == 0 ? u(-300, 300) : int64_t(std::ldexp(unit(rng) - 0.5, u(2, 32)));
    if (acc == 0) acc = 1;
    const double target = u(-300, 300) + 0.5;
    double eff = target / double(acc);
    if (eff < 0) eff = -eff, acc = -acc;
    for (int step = u(-3, 0); step <= 3; step += u(1, 2)) {
      double e2 = eff;
      for (int k = 0; k < std::abs(step); ++k) e2 = std::nextafter(e2, step < 0 ? 0.0 : 1e300);
      if (!add(acc, e2)) continue;
      const double x = double(accs.back()) * e2;
      if (x - std::trunc(x) == 0.5 || x - std::trunc(x) == -0.5) ++ties;
    }
    // Exact halves with power-of-two scales: odd acc * 2^-k.
    if (i % 4 == 0) add(int64_t{2} * u(-100000, 100000) + 1, std::ldexp(1.0, -u(1, 12)));
    // Any scale, including huge and tiny ones.
    if (i % 8 == 0) add(u(-1000000, 1000000), std::ldexp(unit(rng), u(-1080, 40)));
  }
  CHECK(ties > 1000);
  MESSAGE(accs.size() << " (acc, scale) pairs, " << ties << " exact ties");
  const int32_t n = int32_t(accs.size());
  tlm_fc_dims d{1, 1, n};
  tlm_fully_connected_ref_params p{};
  p.base.input_offset = 0;
  p.base.output_offset = 0;
  p.base.activation_min = -128;
  p.base.activation_max = 127;
  std::vector<std::int32_t> scales(size_t(3) * n);
  for (int32_t o = 0; o < n; ++o) {
    const Scale s = split(effs[o]);
    scales[3 * o] = int32_t(s.lo), scales[3 * o + 1] = int32_t(s.hi), scales[3 * o + 2] = s.e;
  }
  const std::int8_t x = 0;
  const std::vector<std::int8_t> w(n, 77);
  std::vector<std::uint8_t> scratch(tlm_fully_connected_ref_s8_fast_scratch_bytes(&d));
  REQUIRE(tlm_fully_connected_ref_s8_check(&p, &d, accs.data(), scales.data()) == TLM_OK);
  for (int offset : {0, -128, 127, 5}) {
    p.base.output_offset = offset;
    std::vector<std::int8_t> expected(n), got(n, 0x55);
    tlm_fully_connected_ref_s8(&p, &d, &x, w.data(), accs.data(), scales.data(), expected.data());
    if (offset == 0) {  // the plain kernel is round(double(acc) * scale), clamped
      for (int32_t o = 0; o < n; ++o) {
        const double r = std::round(double(accs[o]) * effs[o]);
        REQUIRE(int(expected[o]) == int(std::max(-128.0, std::min(127.0, r))));
      }
    }
    const bool ran = tlm_fully_connected_ref_s8_fast(&p, &d, &x, w.data(), accs.data(),
                                                     scales.data(), 0, n, scratch.data(),
                                                     got.data());
    if (!tlm_host_avx2()) {
      CHECK_FALSE(ran);
      return;
    }
    REQUIRE(ran);
    for (int32_t o = 0; o < n; ++o) {
      if (got[o] != expected[o]) {
        INFO("acc " << accs[o] << " scale " << std::setprecision(17) << effs[o] << " offset "
                    << offset);
        REQUIRE(int(got[o]) == int(expected[o]));
      }
    }
  }
  // Per tensor: a handful of the pairs, each as the params' one scale.
  tlm_fc_dims d1{1, 1, 1};
  for (int32_t o = 0; o < n; o += 97) {
    const Scale s = split(effs[o]);
    p.base.output_offset = 0;
    p.scale_mantissa_lo = s.lo, p.scale_mantissa_hi = s.hi, p.scale_exponent = s.e;
    std::int8_t expected = 0, got = 0x55;
    tlm_fully_connected_ref_s8(&p, &d1, &x, w.data(), &accs[o], nullptr, &expected);
    REQUIRE(tlm_fully_connected_ref_s8_fast(&p, &d1, &x, w.data(), &accs[o], nullptr, 0, 1,
                                            scratch.data(), &got));
    REQUIRE(int(got) == int(expected));
  }
}
