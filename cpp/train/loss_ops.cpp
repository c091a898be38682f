// Loss and metric kernels, declared in tinylearn/train/nn_ops.h. Loss values are accumulated
// in double; gradients are written in float.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "tinylearn/train/nn_ops.h"

namespace tinylearn::ops {

namespace {

// Keras's backend.epsilon() and the clip bounds as float32 tensors hold them.
constexpr float kEps = 1e-7f;
constexpr float kOneMinusEps = 1.0f - kEps;

inline float clip_prob(float p) { return p < kEps ? kEps : (p > kOneMinusEps ? kOneMinusEps : p); }
// tf.clip_by_value passes the gradient only inside [lo, hi].
inline bool clip_passes(float p) { return p >= kEps && p <= kOneMinusEps; }

inline double weight(const float* sample_weight, std::size_t i) {
  return sample_weight ? double(sample_weight[i]) : 1.0;
}

inline float stable_sigmoid(float z) {
  const float e = std::exp(-std::fabs(z));
  return z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

// log(sum_k exp(z_k)) of one row, with max subtraction.
inline double log_sum_exp(const float* z, std::size_t K, float& mx) {
  mx = z[0];
  for (std::size_t k = 1; k < K; ++k) mx = z[k] > mx ? z[k] : mx;
  double s = 0.0;
  for (std::size_t k = 0; k < K; ++k) s += std::exp(double(z[k]) - double(mx));
  return double(mx) + std::log(s);
}

inline std::size_t argmax_row(const float* x, std::size_t K) {
  std::size_t best = 0;
  for (std::size_t k = 1; k < K; ++k)
    if (x[k] > x[best]) best = k;
  return best;
}

}  // namespace

// ----------------------------------------------------------------------------- binary

float binary_crossentropy_forward(const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K,
                                  bool from_logits) {
  if (B == 0 || K == 0) return 0.0f;
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    const float* p = pred + i * K;
    const float* y = target + i * K;
    double s = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      const double yk = y[k];
      if (from_logits) {
        const double z = p[k];
        s += std::max(z, 0.0) - z * yk + std::log1p(std::exp(-std::fabs(z)));
      } else {
        const double c = clip_prob(p[k]);
        s -= yk * std::log(c) + (1.0 - yk) * std::log(1.0 - c);
      }
    }
    total += weight(sample_weight, i) * s / double(K);
  }
  return float(total / double(B));
}

void binary_crossentropy_backward(float* dpred, const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K,
                                  bool from_logits) {
  for (std::size_t i = 0; i < B; ++i) {
    const float a = float(weight(sample_weight, i) / (double(B) * double(K)));
    const float* p = pred + i * K;
    const float* y = target + i * K;
    float* d = dpred + i * K;
    if (from_logits) {
      for (std::size_t k = 0; k < K; ++k) d[k] += a * (stable_sigmoid(p[k]) - y[k]);
    } else {
      // d/dc -(y log c + (1 - y) log(1 - c)) = (c - y) / (c (1 - c))
      for (std::size_t k = 0; k < K; ++k)
        if (clip_passes(p[k])) d[k] += a * (p[k] - y[k]) / (p[k] * (1.0f - p[k]));
    }
  }
}

// ----------------------------------------------------------------------------- categorical

float categorical_crossentropy_forward(const float* pred, const float* target,
                                       const float* sample_weight, std::size_t B,
                                       std::size_t K, bool from_logits) {
  if (B == 0 || K == 0) return 0.0f;
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    const float* p = pred + i * K;
    const float* y = target + i * K;
    double l = 0.0;
    if (from_logits) {
      float mx;
      const double lse = log_sum_exp(p, K, mx);
      for (std::size_t k = 0; k < K; ++k) l += double(y[k]) * (lse - double(p[k]));
    } else {
      float s = 0.0f;
      for (std::size_t k = 0; k < K; ++k) s += p[k];
      for (std::size_t k = 0; k < K; ++k) l -= double(y[k]) * std::log(double(clip_prob(p[k] / s)));
    }
    total += weight(sample_weight, i) * l;
  }
  return float(total / double(B));
}

