// The host fast paths of depthwise conv and add (AVX2, host_simd.h) against the plain kernels,
// byte for byte, on random shapes, parameters and row / element ranges with fixed seeds; and the
// 8-lane requantization (requantize_avx2.h) against requantize.h on random and edge inputs. Where
// the build or CPU has no fast path, the fast functions must decline (return false, write nothing).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "add_s8.h"
#include "depthwise_conv2d_s8.h"
#include "host_simd.h"
#include "requantize.h"
#include "requantize_avx2.h"

namespace {

using I8 = std::vector<std::int8_t>;
using I32 = std::vector<std::int32_t>;

std::int32_t uniform(std::mt19937& rng, std::int32_t lo, std::int32_t hi) {
  return std::uniform_int_distribution<std::int32_t>(lo, hi)(rng);
}

I8 random_s8(std::mt19937& rng, std::size_t n, bool extreme) {
  I8 v(n);
  for (auto& x : v)
    x = static_cast<std::int8_t>(extreme ? (uniform(rng, 0, 1) ? 127 : -128)
                                         : uniform(rng, -128, 127));
  return v;
}

// A Q31 multiplier in [2^30, 2^31), sometimes an edge value.
std::int32_t random_multiplier(std::mt19937& rng) {
  switch (uniform(rng, 0, 9)) {
    case 0: return std::int32_t{1} << 30;
    case 1: return INT32_MAX;
    default: return uniform(rng, std::int32_t{1} << 30, INT32_MAX);
  }
}

// Mostly shifts giving outputs inside the int8 range for these accumulators, sometimes any shift
// in [lo, hi] (extremes included).
std::int32_t random_shift(std::mt19937& rng, std::int32_t lo, std::int32_t hi,
                          std::int32_t typical_lo, std::int32_t typical_hi) {
  switch (uniform(rng, 0, 9)) {
    case 0: return lo;
    case 1: return hi;
    case 2: case 3: return uniform(rng, lo, hi);
    default: return uniform(rng, typical_lo, typical_hi);
  }
}

void random_activation(std::mt19937& rng, std::int32_t* lo, std::int32_t* hi) {
  if (uniform(rng, 0, 2) == 0) {
    *lo = -128;
    *hi = 127;
  } else {
    *lo = uniform(rng, -128, 127);
    *hi = uniform(rng, *lo, 127);
  }
}

// One axis of a window: SAME, VALID or any padding the checks accept (out, pad).
void random_axis(std::mt19937& rng, std::int32_t in, std::int32_t filter, std::int32_t stride,
                 std::int32_t* out, std::int32_t* pad) {
  switch (uniform(rng, 0, 2)) {
    case 0: {  // SAME
      *out = (in + stride - 1) / stride;
      *pad = std::max<std::int32_t>((*out - 1) * stride + filter - in, 0) / 2;
      break;
    }
    case 1:  // VALID (rejected by the check when the filter is larger than the input)
      *pad = 0;
      *out = in >= filter ? (in - filter) / stride + 1 : 1;
      break;
    default:  // any pad < filter, any count of outputs whose last window starts inside
      *pad = uniform(rng, 0, filter - 1);
      *out = uniform(rng, 1, (in - 1 + *pad) / stride + 1);
      break;
  }
}

struct DwCase {
  tlm_depthwise_conv2d_params p;
  tlm_conv_dims d;
  I32 mult, shift, bias;
  bool has_bias;
  I8 input, filter;
};

DwCase random_dw_case(std::mt19937& rng) {
  DwCase c{};
  tlm_conv_dims& d = c.d;
  tlm_depthwise_conv2d_params& p = c.p;
  d.batches = uniform(rng, 1, 3);
  d.input_c = uniform(rng, 0, 3) == 0 ? 8 * uniform(rng, 1, 8) : uniform(rng, 1, 70);
  d.output_c = d.input_c;
  d.input_h = uniform(rng, 1, 12);
  d.input_w = uniform(rng, 1, 12);
  d.filter_h = uniform(rng, 1, 5);
  d.filter_w = uniform(rng, 1, 5);
  p.stride_h = uniform(rng, 1, 3);
  p.stride_w = uniform(rng, 1, 3);
  p.dilation_h = p.dilation_w = 1;
  p.depth_multiplier = 1;
  random_axis(rng, d.input_h, d.filter_h, p.stride_h, &d.output_h, &p.pad_top);
  random_axis(rng, d.input_w, d.filter_w, p.stride_w, &d.output_w, &p.pad_left);
  if (uniform(rng, 0, 19) == 0) ++d.output_w;  // sometimes a window past the input: rejected
  const bool extreme = uniform(rng, 0, 7) == 0;  // |products| at their bound 32640
  p.input_offset = extreme ? 128 : uniform(rng, -127, 128);
  p.output_offset = uniform(rng, -128, 127);
  random_activation(rng, &p.activation_min, &p.activation_max);
  const std::int32_t n = d.output_c;
  c.mult.resize(n);
  c.shift.resize(n);
  c.bias.resize(n);
  const std::int64_t limit = INT32_MAX - std::int64_t{d.filter_h} * d.filter_w * 32640;
  for (std::int32_t o = 0; o < n; ++o) {
    c.mult[o] = random_multiplier(rng);
    c.shift[o] = random_shift(rng, -31, 30, -16, -6);
    switch (uniform(rng, 0, 5)) {
      case 0: c.bias[o] = static_cast<std::int32_t>(limit); break;
      case 1: c.bias[o] = static_cast<std::int32_t>(-limit); break;
      default: c.bias[o] = uniform(rng, -50000, 50000); break;
    }
  }
  c.has_bias = uniform(rng, 0, 4) != 0;
  c.input = random_s8(rng, std::size_t(d.batches) * d.input_h * d.input_w * d.input_c, extreme);
  I8 f = random_s8(rng, std::size_t(d.filter_h) * d.filter_w * d.output_c, false);
  if (extreme) std::fill(f.begin(), f.end(), std::int8_t{-128});
  c.filter = f;
  return c;
}

std::size_t dw_output_size(const tlm_conv_dims& d) {
  return std::size_t(d.batches) * d.output_h * d.output_w * d.output_c;
}

bool dw_check(const DwCase& c) {
  return tlm_depthwise_conv2d_s8_check(&c.p, &c.d, c.mult.data(), c.shift.data(),
                                       c.has_bias ? c.bias.data() : nullptr) == TLM_OK;
}

I8 dw_plain(const DwCase& c) {
  I8 y(dw_output_size(c.d));
  tlm_depthwise_conv2d_s8(&c.p, &c.d, c.mult.data(), c.shift.data(), c.input.data(),
                          c.filter.data(), c.has_bias ? c.bias.data() : nullptr, y.data());
  return y;
}

bool dw_fast(const DwCase& c, std::int32_t row_begin, std::int32_t row_end, I8& y) {
  return tlm_depthwise_conv2d_s8_fast(&c.p, &c.d, c.mult.data(), c.shift.data(), c.input.data(),
                                      c.filter.data(), c.has_bias ? c.bias.data() : nullptr,
                                      row_begin, row_end, y.data());
}

// Cut points splitting [0, n) into 1..4 random pieces (some possibly empty).
std::vector<std::int32_t> random_cuts(std::mt19937& rng, std::int32_t n) {
  std::vector<std::int32_t> cuts{0, n};
  const std::int32_t extra = uniform(rng, 0, 3);
  for (std::int32_t i = 0; i < extra; ++i) cuts.push_back(uniform(rng, 0, n));
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

tlm_add_params random_add_params(std::mt19937& rng) {
  tlm_add_params p{};
  p.input1_offset = uniform(rng, -127, 128);
  p.input2_offset = uniform(rng, -127, 128);
  p.left_shift = uniform(rng, 0, 3) == 0 ? uniform(rng, 0, 22) : 20;
  p.input1_multiplier = random_multiplier(rng);
  p.input2_multiplier = random_multiplier(rng);
  p.output_multiplier = random_multiplier(rng);
  p.input1_shift = random_shift(rng, -31, 0, -3, 0);
  p.input2_shift = random_shift(rng, -31, 0, -3, 0);
  p.output_shift = random_shift(rng, -31, 0, -22, -18);
  p.output_offset = uniform(rng, -128, 127);
  random_activation(rng, &p.activation_min, &p.activation_max);
  return p;
}

#if TLM_HOST_AVX2
// The index of the first of n triples (n a multiple of 8) where tlm_avx2::
// multiply_by_quantized_multiplier differs from requantize.h's, or n when none does.
TLM_AVX2_TARGET std::size_t first_mbqm_mismatch(const I32& x, const I32& m, const I32& s) {
  const std::size_t n = x.size();
  for (std::size_t i = 0; i < n; i += 8) {
    const __m256i v = tlm_avx2::multiply_by_quantized_multiplier(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.data() + i)),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m.data() + i)),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.data() + i)));
    std::int32_t r[8];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r), v);
    for (std::size_t j = 0; j < 8; ++j)
      if (r[j] != tlm_detail::multiply_by_quantized_multiplier(x[i + j], m[i + j], s[i + j]))
        return i + j;
  }
  return n;
}
#endif

}  // namespace

