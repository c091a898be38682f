// A fork-join pool for the parts of one operator (tlm_host.parallel), for single samples.
//
// An operator split over the cores lasts a few to a few hundred microseconds, and a model runs
// dozens of them per inference: waking threads through the OS (or an OpenMP parallel region,
// about 0.7 us each on the 2-core machine measured) would be a sizable share of the time. The
// helper threads therefore spin on a generation counter between operators, and sleep on a
// condition variable after 200 us without work (so an idle model costs no CPU), or as soon as
// the OS preempts them while they spin: another thread wants the core (another process's, or the
// caller's), and the spin would take its time. The caller likewise spins for its helpers' parts
// for 50 us at most, then sleeps until the last part ends.
//
// Parts are claimed, not assigned: the caller and each helper take their own part first (part 0
// for the caller, part i for helper i, so successive operators find their rows in the same
// core's caches), then any part still unclaimed, until none is left. A helper the OS has not
// scheduled (or that is still waking up) delays nothing: the caller runs its part too.
//
//   HostPool pool(1);                       // one helper: parts run on up to 2 threads
//   pool.run(2, task, arg);                 // task(arg, 0) and task(arg, 1), each once
//
// run() is not reentrant and must be called from one thread at a time (Int8Model holds its lock).
#ifndef TINYLEARN_CONVERT_HOST_POOL_H
#define TINYLEARN_CONVERT_HOST_POOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "tinylearn/micro/micro.h"

namespace tinylearn {

class HostPool {
 public:
  explicit HostPool(int helpers);
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  int threads() const { return int(helpers_.size()) + 1; }
  // task(arg, k) for k in [0, parts), each once, on the caller or a helper. Returns when all have
  // finished.
  void run(std::int32_t parts, tlm_task_fn task, void* arg);
  // tlm_host.parallel's signature, ctx = the pool.
  static void parallel(void* ctx, std::int32_t parts, tlm_task_fn task, void* arg);

 private:
  void helper(int home);
  // Claims and runs parts of generation `gen` (part `home` first) until none is left.
  void work(std::uint32_t gen, int home);
  static constexpr std::int32_t kMaxParts = 24;  // one claim bit each; more run on the caller

  std::vector<std::thread> helpers_;
  std::atomic<std::uint64_t> generation_{0};  // one more per run()
  // The run's claimed parts (a bit each) and part count, tagged with its generation (high 32
  // bits) so that a helper that wakes up late cannot claim a part of a later run.
  std::atomic<std::uint64_t> claims_{0};
  std::atomic<int> done_{0};  // parts finished in this run
  std::atomic<int> sleepers_{0};
  tlm_task_fn task_ = nullptr;
  void* arg_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_, finished_;  // helpers wait for work; the caller for their parts
  std::atomic<bool> caller_waits_{false};
  std::atomic<bool> stop_{false};
};

// Whether a single sample's operators are split over the pool, chosen from measured invokes.
//
// Splitting pays while the other cores are free. Where they are not (another process busy on
// one, a virtual machine's vCPUs sharing a physical core), the spinning helper competes with the
// caller for CPU time, and an inference split over both cores can take twice as long as on one.
// (DS-CNN on the 2-core build machine, C++ harness, medians of 50-call batches: with a busy loop
// pinned to the second core, 83-127 us split against 61-67 on one core; with that core free,
// 37-53 split. From Python, in turns with LiteRT, under the busy loop: 61-62 us per call always
// split, 48-53 with the chooser.) Results are the same bit for bit either way; only the time
// differs. So the chooser times both, in probes of 2 * kProbe calls that alternate between them
// (so that both meet the same conditions: a thread pool of another runtime still spinning, a
// spell of the host's), keeps the faster by the median, and probes again after a period that
// doubles from kFirstPeriod calls up to kPeriod. One core must take less than kMargin of the
// split time to be chosen: where both cost about the same, splitting stays.
//
//   SplitChooser c;
//   bool split = c.split();   // how to run this call
//   ...                       // run it, time it
//   c.record(seconds);        // that call's time
class SplitChooser {
 public:
  static constexpr int kProbe = 8;         // calls timed each way per probe
  static constexpr int kFirstPeriod = 16;  // calls in the chosen way after the first probe
  static constexpr int kPeriod = 512;      // ... at most, between later probes
  static constexpr double kMargin = 0.9;   // one core must take < kMargin of the split time

  bool split() const { return probing_ ? count_ % 2 == 0 : split_; }
  void record(double seconds);

 private:
  static double median(double* v, int n);

  bool probing_ = true;
  bool split_ = true;            // the chosen way, between probes
  int count_ = 0;                // calls of this probe, or since it
  int period_ = kFirstPeriod;    // calls until the next probe
  double split_times_[kProbe] = {};
  double one_times_[kProbe] = {};
};

}  // namespace tinylearn

#endif  // TINYLEARN_CONVERT_HOST_POOL_H
