// Requantization exactly as TFLite's reference FULLY_CONNECTED computes it, in integers.
//
// TFLite's reference int8 fully connected kernel (reference/integer_ops/fully_connected.h,
// FullyConnected and FullyConnectedPerChannel, what LiteRT runs under BUILTIN_REF) does not use
// the fixed-point MultiplyByQuantizedMultiplier of its convolutions: it computes
//     static_cast<int32_t>(round(static_cast<double>(acc) * effective_scale))
// with effective_scale = double(input_scale) * double(filter_scale) / double(output_scale).
// (TFLite's optimized kernels and TFLM's reference use the fixed-point path instead; the two
// differ by one in rare cases near a half.) This core follows the reference, so that its results
// equal LiteRT's reference kernels bit for bit, and emulates the double arithmetic with integers
// (no floating point on the device, a few dozen instructions per output element):
//   effective_scale = mantissa * 2^-exponent, mantissa < 2^53 (the converter's frexp of it);
//   the product acc * mantissa (< 2^84) exactly in 128 bits, rounded to 53 significant bits
//   to nearest, ties to even (IEEE-754 multiplication), then rounded to an integer, halves away
//   from zero (C's round()), and saturated to int32 (where the C cast would be undefined).
#ifndef TINYLEARN_MICRO_REQUANTIZE_FP64_H
#define TINYLEARN_MICRO_REQUANTIZE_FP64_H

#include <stdint.h>

namespace tlm_detail {

// Bit length of a 128-bit value hi:lo (0 for 0).
inline int bit_length128(uint64_t hi, uint64_t lo) {
  int n = 0;
  if (hi) {
    n = 64;
    lo = hi;
  }
  while (lo) {
    ++n;
    lo >>= 1;
  }
  return n;
}

// round(double(acc) * m * 2^-e) as IEEE-754 double arithmetic and C's round() give it, saturated
// to int32. m < 2^53; e in [0, 1100] (the scale is a finite positive double below 2^53).
inline int32_t requantize_fp64(int32_t acc, uint64_t m, int32_t e) {
  if (acc == 0 || m == 0) return 0;
  const bool negative = acc < 0;
  const uint64_t a = negative ? uint64_t(0) - uint64_t(int64_t(acc)) : uint64_t(acc);  // <= 2^31
  // P = a * m exactly: a * m_lo + (a * m_hi) << 32, with m_hi < 2^21.
  const uint64_t lo_part = a * (m & 0xFFFFFFFFu);
  const uint64_t mid = a * (m >> 32);
  uint64_t lo = lo_part + (mid << 32);
  uint64_t hi = (mid >> 32) + (lo < lo_part ? 1u : 0u);
  // Round P to 53 significant bits (ties to even): P = q * 2^d.
  int32_t d = 0;
  const int len = bit_length128(hi, lo);
  if (len > 53) {
    d = len - 53;  // 1..32: P < 2^85
    const uint64_t rem_mask = (uint64_t(1) << d) - 1;
    const uint64_t rem = lo & rem_mask;
    const uint64_t half = uint64_t(1) << (d - 1);
    uint64_t q = (lo >> d) | (d < 64 ? hi << (64 - d) : 0);  // q < 2^53: fits in 64 bits
    if (rem > half || (rem == half && (q & 1u))) ++q;  // q may become 2^53: still exact
    lo = q;
    hi = 0;
  }
  // Value = lo * 2^(d - e); round halves away from zero.
  const int32_t s = e - d;
  uint64_t r;
  if (s <= 0) {
    r = (-s >= 32 || (lo >> (31 + s)) != 0) ? uint64_t(1) << 31 : lo << -s;  // saturate
  } else if (s > 60) {
    r = 0;  // lo < 2^54, so the value is below 1/2^6: rounds to 0
  } else {
    r = (lo + (uint64_t(1) << (s - 1))) >> s;
  }
  if (negative) return r >= (uint64_t(1) << 31) ? INT32_MIN : -int32_t(r);
  return r >= (uint64_t(1) << 31) ? INT32_MAX : int32_t(r);
}

}  // namespace tlm_detail

#endif  // TINYLEARN_MICRO_REQUANTIZE_FP64_H
