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
// Output columns [out_begin, out_end) of every batch row, four weight rows at a time sharing each
// input load. Per batch row, scratch holds (x[i] + input_offset) as int16, zero-padded to K16 (a
// multiple of 16), so each 16-element chunk is one madd against 16 weights widened to int16.
//
// Sums: x + input_offset is in [-255, 255] and a weight in [-128, 127], both int16, so
// _mm256_madd_epi16 (a pair of products summed into int32, |.| <= 65280) is exact; the padding
// multiplies by 0. Every partial sum, in whatever order, is a sum of some of the row's
// products, so the accumulator bound above holds for it as well: the int32 totals are the plain
// kernel's exactly.
//
// Weight reads stay inside [0, out_features * in_features): the last chunk of a row, when
// in_features % 16 != 0, reads 16 bytes from the row's chunk start. Where that ends inside the
// buffer it is loaded in place (bytes of the next rows meet the zero padding); only the rows whose
// tail starts less than 16 bytes before the end take it from a zero-filled local copy (madd_tail).
//
// Requantization: the plain kernel computes requantize_fp64(acc, m, e), which is round(double(acc) *
// scale) exactly as IEEE-754 doubles and C's round() give it (saturating at 2^52), scale = m * 2^-e.
// Here the host's own doubles compute it (x86-64 SSE2/AVX: IEEE-754 binary64, no extended
// precision; the default rounding mode, to nearest even, which the emulation fixes):
//   * the scale is built from its bits, exact while it is a normal double (m < 2^53 so it fits in
//     53 bits; m * 2^-e >= 2^-1022 iff e <= 1074) or zero. Larger exponents (subnormal scales)
//     take the integer emulation for that channel;
//   * double(acc) is exact (|acc| < 2^31) and the product is IEEE's rounding of acc * m * 2^-e to 53
//     bits, the emulation's q * 2^(d - e). (A product below 2^-1022 would be rounded to fewer bits,
//     but it is far below 0.5, so both round it to 0.) |product| < 2^84, no overflow. It goes
//     through max/min before any addition, so no FMA contraction can fuse it away;
//   * the product is clamped to [-1024, 1024] first: round() is monotone and +-1024 are integers,
//     so this equals clamping round()'s result, and any |value| >= 1024 (including the emulation's
//     saturated +-2^52) plus an offset in [-128, 127] lands outside [-128, 127] on the same side;
//     the activation clamp then gives the same byte. The int32 conversion is exact after it;
//   * round() (halves away from zero) as t = trunc(x), plus sign(x) when |x - t| >= 0.5: x - t is
//     exact (t and x share sign and, for |x| >= 1, x / 2 <= t <= x), so x = 0.49999999999999994 gives
//     0, where floor(|x| + 0.5) would give 1.
//
// Scratch: 32 bytes of slack to align the int16 row to 32 bytes, then 2 * K16 bytes.
#if TLM_HOST_AVX2
#include <immintrin.h>
#include <string.h>

#include "requantize_avx2.h"

namespace {

constexpr int32_t kFcRows = 4;  // weight rows per group

inline int32_t fc_depth16(const tlm_fc_dims* d) { return (d->in_features + 15) & ~15; }

// A channel's scale m * 2^-e as a double, exact; -1 when it is not a normal double or 0 (then the
// caller requantizes that channel with requantize_fp64). m is normalized (the check), 2^52 <= m <
// 2^53, or 0.
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

// Channel c's exact scale (see exact_scale).
inline double channel_exact_scale(const tlm_fully_connected_ref_params* p, const int32_t* scales,
                                  int32_t c) {
  uint64_t m;
  int32_t e;
  channel_scale(p, scales, c, &m, &e);
  return exact_scale(m, e);
}

// dst[i] = src[i] + offset for i < n, 0 for n <= i < k16 (int16: |.| <= 255).
TLM_AVX2_TARGET inline void widen_row(const int8_t* src, int32_t n, int32_t k16, int32_t offset,
                                      int16_t* dst) {
  const __m256i off = _mm256_set1_epi16(static_cast<int16_t>(offset));
  int32_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst + i),
                       _mm256_add_epi16(tlm_avx2::load_s8x16_epi16(src + i), off));
  for (; i < n; ++i) dst[i] = static_cast<int16_t>(src[i] + offset);  // no read past the row
  for (; i < k16; ++i) dst[i] = 0;
}

