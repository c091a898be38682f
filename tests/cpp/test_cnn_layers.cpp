// CNN layers (Conv2D, DepthwiseConv2D, pooling, BatchNormalization, Dropout) against
// independent double-precision references written from the definitions (naive loops over the
// windows, TensorFlow's output-size/padding rules derived by counting window positions, the batch
// mean/variance formulas), central finite differences of L = sum(out * R) in double, the (+=)
// accumulation contract, error messages, and a residual graph trained one SGD step through
// tinylearn::Model. Everything random is seeded.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tinylearn/train/cnn_layers.h"
#include "tinylearn/train/model.h"
#include "tl_reference.h"

namespace {

using tinylearn::Activation;
using tinylearn::Layer;
using tinylearn::Param;
using tinylearn::Shape;
using tinylearn::Tensor;
using tinylearn::ops::Padding;
using std::size_t;
namespace tl = tinylearn;

using Dims = std::vector<size_t>;

Tensor random_tensor(tlref::Rng& rng, const Dims& shape, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::from_shape(shape);
  for (float& v : t) v = float(rng.uniform(lo, hi));
  return t;
}

std::vector<double> to_double(const Tensor& t) { return {t.begin(), t.end()}; }

using tlref::check_close;

using tlref::central_diff;

Tensor forward(Layer& l, const Tensor& x, bool training) {
  Tensor out;
  l.forward({&x}, out, training);
  return out;
}

std::vector<std::vector<double>> param_values(Layer& l) {
  std::vector<std::vector<double>> v;
  for (const Param& p : l.params()) v.emplace_back(p.value, p.value + p.size);
  return v;
}

void set_param(Layer& l, const std::string& name, tlref::Rng& rng, double lo, double hi) {
  for (const Param& p : l.params())
    if (p.name == name)
      for (size_t i = 0; i < p.size; ++i) p.value[i] = float(rng.uniform(lo, hi));
}

// The layer's double-precision reference: output values from the input and the params (in the
// order of params()).
using RefFn = std::function<std::vector<double>(const std::vector<double>& x,
                                                const std::vector<std::vector<double>>& p)>;

// Given a forward's input x and output out (the caller picked the mode): (a) out matches the
// reference; (b) the backward of L = sum(out * R) matches central differences of the reference
// w.r.t. the input and every param; (c) gradients accumulate (+=), and a null input gradient
// leaves the param gradients the same.
void check_layer(Layer& layer, const Tensor& x, const Tensor& out, const RefFn& ref,
                 tlref::Rng& rng, double fwd_tol = 2e-6, double grad_tol = 5e-5) {
  std::vector<double> xd = to_double(x);
  std::vector<std::vector<double>> pd = param_values(layer);
  const std::vector<double> want = ref(xd, pd);
  REQUIRE(want.size() == out.size());
  for (size_t i = 0; i < out.size(); ++i) check_close(out.data()[i], want[i], fwd_tol, fwd_tol);

  const Tensor R = random_tensor(rng, Dims(out.shape().begin(), out.shape().end()));
  const std::vector<double> Rd = to_double(R);
  for (const Param& p : layer.params()) std::fill(p.grad, p.grad + p.size, 0.0f);
  Tensor dx = xt::zeros<float>(x.shape());
  layer.backward({&x}, out, R, {&dx});
  auto loss = [&]() {
    const std::vector<double> o = ref(xd, pd);
    double s = 0.0;
    for (size_t i = 0; i < o.size(); ++i) s += o[i] * Rd[i];
    return s;
  };
  const double eps = 1e-6;
  for (size_t i = 0; i < xd.size(); ++i)
    check_close(dx.data()[i], central_diff(xd, i, eps, loss), grad_tol, grad_tol);
  std::vector<Param> params = layer.params();
  std::vector<std::vector<float>> g_params;
  for (size_t k = 0; k < params.size(); ++k) {
    INFO("param " << params[k].name);
    for (size_t i = 0; i < params[k].size; ++i)
      check_close(params[k].grad[i], central_diff(pd[k], i, eps, loss), grad_tol, grad_tol);
    g_params.emplace_back(params[k].grad, params[k].grad + params[k].size);
  }

  // (c) the same backward onto buffers holding values: old + gradient.
  const Tensor old_dx = random_tensor(rng, Dims(x.shape().begin(), x.shape().end()), -3, 3);
  Tensor acc_dx = old_dx;
  std::vector<std::vector<float>> old_p;
  for (const Param& p : params) {
    old_p.emplace_back(p.size);
    for (float& v : old_p.back()) v = float(rng.uniform(-3, 3));
    std::copy(old_p.back().begin(), old_p.back().end(), p.grad);
  }
  layer.backward({&x}, out, R, {&acc_dx});
  for (size_t i = 0; i < x.size(); ++i)
    check_close(acc_dx.data()[i], double(old_dx.data()[i]) + dx.data()[i], 1e-5, 1e-5);
  for (size_t k = 0; k < params.size(); ++k)
    for (size_t i = 0; i < params[k].size; ++i)
      check_close(params[k].grad[i], double(old_p[k][i]) + g_params[k][i], 1e-5, 1e-5);
  // A null input gradient (the node needs none): the params still get theirs.
  for (const Param& p : params) std::fill(p.grad, p.grad + p.size, 0.0f);
  layer.backward({&x}, out, R, {nullptr});
  for (size_t k = 0; k < params.size(); ++k)
    for (size_t i = 0; i < params[k].size; ++i)
      check_close(params[k].grad[i], g_params[k][i], 1e-6, 1e-6);
}

// Throws std::invalid_argument whose message names `name` and contains `fragment`.
template <class F>
void check_error(F&& f, const std::string& name, const std::string& fragment) {
  try {
    f();
    FAIL("expected std::invalid_argument mentioning '" << fragment << "'");
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    INFO("message: " << m);
    CHECK(m.find(name) != std::string::npos);
    CHECK(m.find(fragment) != std::string::npos);
  }
}

// ---- References -----------------------------------------------------------------------------

// One spatial dimension as TensorFlow defines it, by counting window positions:
//   valid: starts i * s with i * s + k <= in;   same: starts i * s with i * s < in, total padding
//   max((out - 1) * s + k - in, 0), the smaller half before.
struct TfDim {
  size_t out;
  long before;
};
TfDim tf_dim(size_t in, size_t k, size_t s, Padding p) {
  size_t out = 0;
  if (p == Padding::Valid) {
    while (out * s + k <= in) ++out;
    return {out, 0};
  }
  while (out * s < in) ++out;
  const long total = std::max(0L, long((out - 1) * s + k) - long(in));
  return {out, total / 2};
}

struct ConvCase {
  size_t N, H, W, C, KH, KW, F, SH, SW;  // F: filters (Conv2D) or depth multiplier (depthwise)
  Padding pad;
  Activation act;
  bool bias;
};

double act_ref(Activation a, double z) {
  switch (a) {
    case Activation::ReLU: return z > 0 ? z : 0.0;
    case Activation::Tanh: return std::tanh(z);
    case Activation::Sigmoid: return 1.0 / (1.0 + std::exp(-z));
    default: return z;
  }
}

// Pre-activations of Conv2D (or DepthwiseConv2D), a naive loop over each window:
//   conv:      z[n,oh,ow,o]   = b[o]   + sum_{kh,kw,c} x[n, oh*SH+kh-pt, ow*SW+kw-pl, c] * k[kh,kw,c,o]
//   depthwise: z[n,oh,ow,c*M+m] = b[.] + sum_{kh,kw}   x[n, oh*SH+kh-pt, ow*SW+kw-pl, c] * k[kh,kw,c,m]
// with x = 0 outside the input.
std::vector<double> conv_ref(const ConvCase& c, bool depthwise, const std::vector<double>& x,
                             const std::vector<double>& k, const std::vector<double>* b) {
  const TfDim dh = tf_dim(c.H, c.KH, c.SH, c.pad), dw = tf_dim(c.W, c.KW, c.SW, c.pad);
  const size_t OC = depthwise ? c.C * c.F : c.F;
  auto xv = [&](size_t n, long ih, long iw, size_t ch) {
    if (ih < 0 || iw < 0 || ih >= long(c.H) || iw >= long(c.W)) return 0.0;
    return x[((n * c.H + size_t(ih)) * c.W + size_t(iw)) * c.C + ch];
  };
  std::vector<double> z(c.N * dh.out * dw.out * OC);
  for (size_t n = 0; n < c.N; ++n)
    for (size_t oh = 0; oh < dh.out; ++oh)
      for (size_t ow = 0; ow < dw.out; ++ow)
        for (size_t o = 0; o < OC; ++o) {
          double s = b ? (*b)[o] : 0.0;
          for (size_t kh = 0; kh < c.KH; ++kh)
            for (size_t kw = 0; kw < c.KW; ++kw) {
              const long ih = long(oh * c.SH + kh) - dh.before, iw = long(ow * c.SW + kw) - dw.before;
              if (depthwise) {
                const size_t ch = o / c.F, m = o % c.F;
                s += xv(n, ih, iw, ch) * k[((kh * c.KW + kw) * c.C + ch) * c.F + m];
              } else {
                for (size_t ch = 0; ch < c.C; ++ch)
                  s += xv(n, ih, iw, ch) * k[((kh * c.KW + kw) * c.C + ch) * c.F + o];
              }
            }
          z[((n * dh.out + oh) * dw.out + ow) * OC + o] = s;
        }
  return z;
}

// Max / average over the real cells of each window (TensorFlow: padded cells are never read).
std::vector<double> pool_ref(const std::vector<double>& x, size_t N, size_t H, size_t W, size_t C,
                             size_t PH, size_t PW, size_t SH, size_t SW, Padding pad, bool max) {
  const TfDim dh = tf_dim(H, PH, SH, pad), dw = tf_dim(W, PW, SW, pad);
  std::vector<double> out(N * dh.out * dw.out * C);
  for (size_t n = 0; n < N; ++n)
    for (size_t oh = 0; oh < dh.out; ++oh)
      for (size_t ow = 0; ow < dw.out; ++ow)
        for (size_t c = 0; c < C; ++c) {
          double best = -1e300, sum = 0.0;
          int cells = 0;
          for (long ih = long(oh * SH) - dh.before; ih < long(oh * SH) - dh.before + long(PH); ++ih)
            for (long iw = long(ow * SW) - dw.before; iw < long(ow * SW) - dw.before + long(PW); ++iw) {
              if (ih < 0 || iw < 0 || ih >= long(H) || iw >= long(W)) continue;
              const double v = x[((n * H + size_t(ih)) * W + size_t(iw)) * C + c];
              best = std::max(best, v);
              sum += v;
              ++cells;
            }
          REQUIRE(cells > 0);
          out[((n * dh.out + oh) * dw.out + ow) * C + c] = max ? best : sum / cells;
        }
  return out;
}

// Batch normalization over the last axis of x viewed as (M, C).
//   training:  y = gamma * (x - mean) / sqrt(var + eps) + beta, batch mean and biased variance;
//   inference: the same with the given moving mean and variance.
std::vector<double> bn_ref(const std::vector<double>& x, size_t C, const std::vector<double>* gamma,
                           const std::vector<double>* beta, double eps,
                           const std::vector<double>* moving_mean = nullptr,
                           const std::vector<double>* moving_var = nullptr) {
  const size_t M = x.size() / C;
  std::vector<double> mean(C, 0.0), var(C, 0.0), y(x.size());
  if (moving_mean) {
    mean = *moving_mean;
    var = *moving_var;
  } else {
    for (size_t m = 0; m < M; ++m)
      for (size_t c = 0; c < C; ++c) mean[c] += x[m * C + c] / double(M);
    for (size_t m = 0; m < M; ++m)
      for (size_t c = 0; c < C; ++c) var[c] += (x[m * C + c] - mean[c]) * (x[m * C + c] - mean[c]) / double(M);
  }
  for (size_t m = 0; m < M; ++m)
    for (size_t c = 0; c < C; ++c)
      y[m * C + c] = (gamma ? (*gamma)[c] : 1.0) * (x[m * C + c] - mean[c]) / std::sqrt(var[c] + eps) +
                     (beta ? (*beta)[c] : 0.0);
  return y;
}

std::string describe(const ConvCase& c) {
  return "N=" + std::to_string(c.N) + " HxWxC=" + std::to_string(c.H) + "x" + std::to_string(c.W) +
         "x" + std::to_string(c.C) + " K=" + std::to_string(c.KH) + "x" + std::to_string(c.KW) +
         " F=" + std::to_string(c.F) + " S=" + std::to_string(c.SH) + "x" + std::to_string(c.SW) +
         " " + tl::ops::padding_name(c.pad) + " " + tl::activation_name(c.act) +
         (c.bias ? " bias" : " no-bias");
}

// Builds the layer on (H, W, C), randomizes the bias, draws an input whose pre-activations stay
// at least 0.01 away from the ReLU kink, runs a training forward and checks it.
void run_conv_case(const ConvCase& c, bool depthwise, std::uint64_t seed) {
  INFO((depthwise ? "DepthwiseConv2D " : "Conv2D ") << describe(c));
  std::shared_ptr<Layer> layer;
  if (depthwise)
    layer = std::make_shared<tl::DepthwiseConv2D>(tl::Size2{c.KH, c.KW}, tl::Size2{c.SH, c.SW}, c.pad,
                                                  c.F, c.act, c.bias);
  else
    layer = std::make_shared<tl::Conv2D>(c.F, tl::Size2{c.KH, c.KW}, tl::Size2{c.SH, c.SW}, c.pad,
                                         c.act, c.bias);
  tl::Random init(seed);
  const Shape out_shape = layer->build({{c.H, c.W, c.C}}, init);
  const TfDim dh = tf_dim(c.H, c.KH, c.SH, c.pad), dw = tf_dim(c.W, c.KW, c.SW, c.pad);
  CHECK(out_shape == Shape{dh.out, dw.out, depthwise ? c.C * c.F : c.F});
  tlref::Rng rng(seed * 7919 + 1);
  if (c.bias) set_param(*layer, "bias", rng, -0.5, 0.5);

  auto pre_act = [&](const std::vector<double>& x, const std::vector<std::vector<double>>& p) {
    return conv_ref(c, depthwise, x, p[0], p.size() > 1 ? &p[1] : nullptr);
  };
  Tensor x;
  for (int attempt = 0;; ++attempt) {
    REQUIRE(attempt < 100);
    x = random_tensor(rng, {c.N, c.H, c.W, c.C});
    const std::vector<double> z = pre_act(to_double(x), param_values(*layer));
    if (std::all_of(z.begin(), z.end(), [](double v) { return std::fabs(v) > 0.01; })) break;
  }
  const Tensor out = forward(*layer, x, true);
  CHECK(Dims(out.shape().begin(), out.shape().end()) == tl::batch_shape(c.N, out_shape));
  check_layer(*layer, x, out,
              [&](const std::vector<double>& xd, const std::vector<std::vector<double>>& p) {
                std::vector<double> z = pre_act(xd, p);
                for (double& v : z) v = act_ref(c.act, v);
                return z;
              },
              rng);
}

}  // namespace

