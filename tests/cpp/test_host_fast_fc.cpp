// The host fast path of fully connected with TFLite's reference requantization
// (tlm_fully_connected_ref_s8_fast: weights packed in blocks of 8 channels, int16 input rows,
// AVX2 madd tiles of 1 or 4 rows, the requantization in native doubles) against the plain
// kernel, byte for byte, over random shapes, offsets, clamps, biases and scales (per tensor and per
// channel, from tiny subnormal ones to saturating ones) with fixed seeds, on several samples in
// strided arenas (as tlm_invoke_host_samples runs it), computed in random block ranges as the host
// interpreter splits an operator over threads. The plain kernel itself is checked against TFLite's formula in
// test_fully_connected.cpp and requantize_fp64 in test_requantize.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <random>
#include <utility>
#include <vector>

#include "fully_connected_s8.h"
#include "host_isas.h"
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
  int32_t samples = 1;  // input holds samples * batches rows
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
  c->samples = u(0, 2) == 0 ? u(1, 11) : 1;
  c->input.resize(size_t(c->samples) * d.batches * d.in_features);
  c->weights.resize(size_t(d.out_features) * d.in_features);
  // Weights anywhere in int8, -128 included (outside the spec's [-127, 127], but a blob may hold
  // it). Extremes: inputs of the largest |x + input_offset| (the accumulator bound), or all -128
  // (|x| = 128), with weights all 127 or all -128: the kernel's maddubs then multiplies 128 by
  // ~127 = -128 or by ~(-128) = 127, its pair sums' two edges (-32768 and 32512). Or weights all
  // -128 under random inputs.
  const bool top = u(0, 1) == 1;
  for (auto& v : c->input)
    v = static_cast<std::int8_t>(extreme == 0 ? (b.input_offset > 0 ? 127 : -128)
                                 : extreme == 1 ? -128 : u(-128, 127));
  for (auto& v : c->weights)
    v = static_cast<std::int8_t>(extreme <= 1   ? (top ? 127 : -128)
                                 : extreme == 2 ? -128
                                                : u(-128, 127));
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
  tlm_fc_dims rows = c.d;  // rows are independent: every sample's rows as one operand
  rows.batches *= c.samples;
  std::vector<std::int8_t> out(size_t(rows.batches) * c.d.out_features);
  tlm_fully_connected_ref_s8(&c.p, &rows, c.input.data(), c.weights.data(),
                             c.with_bias ? c.bias.data() : nullptr,
                             c.per_channel ? c.scales.data() : nullptr, out.data());
  return out;
}

// The packed weights of a case, 32-byte aligned.
struct Packed {
  std::vector<std::uint8_t> bytes;
  void* at = nullptr;
  explicit Packed(const Case& c) {
    bytes.assign(tlm_fully_connected_ref_s8_fast_packed_bytes(&c.d) + 32, 0xCD);
    at = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(bytes.data()) + 31) &
                                 ~std::uintptr_t{31});
    tlm_fully_connected_ref_s8_fast_pack(&c.p, &c.d, c.weights.data(),
                                         c.with_bias ? c.bias.data() : nullptr,
                                         c.per_channel ? c.scales.data() : nullptr, at);
  }
};

// Samples laid out as arenas `stride` bytes apart: sample s's input rows at s * stride, its
// output rows at s * stride + out_at, the other bytes 0x55 (checked untouched afterwards).
struct Arenas {
  size_t stride = 0, out_at = 0;
  std::vector<std::int8_t> bytes;
  Arenas(std::mt19937& rng, const Case& c) {
    const size_t in_bytes = size_t(c.d.batches) * c.d.in_features;
    const size_t out_bytes = size_t(c.d.batches) * c.d.out_features;
    out_at = in_bytes + std::uniform_int_distribution<int>(0, 40)(rng);
    stride = out_at + out_bytes + std::uniform_int_distribution<int>(0, 40)(rng);
    bytes.assign(stride * c.samples, 0x55);
    for (int32_t s = 0; s < c.samples; ++s)
      std::copy(c.input.begin() + s * in_bytes, c.input.begin() + (s + 1) * in_bytes,
                bytes.begin() + s * stride);
  }
  // Every sample's output rows, in order, and a check that nothing else changed.
  std::vector<std::int8_t> outputs(const Case& c) const {
    const size_t in_bytes = size_t(c.d.batches) * c.d.in_features;
    const size_t out_bytes = size_t(c.d.batches) * c.d.out_features;
    std::vector<std::int8_t> out;
    for (int32_t s = 0; s < c.samples; ++s) {
      const std::int8_t* a = bytes.data() + s * stride;
      for (size_t i = 0; i < stride; ++i) {
        if (i >= out_at && i < out_at + out_bytes) continue;
        const int want = i < in_bytes ? int(c.input[s * in_bytes + i]) : 0x55;
        REQUIRE(int(a[i]) == want);
      }
      out.insert(out.end(), a + out_at, a + out_at + out_bytes);
    }
    return out;
  }
};

