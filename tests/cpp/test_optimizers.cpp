// Optimizers against their update formulas (Keras's forms) written out in double.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "tinylearn/train/model.h"
#include "tl_reference.h"

namespace {

// Two parameters of different sizes, so that per-position optimizer state is exercised.
struct Params {
  std::vector<float> w0, g0, w1, g1;
  std::vector<tinylearn::Param> list() {
    return {{"a", w0.data(), g0.data(), w0.size()}, {"b", w1.data(), g1.data(), w1.size()}};
  }
};

Params make_params(tlref::Rng& rng) {
  Params p;
  p.w0.resize(7);
  p.w1.resize(3);
  for (float& v : p.w0) v = float(rng.uniform(-1, 1));
  for (float& v : p.w1) v = float(rng.uniform(-1, 1));
  p.g0.assign(7, 0.0f);
  p.g1.assign(3, 0.0f);
  return p;
}

// New gradients for a step; gradient scale varies per step, and one entry stays exactly 0.
void draw_grads(tlref::Rng& rng, Params& p, double scale) {
  for (float& g : p.g0) g = float(rng.uniform(-scale, scale));
  for (float& g : p.g1) g = float(rng.uniform(-scale, scale));
  p.g0[3] = 0.0f;
}

std::vector<double> d(const std::vector<float>& v) { return {v.begin(), v.end()}; }

void check_vec(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(std::fabs(double(got[i]) - want[i]) <= tol);
}

}  // namespace

TEST_CASE("Adam::step follows Keras's Adam over several steps (bias-corrected lr_t, eps outside sqrt)") {
  struct Config { float lr, b1, b2, eps; double gscale; };
  const Config configs[] = {
      {0.01f, 0.9f, 0.999f, 1e-7f, 1.0},
      {0.05f, 0.8f, 0.99f, 1e-3f, 1e-3},  // epsilon comparable to sqrt(v): its placement matters
      {0.001f, 0.5f, 0.9f, 1e-7f, 10.0},
  };
  std::uint64_t seed = 100;
  for (const Config& c : configs) {
    tlref::Rng rng(seed++);
    Params p = make_params(rng);
    tinylearn::Adam adam(c.lr, c.b1, c.b2, c.eps);
    std::vector<double> w0 = d(p.w0), w1 = d(p.w1);
    std::vector<double> m0(7, 0.0), v0(7, 0.0), m1(3, 0.0), v1(3, 0.0);
    const double lr = c.lr, b1 = c.b1, b2 = c.b2, eps = c.eps;
    for (int t = 1; t <= 6; ++t) {
      draw_grads(rng, p, c.gscale * (1.0 + 0.3 * t));
      auto ref_step = [&](std::vector<double>& w, std::vector<double>& m, std::vector<double>& v,
                          const std::vector<float>& g) {
        const double lr_t = lr * std::sqrt(1.0 - std::pow(b2, t)) / (1.0 - std::pow(b1, t));
        for (std::size_t i = 0; i < w.size(); ++i) {
          m[i] = b1 * m[i] + (1.0 - b1) * double(g[i]);
          v[i] = b2 * v[i] + (1.0 - b2) * double(g[i]) * double(g[i]);
          w[i] -= lr_t * m[i] / (std::sqrt(v[i]) + eps);
        }
      };
      ref_step(w0, m0, v0, p.g0);
      ref_step(w1, m1, v1, p.g1);
      std::vector<tinylearn::Param> list = p.list();
      adam.step(list);
      CHECK(adam.iterations == t);
      // Float state and arithmetic: a few float ulps of |w| ~ 1 per step.
      check_vec(p.w0, w0, 2e-6);
      check_vec(p.w1, w1, 2e-6);
    }
  }
}

TEST_CASE("SGD without momentum: w -= lr * g") {
  tlref::Rng rng(7);
  Params p = make_params(rng);
  tinylearn::SGD sgd(0.1f);
  std::vector<double> w0 = d(p.w0), w1 = d(p.w1);
  for (int t = 0; t < 5; ++t) {
    draw_grads(rng, p, 1.0);
    for (std::size_t i = 0; i < w0.size(); ++i) w0[i] -= 0.1 * p.g0[i];
    for (std::size_t i = 0; i < w1.size(); ++i) w1[i] -= 0.1 * p.g1[i];
    std::vector<tinylearn::Param> list = p.list();
    sgd.step(list);
    check_vec(p.w0, w0, 1e-6);
    check_vec(p.w1, w1, 1e-6);
  }
}

TEST_CASE("SGD with momentum and with Nesterov momentum follow Keras's update formulas") {
  for (bool nesterov : {false, true}) {
    tlref::Rng rng(nesterov ? 17 : 13);
    Params p = make_params(rng);
    const double lr = 0.05, mom = 0.9;
    tinylearn::SGD sgd(float(lr), float(mom), nesterov);
    const double m = double(float(mom)), l = double(float(lr));
    std::vector<double> w0 = d(p.w0), w1 = d(p.w1), u0(7, 0.0), u1(3, 0.0);
    for (int t = 0; t < 8; ++t) {
      draw_grads(rng, p, 1.0);
      auto ref_step = [&](std::vector<double>& w, std::vector<double>& v, const std::vector<float>& g) {
        for (std::size_t i = 0; i < w.size(); ++i) {
          v[i] = m * v[i] - l * g[i];                       // v = m v - lr g
          w[i] += nesterov ? m * v[i] - l * g[i] : v[i];    // w += m v - lr g  |  w += v
        }
      };
      ref_step(w0, u0, p.g0);
      ref_step(w1, u1, p.g1);
      std::vector<tinylearn::Param> list = p.list();
      sgd.step(list);
      check_vec(p.w0, w0, 2e-6);
      check_vec(p.w1, w1, 2e-6);
    }
  }
}

TEST_CASE("Optimizers reject invalid hyperparameters") {
  CHECK_THROWS_AS((tinylearn::SGD(0.0f)), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::SGD(-0.1f)), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::SGD(std::nanf(""))), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::SGD(std::numeric_limits<float>::infinity())), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::SGD(0.1f, 1.0f)), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::SGD(0.1f, -0.1f)), std::invalid_argument);
  CHECK_NOTHROW((tinylearn::SGD(0.1f, 0.0f)));
  CHECK_THROWS_AS((tinylearn::Adam(0.0f)), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::Adam(0.001f, 1.0f)), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::Adam(0.001f, 0.9f, 1.0f)), std::invalid_argument);
  CHECK_THROWS_AS((tinylearn::Adam(0.001f, 0.9f, 0.999f, 0.0f)), std::invalid_argument);
  CHECK_NOTHROW((tinylearn::Adam(0.001f, 0.0f, 0.0f, 1e-7f)));
}
