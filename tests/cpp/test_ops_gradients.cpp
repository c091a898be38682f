// Gradients of the training core against central finite differences computed in double.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "tinylearn/train/model.h"
#include "tinylearn/train/ops.h"
#include "tl_reference.h"

namespace {

using tinylearn::Matrix;
namespace ops = tinylearn::ops;

std::vector<float> random_floats(tlref::Rng& rng, std::size_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.uniform(lo, hi));
  return v;
}

using tlref::central_diff;

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

using tlref::check_close;

// Double-precision dense forward, a plain triple loop: out[b][j] = bias[j] + sum_c inp[b][c] * w[c][j].
std::vector<double> dense_ref(const std::vector<double>& inp, const std::vector<double>& w,
                              const std::vector<double>* bias, std::size_t B, std::size_t C,
                              std::size_t OC) {
  std::vector<double> out(B * OC);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t j = 0; j < OC; ++j) {
      double s = bias ? (*bias)[j] : 0.0;
      for (std::size_t c = 0; c < C; ++c) s += inp[b * C + c] * w[c * OC + j];
      out[b * OC + j] = s;
    }
  return out;
}

}  // namespace

TEST_CASE("dense_backward matches central finite differences of L = sum(out * R)") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    tlref::Rng rng(seed);
    const std::size_t B = std::size_t(rng.range(1, 5)), C = std::size_t(rng.range(1, 7)),
                      OC = std::size_t(rng.range(1, 6));
    const std::vector<float> inp = random_floats(rng, B * C), w = random_floats(rng, C * OC),
                             bias = random_floats(rng, OC), R = random_floats(rng, B * OC);
    std::vector<float> dinp(B * C, 0.0f), dw(C * OC, 0.0f), db(OC, 0.0f);
    ops::dense_backward(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(), B, C, OC);

    std::vector<double> x = to_double(inp), wd = to_double(w), bd = to_double(bias);
    const std::vector<double> Rd = to_double(R);
    auto loss = [&]() {
      const std::vector<double> out = dense_ref(x, wd, &bd, B, C, OC);
      double s = 0.0;
      for (std::size_t i = 0; i < out.size(); ++i) s += out[i] * Rd[i];
      return s;
    };
    const double eps = 1e-4;
    for (std::size_t i = 0; i < x.size(); ++i) check_close(dinp[i], central_diff(x, i, eps, loss), 1e-5, 1e-5);
    for (std::size_t i = 0; i < wd.size(); ++i) check_close(dw[i], central_diff(wd, i, eps, loss), 1e-5, 1e-5);
    for (std::size_t i = 0; i < bd.size(); ++i) check_close(db[i], central_diff(bd, i, eps, loss), 1e-5, 1e-5);
  }
}

TEST_CASE("dense_backward accumulates (+=) into dinp, dweight and dbias, and accepts null dinp/dbias") {
  tlref::Rng rng(11);
  const std::size_t B = 3, C = 4, OC = 5;
  const std::vector<float> inp = random_floats(rng, B * C), w = random_floats(rng, C * OC),
                           R = random_floats(rng, B * OC);
  // Gradients from zero-initialized buffers.
  std::vector<float> g_inp(B * C, 0.0f), g_w(C * OC, 0.0f), g_b(OC, 0.0f);
  ops::dense_backward(g_inp.data(), g_w.data(), g_b.data(), R.data(), inp.data(), w.data(), B, C, OC);
  // Same call on buffers that already hold values: the result must be old + gradient.
  const std::vector<float> o_inp = random_floats(rng, B * C, -3, 3), o_w = random_floats(rng, C * OC, -3, 3),
                           o_b = random_floats(rng, OC, -3, 3);
  std::vector<float> a_inp = o_inp, a_w = o_w, a_b = o_b;
  ops::dense_backward(a_inp.data(), a_w.data(), a_b.data(), R.data(), inp.data(), w.data(), B, C, OC);
  for (std::size_t i = 0; i < a_inp.size(); ++i) check_close(a_inp[i], double(o_inp[i]) + g_inp[i], 1e-6, 1e-6);
  for (std::size_t i = 0; i < a_w.size(); ++i) check_close(a_w[i], double(o_w[i]) + g_w[i], 1e-6, 1e-6);
  for (std::size_t i = 0; i < a_b.size(); ++i) check_close(a_b[i], double(o_b[i]) + g_b[i], 1e-6, 1e-6);
  // Calling twice doubles the gradient.
  std::vector<float> t_w(C * OC, 0.0f);
  ops::dense_backward(nullptr, t_w.data(), nullptr, R.data(), inp.data(), w.data(), B, C, OC);
  ops::dense_backward(nullptr, t_w.data(), nullptr, R.data(), inp.data(), w.data(), B, C, OC);
  for (std::size_t i = 0; i < t_w.size(); ++i) check_close(t_w[i], 2.0 * g_w[i], 1e-6, 1e-6);
}

