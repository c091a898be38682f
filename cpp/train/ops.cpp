#include "tinylearn/train/ops.h"

#include <cmath>

namespace tinylearn::ops {

void dense_forward(float* out, const float* inp, const float* weight, const float* bias,
                   std::size_t B, std::size_t C, std::size_t OC) {
  for (std::size_t b = 0; b < B; ++b) {
    float* o = out + b * OC;
    for (std::size_t j = 0; j < OC; ++j) o[j] = bias ? bias[j] : 0.0f;
    // Row-major kernel: the inner loop runs along a contiguous kernel row (vectorizes).
    for (std::size_t c = 0; c < C; ++c) {
      const float x = inp[b * C + c];
      const float* w = weight + c * OC;
      for (std::size_t j = 0; j < OC; ++j) o[j] += x * w[j];
    }
  }
}

void dense_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                    const float* inp, const float* weight, std::size_t B, std::size_t C,
                    std::size_t OC) {
  for (std::size_t b = 0; b < B; ++b) {
    const float* d = dout + b * OC;
    if (dbias)
      for (std::size_t j = 0; j < OC; ++j) dbias[j] += d[j];
    for (std::size_t c = 0; c < C; ++c) {
      const float x = inp[b * C + c];
      float* dw = dweight + c * OC;
      const float* w = weight + c * OC;
      float acc = 0.0f;
      for (std::size_t j = 0; j < OC; ++j) {
        dw[j] += x * d[j];
        acc += w[j] * d[j];
      }
      if (dinp) dinp[b * C + c] += acc;
    }
  }
}

void relu_forward(float* out, const float* inp, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void relu_backward(float* dinp, const float* dout, const float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (out[i] > 0.0f) dinp[i] += dout[i];
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
