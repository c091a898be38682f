// requantize.h for 8 int32 lanes at once (AVX2), for the host fast paths. Every lane computes
// exactly what tlm_detail::multiply_by_quantized_multiplier computes for it.
//
// SaturatingRoundingDoublingHighMul(a, b) = (a*b + nudge) / 2^31 truncated toward zero, with
// nudge = 2^30 for a*b >= 0 and 1 - 2^30 otherwise. Both cases equal floor((a*b + 2^30) / 2^31):
// for a*b < 0, truncating y = a*b + 1 - 2^30 < 0 toward zero is ceil(y / 2^31) =
// floor((y + 2^31 - 1) / 2^31) = floor((a*b + 2^30) / 2^31). The low 32 bits of a 64-bit shift
// right by 31 are the same for logical and arithmetic shifts, so a logical one does. The one
// saturating case (a == b == INT32_MIN) cannot occur: multipliers are >= 0 (the kernels' checks).
#ifndef TINYLEARN_MICRO_REQUANTIZE_AVX2_H
#define TINYLEARN_MICRO_REQUANTIZE_AVX2_H

#include "host_simd.h"

#if TLM_HOST_AVX2
#include <immintrin.h>
#include <stdint.h>

namespace tlm_avx2 {

// Per-lane a * b / 2^31, rounded as gemmlowp's SaturatingRoundingDoublingHighMul (b >= 0);
// b_odd: b's odd lanes (1, 3, 5, 7) in the even positions, _mm256_srli_epi64(b, 32).
TLM_AVX2_TARGET inline __m256i rounding_doubling_high_mul(__m256i a, __m256i b, __m256i b_odd) {
  const __m256i nudge = _mm256_set1_epi64x(int64_t{1} << 30);
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(a, b), nudge);  // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), b_odd), nudge);
  const __m256i lo = _mm256_srli_epi64(even, 31);  // result in the low half of each 64-bit lane
  const __m256i hi = _mm256_slli_epi64(odd, 1);    // bits 31..62 in the high half
  return _mm256_blend_epi32(lo, hi, 0xAA);
}
TLM_AVX2_TARGET inline __m256i rounding_doubling_high_mul(__m256i a, __m256i b) {
  return rounding_doubling_high_mul(a, b, _mm256_srli_epi64(b, 32));
}

// Per-lane round(x / 2^exponent), halves away from zero; exponent in [0, 31].
TLM_AVX2_TARGET inline __m256i rounding_divide_by_pot(__m256i x, __m256i exponent) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, exponent), one);
  const __m256i remainder = _mm256_and_si256(x, mask);
  // threshold = (mask >> 1) + (x < 0): subtracting the all-ones compare adds 1.
  const __m256i threshold = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1),
                                             _mm256_cmpgt_epi32(_mm256_setzero_si256(), x));
  return _mm256_sub_epi32(_mm256_srav_epi32(x, exponent),
                          _mm256_cmpgt_epi32(remainder, threshold));
}

// Per-lane multiply_by_quantized_multiplier(x, multiplier, shift), shift in [-31, 30]. The left
// shift wraps like requantize.h's unsigned product.
TLM_AVX2_TARGET inline __m256i multiply_by_quantized_multiplier(__m256i x, __m256i multiplier,
                                                                __m256i shift) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i left = _mm256_max_epi32(shift, zero);
  const __m256i right = _mm256_sub_epi32(left, shift);  // max(-shift, 0)
  return rounding_divide_by_pot(
      rounding_doubling_high_mul(_mm256_sllv_epi32(x, left), multiplier), right);
}

// The per-channel parts of multiply_by_quantized_multiplier, computed once for 8 channels and
// applied to many pixels.
struct Requant8 {
  __m256i multiplier, multiplier_odd, left, right, mask, half_mask;  // odd: lanes 1, 3, 5, 7
};

TLM_AVX2_TARGET inline Requant8 requant8(__m256i multiplier, __m256i shift) {
  Requant8 c;
  c.multiplier = multiplier;
  c.multiplier_odd = _mm256_srli_epi64(multiplier, 32);
  c.left = _mm256_max_epi32(shift, _mm256_setzero_si256());
  c.right = _mm256_sub_epi32(c.left, shift);
  const __m256i one = _mm256_set1_epi32(1);
  c.mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, c.right), one);
  c.half_mask = _mm256_srli_epi32(c.mask, 1);
  return c;
}

