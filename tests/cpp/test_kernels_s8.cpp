// The int8 kernels of the freestanding core (cpp/micro/*_s8) against independent references
// written here from TFLite's definitions (int64 / __int128 arithmetic, tl_reference.h's
// requantization; nothing from the kernels' own helpers), over random shapes, strides, paddings
// and parameters with fixed seeds; small cases whose expected outputs come from TFLite itself
// (LiteRT 2.3.0, OpResolverType.BUILTIN_REF, on single-operator models converted by TensorFlow
// 2.21's TFLiteConverter with full int8 quantization), with parameters computed by op_params.cpp;
// hand-computed cases; and the checks' accumulator and parameter bounds.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "../../cpp/convert/op_params.h"
#include "add_s8.h"
#include "avg_pool2d_s8.h"
#include "concatenation_s8.h"
#include "conv2d_s8.h"
#include "depthwise_conv2d_s8.h"
#include "dequantize_s8.h"
#include "max_pool2d_s8.h"
#include "mean_s8.h"
#include "quantize_s8.h"
#include "relu_s8.h"
#include "softmax_s8.h"
#include "tl_reference.h"

namespace {

using I8 = std::vector<std::int8_t>;
using I32 = std::vector<std::int32_t>;

std::int64_t clamp64(std::int64_t v, std::int64_t lo, std::int64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

// ---- Independent references -----------------------------------------------------------------

// ConvPerChannel / DepthwiseConvPerChannel from their definition: the exact int64 sum over the
// window positions inside the input, + bias, requantized per channel, + offset, clamped.
// `accs` (optional) receives every exact pre-requantization accumulator.
I8 ref_conv(const tlm_conv2d_params& p, const tlm_conv_dims& d, const I32& mult, const I32& shift,
            const I8& x, const I8& f, const std::int32_t* bias, bool depthwise, int dm,
            std::vector<std::int64_t>* accs = nullptr) {
  I8 y(std::size_t(d.batches) * d.output_h * d.output_w * d.output_c);
  for (int b = 0; b < d.batches; ++b)
    for (int oy = 0; oy < d.output_h; ++oy)
      for (int ox = 0; ox < d.output_w; ++ox)
        for (int o = 0; o < d.output_c; ++o) {
          std::int64_t acc = 0;
          for (int fy = 0; fy < d.filter_h; ++fy)
            for (int fx = 0; fx < d.filter_w; ++fx) {
              const std::int64_t iy = std::int64_t(oy) * p.stride_h - p.pad_top + std::int64_t(fy) * p.dilation_h;
              const std::int64_t ix = std::int64_t(ox) * p.stride_w - p.pad_left + std::int64_t(fx) * p.dilation_w;
              if (iy < 0 || iy >= d.input_h || ix < 0 || ix >= d.input_w) continue;
              const std::size_t pix = ((std::size_t(b) * d.input_h + std::size_t(iy)) * d.input_w + std::size_t(ix)) * d.input_c;
              if (depthwise) {
                const int c = o / dm;
                acc += (std::int64_t(x[pix + std::size_t(c)]) + p.input_offset) *
                       f[(std::size_t(fy) * d.filter_w + std::size_t(fx)) * d.output_c + std::size_t(o)];
              } else {
                for (int i = 0; i < d.input_c; ++i)
                  acc += (std::int64_t(x[pix + std::size_t(i)]) + p.input_offset) *
                         f[((std::size_t(o) * d.filter_h + std::size_t(fy)) * d.filter_w + std::size_t(fx)) * d.input_c + std::size_t(i)];
              }
            }
          if (bias) acc += bias[o];
          if (accs) accs->push_back(acc);
          REQUIRE((acc >= INT32_MIN && acc <= INT32_MAX));  // what the checks promise
          const std::int64_t r =
              std::int64_t(tlref::multiply_by_quantized_multiplier(std::int32_t(acc), mult[std::size_t(o)], shift[std::size_t(o)])) +
              p.output_offset;
          y[((std::size_t(b) * d.output_h + std::size_t(oy)) * d.output_w + std::size_t(ox)) * d.output_c + std::size_t(o)] =
              std::int8_t(clamp64(r, p.activation_min, p.activation_max));
        }
  return y;
}

// MaxPool / AveragePool from their definition: the window's positions inside the input; the
// average is sum / count rounded half away from zero (exact, in int64).
I8 ref_pool(bool average, const tlm_pool_params& p, const tlm_pool_dims& d, const I8& x) {
  I8 y(std::size_t(d.batches) * d.output_h * d.output_w * d.channels);
  for (int b = 0; b < d.batches; ++b)
    for (int oy = 0; oy < d.output_h; ++oy)
      for (int ox = 0; ox < d.output_w; ++ox)
        for (int c = 0; c < d.channels; ++c) {
          std::int64_t sum = 0, count = 0, max = -128;
          for (int fy = 0; fy < p.filter_h; ++fy)
            for (int fx = 0; fx < p.filter_w; ++fx) {
              const std::int64_t iy = std::int64_t(oy) * p.stride_h - p.pad_top + fy;
              const std::int64_t ix = std::int64_t(ox) * p.stride_w - p.pad_left + fx;
              if (iy < 0 || iy >= d.input_h || ix < 0 || ix >= d.input_w) continue;
              const std::int64_t v = x[((std::size_t(b) * d.input_h + std::size_t(iy)) * d.input_w + std::size_t(ix)) * d.channels + std::size_t(c)];
              sum += v;
              ++count;
              max = std::max(max, v);
            }
          REQUIRE(count > 0);
          std::int64_t v = max;
          if (average) {
            const std::int64_t mag = (std::abs(sum) * 2 + count) / (2 * count);  // |sum| / count, halves up
            v = sum < 0 ? -mag : mag;
          }
          y[((std::size_t(b) * d.output_h + std::size_t(oy)) * d.output_w + std::size_t(ox)) * d.channels + std::size_t(c)] =
              std::int8_t(clamp64(v, p.activation_min, p.activation_max));
        }
  return y;
}

// QuantizedMeanOrSum: int64 sum of (x - zp) over H and W, requantized, + zp_out, clamped to int8.
I8 ref_mean(const tlm_mean_params& p, const tlm_mean_dims& d, const I8& x) {
  I8 y(std::size_t(d.batches) * d.channels);
  for (int b = 0; b < d.batches; ++b)
    for (int c = 0; c < d.channels; ++c) {
      std::int64_t sum = 0;
      for (int i = 0; i < d.height * d.width; ++i)
        sum += std::int64_t(x[(std::size_t(b) * d.height * d.width + std::size_t(i)) * d.channels + std::size_t(c)]) + p.input_offset;
      REQUIRE((sum >= INT32_MIN && sum <= INT32_MAX));
      const std::int64_t r =
          std::int64_t(tlref::multiply_by_quantized_multiplier(std::int32_t(sum), p.output_multiplier, p.output_shift)) +
          p.output_offset;
      y[std::size_t(b) * d.channels + std::size_t(c)] = std::int8_t(clamp64(r, -128, 127));
    }
  return y;
}

// AddFunc: each input shifted left, rescaled (MultiplyByQuantizedMultiplierSmallerThanOneExp =
// RoundingDivideByPOT(SRDHM(x, m), -shift)), summed, rescaled, offset, clamped.
I8 ref_add(const tlm_add_params& p, const I8& a, const I8& b) {
  I8 y(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::int64_t s1 = (std::int64_t(a[i]) + p.input1_offset) * (std::int64_t(1) << p.left_shift);
    const std::int64_t s2 = (std::int64_t(b[i]) + p.input2_offset) * (std::int64_t(1) << p.left_shift);
    REQUIRE((std::abs(s1) < (std::int64_t(1) << 31) && std::abs(s2) < (std::int64_t(1) << 31)));
    const std::int64_t r1 = tlref::rounding_divide_by_pot(tlref::srdhm(std::int32_t(s1), p.input1_multiplier), -p.input1_shift);
    const std::int64_t r2 = tlref::rounding_divide_by_pot(tlref::srdhm(std::int32_t(s2), p.input2_multiplier), -p.input2_shift);
    const std::int64_t sum = r1 + r2;
    REQUIRE((sum >= INT32_MIN && sum <= INT32_MAX));
    const std::int64_t r =
        std::int64_t(tlref::rounding_divide_by_pot(tlref::srdhm(std::int32_t(sum), p.output_multiplier), -p.output_shift)) +
        p.output_offset;
    y[i] = std::int8_t(clamp64(r, p.activation_min, p.activation_max));
  }
  return y;
}

// ReluX / Requantize: clamp(zp_out + MultiplyByQuantizedMultiplier(x - zp_in)).
I8 ref_requantize(std::int32_t input_offset, std::int32_t output_offset, std::int32_t m, std::int32_t s,
                  std::int32_t lo, std::int32_t hi, const I8& x) {
  I8 y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = std::int8_t(clamp64(std::int64_t(output_offset) +
                                   tlref::multiply_by_quantized_multiplier(x[i] + input_offset, m, s),
                               lo, hi));
  return y;
}

// AffineQuantize: (int)round(x / scale) + zp in float32, clamped (finite, in-range x / scale).
I8 ref_quantize(float scale, std::int32_t zp, const std::vector<float>& x) {
  I8 y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float r = std::round(x[i] / scale);
    const std::int64_t q = std::isnan(r) ? zp : std::int64_t(std::clamp(double(r), -1e12, 1e12)) + zp;
    y[i] = std::int8_t(clamp64(q, -128, 127));
  }
  return y;
}

// Dequantize as TFLite writes it: the product in double, rounded to float.
std::vector<float> ref_dequantize(float scale, std::int32_t zp, const I8& x) {
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = float(double(scale) * double(std::int32_t(x[i]) - zp));
  return y;
}

// ---- Softmax reference: gemmlowp fixed point (fixedpoint.h) from its definitions ------------
// Q-formats as real numbers: a Qm value v stands for v / 2^(31 - m). Products are SRDHM (the
// nearest integer to a * b / 2^31, halves up), rescales toward fewer integer bits saturate,
// toward more integer bits are RoundingDivideByPOT, additions plain (they never overflow here:
// REQUIREd).
namespace sm {

std::int32_t add(std::int64_t a, std::int64_t b) {
  REQUIRE((a + b >= INT32_MIN && a + b <= INT32_MAX));
  return std::int32_t(a + b);
}
std::int32_t mul(std::int32_t a, std::int32_t b) { return tlref::srdhm(a, b); }
std::int32_t times_pot(std::int32_t x, int e) {  // x * 2^e saturated (e > 0) or rounded (e < 0)
  if (e < 0) return tlref::rounding_divide_by_pot(x, -e);
  return std::int32_t(clamp64(std::int64_t(x) * (std::int64_t(1) << e), INT32_MIN, INT32_MAX));
}

// exp(a) for a in [-1/4, 0), Q0: exp(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24), x = a + 1/8.
std::int32_t exp_quarter(std::int32_t a) {
  const std::int32_t c = 1895147668, third = 715827883;
  const std::int32_t x = add(a, 1 << 28);
  const std::int32_t x2 = mul(x, x), x3 = mul(x2, x), x4 = mul(x2, x2);
  const std::int32_t poly = times_pot(add(mul(add(times_pot(x4, -2), x3), third), x2), -1);
  return add(c, mul(c, add(x, poly)));
}

// exp(a) for a <= 0 in Q5 (26 fractional bits), Q0 result.
std::int32_t exp_negative(std::int32_t a) {
  if (a == 0) return INT32_MAX;  // gemmlowp's One() of Q0
  const std::int32_t quarter = 1 << 24;
  const std::int32_t frac = add(a & (quarter - 1), -quarter);  // in [-1/4, 0)
  std::int32_t r = exp_quarter(times_pot(frac, 5));             // Q5 -> Q0
  const std::int64_t rest = std::int64_t(frac) - a;              // a multiple of 1/4, >= 0
  const std::int32_t exp_minus_pow2[7] = {1672461947, 1302514674, 790015084, 290630308,
                                          39332535,   720401,     242};  // exp(-2^k), k = -2..4
  for (int k = 0; k < 7; ++k)
    if ((rest >> (24 + k)) & 1) r = mul(r, exp_minus_pow2[k]);
  return r;
}

// 1 / (1 + a) for a in [0, 1) Q0: Newton-Raphson in Q2 from 48/17 - 32/17 d, d = (1 + a) / 2.
std::int32_t reciprocal(std::int32_t a) {
  const std::int64_t s = std::int64_t(a) + INT32_MAX;
  const std::int32_t d = std::int32_t((s + (s >= 0 ? 1 : -1)) / 2);  // RoundingHalfSum
  std::int32_t x = add(1515870810, mul(d, -1010580540));
  for (int i = 0; i < 3; ++i) x = add(x, times_pot(mul(x, add(1 << 29, -std::int64_t(mul(d, x)))), 2));
  return times_pot(x, 1);  // Q2 -> (exact) Q1 -> Q0
}

}  // namespace sm

I8 ref_softmax(const tlm_softmax_params& p, int rows, int depth, const I8& x) {
  I8 y(x.size());
  for (int r = 0; r < rows; ++r) {
    const std::int8_t* row = x.data() + std::size_t(r) * depth;
    const int max = *std::max_element(row, row + depth);
    std::vector<std::int32_t> e(std::size_t(depth), 0);
    std::int64_t sum = 0;  // Q12
    for (int c = 0; c < depth; ++c) {
      const std::int64_t diff = std::int64_t(row[c]) - max;
      if (diff < p.diff_min) continue;
      const std::int64_t scaled = diff * (std::int64_t(1) << p.input_left_shift);
      REQUIRE(scaled >= INT32_MIN);
      e[std::size_t(c)] = sm::exp_negative(tlref::srdhm(std::int32_t(scaled), p.input_multiplier));
      sum += tlref::rounding_divide_by_pot(e[std::size_t(c)], 12);
    }
    REQUIRE((sum >= (1 << 19) && sum <= INT32_MAX));
    int headroom = 0;  // leading zeros of the 32-bit sum, at least 1
    while (!((sum << headroom) & (std::int64_t(1) << 31))) ++headroom;
    const std::int32_t scale = sm::reciprocal(std::int32_t((sum << headroom) - (std::int64_t(1) << 31)));
    const int exponent = (12 - headroom) + 31 - 8;
    for (int c = 0; c < depth; ++c) {
      const std::int64_t diff = std::int64_t(row[c]) - max;
      std::int64_t out = -128;
      if (diff >= p.diff_min) {
        const std::int32_t prod = tlref::srdhm(scale, e[std::size_t(c)]);
        // TFLite aborts past 31; the exact rounding of prod / 2^exponent is then 0.
        const std::int64_t unsat = exponent <= 31 ? tlref::rounding_divide_by_pot(prod, exponent)
                                                  : (2 * std::int64_t(prod) >= (std::int64_t(1) << exponent) ? 1 : 0);
        out = clamp64(unsat - 128, -128, 127);
      }
      y[std::size_t(r) * depth + std::size_t(c)] = std::int8_t(out);
    }
  }
  return y;
}

// ---- Random parameters ----------------------------------------------------------------------

std::int32_t rand_multiplier(tlref::Rng& rng) {
  return std::int32_t(rng.range(std::int64_t(1) << 30, INT32_MAX));
}
void rand_activation(tlref::Rng& rng, std::int32_t* lo, std::int32_t* hi) {
  if (rng.range(0, 2) == 0) {
    *lo = -128, *hi = 127;
  } else {
    *lo = std::int32_t(rng.range(-128, 20));
    *hi = std::int32_t(rng.range(*lo, 127));
  }
}
I8 rand_i8(tlref::Rng& rng, std::size_t n) {
  I8 v(n);
  for (auto& e : v) e = std::int8_t(rng.range(-128, 127));
  return v;
}

// One spatial axis as TFLite's SAME / VALID padding produces it.
struct Axis {
  int in, filter, stride, dilation, out, pad;
};
Axis rand_axis(tlref::Rng& rng, bool same, bool dilate) {
  for (;;) {
    Axis a;
    a.in = int(rng.range(1, 12));
    a.filter = int(rng.range(1, 5));
    a.stride = int(rng.range(1, 3));
    a.dilation = dilate ? int(rng.range(1, 3)) : 1;
    const int eff = (a.filter - 1) * a.dilation + 1;
    if (!same && eff > a.in) continue;
    a.out = same ? (a.in + a.stride - 1) / a.stride : (a.in - eff) / a.stride + 1;
    a.pad = std::max(0, (a.out - 1) * a.stride + eff - a.in) / 2;
    return a;
  }
}

// Counts outputs strictly inside the clamp range: the random scales must exercise the
// requantization, not only the clamps.
struct Coverage {
  int inner = 0, clamped = 0;
  void add(const I8& y, std::int32_t lo, std::int32_t hi) {
    for (std::int8_t v : y) (v == lo || v == hi ? clamped : inner)++;
  }
};

}  // namespace

