// Batch normalization kernels, declared in tinylearn/train/nn_ops.h.
// Per-channel reductions run in double over rows of C contiguous values (the inner loop over
// channels vectorizes); the (C)-sized scratch vectors are negligible next to the M * C work.
#include <cmath>
#include <vector>

#include "tinylearn/train/nn_ops.h"

namespace tinylearn::ops {

void batch_norm_forward_train(float* out, float* mean, float* inv_std, float* moving_mean,
                              float* moving_var, const float* inp, const float* gamma,
                              const float* beta, std::size_t M, std::size_t C, float momentum,
                              float epsilon) {
  std::vector<double> acc(C, 0.0);
  // Two passes (mean, then squared deviations): no cancellation for large means.
  for (std::size_t m = 0; m < M; ++m) {
    const float* x = inp + m * C;
    for (std::size_t c = 0; c < C; ++c) acc[c] += double(x[c]);
  }
  const double inv_m = M ? 1.0 / double(M) : 0.0;
  for (std::size_t c = 0; c < C; ++c) {
    mean[c] = float(acc[c] * inv_m);
    acc[c] = 0.0;
  }
  for (std::size_t m = 0; m < M; ++m) {
    const float* x = inp + m * C;
    for (std::size_t c = 0; c < C; ++c) {
      const double d = double(x[c]) - double(mean[c]);
      acc[c] += d * d;
    }
  }
  std::vector<float> scale(C), shift(C);
  for (std::size_t c = 0; c < C; ++c) {
    const double var = acc[c] * inv_m;  // biased, as Keras 3 (ops.moments)
    inv_std[c] = float(1.0 / std::sqrt(var + double(epsilon)));
    if (moving_mean) moving_mean[c] = moving_mean[c] * momentum + mean[c] * (1.0f - momentum);
    if (moving_var) moving_var[c] = moving_var[c] * momentum + float(var) * (1.0f - momentum);
    scale[c] = (gamma ? gamma[c] : 1.0f) * inv_std[c];
    shift[c] = (beta ? beta[c] : 0.0f) - mean[c] * scale[c];
  }
  for (std::size_t m = 0; m < M; ++m) {
    const float* x = inp + m * C;
    float* y = out + m * C;
    for (std::size_t c = 0; c < C; ++c) y[c] = x[c] * scale[c] + shift[c];
  }
}

void batch_norm_forward_inference(float* out, const float* inp, const float* gamma,
                                  const float* beta, const float* moving_mean,
                                  const float* moving_var, std::size_t M, std::size_t C,
                                  float epsilon) {
  std::vector<float> scale(C), shift(C);
  for (std::size_t c = 0; c < C; ++c) {
    const float inv = float(1.0 / std::sqrt(double(moving_var[c]) + double(epsilon)));
    scale[c] = (gamma ? gamma[c] : 1.0f) * inv;
    shift[c] = (beta ? beta[c] : 0.0f) - moving_mean[c] * scale[c];
  }
  for (std::size_t m = 0; m < M; ++m) {
    const float* x = inp + m * C;
    float* y = out + m * C;
    for (std::size_t c = 0; c < C; ++c) y[c] = x[c] * scale[c] + shift[c];
  }
}

void batch_norm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                         const float* inp, const float* mean, const float* inv_std,
                         const float* gamma, std::size_t M, std::size_t C) {
  // sum_d = sum_m dout, sum_dx = sum_m dout * xhat; then
  // dx = gamma * inv_std * (dout - sum_d / M - xhat * sum_dx / M).
  std::vector<double> sum_d(C, 0.0), sum_dx(C, 0.0);
  for (std::size_t m = 0; m < M; ++m) {
    const float* x = inp + m * C;
    const float* d = dout + m * C;
    for (std::size_t c = 0; c < C; ++c) {
      const float xhat = (x[c] - mean[c]) * inv_std[c];
      sum_d[c] += double(d[c]);
      sum_dx[c] += double(d[c]) * double(xhat);
    }
  }
  for (std::size_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] += float(sum_d[c]);
    if (dgamma) dgamma[c] += float(sum_dx[c]);
  }
  if (!dinp || M == 0) return;
  std::vector<float> k(C), mean_d(C), mean_dx(C);
  const double inv_m = 1.0 / double(M);
  for (std::size_t c = 0; c < C; ++c) {
    k[c] = (gamma ? gamma[c] : 1.0f) * inv_std[c];
    mean_d[c] = float(sum_d[c] * inv_m);
    mean_dx[c] = float(sum_dx[c] * inv_m);
  }
  for (std::size_t m = 0; m < M; ++m) {
    const float* x = inp + m * C;
    const float* d = dout + m * C;
    float* dx = dinp + m * C;
    for (std::size_t c = 0; c < C; ++c) {
      const float xhat = (x[c] - mean[c]) * inv_std[c];
      dx[c] += k[c] * (d[c] - mean_d[c] - xhat * mean_dx[c]);
    }
  }
}

void batch_norm_backward_inference(float* dinp, float* dgamma, float* dbeta, const float* dout,
                                   const float* inp, const float* gamma,
                                   const float* moving_mean, const float* moving_var,
                                   std::size_t M, std::size_t C, float epsilon) {
  std::vector<float> inv(C), k(C);
  for (std::size_t c = 0; c < C; ++c) {
    inv[c] = float(1.0 / std::sqrt(double(moving_var[c]) + double(epsilon)));
    k[c] = (gamma ? gamma[c] : 1.0f) * inv[c];
  }
  if (dgamma || dbeta) {
    std::vector<double> sum_d(C, 0.0), sum_dx(C, 0.0);
    for (std::size_t m = 0; m < M; ++m) {
      const float* x = inp + m * C;
      const float* d = dout + m * C;
      for (std::size_t c = 0; c < C; ++c) {
        sum_d[c] += double(d[c]);
        sum_dx[c] += double(d[c]) * double((x[c] - moving_mean[c]) * inv[c]);
      }
    }
    for (std::size_t c = 0; c < C; ++c) {
      if (dbeta) dbeta[c] += float(sum_d[c]);
      if (dgamma) dgamma[c] += float(sum_dx[c]);
    }
  }
  if (!dinp) return;
  for (std::size_t m = 0; m < M; ++m) {
    const float* d = dout + m * C;
    float* dx = dinp + m * C;
    for (std::size_t c = 0; c < C; ++c) dx[c] += k[c] * d[c];
  }
}

}  // namespace tinylearn::ops