// multiply_by_quantized_multiplier(x, multiplier, shift) with requant8's constants: the same
// operations, lane by lane.
TLM_AVX2_TARGET inline __m256i multiply_by_quantized_multiplier(__m256i x, const Requant8& c) {
  x = rounding_doubling_high_mul(_mm256_sllv_epi32(x, c.left), c.multiplier, c.multiplier_odd);
  const __m256i remainder = _mm256_and_si256(x, c.mask);
  const __m256i threshold =
      _mm256_sub_epi32(c.half_mask, _mm256_cmpgt_epi32(_mm256_setzero_si256(), x));
  return _mm256_sub_epi32(_mm256_srav_epi32(x, c.right), _mm256_cmpgt_epi32(remainder, threshold));
}

// clamp(x + offset, lo, hi) as the kernels compute it in 64 bits: clamping x to [lo - offset,
// hi - offset] first (both within [-255, 255]) keeps the sum inside int32, same result.
TLM_AVX2_TARGET inline __m256i offset_clamp(__m256i x, int32_t offset, int32_t lo, int32_t hi) {
  x = _mm256_max_epi32(x, _mm256_set1_epi32(lo - offset));
  x = _mm256_min_epi32(x, _mm256_set1_epi32(hi - offset));
  return _mm256_add_epi32(x, _mm256_set1_epi32(offset));
}

// The low byte of each of the 8 lanes (values already in [-128, 127]), stored to out[0..7].
// offset_clamp with its vectors made once (a loop's stores may alias the params they come from,
// which would make the compiler load and broadcast them again after every store).
struct Clamp8 {
  __m256i lo, hi, offset;  // lo and hi less the offset
};
TLM_AVX2_TARGET inline Clamp8 clamp8(int32_t offset, int32_t lo, int32_t hi) {
  return {_mm256_set1_epi32(lo - offset), _mm256_set1_epi32(hi - offset),
          _mm256_set1_epi32(offset)};
}
TLM_AVX2_TARGET inline __m256i offset_clamp(__m256i x, const Clamp8& c) {
  return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(x, c.lo), c.hi), c.offset);
}

TLM_AVX2_TARGET inline void store_s8x8(int8_t* out, __m256i x) {
  const __m128i lo = _mm256_castsi256_si128(x), hi = _mm256_extracti128_si256(x, 1);
  const __m128i w = _mm_packs_epi32(lo, hi);  // exact: values fit int16
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(w, w));
}

// requantize.h for accumulators |acc| < 2^29 and shifts in [-23, 0] (right shift r = -shift, no
// left shift), with the bias and the output offset folded in: 11 operations on the window's sum
// instead of requantize_avx2.h's 15 plus the bias and the offset. With P = acc * multiplier (64
// bits, |P| < 2^60):
//   SaturatingRoundingDoublingHighMul: q = floor((P + 2^30) / 2^31) (requantize_avx2.h),
//     |q| <= 2^29;
//   RoundingDivideByPOT(q, r) = floor((q + h - [q < 0]) / 2^r) with h = 2^(r - 1), for r >= 1
//     (remainder > threshold: halves away from zero), and q for r = 0;
//   + output_offset: add offset * 2^r before the shift.
// So y = (q' - [acc < 0, r >= 1]) >> r (arithmetic) with q' = floor((P + nudge) / 2^31) and
// nudge = 2^30 + (h + offset * 2^r) * 2^31: adding a multiple of 2^31 inside the floor adds it
// outside. [q < 0] may be replaced by [acc < 0]: the multiplier is >= 0, so q < 0 needs acc < 0,
// and acc < 0 with q >= 0 means P + 2^30 <= 2^30, q = 0, where both give floor((h - 1) / 2^r) =
// floor(h / 2^r) = 0. No int32 overflow: |q + h + offset * 2^r - 1| <= 2^29 + 2^22 + 2^30 + 1.
// As in requantize_avx2.h, q' is bits 31..62 of the 64-bit P + nudge (a logical shift does; the
// nudge's bits above 62 do not matter). The bias (whatever the kernel's accumulated sum lacks of
// acc): acc = sum + bias, so P = sum * multiplier + bias * multiplier (|.| < 2^61) with the second
// term in the nudge, and acc < 0 is sum < -bias.
struct FastRequant {
  __m256i multiplier, multiplier_odd;  // odd: lanes 1, 3, 5, 7 in the even positions
  __m256i nudge_even, nudge_odd;       // 64-bit, for lanes 0, 2, 4, 6 and 1, 3, 5, 7
  __m256i negative;                    // sum < negative: subtract 1 (-bias; INT32_MIN for r = 0)
  __m256i right;
};