// ---- Golden cases from TFLite (LiteRT BUILTIN_REF) --------------------------------------------
// Each helper computes the operator's parameters with op_params.cpp from the TFLite model's
// quantization, runs the kernel, and compares with TFLite's output, and with the reference.

namespace {

void check_golden_conv(tinylearn::QuantParams in, tinylearn::QuantParams out,
                       const std::vector<float>& filter_scales, const tinylearn::Conv2DOptions& o,
                       const tlm_conv_dims& d, const I8& filter, const I32& bias, const I8& x,
                       const I8& want) {
  const tinylearn::Conv2DParams p = tinylearn::conv2d_params(in, filter_scales, out, o, d.input_h,
                                                             d.input_w, d.filter_h, d.filter_w);
  REQUIRE(p.output_h == d.output_h);
  REQUIRE(p.output_w == d.output_w);
  REQUIRE(tlm_conv2d_s8_check(&p.params, &d, p.multipliers.data(), p.shifts.data(), bias.data()) == TLM_OK);
  I8 y(want.size(), 0x55);
  tlm_conv2d_s8(&p.params, &d, p.multipliers.data(), p.shifts.data(), x.data(), filter.data(), bias.data(), y.data());
  CHECK(y == want);
  CHECK(ref_conv(p.params, d, p.multipliers, p.shifts, x, filter, bias.data(), false, 1) == want);
}

void check_golden_depthwise(tinylearn::QuantParams in, tinylearn::QuantParams out,
                            const std::vector<float>& filter_scales,
                            const tinylearn::Conv2DOptions& o, int dm, const tlm_conv_dims& d,
                            const I8& filter, const I32& bias, const I8& x, const I8& want) {
  const tinylearn::DepthwiseConv2DParams p = tinylearn::depthwise_conv2d_params(
      in, filter_scales, out, o, dm, d.input_h, d.input_w, d.filter_h, d.filter_w);
  REQUIRE(p.output_h == d.output_h);
  REQUIRE(p.output_w == d.output_w);
  REQUIRE(tlm_depthwise_conv2d_s8_check(&p.params, &d, p.multipliers.data(), p.shifts.data(), bias.data()) == TLM_OK);
  I8 y(want.size(), 0x55);
  tlm_depthwise_conv2d_s8(&p.params, &d, p.multipliers.data(), p.shifts.data(), x.data(), filter.data(), bias.data(), y.data());
  CHECK(y == want);
  const tlm_conv2d_params cp{p.params.input_offset, p.params.output_offset, p.params.stride_h,
                             p.params.stride_w,     p.params.dilation_h,    p.params.dilation_w,
                             p.params.pad_top,      p.params.pad_left,      p.params.activation_min,
                             p.params.activation_max};
  CHECK(ref_conv(cp, d, p.multipliers, p.shifts, x, filter, bias.data(), true, dm) == want);
}

void check_golden_pool(bool average, tinylearn::QuantParams q, const tinylearn::Pool2DOptions& o,
                       const tlm_pool_dims& d, const I8& x, const I8& want) {
  const tinylearn::Pool2DParams p = tinylearn::pool2d_params(q, q, o, d.input_h, d.input_w);
  REQUIRE(p.output_h == d.output_h);
  REQUIRE(p.output_w == d.output_w);
  I8 y(want.size(), 0x55);
  if (average) {
    REQUIRE(tlm_avg_pool2d_s8_check(&p.params, &d) == TLM_OK);
    tlm_avg_pool2d_s8(&p.params, &d, x.data(), y.data());
  } else {
    REQUIRE(tlm_max_pool2d_s8_check(&p.params, &d) == TLM_OK);
    tlm_max_pool2d_s8(&p.params, &d, x.data(), y.data());
  }
  CHECK(y == want);
  CHECK(ref_pool(average, p.params, d, x) == want);
}

void check_golden_mean(tinylearn::QuantParams in, tinylearn::QuantParams out,
                       const tlm_mean_dims& d, const I8& x, const I8& want) {
  const tlm_mean_params p = tinylearn::mean_params(in, out, std::int64_t(d.height) * d.width);
  REQUIRE(tlm_mean_s8_check(&p, &d) == TLM_OK);
  I8 y(want.size(), 0x55);
  tlm_mean_s8(&p, &d, x.data(), y.data());
  CHECK(y == want);
  CHECK(ref_mean(p, d, x) == want);
}

void check_golden_add(tinylearn::QuantParams in1, tinylearn::QuantParams in2,
                      tinylearn::QuantParams out, tinylearn::FusedActivation act, const I8& a,
                      const I8& b, const I8& want) {
  const tlm_add_params p = tinylearn::add_params(in1, in2, out, act);
  REQUIRE(tlm_add_s8_check(&p, std::int32_t(a.size())) == TLM_OK);
  I8 y(want.size(), 0x55);
  tlm_add_s8(&p, std::int32_t(a.size()), a.data(), b.data(), y.data());
  CHECK(y == want);
  CHECK(ref_add(p, a, b) == want);
}

void check_golden_softmax(float input_scale, int rows, int depth, const I8& x, const I8& want) {
  const tlm_softmax_params p = tinylearn::softmax_params(input_scale);
  const tlm_softmax_dims d{rows, depth};
  REQUIRE(tlm_softmax_s8_check(&p, &d) == TLM_OK);
  I8 y(want.size(), 0x55);
  tlm_softmax_s8(&p, &d, x.data(), y.data());
  CHECK(y == want);
  CHECK(ref_softmax(p, rows, depth, x) == want);
}

void check_golden_relu(tinylearn::QuantParams in, tinylearn::QuantParams out,
                       tinylearn::FusedActivation act, const I8& x, const I8& want) {
  const tlm_relu_params p = tinylearn::relu_params(in, out, act);
  REQUIRE(tlm_relu_s8_check(&p, std::int32_t(x.size())) == TLM_OK);
  I8 y(want.size(), 0x55);
  tlm_relu_s8(&p, std::int32_t(x.size()), x.data(), y.data());
  CHECK(y == want);
  CHECK(ref_requantize(p.input_offset, p.output_offset, p.output_multiplier, p.output_shift,
                       p.activation_min, p.activation_max, x) == want);
}

void check_golden_quantize(tinylearn::QuantParams q, const std::vector<float>& x, const I8& want) {
  const tlm_quantize_params p = tinylearn::quantize_params(q);
  REQUIRE(tlm_quantize_f32_s8_check(&p, std::int32_t(x.size())) == TLM_OK);
  I8 y(want.size(), 0x55);
  tlm_quantize_f32_s8(&p, std::int32_t(x.size()), x.data(), y.data());
  CHECK(y == want);
  CHECK(ref_quantize(q.scale, q.zero_point, x) == want);
}

void check_golden_dequantize(tinylearn::QuantParams q, const I8& x, const std::vector<float>& want) {
  const tlm_dequantize_params p = tinylearn::dequantize_params(q);
  REQUIRE(tlm_dequantize_s8_check(&p, std::int32_t(x.size())) == TLM_OK);
  std::vector<float> y(want.size(), -1.0f);
  tlm_dequantize_s8(&p, std::int32_t(x.size()), x.data(), y.data());
  for (std::size_t i = 0; i < y.size(); ++i) {
    CAPTURE(i);
    CHECK(std::memcmp(&y[i], &want[i], 4) == 0);  // bit for bit
  }
  CHECK(ref_dequantize(q.scale, q.zero_point, x) == want);
}

}  // namespace