TEST_CASE("host fast depthwise conv equals the plain kernel on random shapes and row ranges") {
  std::mt19937 rng(20240611);
  int ran = 0, rejected = 0;
  const int cases = 3000;
  for (int k = 0; k < cases; ++k) {
    const DwCase c = random_dw_case(rng);
    if (!dw_check(c)) {
      ++rejected;
      continue;
    }
    const I8 want = dw_plain(c);
    I8 got(want.size(), std::int8_t{0x5A});
    const std::int32_t rows = c.d.batches * c.d.output_h;
    const std::vector<std::int32_t> cuts = random_cuts(rng, rows);
    bool all = true;
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
      all = dw_fast(c, cuts[i], cuts[i + 1], got) && all;
    if (!tlm_host_avx2()) {
      CHECK_FALSE(all);
      CHECK(std::all_of(got.begin(), got.end(), [](std::int8_t v) { return v == 0x5A; }));
      continue;
    }
    REQUIRE(all);
    ++ran;
    if (got != want) {
      INFO("case " << k << ": n=" << c.d.batches << " h=" << c.d.input_h << " w=" << c.d.input_w
                   << " c=" << c.d.input_c << " f=" << c.d.filter_h << "x" << c.d.filter_w
                   << " stride=" << c.p.stride_h << "," << c.p.stride_w << " pad=" << c.p.pad_top
                   << "," << c.p.pad_left << " out=" << c.d.output_h << "x" << c.d.output_w);
      CHECK(got == want);
    }
  }
  MESSAGE("depthwise: " << ran << " cases compared, " << rejected << " rejected by the check");
  REQUIRE(rejected < cases / 5);
  if (tlm_host_avx2()) REQUIRE(ran >= cases * 4 / 5);
}

