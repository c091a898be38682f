// The host fast path of conv2d (tlm_conv2d_s8_fast: bands of padded input rows + GEMM tiles over
// the packed filter, AVX2 madd on int16 or AVX-512 VNNI on bytes, each where the CPU has it, +
// vector requantization) against the plain kernel, byte for byte, over random shapes, strides, paddings,
// offsets, multipliers, shifts, biases and clamps with fixed seeds, computed in random row
// ranges as the host interpreter splits an operator over threads. The plain kernel itself is
// checked against independent references and TFLite in test_kernels_s8.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "conv2d_s8.h"
#include "host_isas.h"
#include "host_simd.h"

namespace {

struct Case {
  tlm_conv2d_params p{};
  tlm_conv_dims d{};
  std::vector<std::int8_t> input, filter;
  std::vector<std::int32_t> bias, multipliers, shifts;
  bool with_bias = true;
};

// One output dimension from TFLite's SAME (pad) or VALID rule.
void axis(std::mt19937& rng, int32_t in, int32_t k, int32_t stride, bool same, int32_t* out,
          int32_t* pad) {
  if (same) {
    *out = (in + stride - 1) / stride;
    const int32_t total = std::max(0, (*out - 1) * stride + k - in);
    *pad = total / 2;
  } else {
    *out = in >= k ? (in - k) / stride + 1 : 0;
    *pad = 0;
  }
  (void)rng;
}

// large: images up to 48 x 48 (several bands of padded rows per image, tiles across rows).
bool random_case(std::mt19937& rng, Case* c, bool large = false) {
  auto u = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  tlm_conv_dims& d = c->d;
  d.batches = large ? u(1, 3) : u(1, 2);
  d.input_h = large ? u(20, 48) : u(1, 14);
  d.input_w = large ? u(20, 48) : u(1, 14);
  d.input_c = u(0, 3) == 0 ? u(1, 3) : u(1, 40);
  d.filter_h = u(1, 5);
  d.filter_w = u(1, 5);
  d.output_c = u(1, 37);
  tlm_conv2d_params& p = c->p;
  p.stride_h = u(1, 3);
  p.stride_w = u(1, 3);
  p.dilation_h = p.dilation_w = 1;
  const bool same = u(0, 1);
  axis(rng, d.input_h, d.filter_h, p.stride_h, same, &d.output_h, &p.pad_top);
  axis(rng, d.input_w, d.filter_w, p.stride_w, same, &d.output_w, &p.pad_left);
  if (d.output_h < 1 || d.output_w < 1) return false;
  p.input_offset = u(-127, 128);
  p.output_offset = u(-128, 127);
  p.activation_min = u(-128, 0);
  p.activation_max = u(p.activation_min, 127);
  if (u(0, 3) == 0) p.activation_min = -128, p.activation_max = 127;
  const int32_t depth = d.filter_h * d.filter_w * d.input_c;
  c->input.resize(size_t(d.batches) * d.input_h * d.input_w * d.input_c);
  c->filter.resize(size_t(d.output_c) * depth);
  for (auto& v : c->input) v = static_cast<std::int8_t>(u(-128, 127));
  for (auto& v : c->filter) v = static_cast<std::int8_t>(u(-128, 127));
  c->bias.resize(d.output_c);
  c->multipliers.resize(d.output_c);
  c->shifts.resize(d.output_c);
  const int32_t base_shift = -u(6, 14);
  for (int32_t o = 0; o < d.output_c; ++o) {
    c->bias[o] = u(-100000, 100000);
    c->multipliers[o] = u(0, 20) == 0 ? 0 : u(1 << 30, 0x7fffffff);
    c->shifts[o] = u(0, 30) == 0 ? u(-31, 30) : base_shift + u(-2, 2);
  }
  c->with_bias = u(0, 4) != 0;
  return tlm_conv2d_s8_check(&p, &d, c->multipliers.data(), c->shifts.data(),
                             c->with_bias ? c->bias.data() : nullptr) == TLM_OK;
}

}  // namespace

