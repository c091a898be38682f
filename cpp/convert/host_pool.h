// A fork-join pool for the parts of one operator (tlm_host.parallel), for single samples.
//
// An operator split over the cores lasts a few to a few hundred microseconds, and a model runs
// dozens of them per inference: waking threads through the OS (or an OpenMP parallel region,
// about 0.7 us each on the 2-core machine measured) would be a sizable share of the time. The
// helper threads therefore spin on a generation counter between operators, and sleep on a
// condition variable only after kSpinMicroseconds without work, so an idle model costs no CPU.
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
  std::condition_variable wake_;
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
// differs. So the chooser times both: kProbe calls split, then kProbe on one core (each after a
// call it does not count, which wakes or settles the helper), keeps the faster by the median, and
// every kPeriod calls times the other way again, switching when it takes less than kMargin of the
// chosen way's recent median. Where both cost about the same, splitting stays.
//
//   SplitChooser c;
//   bool split = c.split();   // how to run this call
//   ...                       // run it, time it
//   c.record(seconds);        // that call's time
class SplitChooser {
 public:
  static constexpr int kProbe = 8;       // calls timed per measurement of a mode
  static constexpr int kPeriod = 512;    // calls in the chosen mode between measurements
  static constexpr double kMargin = 0.9;  // the other mode must take < kMargin of the time

  bool split() const { return phase_ == Phase::kRun ? split_ : probing_split_; }
  void record(double seconds);

 private:
  enum class Phase { kFirstSplit, kFirstOne, kRun, kOther };
  static double median(double* v, int n);
  void start_probe(bool split);

  Phase phase_ = Phase::kFirstSplit;
  bool split_ = true;          // the chosen mode (phase kRun)
  bool probing_split_ = true;  // the mode being timed (other phases)
  int count_ = -1;             // calls of the current phase; -1: the untimed first one
  double probe_[kProbe] = {};  // the probe's times
  double first_ = 0.0;         // the first measurement's median (split), against the second
  double recent_[kProbe] = {};  // the chosen mode's last kProbe times (a ring)
  int recent_n_ = 0;
};

}  // namespace tinylearn

#endif  // TINYLEARN_CONVERT_HOST_POOL_H