void categorical_crossentropy_backward(float* dpred, const float* pred, const float* target,
                                       const float* sample_weight, std::size_t B,
                                       std::size_t K, bool from_logits) {
  if (K == 0) return;
  for (std::size_t i = 0; i < B; ++i) {
    const float a = float(weight(sample_weight, i) / double(B));
    const float* p = pred + i * K;
    const float* y = target + i * K;
    float* d = dpred + i * K;
    if (from_logits) {
      // d/dz = softmax(z) * sum(y) - y
      float mx = p[0], ysum = 0.0f;
      for (std::size_t k = 1; k < K; ++k) mx = p[k] > mx ? p[k] : mx;
      float s = 0.0f;
      for (std::size_t k = 0; k < K; ++k) {
        s += std::exp(p[k] - mx);
        ysum += y[k];
      }
      const float inv = 1.0f / s;
      for (std::size_t k = 0; k < K; ++k) d[k] += a * (std::exp(p[k] - mx) * inv * ysum - y[k]);
    } else {
      // q = p / s; dL/dq_k = -y_k / q_k where the clip passes (else 0);
      // dL/dp_k = (dL/dq_k - sum_j dL/dq_j q_j) / s, and dL/dq_j q_j = -y_j.
      float s = 0.0f;
      for (std::size_t k = 0; k < K; ++k) s += p[k];
      float dot = 0.0f;
      for (std::size_t k = 0; k < K; ++k)
        if (clip_passes(p[k] / s)) dot -= y[k];
      for (std::size_t k = 0; k < K; ++k) {
        const float q = p[k] / s;
        const float g = clip_passes(q) ? -y[k] / q : 0.0f;
        d[k] += a * (g - dot) / s;
      }
    }
  }
}

// ----------------------------------------------------------------------------- sparse

void check_sparse_labels(const std::int32_t* labels, std::size_t B, std::size_t K) {
  for (std::size_t i = 0; i < B; ++i)
    if (labels[i] < 0 || std::size_t(labels[i]) >= K)
      throw std::invalid_argument("sparse_categorical_crossentropy: label " +
                                  std::to_string(labels[i]) + " at sample " + std::to_string(i) +
                                  " is outside the valid range [0, " + std::to_string(K) +
                                  ") of the " + std::to_string(K) + " classes");
}

float sparse_categorical_crossentropy_forward(const float* pred, const std::int32_t* labels,
                                              const float* sample_weight, std::size_t B,
                                              std::size_t K, bool from_logits) {
  check_sparse_labels(labels, B, K);
  if (B == 0) return 0.0f;
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    const float* p = pred + i * K;
    const std::size_t y = std::size_t(labels[i]);
    double l;
    if (from_logits) {
      float mx;
      l = log_sum_exp(p, K, mx) - double(p[y]);
    } else {
      // TensorFlow backend: sparse_softmax_cross_entropy_with_logits(log(clip(p))).
      double s = 0.0;
      for (std::size_t k = 0; k < K; ++k) s += double(clip_prob(p[k]));
      l = std::log(s) - std::log(double(clip_prob(p[y])));
    }
    total += weight(sample_weight, i) * l;
  }
  return float(total / double(B));
}

void sparse_categorical_crossentropy_backward(float* dpred, const float* pred,
                                              const std::int32_t* labels,
                                              const float* sample_weight, std::size_t B,
                                              std::size_t K, bool from_logits) {
  check_sparse_labels(labels, B, K);
  for (std::size_t i = 0; i < B; ++i) {
    const float a = float(weight(sample_weight, i) / double(B));
    const float* p = pred + i * K;
    const std::size_t y = std::size_t(labels[i]);
    float* d = dpred + i * K;
    if (from_logits) {
      // d/dz = softmax(z) - onehot(y)
      float mx = p[0];
      for (std::size_t k = 1; k < K; ++k) mx = p[k] > mx ? p[k] : mx;
      float s = 0.0f;
      for (std::size_t k = 0; k < K; ++k) s += std::exp(p[k] - mx);
      const float inv = 1.0f / s;
      for (std::size_t k = 0; k < K; ++k) d[k] += a * std::exp(p[k] - mx) * inv;
      d[y] -= a;
    } else {
      // L = log(sum_k c_k) - log(c_y), c = clip(p): dL/dp_k = 1 / S - [k == y] / c_y inside
      // the clip interval, 0 outside.
      float S = 0.0f;
      for (std::size_t k = 0; k < K; ++k) S += clip_prob(p[k]);
      const float inv_s = 1.0f / S;
      for (std::size_t k = 0; k < K; ++k)
        if (clip_passes(p[k])) d[k] += a * inv_s;
      if (clip_passes(p[y])) d[y] -= a / p[y];
    }
  }
}

