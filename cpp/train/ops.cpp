#include "tinylearn/train/ops.h"

#include <cblas.h>

#include <cmath>

namespace tinylearn::ops {

// Both dense functions are single GEMM calls (OpenBLAS, both cores): for the Fashion-MNIST MLP
// this trained 10 epochs in a fraction of the time the plain loops took (77 s before).
void dense_forward(float* out, const float* inp, const float* weight, const float* bias,
                   std::size_t B, std::size_t C, std::size_t OC) {
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t j = 0; j < OC; ++j) out[b * OC + j] = bias ? bias[j] : 0.0f;
  // out (B, OC) += inp (B, C) . weight (C, OC)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(B), int(OC), int(C), 1.0f, inp,
              int(C), weight, int(OC), 1.0f, out, int(OC));
}

void dense_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                    const float* inp, const float* weight, std::size_t B, std::size_t C,
                    std::size_t OC) {
  if (dbias)
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < OC; ++j) dbias[j] += dout[b * OC + j];
  // dweight (C, OC) += inp^T (C, B) . dout (B, OC)
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(C), int(OC), int(B), 1.0f, inp, int(C),
              dout, int(OC), 1.0f, dweight, int(OC));
  // dinp (B, C) += dout (B, OC) . weight^T (OC, C)
  if (dinp)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(B), int(C), int(OC), 1.0f, dout,
                int(OC), weight, int(OC), 1.0f, dinp, int(C));
}

void relu_forward(float* out, const float* inp, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void relu_backward(float* __restrict dinp, const float* __restrict dout,
                   const float* __restrict out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;  // branchless: vectorizes
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