// The sum of the 8 int32 lanes of a, b, c, d, as the 4 lanes of the result.
TLM_AVX2_TARGET inline __m128i reduce4(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
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
  const __m256d sign_bit = _mm256_set1_pd(-0.0);
  const __m256d t = _mm256_round_pd(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256d frac = _mm256_andnot_pd(sign_bit, _mm256_sub_pd(x, t));  // |x - t|, exact
  const __m256d away = _mm256_or_pd(_mm256_set1_pd(1.0), _mm256_and_pd(sign_bit, x));  // +-1
  const __m256d r = _mm256_add_pd(
      t, _mm256_and_pd(_mm256_cmp_pd(frac, _mm256_set1_pd(0.5), _CMP_GE_OQ), away));
  const __m128i y = _mm_add_epi32(_mm256_cvtpd_epi32(r), c.offset);  // exact: |r| <= 1024
  return _mm_min_epi32(_mm_max_epi32(y, c.lo), c.hi);
}

// The madd of one chunk of the input (xv) with the 16 weights at t, of which the first n belong to
// the row; past them, bytes of the next rows are read in place (they meet xv's zero padding) while
// 16 bytes remain before the end of the weights, and zeros from a local copy near the end.
TLM_AVX2_TARGET inline __m256i madd_tail(__m256i xv, const int8_t* t, int32_t n,
                                         const int8_t* weights_end) {
  if (weights_end - t >= 16) return _mm256_madd_epi16(xv, tlm_avx2::load_s8x16_epi16(t));
  int8_t copy[16] = {0};
  memcpy(copy, t, size_t(n));
  return _mm256_madd_epi16(xv, tlm_avx2::load_s8x16_epi16(copy));
}

TLM_AVX2_TARGET void fc_fast(const tlm_fully_connected_ref_params* p, const tlm_fc_dims* d,
                             const int8_t* input, const int8_t* weights, const int32_t* bias,
                             const int32_t* scales, int32_t out_begin, int32_t out_end,
                             void* scratch, int8_t* output) {
  const int32_t in_n = d->in_features, out_n = d->out_features, k16 = fc_depth16(d);
  const int8_t* const weights_end = weights + int64_t{out_n} * in_n;
  const int32_t k_full = in_n & ~15;  // chunks [0, k_full) are whole; a partial one may follow
  int16_t* xs = reinterpret_cast<int16_t*>(
      (reinterpret_cast<uintptr_t>(scratch) + 31) & ~uintptr_t{31});
  const double scale_t = channel_exact_scale(p, nullptr, 0);  // per tensor (-1: not exact)
  const OutputClamp clamp{_mm_set1_epi32(p->base.output_offset),
                          _mm_set1_epi32(p->base.activation_min),
                          _mm_set1_epi32(p->base.activation_max)};
  for (int32_t b = 0; b < d->batches; ++b) {
    widen_row(input + int64_t{b} * in_n, in_n, k16, p->base.input_offset, xs);
    int8_t* y = output + int64_t{b} * out_n;
    for (int32_t o = out_begin; o < out_end; o += kFcRows) {
      // Channels o .. o + 3; past out_end, the group repeats its last channel (not stored).
      const int32_t rows = out_end - o < kFcRows ? out_end - o : kFcRows;
      const int32_t last = o + rows - 1;
      const int32_t c1 = rows > 1 ? o + 1 : last, c2 = rows > 2 ? o + 2 : last, c3 = last;
      const int8_t* w0 = weights + int64_t{o} * in_n;
      const int8_t* w1 = weights + int64_t{c1} * in_n;
      const int8_t* w2 = weights + int64_t{c2} * in_n;
      const int8_t* w3 = weights + int64_t{c3} * in_n;
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
      for (int32_t k = 0; k < k_full; k += 16) {
        const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(xs + k));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(xv, tlm_avx2::load_s8x16_epi16(w0 + k)));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(xv, tlm_avx2::load_s8x16_epi16(w1 + k)));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(xv, tlm_avx2::load_s8x16_epi16(w2 + k)));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(xv, tlm_avx2::load_s8x16_epi16(w3 + k)));
      }
      if (k_full < in_n) {  // the partial chunk: xs is zero from in_n on
        const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(xs + k_full));
        const int32_t n = in_n - k_full;
        a0 = _mm256_add_epi32(a0, madd_tail(xv, w0 + k_full, n, weights_end));
        a1 = _mm256_add_epi32(a1, madd_tail(xv, w1 + k_full, n, weights_end));
        a2 = _mm256_add_epi32(a2, madd_tail(xv, w2 + k_full, n, weights_end));
        a3 = _mm256_add_epi32(a3, madd_tail(xv, w3 + k_full, n, weights_end));
      }
      __m128i acc = reduce4(a0, a1, a2, a3);
      if (bias)
        acc = _mm_add_epi32(acc, rows == kFcRows
                                     ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(bias + o))
                                     : _mm_setr_epi32(bias[o], bias[c1], bias[c2], bias[c3]));
      __m256d scale4 = _mm256_set1_pd(scale_t);
      bool slow = scale_t < 0.0;
      if (scales) {
        const double s0 = channel_exact_scale(p, scales, o);
        const double s1 = channel_exact_scale(p, scales, c1);
        const double s2 = channel_exact_scale(p, scales, c2);
        const double s3 = channel_exact_scale(p, scales, c3);
        scale4 = _mm256_setr_pd(s0, s1, s2, s3);
        slow = (s0 < 0.0) | (s1 < 0.0) | (s2 < 0.0) | (s3 < 0.0);
      }
      if (!slow) {
        const __m128i v = requantize4(acc, scale4, clamp);  // in [-128, 127]: packs exact
        const __m128i v8 = _mm_packs_epi16(_mm_packs_epi32(v, v), _mm_setzero_si128());
        const uint32_t four = static_cast<uint32_t>(_mm_cvtsi128_si32(v8));
        if (rows == kFcRows) {
          memcpy(y + o, &four, 4);
        } else {
          for (int32_t r = 0; r < rows; ++r) y[o + r] = static_cast<int8_t>(four >> (8 * r));
        }
      } else {  // a subnormal scale in the group: the integer emulation, one by one
        alignas(16) int32_t acc4[kFcRows];
        _mm_store_si128(reinterpret_cast<__m128i*>(acc4), acc);
        for (int32_t r = 0; r < rows; ++r) {
          uint64_t m;
          int32_t e;
          channel_scale(p, scales, o + r, &m, &e);
          int64_t out = tlm_detail::requantize_fp64(acc4[r], m, e) + p->base.output_offset;
          if (out < p->base.activation_min) out = p->base.activation_min;
          if (out > p->base.activation_max) out = p->base.activation_max;
          y[o + r] = static_cast<int8_t>(out);
        }
      }
    }
  }
}

}  // namespace

size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims* d) {
  return 32 + 2 * static_cast<size_t>(fc_depth16(d));
}

bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params* p,
                                     const tlm_fc_dims* d, const int8_t* input,
                                     const int8_t* weights, const int32_t* bias,
                                     const int32_t* scales, int32_t out_begin, int32_t out_end,
                                     void* scratch, int8_t* output) {
  if (!tlm_host_avx2()) return false;
  if (out_begin >= out_end) return true;
  fc_fast(p, d, input, weights, bias, scales, out_begin, out_end, scratch, output);
  return true;
}

#else  // no fast path in this build

size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims*) { return 0; }

bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params*, const tlm_fc_dims*,
                                     const int8_t*, const int8_t*, const int32_t*, const int32_t*,
                                     int32_t, int32_t, void*, int8_t*) {
  return false;
}

#endif  // TLM_HOST_AVX2