// ----------------------------------------------------------------------------- MSE / MAE

void mae_backward(float* dpred, const float* pred, const float* target, std::size_t n) {
  const float k = 1.0f / float(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float e = pred[i] - target[i];
    dpred[i] += e > 0.0f ? k : (e < 0.0f ? -k : 0.0f);
  }
}

float mean_squared_error_forward(const float* pred, const float* target,
                                 const float* sample_weight, std::size_t B, std::size_t K) {
  if (B == 0 || K == 0) return 0.0f;
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    double s = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      const double e = double(pred[i * K + k]) - double(target[i * K + k]);
      s += e * e;
    }
    total += weight(sample_weight, i) * s / double(K);
  }
  return float(total / double(B));
}

void mean_squared_error_backward(float* dpred, const float* pred, const float* target,
                                 const float* sample_weight, std::size_t B, std::size_t K) {
  for (std::size_t i = 0; i < B; ++i) {
    const float a = float(2.0 * weight(sample_weight, i) / (double(B) * double(K)));
    for (std::size_t k = 0; k < K; ++k)
      dpred[i * K + k] += a * (pred[i * K + k] - target[i * K + k]);
  }
}

float mean_absolute_error_forward(const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K) {
  if (B == 0 || K == 0) return 0.0f;
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    double s = 0.0;
    for (std::size_t k = 0; k < K; ++k)
      s += std::fabs(double(pred[i * K + k]) - double(target[i * K + k]));
    total += weight(sample_weight, i) * s / double(K);
  }
  return float(total / double(B));
}

void mean_absolute_error_backward(float* dpred, const float* pred, const float* target,
                                  const float* sample_weight, std::size_t B, std::size_t K) {
  for (std::size_t i = 0; i < B; ++i) {
    const float a = float(weight(sample_weight, i) / (double(B) * double(K)));
    for (std::size_t k = 0; k < K; ++k) {
      const float e = pred[i * K + k] - target[i * K + k];
      dpred[i * K + k] += e > 0.0f ? a : (e < 0.0f ? -a : 0.0f);
    }
  }
}

// ----------------------------------------------------------------------------- Huber

float huber_forward(const float* pred, const float* target, const float* sample_weight,
                    std::size_t B, std::size_t K, float delta) {
  if (B == 0 || K == 0) return 0.0f;
  const double dl = delta;
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    double s = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      const double e = std::fabs(double(pred[i * K + k]) - double(target[i * K + k]));
      s += e <= dl ? 0.5 * e * e : dl * e - 0.5 * dl * dl;
    }
    total += weight(sample_weight, i) * s / double(K);
  }
  return float(total / double(B));
}

void huber_backward(float* dpred, const float* pred, const float* target,
                    const float* sample_weight, std::size_t B, std::size_t K, float delta) {
  for (std::size_t i = 0; i < B; ++i) {
    const float a = float(weight(sample_weight, i) / (double(B) * double(K)));
    for (std::size_t k = 0; k < K; ++k) {
      const float e = pred[i * K + k] - target[i * K + k];
      dpred[i * K + k] += a * std::clamp(e, -delta, delta);
    }
  }
}

// ----------------------------------------------------------------------------- distillation