// ---- Conv2D / DepthwiseConv2D ------------------------------------------------------------------

TEST_CASE("Conv2D matches a naive double convolution and finite differences") {
  const ConvCase cases[] = {
      {2, 5, 6, 3, 3, 3, 4, 1, 1, Padding::Valid, Activation::ReLU, true},
      {2, 7, 6, 2, 3, 2, 3, 2, 2, Padding::Same, Activation::Linear, false},  // asymmetric padding
      {3, 4, 4, 3, 1, 1, 2, 1, 1, Padding::Valid, Activation::Tanh, true},    // pointwise GEMM path
      {1, 6, 5, 2, 2, 3, 3, 2, 1, Padding::Same, Activation::Sigmoid, true},
      {2, 5, 5, 1, 5, 5, 2, 1, 1, Padding::Valid, Activation::ReLU, true},    // kernel = input
      {1, 3, 3, 2, 4, 4, 2, 3, 3, Padding::Same, Activation::ReLU, false},    // kernel > input, same
  };
  std::uint64_t seed = 1;
  for (const ConvCase& c : cases) run_conv_case(c, false, seed++);
}

TEST_CASE("DepthwiseConv2D matches a naive double convolution and finite differences") {
  const ConvCase cases[] = {
      {2, 5, 6, 3, 3, 3, 1, 1, 1, Padding::Valid, Activation::ReLU, true},
      {2, 6, 7, 2, 3, 3, 2, 2, 2, Padding::Same, Activation::Linear, true},  // depth multiplier 2
      {1, 4, 5, 3, 2, 1, 3, 1, 2, Padding::Same, Activation::Tanh, false},
      {3, 3, 3, 4, 1, 1, 1, 1, 1, Padding::Valid, Activation::ReLU, true},
  };
  std::uint64_t seed = 101;
  for (const ConvCase& c : cases) run_conv_case(c, true, seed++);
}

