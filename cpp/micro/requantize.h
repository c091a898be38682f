// Fixed-point requantization, as in TFLite's reference kernels (and TFLM's defaults).
//
// TFLite has two variants of MultiplyByQuantizedMultiplier: "double rounding" (the default, used
// unless TFLITE_SINGLE_ROUNDING is defined) and "single rounding". Both TFLite and TFLM build
// with the double-rounding default, so this core does the same: first a rounding doubling high
// multiply (gemmlowp's: exact halves round toward +infinity, -0.5 -> 0), then a rounding right
// shift (exact halves round away from zero).
#ifndef TINYLEARN_MICRO_REQUANTIZE_H
#define TINYLEARN_MICRO_REQUANTIZE_H

#include <stdint.h>

namespace tlm_detail {

// a * b / 2^31 rounded (halves toward +infinity), saturating the one overflow a == b == INT32_MIN.
inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  // Division truncates toward zero, as in TFLite (not an arithmetic shift).
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));
}

// round(x / 2^exponent), halves away from zero; exponent in [0, 31].
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * multiplier * 2^(shift - 31), rounded. multiplier is Q31 in [2^30, 2^31); shift in [-31, 30].
inline int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  // TFLite multiplies in int32 here; the unsigned product wraps the same way without
  // undefined behaviour.
  const int32_t shifted =
      static_cast<int32_t>(static_cast<uint32_t>(x) * (uint32_t{1} << left_shift));
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier),
                                right_shift);
}

}  // namespace tlm_detail

#endif  // TINYLEARN_MICRO_REQUANTIZE_H