TEST_CASE("dense_forward matches a naive double triple loop, with and without bias") {
  tlref::Rng rng(5);
  const std::size_t B = 4, C = 9, OC = 7;
  const std::vector<float> inp = random_floats(rng, B * C), w = random_floats(rng, C * OC),
                           bias = random_floats(rng, OC);
  const std::vector<double> bd = to_double(bias);
  for (bool with_bias : {true, false}) {
    std::vector<float> out(B * OC, 123.0f);  // garbage: forward overwrites
    ops::dense_forward(out.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, B, C, OC);
    const std::vector<double> ref = dense_ref(to_double(inp), to_double(w), with_bias ? &bd : nullptr, B, C, OC);
    for (std::size_t i = 0; i < out.size(); ++i) check_close(out[i], ref[i], 1e-6, 1e-6);
  }
}

TEST_CASE("relu_backward matches finite differences away from the kink and accumulates") {
  tlref::Rng rng(21);
  const std::size_t n = 64;
  std::vector<float> inp(n);
  for (float& v : inp) {  // keep every input at least 0.05 away from the kink at 0
    do v = float(rng.uniform(-2, 2)); while (std::fabs(v) < 0.05f);
  }
  const std::vector<float> R = random_floats(rng, n);
  std::vector<float> out(n);
  ops::relu_forward(out.data(), inp.data(), n);
  for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == (inp[i] > 0 ? inp[i] : 0.0f));

  const std::vector<float> old = random_floats(rng, n, -3, 3);
  std::vector<float> dinp = old;
  ops::relu_backward(dinp.data(), R.data(), out.data(), n);
  std::vector<double> x = to_double(inp);
  const std::vector<double> Rd = to_double(R);
  auto loss = [&]() {
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += std::max(x[i], 0.0) * Rd[i];
    return s;
  };
  for (std::size_t i = 0; i < n; ++i)
    check_close(dinp[i], double(old[i]) + central_diff(x, i, 1e-3, loss), 1e-6, 1e-6);

  // In place (out == inp) is allowed for the forward pass.
  std::vector<float> inplace = inp;
  ops::relu_forward(inplace.data(), inplace.data(), n);
  CHECK(inplace == out);
}

TEST_CASE("mse_forward/mse_backward match the double definition and finite differences") {
  tlref::Rng rng(31);
  const std::size_t n = 37;
  const std::vector<float> pred = random_floats(rng, n, -2, 2), target = random_floats(rng, n, -2, 2);
  std::vector<double> p = to_double(pred);
  const std::vector<double> t = to_double(target);
  auto loss = [&]() {
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += (p[i] - t[i]) * (p[i] - t[i]);
    return s / double(n);
  };
  check_close(ops::mse_forward(pred.data(), target.data(), n), loss(), 1e-7, 1e-6);
  double mae = 0.0;
  for (std::size_t i = 0; i < n; ++i) mae += std::fabs(p[i] - t[i]);
  check_close(ops::mae_forward(pred.data(), target.data(), n), mae / double(n), 1e-7, 1e-6);

  const std::vector<float> old = random_floats(rng, n);
  std::vector<float> d = old;
  ops::mse_backward(d.data(), pred.data(), target.data(), n);
  for (std::size_t i = 0; i < n; ++i)
    check_close(d[i], double(old[i]) + central_diff(p, i, 1e-4, loss), 1e-6, 1e-5);
}