TEST_CASE("Conv2D and DepthwiseConv2D weights have Keras layouts and Glorot uniform values") {
  tl::Random r1(3), r2(3);
  tl::Conv2D a(4, {3, 2}, {1, 1}, Padding::Same), b(4, {3, 2}, {1, 1}, Padding::Same);
  a.name = "conv";
  a.build({{5, 6, 3}}, r1);
  b.build({{5, 6, 3}}, r2);
  std::vector<Param> p = a.params();
  REQUIRE(p.size() == 2);
  CHECK(p[0].name == "kernel");
  CHECK(p[0].shape == Shape{3, 2, 3, 4});
  CHECK(p[0].size == 72);
  CHECK(p[1].name == "bias");
  CHECK(p[1].shape == Shape{4});
  CHECK(a.param_count() == 76);
  const double limit = std::sqrt(6.0 / (3 * 2 * 3 + 3 * 2 * 4));  // fan_in KH*KW*C, fan_out KH*KW*F
  double max_abs = 0.0;
  for (size_t i = 0; i < p[0].size; ++i) {
    CHECK(std::fabs(p[0].value[i]) <= limit);
    max_abs = std::max(max_abs, double(std::fabs(p[0].value[i])));
    CHECK(p[0].value[i] == b.kernel.data()[i]);  // same seed, same weights
  }
  CHECK(max_abs > 0.8 * limit);
  for (size_t i = 0; i < 4; ++i) CHECK(p[1].value[i] == 0.0f);
  CHECK(tl::Conv2D(2, {3, 3}, {1, 1}, Padding::Valid, Activation::Linear, false).params().size() == 1);

  tl::Random r3(4);
  tl::DepthwiseConv2D d({3, 3}, {2, 2}, Padding::Same, 2);
  CHECK(d.build({{5, 5, 3}}, r3) == Shape{3, 3, 6});
  p = d.params();
  REQUIRE(p.size() == 2);
  CHECK(p[0].name == "kernel");
  CHECK(p[0].shape == Shape{3, 3, 3, 2});
  CHECK(p[1].name == "bias");
  CHECK(p[1].shape == Shape{6});
  const double dlimit = std::sqrt(6.0 / (3 * 3 * 3 + 3 * 3 * 2));  // Keras's fans for (kh, kw, c, m)
  max_abs = 0.0;
  for (size_t i = 0; i < p[0].size; ++i) {
    CHECK(std::fabs(p[0].value[i]) <= dlimit);
    max_abs = std::max(max_abs, double(std::fabs(p[0].value[i])));
  }
  CHECK(max_abs > 0.8 * dlimit);
}