namespace {

// Runs trials random cases (random_case(large)) through the fast path in random row pieces of
// 1..max_piece rows; returns how many were checked.
int check_fast_equals_plain(std::mt19937& rng, int trials, bool large, int max_piece) {
  int checked = 0;
  for (int trial = 0; trial < trials; ++trial) {
    Case c;
    if (!random_case(rng, &c, large)) continue;
    const tlm_conv_dims& d = c.d;
    const int32_t* bias = c.with_bias ? c.bias.data() : nullptr;
    const size_t out_bytes = size_t(d.batches) * d.output_h * d.output_w * d.output_c;
    std::vector<std::int8_t> expected(out_bytes), got(out_bytes, 0x55);
    tlm_conv2d_s8(&c.p, &d, c.multipliers.data(), c.shifts.data(), c.input.data(),
                  c.filter.data(), bias, expected.data());
    std::vector<std::uint8_t> scratch(tlm_conv2d_s8_fast_scratch_bytes(&d) + 1);
    // The filter packed 32-byte aligned, as the host allocates it.
    std::vector<std::int16_t> packed((tlm_conv2d_s8_fast_packed_bytes(&d) + 64) / 2);
    void* packed_at = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(packed.data()) + 31) & ~std::uintptr_t{31});
    tlm_conv2d_s8_fast_pack(&d, c.filter.data(), packed_at);
    // Without the packed filter there is no fast path: nothing written.
    CHECK_FALSE(tlm_conv2d_s8_fast(&c.p, &d, c.multipliers.data(), c.shifts.data(), c.input.data(),
                                   nullptr, bias, 0, d.batches * d.output_h, scratch.data(),
                                   got.data()));
    const int32_t rows = d.batches * d.output_h;
    // Random pieces [r0, r1); between pieces, the bytes of later rows must be untouched.
    for (int32_t r0 = 0; r0 < rows;) {
      const int32_t r1 =
          std::min(rows, r0 + std::uniform_int_distribution<int>(1, max_piece)(rng));
      // Misaligned scratch on purpose: the kernel aligns it.
      const bool ran = tlm_conv2d_s8_fast(&c.p, &d, c.multipliers.data(), c.shifts.data(),
                                          c.input.data(), packed_at, bias, r0, r1,
                                          scratch.data() + 1, got.data());
      if (!tlm_host_avx2()) {
        CHECK_FALSE(ran);
        break;
      }
      REQUIRE(ran);
      const size_t row_bytes = size_t(d.output_w) * d.output_c;
      for (size_t i = r1 * row_bytes; i < out_bytes; ++i) REQUIRE(got[i] == 0x55);
      r0 = r1;
    }
    if (!tlm_host_avx2()) continue;
    ++checked;
    for (size_t i = 0; i < out_bytes; ++i) {
      if (got[i] != expected[i]) {
        INFO("trial " << trial << " element " << i << " in " << d.input_h << "x" << d.input_w
                      << "x" << d.input_c << " filter " << d.filter_h << "x" << d.filter_w
                      << " out_c " << d.output_c);
        REQUIRE(int(got[i]) == int(expected[i]));
      }
    }
  }
  return checked;
}

}  // namespace

TEST_CASE("conv2d fast path equals the plain kernel, any row split") {
  for_each_host_isa([](const std::string& isa) {
    INFO("inner loops: " << isa);
    std::mt19937 rng(20261122);
    const int checked = check_fast_equals_plain(rng, 600, false, 4);
    if (tlm_host_avx2()) CHECK(checked >= 300);
  });
}

TEST_CASE("conv2d fast path equals the plain kernel on images of several bands") {
  for_each_host_isa([](const std::string& isa) {
    INFO("inner loops: " << isa);
    std::mt19937 rng(20261123);
    const int checked = check_fast_equals_plain(rng, 120, true, 60);
    if (tlm_host_avx2()) CHECK(checked >= 60);
  });
}

TEST_CASE("conv2d fast path equals the plain kernel at the extremes of input, filter and offset") {
  // Every input and weight at -128 or 127, the input offset at -127 or 128 (the zero point 127
  // or -128: the padding bytes of the VNNI band at 255 and 0), 3x3 windows over 200 channels with
  // SAME padding: the largest products and sums of both inner loops, and the correction of the
  // VNNI one at its largest.
  for_each_host_isa([](const std::string& isa) {
    INFO("inner loops: " << isa);
    int checked = 0;
    for (int x : {-128, 127})
      for (int w : {-128, 127})
        for (int offset : {-127, 128}) {
          Case c;
          tlm_conv_dims& d = c.d;
          d.batches = 1, d.input_h = 5, d.input_w = 6, d.input_c = 200;
          d.filter_h = d.filter_w = 3, d.output_h = 5, d.output_w = 6, d.output_c = 16;
          tlm_conv2d_params& p = c.p;
          p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = 1;
          p.pad_top = p.pad_left = 1;
          p.input_offset = offset, p.output_offset = 3;
          p.activation_min = -128, p.activation_max = 127;
          c.input.assign(size_t(5) * 6 * 200, static_cast<std::int8_t>(x));
          c.filter.assign(size_t(16) * 9 * 200, static_cast<std::int8_t>(w));
          for (int32_t o = 0; o < 16; ++o) {  // outputs spread over the int8 range
            c.bias.push_back(o * 1000 - 8000);
            c.multipliers.push_back(1 << 30);
            c.shifts.push_back(-(14 + o % 8));
          }
          REQUIRE(tlm_conv2d_s8_check(&p, &d, c.multipliers.data(), c.shifts.data(),
                                      c.bias.data()) == TLM_OK);
          std::vector<std::int8_t> expected(size_t(5) * 6 * 16), got(expected.size(), 0x55);
          tlm_conv2d_s8(&p, &d, c.multipliers.data(), c.shifts.data(), c.input.data(),
                        c.filter.data(), c.bias.data(), expected.data());
          std::vector<std::uint8_t> scratch(tlm_conv2d_s8_fast_scratch_bytes(&d));
          std::vector<std::int16_t> packed((tlm_conv2d_s8_fast_packed_bytes(&d) + 64) / 2);
          void* at = reinterpret_cast<void*>(
              (reinterpret_cast<std::uintptr_t>(packed.data()) + 31) & ~std::uintptr_t{31});
          tlm_conv2d_s8_fast_pack(&d, c.filter.data(), at);
          if (!tlm_conv2d_s8_fast(&p, &d, c.multipliers.data(), c.shifts.data(), c.input.data(),
                                  at, c.bias.data(), 0, 5, scratch.data(), got.data())) {
            CHECK_FALSE(tlm_host_avx2());
            return;
          }
          for (size_t i = 0; i < got.size(); ++i) {
            INFO("x " << x << " w " << w << " offset " << offset << " element " << i);
            REQUIRE(int(got[i]) == int(expected[i]));
          }
          ++checked;
        }
    CHECK(checked == 8);
  });
}