TEST_CASE("Dense layer forward matches a naive loop (linear and ReLU, with and without bias)") {
  tlref::Rng rng(41);
  for (auto act : {tinylearn::Activation::Linear, tinylearn::Activation::ReLU})
    for (bool use_bias : {true, false}) {
      tinylearn::Dense d(6, act, use_bias);
      tinylearn::Random init(7);
      d.build({{5}}, init);
      REQUIRE(d.kernel.shape()[0] == 5);
      REQUIRE(d.kernel.shape()[1] == 6);
      CHECK(d.param_count() == (use_bias ? 36u : 30u));
      // Glorot uniform limit sqrt(6 / (in + out)).
      const double limit = std::sqrt(6.0 / 11.0);
      for (float w : d.kernel) CHECK(std::fabs(w) <= limit);
      if (use_bias) {
        for (float& b : d.bias) b = float(rng.uniform(-1, 1));
      }
      tinylearn::Tensor x = xt::zeros<float>({std::size_t(3), std::size_t(5)});
      for (float& v : x) v = float(rng.uniform(-2, 2));
      tinylearn::Tensor y;
      d.forward({&x}, y, false);
      REQUIRE(y.shape()[0] == 3);
      REQUIRE(y.shape()[1] == 6);
      for (std::size_t b = 0; b < 3; ++b)
        for (std::size_t j = 0; j < 6; ++j) {
          double s = use_bias ? double(d.bias(j)) : 0.0;
          for (std::size_t c = 0; c < 5; ++c) s += double(x(b, c)) * double(d.kernel(c, j));
          if (act == tinylearn::Activation::ReLU) s = std::max(s, 0.0);
          check_close(y(b, j), s, 1e-6, 1e-6);
        }
      tinylearn::Tensor wrong = xt::zeros<float>({std::size_t(3), std::size_t(4)});
      CHECK_THROWS_AS(d.forward({&wrong}, y, false), std::invalid_argument);
    }
}

TEST_CASE("Dense layer backward: parameter and input gradients accumulate, all match FD") {
  tlref::Rng rng(51);
  tinylearn::Dense d(4, tinylearn::Activation::ReLU);
  tinylearn::Random init(3);
  d.build({{3}}, init);
  for (float& b : d.bias) b = float(rng.uniform(-0.5, 0.5));
  const std::size_t B = 5;
  tinylearn::Tensor x = xt::zeros<float>({B, std::size_t(3)});
  tinylearn::Tensor y;
  // Draw inputs whose pre-activations stay >= 0.05 away from the ReLU kink.
  for (int attempt = 0;; ++attempt) {
    REQUIRE(attempt < 1000);
    for (float& v : x) v = float(rng.uniform(-2, 2));
    const std::vector<double> z = dense_ref(to_double({x.begin(), x.end()}),
                                            to_double({d.kernel.begin(), d.kernel.end()}),
                                            nullptr, B, 3, 4);
    bool ok = true;
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < 4; ++j) ok = ok && std::fabs(z[b * 4 + j] + d.bias(j)) > 0.05;
    if (ok) break;
  }
  d.forward({&x}, y, false);
  tinylearn::Tensor R = xt::zeros<float>({B, std::size_t(4)});
  for (float& v : R) v = float(rng.uniform(-1, 1));

  const std::vector<float> old_kg = random_floats(rng, 12), old_bg = random_floats(rng, 4);
  std::copy(old_kg.begin(), old_kg.end(), d.kernel_grad.begin());
  std::copy(old_bg.begin(), old_bg.end(), d.bias_grad.begin());
  const std::vector<float> old_dx = random_floats(rng, B * 3);
  tinylearn::Tensor dx = xt::zeros<float>({B, std::size_t(3)});
  std::copy(old_dx.begin(), old_dx.end(), dx.begin());
  d.backward({&x}, y, R, {&dx});

  std::vector<double> xd(x.begin(), x.end()), wd(d.kernel.begin(), d.kernel.end()),
      bd(d.bias.begin(), d.bias.end());
  const std::vector<double> Rd(R.begin(), R.end());
  auto loss = [&]() {
    const std::vector<double> z = dense_ref(xd, wd, &bd, B, 3, 4);
    double s = 0.0;
    for (std::size_t i = 0; i < z.size(); ++i) s += std::max(z[i], 0.0) * Rd[i];
    return s;
  };
  const double eps = 1e-4;  // moves a pre-activation by < 1e-3, far from the 0.05 margin
  for (std::size_t i = 0; i < xd.size(); ++i)
    check_close(dx.data()[i], double(old_dx[i]) + central_diff(xd, i, eps, loss), 1e-5, 1e-5);
  for (std::size_t i = 0; i < wd.size(); ++i)
    check_close(d.kernel_grad.data()[i], double(old_kg[i]) + central_diff(wd, i, eps, loss), 1e-5, 1e-5);
  for (std::size_t i = 0; i < bd.size(); ++i)
    check_close(d.bias_grad(i), double(old_bg[i]) + central_diff(bd, i, eps, loss), 1e-5, 1e-5);
}