// conv 3x2, stride (2, 1), same, relu: Conv2D in (1, 5, 4, 2) filter (3, 3, 2, 2) strides (2, 1) dilation 1 same relu; output (1, 3, 4, 3)
TEST_CASE("LiteRT golden: conv 3x2, stride (2, 1), same, relu") {
  const tinylearn::QuantParams in{0x1.232cd00000000p-5f, -13}, out{0x1.db55600000000p-7f, -128};
  const std::vector<float> filter_scales{0x1.ba85ec0000000p-9f, 0x1.c9ea140000000p-9f, 0x1.9716e20000000p-9f};
  const std::vector<std::int8_t> filter{-72, -35, 127, -25, 42, -115, -64, 110, -73, 111, 118, -41, -124, 112, -124, -47, 86, 127, 64, 21, -61, -78, 92, -19, 40, -120, 89, 98, 6, -15, -52, -45, 61, 92, 127, -1};
  const std::vector<std::int32_t> bias{-323, -213, -106};
  const std::vector<std::int8_t> x{-63, -98, -45, 41, -46, 62, 41, 99, -101, 58, 100, 63, -37, 2, 92, -69, -66, -20, 47, -10, -90, -126, -83, -79, 76, -61, -90, -43, 18, -101, -106, -54, -117, 5, -52, 103, -20, 56, -77, 117};
  const std::vector<std::int8_t> want{127, -128, -10, -128, -128, -67, 10, 71, -97, -128, 14, -128, -128, -128, -128, -128, -74, -123, -117, -128, -128, -120, -128, -113, -128, -128, -128, -83, 32, -128, -128, -74, -128, -128, 24, -128};
  tinylearn::Conv2DOptions o;
  o.stride_h = 2; o.stride_w = 1; o.dilation_h = o.dilation_w = 1;
  o.padding = tinylearn::Padding::Same; o.activation = tinylearn::FusedActivation::Relu;
  check_golden_conv(in, out, filter_scales, o, {1, 5, 4, 2, 3, 2, 3, 4, 3}, filter, bias, x, want);
}

// conv 2x2, dilation 2, valid, 2 batches: Conv2D in (2, 5, 5, 3) filter (2, 2, 2, 3) strides (1, 1) dilation 2 valid linear; output (2, 3, 3, 2)
TEST_CASE("LiteRT golden: conv 2x2, dilation 2, valid, 2 batches") {
  const tinylearn::QuantParams in{0x1.3727e00000000p-5f, -4}, out{0x1.f47c8a0000000p-6f, 4};
  const std::vector<float> filter_scales{0x1.ee91e60000000p-9f, 0x1.fda1080000000p-9f};
  const std::vector<std::int8_t> filter{-110, 88, 38, 6, -81, 3, 44, 44, 47, -127, -105, 30, 96, -48, -64, -12, -93, -28, -49, -127, -72, 60, -25, 89};
  const std::vector<std::int32_t> bias{-76, -405};
  const std::vector<std::int8_t> x{3, 114, -104, 83, -73, -57, -18, -53, -38, -68, 42, -88, 119, -56, 72, -93, 96, -107, -27, 35, 84, 28, 83, 0, -43, -21, -8, -71, -90, 10, -101, 115, -78, -41, -80, -62, -48, -90, 120, -80, -86, -23, -14, 49, -65, 44, 16, 114, -57, -18, 66, -34, 92, -43, 46, -78, -94, -44, -39, -1, -63, -13, -99, 46, -71, 1, -32, 67, -9, 55, -27, -121, -71, -54, 59, -21, 55, 98, 118, 26, 109, -90, 15, 36, 27, -69, 28, -116, 124, -57, -126, -99, 110, 73, -120, -66, 117, -13, -52, 34, -60, 31, 68, -55, 94, 102, -92, -41, 68, 38, -93, 114, -18, -90, 85, 36, 52, 107, -61, 14, 59, 59, 36, 89, -69, 38, -60, -58, -20, -92, -100, 79, -25, 105, 93, -81, -63, -66, 15, 121, -83, -2, 15, 123, -42, -4, -18, 64, -124, 49};
  const std::vector<std::int8_t> want{123, 63, -53, 125, -19, 8, 46, -128, 48, -53, 101, -8, 69, 10, -33, 61, 73, -73, -34, -19, -62, 73, -23, -41, 127, -128, 54, 127, -102, 127, -121, 127, -11, -48, 5, 104};
  tinylearn::Conv2DOptions o;
  o.stride_h = 1; o.stride_w = 1; o.dilation_h = o.dilation_w = 2;
  o.padding = tinylearn::Padding::Valid; o.activation = tinylearn::FusedActivation::None;
  check_golden_conv(in, out, filter_scales, o, {2, 5, 5, 3, 2, 2, 3, 3, 2}, filter, bias, x, want);
}

// depthwise 3x3, multiplier 2, same, relu6: DepthwiseConv2D in (1, 4, 5, 2) filter (1, 3, 3, 4) strides (1, 1) dilation 1 same relu6; output (1, 4, 5, 4)
TEST_CASE("LiteRT golden: depthwise 3x3, multiplier 2, same, relu6") {
  const tinylearn::QuantParams in{0x1.30877a0000000p-5f, 16}, out{0x1.43be720000000p-7f, -128};
  const std::vector<float> filter_scales{0x1.750e5c0000000p-9f, 0x1.9d9c540000000p-9f, 0x1.7176c40000000p-9f, 0x1.86b1560000000p-9f};
  const std::vector<std::int8_t> filter{-120, 49, -77, 21, -23, -105, -26, 61, 103, -91, -102, -28, -93, -17, -95, 59, 107, 84, -2, 33, -5, 127, 117, 26, -3, -61, 43, -127, -7, 45, -123, -8, 127, 28, -127, -46};
  const std::vector<std::int32_t> bias{-254, 47, 49, -550};
  const std::vector<std::int8_t> x{-14, 26, 38, -24, -96, -88, 127, 126, 52, 31, -14, 3, -69, 63, -66, 116, 99, -62, 43, -17, 106, -104, -24, 63, -113, -62, 9, -39, -62, 27, -39, -40, 9, 1, -47, -98, -68, -36, -99, -71};
  const std::vector<std::int8_t> want{-128, -128, -128, -128, -128, -128, -128, -128, -128, -31, 48, -128, 127, 127, 127, -128, -128, -128, -128, 58, -128, -128, 65, -119, -128, -128, 113, 118, -21, -77, -128, -128, 100, -128, -128, 50, -128, -128, -128, -84, -117, 0, -21, -128, -128, -128, -67, -81, -127, -128, -11, 14, -39, -128, 75, -10, -128, -128, 90, -126, -128, -128, -128, -128, -128, 23, -43, -128, -116, -128, -128, -128, -77, -128, -52, -128, -128, -128, -31, -128};
  tinylearn::Conv2DOptions o;
  o.stride_h = 1; o.stride_w = 1; o.dilation_h = o.dilation_w = 1;
  o.padding = tinylearn::Padding::Same; o.activation = tinylearn::FusedActivation::Relu6;
  check_golden_depthwise(in, out, filter_scales, o, 2, {1, 4, 5, 2, 3, 3, 4, 5, 4}, filter, bias, x, want);
}

// depthwise 2x3, stride 2, valid: DepthwiseConv2D in (1, 5, 7, 3) filter (1, 2, 3, 3) strides (2, 2) dilation 1 valid linear; output (1, 2, 3, 3)
TEST_CASE("LiteRT golden: depthwise 2x3, stride 2, valid") {
  const tinylearn::QuantParams in{0x1.2e12460000000p-5f, -13}, out{0x1.9bca140000000p-6f, 53};
  const std::vector<float> filter_scales{0x1.e855ac0000000p-9f, 0x1.fbe5ac0000000p-9f, 0x1.e79da40000000p-9f};
  const std::vector<std::int8_t> filter{-41, -84, 26, -127, 74, -119, -95, -50, 119, 74, 17, 7, -51, 127, -127, -116, -24, -118};
  const std::vector<std::int32_t> bias{361, -840, -602};
  const std::vector<std::int8_t> x{-63, 93, -59, -88, -10, -51, 80, -44, 63, -78, 64, -5, -101, -22, -44, 106, 103, -45, -32, -46, 84, 127, 5, -66, 24, 75, 28, -46, -28, 66, -13, -53, 117, 44, 10, -20, 59, -120, -104, -63, 72, 91, -92, 32, 23, -62, -72, 122, 103, 98, 84, 64, 57, 119, -11, -113, -38, -1, -117, 109, -56, -41, -103, -83, -42, -35, 121, -57, -79, -33, -49, -29, -99, 15, 40, -111, -88, 103, -60, 101, 12, -37, 10, -14, -96, -18, 3, 33, -93, -95, -58, 47, 58, -100, 77, 45, -29, 1, 116, 26, 12, -58, 20, 124, -118};
  const std::vector<std::int8_t> want{127, 75, 36, 75, 65, -47, 37, 24, 125, -7, -59, 85, 53, 80, -128, 57, 127, -104};
  tinylearn::Conv2DOptions o;
  o.stride_h = 2; o.stride_w = 2; o.dilation_h = o.dilation_w = 1;
  o.padding = tinylearn::Padding::Valid; o.activation = tinylearn::FusedActivation::None;
  check_golden_depthwise(in, out, filter_scales, o, 1, {1, 5, 7, 3, 2, 3, 2, 3, 3}, filter, bias, x, want);
}

// max pool 3x3, stride 2, same: MaxPooling2D in (1, 5, 5, 2) pool (3, 3) strides (2, 2) same; output (1, 3, 3, 2)
TEST_CASE("LiteRT golden: max pool 3x3, stride 2, same") {
  const tinylearn::QuantParams q{0x1.8dea7a0000000p-5f, 8};
  const std::vector<std::int8_t> x{82, -102, 99, 117, -99, 87, 99, 43, 84, -82, 71, 70, -106, -29, -101, 93, 70, -63, -10, -15, 34, 80, 106, -36, 1, 37, 74, 19, -109, -113, 34, -70, 61, 124, -47, 71, -51, 71, 86, 29, -23, 121, 42, -86, 58, -39, 1, 73, 97, 25};
  const std::vector<std::int8_t> want{99, 117, 99, 117, 99, 43, 106, 124, 106, 124, 86, 71, 61, 124, 61, 124, 97, 73};
  tinylearn::Pool2DOptions o;
  o.filter_h = 3; o.filter_w = 3; o.stride_h = 2; o.stride_w = 2;
  o.padding = tinylearn::Padding::Same;
  check_golden_pool(false, q, o, {1, 5, 5, 2, 3, 3}, x, want);
}

// average pool 2x3, stride (2, 1), same: AveragePooling2D in (1, 5, 4, 2) pool (2, 3) strides (2, 1) same; output (1, 3, 4, 2)
TEST_CASE("LiteRT golden: average pool 2x3, stride (2, 1), same") {
  const tinylearn::QuantParams q{0x1.ab02d60000000p-5f, 24};
  const std::vector<std::int8_t> x{42, -113, 25, -107, -40, -23, -79, -84, -11, 17, 119, -10, -15, 108, 22, -120, -95, -93, -72, 82, 100, -50, -46, -43, -123, -29, 120, -39, 64, -15, -30, 84, 6, -14, -52, -81, 36, 5, 56, -47};
  const std::vector<std::int8_t> want{44, -53, 20, -21, 5, -39, -28, -30, -43, -20, -1, -24, 23, 3, 22, -6, -23, -48, -3, -30, 13, -41, 46, -21};
  tinylearn::Pool2DOptions o;
  o.filter_h = 2; o.filter_w = 3; o.stride_h = 2; o.stride_w = 1;
  o.padding = tinylearn::Padding::Same;
  check_golden_pool(true, q, o, {1, 5, 4, 2, 3, 4}, x, want);
}

