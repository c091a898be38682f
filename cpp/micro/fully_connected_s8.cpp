#include "fully_connected_s8.h"
#include "host_simd.h"

#include "requantize.h"
#include "requantize_fp64.h"

// Accumulator bound. input + input_offset lies in [-255, 255] (input in [-128, 127], offset in
// [-127, 128]) and a weight in [-128, 127], so each product has |p| <= 255 * 128 = 32640. With
// in_features <= 32768 the sum of products has |sum| <= 1,069,547,520 < 2^30, and the check below
// admits a bias only if |bias| <= INT32_MAX - in_features * 32640, so sum + bias never leaves int32.
namespace {

// The checks both variants share: dims, offsets, clamp and the accumulator bound.
inline tlm_status check_common(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
                               const int32_t* bias) {
  if (d->batches < 1 || d->in_features < 1 || d->out_features < 1) return TLM_ERR_SHAPE;
  if (d->in_features > TLM_FC_MAX_IN_FEATURES) return TLM_ERR_ACCUMULATOR_RANGE;
  if (p->input_offset < -127 || p->input_offset > 128) return TLM_ERR_BAD_PARAMS;
  if (p->output_offset < -128 || p->output_offset > 127) return TLM_ERR_BAD_PARAMS;
  if (p->activation_min < -128 || p->activation_max > 127 ||
      p->activation_min > p->activation_max)
    return TLM_ERR_BAD_PARAMS;
  if (bias) {
    const int64_t limit = INT32_MAX - int64_t{d->in_features} * 32640;
    for (int32_t o = 0; o < d->out_features; ++o) {
      const int64_t b = bias[o];
      if (b > limit || -b > limit) return TLM_ERR_ACCUMULATOR_RANGE;
    }
  }
  return TLM_OK;
}

}  // namespace

tlm_status tlm_fully_connected_s8_check(const tlm_fully_connected_params* p,
                                        const tlm_fc_dims* d, const int32_t* bias) {
  const tlm_status s = check_common(p, d, bias);
  if (s != TLM_OK) return s;
  if (p->output_multiplier < 0 || p->output_shift < -31 || p->output_shift > 30)
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

TLM_HOST_CLONES void tlm_fully_connected_s8(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
                            const int8_t* input, const int8_t* weights, const int32_t* bias,
                            int8_t* output) {
  const int32_t in_n = d->in_features;
  const int32_t out_n = d->out_features;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    for (int32_t o = 0; o < out_n; ++o) {
      const int8_t* w = weights + o * in_n;
      int32_t acc = bias ? bias[o] : 0;
      for (int32_t i = 0; i < in_n; ++i) acc += (x[i] + p->input_offset) * w[i];
      acc = tlm_detail::multiply_by_quantized_multiplier(acc, p->output_multiplier,
                                                         p->output_shift);
      // |acc| <= 2^31 - 1 and |offset| <= 128: add in 64 bits so no case can wrap.
      int64_t out = int64_t{acc} + p->output_offset;
      if (out < p->activation_min) out = p->activation_min;
      if (out > p->activation_max) out = p->activation_max;
      output[b * out_n + o] = static_cast<int8_t>(out);
    }
  }
}

namespace {

// A normalized mantissa (2^52 <= m < 2^53, or m == 0 for a zero scale) and an exponent in
// [0, 1100]: a finite non-negative double, as requantize_fp64 requires.
inline bool valid_scale(uint32_t lo, uint32_t hi, int32_t e) {
  const bool zero = lo == 0 && hi == 0;
  return (zero || (hi >= (1u << 20) && hi < (1u << 21))) && e >= 0 && e <= 1100;
}

}  // namespace

