// Arena planning: validity on random buffer sets, optimality on chains.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "tinylearn/convert/convert.h"
#include "tl_reference.h"

namespace {

using tinylearn::MemoryPlan;
using tinylearn::PlanBuffer;

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

bool lifetimes_overlap(const PlanBuffer& a, const PlanBuffer& b) {
  return a.first_op <= b.last_op && b.first_op <= a.last_op;
}

// Every property a plan must have, checked by brute force over all pairs.
void check_valid(const std::vector<PlanBuffer>& bufs, const MemoryPlan& plan, std::uint32_t alignment) {
  REQUIRE(plan.offsets.size() == bufs.size());
  std::uint64_t end = 0;
  for (std::size_t i = 0; i < bufs.size(); ++i) {
    CHECK(plan.offsets[i] % alignment == 0);
    end = std::max(end, std::uint64_t(plan.offsets[i]) + bufs[i].bytes);
    for (std::size_t j = i + 1; j < bufs.size(); ++j) {
      if (!lifetimes_overlap(bufs[i], bufs[j]) || bufs[i].bytes == 0 || bufs[j].bytes == 0) continue;
      const std::uint64_t si = plan.offsets[i], ei = si + bufs[i].bytes;
      const std::uint64_t sj = plan.offsets[j], ej = sj + bufs[j].bytes;
      CAPTURE(i);
      CAPTURE(j);
      CHECK((ei <= sj || ej <= si));  // live at the same time -> disjoint bytes
    }
  }
  CHECK(plan.arena_bytes == align_up(end, alignment));
}

// Lower bound of any plan: at every operator, all live buffers (aligned sizes) must fit at once.
std::uint64_t live_lower_bound(const std::vector<PlanBuffer>& bufs, std::uint32_t alignment) {
  int first = 0, last = 0;
  for (const PlanBuffer& b : bufs) first = std::min(first, b.first_op), last = std::max(last, b.last_op);
  std::uint64_t best = 0;
  for (int op = first; op <= last; ++op) {
    std::uint64_t s = 0;
    for (const PlanBuffer& b : bufs)
      if (b.first_op <= op && op <= b.last_op) s += align_up(b.bytes, alignment);
    best = std::max(best, s);
  }
  return best;
}

// The lifetimes BlobBuilder gives a chain of fully connected ops over tensors t0 -> t1 -> ... -> tn:
// the model input t0 is live at op 0, tk (k >= 1) from op k-1 to op k, the output until op n.
std::vector<PlanBuffer> chain(const std::vector<std::uint32_t>& sizes) {
  std::vector<PlanBuffer> b;
  const int n = int(sizes.size()) - 1;
  for (int k = 0; k <= n; ++k) b.push_back({sizes[std::size_t(k)], k == 0 ? 0 : k - 1, k == 0 ? 0 : k});
  return b;
}

}  // namespace

TEST_CASE("plan_memory: random buffer sets never share bytes while live, offsets aligned, arena = aligned max end") {
  tlref::Rng rng(42);
  for (int trial = 0; trial < 3000; ++trial) {
    const std::uint32_t alignment = std::uint32_t(1) << rng.range(0, 4);  // 1, 2, 4, 8, 16
    const int n = int(rng.range(1, 14));
    std::vector<PlanBuffer> bufs;
    for (int i = 0; i < n; ++i) {
      const int first = int(rng.range(0, 10));
      const auto bytes = std::uint32_t(trial % 10 == 0 ? rng.range(0, 3) : rng.range(1, 300));
      bufs.push_back({bytes, first, first + int(rng.range(0, 5))});
    }
    const MemoryPlan plan = tinylearn::plan_memory(bufs, alignment);
    CAPTURE(trial);
    check_valid(bufs, plan, alignment);
    CHECK(plan.arena_bytes >= live_lower_bound(bufs, alignment));
    // Never worse than giving every buffer its own bytes.
    std::uint64_t sum = 0;
    for (const PlanBuffer& b : bufs) sum += align_up(b.bytes, alignment);
    CHECK(plan.arena_bytes <= sum);
  }
}

TEST_CASE("plan_memory: buffers with disjoint lifetimes reuse the same bytes") {
  const std::vector<PlanBuffer> bufs{{100, 0, 0}, {60, 1, 1}, {80, 2, 2}, {100, 3, 3}};
  const MemoryPlan plan = tinylearn::plan_memory(bufs, 4);
  check_valid(bufs, plan, 4);
  CHECK(plan.arena_bytes == 100);
  for (std::uint32_t o : plan.offsets) CHECK(o == 0);
  // All live at once: no reuse possible, the arena is the aligned sum.
  const std::vector<PlanBuffer> all{{10, 0, 3}, {7, 0, 3}, {1, 0, 3}};
  const MemoryPlan p2 = tinylearn::plan_memory(all, 4);
  check_valid(all, p2, 4);
  CHECK(p2.arena_bytes == 12 + 8 + 4);
  CHECK(tinylearn::plan_memory({}, 4).arena_bytes == 0);
}

TEST_CASE("plan_memory: chains reach the live-size lower bound (1-16-16-1 -> 32 bytes)") {
  const std::vector<PlanBuffer> mlp = chain({1, 16, 16, 1});
  const MemoryPlan plan = tinylearn::plan_memory(mlp, 4);
  check_valid(mlp, plan, 4);
  CHECK(live_lower_bound(mlp, 4) == 32);
  CHECK(plan.arena_bytes == 32);

  for (const auto& sizes : std::vector<std::vector<std::uint32_t>>{
           {784, 128, 10}, {3, 8, 6, 2}, {1, 1}, {5}, {64, 32, 32, 16, 8, 1}, {2, 40, 40, 40, 3}}) {
    const std::vector<PlanBuffer> c = chain(sizes);
    const MemoryPlan p = tinylearn::plan_memory(c, 4);
    check_valid(c, p, 4);
    CHECK(p.arena_bytes == live_lower_bound(c, 4));
  }
  // A chain where largest-first alone is not optimal (it gives 28): 10-10-1-10 with 4-byte
  // alignment needs 12 + 12 = 24 bytes at its peak.
  {
    const std::vector<PlanBuffer> c = chain({10, 10, 1, 10});
    const MemoryPlan p = tinylearn::plan_memory(c, 4);
    check_valid(c, p, 4);
    CHECK(live_lower_bound(c, 4) == 24);
    CHECK(p.arena_bytes == 24);
  }
  // Non-increasing chains of random sizes (a typical funnel-shaped MLP).
  tlref::Rng rng(8);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<std::uint32_t> sizes(std::size_t(rng.range(1, 8)));
    for (auto& s : sizes) s = std::uint32_t(rng.range(1, 500));
    std::sort(sizes.rbegin(), sizes.rend());
    const std::uint32_t alignment = trial % 2 ? 4 : 1;
    const std::vector<PlanBuffer> c = chain(sizes);
    const MemoryPlan p = tinylearn::plan_memory(c, alignment);
    CAPTURE(trial);
    check_valid(c, p, alignment);
    CHECK(p.arena_bytes == live_lower_bound(c, alignment));
  }
}
