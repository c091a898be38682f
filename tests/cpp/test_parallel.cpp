// The training kernels' thread pool (cpp/train/parallel.h): every part runs exactly once per
// call, whoever claims it; calls from several threads at once, and calls from inside a part, run
// their parts too; for_parts covers the items in contiguous, ordered ranges.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "../../cpp/train/parallel.h"

namespace {

struct Count {
  std::vector<std::atomic<int>> runs;
  explicit Count(std::size_t parts) : runs(parts) {
    for (auto& r : runs) r.store(0);
  }
};

void count(void* arg, std::size_t k) { static_cast<Count*>(arg)->runs[k].fetch_add(1); }

bool each_once(const Count& c) {
  for (const auto& r : c.runs)
    if (r.load() != 1) return false;
  return true;
}

}  // namespace

TEST_CASE("par::run runs every part once, for any number of parts") {
  for (std::size_t parts = 0; parts < 40; ++parts)
    for (int call = 0; call < 200; ++call) {
      Count c(parts);
      tinylearn::par::run(parts, count, &c);
      REQUIRE(each_once(c));
    }
}

TEST_CASE("par::run from several threads at once, and from inside a part") {
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&wrong, t] {
      for (int call = 0; call < 2000; ++call) {
        Count c(std::size_t(2 + (t + call) % 7));
        tinylearn::par::run(c.runs.size(), count, &c);
        wrong += !each_once(c);
      }
    });
  for (auto& t : callers) t.join();
  CHECK(wrong.load() == 0);

  // A part that splits again: its parts run (on its own thread) before it returns.
  struct Outer {
    std::vector<Count> inner;
    std::atomic<int> wrong{0};
  } outer;
  for (int k = 0; k < 6; ++k) outer.inner.emplace_back(5);
  tinylearn::par::run(6, [](void* arg, std::size_t k) {
    Outer& o = *static_cast<Outer*>(arg);
    tinylearn::par::run(5, count, &o.inner[k]);
    o.wrong += !each_once(o.inner[k]);
  }, &outer);
  CHECK(outer.wrong.load() == 0);
}

TEST_CASE("par::for_parts covers [0, n) in contiguous ranges, in part order") {
  for (std::size_t n : {1, 2, 7, 32, 1000})
    for (std::size_t parts = 1; parts <= n && parts <= 9; ++parts) {
      std::vector<std::size_t> begin(parts), end(parts);
      std::vector<std::atomic<int>> hits(n);
      for (auto& h : hits) h.store(0);
      tinylearn::par::for_parts(n, parts, [&](std::size_t k, std::size_t b, std::size_t e) {
        begin[k] = b;
        end[k] = e;
        for (std::size_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      CHECK(begin[0] == 0);
      CHECK(end[parts - 1] == n);
      for (std::size_t k = 1; k < parts; ++k) CHECK(begin[k] == end[k - 1]);
      for (std::size_t k = 0; k < parts; ++k) CHECK(end[k] - begin[k] >= n / parts);  // balanced
      for (auto& h : hits) REQUIRE(h.load() == 1);
    }
}