// average pool 3x3, stride 3, valid: AveragePooling2D in (2, 6, 7, 1) pool (3, 3) strides (3, 3) valid; output (2, 2, 2, 1)
TEST_CASE("LiteRT golden: average pool 3x3, stride 3, valid") {
  const tinylearn::QuantParams q{0x1.8418a80000000p-5f, 6};
  const std::vector<std::int8_t> x{40, 86, 17, -1, 84, 82, -107, 126, 125, -118, -108, 70, -35, -17, -114, -54, 22, -91, -105, 64, 55, 85, -115, 43, 104, 3, -98, -118, 39, -94, -80, -23, -42, -37, 10, -90, -101, 17, 48, 17, -69, 10, -114, 13, 2, 74, -56, 24, -88, 60, 21, -63, 115, -42, -128, 59, -14, 55, -65, 1, 51, -97, 27, 0, 118, -83, 28, 4, -98, 126, 79, -86, -11, -51, -95, -60, -5, 20, -120, 54, 10, -65, 107, -66};
  const std::vector<std::int8_t> want{14, -4, -33, -11, -12, -6, -3, -24};
  tinylearn::Pool2DOptions o;
  o.filter_h = 3; o.filter_w = 3; o.stride_h = 3; o.stride_w = 3;
  o.padding = tinylearn::Padding::Valid;
  check_golden_pool(true, q, o, {2, 6, 7, 1, 2, 2}, x, want);
}

// mean over 3x5, 2 batches: GlobalAveragePooling2D(keepdims=False) in (2, 3, 5, 3) -> MEAN; output (2, 3)
TEST_CASE("LiteRT golden: mean over 3x5, 2 batches") {
  const tinylearn::QuantParams in{0x1.0033040000000p-4f, -35}, out{0x1.6f21980000000p-7f, -48};
  const std::vector<std::int8_t> x{-96, 21, 89, 107, 58, -47, -30, -83, 46, -50, 56, 40, 51, -87, 34, -107, 3, -56, 77, -55, -121, -19, -128, -56, -76, 112, -38, -99, -128, -80, -2, -65, -99, -76, -20, -53, 92, 106, 96, 81, 41, -48, -29, 101, -28, -20, 96, -111, 72, -24, -4, 44, 64, 32, 20, -67, 77, -28, 113, -6, -98, -103, -57, 12, -100, -33, 10, 92, 61, 2, 60, 12, -34, -67, -50, 74, -74, -102, -100, 114, -48, 96, 66, 14, 108, -11, 114, -30, -87, -96};
  const std::vector<std::int8_t> want{82, 122, 28, 127, 127, 74};
  check_golden_mean(in, out, {2, 3, 5, 3}, x, want);
}

// mean over 7x9, keepdims: GlobalAveragePooling2D(keepdims=True) in (1, 7, 9, 2) -> MEAN; output (1, 1, 1, 2)
TEST_CASE("LiteRT golden: mean over 7x9, keepdims") {
  const tinylearn::QuantParams in{0x1.3316d60000000p-4f, -17}, out{0x1.e76d8a0000000p-8f, -126};
  const std::vector<std::int8_t> x{48, 112, -33, 125, -126, -109, 74, 116, 19, -118, 35, -70, -78, 30, -19, 100, 17, -120, 126, 64, 82, -36, -20, -126, 7, -91, 71, 31, -116, 44, -120, -116, -109, -14, 93, -76, 5, -127, -76, -39, 123, -25, 19, -42, 63, -39, -48, 104, -104, 72, -56, -71, -115, 83, -73, 11, 88, 98, -37, -2, -72, 120, -8, -85, 105, -17, -60, -74, -54, 80, 56, -35, -21, -21, -11, -69, -87, 107, -8, -85, -6, 31, 127, 104, 54, 58, -2, 17, -19, 55, 77, -107, -93, -23, 8, 14, -89, 39, 105, 13, -121, -125, 65, -55, 47, -70, 16, 44, 118, 85, -78, -79, 103, -64, -18, 71, -126, -113, -30, 8, 74, 25, -16, 96, 103, -64};
  const std::vector<std::int8_t> want{26, -10};
  check_golden_mean(in, out, {1, 7, 9, 2}, x, want);
}

// add: Add of two (1, 2, 3, 2) inputs
TEST_CASE("LiteRT golden: add") {
  const tinylearn::QuantParams in1{0x1.e7dccc0000000p-5f, -9}, in2{0x1.f868b00000000p-7f, -19}, out{0x1.0805460000000p-4f, -6};
  const std::vector<std::int8_t> a{-30, 124, 33, -54, -48, 2, -30, 86, 57, 6, -50, 48};
  const std::vector<std::int8_t> b{-83, -113, 72, -71, 98, -112, 60, -50, 14, -82, -109, 57};
  const std::vector<std::int8_t> want{-41, 94, 55, -60, -14, -18, -7, 74, 63, -7, -65, 65};
  check_golden_add(in1, in2, out, tinylearn::FusedActivation::None, a, b, want);
}

// add + relu: Add + ReLU (fused) of two (1, 3, 2, 2) inputs
TEST_CASE("LiteRT golden: add + relu") {
  const tinylearn::QuantParams in1{0x1.1ba3140000000p-4f, 11}, in2{0x1.2930b80000000p-6f, -20}, out{0x1.2217100000000p-5f, -128};
  const std::vector<std::int8_t> a{0, 29, 63, -15, 13, -1, -61, 64, 90, 54, 80, -101};
  const std::vector<std::int8_t> b{54, -106, -120, -96, -4, -13, -37, 104, -21, -52, -35, 72};
  const std::vector<std::int8_t> want{-112, -128, -78, -128, -116, -128, -128, 39, 26, -60, -1, -128};
  check_golden_add(in1, in2, out, tinylearn::FusedActivation::Relu, a, b, want);
}

// softmax over 7: Softmax over 7, 2 rows (the last row constant), input scale from a spread of 2.0
TEST_CASE("LiteRT golden: softmax over 7") {
  const float input_scale = 0x1.623b700000000p-5f;
  const std::vector<std::int8_t> x{80, -70, 1, -54, -67, -33, -107, -8, -8, -8, -8, -8, -8, -8};
  const std::vector<std::int8_t> want{117, -128, -120, -127, -128, -126, -128, -91, -91, -91, -91, -91, -91, -91};
  check_golden_softmax(input_scale, 2, 7, x, want);
}

// softmax over 10, sharp: Softmax over 10, 2 rows (the last row constant), input scale from a spread of 30.0
TEST_CASE("LiteRT golden: softmax over 10, sharp") {
  const float input_scale = 0x1.522e7e0000000p-1f;
  const std::vector<std::int8_t> x{71, 111, 98, 49, -36, 118, -44, 43, -85, 112, 95, 95, 95, 95, 95, 95, 95, 95, 95, 95};
  const std::vector<std::int8_t> want{-128, -126, -128, -128, -128, 121, -128, -128, -128, -123, -102, -102, -102, -102, -102, -102, -102, -102, -102, -102};
  check_golden_softmax(input_scale, 2, 10, x, want);
}

// relu: standalone RELU over 16 values
TEST_CASE("LiteRT golden: relu") {
  const tinylearn::QuantParams in{0x1.8be3340000000p-4f, -24}, out{0x1.d42a260000000p-5f, -128};
  const std::vector<std::int8_t> x{5, -96, -5, 94, -64, 116, 19, 45, -33, 68, -108, -110, -94, -37, 75, 84};
  const std::vector<std::int8_t> want{-79, -128, -96, 72, -128, 109, -55, -11, -128, 28, -128, -128, -128, -128, 39, 55};
  check_golden_relu(in, out, tinylearn::FusedActivation::Relu, x, want);
}

// relu6: standalone RELU6 over 16 values
TEST_CASE("LiteRT golden: relu6") {
  const tinylearn::QuantParams in{0x1.3c18980000000p-4f, -17}, out{0x1.8181820000000p-6f, -128};
  const std::vector<std::int8_t> x{23, 111, -49, -82, 98, -23, 107, -127, -121, -37, -100, 104, -126, 119, 121, 1};
  const std::vector<std::int8_t> want{3, 127, -128, -128, 127, -128, 127, -128, -128, -128, -128, 127, -128, 127, 127, -69};
  check_golden_relu(in, out, tinylearn::FusedActivation::Relu6, x, want);
}

// quantize and dequantize: a float model's QUANTIZE (float32 -> int8) and DEQUANTIZE (int8 -> float32)
TEST_CASE("LiteRT golden: quantize and dequantize") {
  const tinylearn::QuantParams qin{0x1.bfb68e0000000p-5f, -4}, qout{0x1.ca8df80000000p-6f, -128};
  const std::vector<float> x{0x1.bfb68e0000000p-6f, -0x1.17d2180000000p-3f, 0x0.0p+0f, -0x1.d2b8c20000000p-1f, -0x1.16c8200000000p-1f, -0x1.25d99c0000000p+8f, 0x1.433baa0000000p-2f, 0x1.5c45ca0000000p-8f, 0x1.f2960c0000000p-4f, -0x1.7136ce0000000p+7f, 0x1.a15d900000000p-2f, -0x1.06dca40000000p+0f};
  const std::vector<std::int8_t> want_q{-3, -7, -4, -21, -14, -128, 2, -4, -2, -128, 3, -23};
  const std::vector<std::int8_t> y{-126, -128, -128, -128, -128, -128, -116, -128, -124, -128, -114, -128};
  const std::vector<float> want_dq{0x1.ca8df80000000p-5f, 0x0.0p+0f, 0x0.0p+0f, 0x0.0p+0f, 0x0.0p+0f, 0x0.0p+0f, 0x1.57ea7a0000000p-2f, 0x0.0p+0f, 0x1.ca8df80000000p-4f, 0x0.0p+0f, 0x1.913c380000000p-2f, 0x0.0p+0f};
  check_golden_quantize(qin, x, want_q);
  check_golden_dequantize(qout, y, want_dq);
}

// ---- Random shapes and parameters against the references --------------------------------------

TEST_CASE("tlm_conv2d_s8 and tlm_depthwise_conv2d_s8 match the int64 reference over random shapes and params") {
  tlref::Rng rng(2001);
  Coverage cov;
  for (int trial = 0; trial < 500; ++trial) {
    const bool depthwise = trial % 2 == 1;
    const bool same = rng.range(0, 1) == 1;
    const Axis h = rand_axis(rng, same, trial % 3 == 0), w = rand_axis(rng, same, trial % 3 == 0);
    const int batches = int(rng.range(1, 2));
    const int in_c = int(rng.range(1, trial % 25 == 0 ? 40 : 6));
    const int dm = depthwise ? int(rng.range(1, 3)) : 1;
    const int out_c = depthwise ? in_c * dm : int(rng.range(1, 6));
    const tlm_conv_dims d{batches, h.in, w.in, in_c, h.filter, w.filter, h.out, w.out, out_c};
    tlm_conv2d_params p;
    p.input_offset = std::int32_t(rng.range(-127, 128));
    p.output_offset = std::int32_t(rng.range(-128, 127));
    p.stride_h = h.stride, p.stride_w = w.stride;
    p.dilation_h = h.dilation, p.dilation_w = w.dilation;
    p.pad_top = h.pad, p.pad_left = w.pad;
    rand_activation(rng, &p.activation_min, &p.activation_max);
    const std::size_t oc = static_cast<std::size_t>(out_c);
    I32 mult(oc), shift(oc), bias(oc);
    for (int o = 0; o < out_c; ++o) {
      mult[std::size_t(o)] = rand_multiplier(rng);
      // Realistic: the output spans int8 for depth ~ filter window x channels; sometimes anything.
      shift[std::size_t(o)] = trial % 7 == 0 ? std::int32_t(rng.range(-31, 30)) : std::int32_t(rng.range(-14, -6));
      bias[std::size_t(o)] = std::int32_t(rng.range(-30000, 30000));
    }
    const I8 x = rand_i8(rng, std::size_t(batches) * h.in * w.in * in_c);
    const I8 f = rand_i8(rng, depthwise ? std::size_t(h.filter) * w.filter * out_c
                                        : std::size_t(out_c) * h.filter * w.filter * in_c);
    const bool use_bias = trial % 5 != 2;
    const std::int32_t* b = use_bias ? bias.data() : nullptr;
    I8 y(std::size_t(batches) * h.out * w.out * out_c, 0x55);
    CAPTURE(trial);
    if (depthwise) {
      const tlm_depthwise_conv2d_params dp{p.input_offset, p.output_offset, p.stride_h, p.stride_w,
                                           p.dilation_h,   p.dilation_w,    p.pad_top,  p.pad_left,
                                           dm,             p.activation_min, p.activation_max};
      REQUIRE(tlm_depthwise_conv2d_s8_check(&dp, &d, mult.data(), shift.data(), b) == TLM_OK);
      tlm_depthwise_conv2d_s8(&dp, &d, mult.data(), shift.data(), x.data(), f.data(), b, y.data());
    } else {
      REQUIRE(tlm_conv2d_s8_check(&p, &d, mult.data(), shift.data(), b) == TLM_OK);
      tlm_conv2d_s8(&p, &d, mult.data(), shift.data(), x.data(), f.data(), b, y.data());
    }
    REQUIRE(y == ref_conv(p, d, mult, shift, x, f, b, depthwise, dm));
    cov.add(y, p.activation_min, p.activation_max);
  }
  CHECK(cov.inner > 3000);
  CHECK(cov.clamped > 300);
}