TEST_CASE("Conv2D serves batches of other sizes with its grow-only workspace") {
  // A big batch first, then a small one, then a bigger one: each matches the reference.
  const ConvCase base{1, 9, 9, 3, 3, 3, 4, 1, 1, Padding::Same, Activation::Linear, true};
  tl::Conv2D conv(base.F, {3, 3}, {1, 1}, Padding::Same);
  tl::Random init(5);
  conv.build({{9, 9, 3}}, init);
  tlref::Rng rng(6);
  for (size_t N : {5u, 1u, 12u}) {
    ConvCase c = base;
    c.N = N;
    const Tensor x = random_tensor(rng, {N, 9, 9, 3});
    const Tensor out = forward(conv, x, false);
    const std::vector<double> want =
        conv_ref(c, false, to_double(x), to_double(conv.kernel), nullptr);  // bias is zero
    REQUIRE(out.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) check_close(out.data()[i], want[i], 2e-6, 2e-6);
  }
}

// ---- Pooling ------------------------------------------------------------------------------------

TEST_CASE("MaxPooling2D and AveragePooling2D match naive window loops and finite differences") {
  struct PoolCase {
    size_t N, H, W, C, PH, PW;
    std::optional<tl::Size2> strides;
    Padding pad;
  };
  const PoolCase cases[] = {
      {2, 4, 6, 3, 2, 2, std::nullopt, Padding::Valid},  // Keras default: strides = pool
      {2, 5, 5, 2, 3, 3, tl::Size2{2, 2}, Padding::Same},
      {1, 5, 7, 2, 2, 3, tl::Size2{1, 2}, Padding::Valid},  // overlapping windows
      {3, 3, 4, 1, 2, 2, std::nullopt, Padding::Same},       // odd size: a padded last row
  };
  std::uint64_t seed = 200;
  for (const PoolCase& c : cases) {
    for (bool is_max : {true, false}) {
      INFO((is_max ? "max " : "avg ") << c.H << "x" << c.W << " pool " << c.PH << "x" << c.PW << " "
                                      << tl::ops::padding_name(c.pad));
      std::unique_ptr<Layer> layer;
      if (is_max)
        layer = std::make_unique<tl::MaxPooling2D>(tl::Size2{c.PH, c.PW}, c.strides, c.pad);
      else
        layer = std::make_unique<tl::AveragePooling2D>(tl::Size2{c.PH, c.PW}, c.strides, c.pad);
      const tl::Size2 s = c.strides ? *c.strides : tl::Size2{c.PH, c.PW};
      tl::Random init(seed);
      const Shape out_shape = layer->build({{c.H, c.W, c.C}}, init);
      CHECK(out_shape == Shape{tf_dim(c.H, c.PH, s[0], c.pad).out, tf_dim(c.W, c.PW, s[1], c.pad).out, c.C});
      CHECK(layer->params().empty());
      tlref::Rng rng(seed++);
      // Distinct values at least 0.05 apart: no ties, so the max is differentiable.
      Tensor x = Tensor::from_shape({c.N, c.H, c.W, c.C});
      std::vector<size_t> perm(x.size());
      std::iota(perm.begin(), perm.end(), size_t(0));
      for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[size_t(rng.u64() % i)]);
      for (size_t i = 0; i < x.size(); ++i) x.data()[i] = float(0.05 * double(perm[i]) - 1.0);
      for (bool training : {true, false}) {  // max: saved argmax / recomputed argmax
        const Tensor out = forward(*layer, x, training);
        check_layer(*layer, x, out,
                    [&](const std::vector<double>& xd, const std::vector<std::vector<double>>&) {
                      return pool_ref(xd, c.N, c.H, c.W, c.C, c.PH, c.PW, s[0], s[1], c.pad, is_max);
                    },
                    rng);
      }
    }
  }
}

TEST_CASE("GlobalAveragePooling2D averages over height and width") {
  for (bool keepdims : {false, true}) {
    tl::GlobalAveragePooling2D gap(keepdims);
    tl::Random init(1);
    CHECK(gap.build({{3, 4, 5}}, init) == (keepdims ? Shape{1, 1, 5} : Shape{5}));
    tlref::Rng rng(300 + keepdims);
    const Tensor x = random_tensor(rng, {2, 3, 4, 5});
    const Tensor out = forward(gap, x, true);
    CHECK(Dims(out.shape().begin(), out.shape().end()) == (keepdims ? Dims{2, 1, 1, 5} : Dims{2, 5}));
    check_layer(gap, x, out,
                [](const std::vector<double>& xd, const std::vector<std::vector<double>>&) {
                  return pool_ref(xd, 2, 3, 4, 5, 3, 4, 1, 1, Padding::Valid, false);
                },
                rng);
  }
}

// ---- BatchNormalization ---------------------------------------------------------------------