namespace {

// A 3-layer MLP (ReLU, ReLU, linear) with random weights and biases, and data whose hidden
// pre-activations all stay at least `margin` away from the ReLU kink.
struct MlpCase {
  tinylearn::Sequential model;
  Matrix x, y;
};

void make_mlp(MlpCase& c, std::uint64_t seed, std::size_t n, double margin) {
  using namespace tinylearn;
  c.model.add(std::make_unique<Dense>(6, Activation::ReLU));
  c.model.add(std::make_unique<Dense>(5, Activation::ReLU));
  c.model.add(std::make_unique<Dense>(2));
  c.model.build(3, seed);
  tlref::Rng rng(seed * 7919 + 1);
  for (std::size_t l = 0; l < 3; ++l) {
    auto& d = dynamic_cast<Dense&>(c.model.layer(l));
    for (float& b : d.bias) b = float(rng.uniform(-0.3, 0.3));
  }
  c.x = Matrix({n, 3});
  c.y = Matrix({n, 2});
  for (std::size_t r = 0; r < n; ++r) {
    for (int attempt = 0;; ++attempt) {
      REQUIRE(attempt < 10000);
      Matrix row({1, 3});
      for (float& v : row) v = float(rng.uniform(-2, 2));
      // Pre-activations of the ReLU layers, in double from the float weights.
      bool ok = true;
      std::vector<double> h(row.begin(), row.end());
      for (std::size_t l = 0; l < 2 && ok; ++l) {
        auto& d = dynamic_cast<Dense&>(c.model.layer(l));
        const std::vector<double> bias(d.bias.begin(), d.bias.end());
        std::vector<double> z = dense_ref(h, {d.kernel.begin(), d.kernel.end()}, &bias, 1,
                                          d.input_features(), d.units());
        for (double& v : z) {
          ok = ok && std::fabs(v) > margin;
          v = std::max(v, 0.0);
        }
        h = z;
      }
      if (ok) {
        for (std::size_t k = 0; k < 3; ++k) c.x(r, k) = row(0, k);
        break;
      }
    }
    for (std::size_t k = 0; k < 2; ++k) c.y(r, k) = float(rng.uniform(-1, 1));
  }
}

// MSE of the 3-layer MLP computed in double from double copies of all parameters.
double mlp_loss(const std::vector<std::vector<double>>& params, const std::vector<std::size_t>& widths,
                const Matrix& x, const Matrix& y) {
  const std::size_t n = x.shape()[0];
  std::vector<double> h(x.begin(), x.end());
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    h = dense_ref(h, params[2 * l], &params[2 * l + 1], n, widths[l], widths[l + 1]);
    if (l + 2 < widths.size())
      for (double& v : h) v = std::max(v, 0.0);
  }
  double s = 0.0;
  for (std::size_t i = 0; i < h.size(); ++i) s += (h[i] - double(y.data()[i])) * (h[i] - double(y.data()[i]));
  return s / double(h.size());
}