tlm_status tlm_fully_connected_ref_s8_check(const tlm_fully_connected_ref_params* p,
                                            const tlm_fc_dims* d, const int32_t* bias,
                                            const int32_t* scales) {
  const tlm_status s = check_common(&p->base, d, bias);
  if (s != TLM_OK) return s;
  if (p->base.output_multiplier != 0 || p->base.output_shift != 0) return TLM_ERR_BAD_PARAMS;
  if (!valid_scale(p->scale_mantissa_lo, p->scale_mantissa_hi, p->scale_exponent))
    return TLM_ERR_BAD_PARAMS;
  if (scales)
    for (int32_t o = 0; o < d->out_features; ++o)
      if (!valid_scale(uint32_t(scales[3 * o]), uint32_t(scales[3 * o + 1]), scales[3 * o + 2]))
        return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

// As tlm_fully_connected_s8 (same accumulator bound), then TFLite's reference requantization:
// round(double(acc) * scale) exactly (in 64 bits), plus the output offset, clamped to the
// activation range.
TLM_HOST_CLONES void tlm_fully_connected_ref_s8(const tlm_fully_connected_ref_params* p, const tlm_fc_dims* d,
                                const int8_t* input, const int8_t* weights, const int32_t* bias,
                                const int32_t* scales, int8_t* output) {
  const int32_t in_n = d->in_features;
  const int32_t out_n = d->out_features;
  const int32_t input_offset = p->base.input_offset;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    for (int32_t o = 0; o < out_n; ++o) {
      const int8_t* w = weights + o * in_n;
      int32_t acc = bias ? bias[o] : 0;
      for (int32_t i = 0; i < in_n; ++i) acc += (x[i] + input_offset) * w[i];
      uint64_t m;
      int32_t e;
      if (scales) {
        m = uint64_t(uint32_t(scales[3 * o])) | (uint64_t(uint32_t(scales[3 * o + 1])) << 32);
        e = scales[3 * o + 2];
      } else {
        m = uint64_t(p->scale_mantissa_lo) | (uint64_t(p->scale_mantissa_hi) << 32);
        e = p->scale_exponent;
      }
      int64_t out = tlm_detail::requantize_fp64(acc, m, e) + p->base.output_offset;
      if (out < p->base.activation_min) out = p->base.activation_min;
      if (out > p->base.activation_max) out = p->base.activation_max;
      output[b * out_n + o] = static_cast<int8_t>(out);
    }
  }
}

