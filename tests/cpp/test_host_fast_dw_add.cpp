// The host fast paths of depthwise conv and add (AVX2, host_simd.h) against the plain kernels,
// byte for byte, on random shapes, parameters and row / element ranges with fixed seeds; and the
// 8-lane requantization (requantize_avx2.h) against requantize.h on random and edge inputs. Where
// the build or CPU has no fast path, the fast functions must decline (return false, write nothing).
// The depthwise fast path gets a scratch of exactly tlm_depthwise_conv2d_s8_fast_scratch_bytes
// bytes, misaligned, between sentinel bytes it must leave alone.
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
  // Half the cases with a model's requantization throughout (shifts in [-12, -1], moderate
  // biases: the fast path's own requantization), half with edge values mixed in.
  const bool typical = uniform(rng, 0, 1) == 0;
  for (std::int32_t o = 0; o < n; ++o) {
    c.mult[o] = random_multiplier(rng);
    c.shift[o] = typical ? uniform(rng, -12, -1) : random_shift(rng, -31, 30, -16, -6);
    switch (typical ? 2 : uniform(rng, 0, 5)) {
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

// Exactly tlm_depthwise_conv2d_s8_fast_scratch_bytes(d) bytes, `misalign` (0..31) bytes past a
// 32-byte boundary, with sentinel bytes before and after.
class DwScratch {
 public:
  DwScratch(const tlm_conv_dims& d, std::size_t misalign)
      : bytes_(tlm_depthwise_conv2d_s8_fast_scratch_bytes(&d)), buf_(bytes_ + 32 + 32 + kGuard) {
    std::fill(buf_.begin(), buf_.end(), kSentinel);
    const auto base = reinterpret_cast<std::uintptr_t>(buf_.data());
    at_ = (32 - base % 32) % 32 + misalign % 32;
  }
  void* data() { return buf_.data() + at_; }
  // True when nothing outside the scratch's bytes changed.
  bool intact() const {
    for (std::size_t i = 0; i < buf_.size(); ++i)
      if ((i < at_ || i >= at_ + bytes_) && buf_[i] != kSentinel) return false;
    return true;
  }

 private:
  static constexpr std::size_t kGuard = 64;
  static constexpr std::uint8_t kSentinel = 0xC3;
  std::size_t bytes_, at_ = 0;
  std::vector<std::uint8_t> buf_;
};

// The fast path over rows [row_begin, row_end) from `input` into `output`, with a fresh misaligned
// scratch whose sentinels must stay intact.
bool dw_fast_at(const DwCase& c, const std::int8_t* input, std::int32_t row_begin,
                std::int32_t row_end, std::int8_t* output) {
  DwScratch scratch(c.d, std::size_t(row_begin * 13 + c.d.input_c * 7 + c.d.output_w));
  const bool ran = tlm_depthwise_conv2d_s8_fast(
      &c.p, &c.d, c.mult.data(), c.shift.data(), input, c.filter.data(),
      c.has_bias ? c.bias.data() : nullptr, row_begin, row_end, scratch.data(), output);
  CHECK(scratch.intact());
  return ran;
}

bool dw_fast(const DwCase& c, std::int32_t row_begin, std::int32_t row_end, I8& y) {
  return dw_fast_at(c, c.input.data(), row_begin, row_end, y.data());
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
      all = dw_fast_at(c, arena.data() + in_at, cuts[i], cuts[i + 1], arena.data()) && all;
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
    c.has_bias = true;
    CHECK_FALSE(dw_fast(c, 0, c.d.batches * c.d.output_h, y));
    CHECK(std::all_of(y.begin(), y.end(), [](std::int8_t v) { return v == 7; }));
  }
}

namespace {

// One listed depthwise shape: input [batches, h, w, c], filter fh x fw, strides; pad: -1 for
// TFLite's SAME (pad_total = max((out - 1) * stride + f - in, 0), top / left half of it, rounded
// down), -2 for VALID, else that padding on both axes with as many outputs as fit.
struct DwShape {
  std::int32_t batches, h, w, c, fh, fw, sh, sw, pad;
};

void shape_axis(std::int32_t in, std::int32_t f, std::int32_t stride, std::int32_t pad,
                std::int32_t* out, std::int32_t* pad_out) {
  if (pad == -1) {
    *out = (in + stride - 1) / stride;
    *pad_out = std::max<std::int32_t>((*out - 1) * stride + f - in, 0) / 2;
  } else if (pad == -2) {
    *out = (in - f) / stride + 1;
    *pad_out = 0;
  } else {
    *out = (in - 1 + pad) / stride + 1;  // the last window starting inside the input
    *pad_out = pad;
  }
}

// A case of the given shape. typical: shifts in [-12, -1], moderate biases, multipliers in
// [2^30, 2^31) (a model's, and the fast path's requantization); else random_dw_case's mix.
DwCase shape_case(std::mt19937& rng, const DwShape& s, bool typical) {
  DwCase c = random_dw_case(rng);
  tlm_conv_dims& d = c.d;
  tlm_depthwise_conv2d_params& p = c.p;
  d.batches = s.batches;
  d.input_h = s.h;
  d.input_w = s.w;
  d.input_c = d.output_c = s.c;
  d.filter_h = s.fh;
  d.filter_w = s.fw;
  p.stride_h = s.sh;
  p.stride_w = s.sw;
  shape_axis(s.h, s.fh, s.sh, s.pad, &d.output_h, &p.pad_top);
  shape_axis(s.w, s.fw, s.sw, s.pad, &d.output_w, &p.pad_left);
  c.mult.resize(s.c);
  c.shift.resize(s.c);
  c.bias.resize(s.c);
  const std::int64_t limit = INT32_MAX - std::int64_t{s.fh} * s.fw * 32640;
  for (std::int32_t o = 0; o < s.c; ++o) {
    c.mult[o] = random_multiplier(rng);
    if (typical) {
      c.shift[o] = uniform(rng, -12, -1);
      c.bias[o] = uniform(rng, -40000, 40000);
    } else {
      c.shift[o] = random_shift(rng, -31, 30, -16, -6);
      const std::int64_t edge = uniform(rng, 0, 1) ? limit : -limit;
      c.bias[o] = uniform(rng, 0, 3) == 0 ? static_cast<std::int32_t>(edge)
                                           : uniform(rng, -50000, 50000);
    }
  }
  const bool extreme = uniform(rng, 0, 5) == 0;
  c.input = random_s8(rng, std::size_t(d.batches) * d.input_h * d.input_w * d.input_c, extreme);
  c.filter = random_s8(rng, std::size_t(d.filter_h) * d.filter_w * d.output_c, extreme);
  return c;
}

// Runs case c through the fast path in the pieces `cuts` (sorted row numbers from 0 to all rows)
// into an output full of a sentinel, checking after each piece that only its rows changed, and
// at the end that all equal the plain kernel's.
void check_pieces(const DwCase& c, const std::vector<std::int32_t>& cuts, const char* what) {
  const I8 want = dw_plain(c);
  const std::int8_t sentinel = 0x6B;
  I8 got(want.size(), sentinel);
  const std::size_t row_bytes = std::size_t(c.d.output_w) * c.d.output_c;
  const tlm_conv_dims& d = c.d;
  INFO(what << ": n=" << d.batches << " h=" << d.input_h << " w=" << d.input_w << " c=" << d.input_c
            << " f=" << d.filter_h << "x" << d.filter_w << " stride=" << c.p.stride_h << ","
            << c.p.stride_w << " pad=" << c.p.pad_top << "," << c.p.pad_left << " out="
            << d.output_h << "x" << d.output_w);
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    const bool ran = dw_fast(c, cuts[i], cuts[i + 1], got);
    if (!tlm_host_avx2()) {
      CHECK_FALSE(ran);
      CHECK(std::all_of(got.begin(), got.end(), [=](std::int8_t v) { return v == sentinel; }));
      return;
    }
    REQUIRE(ran);
    // Rows at or past cuts[i + 1] untouched so far.
    for (std::size_t k = std::size_t(cuts[i + 1]) * row_bytes; k < got.size(); ++k)
      if (got[k] != sentinel) {
        INFO("piece [" << cuts[i] << ", " << cuts[i + 1] << ") wrote byte " << k);
        CHECK(got[k] == sentinel);
        break;
      }
  }
  for (std::size_t k = 0; k < got.size(); ++k)
    if (got[k] != want[k]) {
      const std::size_t ch = k % std::size_t(d.output_c);
      INFO("first difference at byte " << k << " (row " << k / row_bytes << ", channel " << ch
                                       << ": multiplier " << c.mult[ch] << ", shift "
                                       << c.shift[ch] << ", bias "
                                       << (c.has_bias ? c.bias[ch] : 0) << ")");
      CHECK(got[k] == want[k]);
      break;
    }
}

}  // namespace

