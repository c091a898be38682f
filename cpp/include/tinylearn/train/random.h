// Seeded random numbers with results that do not depend on the standard library in use
// (std::uniform_real_distribution and std::shuffle are implementation-defined).
#ifndef TINYLEARN_TRAIN_RANDOM_H
#define TINYLEARN_TRAIN_RANDOM_H

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace tinylearn {

class Random {
 public:
  explicit Random(std::uint64_t seed) : engine_(seed) {}
  // Uniform in [0, 1) with 24 random bits.
  float uniform() { return float(engine_() >> 40) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal (Box-Muller on two 53-bit uniforms).
  double normal() {
    const double u1 = (double(engine_() >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
    const double u2 = double(engine_() >> 11) * (1.0 / 9007199254740992.0);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Uniform integer in [0, n), n >= 1, without modulo bias.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = engine_.max() - (engine_.max() - n + 1) % n;
    std::uint64_t r;
    do r = engine_(); while (r > limit);
    return r % n;
  }
  // Fisher-Yates shuffle.
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_RANDOM_H