// ---- Host fast path (AVX2) ----------------------------------------------------------------------
//
// Weights are packed once (tlm_fully_connected_ref_s8_fast_pack) in blocks of 8 output channels;
// within a block, 32 bytes per 4 input features k .. k+3: 16 bytes of pairs (w[j][k], w[j][k+1])
// for channels j = 0..7, then 16 of pairs (w[j][k+2], w[j][k+3]) (zero past in_features and past
// out_features). Each 16 bytes sign-extended to int16 (vpmovsxbw) and one madd with the input pair
// (x[k], x[k+1]) (or (x[k+2], x[k+3])) broadcast to every lane adds channel j's products into lane
// j. So the 8 lanes of an accumulator are 8 output channels: no horizontal sums, and one weight
// load serves up to 4 rows. After the weights: the bias as int32 per channel (0 without one) and
// each channel's exact scale as a double (see exact_scale).
//
// Rows: up to kFcChunk rows at a time are widened into the scratch as int16 (x[i] + input_offset,
// zero-padded to a multiple of 4), so every row's input is read before any output is written.
// Rows come in tiles of 4 (4 rows x 16 channels, 8 accumulators), the rest one at a time (1 row x
// 32 channels).
//
// Sums: x + input_offset is in [-255, 255] and a weight in [-128, 127], both int16, so
// _mm256_madd_epi16 (a pair of products summed into int32, |.| <= 65280) is exact; the padding
// multiplies by 0. Every partial sum, in whatever order, is a sum of some of the row's
// products, so the accumulator bound above holds for it as well: the int32 totals are the plain
// kernel's exactly.
//
// Requantization: the plain kernel computes requantize_fp64(acc, m, e), which is round(double(acc) *
// scale) exactly as IEEE-754 doubles and C's round() give it (saturating at 2^52), scale = m * 2^-e.
// Here the host's own doubles compute it (x86-64 SSE2/AVX: IEEE-754 binary64, no extended
// precision; the default rounding mode, to nearest even, which the emulation fixes):
//   * the scale is built from its bits, exact while it is a normal double (m < 2^53 so it fits in
//     53 bits; m * 2^-e >= 2^-1022 iff e <= 1074) or zero. Larger exponents (subnormal scales)
//     take the integer emulation for that block;
//   * double(acc) is exact (|acc| < 2^31) and the product is IEEE's rounding of acc * m * 2^-e to 53
//     bits, the emulation's q * 2^(d - e). (A product below 2^-1022 would be rounded to fewer bits,
//     but it is far below 0.5, so both round it to 0.) |product| < 2^84, no overflow. It goes
//     through max/min before any addition, so no FMA contraction can fuse it away;
//   * the product is clamped to [-1024, 1024] first: round() is monotone and +-1024 are integers,
//     so this equals clamping round()'s result, and any |value| >= 1024 (including the emulation's
//     saturated +-2^52) plus an offset in [-128, 127] lands outside [-128, 127] on the same side;
//     the activation clamp then gives the same byte. The int32 conversion is exact after it;
//   * round() (halves away from zero) as trunc(x + copysign(h, x)) with h = 0.5 - 2^-54 (the double
//     below 0.5), for |x| <= 1024; by symmetry take x >= 0, x = n + f (n integer, 0 <= f < 1).
//     f >= 0.5: x + h >= n + 1 - 2^-54, which is n + 1 or rounds to it (2^-54 is at most half an ulp
//     there, a tie only at n + 1 = 1, broken to 1.0, the even mantissa), so trunc gives n + 1.
//     f < 0.5: x + h < n + 1, and rounding does not reach n + 1: for x < 1 the largest case,
//     x = 0.5 - 2^-54 (where floor(x + 0.5) would give 1), sums to 1 - 2^-53 exactly; for x >= 1,
//     n + 1 - (0.5 - f) is a multiple of ulp(x) >= 2^-52 in x's binade and the extra -2^-54 is
//     under half of it. So trunc gives n. (tests/cpp/test_host_fast_fc.cpp checks exact ties and
//     their neighbours against the emulation.)
#if TLM_HOST_AVX2
#include <immintrin.h>
#include <string.h>

#include "requantize_avx2.h"

namespace {

constexpr int32_t kFcChunk = 8;  // rows widened into the scratch at a time

inline int32_t fc_depth4(const tlm_fc_dims* d) { return (d->in_features + 3) & ~3; }
inline int32_t fc_blocks(const tlm_fc_dims* d) { return (d->out_features + 7) / 8; }
// Bytes of one block's weights: 8 channels x depth4.
inline size_t fc_block_bytes(const tlm_fc_dims* d) { return size_t(8) * fc_depth4(d); }

// A channel's scale m * 2^-e as a double, exact; -1 when it is not a normal double or 0 (then that
// channel is requantized with requantize_fp64). m is normalized (the check), 2^52 <= m < 2^53, or 0.
inline double exact_scale(uint64_t m, int32_t e) {
  if (m == 0) return 0.0;
  if (e > 1074) return -1.0;
  const uint64_t bits = (uint64_t(1023 + 52 - e) << 52) | (m & ((uint64_t{1} << 52) - 1));
  double s;
  memcpy(&s, &bits, sizeof s);
  return s;
}

inline void channel_scale(const tlm_fully_connected_ref_params* p, const int32_t* scales,
                          int32_t o, uint64_t* m, int32_t* e) {
  if (scales) {
    *m = uint64_t(uint32_t(scales[3 * o])) | (uint64_t(uint32_t(scales[3 * o + 1])) << 32);
    *e = scales[3 * o + 2];
  } else {
    *m = uint64_t(p->scale_mantissa_lo) | (uint64_t(p->scale_mantissa_hi) << 32);
    *e = p->scale_exponent;
  }
}

// dst[i] = src[i] + offset for i < n, 0 for n <= i < k4 (int16: |.| <= 255).
TLM_AVX2_TARGET inline void widen_row(const int8_t* src, int32_t n, int32_t k4, int32_t offset,
                                      int16_t* dst) {
  tlm_avx2::widen_s8(src, n, offset, dst);
  for (int32_t i = n; i < k4; ++i) dst[i] = 0;
}

// The input pair (x[k], x[k+1]) in every 32-bit lane.
TLM_AVX2_TARGET inline __m256i pair(const int16_t* x) {
  int32_t v;
  memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

// 16 packed weights (8 channels x a pair of features), sign-extended to int16.
TLM_AVX2_TARGET inline __m256i load16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
}

// acc + the products of 4 input features (pairs a, b) with the 32 packed bytes at w, per channel.
TLM_AVX2_TARGET inline __m256i dot4(__m256i acc, __m256i a, __m256i b, const int8_t* w) {
  return _mm256_add_epi32(
      acc, _mm256_add_epi32(_mm256_madd_epi16(a, load16(w)), _mm256_madd_epi16(b, load16(w + 16))));
}
// The same with the weights already widened (e: features k, k+1; o: k+2, k+3).
TLM_AVX2_TARGET inline __m256i dot4(__m256i acc, __m256i a, __m256i b, __m256i e, __m256i o) {
  return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(a, e), _mm256_madd_epi16(b, o)));
}

