#include "host_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TINYLEARN_PAUSE() _mm_pause()
#else
#define TINYLEARN_PAUSE() std::this_thread::yield()
#endif

namespace tinylearn {

namespace {
// How long a helper spins for the next operator before it sleeps. Operators of one inference
// follow each other within microseconds; successive inferences from a Python loop within tens.
constexpr auto kSpin = std::chrono::microseconds(200);
// 256 pauses take a few microseconds: a longer gap between two looks at the clock means that the
// OS ran another thread on this core meanwhile.
constexpr auto kPreempted = std::chrono::microseconds(100);
// How long the caller spins for the parts that helpers run before it sleeps.
constexpr auto kCallerSpin = std::chrono::microseconds(50);
}  // namespace

HostPool::HostPool(int helpers) {
  for (int i = 0; i < helpers; ++i) helpers_.emplace_back([this, i] { helper(i + 1); });
}

HostPool::~HostPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  { std::lock_guard<std::mutex> lock(mutex_); }  // see run()
  wake_.notify_all();
  for (std::thread& t : helpers_) t.join();
}

void HostPool::parallel(void* ctx, std::int32_t parts, tlm_task_fn task, void* arg) {
  static_cast<HostPool*>(ctx)->run(parts, task, arg);
}

void HostPool::run(std::int32_t parts, tlm_task_fn task, void* arg) {
  if (parts <= 1 || helpers_.empty() || parts > kMaxParts) {
    for (std::int32_t k = 0; k < parts; ++k) task(arg, k);
    return;
  }
  task_ = task;
  arg_ = arg;
  done_.store(0, std::memory_order_relaxed);
  const std::uint32_t gen = std::uint32_t(generation_.load(std::memory_order_relaxed) + 1);
  claims_.store(std::uint64_t{gen} << 32 | std::uint64_t(parts) << 24, std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job; ordered before the sleepers_ load
  if (sleepers_.load() > 0) {
    // A helper that counted itself asleep checks the generation under the lock before it waits,
    // so taking the lock here means it either sees the new generation or gets this notify.
    { std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
  }
  work(gen, 0);
  // Parts a helper claimed may still run: wait for them (their stores are released by done_),
  // spinning for kCallerSpin at most, then asleep: a helper that the OS has preempted on this
  // core gets it back.
  auto since = std::chrono::steady_clock::time_point{};
  for (int spins = 0; done_.load(std::memory_order_acquire) != parts;) {
    if (spins == 0) since = std::chrono::steady_clock::now();
    TINYLEARN_PAUSE();
    if (++spins % 64 || std::chrono::steady_clock::now() - since < kCallerSpin) continue;
    std::unique_lock<std::mutex> lock(mutex_);
    caller_waits_.store(true);  // seq_cst: before done_'s load, as done_'s add is before its load
    finished_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == parts; });
    caller_waits_.store(false, std::memory_order_relaxed);
  }
}

void HostPool::work(std::uint32_t gen, int home) {
  std::uint64_t v = claims_.load(std::memory_order_acquire);
  for (;;) {
    // v: generation (bits 32-63), parts (24-31), a bit per claimed part (0-23). Another run's
    // generation (a helper late for its own): nothing to do.
    if (std::uint32_t(v >> 32) != gen) return;
    const int parts = int((v >> 24) & 0xFF);
    // The thread's own part first (the same rows of successive operators stay in its core's
    // caches), then any other unclaimed one.
    int k = home < parts && !(v >> home & 1) ? home : -1;
    for (int j = 0; k < 0 && j < parts; ++j)
      if (!(v >> j & 1)) k = j;
    if (k < 0) return;  // every part claimed
    if (!claims_.compare_exchange_weak(v, v | std::uint64_t{1} << k, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
      continue;  // v reloaded
    // Claimed: this run cannot end (nor task_ and arg_ change) before done_ counts it.
    task_(arg_, k);
    done_.fetch_add(1);  // seq_cst: see run()
    if (home != 0 && caller_waits_.load()) {
      std::lock_guard<std::mutex> lock(mutex_);  // the caller checks done_ under it
      finished_.notify_one();
    }
    v = claims_.load(std::memory_order_acquire);
  }
}

void HostPool::helper(int home) {
  std::uint64_t seen = 0;
  for (;;) {
    auto since = std::chrono::steady_clock::now(), last = since;
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      TINYLEARN_PAUSE();
      if (++spins < 256) continue;
      spins = 0;
      // Spins for kSpin at most, and not at all once the OS has preempted it: then another
      // thread wants this core (the caller, or another process), and spinning would take its time.
      const auto now = std::chrono::steady_clock::now();
      const bool preempted = now - last > kPreempted;
      last = now;
      if (!preempted && now - since < kSpin) continue;
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      since = last = std::chrono::steady_clock::now();
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    work(std::uint32_t(seen), home);
  }
}

double SplitChooser::median(double* v, int n) {
  std::sort(v, v + n);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void SplitChooser::record(double seconds) {
  if (!probing_) {
    if (++count_ >= period_) {  // probe again, and wait longer after it
      probing_ = true;
      count_ = 0;
      period_ = period_ * 2 > kPeriod ? kPeriod : period_ * 2;
    }
    return;
  }
  double* times = count_ % 2 == 0 ? split_times_ : one_times_;  // even calls split
  times[count_ / 2] = seconds;
  if (++count_ < 2 * kProbe) return;
  const double split = median(split_times_, kProbe), one = median(one_times_, kProbe);
  split_ = !(one < kMargin * split);
  probing_ = false;
  count_ = 0;
}

}  // namespace tinylearn
