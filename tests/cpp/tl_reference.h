// Independent reference implementations shared by the C++ tests. Everything here is written from
// the mathematical definitions (exact integer arithmetic in __int128 / int64, bitwise CRC), not
// from the code under test.
#ifndef TINYLEARN_TESTS_TL_REFERENCE_H
#define TINYLEARN_TESTS_TL_REFERENCE_H

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <cstring>
#include <random>
#include <vector>

namespace tlref {

using i128 = __int128;

// floor(a / b) for b > 0, exact.
inline i128 floor_div(i128 a, i128 b) {
  i128 q = a / b;
  if ((a % b) != 0 && a < 0) --q;
  return q;
}

// TFLite/gemmlowp SaturatingRoundingDoublingHighMul, from its definition: the nearest integer to
// a*b / 2^31 with exact halves rounded UP (toward +infinity) -- this is what the gemmlowp
// reference (nudge + truncating division) computes and what the NEON VQRDMULH instruction it
// mirrors does -- saturating the single overflow a == b == INT32_MIN to INT32_MAX.
inline std::int32_t srdhm(std::int32_t a, std::int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  const i128 p = i128(a) * i128(b);
  return std::int32_t(floor_div(p + (i128(1) << 30), i128(1) << 31));
}

// gemmlowp RoundingDivideByPOT from its definition: x / 2^e rounded to nearest, exact halves away
// from zero. e in [0, 31].
inline std::int32_t rounding_divide_by_pot(std::int32_t x, int e) {
  if (e == 0) return x;
  const i128 mag = x < 0 ? -i128(x) : i128(x);
  const i128 q = (mag + (i128(1) << (e - 1))) >> e;  // |x| / 2^e, halves up in magnitude
  return std::int32_t(x < 0 ? -q : q);
}

// TFLite's MultiplyByQuantizedMultiplier (double rounding). x * 2^left_shift is formed in int32
// (TFLite's `x * (1 << left_shift)`); tinylearn documents that it wraps modulo 2^32, so the
// reference wraps explicitly.
inline std::int32_t multiply_by_quantized_multiplier(std::int32_t x, std::int32_t m, int shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  const i128 wide = i128(x) * (i128(1) << left);
  const std::uint32_t low = std::uint32_t(std::uint64_t(wide) & 0xFFFFFFFFu);
  std::int32_t shifted;
  std::memcpy(&shifted, &low, 4);  // two's complement reinterpretation
  return rounding_divide_by_pot(srdhm(shifted, m), right);
}

// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320, init and final xor 0xFFFFFFFF), bit by bit.
inline std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) {
      if (crc & 1u)
        crc = (crc >> 1) ^ 0xEDB88320u;
      else
        crc >>= 1;
    }
  }
  return crc ^ 0xFFFFFFFFu;
}

struct FcParams {
  std::int32_t input_offset, output_offset, multiplier, shift, act_min, act_max;
};

// TFLite int8 FULLY_CONNECTED in int64: acc = bias + sum (x + input_offset) * w, then
// requantize, + output_offset, clamp. `acc_out` (optional) receives the exact int64 accumulators.
inline std::vector<std::int8_t> fully_connected(const FcParams& p, int batches, int in, int out,
                                                const std::int8_t* x, const std::int8_t* w,
                                                const std::int32_t* bias,
                                                std::vector<std::int64_t>* acc_out = nullptr) {
  std::vector<std::int8_t> y(std::size_t(batches) * std::size_t(out));
  for (int b = 0; b < batches; ++b)
    for (int o = 0; o < out; ++o) {
      std::int64_t acc = bias ? bias[o] : 0;
      for (int i = 0; i < in; ++i)
        acc += (std::int64_t(x[std::size_t(b) * in + i]) + p.input_offset) *
               std::int64_t(w[std::size_t(o) * in + i]);
      if (acc_out) acc_out->push_back(acc);
      // The kernel's contract (checked inputs) is that acc fits in int32.
      const std::int32_t r =
          multiply_by_quantized_multiplier(std::int32_t(acc), p.multiplier, p.shift);
      std::int64_t v = std::int64_t(r) + p.output_offset;
      if (v < p.act_min) v = p.act_min;
      if (v > p.act_max) v = p.act_max;
      y[std::size_t(b) * out + o] = std::int8_t(v);
    }
  return y;
}

// Seeded helpers (std::mt19937_64's output sequence is fully specified by the standard).
struct Rng {
  std::mt19937_64 e;
  explicit Rng(std::uint64_t seed) : e(seed) {}
  std::uint64_t u64() { return e(); }
  // Uniform integer in [lo, hi] (tiny modulo bias is irrelevant for tests).
  std::int64_t range(std::int64_t lo, std::int64_t hi) {
    return lo + std::int64_t(e() % std::uint64_t(hi - lo + 1));
  }
  double uniform() { return double(e() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
};

// |got - want| <= abs_tol + rel_tol * |want|
inline void check_close(double got, double want, double abs_tol, double rel_tol) {
  CHECK_MESSAGE(std::fabs(got - want) <= abs_tol + rel_tol * std::fabs(want),
                "got " << got << ", want " << want);
}

// Central difference of f at x[i] (a double copy of the point), step eps.
inline double central_diff(std::vector<double>& x, std::size_t i, double eps,
                           const std::function<double()>& f) {
  const double keep = x[i];
  x[i] = keep + eps;
  const double up = f();
  x[i] = keep - eps;
  const double down = f();
  x[i] = keep;
  return (up - down) / (2.0 * eps);
}

}  // namespace tlref

#endif  // TINYLEARN_TESTS_TL_REFERENCE_H
