// Work splitting for the training kernels (and the int8 runner's batches): a batch split into
// contiguous parts, run on a small process-wide thread pool (parallel.cpp), each part calling a
// single-threaded GEMM. OpenBLAS's own threading is switched off (blas_single_threaded): its
// worker threads spin-yield between the many small GEMMs of a training step and split each GEMM
// again, which measured slower on the Fashion-MNIST CNN than one GEMM per core.
//
// Parts are fixed by the batch and the thread count, and partial sums are added in part order,
// so a run is deterministic for a given thread count whichever thread runs which part. The
// threads claim the parts as they go (the caller too), so a core that another process keeps busy
// takes fewer of them, and a waiting thread sleeps after a short poll that is off whenever
// another process competes for the cores (parallel.cpp says why).
#ifndef TINYLEARN_TRAIN_PARALLEL_H
#define TINYLEARN_TRAIN_PARALLEL_H

#include <cstddef>

namespace tinylearn::par {

// Threads the kernels may use: OMP_NUM_THREADS (its first number) when set, else the CPUs this
// process may run on. Read once.
std::size_t max_threads();

// Parts per thread where a problem is large enough: the spare parts go to whichever thread is
// free first (parallel.cpp has the measurements).
constexpr std::size_t kPartsPerThread = 2;

// At most `most` parts of `n` items that cost `work` in all (about one unit per multiply-add or
// element touched), each at least `min_work`, so that small problems do not pay for waking a
// thread (tens of microseconds on a busy machine).
inline std::size_t split_count(std::size_t most, std::size_t n, double work, double min_work) {
  std::size_t p = most < n ? most : n;
  while (p > 1 && work < min_work * double(p)) --p;
  return p < 1 ? 1 : p;
}

// Threads worth using: one part per thread.
inline std::size_t threads_for(std::size_t n, double work, double min_work) {
  return split_count(max_threads(), n, work, min_work);
}

// Parts to split into: kPartsPerThread per thread, and one part (no split) with one thread.
inline std::size_t parts_for(std::size_t n, double work, double min_work = 32768.0) {
  return max_threads() <= 1 ? 1 : split_count(max_threads() * kPartsPerThread, n, work, min_work);
}

// Item range [begin, end) of part `k` of `parts` over n items.
inline std::size_t part_begin(std::size_t n, std::size_t parts, std::size_t k) {
  return n / parts * k + (k < n % parts ? k : n % parts);
}

using Task = void (*)(void* arg, std::size_t part);
// task(arg, k) for k in [0, parts), each once, on the pool's threads and the caller; returns when
// all have finished. Runs them on the caller in order when the pool is busy with another
// caller's parts, from inside a part, or with one thread.
void run(std::size_t parts, Task task, void* arg);

// Calls fn(k, begin, end) for the `parts` contiguous ranges of [0, n), in parallel. fn must not
// throw (validate before).
template <class F>
void for_parts(std::size_t n, std::size_t parts, F&& fn) {
  if (parts <= 1) {
    fn(std::size_t(0), std::size_t(0), n);
    return;
  }
  struct Job {
    F& fn;
    std::size_t n, parts;
  } job{fn, n, parts};
  run(parts, [](void* arg, std::size_t k) {
    Job& j = *static_cast<Job*>(arg);
    j.fn(k, part_begin(j.n, j.parts, k), part_begin(j.n, j.parts, k + 1));
  }, &job);
}

// Elementwise loops: fn(begin, end) over [0, n), split when n is large.
template <class F>
void for_range(std::size_t n, F&& fn, double work_per_item = 1.0) {
  for_parts(n, parts_for(n, double(n) * work_per_item, 65536.0),
            [&](std::size_t, std::size_t b, std::size_t e) { fn(b, e); });
}

// Makes OpenBLAS single-threaded (once per process); the kernels parallelize around it.
void blas_single_threaded();

}  // namespace tinylearn::par

#endif  // TINYLEARN_TRAIN_PARALLEL_H