// Runs the fast path over every block in random pieces, checking after each piece that no
// column at or beyond its end was written; false if there is no fast path.
bool run_fast_in_pieces(std::mt19937& rng, const Case& c, std::vector<std::int8_t>* got) {
  const tlm_fc_dims& d = c.d;
  const int32_t* scales = c.per_channel ? c.scales.data() : nullptr;
  const Packed packed(c);
  Arenas arenas(rng, c);
  // Misaligned on purpose (the kernel aligns it) and dirty (the kernel zero-pads it).
  std::vector<std::uint8_t> scratch(tlm_fully_connected_ref_s8_fast_scratch_bytes(&d) + 1, 0xAB);
  const int32_t blocks = tlm_fully_connected_ref_s8_fast_blocks(&d);
  REQUIRE(blocks == (tlm_host_avx2() ? (d.out_features + 7) / 8 : 0));
  if (!tlm_host_avx2()) {
    return tlm_fully_connected_ref_s8_fast(&c.p, &d, arenas.bytes.data(), packed.at, scales,
                                           c.samples, arenas.stride, 0, 1, scratch.data() + 1,
                                           arenas.bytes.data() + arenas.out_at);
  }
  for (int32_t b0 = 0; b0 < blocks;) {
    const int max_piece = std::uniform_int_distribution<int>(0, 2)(rng) == 0 ? blocks : 3;
    const int32_t b1 = std::min(blocks, b0 + std::uniform_int_distribution<int>(1, max_piece)(rng));
    if (!tlm_fully_connected_ref_s8_fast(&c.p, &d, arenas.bytes.data(), packed.at, scales,
                                         c.samples, arenas.stride, b0, b1, scratch.data() + 1,
                                         arenas.bytes.data() + arenas.out_at))
      return false;
    for (int32_t s = 0; s < c.samples; ++s)
      for (int32_t b = 0; b < d.batches; ++b)
        for (int32_t o = 8 * b1; o < d.out_features; ++o)
          REQUIRE(arenas.bytes[s * arenas.stride + arenas.out_at + size_t(b) * d.out_features + o] ==
                  0x55);
    b0 = b1;
  }
  *got = arenas.outputs(c);
  return true;
}

}  // namespace

TEST_CASE("fully connected (reference requantization) fast path equals the plain kernel") {
  for_each_host_isa([](const std::string& isa) {
    INFO("inner loops: " << isa);
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
          INFO("trial " << trial << " element " << i << " samples " << c.samples << " batches "
                        << d.batches << " in " << d.in_features << " out " << d.out_features
                        << " per_channel " << c.per_channel);
          REQUIRE(int(got[i]) == int(expected[i]));
        }
      }
    }
    if (tlm_host_avx2()) {
      CHECK(rejected < trials / 20);
      CHECK(checked >= trials * 19 / 20);
      CHECK(subnormal > 0);
      CHECK(inside > outputs / 4);  // most cases test rounding, not just the clamp
      MESSAGE(isa << ": " << checked << " cases, " << outputs << " outputs, " << inside << " inside the clamp, "
                      << subnormal << " with a subnormal per-tensor scale");
    }
  });
}

