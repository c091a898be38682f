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
//   effective_scale = mantissa * 2^-exponent, 2^52 <= mantissa < 2^53 (the converter's frexp of it);
//   the product acc * mantissa (< 2^84) exactly in 128 bits, rounded to 53 significant bits
//   to nearest, ties to even (IEEE-754 multiplication), then rounded to an integer, halves away
//   from zero (C's round()). Beyond 2^52 it saturates, where TFLite's cast to int32 would be
//   undefined; any such value is clamped to the activation range anyway.
#ifndef TINYLEARN_MICRO_REQUANTIZE_FP64_H
#define TINYLEARN_MICRO_REQUANTIZE_FP64_H

#include <stdint.h>

namespace tlm_detail {

// round(double(acc) * m * 2^-e) as IEEE-754 double arithmetic and C's round() give it, exactly
// while its magnitude is below 2^52 and +-2^52 beyond (far outside any int8 output: the caller
// adds the zero point and clamps). m is a normalized double mantissa, 2^52 <= m < 2^53 (or 0);
// e in [0, 1100].
inline int64_t requantize_fp64(int32_t acc, uint64_t m, int32_t e) {
  if (acc == 0 || m == 0) return 0;
  const uint32_t a = acc < 0 ? 0u - static_cast<uint32_t>(acc) : static_cast<uint32_t>(acc);
  // P = a * m exactly, as hi * 2^32 + lo: hi = a * m_hi + carry < 2^53, lo < 2^32.
  const uint64_t t0 = uint64_t{a} * static_cast<uint32_t>(m);
  const uint64_t hi = uint64_t{a} * static_cast<uint32_t>(m >> 32) + (t0 >> 32);
  const uint64_t lo = static_cast<uint32_t>(t0);
  // P >= 2^52 (a >= 1, m >= 2^52), so hi >= 2^20 and P has 96 - clz(hi) bits, 53..85. Round it
  // to 53 significant bits, ties to even (the double product): P ~ q * 2^d, d in [0, 32].
  const int d = 96 - __builtin_clzll(hi) - 53;
  uint64_t q = (hi << (32 - d)) | (lo >> d);
  if (d > 0) {
    const uint64_t rem = lo & ((uint64_t{1} << d) - 1), half = uint64_t{1} << (d - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;  // q <= 2^53
  }
  // |value| = q * 2^(d - e); q >= 2^52, so s <= 0 means at least 2^52: saturate. Otherwise round
  // halves away from zero (s > 63: below 2^-10, rounds to 0).
  const int32_t s = e - d;
  const uint64_t r = s <= 0 ? uint64_t{1} << 52 : s > 63 ? 0 : (q + (uint64_t{1} << (s - 1))) >> s;
  return acc < 0 ? -static_cast<int64_t>(r) : static_cast<int64_t>(r);
}

}  // namespace tlm_detail

#endif  // TINYLEARN_MICRO_REQUANTIZE_FP64_H