TEST_CASE("host fast depthwise conv writes only its rows") {
  std::mt19937 rng(77);
  int ran = 0;
  for (int k = 0; k < 500; ++k) {
    const DwCase c = random_dw_case(rng);
    if (!dw_check(c)) continue;
    const I8 want = dw_plain(c);
    const std::int32_t rows = c.d.batches * c.d.output_h;
    const std::int32_t begin = uniform(rng, 0, rows - 1), end = uniform(rng, begin, rows);
    const std::int8_t sentinel = static_cast<std::int8_t>(uniform(rng, -128, 127));
    I8 got(want.size(), sentinel);
    const bool ok = dw_fast(c, begin, end, got);
    CHECK(ok == tlm_host_avx2());
    const std::size_t row_bytes = std::size_t(c.d.output_w) * c.d.output_c;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const std::int32_t r = static_cast<std::int32_t>(i / row_bytes);
      const bool inside = ok && r >= begin && r < end;
      if (got[i] != (inside ? want[i] : sentinel)) {
        INFO("case " << k << " byte " << i << " row " << r << " of [" << begin << ", " << end
                     << ")");
        CHECK(got[i] == (inside ? want[i] : sentinel));
        break;
      }
    }
    ++ran;
  }
  REQUIRE(ran >= 400);
}

