// Activation and dropout kernels, declared in tinylearn/train/nn_ops.h.
#include <cmath>
#include <stdexcept>
#include <string>

#include "tinylearn/train/nn_ops.h"

#include "parallel.h"

namespace tinylearn::ops {

void relu6_forward(float* out, const float* inp, std::size_t n) {
  par::for_range(n, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      const float x = inp[i];
      out[i] = x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
    }
  });
}

void relu6_backward(float* __restrict dinp, const float* __restrict dout, const float* __restrict out,
                    std::size_t n) {
  par::for_range(n, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      const float g = dout[i], y = out[i];  // loaded unconditionally, so the select vectorizes
      dinp[i] += (y > 0.0f) & (y < 6.0f) ? g : 0.0f;
    }
  });
}

void sigmoid_forward(float* out, const float* inp, std::size_t n) {
  par::for_range(n, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      const float x = inp[i];
      // exp of a non-positive argument only: no overflow, and 1 - out keeps its precision.
      const float e = std::exp(-std::fabs(x));
      out[i] = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    }
  }, 16.0);
}

void sigmoid_backward(float* dinp, const float* dout, const float* out, std::size_t n) {
  par::for_range(n, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) dinp[i] += dout[i] * out[i] * (1.0f - out[i]);
  });
}

void tanh_forward(float* out, const float* inp, std::size_t n) {
  par::for_range(n, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) out[i] = std::tanh(inp[i]);
  }, 16.0);
}

void tanh_backward(float* dinp, const float* dout, const float* out, std::size_t n) {
  par::for_range(n, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) dinp[i] += dout[i] * (1.0f - out[i] * out[i]);
  });
}

void softmax_forward(float* out, const float* inp, std::size_t B, std::size_t K) {
  for (std::size_t b = 0; b < B; ++b) {
    const float* x = inp + b * K;
    float* y = out + b * K;
    if (K == 0) continue;
    float mx = x[0];
    for (std::size_t k = 1; k < K; ++k) mx = x[k] > mx ? x[k] : mx;
    float sum = 0.0f;
    for (std::size_t k = 0; k < K; ++k) {
      y[k] = std::exp(x[k] - mx);
      sum += y[k];
    }
    const float inv = 1.0f / sum;  // sum >= 1: the max term is exp(0)
    for (std::size_t k = 0; k < K; ++k) y[k] *= inv;
  }
}

void softmax_backward(float* dinp, const float* dout, const float* out, std::size_t B,
                      std::size_t K) {
  for (std::size_t b = 0; b < B; ++b) {
    const float* d = dout + b * K;
    const float* y = out + b * K;
    float* dx = dinp + b * K;
    float dot = 0.0f;
    for (std::size_t k = 0; k < K; ++k) dot += d[k] * y[k];
    for (std::size_t k = 0; k < K; ++k) dx[k] += y[k] * (d[k] - dot);
  }
}

void dropout_forward(float* out, float* mask, const float* inp, std::size_t n, float rate,
                     Random& rng) {
  if (!(rate >= 0.0f && rate < 1.0f))
    throw std::invalid_argument("dropout: rate must be in [0, 1), got " + std::to_string(rate));
  if (rate == 0.0f) {
    for (std::size_t i = 0; i < n; ++i) {
      mask[i] = 1.0f;
      out[i] = inp[i];
    }
    return;
  }
  const float scale = 1.0f / (1.0f - rate);
  for (std::size_t i = 0; i < n; ++i) mask[i] = rng.uniform() >= rate ? scale : 0.0f;
  for (std::size_t i = 0; i < n; ++i) out[i] = inp[i] * mask[i];
}

void dropout_backward(float* dinp, const float* dout, const float* mask, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dinp[i] += dout[i] * mask[i];
}

}  // namespace tinylearn::ops