// 1 row x 4 blocks (32 channels): x [depth4] int16; w the first block's packed weights, the next
// ones `bstride` bytes apart; out [4] accumulators (no bias).
TLM_AVX2_TARGET __attribute__((noinline)) void fc_1x32(const int16_t* x, const int8_t* w,
                                                       size_t bstride, int32_t steps,
                                                       __m256i* out) {
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  for (int32_t s = 0; s < steps; ++s, x += 4, w += 32) {
    const __m256i a = pair(x), b = pair(x + 2);
    c0 = dot4(c0, a, b, w);
    c1 = dot4(c1, a, b, w + bstride);
    c2 = dot4(c2, a, b, w + 2 * bstride);
    c3 = dot4(c3, a, b, w + 3 * bstride);
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// 1 row x 1 block.
TLM_AVX2_TARGET __attribute__((noinline)) void fc_1x8(const int16_t* x, const int8_t* w,
                                                      int32_t steps, __m256i* out) {
  __m256i c0 = _mm256_setzero_si256(), c1 = c0;  // two chains, summed at the end
  int32_t s = 0;
  for (; s + 2 <= steps; s += 2, x += 8, w += 64) {
    c0 = dot4(c0, pair(x), pair(x + 2), w);
    c1 = dot4(c1, pair(x + 4), pair(x + 6), w + 32);
  }
  if (s < steps) c0 = dot4(c0, pair(x), pair(x + 2), w);
  out[0] = _mm256_add_epi32(c0, c1);
}

// 4 rows (x, `xstride` int16 apart) x 2 blocks (16 channels); out [4][2].
TLM_AVX2_TARGET __attribute__((noinline)) void fc_4x16(const int16_t* x, size_t xstride,
                                                       const int8_t* w, size_t bstride,
                                                       int32_t steps, __m256i* out) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
          c30 = c00, c31 = c00;
  const int16_t *x1 = x + xstride, *x2 = x + 2 * xstride, *x3 = x + 3 * xstride;
  for (int32_t s = 0; s < steps; ++s, w += 32) {
    const int32_t k = 4 * s;
    const __m256i e0 = load16(w), o0 = load16(w + 16);
    const __m256i e1 = load16(w + bstride), o1 = load16(w + bstride + 16);
    __m256i a = pair(x + k), b = pair(x + k + 2);
    c00 = dot4(c00, a, b, e0, o0);
    c01 = dot4(c01, a, b, e1, o1);
    a = pair(x1 + k), b = pair(x1 + k + 2);
    c10 = dot4(c10, a, b, e0, o0);
    c11 = dot4(c11, a, b, e1, o1);
    a = pair(x2 + k), b = pair(x2 + k + 2);
    c20 = dot4(c20, a, b, e0, o0);
    c21 = dot4(c21, a, b, e1, o1);
    a = pair(x3 + k), b = pair(x3 + k + 2);
    c30 = dot4(c30, a, b, e0, o0);
    c31 = dot4(c31, a, b, e1, o1);
  }
  out[0] = c00, out[1] = c01, out[2] = c10, out[3] = c11;
  out[4] = c20, out[5] = c21, out[6] = c30, out[7] = c31;
}

// 4 rows x 1 block; out [4].
TLM_AVX2_TARGET __attribute__((noinline)) void fc_4x8(const int16_t* x, size_t xstride,
                                                      const int8_t* w, int32_t steps,
                                                      __m256i* out) {
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  const int16_t *x1 = x + xstride, *x2 = x + 2 * xstride, *x3 = x + 3 * xstride;
  for (int32_t s = 0; s < steps; ++s, w += 32) {
    const int32_t k = 4 * s;
    const __m256i e = load16(w), o = load16(w + 16);
    c0 = dot4(c0, pair(x + k), pair(x + k + 2), e, o);
    c1 = dot4(c1, pair(x1 + k), pair(x1 + k + 2), e, o);
    c2 = dot4(c2, pair(x2 + k), pair(x2 + k + 2), e, o);
    c3 = dot4(c3, pair(x3 + k), pair(x3 + k + 2), e, o);
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// The output offset and activation clamp, in vectors (loaded once: the int8 output stores may
// alias the params, so the compiler would reload them after every store).
struct OutputClamp {
  __m128i offset, lo, hi;
};

// clamp(round(double(acc) * scale) + output_offset) per lane (see the notes above); every scale
// exact (>= 0).
TLM_AVX2_TARGET inline __m128i requantize4(__m128i acc, __m256d scale, const OutputClamp& c) {
  __m256d x = _mm256_mul_pd(_mm256_cvtepi32_pd(acc), scale);
  x = _mm256_min_pd(_mm256_max_pd(x, _mm256_set1_pd(-1024.0)), _mm256_set1_pd(1024.0));
  // round() as trunc(x + copysign(h, x)), h = 0.5 - 2^-54 (see the notes above).
  const __m256d h = _mm256_or_pd(_mm256_set1_pd(0.49999999999999994),
                                 _mm256_and_pd(_mm256_set1_pd(-0.0), x));
  const __m128i y = _mm_add_epi32(_mm256_cvttpd_epi32(_mm256_add_pd(x, h)), c.offset);
  return _mm_min_epi32(_mm_max_epi32(y, c.lo), c.hi);
}

struct FcFast {
  const tlm_fully_connected_ref_params* p;
  const int32_t* scales;  // the blob's, for the emulation (subnormal scales)
  const int32_t* bias;    // packed: [blocks * 8]
  const double* scale;    // packed: [blocks * 8], -1 where not exact
  OutputClamp clamp;
  int32_t out_n;
};

// Block `blk` of one row: acc (bias not yet added) requantized into y[8 * blk ...], only the
// channels below out_features.
TLM_AVX2_TARGET inline void store_block(const FcFast& f, int32_t blk, __m256i acc, int8_t* y) {
  const int32_t o = 8 * blk, n = f.out_n - o < 8 ? f.out_n - o : 8;
  acc = _mm256_add_epi32(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(f.bias + o)));
  const __m256d s0 = _mm256_load_pd(f.scale + o), s1 = _mm256_load_pd(f.scale + o + 4);
  if (_mm256_movemask_pd(_mm256_or_pd(s0, s1)) == 0) {  // every scale exact (none is -1)
    const __m128i lo = requantize4(_mm256_castsi256_si128(acc), s0, f.clamp);
    const __m128i hi = requantize4(_mm256_extracti128_si256(acc, 1), s1, f.clamp);
    // In [-128, 127]: the packs are exact.
    const __m128i v = _mm_packs_epi16(_mm_packs_epi32(lo, hi), _mm_setzero_si128());
    if (n == 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(y + o), v);  // straight from the register
    } else {
      alignas(16) int8_t bytes[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(bytes), v);
      memcpy(y + o, bytes, size_t(n));
    }
    return;
  }
  // A subnormal scale in the block: the integer emulation, channel by channel.
  alignas(32) int32_t a[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(a), acc);
  for (int32_t r = 0; r < n; ++r) {
    uint64_t m;
    int32_t e;
    channel_scale(f.p, f.scales, o + r, &m, &e);
    int64_t out = tlm_detail::requantize_fp64(a[r], m, e) + f.p->base.output_offset;
    if (out < f.p->base.activation_min) out = f.p->base.activation_min;
    if (out > f.p->base.activation_max) out = f.p->base.activation_max;
    y[o + r] = static_cast<int8_t>(out);
  }
}

TLM_AVX2_TARGET void fc_fast(const tlm_fully_connected_ref_params* p, const tlm_fc_dims* d,
                             const int8_t* input, const void* packed, const int32_t* scales,
                             int32_t samples, size_t sample_stride, int32_t block_begin,
                             int32_t block_end, void* scratch, int8_t* output) {
  const int32_t in_n = d->in_features, out_n = d->out_features, k4 = fc_depth4(d);
  const int32_t steps = k4 / 4, blocks = fc_blocks(d);
  const size_t bstride = fc_block_bytes(d);
  const int8_t* w = static_cast<const int8_t*>(packed);
  FcFast f;
  f.p = p;
  f.scales = scales;
  f.bias = reinterpret_cast<const int32_t*>(w + size_t(blocks) * bstride);
  f.scale = reinterpret_cast<const double*>(f.bias + 8 * blocks);
  f.clamp = OutputClamp{_mm_set1_epi32(p->base.output_offset),
                        _mm_set1_epi32(p->base.activation_min),
                        _mm_set1_epi32(p->base.activation_max)};
  f.out_n = out_n;
  int16_t* xs = reinterpret_cast<int16_t*>(
      (reinterpret_cast<uintptr_t>(scratch) + 31) & ~uintptr_t{31});
  const int32_t rows = samples * d->batches;
  const int8_t* in_rows[kFcChunk];
  int8_t* out_rows[kFcChunk];
  alignas(32) __m256i acc[8];
  for (int32_t j0 = 0; j0 < rows; j0 += kFcChunk) {
    const int32_t n = rows - j0 < kFcChunk ? rows - j0 : kFcChunk;
    for (int32_t r = 0; r < n; ++r) {
      const int32_t s = (j0 + r) / d->batches, b = (j0 + r) % d->batches;
      in_rows[r] = input + s * sample_stride + size_t(b) * in_n;
      out_rows[r] = output + s * sample_stride + size_t(b) * out_n;
      widen_row(in_rows[r], in_n, k4, p->base.input_offset, xs + size_t(r) * k4);
    }
    int32_t r = 0;
    for (; r + 4 <= n; r += 4) {  // tiles of 4 rows
      const int16_t* x = xs + size_t(r) * k4;
      int32_t blk = block_begin;
      for (; blk + 2 <= block_end; blk += 2) {
        fc_4x16(x, size_t(k4), w + blk * bstride, bstride, steps, acc);
        for (int32_t i = 0; i < 4; ++i) {
          store_block(f, blk, acc[2 * i], out_rows[r + i]);
          store_block(f, blk + 1, acc[2 * i + 1], out_rows[r + i]);
        }
      }
      if (blk < block_end) {
        fc_4x8(x, size_t(k4), w + blk * bstride, steps, acc);
        for (int32_t i = 0; i < 4; ++i) store_block(f, blk, acc[i], out_rows[r + i]);
      }
    }
    for (; r < n; ++r) {  // the rest, one row at a time
      const int16_t* x = xs + size_t(r) * k4;
      int32_t blk = block_begin;
      for (; blk + 4 <= block_end; blk += 4) {
        fc_1x32(x, w + blk * bstride, bstride, steps, acc);
        for (int32_t i = 0; i < 4; ++i) store_block(f, blk + i, acc[i], out_rows[r]);
      }
      for (; blk < block_end; ++blk) {
        fc_1x8(x, w + blk * bstride, steps, acc);
        store_block(f, blk, acc[0], out_rows[r]);
      }
    }
  }
}

}  // namespace