TEST_CASE("host fast depthwise conv with its output trailing its input by window_lead") {
  // The planner may place the output window_lead bytes below the input in one buffer: pixels in
  // raster order, each written after its window is read, still give the plain kernel's bytes.
  std::mt19937 rng(99);
  int ran = 0;
  for (int k = 0; k < 1000; ++k) {
    const DwCase c = random_dw_case(rng);
    if (!dw_check(c)) continue;
    const I8 want = dw_plain(c);
    const tlm_conv_dims& d = c.d;
    const std::int64_t lead = tlm_detail::window_lead(
        d.batches, d.input_h, d.input_w, d.input_c, d.output_h, d.output_w, d.output_c,
        c.p.stride_h, c.p.stride_w, 1, 1, c.p.pad_top, c.p.pad_left);
    REQUIRE(lead >= 0);
    const std::size_t in_at = static_cast<std::size_t>(lead);
    I8 arena(std::max(in_at + c.input.size(), want.size()));
    std::copy(c.input.begin(), c.input.end(), arena.begin() + in_at);
    const std::vector<std::int32_t> cuts = random_cuts(rng, d.batches * d.output_h);
    bool all = true;
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
      all = tlm_depthwise_conv2d_s8_fast(&c.p, &d, c.mult.data(), c.shift.data(),
                                         arena.data() + in_at, c.filter.data(),
                                         c.has_bias ? c.bias.data() : nullptr, cuts[i],
                                         cuts[i + 1], arena.data()) && all;
    if (!tlm_host_avx2()) {
      CHECK_FALSE(all);
      continue;
    }
    REQUIRE(all);
    INFO("case " << k << ": lead " << lead);
    CHECK(I8(arena.begin(), arena.begin() + want.size()) == want);
    ++ran;
  }
  if (tlm_host_avx2()) REQUIRE(ran >= 800);
}

TEST_CASE("host fast depthwise conv declines depth multiplier > 1 and dilation") {
  std::mt19937 rng(5);
  for (int k = 0; k < 3; ++k) {
    DwCase c = random_dw_case(rng);
    if (k == 0) {
      c.p.depth_multiplier = 2;
      c.d.output_c = 2 * c.d.input_c;
    } else {
      (k == 1 ? c.p.dilation_h : c.p.dilation_w) = 2;
    }
    I8 y(std::size_t(c.d.batches) * c.d.output_h * c.d.output_w * c.d.output_c, std::int8_t{7});
    c.mult.resize(c.d.output_c, std::int32_t{1} << 30);
    c.shift.resize(c.d.output_c, 0);
    c.bias.resize(c.d.output_c, 0);
    c.filter.resize(std::size_t(c.d.filter_h) * c.d.filter_w * c.d.output_c, 1);
    CHECK_FALSE(tlm_depthwise_conv2d_s8_fast(&c.p, &c.d, c.mult.data(), c.shift.data(),
                                             c.input.data(), c.filter.data(), c.bias.data(), 0,
                                             c.d.batches * c.d.output_h, y.data()));
    CHECK(std::all_of(y.begin(), y.end(), [](std::int8_t v) { return v == 7; }));
  }
}