// Whether FastRequant serves every lane: shift in [-23, 0] and |bias| < 2^29 - bound, where
// bound >= |sum| (the kernel's bound on what it accumulates), so that |acc| < 2^29.
TLM_AVX2_TARGET inline bool fast_ok(__m256i shift, __m256i bias, int64_t bound) {
  if (bound >= (int64_t{1} << 29)) return false;
  const __m256i zero = _mm256_setzero_si256();
  const __m256i room = _mm256_set1_epi32(static_cast<int32_t>((int64_t{1} << 29) - bound));
  const __m256i ok = _mm256_and_si256(
      _mm256_and_si256(_mm256_cmpgt_epi32(room, bias),
                       _mm256_cmpgt_epi32(bias, _mm256_sub_epi32(zero, room))),
      _mm256_andnot_si256(_mm256_cmpgt_epi32(shift, zero),
                          _mm256_cmpgt_epi32(shift, _mm256_set1_epi32(-24))));
  return _mm256_movemask_epi8(ok) == -1;
}

// FastRequant's constants; bias: what the accumulated sum lacks of acc (|.| < 2^30).
TLM_AVX2_TARGET inline FastRequant fast_requant(__m256i multiplier, __m256i shift, __m256i bias,
                                                int32_t output_offset) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i right = _mm256_sub_epi32(zero, shift);
  // t = h + offset * 2^r: |.| <= 2^22 + 2^30.
  const __m256i t = _mm256_add_epi32(
      _mm256_srli_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(1), right), 1),
      _mm256_sllv_epi32(_mm256_set1_epi32(output_offset), right));
  const __m256i low = _mm256_set1_epi64x(0xFFFFFFFF), half = _mm256_set1_epi64x(int64_t{1} << 30);
  FastRequant f;
  f.multiplier = multiplier;
  f.multiplier_odd = _mm256_srli_epi64(multiplier, 32);
  f.nudge_even = _mm256_add_epi64(_mm256_slli_epi64(_mm256_and_si256(t, low), 31),
                                  _mm256_add_epi64(_mm256_mul_epi32(bias, multiplier), half));
  f.nudge_odd = _mm256_add_epi64(
      _mm256_srli_epi64(_mm256_andnot_si256(low, t), 1),
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(bias, 32), f.multiplier_odd), half));
  f.negative = _mm256_blendv_epi8(_mm256_sub_epi32(zero, bias), _mm256_set1_epi32(INT32_MIN),
                                  _mm256_cmpeq_epi32(right, zero));
  f.right = right;
  return f;
}

// requantize(sum + bias) + output_offset per lane (see FastRequant).
TLM_AVX2_TARGET inline __m256i fast_requantize(__m256i sum, const FastRequant& f) {
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(sum, f.multiplier), f.nudge_even);
  const __m256i odd = _mm256_add_epi64(
      _mm256_mul_epi32(_mm256_srli_epi64(sum, 32), f.multiplier_odd), f.nudge_odd);
  const __m256i q =
      _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
  return _mm256_srav_epi32(_mm256_add_epi32(q, _mm256_cmpgt_epi32(f.negative, sum)), f.right);
}

// 8 (or fewer) int8 values, sign-extended to int32 lanes (int16 for load_s8x16_epi16).
TLM_AVX2_TARGET inline __m256i load_s8x8(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
TLM_AVX2_TARGET inline __m256i load_s8x16_epi16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// dst[i] = src[i] + offset for i < n, as int16 (|.| <= 255 for TFLite offsets); reads no byte
// past src[n - 1].
TLM_AVX2_TARGET inline void widen_s8(const int8_t* src, int32_t n, int32_t offset, int16_t* dst) {
  const __m256i off = _mm256_set1_epi16(static_cast<int16_t>(offset));
  int32_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_add_epi16(load_s8x16_epi16(src + i), off));
  if (i + 8 <= n) {
    const __m128i x = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_add_epi16(x, _mm256_castsi256_si128(off)));
    i += 8;
  }
  for (; i < n; ++i) dst[i] = static_cast<int16_t>(src[i] + offset);
}

// dst[i] = src[i] + 128 as unsigned bytes (the sign bit flipped), for i < n.
TLM_AVX2_TARGET inline void flip_s8(const int8_t* src, int32_t n, uint8_t* dst) {
  const __m256i top = _mm256_set1_epi8(static_cast<char>(0x80));
  int32_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_xor_si256(_mm256_loadu_si256(
                                             reinterpret_cast<const __m256i*>(src + i)), top));
  for (; i < n; ++i) dst[i] = static_cast<uint8_t>(src[i] ^ 0x80);
}

}  // namespace tlm_avx2

#endif  // TLM_HOST_AVX2
#endif  // TINYLEARN_MICRO_REQUANTIZE_AVX2_H
