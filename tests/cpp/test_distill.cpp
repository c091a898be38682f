// Knowledge distillation's loss (Hinton et al. 2015, the Keras example) against a double
// reference written from the formula, its gradient against central finite differences, and the
// Model's distillation loss against the two terms computed separately.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "tinylearn/train/model.h"
#include "tinylearn/train/nn_ops.h"
#include "tl_reference.h"

namespace {

namespace ops = tinylearn::ops;
using tlref::central_diff;
using tlref::check_close;
using Vec = std::vector<double>;

std::vector<float> random_floats(tlref::Rng& rng, std::size_t n, double lo, double hi) {
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.uniform(lo, hi));
  return v;
}

// softmax(z / T) of each row; probabilities enter as z = log(clip(p, 1e-7, 1 - 1e-7)).
Vec soft(const Vec& out, std::size_t B, std::size_t K, double T, bool from_logits) {
  const double eps = double(1e-7f), hi = 1.0 - double(1e-7f);
  Vec p(B * K);
  for (std::size_t i = 0; i < B; ++i) {
    double mx = -1e300, s = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      const double v = out[i * K + k];
      p[i * K + k] = (from_logits ? v : std::log(std::min(std::max(v, eps), hi))) / T;
      mx = std::max(mx, p[i * K + k]);
    }
    for (std::size_t k = 0; k < K; ++k) s += (p[i * K + k] = std::exp(p[i * K + k] - mx));
    for (std::size_t k = 0; k < K; ++k) p[i * K + k] /= s;
  }
  return p;
}

// Keras's KLDivergence on the softened distributions, sum_i w_i kl_i / B.
double kl_ref(const Vec& s, const Vec& t, const std::vector<float>* w, std::size_t B, std::size_t K,
              double T, bool s_logits, bool t_logits) {
  const Vec q = soft(s, B, K, T, s_logits), p = soft(t, B, K, T, t_logits);
  const double eps = double(1e-7f);
  double total = 0.0;
  for (std::size_t i = 0; i < B; ++i) {
    double l = 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      const double P = std::min(std::max(p[i * K + k], eps), 1.0), Q = std::min(std::max(q[i * K + k], eps), 1.0);
      l += P * std::log(P / Q);
    }
    total += (w ? double((*w)[i]) : 1.0) * l;
  }
  return total / double(B);
}

}  // namespace

TEST_CASE("kl_distillation: forward equals the formula; backward matches finite differences") {
  tlref::Rng rng(7);
  const std::size_t B = 4, K = 5;
  const std::vector<float> w = random_floats(rng, B, 0.1, 2.0), old = random_floats(rng, B * K, -1, 1);
  for (float T : {1.0f, 2.5f, 6.0f})
    for (bool s_logits : {true, false})
      for (bool t_logits : {true, false})
        for (const std::vector<float>* wp : {static_cast<const std::vector<float>*>(nullptr), &w}) {
          CAPTURE(T);
          CAPTURE(s_logits);
          CAPTURE(t_logits);
          // Logits in [-4, 4]; probabilities as a softmax gives them (rows summing to 1).
          auto outputs = [&](bool logits) {
            std::vector<float> z = random_floats(rng, B * K, -4, 4);
            if (logits) return z;
            const Vec p = soft(Vec(z.begin(), z.end()), B, K, 1.0, true);
            return std::vector<float>(p.begin(), p.end());
          };
          const std::vector<float> s = outputs(s_logits), t = outputs(t_logits);
          const float* wd = wp ? wp->data() : nullptr;
          Vec sd(s.begin(), s.end());
          const Vec td(t.begin(), t.end());
          auto loss = [&]() { return kl_ref(sd, td, wp, B, K, T, s_logits, t_logits); };
          check_close(ops::kl_distillation_forward(s.data(), t.data(), wd, B, K, T, s_logits, t_logits),
                      loss(), 1e-6, 1e-5);
          const float scale = 2.0f;
          std::vector<float> d = old;
          ops::kl_distillation_backward(d.data(), s.data(), t.data(), wd, B, K, T, s_logits, t_logits, scale);
          for (std::size_t i = 0; i < sd.size(); ++i) {
            const double eps = s_logits ? 1e-4 : 1e-6;  // probabilities: a step that stays in (0, 1)
            check_close(d[i] - old[i], scale * central_diff(sd, i, eps, loss), 1e-5, 1e-4);
          }
        }
}