size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims* d) {
  return 32 + size_t(kFcChunk) * 2 * static_cast<size_t>(fc_depth4(d));
}

size_t tlm_fully_connected_ref_s8_fast_packed_bytes(const tlm_fc_dims* d) {
  // Weights, then int32 bias and double scale per (padded) channel: all multiples of 32 bytes.
  return size_t(fc_blocks(d)) * (fc_block_bytes(d) + 8 * 4 + 8 * 8);
}

int32_t tlm_fully_connected_ref_s8_fast_blocks(const tlm_fc_dims* d) { return fc_blocks(d); }

void tlm_fully_connected_ref_s8_fast_pack(const tlm_fully_connected_ref_params* p,
                                          const tlm_fc_dims* d, const int8_t* weights,
                                          const int32_t* bias, const int32_t* scales,
                                          void* packed) {
  const int32_t in_n = d->in_features, out_n = d->out_features, k4 = fc_depth4(d);
  const int32_t blocks = fc_blocks(d);
  const size_t bstride = fc_block_bytes(d);
  int8_t* w = static_cast<int8_t*>(packed);
  for (int32_t blk = 0; blk < blocks; ++blk)
    for (int32_t k = 0; k < k4; k += 4)
      for (int32_t half = 0; half < 2; ++half)  // features k, k+1 then k+2, k+3
        for (int32_t j = 0; j < 8; ++j)
          for (int32_t i = 0; i < 2; ++i) {
            const int32_t o = 8 * blk + j, f = k + 2 * half + i;
            w[size_t(blk) * bstride + size_t(k) * 8 + 16 * half + 2 * j + i] =
                o < out_n && f < in_n ? weights[size_t(o) * in_n + f] : 0;
          }
  int32_t* b = reinterpret_cast<int32_t*>(w + size_t(blocks) * bstride);
  double* s = reinterpret_cast<double*>(b + 8 * blocks);
  for (int32_t o = 0; o < 8 * blocks; ++o) {
    b[o] = o < out_n && bias ? bias[o] : 0;
    uint64_t m = 0;
    int32_t e = 0;
    if (o < out_n) channel_scale(p, scales, o, &m, &e);
    s[o] = exact_scale(m, e);
  }
}

bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params* p,
                                     const tlm_fc_dims* d, const int8_t* input,
                                     const void* packed, const int32_t* scales, int32_t samples,
                                     size_t sample_stride, int32_t block_begin, int32_t block_end,
                                     void* scratch, int8_t* output) {
  if (!tlm_host_avx2()) return false;
  if (block_begin >= block_end || samples < 1) return true;
  fc_fast(p, d, input, packed, scales, samples, sample_stride, block_begin, block_end, scratch,
          output);
  return true;
}

#else  // no fast path in this build

size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims*) { return 0; }
size_t tlm_fully_connected_ref_s8_fast_packed_bytes(const tlm_fc_dims*) { return 0; }
int32_t tlm_fully_connected_ref_s8_fast_blocks(const tlm_fc_dims*) { return 0; }
void tlm_fully_connected_ref_s8_fast_pack(const tlm_fully_connected_ref_params*,
                                          const tlm_fc_dims*, const int8_t*, const int32_t*,
                                          const int32_t*, void*) {}
bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params*, const tlm_fc_dims*,
                                     const int8_t*, const void*, const int32_t*, int32_t, size_t,
                                     int32_t, int32_t, void*, int8_t*) {
  return false;
}

#endif  // TLM_HOST_AVX2
