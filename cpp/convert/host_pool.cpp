#include "host_pool.h"

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
  if (parts <= 1 || helpers_.empty()) {
    for (std::int32_t k = 0; k < parts; ++k) task(arg, k);
    return;
  }
  task_ = task;
  arg_ = arg;
  parts_ = parts;
  pending_.store(int(helpers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job; ordered before the sleepers_ load
  if (sleepers_.load() > 0) {
    // A helper that counted itself asleep checks the generation under the lock before it waits,
    // so taking the lock here means it either sees the new generation or gets this notify.
    { std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
  }
  task(arg, 0);
  while (pending_.load(std::memory_order_acquire) != 0) TINYLEARN_PAUSE();
}

void HostPool::helper(int index) {
  std::uint64_t seen = 0;
  for (;;) {
    auto since = std::chrono::steady_clock::now();
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      TINYLEARN_PAUSE();
      if (++spins < 256) continue;
      spins = 0;
      if (std::chrono::steady_clock::now() - since < kSpin) continue;
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      since = std::chrono::steady_clock::now();
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    if (index < parts_) task_(arg_, index);
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

}  // namespace tinylearn