std::vector<std::vector<double>> mlp_params(tinylearn::Sequential& m) {
  std::vector<std::vector<double>> p;
  for (std::size_t l = 0; l < m.size(); ++l) {
    auto& d = dynamic_cast<tinylearn::Dense&>(m.layer(l));
    p.emplace_back(d.kernel.begin(), d.kernel.end());
    p.emplace_back(d.bias.begin(), d.bias.end());
  }
  return p;
}

}  // namespace

TEST_CASE("Sequential: layer-by-layer backward of a ReLU MLP with MSE matches finite differences") {
  MlpCase c;
  make_mlp(c, 3, 8, 1e-2);
  const std::vector<std::size_t> widths{3, 6, 5, 2};
  std::vector<std::vector<double>> p = mlp_params(c.model);
  const double loss0 = mlp_loss(p, widths, c.x, c.y);
  c.model.compile(std::make_unique<tinylearn::SGD>(0.1f), tinylearn::Loss::MSE);
  const std::vector<float> ev = c.model.evaluate(c.x, c.y);
  check_close(ev[0], loss0, 1e-6, 1e-5);

  // Backward through the public Layer API, as fit does.
  const std::vector<tinylearn::Tensor> all = c.model.forward_all(c.x);
  const std::vector<int>& path = c.model.path();  // input, then one node per layer
  std::vector<tinylearn::Tensor> acts;
  for (std::size_t l = 1; l < path.size(); ++l) acts.push_back(all[std::size_t(path[l])]);
  for (std::size_t l = 0; l < 3; ++l) {
    auto& d = dynamic_cast<tinylearn::Dense&>(c.model.layer(l));
    d.kernel_grad.fill(0.0f);
    d.bias_grad.fill(0.0f);
  }
  tinylearn::Tensor g = xt::zeros<float>(acts.back().shape());
  tinylearn::ops::mse_backward(g.data(), acts.back().data(), c.y.data(), g.size());
  const tinylearn::Tensor x = c.x;
  for (std::size_t l = 3; l-- > 0;) {
    tinylearn::Tensor gin = xt::zeros<float>((l == 0 ? x : acts[l - 1]).shape());
    c.model.layer(l).backward({l == 0 ? &x : &acts[l - 1]}, acts[l], g, {l == 0 ? nullptr : &gin});
    g = gin;
  }
  const double eps = 1e-6;
  for (std::size_t k = 0; k < p.size(); ++k) {
    auto& d = dynamic_cast<tinylearn::Dense&>(c.model.layer(k / 2));
    const float* grad = k % 2 == 0 ? d.kernel_grad.data() : d.bias_grad.data();
    for (std::size_t i = 0; i < p[k].size(); ++i) {
      const double fd = central_diff(p[k], i, eps, [&]() { return mlp_loss(p, widths, c.x, c.y); });
      check_close(grad[i], fd, 1e-5, 1e-3);
    }
  }
}

TEST_CASE("Sequential::fit computes the full-batch MSE gradient (recovered from one SGD step, lr = 1)") {
  MlpCase c;
  make_mlp(c, 9, 10, 1e-2);
  const std::vector<std::size_t> widths{3, 6, 5, 2};
  std::vector<std::vector<double>> p = mlp_params(c.model);
  const std::vector<std::vector<double>> before = p;
  const double loss0 = mlp_loss(p, widths, c.x, c.y);

  c.model.compile(std::make_unique<tinylearn::SGD>(1.0f), tinylearn::Loss::MSE);
  tinylearn::FitOptions opt;
  opt.epochs = 1;
  opt.batch_size = 10;  // one batch: the whole data set
  opt.shuffle = false;
  const tinylearn::History h = c.model.fit(c.x, c.y, opt);
  REQUIRE(h.history.at("loss").size() == 1);
  check_close(h.history.at("loss")[0], loss0, 1e-6, 1e-5);

  const std::vector<std::vector<double>> after = mlp_params(c.model);
  const double eps = 1e-6;
  for (std::size_t k = 0; k < p.size(); ++k)
    for (std::size_t i = 0; i < p[k].size(); ++i) {
      const double fd = central_diff(p[k], i, eps, [&]() { return mlp_loss(p, widths, c.x, c.y); });
      check_close(before[k][i] - after[k][i], fd, 2e-6, 1e-3);
    }
}