TEST_CASE("host fast depthwise conv on listed shapes, channel counts and row splits") {
  const DwShape shapes[] = {
      // MobileNetV1-0.25 (96x96) and DS-CNN layers.
      {1, 48, 48, 8, 3, 3, 1, 1, -1},  {1, 48, 48, 16, 3, 3, 2, 2, -1},
      {1, 24, 24, 32, 3, 3, 1, 1, -1}, {1, 24, 24, 32, 3, 3, 2, 2, -1},
      {1, 12, 12, 64, 3, 3, 2, 2, -1}, {1, 6, 6, 128, 3, 3, 2, 2, -1},
      {1, 3, 3, 256, 3, 3, 1, 1, -1},  {1, 25, 5, 64, 3, 3, 1, 1, -1},
      // Channel counts: blocks of 16, 8, and the partial last block.
      {1, 7, 6, 24, 3, 3, 1, 1, -1},   {1, 5, 7, 40, 3, 3, 1, 1, -1},
      {1, 6, 5, 1, 3, 3, 1, 1, -1},    {1, 6, 5, 3, 3, 3, 1, 1, -1},
      {1, 5, 6, 7, 3, 3, 2, 2, -1},    {1, 5, 6, 9, 3, 3, 1, 1, -1},
      {1, 6, 6, 13, 3, 3, 2, 1, -1},   {1, 4, 7, 17, 3, 3, 1, 2, -1},
      {1, 5, 5, 23, 3, 3, 1, 1, -1},   {1, 5, 4, 31, 3, 3, 1, 1, -1},
      {1, 4, 4, 33, 3, 3, 2, 2, -1},   {1, 3, 5, 250, 3, 3, 1, 1, -1},
      {1, 4, 4, 256, 3, 3, 2, 2, -1},  {1, 2, 3, 512, 3, 3, 1, 1, -1},
      // Stride 2 with SAME's padding 0 (even input) and 1 (odd input) on each axis; VALID.
      {1, 8, 8, 16, 3, 3, 2, 2, -1},   {1, 9, 9, 16, 3, 3, 2, 2, -1},
      {1, 8, 9, 16, 3, 3, 2, 2, -1},   {1, 9, 8, 8, 3, 3, 2, 2, -1},
      {1, 9, 9, 16, 3, 3, 2, 2, 1},    {1, 10, 10, 16, 3, 3, 2, 2, 0},
      {1, 11, 9, 24, 3, 3, 2, 2, -2},  {1, 10, 10, 8, 3, 3, 3, 3, -1},
      // One-row and one-column images, 1x1 outputs.
      {1, 1, 9, 16, 3, 3, 1, 1, -1},   {1, 9, 1, 16, 3, 3, 1, 1, -1},
      {1, 1, 1, 16, 3, 3, 1, 1, -1},   {1, 1, 7, 8, 3, 3, 2, 2, -1},
      {1, 7, 1, 24, 3, 3, 2, 2, -1},   {2, 1, 1, 5, 3, 3, 1, 1, -1},
      // Other filters: 5x5, 1x3, 3x1, 2x2, 1x1, 7x1, 4x4.
      {1, 9, 9, 16, 5, 5, 1, 1, -1},   {1, 10, 9, 24, 5, 5, 2, 2, -1},
      {1, 5, 8, 16, 1, 3, 1, 1, -1},   {1, 8, 5, 16, 3, 1, 1, 1, -1},
      {1, 7, 7, 16, 2, 2, 2, 2, -1},   {1, 6, 6, 16, 2, 2, 1, 1, -1},
      {1, 5, 5, 32, 1, 1, 1, 1, -1},   {1, 5, 5, 8, 1, 1, 2, 2, -1},
      {1, 12, 3, 8, 7, 1, 1, 1, -1},   {1, 9, 9, 16, 4, 4, 1, 1, -1},
      {1, 8, 8, 16, 4, 4, 3, 1, -1},   {1, 6, 7, 11, 5, 3, 1, 2, 2},
      // Batches > 1.
      {3, 6, 6, 16, 3, 3, 1, 1, -1},   {2, 7, 7, 24, 3, 3, 2, 2, -1},
      {4, 3, 4, 8, 3, 3, 1, 1, -1},    {2, 5, 5, 13, 3, 3, 1, 1, -1},
      // Rows wider than a band: several bands per image.
      {1, 40, 300, 32, 3, 3, 1, 1, -1}, {1, 30, 200, 64, 3, 3, 2, 2, -1},
      {1, 9, 2000, 16, 3, 3, 1, 1, -1}, {2, 20, 150, 48, 5, 5, 1, 1, -1},
  };
  std::mt19937 rng(8128);
  int ran = 0;
  for (const DwShape& s : shapes) {
    for (int k = 0; k < 4; ++k) {
      const DwCase c = shape_case(rng, s, k < 2);
      REQUIRE(dw_check(c));
      const std::int32_t out_h = c.d.output_h, rows = c.d.batches * out_h;
      std::vector<std::int32_t> cuts{0};
      switch (k) {
        case 0: break;  // whole
        case 1:         // row by row
          for (std::int32_t r = 1; r < rows; ++r) cuts.push_back(r);
          break;
        case 2:  // splits inside an image and across images
          cuts.push_back(out_h / 2);
          cuts.push_back(std::min(rows, out_h + 1));
          break;
        default: cuts = random_cuts(rng, rows); break;
      }
      if (cuts.back() != rows) cuts.push_back(rows);
      std::sort(cuts.begin(), cuts.end());
      check_pieces(c, cuts, k < 2 ? "typical requantization" : "random requantization");
      ++ran;
    }
  }
  MESSAGE("listed shapes: " << ran << " cases");
}

