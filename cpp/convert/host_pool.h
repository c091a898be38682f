// A fork-join pool for the parts of one operator (tlm_host.parallel), for single samples.
//
// An operator split over the cores lasts a few to a few hundred microseconds, and a model runs
// dozens of them per inference: waking threads through the OS (or an OpenMP parallel region,
// about 0.7 us each on the 2-core machine measured) would be a sizable share of the time. The
// helper threads therefore spin on a generation counter between operators, and sleep on a
// condition variable only after kSpinMicroseconds without work, so an idle model costs no CPU.
//
//   HostPool pool(1);                       // one helper: parts run on 2 threads
//   pool.run(2, task, arg);                 // task(arg, 0) here, task(arg, 1) on the helper
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
  // task(arg, k) for k in [0, parts), parts <= threads(): part 0 on the caller. Returns when all
  // have finished.
  void run(std::int32_t parts, tlm_task_fn task, void* arg);
  // tlm_host.parallel's signature, ctx = the pool.
  static void parallel(void* ctx, std::int32_t parts, tlm_task_fn task, void* arg);

 private:
  void helper(int index);

  std::vector<std::thread> helpers_;
  std::atomic<std::uint64_t> generation_{0};  // one more per run()
  std::atomic<int> pending_{0};               // helpers yet to finish this generation
  std::atomic<int> sleepers_{0};
  tlm_task_fn task_ = nullptr;
  void* arg_ = nullptr;
  std::int32_t parts_ = 0;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
};

}  // namespace tinylearn

#endif  // TINYLEARN_CONVERT_HOST_POOL_H