TEST_CASE("BatchNormalization in training mode matches the batch mean and variance formula") {
  struct BnCase {
    Shape sample;
    size_t N;
    bool center, scale;
  };
  const BnCase cases[] = {
      {{5}, 6, true, true},
      {{3, 4, 2}, 2, true, true},
      {{2, 3}, 4, false, true},
      {{4, 3, 3}, 3, true, false},
      {{3}, 5, false, false},
  };
  std::uint64_t seed = 400;
  for (const BnCase& c : cases) {
    INFO("sample " << tl::shape_str(c.sample) << " N=" << c.N << " center=" << c.center
                   << " scale=" << c.scale);
    tl::BatchNormalization bn(0.99f, 1e-3f, c.center, c.scale);
    tl::Random init(seed);
    CHECK(bn.build({c.sample}, init) == c.sample);
    const size_t C = c.sample.back();
    CHECK(bn.params().size() == size_t(c.center) + size_t(c.scale));
    tlref::Rng rng(seed++);
    set_param(bn, "gamma", rng, 0.5, 1.5);
    set_param(bn, "beta", rng, -0.5, 0.5);
    Dims shape = tl::batch_shape(c.N, c.sample);
    Tensor x = random_tensor(rng, shape, -2, 2);
    for (size_t i = 0; i < x.size(); ++i) x.data()[i] += float(i % C);  // per-channel offsets
    const Tensor out = forward(bn, x, true);
    auto ref = [&](const std::vector<double>& xd, const std::vector<std::vector<double>>& p) {
      const std::vector<double>* g = c.scale ? &p[0] : nullptr;
      const std::vector<double>* b = c.center ? &p[c.scale ? 1 : 0] : nullptr;
      return bn_ref(xd, C, g, b, 1e-3);
    };
    check_layer(bn, x, out, ref, rng, 1e-5, 1e-4);
  }
}

TEST_CASE("BatchNormalization updates its moving statistics and uses them at inference") {
  tl::BatchNormalization bn;  // Keras defaults: momentum 0.99, epsilon 1e-3
  bn.name = "bn";
  CHECK(bn.momentum() == 0.99f);
  CHECK(bn.epsilon() == 1e-3f);
  tl::Random init(1);
  bn.build({{2, 2, 3}}, init);
  std::vector<Param> st = bn.state();
  REQUIRE(st.size() == 2);
  CHECK(st[0].name == "moving_mean");
  CHECK(st[1].name == "moving_variance");
  CHECK(st[0].grad == nullptr);
  CHECK(st[1].grad == nullptr);
  CHECK(st[0].shape == Shape{3});
  std::vector<Param> p = bn.params();
  REQUIRE(p.size() == 2);
  CHECK(p[0].name == "gamma");
  CHECK(p[1].name == "beta");
  for (size_t c = 0; c < 3; ++c) {
    CHECK(bn.gamma(c) == 1.0f);
    CHECK(bn.beta(c) == 0.0f);
    CHECK(bn.moving_mean(c) == 0.0f);
    CHECK(bn.moving_variance(c) == 1.0f);
  }

  tlref::Rng rng(500);
  std::vector<double> mm(3, 0.0), mv(3, 1.0);
  for (int step = 0; step < 3; ++step) {
    Tensor x = random_tensor(rng, {4, 2, 2, 3}, -1, 3);
    forward(bn, x, true);
    const std::vector<double> xd = to_double(x);
    const size_t M = 16;
    for (size_t c = 0; c < 3; ++c) {
      double mean = 0.0, var = 0.0;
      for (size_t m = 0; m < M; ++m) mean += xd[m * 3 + c] / M;
      for (size_t m = 0; m < M; ++m) var += (xd[m * 3 + c] - mean) * (xd[m * 3 + c] - mean) / M;
      mm[c] = 0.99 * mm[c] + 0.01 * mean;
      mv[c] = 0.99 * mv[c] + 0.01 * var;  // Keras 3: the biased batch variance
      check_close(bn.moving_mean(c), mm[c], 1e-6, 1e-5);
      check_close(bn.moving_variance(c), mv[c], 1e-6, 1e-5);
    }
  }

  // Inference: the moving statistics, and they stay as they are.
  set_param(bn, "gamma", rng, 0.5, 1.5);
  set_param(bn, "beta", rng, -0.5, 0.5);
  const std::vector<float> mm_before(bn.moving_mean.begin(), bn.moving_mean.end());
  const Tensor x = random_tensor(rng, {3, 2, 2, 3}, -1, 3);
  const Tensor out = forward(bn, x, false);
  for (size_t c = 0; c < 3; ++c) CHECK(bn.moving_mean(c) == mm_before[c]);
  auto ref = [&](const std::vector<double>& xd, const std::vector<std::vector<double>>& pp) {
    const std::vector<double> m(bn.moving_mean.begin(), bn.moving_mean.end());
    const std::vector<double> v(bn.moving_variance.begin(), bn.moving_variance.end());
    return bn_ref(xd, 3, &pp[0], &pp[1], 1e-3, &m, &v);
  };
  check_layer(bn, x, out, ref, rng, 1e-5, 1e-4);  // backward with the statistics as constants
  // The training output of the same batch differs (batch statistics).
  const Tensor out_train = forward(bn, x, true);
  double diff = 0.0;
  for (size_t i = 0; i < out.size(); ++i) diff = std::max(diff, double(std::fabs(out_train.data()[i] - out.data()[i])));
  CHECK(diff > 0.1);
}

// ---- Dropout ------------------------------------------------------------------------------------