TEST_CASE("host fast depthwise conv at its requantization's bounds") {
  // The fast requantization serves blocks whose channels all have shifts in [-23, 0] and |bias|
  // below 2^29 - 255 * 128 * filter_h * filter_w; the others take requantize_avx2.h's. Shifts,
  // biases and multipliers at and around those bounds, and rounding ties (small right shifts,
  // multipliers 2^30), in blocks of mixed and uniform channels.
  std::mt19937 rng(1729);
  const std::int32_t shifts[] = {0, -1, -2, -3, -22, -23, -24, 1, -31, 30};
  int ran = 0;
  for (int k = 0; k < 600; ++k) {
    const DwShape s{uniform(rng, 1, 2), uniform(rng, 1, 7), uniform(rng, 1, 7),
                    uniform(rng, 0, 2) == 0 ? uniform(rng, 1, 40) : 8 * uniform(rng, 1, 5),
                    uniform(rng, 1, 4), uniform(rng, 1, 4), uniform(rng, 1, 2), uniform(rng, 1, 2),
                    -1};
    DwCase c = shape_case(rng, s, true);
    const std::int64_t bound = std::int64_t{255 * 128} * s.fh * s.fw;
    const std::int64_t room = (std::int64_t{1} << 29) - bound;
    const bool uniform_block = uniform(rng, 0, 1) == 0;  // one choice for every channel
    const int mode = uniform(rng, 0, 9);
    for (std::int32_t o = 0; o < s.c; ++o) {
      if (!uniform_block || o == 0) {
        c.shift[o] = uniform(rng, 0, 1) ? shifts[uniform(rng, 0, 9)] : uniform(rng, -23, 0);
        switch (uniform(rng, 0, 5)) {
          case 0: c.mult[o] = 0; break;
          case 1: c.mult[o] = std::int32_t{1} << 30; break;
          case 2: c.mult[o] = INT32_MAX; break;
          default: c.mult[o] = random_multiplier(rng); break;
        }
        const std::int64_t edge = room + uniform(rng, -2, 1);  // just inside, at, just outside
        c.bias[o] = mode == 0   ? static_cast<std::int32_t>(uniform(rng, 0, 1) ? edge : -edge)
                    : mode == 1 ? uniform(rng, -(1 << 28), 1 << 28)
                                : uniform(rng, -3000, 3000);
      } else {
        c.shift[o] = c.shift[0];
        c.mult[o] = c.mult[0];
        c.bias[o] = c.bias[0];
      }
    }
    c.has_bias = true;
    c.p.output_offset = uniform(rng, 0, 3) == 0 ? (uniform(rng, 0, 1) ? -128 : 127)
                                                : uniform(rng, -128, 127);
    c.p.input_offset = uniform(rng, 0, 3) == 0 ? (uniform(rng, 0, 1) ? -127 : 128)
                                               : uniform(rng, -127, 128);
    if (!dw_check(c)) continue;
    check_pieces(c, random_cuts(rng, c.d.batches * c.d.output_h), "requantization bounds");
    ++ran;
  }
  REQUIRE(ran >= 500);
}

