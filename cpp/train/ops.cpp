#include "tinylearn/train/ops.h"

#include "blas.h"

#include <cmath>
#include <mutex>

#include "parallel.h"

namespace tinylearn::par {

void blas_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

}  // namespace tinylearn::par

namespace tinylearn::ops {

// Both dense functions are GEMM calls (OpenBLAS), one per core over a part of the problem: for
// the Fashion-MNIST MLP this trained 10 epochs in a fraction of the time the plain loops took
// (77 s before).
void dense_forward(float* out, const float* inp, const float* weight, const float* bias,
                   std::size_t B, std::size_t C, std::size_t OC) {
  par::blas_single_threaded();
  // Rows of the batch split over the cores; out (b, OC) += inp (b, C) . weight (C, OC).
  par::for_parts(B, par::parts_for(B, double(B) * double(C) * double(OC)),
                 [&](std::size_t, std::size_t b0, std::size_t b1) {
                   if (b1 == b0) return;
                   for (std::size_t b = b0; b < b1; ++b)
                     for (std::size_t j = 0; j < OC; ++j) out[b * OC + j] = bias ? bias[j] : 0.0f;
                   cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(b1 - b0), int(OC),
                               int(C), 1.0f, inp + b0 * C, int(C), weight, int(OC), 1.0f,
                               out + b0 * OC, int(OC));
                 });
}

void dense_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                    const float* inp, const float* weight, std::size_t B, std::size_t C,
                    std::size_t OC) {
  par::blas_single_threaded();
  if (dbias)
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < OC; ++j) dbias[j] += dout[b * OC + j];
  const double work = double(B) * double(C) * double(OC);
  // dweight (C, OC) += inp^T (C, B) . dout (B, OC): the rows of dweight split over the cores
  // (inp's columns c0..c1 with leading dimension C), so no part sums into another's output.
  if (dweight)
    par::for_parts(C, par::parts_for(C, work), [&](std::size_t, std::size_t c0, std::size_t c1) {
      if (c1 == c0) return;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(c1 - c0), int(OC), int(B), 1.0f,
                  inp + c0, int(C), dout, int(OC), 1.0f, dweight + c0 * OC, int(OC));
    });
  // dinp (B, C) += dout (B, OC) . weight^T (OC, C): rows of the batch split over the cores.
  if (dinp)
    par::for_parts(B, par::parts_for(B, work), [&](std::size_t, std::size_t b0, std::size_t b1) {
      if (b1 == b0) return;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(b1 - b0), int(C), int(OC), 1.0f,
                  dout + b0 * OC, int(OC), weight, int(OC), 1.0f, dinp + b0 * C, int(C));
    });
}

void relu_forward(float* out, const float* inp, std::size_t n) {
  par::for_range(n, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
  });
}

void relu_backward(float* __restrict dinp, const float* __restrict dout,
                   const float* __restrict out, std::size_t n) {
  par::for_range(n, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      const float g = dout[i];  // loaded unconditionally, so the select vectorizes
      dinp[i] += out[i] > 0.0f ? g : 0.0f;
    }
  });
}

float mse_forward(const float* pred, const float* target, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double e = double(pred[i]) - double(target[i]);
    s += e * e;
  }
  return n ? float(s / double(n)) : 0.0f;
}

void mse_backward(float* dpred, const float* pred, const float* target, std::size_t n) {
  const float k = 2.0f / float(n);
  for (std::size_t i = 0; i < n; ++i) dpred[i] += k * (pred[i] - target[i]);
}

float mae_forward(const float* pred, const float* target, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += std::fabs(double(pred[i]) - double(target[i]));
  return n ? float(s / double(n)) : 0.0f;
}

}  // namespace tinylearn::ops