TEST_CASE("fully connected fast path writes only its blocks' columns, nothing for no blocks") {
  std::mt19937 rng(77);
  for (int trial = 0; trial < 200; ++trial) {
    Case c;
    if (!random_case(rng, trial + 1, &c)) continue;
    const tlm_fc_dims& d = c.d;
    const std::vector<std::int8_t> expected = plain_output(c);
    const int32_t blocks = (d.out_features + 7) / 8;
    const int32_t b0 = std::uniform_int_distribution<int>(0, blocks)(rng);
    const int32_t b1 = std::uniform_int_distribution<int>(b0, blocks)(rng);
    const Packed packed(c);
    Arenas arenas(rng, c);
    std::vector<std::uint8_t> scratch(tlm_fully_connected_ref_s8_fast_scratch_bytes(&d));
    const bool ran = tlm_fully_connected_ref_s8_fast(
        &c.p, &d, arenas.bytes.data(), packed.at, c.per_channel ? c.scales.data() : nullptr,
        c.samples, arenas.stride, b0, b1, scratch.data(), arenas.bytes.data() + arenas.out_at);
    CHECK(ran == tlm_host_avx2());
    const std::vector<std::int8_t> got = arenas.outputs(c);
    for (int32_t r = 0; r < c.samples * d.batches; ++r)
      for (int32_t o = 0; o < d.out_features; ++o) {
        const size_t i = size_t(r) * d.out_features + o;
        REQUIRE(int(got[i]) == (ran && o >= 8 * b0 && o < 8 * b1 ? int(expected[i]) : 0x55));
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
  // Packed weights for tlm_fully_connected_ref_s8_fast (bias and scales are packed with them).
  auto pack = [&](const tlm_fc_dims& dims, const int32_t* bias, const int32_t* sc) {
    std::vector<double> buf(tlm_fully_connected_ref_s8_fast_packed_bytes(&dims) / 8 + 4);
    void* at = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(buf.data()) + 31) &
                                       ~std::uintptr_t{31});
    tlm_fully_connected_ref_s8_fast_pack(&p, &dims, w.data(), bias, sc, at);
    return std::make_pair(std::move(buf), at);
  };
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
    const auto packed = pack(d, accs.data(), scales.data());
    const bool ran = tlm_fully_connected_ref_s8_fast(&p, &d, &x, packed.second, scales.data(), 1,
                                                     0, 0, (n + 7) / 8, scratch.data(), got.data());
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
    // The same pairs in 3 rows at once (with VNNI, the 512-bit superblock tiles of 2 rows and
    // of 1), under both instruction sets.
    for_each_host_isa([&](const std::string& isa) {
      const tlm_fc_dims d3{3, 1, n};
      const std::int8_t x3[3] = {0, 0, 0};
      std::vector<std::int8_t> got3(size_t(3) * n, 0x55);
      const auto packed3 = pack(d3, accs.data(), scales.data());
      REQUIRE(tlm_fully_connected_ref_s8_fast(&p, &d3, x3, packed3.second, scales.data(), 1, 0, 0,
                                              (n + 7) / 8, scratch.data(), got3.data()));
      for (int32_t r = 0; r < 3; ++r)
        for (int32_t o = 0; o < n; ++o)
          if (got3[size_t(r) * n + o] != expected[o]) {
            INFO(isa << ": row " << r << " acc " << accs[o] << " scale " << std::setprecision(17)
                     << effs[o] << " offset " << offset);
            REQUIRE(int(got3[size_t(r) * n + o]) == int(expected[o]));
          }
    });
  }
  // Per tensor: a handful of the pairs, each as the params' one scale.
  tlm_fc_dims d1{1, 1, 1};
  for (int32_t o = 0; o < n; o += 97) {
    const Scale s = split(effs[o]);
    p.base.output_offset = 0;
    p.scale_mantissa_lo = s.lo, p.scale_mantissa_hi = s.hi, p.scale_exponent = s.e;
    std::int8_t expected = 0, got = 0x55;
    tlm_fully_connected_ref_s8(&p, &d1, &x, w.data(), &accs[o], nullptr, &expected);
    const auto packed = pack(d1, &accs[o], nullptr);
    REQUIRE(tlm_fully_connected_ref_s8_fast(&p, &d1, &x, packed.second, nullptr, 1, 0, 0, 1,
                                            scratch.data(), &got));
    REQUIRE(int(got) == int(expected));
  }
}
