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

// 8 (or fewer) int8 values, sign-extended to int32 lanes (int16 for load_s8x16_epi16).
TLM_AVX2_TARGET inline __m256i load_s8x8(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
TLM_AVX2_TARGET inline __m256i load_s8x16_epi16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

}  // namespace tlm_avx2

#endif  // TLM_HOST_AVX2
#endif  // TINYLEARN_MICRO_REQUANTIZE_AVX2_H