TEST_CASE("tlm_max_pool2d_s8 and tlm_avg_pool2d_s8 match the reference over random windows") {
  tlref::Rng rng(2002);
  int rounded_halves = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const bool average = trial % 2 == 0, same = rng.range(0, 1) == 1;
    const Axis h = rand_axis(rng, same, false), w = rand_axis(rng, same, false);
    const tlm_pool_dims d{int(rng.range(1, 2)), h.in, w.in, int(rng.range(1, 5)), h.out, w.out};
    tlm_pool_params p{h.stride, w.stride, h.filter, w.filter, h.pad, w.pad, -128, 127};
    rand_activation(rng, &p.activation_min, &p.activation_max);
    const I8 x = rand_i8(rng, std::size_t(d.batches) * d.input_h * d.input_w * d.channels);
    I8 y(std::size_t(d.batches) * d.output_h * d.output_w * d.channels, 0x55);
    CAPTURE(trial);
    if (average) {
      REQUIRE(tlm_avg_pool2d_s8_check(&p, &d) == TLM_OK);
      tlm_avg_pool2d_s8(&p, &d, x.data(), y.data());
    } else {
      REQUIRE(tlm_max_pool2d_s8_check(&p, &d) == TLM_OK);
      tlm_max_pool2d_s8(&p, &d, x.data(), y.data());
    }
    REQUIRE(y == ref_pool(average, p, d, x));
    if (average && h.filter * w.filter % 2 == 0) ++rounded_halves;
  }
  CHECK(rounded_halves > 50);
}

TEST_CASE("tlm_mean_s8 matches the reference, with mean_params' 1 / (h * w) folded in") {
  tlref::Rng rng(2003);
  for (int trial = 0; trial < 300; ++trial) {
    const tlm_mean_dims d{int(rng.range(1, 3)), int(rng.range(1, 20)), int(rng.range(1, 20)),
                          int(rng.range(1, 6))};
    const tinylearn::QuantParams in{float(rng.uniform(0.005, 0.1)), std::int32_t(rng.range(-128, 127))};
    const tinylearn::QuantParams out{float(in.scale * rng.uniform(0.3, 3)), std::int32_t(rng.range(-128, 127))};
    const tlm_mean_params p = tinylearn::mean_params(in, out, std::int64_t(d.height) * d.width);
    REQUIRE(tlm_mean_s8_check(&p, &d) == TLM_OK);
    const I8 x = rand_i8(rng, std::size_t(d.batches) * d.height * d.width * d.channels);
    I8 y(std::size_t(d.batches) * d.channels, 0x55);
    tlm_mean_s8(&p, &d, x.data(), y.data());
    CAPTURE(trial);
    REQUIRE(y == ref_mean(p, d, x));
    // And it is the mean: within a step of round(mean of the real values / output scale).
    for (int b = 0; b < d.batches; ++b)
      for (int c = 0; c < d.channels; ++c) {
        double s = 0;
        for (int i = 0; i < d.height * d.width; ++i)
          s += double(x[(std::size_t(b) * d.height * d.width + std::size_t(i)) * d.channels + std::size_t(c)]) - in.zero_point;
        const double want = std::clamp(s / (d.height * d.width) * in.scale / out.scale + out.zero_point, -128.0, 127.0);
        CHECK(std::fabs(y[std::size_t(b) * d.channels + std::size_t(c)] - want) <= 1.0);
      }
  }
}

TEST_CASE("tlm_add_s8 matches the reference over random params and is exact in place") {
  tlref::Rng rng(2004);
  for (int trial = 0; trial < 400; ++trial) {
    const tinylearn::QuantParams q1{float(rng.uniform(0.001, 0.5)), std::int32_t(rng.range(-128, 127))};
    const tinylearn::QuantParams q2{float(rng.uniform(0.001, 0.5)), std::int32_t(rng.range(-128, 127))};
    const tinylearn::QuantParams qo{float((q1.scale + q2.scale) * rng.uniform(0.3, 1.5)), std::int32_t(rng.range(-128, 127))};
    const auto act = trial % 3 == 0 ? tinylearn::FusedActivation::Relu : tinylearn::FusedActivation::None;
    const tlm_add_params p = tinylearn::add_params(q1, q2, qo, act);
    const int n = int(rng.range(1, 64));
    REQUIRE(tlm_add_s8_check(&p, n) == TLM_OK);
    const I8 a = rand_i8(rng, std::size_t(n)), b = rand_i8(rng, std::size_t(n));
    const I8 want = ref_add(p, a, b);
    I8 y(std::size_t(n), 0x55);
    tlm_add_s8(&p, n, a.data(), b.data(), y.data());
    CAPTURE(trial);
    REQUIRE(y == want);
    I8 in_place = a;  // output over input1
    tlm_add_s8(&p, n, in_place.data(), b.data(), in_place.data());
    REQUIRE(in_place == want);
    in_place = b;  // output over input2
    tlm_add_s8(&p, n, a.data(), in_place.data(), in_place.data());
    REQUIRE(in_place == want);
    // Close to the real sum.
    for (int i = 0; i < n; ++i) {
      double real = q1.scale * (a[std::size_t(i)] - q1.zero_point) + q2.scale * (b[std::size_t(i)] - q2.zero_point);
      double qv = std::clamp(std::round(real / qo.scale) + qo.zero_point, double(p.activation_min), double(p.activation_max));
      CHECK(std::fabs(y[std::size_t(i)] - qv) <= 1.0);
    }
  }
}

TEST_CASE("tlm_softmax_s8 matches the fixed-point reference and approximates softmax") {
  tlref::Rng rng(2005);
  double worst = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int rows = int(rng.range(1, 4));
    const int depth = trial % 40 == 0 ? int(rng.range(500, TLM_SOFTMAX_MAX_DEPTH)) : int(rng.range(1, 64));
    const float scale = float(std::exp(rng.uniform(std::log(0.001), std::log(1.0))));
    const float beta = trial % 4 == 0 ? float(rng.uniform(0.2, 3)) : 1.0f;
    const tlm_softmax_params p = tinylearn::softmax_params(scale, beta);
    const tlm_softmax_dims d{rows, depth};
    REQUIRE(tlm_softmax_s8_check(&p, &d) == TLM_OK);
    I8 x = rand_i8(rng, std::size_t(rows) * depth);
    if (trial % 5 == 0) std::fill(x.begin(), x.begin() + depth, x[0]);  // ties
    I8 y(x.size(), 0x55);
    tlm_softmax_s8(&p, &d, x.data(), y.data());
    CAPTURE(trial);
    REQUIRE(y == ref_softmax(p, rows, depth, x));
    for (int r = 0; r < rows; ++r) {
      const std::int8_t* row = x.data() + std::size_t(r) * depth;
      const int max = *std::max_element(row, row + depth);
      double sum = 0;
      for (int c = 0; c < depth; ++c) sum += std::exp(double(beta) * scale * (row[c] - max));
      for (int c = 0; c < depth; ++c) {
        const double prob = std::exp(double(beta) * scale * (row[c] - max)) / sum;
        worst = std::max(worst, std::fabs((y[std::size_t(r) * depth + std::size_t(c)] + 128) / 256.0 - std::min(prob, 255.0 / 256)));
      }
    }
  }
  CHECK(worst <= 1.5 / 256);  // a step and a half of 1/256
}

TEST_CASE("tlm_relu_s8 and tlm_requantize_s8 match the reference over random params, in place too") {
  tlref::Rng rng(2006);
  for (int trial = 0; trial < 400; ++trial) {
    const int n = int(rng.range(1, 100));
    const I8 x = rand_i8(rng, std::size_t(n));
    const tinylearn::QuantParams in{float(rng.uniform(0.01, 0.2)), std::int32_t(rng.range(-128, 127))};
    const tinylearn::QuantParams out{float(in.scale * rng.uniform(0.2, 2)), std::int32_t(rng.range(-128, 0))};
    CAPTURE(trial);
    const auto act = trial % 3 == 0 ? tinylearn::FusedActivation::Relu
                     : trial % 3 == 1 ? tinylearn::FusedActivation::Relu6
                                      : tinylearn::FusedActivation::ReluN1To1;
    const tlm_relu_params rp = tinylearn::relu_params(in, out, act);
    REQUIRE(tlm_relu_s8_check(&rp, n) == TLM_OK);
    const I8 want = ref_requantize(rp.input_offset, rp.output_offset, rp.output_multiplier,
                                   rp.output_shift, rp.activation_min, rp.activation_max, x);
    I8 y(std::size_t(n), 0x55);
    tlm_relu_s8(&rp, n, x.data(), y.data());
    REQUIRE(y == want);
    I8 in_place = x;
    tlm_relu_s8(&rp, n, in_place.data(), in_place.data());
    REQUIRE(in_place == want);

    const tlm_quantize_params qp = tinylearn::requantize_params(in, out);
    REQUIRE(tlm_requantize_s8_check(&qp, n) == TLM_OK);
    const I8 want_q = ref_requantize(qp.input_offset, qp.output_offset, qp.output_multiplier,
                                     qp.output_shift, -128, 127, x);
    tlm_requantize_s8(&qp, n, x.data(), y.data());
    REQUIRE(y == want_q);
    in_place = x;
    tlm_requantize_s8(&qp, n, in_place.data(), in_place.data());
    REQUIRE(in_place == want_q);
  }
}

TEST_CASE("tlm_quantize_f32_s8 and tlm_dequantize_s8 match TFLite's float arithmetic") {
  tlref::Rng rng(2007);
  for (int trial = 0; trial < 200; ++trial) {
    const tinylearn::QuantParams q{float(std::exp(rng.uniform(-12, 3))), std::int32_t(rng.range(-128, 127))};
    const int n = 64;
    std::vector<float> x(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      const double k = rng.uniform(-300, 300);
      // Exact halves of the scale, and values near them, exercise the rounding.
      x[std::size_t(i)] = i % 4 == 0 ? float((std::floor(k) + 0.5) * q.scale)
                          : i % 4 == 1 ? std::nextafter(float((std::floor(k) + 0.5) * q.scale), 0.0f)
                                       : float(k * q.scale);
    }
    const tlm_quantize_params qp = tinylearn::quantize_params(q);
    REQUIRE(tlm_quantize_f32_s8_check(&qp, n) == TLM_OK);
    I8 y(static_cast<std::size_t>(n));
    tlm_quantize_f32_s8(&qp, n, x.data(), y.data());
    CAPTURE(trial);
    REQUIRE(y == ref_quantize(q.scale, q.zero_point, x));
    // tinylearn's own quantize_value (the converter's input quantization) agrees.
    for (int i = 0; i < n; ++i) CHECK(y[std::size_t(i)] == tinylearn::quantize_value(x[std::size_t(i)], q));

    const tlm_dequantize_params dp = tinylearn::dequantize_params(q);
    REQUIRE(tlm_dequantize_s8_check(&dp, n) == TLM_OK);
    const I8 xi = rand_i8(rng, std::size_t(n));
    std::vector<float> f(static_cast<std::size_t>(n));
    tlm_dequantize_s8(&dp, n, xi.data(), f.data());
    REQUIRE(f == ref_dequantize(q.scale, q.zero_point, xi));
  }
}