TEST_CASE("host fast add equals the plain kernel on random ranges and in place") {
  std::mt19937 rng(4242);
  int ran = 0;
  for (int k = 0; k < 2000; ++k) {
    const tlm_add_params p = random_add_params(rng);
    const std::int32_t count =
        uniform(rng, 0, 3) == 0 ? uniform(rng, 1, 40) : uniform(rng, 1, 700);
    REQUIRE(tlm_add_s8_check(&p, count) == TLM_OK);
    const I8 a = random_s8(rng, count, uniform(rng, 0, 9) == 0), b = random_s8(rng, count, false);
    I8 want(count);
    tlm_add_s8(&p, count, a.data(), b.data(), want.data());
    if (!tlm_host_avx2()) {
      I8 y(count, 3);
      CHECK_FALSE(tlm_add_s8_fast(&p, 0, count, a.data(), b.data(), y.data()));
      CHECK(std::all_of(y.begin(), y.end(), [](std::int8_t v) { return v == 3; }));
      continue;
    }
    // One range into an output full of a sentinel: only [begin, end) changes.
    const std::int32_t begin = uniform(rng, 0, count), end = uniform(rng, begin, count);
    const std::int8_t sentinel = static_cast<std::int8_t>(uniform(rng, -128, 127));
    I8 y(count, sentinel);
    REQUIRE(tlm_add_s8_fast(&p, begin, end, a.data(), b.data(), y.data()));
    for (std::int32_t i = 0; i < count; ++i) {
      const bool inside = i >= begin && i < end;
      if (y[i] != (inside ? want[i] : sentinel)) {
        INFO("case " << k << " element " << i << " of [" << begin << ", " << end << ")");
        CHECK(y[i] == (inside ? want[i] : sentinel));
        break;
      }
    }
    // The rest in random pieces: the whole output.
    const std::vector<std::int32_t> cuts = random_cuts(rng, count);
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
      REQUIRE(tlm_add_s8_fast(&p, cuts[i], cuts[i + 1], a.data(), b.data(), y.data()));
    CHECK(y == want);
    // In place: output == input1, and output == input2.
    I8 in1 = a;
    REQUIRE(tlm_add_s8_fast(&p, 0, count, in1.data(), b.data(), in1.data()));
    CHECK(in1 == want);
    I8 in2 = b;
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
      REQUIRE(tlm_add_s8_fast(&p, cuts[i], cuts[i + 1], a.data(), in2.data(), in2.data()));
    CHECK(in2 == want);
    ++ran;
  }
  if (tlm_host_avx2()) REQUIRE(ran == 2000);
}

TEST_CASE("tlm_avx2::multiply_by_quantized_multiplier equals requantize.h lane by lane") {
#if TLM_HOST_AVX2
  if (!tlm_host_avx2()) return;
  const std::int32_t edge_x[] = {INT32_MIN, INT32_MIN + 1, -(std::int32_t{1} << 30), -1, 0, 1,
                                 std::int32_t{1} << 30, INT32_MAX - 1, INT32_MAX};
  const std::int32_t edge_m[] = {0, 1, std::int32_t{1} << 30, (std::int32_t{1} << 30) + 1,
                                 INT32_MAX - 1, INT32_MAX};
  I32 x, m, s;
  // Every edge x with every edge multiplier and every shift.
  for (std::int32_t xi : edge_x)
    for (std::int32_t mi : edge_m)
      for (std::int32_t si = -31; si <= 30; ++si) {
        x.push_back(xi);
        m.push_back(mi);
        s.push_back(si);
      }
  // ~1M random triples, a fraction of them with edge values.
  std::mt19937 rng(31337);
  const std::size_t n = std::size_t{1} << 20;
  while (x.size() < n || x.size() % 8 != 0) {
    switch (uniform(rng, 0, 7)) {
      case 0: x.push_back(edge_x[uniform(rng, 0, 8)]); break;
      case 1: x.push_back(uniform(rng, -1000, 1000)); break;
      case 2: x.push_back(uniform(rng, -(1 << 24), 1 << 24)); break;
      default: x.push_back(uniform(rng, INT32_MIN, INT32_MAX)); break;
    }
    m.push_back(uniform(rng, 0, 4) == 0 ? edge_m[uniform(rng, 0, 5)] : uniform(rng, 0, INT32_MAX));
    s.push_back(uniform(rng, 0, 7) == 0 ? (uniform(rng, 0, 1) ? -31 : 30) : uniform(rng, -31, 30));
  }
  const std::size_t bad = first_mbqm_mismatch(x, m, s);
  if (bad != x.size()) {
    INFO("x=" << x[bad] << " multiplier=" << m[bad] << " shift=" << s[bad] << ": scalar "
              << tlm_detail::multiply_by_quantized_multiplier(x[bad], m[bad], s[bad]));
    CHECK(bad == x.size());
  }
  MESSAGE("multiply_by_quantized_multiplier: " << x.size() << " triples compared");
#else
  CHECK_FALSE(tlm_host_avx2());
#endif
}