TEST_CASE("Dropout drops in training only and the same seed gives the same mask") {
  tlref::Rng rng(600);
  const Tensor x = random_tensor(rng, {4, 50}, 0.5, 1.5);  // nonzero: the mask is out / x
  auto built = [](float rate, std::uint64_t build_seed, std::optional<std::uint64_t> seed = std::nullopt) {
    auto d = std::make_unique<tl::Dropout>(rate, seed);
    tl::Random init(build_seed);
    CHECK(d->build({{50}}, init) == Shape{50});
    return d;
  };
  auto d = built(0.5f, 7);
  CHECK(d->params().empty());

  // Inference: the identity, forward and backward.
  const Tensor inf = forward(*d, x, false);
  for (size_t i = 0; i < x.size(); ++i) CHECK(inf.data()[i] == x.data()[i]);
  {
    const Tensor R = random_tensor(rng, {4, 50});
    Tensor dx = xt::ones<float>({4, 50});
    d->backward({&x}, inf, R, {&dx});
    for (size_t i = 0; i < x.size(); ++i) CHECK(dx.data()[i] == 1.0f + R.data()[i]);
  }

  // Training: each value is 0 or x / (1 - rate); backward is dout * mask, accumulated.
  const Tensor out = forward(*d, x, true);
  size_t dropped = 0;
  std::vector<float> mask(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float o = out.data()[i], xi = x.data()[i];
    CHECK((o == 0.0f || o == xi * 2.0f));
    mask[i] = o == 0.0f ? 0.0f : 2.0f;
    dropped += o == 0.0f;
  }
  CHECK(dropped > 60);
  CHECK(dropped < 140);
  const Tensor R = random_tensor(rng, {4, 50});
  const Tensor old = random_tensor(rng, {4, 50}, -3, 3);
  Tensor dx = old;
  d->backward({&x}, out, R, {&dx});
  for (size_t i = 0; i < x.size(); ++i)
    check_close(dx.data()[i], double(old.data()[i]) + double(R.data()[i]) * mask[i], 1e-6, 1e-6);
  // A copy of the output (another buffer) still finds the latest mask.
  const Tensor out_copy = out;
  Tensor dx2 = xt::zeros<float>({4, 50});
  d->backward({&x}, out_copy, R, {&dx2});
  for (size_t i = 0; i < x.size(); ++i) CHECK(dx2.data()[i] == R.data()[i] * mask[i]);

  // Reproducible: the same build seed gives the same masks, call after call.
  auto d2 = built(0.5f, 7);
  CHECK(forward(*d2, x, false) == inf);
  const Tensor out2 = forward(*d2, x, true);
  CHECK(out2 == out);
  const Tensor next = forward(*d, x, true), next2 = forward(*d2, x, true);
  CHECK(next == next2);
  CHECK(next != out);  // the stream advances
  CHECK(forward(*built(0.5f, 8), x, true) != out);  // another build seed
  // An explicit seed wins over the build's Random.
  CHECK(forward(*built(0.5f, 1, 42), x, true) == forward(*built(0.5f, 2, 42), x, true));
  // rate 0: the identity even in training.
  auto d0 = built(0.0f, 7);
  CHECK(forward(*d0, x, true) == x);

  CHECK_THROWS_AS(tl::Dropout(1.0f), std::invalid_argument);
  CHECK_THROWS_AS(tl::Dropout(-0.1f), std::invalid_argument);
}

// ---- State per output (a layer shared by several graph nodes) --------------------------------

TEST_CASE("Layers called twice before backward keep the state of each call") {
  tlref::Rng rng(700);
  const Tensor x1 = random_tensor(rng, {3, 4, 4, 2}), x2 = random_tensor(rng, {3, 4, 4, 2}, 0, 5);
  const Tensor R = random_tensor(rng, {3, 4, 4, 2});
  const Tensor Rp = random_tensor(rng, {3, 2, 2, 2});
  auto grads = [&](Layer& l, const Tensor& x, const Tensor& out, const Tensor& r) {
    Tensor dx = xt::zeros<float>(x.shape());
    for (const Param& p : l.params()) std::fill(p.grad, p.grad + p.size, 0.0f);
    l.backward({&x}, out, r, {&dx});
    std::vector<float> g(dx.begin(), dx.end());
    for (const Param& p : l.params()) g.insert(g.end(), p.grad, p.grad + p.size);
    return g;
  };
  SUBCASE("BatchNormalization") {
    tl::BatchNormalization shared, alone;
    tl::Random i1(1), i2(1);
    shared.build({{4, 4, 2}}, i1);
    alone.build({{4, 4, 2}}, i2);
    const Tensor o1 = forward(shared, x1, true), o2 = forward(shared, x2, true);
    const Tensor a1 = forward(alone, x1, true);
    CHECK(grads(shared, x1, o1, R) == grads(alone, x1, a1, R));
    (void)o2;
  }
  SUBCASE("MaxPooling2D") {
    tl::MaxPooling2D shared, alone;
    tl::Random i1(1), i2(1);
    shared.build({{4, 4, 2}}, i1);
    alone.build({{4, 4, 2}}, i2);
    const Tensor o1 = forward(shared, x1, true), o2 = forward(shared, x2, true);
    const Tensor a1 = forward(alone, x1, true);
    CHECK(grads(shared, x1, o1, Rp) == grads(alone, x1, a1, Rp));
    (void)o2;
  }
  SUBCASE("Dropout on one input twice: two masks") {
    tl::Dropout shared(0.5f);
    tl::Random i1(1);
    shared.build({{4, 4, 2}}, i1);
    const Tensor o1 = forward(shared, x2, true), o2 = forward(shared, x2, true);
    REQUIRE(o1 != o2);
    for (const Tensor* o : {&o1, &o2}) {
      const std::vector<float> g = grads(shared, x2, *o, R);
      for (size_t i = 0; i < g.size(); ++i)
        CHECK(g[i] == (o->data()[i] == 0.0f ? 0.0f : R.data()[i] * 2.0f));
    }
  }
}

// ---- Errors ---------------------------------------------------------------------------------------

