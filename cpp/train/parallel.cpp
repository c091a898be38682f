// The process-wide pool behind par::run (parallel.h): max_threads() - 1 helper threads, started
// on the first split, and the calling thread. A run publishes its parts; the caller and the
// helpers claim them one at a time, in order, until none is left; the caller then sleeps until
// the last claimed part ends. A thread that waits (a helper for the next run, the caller for the
// helpers' parts) polls for at most 50 us and then sleeps on a condition variable (a futex); it
// does not poll at all for 200 ms after any of the pool's threads was preempted (see kPollNs),
// so on a busy machine it never spins.
//
// This replaced OpenMP (a static schedule of one part per thread, with libgomp's default of
// spinning waits), which on a busy machine made training many times slower than one thread: a
// part on the busy core held every batch back, and the spinning threads took CPU time from the
// threads that had work. Fashion-MNIST MLP (784-128-10, batch 32), 1 epoch of 12,000 samples on
// the 2-core build VM, other processes loading it too (load average 7-13), the configurations in
// turns, ranges of 3-6 runs:
//   busy loop pinned to the second core (`taskset -c 1`):
//     OpenMP, 2 threads: 22.7-28.2 s             1 thread: 1.09-1.31 s
//     this pool, 2 threads: 0.38-1.53 s          1 thread: 0.93-1.56 s
//   no busy loop: OpenMP, 2 threads 21.4-24.2 s; this pool, 2 threads 0.70-1.15 s, 1 thread
//   0.94-1.00 s (the machine had no idle spell in which to time the idle speedup).
// The CNN of benchmarks/train_bench.py, 4,000 samples, busy loop: OpenMP 17.8-19.9 s against
// 2.5-3.3 s on one thread; this pool 1.0-2.7 s (median 2.26) against 2.7-2.9 s (median 2.75).
// Two parts per thread (kPartsPerThread) against one, MLP, busy loop, 6 runs each: median 0.65 s
// against 0.73 s; a helper that spun for a while before sleeping gained nothing measurable.
// benchmarks/train_bench.py's busy-machine section reports the ratios.
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace tinylearn::par {

namespace {

std::size_t configured_threads() {
  if (const char* s = std::getenv("OMP_NUM_THREADS")) {
    char* end = nullptr;
    const long t = std::strtol(s, &end, 10);
    if (end != s && t > 0) return std::size_t(t);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return std::size_t(CPU_COUNT(&set));
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? hw : 1;
}

// True on the pool's threads, and on a caller while it runs parts: a nested split runs inline.
thread_local bool t_in_parts = false;

// Short waits before sleeping. Waking a sleeping thread takes tens of microseconds on a VM, paid
// twice per split (the helper for its parts, the caller for the helper's last one), which on an
// idle machine cost the CNN a third of its two-core speedup. So a thread that has to wait first
// polls for up to kPollNs, but only while no thread of the pool has recently been preempted: a
// preemption (an involuntary context switch, counted by the kernel per thread) means another
// process wants these cores, and then every wait sleeps at once for kQuietNs, so that a busy
// machine never sees this pool spin.
constexpr std::int64_t kPollNs = 50'000;
constexpr std::int64_t kQuietNs = 200'000'000;
std::atomic<std::int64_t> g_quiet_until{0};

std::int64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return std::int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// Notes this thread's involuntary context switches since its last call. One now and then (a
// kernel thread, a timer) is an idle machine's; two within kCloseNs of each other mean another
// process competes for this core, and stop polling for kQuietNs.
constexpr std::int64_t kCloseNs = 50'000'000;
void note_preemptions() {
  thread_local long seen = -1;
  thread_local std::int64_t last = -kCloseNs;
  rusage u;
  if (getrusage(RUSAGE_THREAD, &u) != 0) return;
  if (seen >= 0 && u.ru_nivcsw != seen) {
    const std::int64_t t = now_ns();
    if (u.ru_nivcsw - seen > 1 || t - last < kCloseNs)
      g_quiet_until.store(t + kQuietNs, std::memory_order_relaxed);
    last = t;
  }
  seen = u.ru_nivcsw;
}

bool may_poll() { return now_ns() >= g_quiet_until.load(std::memory_order_relaxed); }

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls `ready` for up to kPollNs when polling is allowed; true if it became true.
template <class Ready>
bool poll(Ready ready) {
  if (!may_poll()) return false;
  const std::int64_t end = now_ns() + kPollNs;
  for (int i = 0;; ++i) {
    if (ready()) return true;
    cpu_relax();
    if ((i & 63) == 63 && now_ns() >= end) return ready();
  }
}

class Pool {
 public:
  explicit Pool(std::size_t helpers) {
    for (std::size_t i = 0; i < helpers; ++i) threads_.emplace_back([this] { helper(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // False (nothing run) when another caller has the pool.
  bool try_run(std::size_t parts, Task task, void* arg) {
    std::unique_lock<std::mutex> run(run_lock_, std::try_to_lock);
    if (!run.owns_lock()) return false;
    task_ = task;
    arg_ = arg;
    done_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++generation_;
      claims_.store(std::uint64_t(generation_) << 32 | std::uint64_t(parts) << 16,
                    std::memory_order_release);
      published_.store(generation_, std::memory_order_release);
    }
    const std::size_t wake = parts - 1 < threads_.size() ? parts - 1 : threads_.size();
    if (wake == threads_.size())
      wake_.notify_all();
    else
      for (std::size_t i = 0; i < wake; ++i) wake_.notify_one();
    work(generation_);
    if (done_.load(std::memory_order_acquire) != parts &&
        !poll([&] { return done_.load(std::memory_order_acquire) == parts; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      finished_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == parts; });
    }
    note_preemptions();
    return true;
  }

 private:
  void helper() {
    t_in_parts = true;
    std::uint32_t seen = 0;
    for (;;) {
      // The next split often comes within microseconds (the next layer's): poll for it first.
      if (poll([&] { return published_.load(std::memory_order_acquire) != seen; })) {
        seen = published_.load(std::memory_order_acquire);
      } else {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work(seen);
      note_preemptions();
    }
  }

  // Claims and runs parts of generation `gen` until none is left.
  void work(std::uint32_t gen) {
    std::uint64_t v = claims_.load(std::memory_order_acquire);
    for (;;) {
      // v: generation (bits 32-63), parts (16-31), next unclaimed part (0-15). Another run's
      // generation (a thread late for its own): nothing to do.
      if (std::uint32_t(v >> 32) != gen) return;
      const std::size_t parts = (v >> 16) & 0xFFFF, k = v & 0xFFFF;
      if (k >= parts) return;
      if (!claims_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;  // v reloaded
      // Claimed: this run cannot end (nor task_ and arg_ change) before done_ counts it.
      task_(arg_, k);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == parts) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller checks done_ under it
        finished_.notify_one();
      }
      v = claims_.load(std::memory_order_acquire);
    }
  }

  std::vector<std::thread> threads_;
  std::mutex run_lock_;  // held by the caller whose parts run
  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::uint32_t generation_ = 0;  // one more per run (under mutex_)
  std::atomic<std::uint32_t> published_{0};  // generation_, for the helpers that poll
  bool stop_ = false;
  std::atomic<std::uint64_t> claims_{0};
  std::atomic<std::size_t> done_{0};  // parts finished in this run
  Task task_ = nullptr;
  void* arg_ = nullptr;
};

// The pool, created on first use; a forked child drops its parent's (whose threads it does not
// have) and makes its own.
std::atomic<Pool*> g_pool{nullptr};
void forget_pool() { g_pool.store(nullptr); }

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return p;
  static const int registered = pthread_atfork(nullptr, nullptr, forget_pool);
  (void)registered;
  Pool* fresh = new Pool(max_threads() - 1);
  if (g_pool.compare_exchange_strong(p, fresh)) return fresh;  // kept for the process's life
  delete fresh;
  return p;
}

}  // namespace

std::size_t max_threads() {
  static const std::size_t threads = configured_threads();
  return threads;
}

void run(std::size_t parts, Task task, void* arg) {
  if (parts > 1 && parts <= 0xFFFF && max_threads() > 1 && !t_in_parts) {
    t_in_parts = true;
    const bool ran = pool()->try_run(parts, task, arg);
    t_in_parts = false;
    if (ran) return;
  }
  for (std::size_t k = 0; k < parts; ++k) task(arg, k);
}

}  // namespace tinylearn::par