namespace {

// softmax(z / T) of one row, in double, where z are logits or log(clip(p)) of probabilities.
void soft_targets(const float* out, std::size_t K, double T, bool from_logits, double* prob) {
  double mx = -HUGE_VAL;
  for (std::size_t k = 0; k < K; ++k) {
    prob[k] = (from_logits ? double(out[k]) : std::log(double(clip_prob(out[k])))) / T;
    mx = prob[k] > mx ? prob[k] : mx;
  }
  double s = 0.0;
  for (std::size_t k = 0; k < K; ++k) s += (prob[k] = std::exp(prob[k] - mx));
  for (std::size_t k = 0; k < K; ++k) prob[k] /= s;
}

inline double clip_kl(double p) { return p < double(kEps) ? double(kEps) : (p > 1.0 ? 1.0 : p); }

}  // namespace

float kl_distillation_forward(const float* student, const float* teacher,
                              const float* sample_weight, std::size_t B, std::size_t K,
                              float temperature, bool student_from_logits,
                              bool teacher_from_logits) {
  if (B == 0 || K == 0) return 0.0f;
  std::vector<double> p(K), q(K);
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    soft_targets(teacher + i * K, K, temperature, teacher_from_logits, p.data());
    soft_targets(student + i * K, K, temperature, student_from_logits, q.data());
    double l = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      const double P = clip_kl(p[k]);
      l += P * (std::log(P) - std::log(clip_kl(q[k])));
    }
    total += weight(sample_weight, i) * l;
  }
  return float(total / double(B));
}

void kl_distillation_backward(float* dstudent, const float* student, const float* teacher,
                              const float* sample_weight, std::size_t B, std::size_t K,
                              float temperature, bool student_from_logits,
                              bool teacher_from_logits, float scale) {
  if (B == 0 || K == 0) return;
  std::vector<double> p(K), q(K), g(K);
  const double T = temperature;
  for (std::size_t i = 0; i < B; ++i) {
    const double a = double(scale) * weight(sample_weight, i) / double(B);
    const float* s = student + i * K;
    soft_targets(teacher + i * K, K, T, teacher_from_logits, p.data());
    soft_targets(s, K, T, student_from_logits, q.data());
    // dl/dq_k = -P_k / q_k where the clip of q passes; through the softmax,
    // dl/du_j = q_j (g_j - sum_k g_k q_k) with u = z / T, so dl/dz_j = that / T.
    double dot = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      g[k] = q[k] >= double(kEps) ? -clip_kl(p[k]) / q[k] : 0.0;
      dot += g[k] * q[k];
    }
    for (std::size_t k = 0; k < K; ++k) {
      double dz = q[k] * (g[k] - dot) / T;
      // Probability outputs: z = log(clip(out)), dz/dout = 1 / out inside the clip, else 0.
      if (!student_from_logits) dz = clip_passes(s[k]) ? dz / double(s[k]) : 0.0;
      dstudent[i * K + k] += float(a * dz);
    }
  }
}

// ----------------------------------------------------------------------------- metrics

float sparse_categorical_accuracy(const float* pred, const std::int32_t* labels, std::size_t B,
                                  std::size_t K) {
  if (B == 0 || K == 0) return 0.0f;
  std::size_t correct = 0;
  for (std::size_t i = 0; i < B; ++i)
    correct += labels[i] >= 0 && argmax_row(pred + i * K, K) == std::size_t(labels[i]);
  return float(double(correct) / double(B));
}

float categorical_accuracy(const float* pred, const float* target, std::size_t B, std::size_t K) {
  if (B == 0 || K == 0) return 0.0f;
  std::size_t correct = 0;
  for (std::size_t i = 0; i < B; ++i)
    correct += argmax_row(pred + i * K, K) == argmax_row(target + i * K, K);
  return float(double(correct) / double(B));
}

float binary_accuracy(const float* pred, const float* target, std::size_t n, float threshold) {
  if (n == 0) return 0.0f;
  std::size_t correct = 0;
  for (std::size_t i = 0; i < n; ++i) correct += (pred[i] > threshold) == (target[i] > 0.5f);
  return float(double(correct) / double(n));
}

}  // namespace tinylearn::ops