TEST_CASE("Shape errors name the layer") {
  tl::Random rng(1);
  auto named = [](auto layer, const char* name) {
    layer->name = name;
    return layer;
  };
  check_error([&] { named(std::make_shared<tl::Conv2D>(2, tl::Size2{3, 3}), "conv_a")->build({{5, 3}}, rng); },
              "conv_a", "rank 4");
  check_error([&] { named(std::make_shared<tl::Conv2D>(2, tl::Size2{5, 5}), "conv_b")->build({{3, 3, 1}}, rng); },
              "conv_b", "larger than the input");
  check_error([&] { named(std::make_shared<tl::Conv2D>(2, tl::Size2{3, 3}), "conv_c")->build({{5, 5, 1}, {5, 5, 1}}, rng); },
              "conv_c", "one input");
  check_error([&] {
    named(std::make_shared<tl::DepthwiseConv2D>(tl::Size2{4, 1}), "dw_a")->build({{3, 3, 2}}, rng);
  }, "dw_a", "larger than the input");
  check_error([&] { named(std::make_shared<tl::DepthwiseConv2D>(tl::Size2{1, 1}), "dw_b")->build({{3, 3}}, rng); },
              "dw_b", "rank 4");
  check_error([&] {
    named(std::make_shared<tl::MaxPooling2D>(tl::Size2{3, 3}), "pool_a")->build({{2, 5, 1}}, rng);
  }, "pool_a", "larger than the input");
  check_error([&] { named(std::make_shared<tl::AveragePooling2D>(), "pool_b")->build({{4, 4}}, rng); },
              "pool_b", "rank 4");
  check_error([&] { named(std::make_shared<tl::GlobalAveragePooling2D>(), "gap")->build({{4}}, rng); },
              "gap", "rank 4");
  check_error([&] { named(std::make_shared<tl::BatchNormalization>(), "bn")->build({{4}, {4}}, rng); },
              "bn", "one input");
  check_error([&] { named(std::make_shared<tl::Dropout>(0.1f), "drop")->build({{4}, {4}}, rng); },
              "drop", "one input");

  // Forward on a batch of another shape than the layer was built for.
  tl::Conv2D conv(2, {3, 3});
  conv.name = "conv_d";
  conv.build({{6, 6, 3}}, rng);
  Tensor out;
  const Tensor wrong = xt::zeros<float>({2, 5, 6, 3});
  check_error([&] { conv.forward({&wrong}, out, true); }, "conv_d", "expected inputs of shape (None, 6, 6, 3)");
  tl::BatchNormalization bn;
  bn.name = "bn_b";
  bn.build({{4}}, rng);
  const Tensor wrong_c = xt::zeros<float>({2, 3});
  check_error([&] { bn.forward({&wrong_c}, out, true); }, "bn_b", "expected inputs of shape");
  // Backward with a gradient of the wrong size.
  const Tensor x = xt::zeros<float>({2, 6, 6, 3});
  conv.forward({&x}, out, true);
  const Tensor bad_dout = xt::zeros<float>({2, 4, 4, 3});
  Tensor dx = xt::zeros<float>(x.shape());
  check_error([&] { conv.backward({&x}, out, bad_dout, {&dx}); }, "conv_d", "dout");
  // Forward before build.
  tl::Conv2D unbuilt(2, {3, 3});
  unbuilt.name = "conv_e";
  check_error([&] { unbuilt.forward({&x}, out, true); }, "conv_e", "not built");

  // Invalid hyperparameters.
  CHECK_THROWS_AS(tl::Conv2D(0, {3, 3}), std::invalid_argument);
  CHECK_THROWS_AS(tl::Conv2D(2, {0, 3}), std::invalid_argument);
  CHECK_THROWS_AS(tl::Conv2D(2, {3, 3}, {1, 0}), std::invalid_argument);
  CHECK_THROWS_AS(tl::DepthwiseConv2D({3, 3}, {1, 1}, Padding::Valid, 0), std::invalid_argument);
  CHECK_THROWS_AS(tl::MaxPooling2D({2, 2}, tl::Size2{0, 1}), std::invalid_argument);
  CHECK_THROWS_AS(tl::AveragePooling2D({0, 2}), std::invalid_argument);
  CHECK_THROWS_AS(tl::BatchNormalization(0.99f, 0.0f), std::invalid_argument);
  CHECK_THROWS_AS(tl::BatchNormalization(1.5f), std::invalid_argument);
}

// ---- In a graph ---------------------------------------------------------------------------------

namespace {

// A model with a second, layerless source node (nodes_ is protected): the only way to make an
// output that does not depend on the input.
struct ModelWithConstant : tl::Model {
  int add_constant(const Shape& s) {
    nodes_.push_back({nullptr, {}, s});
    return int(nodes_.size()) - 1;
  }
};

}  // namespace

TEST_CASE("A residual CNN graph takes one SGD step along minus the gradient of the MSE") {
  // Input(6, 6, 2) -> Conv2D(3, 3x3, same, relu) -> a;  Conv2D(3, 3x3, same)(a) -> b;
  // Add([a, b]) -> ReLU -> GlobalAveragePooling2D -> Dense(2)
  const size_t N = 4, H = 6, W = 6;
  auto c1 = std::make_shared<tl::Conv2D>(3, tl::Size2{3, 3}, tl::Size2{1, 1}, Padding::Same, Activation::ReLU);
  auto c2 = std::make_shared<tl::Conv2D>(3, tl::Size2{3, 3}, tl::Size2{1, 1}, Padding::Same);
  auto add = std::make_shared<tl::Add>();
  auto relu = std::make_shared<tl::ActivationLayer>(Activation::ReLU);
  auto gap = std::make_shared<tl::GlobalAveragePooling2D>();
  auto dense = std::make_shared<tl::Dense>(2);
  tl::Model m;
  const int in = m.add_input({H, W, 2});
  const int a = m.add_node(c1, {in});
  const int b = m.add_node(c2, {a});
  const int s = m.add_node(add, {a, b});
  const int r = m.add_node(relu, {s});
  const int g = m.add_node(gap, {r});
  m.set_output(m.add_node(dense, {g}));
  m.build(11);
  CHECK(m.output_shape() == Shape{2});
  m.compile(std::make_unique<tl::SGD>(1.0f), tl::Loss::MSE);

  tlref::Rng rng(12);
  std::vector<Layer*> layers{c1.get(), c2.get(), dense.get()};
  for (Layer* l : layers) set_param(*l, "bias", rng, -0.2, 0.2);
  std::vector<std::vector<double>> p;  // c1 kernel, bias; c2 kernel, bias; dense kernel, bias
  for (Layer* l : layers)
    for (auto& v : param_values(*l)) p.push_back(v);
  REQUIRE(p.size() == 6);

  // The graph in double; `margin` receives the smallest |pre-activation| of the two ReLUs.
  const ConvCase conv1{N, H, W, 2, 3, 3, 3, 1, 1, Padding::Same, Activation::ReLU, true};
  const ConvCase conv2{N, H, W, 3, 3, 3, 3, 1, 1, Padding::Same, Activation::Linear, true};
  auto graph = [&](const std::vector<double>& x, double* margin) {
    std::vector<double> za = conv_ref(conv1, false, x, p[0], &p[1]);
    double mg = 1e300;
    for (double& v : za) {
      mg = std::min(mg, std::fabs(v));
      v = std::max(v, 0.0);
    }
    const std::vector<double> zb = conv_ref(conv2, false, za, p[2], &p[3]);
    std::vector<double> pooled(N * 3, 0.0);
    for (size_t i = 0; i < za.size(); ++i) {
      const double v = za[i] + zb[i];
      mg = std::min(mg, std::fabs(v));
      pooled[(i / (H * W * 3)) * 3 + i % 3] += std::max(v, 0.0) / double(H * W);
    }
    if (margin) *margin = mg;
    std::vector<double> y(N * 2);
    for (size_t n = 0; n < N; ++n)
      for (size_t j = 0; j < 2; ++j) {
        double v = p[5][j];
        for (size_t c = 0; c < 3; ++c) v += pooled[n * 3 + c] * p[4][c * 2 + j];
        y[n * 2 + j] = v;
      }
    return y;
  };

  Tensor x, y = random_tensor(rng, {N, 2});
  for (int attempt = 0;; ++attempt) {  // inputs away from the ReLU kinks
    REQUIRE(attempt < 100);
    x = random_tensor(rng, {N, H, W, 2});
    double margin = 0.0;
    graph(to_double(x), &margin);
    if (margin > 1e-3) break;
  }
  const std::vector<double> xd = to_double(x), yd = to_double(y);
  auto loss = [&]() {
    const std::vector<double> pred = graph(xd, nullptr);
    double l = 0.0;
    for (size_t i = 0; i < pred.size(); ++i) l += (pred[i] - yd[i]) * (pred[i] - yd[i]);
    return l / double(pred.size());
  };
  // The model agrees with the double graph before training.
  const Tensor pred = m.predict(x);
  const std::vector<double> want = graph(xd, nullptr);
  for (size_t i = 0; i < want.size(); ++i) check_close(pred.data()[i], want[i], 1e-5, 1e-5);
  check_close(m.evaluate(x, y)[0], loss(), 1e-6, 1e-5);

  tl::FitOptions opt;
  opt.epochs = 1;
  opt.batch_size = N;
  opt.shuffle = false;
  m.fit(x, y, opt);
  size_t k = 0;
  for (Layer* l : layers)
    for (const Param& q : l->params()) {
      INFO(l->kind() << " " << q.name);
      for (size_t i = 0; i < q.size; ++i) {
        const double grad = central_diff(p[k], i, 1e-6, loss);
        check_close(double(q.value[i]) - p[k][i], -grad, 1e-5, 1e-4);
      }
      ++k;
    }
}