TEST_CASE("tlm_quantize_f32_s8: infinities saturate, NaN gives the zero point, huge values clamp") {
  const tlm_quantize_params p = tinylearn::quantize_params({0.5f, -3});
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x{inf, -inf, std::nanf(""), 1e30f, -1e30f, 3e9f, -3e9f, 0.25f, -0.25f, 0.75f, -0.75f, 63.0f, 65.5f};
  I8 y(x.size());
  REQUIRE(tlm_quantize_f32_s8_check(&p, std::int32_t(x.size())) == TLM_OK);
  tlm_quantize_f32_s8(&p, std::int32_t(x.size()), x.data(), y.data());
  // 0.25 / 0.5 = 0.5 rounds away from zero to 1; 0.75 / 0.5 = 1.5 -> 2; 63 / 0.5 = 126 -> 123;
  // 65.5 / 0.5 = 131 -> 128 -> 127.
  CHECK(y == I8{127, -128, -3, 127, -128, 127, -128, -2, -4, -1, -5, 123, 127});
}

TEST_CASE("tlm_concatenation_s8 interleaves the inputs' slices along the axis") {
  // Two inputs [2, 2, 3] and [2, 1, 3] along axis 1 -> [2, 3, 3]: outer 2, inner 3.
  const I8 a{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, b{-1, -2, -3, -4, -5, -6};
  tlm_concatenation_dims d{2, 3, 2, {2, 1, 0, 0, 0, 0}};
  REQUIRE(tlm_concatenation_s8_check(&d) == TLM_OK);
  const std::int8_t* inputs[2] = {a.data(), b.data()};
  I8 y(18, 0x55);
  tlm_concatenation_s8(&d, inputs, y.data());
  CHECK(y == I8{1, 2, 3, 4, 5, 6, -1, -2, -3, 7, 8, 9, 10, 11, 12, -4, -5, -6});
  // Random: against an index-by-index reference, up to 6 inputs, the same input twice.
  tlref::Rng rng(2008);
  for (int trial = 0; trial < 200; ++trial) {
    tlm_concatenation_dims r{int(rng.range(1, 4)), int(rng.range(1, 5)), int(rng.range(1, 6)), {0, 0, 0, 0, 0, 0}};
    std::vector<I8> in;
    int axis = 0;
    for (int k = 0; k < r.input_count; ++k) {
      r.axis_sizes[k] = int(rng.range(1, 4));
      axis += r.axis_sizes[k];
      in.push_back(rand_i8(rng, std::size_t(r.outer) * r.axis_sizes[k] * r.inner));
    }
    const std::int8_t* ptrs[6];
    for (int k = 0; k < r.input_count; ++k) ptrs[k] = in[std::size_t(k)].data();
    if (r.input_count > 1 && trial % 3 == 0) ptrs[1] = ptrs[0], r.axis_sizes[1] = r.axis_sizes[0], axis = 0;
    if (axis == 0)
      for (int k = 0; k < r.input_count; ++k) axis += r.axis_sizes[k];
    REQUIRE(tlm_concatenation_s8_check(&r) == TLM_OK);
    I8 out(std::size_t(r.outer) * axis * r.inner);
    tlm_concatenation_s8(&r, ptrs, out.data());
    for (int o = 0; o < r.outer; ++o) {
      int a0 = 0;
      for (int k = 0; k < r.input_count; ++k) {
        for (int j = 0; j < r.axis_sizes[k]; ++j)
          for (int i = 0; i < r.inner; ++i)
            REQUIRE(out[(std::size_t(o) * axis + std::size_t(a0 + j)) * r.inner + std::size_t(i)] ==
                    ptrs[k][(std::size_t(o) * r.axis_sizes[k] + std::size_t(j)) * r.inner + std::size_t(i)]);
        a0 += r.axis_sizes[k];
      }
    }
  }
}

// ---- Hand-computed cases ------------------------------------------------------------------------

TEST_CASE("Hand-computed: a 1x1 convolution, average pool halves, max pool with padding, softmax") {
  SUBCASE("conv 1x1, two channels: (x + 3) * w + bias, multiplier 2^30 shift 0 = 1/2") {
    const tlm_conv_dims d{1, 1, 2, 2, 1, 1, 1, 2, 2};
    const tlm_conv2d_params p{3, -1, 1, 1, 1, 1, 0, 0, -128, 127};
    const I32 mult{1 << 30, 1 << 30}, shift{0, 0}, bias{1, -2};
    const I8 x{1, 2, -3, 5};      // pixel 0: (4, 5); pixel 1: (0, 8)
    const I8 f{1, 1, 2, -1};      // out 0: x0 + x1; out 1: 2 x0 - x1
    // pixel 0: out 0 = 9 + 1 = 10 -> 5 - 1 = 4; out 1 = 3 - 2 = 1 -> round(0.5) = 1 -> 0.
    // pixel 1: out 0 = 8 + 1 = 9 -> round(4.5) = 5 -> 4 (halves up in SRDHM); out 1 = -8 - 2 =
    // -10 -> -5 -> -6.
    REQUIRE(tlm_conv2d_s8_check(&p, &d, mult.data(), shift.data(), bias.data()) == TLM_OK);
    I8 y(4);
    tlm_conv2d_s8(&p, &d, mult.data(), shift.data(), x.data(), f.data(), bias.data(), y.data());
    CHECK(y == I8{4, 0, 4, -6});
  }
  SUBCASE("average pool rounds halves away from zero and counts only positions inside") {
    // 1x2 input, 1x2 window SAME with stride 1 -> pad 0 left, last window has one position.
    const tlm_pool_dims d{1, 1, 2, 2, 1, 2};
    const tlm_pool_params p{1, 1, 1, 2, 0, 0, -128, 127};
    const I8 x{1, -1, 2, -2};  // channel 0: 1, 2; channel 1: -1, -2
    REQUIRE(tlm_avg_pool2d_s8_check(&p, &d) == TLM_OK);
    I8 y(4);
    tlm_avg_pool2d_s8(&p, &d, x.data(), y.data());
    CHECK(y == I8{2, -2, 2, -2});  // 1.5 -> 2, -1.5 -> -2; then 2 / 1, -2 / 1
  }
  SUBCASE("max pool ignores padding (not -128 padding, not 0 padding)") {
    const tlm_pool_dims d{1, 2, 2, 1, 2, 2};
    const tlm_pool_params p{1, 1, 3, 3, 1, 1, -128, 127};  // 3x3 SAME on 2x2: pad 1
    const I8 x{-100, -90, -80, -70};
    REQUIRE(tlm_max_pool2d_s8_check(&p, &d) == TLM_OK);
    I8 y(4);
    tlm_max_pool2d_s8(&p, &d, x.data(), y.data());
    CHECK(y == I8{-70, -70, -70, -70});
  }
  SUBCASE("softmax of a constant row of n is 256 / n - 128 (rounded); one large entry takes all") {
    const tlm_softmax_params p = tinylearn::softmax_params(0.1f);
    for (int n : {1, 2, 3, 4, 7, 10, 256, 511}) {
      const tlm_softmax_dims d{1, n};
      const I8 x(std::size_t(n), 17);
      I8 y(static_cast<std::size_t>(n));
      REQUIRE(tlm_softmax_s8_check(&p, &d) == TLM_OK);
      tlm_softmax_s8(&p, &d, x.data(), y.data());
      const int want = std::min(127, int(std::lround(256.0 / n)) - 128);
      CAPTURE(n);
      for (std::int8_t v : y) CHECK(std::abs(int(v) - want) <= 1);
    }
    const tlm_softmax_dims d{1, 4};
    const I8 x{-128, 127, -128, -128};
    I8 y(4);
    tlm_softmax_s8(&p, &d, x.data(), y.data());
    CHECK(y == I8{-128, 127, -128, -128});  // exp(-25.5) is below diff_min's reach: exactly 0
  }
}

TEST_CASE("Softmax: 512 or more tied maxima (TFLite aborts there) give -128, safely") {
  const tlm_softmax_params p = tinylearn::softmax_params(0.05f);
  for (int n : {511, 512, 1000, TLM_SOFTMAX_MAX_DEPTH}) {
    const tlm_softmax_dims d{1, n};
    const I8 x(std::size_t(n), -5);
    I8 y(std::size_t(n), 0x55);
    REQUIRE(tlm_softmax_s8_check(&p, &d) == TLM_OK);
    tlm_softmax_s8(&p, &d, x.data(), y.data());
    CAPTURE(n);
    CHECK(y == ref_softmax(p, 1, n, x));
    CHECK(int(y[0]) == (n == 511 ? -127 : -128));  // 256 / 511 = 0.501 -> 1; 256 / 512 = 0.5 -> 0
  }
}

// ---- Bounds of the checks -------------------------------------------------------------------------

TEST_CASE("Convolution checks: accumulator depth and bias bounds, windows, params") {
  const tlm_conv2d_params p{-3, 7, 1, 1, 1, 1, 0, 0, -128, 127};
  const I32 m1{1 << 30}, s1{-8};
  SUBCASE("depth kh * kw * in_c <= 32768") {
    tlm_conv_dims d{1, 1, 1, TLM_CONV_MAX_DEPTH, 1, 1, 1, 1, 1};
    CHECK(tlm_conv2d_s8_check(&p, &d, m1.data(), s1.data(), nullptr) == TLM_OK);
    d.input_c = TLM_CONV_MAX_DEPTH + 1;
    CHECK(tlm_conv2d_s8_check(&p, &d, m1.data(), s1.data(), nullptr) == TLM_ERR_ACCUMULATOR_RANGE);
    d = {1, 3, 3, 4097, 3, 3, 1, 1, 1};  // 9 * 4097 = 36873
    CHECK(tlm_conv2d_s8_check(&p, &d, m1.data(), s1.data(), nullptr) == TLM_ERR_ACCUMULATOR_RANGE);
    d = {1, 3, 3, 3640, 3, 3, 1, 1, 1};  // 32760
    CHECK(tlm_conv2d_s8_check(&p, &d, m1.data(), s1.data(), nullptr) == TLM_OK);
  }
  SUBCASE("|bias| <= INT32_MAX - depth * 32640") {
    const tlm_conv_dims d{1, 3, 3, 5, 3, 3, 1, 1, 1};
    const std::int32_t lim = std::int32_t(INT32_MAX - std::int64_t(45) * 32640);
    for (std::int32_t b : {lim, -lim, 0}) {
      const I32 bias{b};
      CHECK(tlm_conv2d_s8_check(&p, &d, m1.data(), s1.data(), bias.data()) == TLM_OK);
    }
    for (std::int32_t b : {lim + 1, -lim - 1, INT32_MIN, INT32_MAX}) {
      const I32 bias{b};
      CHECK(tlm_conv2d_s8_check(&p, &d, m1.data(), s1.data(), bias.data()) == TLM_ERR_ACCUMULATOR_RANGE);
    }
  }
  SUBCASE("windows as TFLite's padding makes them") {
    auto with = [&](tlm_conv_dims d, tlm_conv2d_params q) {
      return tlm_conv2d_s8_check(&q, &d, m1.data(), s1.data(), nullptr);
    };
    const tlm_conv_dims d{1, 5, 5, 1, 3, 3, 5, 5, 1};  // 3x3 SAME stride 1: pad 1
    tlm_conv2d_params q = p;
    q.pad_top = q.pad_left = 1;
    CHECK(with(d, q) == TLM_OK);
    q.pad_top = 3;  // >= the filter: a window entirely in the padding
    CHECK(with(d, q) == TLM_ERR_BAD_PARAMS);
    q.pad_top = -1;
    CHECK(with(d, q) == TLM_ERR_BAD_PARAMS);
    q.pad_top = 1;
    q.stride_h = 2;  // 5 outputs at stride 2 start past the input
    CHECK(with(d, q) == TLM_ERR_SHAPE);
    q.stride_h = 0;
    CHECK(with(d, q) == TLM_ERR_BAD_PARAMS);
    q.stride_h = 1;
    q.dilation_w = 0;
    CHECK(with(d, q) == TLM_ERR_BAD_PARAMS);
    q.dilation_w = 1 << 23;  // effective filter 2^24 + 1
    CHECK(with(d, q) == TLM_ERR_BAD_PARAMS);
    q.dilation_w = INT32_MAX;
    CHECK(with(d, q) == TLM_ERR_BAD_PARAMS);
    q.dilation_w = 1;
    q.stride_w = INT32_MAX;  // (out - 1) * stride in 64 bits
    CHECK(with(d, q) == TLM_ERR_SHAPE);
    tlm_conv_dims one = d;
    one.output_w = 1;  // a single output column: any stride
    CHECK(with(one, q) == TLM_OK);
    for (auto bad : {tlm_conv_dims{0, 5, 5, 1, 3, 3, 5, 5, 1}, tlm_conv_dims{1, 5, 5, 0, 3, 3, 5, 5, 1},
                     tlm_conv_dims{1, 5, 5, 1, 3, 3, 5, 5, 0}, tlm_conv_dims{1, 5, 5, 1, 0, 3, 5, 5, 1},
                     tlm_conv_dims{1, 5, -5, 1, 3, 3, 5, 5, 1}, tlm_conv_dims{1, 5, 5, 1, 3, 3, 0, 5, 1}})
      CHECK(with(bad, p) == TLM_ERR_SHAPE);
  }
  SUBCASE("params") {
    const tlm_conv_dims d{1, 1, 1, 1, 1, 1, 1, 1, 2};
    const I32 m2{1 << 30, 1 << 30}, s2{0, 0};
    auto with = [&](auto change, I32 m = {1 << 30, 1 << 30}, I32 s = {0, 0}) {
      tlm_conv2d_params q = p;
      change(q);
      return tlm_conv2d_s8_check(&q, &d, m.data(), s.data(), nullptr);
    };
    using P = tlm_conv2d_params;
    CHECK(with([](P&) {}) == TLM_OK);
    CHECK(with([](P& q) { q.input_offset = -128; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& q) { q.input_offset = 129; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& q) { q.output_offset = 128; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& q) { q.activation_min = 10, q.activation_max = 9; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& q) { q.activation_max = 128; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P&) {}, {1 << 30, -1}) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P&) {}, {1 << 30, 1 << 30}, {0, 31}) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P&) {}, {1 << 30, 1 << 30}, {-32, 0}) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P&) {}, {0, INT32_MAX}, {-31, 30}) == TLM_OK);
  }
  SUBCASE("depthwise: output channels = input channels x depth multiplier, depth kh * kw") {
    tlm_depthwise_conv2d_params q{-3, 7, 1, 1, 1, 1, 0, 0, 2, -128, 127};
    const I32 m{1 << 30, 1 << 30, 1 << 30, 1 << 30}, s{0, 0, 0, 0};
    tlm_conv_dims d{1, 1, 1, 2, 1, 1, 1, 1, 4};
    CHECK(tlm_depthwise_conv2d_s8_check(&q, &d, m.data(), s.data(), nullptr) == TLM_OK);
    d.output_c = 3;
    CHECK(tlm_depthwise_conv2d_s8_check(&q, &d, m.data(), s.data(), nullptr) == TLM_ERR_SHAPE);
    d.output_c = 4;
    q.depth_multiplier = 0;
    CHECK(tlm_depthwise_conv2d_s8_check(&q, &d, m.data(), s.data(), nullptr) == TLM_ERR_BAD_PARAMS);
    q.depth_multiplier = 1;
    d = {1, 128, 256, 1, 128, 256, 1, 1, 1};  // 32768 taps
    CHECK(tlm_depthwise_conv2d_s8_check(&q, &d, m.data(), s.data(), nullptr) == TLM_OK);
    d = {1, 129, 256, 1, 129, 256, 1, 1, 1};
    CHECK(tlm_depthwise_conv2d_s8_check(&q, &d, m.data(), s.data(), nullptr) == TLM_ERR_ACCUMULATOR_RANGE);
  }
}