TEST_CASE("kl_distillation: zero when the student equals the teacher; the softened gradient is (q - p) / T") {
  const std::size_t B = 2, K = 3;
  const std::vector<float> z{1.0f, -2.0f, 0.5f, 3.0f, 0.0f, -1.0f}, t{0.0f, 1.0f, 2.0f, -1.0f, 0.5f, 0.5f};
  CHECK(ops::kl_distillation_forward(z.data(), z.data(), nullptr, B, K, 4.0f, true, true) ==
        doctest::Approx(0.0).epsilon(1e-7));
  const double T = 4.0;
  std::vector<float> d(B * K, 0.0f);
  ops::kl_distillation_backward(d.data(), z.data(), t.data(), nullptr, B, K, float(T), true, true, 1.0f);
  const Vec q = soft(Vec(z.begin(), z.end()), B, K, T, true), p = soft(Vec(t.begin(), t.end()), B, K, T, true);
  for (std::size_t i = 0; i < B * K; ++i) check_close(d[i], (q[i] - p[i]) / (T * double(B)), 1e-7, 1e-5);
}

TEST_CASE("Model with distillation: loss = alpha * crossentropy + (1 - alpha) T^2 KL; metrics read the labels") {
  using namespace tinylearn;
  tlref::Rng rng(3);
  const std::size_t N = 6, F = 4, K = 3;
  for (bool sparse : {true, false}) {
    CAPTURE(sparse);
    Sequential m;
    m.add(std::make_unique<Dense>(K));
    m.build(F, 5);
    Distillation dist;
    dist.enabled = true;
    dist.alpha = 0.3f;
    dist.temperature = 2.0f;
    m.compile(std::make_unique<SGD>(0.1f),
              sparse ? Loss::SparseCategoricalCrossentropy : Loss::CategoricalCrossentropy,
              {Metric::Accuracy}, /*from_logits=*/true, {}, {}, 1.0f, dist);
    Tensor x = Tensor::from_shape({N, F});
    for (float& v : x) v = float(rng.uniform(-1, 1));
    const std::size_t W = sparse ? 1 + K : 2 * K;
    Tensor y = Tensor::from_shape({N, W});
    std::vector<std::int32_t> labels(N);
    std::vector<float> onehot(N * K, 0.0f), teacher(N * K);
    for (std::size_t i = 0; i < N; ++i) {
      labels[i] = std::int32_t(rng.range(0, K - 1));
      onehot[i * K + std::size_t(labels[i])] = 1.0f;
      for (std::size_t k = 0; k < K; ++k) teacher[i * K + k] = float(rng.uniform(-3, 3));
      float* row = y.data() + i * W;
      if (sparse) row[0] = float(labels[i]);
      else std::copy(onehot.begin() + i * K, onehot.begin() + (i + 1) * K, row);
      std::copy(teacher.begin() + i * K, teacher.begin() + (i + 1) * K, row + (sparse ? 1 : K));
    }
    const Tensor pred = m.predict(x);
    const double student = sparse
        ? ops::sparse_categorical_crossentropy_forward(pred.data(), labels.data(), nullptr, N, K, true)
        : ops::categorical_crossentropy_forward(pred.data(), onehot.data(), nullptr, N, K, true);
    const double kl = kl_ref(Vec(pred.begin(), pred.end()), Vec(teacher.begin(), teacher.end()), nullptr, N, K,
                             2.0, true, true);
    const double acc = ops::sparse_categorical_accuracy(pred.data(), labels.data(), N, K);
    const std::vector<float> v = m.evaluate(x, y);
    REQUIRE(v.size() == 4);
    check_close(v[0], 0.3 * student + 0.7 * 4.0 * kl, 1e-6, 1e-5);
    check_close(v[1], acc, 0.0, 0.0);
    check_close(v[2], student, 1e-6, 1e-5);
    check_close(v[3], 4.0 * kl, 1e-6, 1e-5);
    Tensor bad = Tensor::from_shape({N, K});
    CHECK_THROWS_AS(m.evaluate(x, bad), std::invalid_argument);
  }
}