TEST_CASE("Model build rejects a CNN graph whose output does not depend on the input") {
  ModelWithConstant m;
  const int in = m.add_input({6, 6, 2});
  m.add_node(std::make_shared<tl::Conv2D>(3, tl::Size2{3, 3}), {in});  // dangling branch
  const int c = m.add_constant({4, 4, 2});
  const int conv = m.add_node(std::make_shared<tl::Conv2D>(3, tl::Size2{3, 3}), {c});
  m.set_output(m.add_node(std::make_shared<tl::GlobalAveragePooling2D>(), {conv}));
  CHECK_THROWS_WITH_AS(m.build(1), doctest::Contains("does not depend on the input"), std::invalid_argument);
}

TEST_CASE("A small CNN with BatchNormalization and Dropout trains deterministically") {
  // Conv2D -> BN -> ReLU -> MaxPool -> Dropout -> DepthwiseConv2D -> AvgPool -> GAP -> Dense.
  tlref::Rng rng(800);
  const size_t N = 24;
  Tensor x = random_tensor(rng, {N, 8, 8, 1}), y = Tensor::from_shape({N, 1});
  for (size_t n = 0; n < N; ++n) {  // target: mean of the top half minus the bottom half
    double t = 0.0;
    for (size_t i = 0; i < 64; ++i) t += (i < 32 ? 1.0 : -1.0) * x.data()[n * 64 + i] / 32.0;
    y.data()[n] = float(t * 4.0);
  }
  struct Run {
    std::vector<float> weights;
    std::vector<float> loss;
  };
  auto train = [&](std::uint64_t seed) {
    tl::Sequential m;
    m.add(std::make_unique<tl::Conv2D>(4, tl::Size2{3, 3}, tl::Size2{1, 1}, Padding::Same));
    m.add(std::make_unique<tl::BatchNormalization>(0.9f));
    m.add(std::make_unique<tl::ActivationLayer>(Activation::ReLU));
    m.add(std::make_unique<tl::MaxPooling2D>());
    m.add(std::make_unique<tl::Dropout>(0.2f));
    m.add(std::make_unique<tl::DepthwiseConv2D>(tl::Size2{3, 3}, tl::Size2{1, 1}, Padding::Same, 2));
    m.add(std::make_unique<tl::AveragePooling2D>());
    m.add(std::make_unique<tl::GlobalAveragePooling2D>());
    m.add(std::make_unique<tl::Dense>(1));
    m.build(Shape{8, 8, 1}, seed);
    m.compile(std::make_unique<tl::Adam>(0.01f), tl::Loss::MSE);
    tl::FitOptions opt;
    opt.epochs = 8;
    opt.batch_size = 8;
    opt.seed = seed;
    const tl::History h = m.fit(x, y, opt);
    Run r{{}, h.history.at("loss")};
    for (size_t i = 0; i < m.size(); ++i) {
      for (const Param& q : m.layer(i).params()) r.weights.insert(r.weights.end(), q.value, q.value + q.size);
      if (auto* bn = dynamic_cast<tl::BatchNormalization*>(&m.layer(i)))
        for (const Param& q : bn->state()) r.weights.insert(r.weights.end(), q.value, q.value + q.size);
    }
    const Tensor pred = m.predict(x);
    CHECK(std::all_of(pred.begin(), pred.end(), [](float v) { return std::isfinite(v); }));
    return r;
  };
  const Run a = train(3), b = train(3), c = train(4);
  CHECK(a.weights == b.weights);
  CHECK(a.loss == b.loss);
  CHECK(a.weights != c.weights);
  MESSAGE("CNN loss, first and last epoch: " << a.loss.front() << " -> " << a.loss.back());
  CHECK(a.loss.back() < a.loss.front());
}