TEST_CASE("host fast add equals the plain kernel on random ranges and in place") {
  std::mt19937 rng(4242);
  int ran = 0;
  for (int k = 0; k < 2000; ++k) {
    const tlm_add_params p = random_add_params(rng);
    // Short runs and long ones (thousands of elements, as a residual add of ResNet-8).
    const int kind = uniform(rng, 0, 3);
    const std::int32_t count = kind == 0   ? uniform(rng, 1, 40)
                               : kind == 1 ? uniform(rng, 1024, 5000)
                                           : uniform(rng, 1, 700);
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

TEST_CASE("add's table of outputs equals the plain kernel on every pair of inputs") {
  std::mt19937 rng(4343);
  std::vector<std::int8_t> table(TLM_ADD_TABLE_BYTES, 0x5A);
  // Every pair (x1, x2) of int8 inputs, in the order of the table's index.
  I8 a(65536), b(65536);
  for (int32_t i = 0; i < 65536; ++i) {
    a[i] = static_cast<std::int8_t>(i >> 8);
    b[i] = static_cast<std::int8_t>(i & 0xFF);
  }
  int ran = 0;
  for (int k = 0; k < 40; ++k) {
    const tlm_add_params p = random_add_params(rng);
    REQUIRE(tlm_add_s8_check(&p, 65536) == TLM_OK);
    I8 want(65536);
    tlm_add_s8(&p, 65536, a.data(), b.data(), want.data());
    if (!tlm_add_s8_fast_table(&p, table.data())) {
      CHECK_FALSE(tlm_host_avx2());
      return;
    }
    // In random pieces, into a sentinel; then in place over input1 and over input2.
    I8 y(65536, 0x33);
    const std::vector<std::int32_t> cuts = random_cuts(rng, 65536);
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i)
      REQUIRE(tlm_add_s8_lookup(table.data(), cuts[i], cuts[i + 1], a.data(), b.data(), y.data()));
    for (int32_t i = 0; i < 65536; ++i) {
      if (y[i] != want[i]) {
        INFO("params " << k << " x1 " << int(a[i]) << " x2 " << int(b[i]));
        REQUIRE(int(y[i]) == int(want[i]));
      }
    }
    I8 in1 = a, in2 = b;
    REQUIRE(tlm_add_s8_lookup(table.data(), 0, 65536, in1.data(), b.data(), in1.data()));
    REQUIRE(tlm_add_s8_lookup(table.data(), 0, 65536, a.data(), in2.data(), in2.data()));
    CHECK(in1 == want);
    CHECK(in2 == want);
    ++ran;
  }
  CHECK(ran == 40);
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