TEST_CASE("Extreme legal convolution: depth 32768, |x + offset| = 255, filter -128, bias at the bound") {
  // The accumulator reaches exactly +-INT32_MAX: the int64 reference proves the value, UBSan that
  // the kernel's int32 arithmetic never overflows.
  const std::int32_t depth = TLM_CONV_MAX_DEPTH;
  const std::int32_t lim = std::int32_t(INT32_MAX - std::int64_t(depth) * 32640);
  for (const auto& [xv, offset, b] : {std::tuple<int, int, std::int32_t>{-128, -127, lim},
                                      std::tuple<int, int, std::int32_t>{127, 128, -lim}}) {
    for (bool depthwise : {false, true}) {
      // conv: 1x1 filter over 32768 channels; depthwise: a 128x256 window over one channel.
      const tlm_conv_dims d = depthwise ? tlm_conv_dims{1, 128, 256, 1, 128, 256, 1, 1, 1}
                                        : tlm_conv_dims{1, 1, 2, depth, 1, 1, 1, 2, 1};
      const I8 x(std::size_t(d.input_h) * d.input_w * d.input_c, std::int8_t(xv));
      const I8 f(std::size_t(d.filter_h) * d.filter_w * (depthwise ? 1 : depth), -128);
      const I32 mult{1 << 30}, shift{-23}, bias{b};
      const tlm_conv2d_params p{offset, -5, 1, 1, 1, 1, 0, 0, -128, 127};
      std::vector<std::int64_t> accs;
      const I8 want = ref_conv(p, d, mult, shift, x, f, bias.data(), depthwise, 1, &accs);
      for (std::int64_t a : accs) CHECK(std::abs(a) == INT32_MAX);
      I8 y(want.size());
      if (depthwise) {
        const tlm_depthwise_conv2d_params dp{offset, -5, 1, 1, 1, 1, 0, 0, 1, -128, 127};
        REQUIRE(tlm_depthwise_conv2d_s8_check(&dp, &d, mult.data(), shift.data(), bias.data()) == TLM_OK);
        tlm_depthwise_conv2d_s8(&dp, &d, mult.data(), shift.data(), x.data(), f.data(), bias.data(), y.data());
      } else {
        REQUIRE(tlm_conv2d_s8_check(&p, &d, mult.data(), shift.data(), bias.data()) == TLM_OK);
        tlm_conv2d_s8(&p, &d, mult.data(), shift.data(), x.data(), f.data(), bias.data(), y.data());
      }
      CHECK(y == want);
      // One more unit of bias could leave int32: refused.
      const I32 over{b > 0 ? b + 1 : b - 1};
      const tlm_depthwise_conv2d_params dp{offset, -5, 1, 1, 1, 1, 0, 0, 1, -128, 127};
      CHECK((depthwise ? tlm_depthwise_conv2d_s8_check(&dp, &d, mult.data(), shift.data(), over.data())
                       : tlm_conv2d_s8_check(&p, &d, mult.data(), shift.data(), over.data())) ==
            TLM_ERR_ACCUMULATOR_RANGE);
    }
  }
}

TEST_CASE("Pool, mean, add, softmax, relu, quantize checks") {
  SUBCASE("pools: every window overlaps the input; average pool area <= 2^23") {
    const tlm_pool_dims d{1, 4, 4, 1, 2, 2};
    tlm_pool_params p{2, 2, 2, 2, 0, 0, -128, 127};
    CHECK(tlm_max_pool2d_s8_check(&p, &d) == TLM_OK);
    CHECK(tlm_avg_pool2d_s8_check(&p, &d) == TLM_OK);
    p.pad_top = 2;  // the first window would lie in the padding: TFLite divides by 0 there
    CHECK(tlm_max_pool2d_s8_check(&p, &d) == TLM_ERR_BAD_PARAMS);
    CHECK(tlm_avg_pool2d_s8_check(&p, &d) == TLM_ERR_BAD_PARAMS);
    p.pad_top = 0;
    tlm_pool_dims wide = d;
    wide.output_w = 3;  // the third window would start at column 4
    CHECK(tlm_avg_pool2d_s8_check(&p, &wide) == TLM_ERR_SHAPE);
    p.activation_min = 1, p.activation_max = 0;
    CHECK(tlm_max_pool2d_s8_check(&p, &d) == TLM_ERR_BAD_PARAMS);
    const tlm_pool_dims tall{1, 1 << 23, 1, 1, 1, 1};
    tlm_pool_params big{1, 1, 1 << 23, 1, 0, 0, -128, 127};
    CHECK(tlm_avg_pool2d_s8_check(&big, &tall) == TLM_OK);
    const tlm_pool_dims taller{1, (1 << 23) + 1, 1, 1, 1, 1};
    big.filter_h = (1 << 23) + 1;
    CHECK(tlm_avg_pool2d_s8_check(&big, &taller) == TLM_ERR_ACCUMULATOR_RANGE);
    CHECK(tlm_max_pool2d_s8_check(&big, &taller) == TLM_OK);  // no sum, no bound
  }
  SUBCASE("mean: h * w <= 2^23") {
    const tlm_mean_params p{128, 0, 1 << 30, -20};
    tlm_mean_dims d{1, 1 << 11, 1 << 12, 1};
    CHECK(tlm_mean_s8_check(&p, &d) == TLM_OK);
    d.height += 1;
    CHECK(tlm_mean_s8_check(&p, &d) == TLM_ERR_ACCUMULATOR_RANGE);
    d.height = 0;
    CHECK(tlm_mean_s8_check(&p, &d) == TLM_ERR_SHAPE);
    const tlm_mean_params bad{129, 0, 1 << 30, -20};
    d.height = 1;
    CHECK(tlm_mean_s8_check(&bad, &d) == TLM_ERR_BAD_PARAMS);
  }
  SUBCASE("add: left shift <= 22, rescale shifts <= 0") {
    const tlm_add_params good{-3, 5, 20, 1 << 30, -1, 1 << 30, -2, 1, 1 << 30, -19, -128, 127};
    CHECK(tlm_add_s8_check(&good, 4) == TLM_OK);
    CHECK(tlm_add_s8_check(&good, 0) == TLM_ERR_SHAPE);
    auto with = [&](auto change) {
      tlm_add_params p = good;
      change(p);
      return tlm_add_s8_check(&p, 4);
    };
    using P = tlm_add_params;
    CHECK(with([](P& p) { p.left_shift = 22; }) == TLM_OK);
    CHECK(with([](P& p) { p.left_shift = 23; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.left_shift = -1; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.input1_shift = 1; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.input2_shift = 1; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_shift = 1; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.output_shift = -32; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.input2_multiplier = -1; }) == TLM_ERR_BAD_PARAMS);
    CHECK(with([](P& p) { p.input2_offset = -128; }) == TLM_ERR_BAD_PARAMS);
  }
  SUBCASE("softmax: depth <= 4095, diff_min within the input radius") {
    const tlm_softmax_params p = tinylearn::softmax_params(0.1f);
    tlm_softmax_dims d{1, TLM_SOFTMAX_MAX_DEPTH};
    CHECK(tlm_softmax_s8_check(&p, &d) == TLM_OK);
    d.depth += 1;
    CHECK(tlm_softmax_s8_check(&p, &d) == TLM_ERR_ACCUMULATOR_RANGE);
    d.depth = 10;
    const std::int64_t radius = (std::int64_t(31) << 26) >> p.input_left_shift;
    tlm_softmax_params q = p;
    q.diff_min = std::int32_t(-radius);
    CHECK(tlm_softmax_s8_check(&q, &d) == TLM_OK);
    q.diff_min = std::int32_t(-radius - 1);
    CHECK(tlm_softmax_s8_check(&q, &d) == TLM_ERR_BAD_PARAMS);
    q = p;
    q.diff_min = 1;
    CHECK(tlm_softmax_s8_check(&q, &d) == TLM_ERR_BAD_PARAMS);
    q = p;
    q.input_left_shift = 32;
    CHECK(tlm_softmax_s8_check(&q, &d) == TLM_ERR_BAD_PARAMS);
    q.input_left_shift = 31;
    q.diff_min = 0;
    CHECK(tlm_softmax_s8_check(&q, &d) == TLM_OK);
    q.diff_min = -1;
    CHECK(tlm_softmax_s8_check(&q, &d) == TLM_ERR_BAD_PARAMS);
    q = p;
    q.input_multiplier = -1;
    CHECK(tlm_softmax_s8_check(&q, &d) == TLM_ERR_BAD_PARAMS);
  }
  SUBCASE("relu, requantize, quantize, dequantize params") {
    const tlm_relu_params r{-3, 5, 1 << 30, 0, 5, 127};
    CHECK(tlm_relu_s8_check(&r, 1) == TLM_OK);
    tlm_relu_params rb = r;
    rb.output_shift = 31;
    CHECK(tlm_relu_s8_check(&rb, 1) == TLM_ERR_BAD_PARAMS);
    rb = r;
    rb.activation_min = 128;
    CHECK(tlm_relu_s8_check(&rb, 1) == TLM_ERR_BAD_PARAMS);
    const float inf = std::numeric_limits<float>::infinity();
    for (float s : {0.0f, -1.0f, inf, std::nanf("")}) {
      const tlm_quantize_params q{0, 0, 0, 0, s};
      CHECK(tlm_quantize_f32_s8_check(&q, 1) == TLM_ERR_BAD_PARAMS);
    }
    const tlm_quantize_params qf{0, 3, 0, 0, 0.5f};
    CHECK(tlm_quantize_f32_s8_check(&qf, 1) == TLM_OK);
    CHECK(tlm_requantize_s8_check(&qf, 1) == TLM_ERR_BAD_PARAMS);  // a scale on the int8 path
    const tlm_quantize_params qi{-3, 3, 1 << 30, 1, 0.0f};
    CHECK(tlm_requantize_s8_check(&qi, 1) == TLM_OK);
    CHECK(tlm_quantize_f32_s8_check(&qi, 1) == TLM_ERR_BAD_PARAMS);
    for (float s : {inf, -inf, std::nanf("")}) {
      const tlm_dequantize_params dq{0, s};
      CHECK(tlm_dequantize_s8_check(&dq, 1) == TLM_ERR_BAD_PARAMS);
    }
    const tlm_dequantize_params dq{128, 0.25f};
    CHECK(tlm_dequantize_s8_check(&dq, 1) == TLM_OK);
    const tlm_dequantize_params dq_bad{129, 0.25f};
    CHECK(tlm_dequantize_s8_check(&dq_bad, 1) == TLM_ERR_BAD_PARAMS);
  }
  SUBCASE("concatenation") {
    tlm_concatenation_dims d{1, 1, 0, {1, 1, 1, 1, 1, 1}};
    CHECK(tlm_concatenation_s8_check(&d) == TLM_ERR_BAD_OP);
    d.input_count = 7;
    CHECK(tlm_concatenation_s8_check(&d) == TLM_ERR_BAD_OP);
    d.input_count = 6;
    CHECK(tlm_concatenation_s8_check(&d) == TLM_OK);
    d.axis_sizes[5] = 0;
    CHECK(tlm_concatenation_s8_check(&d) == TLM_ERR_SHAPE);
  }
}

