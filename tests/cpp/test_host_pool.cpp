// The spinning fork-join pool that runs a single sample's operator parts on the cores
// (cpp/convert/host_pool.h): every part runs exactly once per call, the helpers take parts
// (while the caller takes the ones they have not claimed), and calls keep working after the
// helpers have gone to sleep.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "../../cpp/convert/host_pool.h"

namespace {

struct Job {
  std::atomic<int> runs[8];
  std::thread::id who[8];
};

void count_part(void* arg, std::int32_t k) {
  Job* job = static_cast<Job*>(arg);
  job->runs[k].fetch_add(1);
  job->who[k] = std::this_thread::get_id();
}

// Runs `parts` parts `calls` times, each call on a fresh job; checks each part ran once, on at
// most as many threads. Returns the calls in which a helper ran a part.
int check_calls(tinylearn::HostPool& pool, int parts, int calls, bool pause_between) {
  int helped = 0;
  for (int c = 0; c < calls; ++c) {
    Job job;
    for (auto& r : job.runs) r.store(0);
    pool.run(parts, count_part, &job);
    std::set<std::thread::id> threads;
    for (int k = 0; k < parts; ++k) {
      REQUIRE(job.runs[k].load() == 1);
      threads.insert(job.who[k]);
    }
    for (int k = parts; k < 8; ++k) REQUIRE(job.runs[k].load() == 0);
    REQUIRE(int(threads.size()) <= std::min(parts, pool.threads()));
    for (int k = 0; k < parts; ++k) helped += job.who[k] != std::this_thread::get_id();
    if (pause_between) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // helpers sleep
  }
  return helped;
}

}  // namespace

TEST_CASE("host pool runs every part once, spinning and after sleeping") {
  tinylearn::HostPool pool(1);
  CHECK(pool.threads() == 2);
  check_calls(pool, 2, 20000, false);
  CHECK(check_calls(pool, 1, 100, false) == 0);
  check_calls(pool, 2, 30, true);
  // More threads than this machine may have cores: slower (spinning threads get preempted), but
  // exact.
  tinylearn::HostPool wide(3);
  CHECK(wide.threads() == 4);
  check_calls(wide, 4, 200, false);
  check_calls(wide, 2, 200, false);  // fewer parts than threads
  check_calls(wide, 4, 10, true);
}

// Part 0 (the caller's own) waits up to 2 ms for part 1 to start, so that a spinning helper has
// the time to claim it (parts as short as count_part's are all claimed by the caller at once).
void wait_for_part_1(void* arg, std::int32_t k) {
  count_part(arg, k);
  if (k != 0) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
  while (static_cast<Job*>(arg)->runs[1].load() == 0 && std::chrono::steady_clock::now() < until) {
  }
}

TEST_CASE("host pool helpers take the parts the caller has not claimed") {
  tinylearn::HostPool pool(1);
  int helped = 0;
  for (int c = 0; c < 500; ++c) {
    Job job;
    for (auto& r : job.runs) r.store(0);
    pool.run(2, wait_for_part_1, &job);
    REQUIRE(job.runs[0].load() == 1);
    REQUIRE(job.runs[1].load() == 1);
    helped += job.who[1] != std::this_thread::get_id();
  }
  // Each call gives the helper 2 ms to claim part 1: it does in nearly all of them, unless the
  // machine keeps it from running.
  CHECK(helped > 250);
  MESSAGE(helped << " of 500 calls had part 1 run by the helper");
}

// Part 1 lasts 1 ms, far longer than the caller spins for a helper's part: the caller then sleeps
// until the helper's part ends, and is woken by it.
void slow_part_1(void* arg, std::int32_t k) {
  wait_for_part_1(arg, k);
  if (k == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST_CASE("host pool caller sleeps through a helper's long part") {
  tinylearn::HostPool pool(1);
  for (int c = 0; c < 200; ++c) {
    Job job;
    for (auto& r : job.runs) r.store(0);
    pool.run(2, slow_part_1, &job);
    REQUIRE(job.runs[0].load() == 1);
    REQUIRE(job.runs[1].load() == 1);
  }
}

TEST_CASE("host pool without helpers runs the parts on the caller") {
  tinylearn::HostPool pool(0);
  Job job;
  for (auto& r : job.runs) r.store(0);
  pool.run(1, count_part, &job);
  CHECK(job.runs[0].load() == 1);
  CHECK((job.who[0] == std::this_thread::get_id()));
}

TEST_CASE("host pool is destroyed cleanly while its helpers spin or sleep") {
  for (int i = 0; i < 20; ++i) {
    tinylearn::HostPool pool(1);
    check_calls(pool, 2, 5, false);
    if (i % 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

namespace {

// Feeds the chooser `calls` calls timed by `time(split)`; returns how many ran split.
template <class F>
int feed(tinylearn::SplitChooser& c, int calls, F time) {
  int split = 0;
  for (int i = 0; i < calls; ++i) {
    const bool s = c.split();
    split += s;
    c.record(time(s));
  }
  return split;
}

}  // namespace

TEST_CASE("split chooser keeps the faster way and measures the other again") {
  using tinylearn::SplitChooser;
  constexpr int kProbeCalls = 2 * SplitChooser::kProbe;
  // More calls than it takes the periods to reach kPeriod (the checks below then land inside a
  // period, not on a probe's first call), and a steady cycle after that.
  int warmup = 0;
  for (int p = SplitChooser::kFirstPeriod; p < SplitChooser::kPeriod; p *= 2) warmup += kProbeCalls + p;
  constexpr int kCycle = kProbeCalls + SplitChooser::kPeriod;

  // Splitting twice as fast: a probe alternates (half its calls split), then every call splits.
  SplitChooser fast;
  CHECK(feed(fast, kProbeCalls, [](bool s) { return s ? 1.0 : 2.0; }) == SplitChooser::kProbe);
  CHECK(fast.split());
  CHECK(feed(fast, SplitChooser::kFirstPeriod, [](bool s) { return s ? 1.0 : 2.0; }) ==
        SplitChooser::kFirstPeriod);
  feed(fast, warmup, [](bool s) { return s ? 1.0 : 2.0; });
  // In the steady state, kProbe of every kCycle calls run on one core.
  CHECK(feed(fast, 10 * kCycle, [](bool s) { return s ? 1.0 : 2.0; }) ==
        10 * (kCycle - SplitChooser::kProbe));
  // The machine changes (the second core gets busy): one core is now faster; within a cycle the
  // chooser switches, and then stays.
  feed(fast, kCycle, [](bool s) { return s ? 3.0 : 2.0; });
  CHECK_FALSE(fast.split());
  CHECK(feed(fast, 10 * kCycle, [](bool s) { return s ? 3.0 : 2.0; }) ==
        10 * SplitChooser::kProbe);

  // One core faster from the start.
  SplitChooser slow;
  feed(slow, kProbeCalls, [](bool s) { return s ? 3.0 : 1.0; });
  CHECK_FALSE(slow.split());
  // Within the margin splitting stays; beyond it, one core.
  SplitChooser close, beyond;
  feed(close, kProbeCalls, [](bool s) { return s ? 1.0 : 0.95; });
  CHECK(close.split());
  feed(beyond, kProbeCalls, [](bool s) { return s ? 1.0 : 0.85; });
  CHECK_FALSE(beyond.split());
  // Medians, not means: outliers in a probe do not flip a choice.
  SplitChooser noisy;
  int call = 0;
  feed(noisy, kProbeCalls, [&](bool s) { ++call; return s ? (call < 6 ? 50.0 : 1.0) : 2.0; });
  CHECK(noisy.split());
}
