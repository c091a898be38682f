#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "tinylearn/convert/convert.h"

namespace tinylearn {

QuantParams choose_activation_params(float min, float max) {
  if (!std::isfinite(min) || !std::isfinite(max) || min > max)
    throw std::invalid_argument("activation range must be finite with min <= max, got [" +
                                std::to_string(min) + ", " + std::to_string(max) + "]");
  // The range must hold 0 exactly (zero padding and ReLU need a representable 0).
  const double lo = std::min(double(min), 0.0), hi = std::max(double(max), 0.0);
  const double qmin = -128.0, qmax = 127.0;
  // A constant-zero tensor still needs a usable scale.
  // (A range so narrow that its float scale would underflow is treated as constant too.)
  const double scale = (hi - lo) / (qmax - qmin) >= 1e-30 ? (hi - lo) / (qmax - qmin) : 1.0 / 255.0;
  const double zp = std::round(qmin - lo / scale);
  return {float(scale), std::int32_t(std::clamp(zp, qmin, qmax))};
}

QuantizedMultiplier quantize_multiplier(double real) {
  if (!(real >= 0.0) || !std::isfinite(real))
    throw std::invalid_argument("requantization scale must be finite and >= 0, got " +
                                std::to_string(real));
  if (real == 0.0) return {0, 0};
  int shift = 0;
  const double q = std::frexp(real, &shift);  // real = q * 2^shift, q in [0.5, 1)
  auto q_fixed = static_cast<std::int64_t>(std::round(q * double(std::int64_t{1} << 31)));
  if (q_fixed == (std::int64_t{1} << 31)) {
    q_fixed /= 2;
    ++shift;
  }
  if (shift < -31) return {0, 0};  // every bit would be shifted out: the result is 0
  if (shift > 30)
    throw std::invalid_argument("requantization scale " + std::to_string(real) +
                                " is too large for int8 (more than 2^30)");
  return {std::int32_t(q_fixed), shift};
}

std::int8_t quantize_value(float x, QuantParams p) {
  // TFLite's Quantize: round(x / scale) in float, half away from zero, then + zero point.
  const float v = std::round(x / p.scale);
  const float clamped = std::clamp(v + float(p.zero_point), -128.0f, 127.0f);
  return std::int8_t(clamped);
}

namespace {

// Places the buffers in `order`, each at the lowest aligned offset free over its lifetime.
MemoryPlan place_in_order(const std::vector<PlanBuffer>& buffers, const std::vector<std::size_t>& order,
                          std::uint32_t alignment) {
  auto align = [alignment](std::uint64_t v) { return (v + alignment - 1) / alignment * alignment; };
  MemoryPlan plan{std::vector<std::uint32_t>(buffers.size(), 0), 0};
  std::vector<std::size_t> placed;
  for (std::size_t i : order) {
    const PlanBuffer& b = buffers[i];
    // Candidate offsets: 0 and the aligned end of every placed buffer that is live with b.
    std::vector<std::uint64_t> candidates{0};
    std::vector<std::size_t> live;
    for (std::size_t j : placed) {
      const PlanBuffer& o = buffers[j];
      if (o.first_op <= b.last_op && b.first_op <= o.last_op) {
        live.push_back(j);
        candidates.push_back(align(std::uint64_t(plan.offsets[j]) + o.bytes));
      }
    }
    std::sort(candidates.begin(), candidates.end());
    for (std::uint64_t c : candidates) {
      const bool fits = std::none_of(live.begin(), live.end(), [&](std::size_t j) {
        const std::uint64_t s = plan.offsets[j], e = s + buffers[j].bytes;
        return c < e && s < c + b.bytes;
      });
      if (fits) {
        if (c + b.bytes > std::numeric_limits<std::uint32_t>::max())
          throw std::invalid_argument("arena larger than 4 GiB");
        plan.offsets[i] = std::uint32_t(c);
        break;
      }
    }
    placed.push_back(i);
    plan.arena_bytes = std::max<std::uint32_t>(
        plan.arena_bytes, std::uint32_t(align(std::uint64_t(plan.offsets[i]) + b.bytes)));
  }
  return plan;
}

}  // namespace

MemoryPlan plan_memory(const std::vector<PlanBuffer>& buffers, std::uint32_t alignment) {
  // No single greedy order is best for every graph (largest-first, TFLM's choice, misses the
  // optimum of some chains that first-use order finds), so try a few and keep the smallest.
  std::vector<std::size_t> base(buffers.size());
  for (std::size_t i = 0; i < base.size(); ++i) base[i] = i;
  auto by = [&](auto key) {
    std::vector<std::size_t> order = base;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return key(buffers[a]) > key(buffers[b]);
    });
    return order;
  };
  const std::vector<std::vector<std::size_t>> orders{
      by([](const PlanBuffer& b) { return double(b.bytes); }),                      // largest first
      by([](const PlanBuffer& b) { return -double(b.first_op); }),                  // first use
      by([](const PlanBuffer& b) { return double(b.last_op - b.first_op); }),       // longest life
      by([](const PlanBuffer& b) { return double(b.bytes) * (1 + b.last_op - b.first_op); }),
  };
  MemoryPlan best{};
  bool have = false;
  for (const auto& order : orders) {
    MemoryPlan p = place_in_order(buffers, order, alignment);
    if (!have || p.arena_bytes < best.arena_bytes) best = std::move(p), have = true;
  }
  if (!have) best.arena_bytes = 0;
  return best;
}

}  // namespace tinylearn
