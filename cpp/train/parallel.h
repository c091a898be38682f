// Work splitting for the training kernels: OpenMP over contiguous parts of a batch.
//
// The kernels split their batch (samples, or rows of a GEMM) into a few contiguous parts and run
// each part on a core, every part calling a single-threaded GEMM. OpenBLAS's own threading is
// switched off (blas_single_threaded): its worker threads spin-yield between the many small
// GEMMs of a training step and split each GEMM again, which measured slower on the Fashion-MNIST
// CNN than one GEMM per core. Parts are fixed by the batch and the thread count, and partial sums
// are added in part order, so a run is deterministic for a given OMP_NUM_THREADS.
#ifndef TINYLEARN_TRAIN_PARALLEL_H
#define TINYLEARN_TRAIN_PARALLEL_H

#include <cstddef>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tinylearn::par {

// Threads the kernels may use (OMP_NUM_THREADS, else the cores).
inline std::size_t max_threads() {
#ifdef _OPENMP
  const int t = omp_get_max_threads();
  return t > 0 ? std::size_t(t) : 1;
#else
  return 1;
#endif
}

// Parts to split `n` items into, when all of them together cost `work` (about one unit per
// multiply-add or element touched): one part below `min_work` per extra part, so that small
// problems do not pay for waking a thread (a few microseconds).
inline std::size_t parts_for(std::size_t n, double work, double min_work = 32768.0) {
  std::size_t p = max_threads();
  if (p > n) p = n;
  while (p > 1 && work < min_work * double(p)) --p;
  return p < 1 ? 1 : p;
}

// Item range [begin, end) of part `k` of `parts` over n items.
inline std::size_t part_begin(std::size_t n, std::size_t parts, std::size_t k) {
  return n / parts * k + (k < n % parts ? k : n % parts);
}

// Calls fn(k, begin, end) for the `parts` contiguous ranges of [0, n), in parallel. fn must not
// throw (validate before).
template <class F>
void for_parts(std::size_t n, std::size_t parts, F&& fn) {
  if (parts <= 1) {
    fn(std::size_t(0), std::size_t(0), n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(int(parts)) schedule(static, 1)
#endif
  for (long k = 0; k < long(parts); ++k)
    fn(std::size_t(k), part_begin(n, parts, std::size_t(k)), part_begin(n, parts, std::size_t(k) + 1));
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