TEST_CASE("Extreme legal mean, average pool and add: the largest sums stay in int32") {
  SUBCASE("mean over 2^23 elements of 127 with input offset 128") {
    const tlm_mean_dims d{1, 1 << 11, 1 << 12, 1};
    const I8 x(std::size_t(1) << 23, 127);
    const tlm_mean_params p{128, -7, 1 << 30, -22};  // 255 * 2^23 * 2^-23 = 255
    REQUIRE(tlm_mean_s8_check(&p, &d) == TLM_OK);
    I8 y(1);
    tlm_mean_s8(&p, &d, x.data(), y.data());
    CHECK(y == ref_mean(p, d, x));
    CHECK(int(y[0]) == 127);  // 255 - 7 clamps
  }
  SUBCASE("average pool over 2^23 positions of -128") {
    const tlm_pool_dims d{1, 1 << 23, 1, 1, 1, 1};
    const tlm_pool_params p{1, 1, 1 << 23, 1, 0, 0, -128, 127};
    const I8 x(std::size_t(1) << 23, -128);
    REQUIRE(tlm_avg_pool2d_s8_check(&p, &d) == TLM_OK);
    I8 y(1);
    tlm_avg_pool2d_s8(&p, &d, x.data(), y.data());
    CHECK(int(y[0]) == -128);
  }
  SUBCASE("add with left shift 22 and the largest multipliers") {
    const tlm_add_params p{128, 128, 22, INT32_MAX, 0, INT32_MAX, 0, 0, INT32_MAX, -23, -128, 127};
    REQUIRE(tlm_add_s8_check(&p, 2) == TLM_OK);
    const I8 a{127, -128}, b{127, -128};
    I8 y(2);
    tlm_add_s8(&p, 2, a.data(), b.data(), y.data());
    CHECK(y == ref_add(p, a, b));
  }
}

// ---- Host parameters (op_params.cpp) -------------------------------------------------------------

TEST_CASE("op_params: padding, activation ranges and multipliers as TFLite computes them") {
  using tinylearn::Padding;
  SUBCASE("window_axis: SAME puts the odd padding after, VALID pads nothing") {
    const auto a = tinylearn::window_axis(Padding::Same, 5, 3, 2);  // out 3, total 2
    CHECK((a.output == 3 && a.pad_before == 1 && a.pad_after == 1));
    const auto b = tinylearn::window_axis(Padding::Same, 6, 3, 2);  // out 3, total 1
    CHECK((b.output == 3 && b.pad_before == 0 && b.pad_after == 1));
    const auto c = tinylearn::window_axis(Padding::Same, 4, 4, 1);  // out 4, total 3
    CHECK((c.output == 4 && c.pad_before == 1 && c.pad_after == 2));
    const auto dl = tinylearn::window_axis(Padding::Same, 7, 3, 1, 2);  // effective 5, total 4
    CHECK((dl.output == 7 && dl.pad_before == 2 && dl.pad_after == 2));
    const auto v = tinylearn::window_axis(Padding::Valid, 7, 3, 2);  // (7 + 2 - 3) / 2 = 3
    CHECK((v.output == 3 && v.pad_before == 0 && v.pad_after == 0));
    const auto v2 = tinylearn::window_axis(Padding::Valid, 7, 2, 1, 3);  // effective 4: 4
    CHECK((v2.output == 4 && v2.pad_before == 0));
    CHECK_THROWS_AS(tinylearn::window_axis(Padding::Valid, 2, 3, 1), std::invalid_argument);
    CHECK_THROWS_AS(tinylearn::window_axis(Padding::Same, 2, 3, 0), std::invalid_argument);
  }
  SUBCASE("activation_range") {
    using A = tinylearn::FusedActivation;
    const tinylearn::QuantParams q{0.05f, -20};
    CHECK(tinylearn::activation_range(A::None, q).min == -128);
    CHECK(tinylearn::activation_range(A::Relu, q).min == -20);
    CHECK(tinylearn::activation_range(A::Relu, q).max == 127);
    CHECK(tinylearn::activation_range(A::Relu6, q).max == 100);  // -20 + 6 / 0.05
    CHECK(tinylearn::activation_range(A::ReluN1To1, q).min == -40);
    CHECK(tinylearn::activation_range(A::ReluN1To1, q).max == 0);
    CHECK(tinylearn::activation_range(A::Relu6, {0.01f, 0}).max == 127);  // 600 clamps
    CHECK(tinylearn::activation_range(A::Relu, {0.01f, 127}).min == 127);
  }
  SUBCASE("per-channel multipliers: double(input) * double(filter) / double(output)") {
    const auto pc = tinylearn::per_channel_multipliers(0.5f, {0.25f, 0.0f, 3.0f}, 0.125f);
    // 1.0 = 2^30 * 2^(1 - 31); 0 -> (0, 0); 12 = 0.75 * 2^4.
    CHECK(pc.multipliers == I32{1 << 30, 0, 1610612736});
    CHECK(pc.shifts == I32{1, 0, 4});
    // Double, not float: 0.1f * 0.3f / 0.7f, each a float widened.
    const auto p2 = tinylearn::per_channel_multipliers(0.1f, {0.3f}, 0.7f);
    const double real = double(0.1f) * double(0.3f) / double(0.7f);
    int e = 0;
    const double frac = std::frexp(real, &e);
    CHECK(p2.multipliers[0] == std::int32_t(std::lround(frac * 2147483648.0)));
    CHECK(p2.shifts[0] == e);
    CHECK(double(0.1f * 0.3f / 0.7f) != real);  // float arithmetic would differ
    CHECK_THROWS_AS(tinylearn::per_channel_multipliers(1e10f, {1e10f}, 1e-10f), std::invalid_argument);
  }
  SUBCASE("mean_params folds 1 / n in as QuantizedMeanOrSum does") {
    // input / output = 1: (2^30, 1). n = 6: shift min(2, 32, 32) = 2 -> 2^32 / 6 truncated.
    const tlm_mean_params p = tinylearn::mean_params({0.5f, 3}, {0.5f, -4}, 6);
    CHECK(p.input_offset == -3);
    CHECK(p.output_offset == -4);
    CHECK(p.output_multiplier == std::int32_t((std::int64_t(1) << 32) / 6));
    CHECK(p.output_shift == 1 - 2);
    // n = 2^40 would shift by 40: clamped to 32.
    const tlm_mean_params big = tinylearn::mean_params({0.5f, 0}, {0.5f, 0}, std::int64_t(1) << 40);
    CHECK(big.output_multiplier == std::int32_t((std::int64_t(1) << 62) >> 40));
    CHECK(big.output_shift == 1 - 32);
  }
  SUBCASE("add_params: left shift 20, twice the larger input scale") {
    const tlm_add_params p = tinylearn::add_params({0.5f, 1}, {0.25f, -2}, {1.0f, 3});
    // 0.5 / 1 = 2^30 * 2^-31... : input1 0.5 -> (2^30, 0); input2 0.25 -> (2^30, -1);
    // output 1 / (2^20 * 1) = 2^-20 -> (2^30, -19).
    CHECK((p.input1_offset == -1 && p.input2_offset == 2 && p.output_offset == 3 && p.left_shift == 20));
    CHECK((p.input1_multiplier == (1 << 30) && p.input1_shift == 0));
    CHECK((p.input2_multiplier == (1 << 30) && p.input2_shift == -1));
    CHECK((p.output_multiplier == (1 << 30) && p.output_shift == -19));
    // An output scale below 2 * max input / 2^20 makes TFLite's output multiplier >= 1: refused.
    CHECK_THROWS_AS(tinylearn::add_params({1.0f, 0}, {1.0f, 0}, {1e-7f, 0}), std::invalid_argument);
  }
  SUBCASE("softmax_params: PreprocessSoftmaxScaling and CalculateInputRadius") {
    // beta * scale * 2^26 with scale 2^-4: 2^22 -> multiplier 2^30, left shift 23;
    // radius floor(31 * 2^26 / 2^23) = 248.
    const tlm_softmax_params p = tinylearn::softmax_params(0.0625f);
    CHECK(p.input_multiplier == (1 << 30));
    CHECK(p.input_left_shift == 23);
    CHECK(p.diff_min == -248);
    // A huge scale caps at 2^31 - 1: left shift 31, radius 0.
    const tlm_softmax_params h = tinylearn::softmax_params(100.0f);
    CHECK(h.input_multiplier == INT32_MAX);
    CHECK(h.input_left_shift == 31);
    CHECK(h.diff_min == 0);
    CHECK_THROWS_AS(tinylearn::softmax_params(1e-9f), std::invalid_argument);  // <= 1: TFLite CHECKs
    CHECK(tinylearn::softmax_output_quantization().zero_point == -128);
  }
  SUBCASE("relu_params: the float32 ratio of ReluPrepare, roundf bounds") {
    const tlm_relu_params p = tinylearn::relu_params({0.1f, -5}, {0.05f, -128}, tinylearn::FusedActivation::Relu6);
    const double ratio = double(0.1f / 0.05f);  // float division first
    CHECK(std::ldexp(double(p.output_multiplier), p.output_shift - 31) == ratio);
    CHECK(p.input_offset == 5);
    CHECK(p.activation_min == -128);
    CHECK(p.activation_max == -8);  // -128 + 6 / 0.05 = -8
    CHECK_THROWS_AS(tinylearn::relu_params({0.1f, 0}, {0.1f, 0}, tinylearn::FusedActivation::None), std::invalid_argument);
  }
  SUBCASE("bad quantization throws") {
    CHECK_THROWS_AS(tinylearn::quantize_params({0.0f, 0}), std::invalid_argument);
    CHECK_THROWS_AS(tinylearn::dequantize_params({0.1f, 200}), std::invalid_argument);
    CHECK_THROWS_AS(tinylearn::requantize_params({std::nanf(""), 0}, {0.1f, 0}), std::invalid_argument);
    CHECK_THROWS_AS(tinylearn::pool2d_params({0.1f, 0}, {0.2f, 0}, {}, 4, 4), std::invalid_argument);
    CHECK_THROWS_AS(tinylearn::mean_params({0.1f, 0}, {0.1f, 0}, 0), std::invalid_argument);
  }
}
