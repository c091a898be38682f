// Quantization-aware training's numerics (tinylearn/train/fake_quant.h) against references
// written from the definitions in double precision: TFLite's asymmetric activation parameters
// and Quantize (round half away from zero), symmetric per-channel weights, the moving-average
// range, the straight-through gradient, and the agreement of fake quantization with the
// converter's quantize_value. Everything random is seeded.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "tinylearn/convert/convert.h"
#include "tinylearn/train/cnn_layers.h"
#include "tinylearn/train/fake_quant.h"
#include "tl_reference.h"

namespace {

namespace tl = tinylearn;
using tinylearn::Tensor;

// Round half away from zero, in double.
double round_away(double v) { return v < 0 ? -std::floor(-v + 0.5) : std::floor(v + 0.5); }

// TFLite's parameters for [lo, hi] widened to hold 0, zero point nudged to an integer.
void reference_params(double lo, double hi, double& scale, double& zp) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  scale = (hi - lo) / 255.0;
  zp = std::clamp(round_away(-128.0 - lo / scale), -128.0, 127.0);
}

Tensor random_tensor(tlref::Rng& rng, std::vector<std::size_t> shape, double lo, double hi) {
  Tensor t = Tensor::from_shape(shape);
  for (float& v : t) v = float(rng.uniform(lo, hi));
  return t;
}

}  // namespace

TEST_CASE("quantize_activation equals the converter's quantize_value (TFLite's Quantize)") {
  tlref::Rng rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const float lo = float(rng.uniform(-5.0, 0.5)), hi = float(rng.uniform(-0.5, 8.0));
    const tl::QuantParams p = tl::choose_activation_params(std::min(lo, hi), std::max(lo, hi));
    for (int i = 0; i < 2000; ++i) {
      // Values on and between the grid points, halves included, and far outside the range.
      float x = float(rng.uniform(-12.0, 12.0));
      if (i % 4 == 0) x = (float(int(rng.uniform(-140, 140))) + 0.5f) * p.scale;
      const float q = tl::quantize_activation(x, p.scale, float(p.zero_point));
      CHECK(q == float(tl::quantize_value(x, p)));
    }
  }
}

TEST_CASE("fake_quant_weights: symmetric int8 and int4 per channel, as the definition") {
  tlref::Rng rng(11);
  for (int bits : {8, 4}) {
    const std::size_t channels = 5, n = channels * 37;
    std::vector<float> w(n), out(n), scales(channels);
    for (float& v : w) v = float(rng.uniform(-2.0, 2.0));
    for (std::size_t i = 3; i < n; i += channels) w[i] = 0.0f;  // channel 3: all zero
    tl::fake_quant_weights(out.data(), w.data(), n, channels, bits, scales.data());
    const double qmax = bits == 8 ? 127.0 : 7.0;
    for (std::size_t c = 0; c < channels; ++c) {
      double m = 0.0;
      for (std::size_t i = c; i < n; i += channels) m = std::max(m, std::fabs(double(w[i])));
      const double s = m > 0 ? m / qmax : 1.0;
      CHECK(scales[c] == doctest::Approx(s).epsilon(1e-6));
      for (std::size_t i = c; i < n; i += channels) {
        const double q = std::clamp(round_away(double(w[i]) / s), -qmax, qmax);
        CHECK(double(out[i]) == doctest::Approx(q * s).epsilon(1e-6));
        CHECK(std::fabs(out[i] - w[i]) <= 0.5 * s * (1 + 1e-5));
      }
    }
  }
  std::vector<float> w(6), out(6), s(4);
  CHECK_THROWS_AS(tl::fake_quant_weights(out.data(), w.data(), 6, 4, 8, s.data()), std::invalid_argument);
}

TEST_CASE("FakeQuant: moving-average range, quantized forward, straight-through backward") {
  tlref::Rng rng(3);
  tl::FakeQuant fq(0.9f, 0);
  fq.name = "fq";
  tl::Random init(1);
  fq.build({{4, 3}}, init);
  CHECK_FALSE(fq.active());
  CHECK_THROWS_AS(fq.params(), std::logic_error);

  Tensor out, x0 = random_tensor(rng, {2, 4, 3}, -1.0, 1.0);
  fq.forward({&x0}, out, false);  // inference before any training: the identity
  CHECK(std::equal(out.begin(), out.end(), x0.begin()));

  double lo = 0, hi = 0;
  for (int step = 0; step < 5; ++step) {
    const Tensor x = random_tensor(rng, {2, 4, 3}, -1.0 - step, 2.0 + step);
    const double blo = *std::min_element(x.begin(), x.end()), bhi = *std::max_element(x.begin(), x.end());
    if (step == 0) {
      lo = blo;
      hi = bhi;
    } else {
      lo = 0.9 * lo + 0.1 * blo;
      hi = 0.9 * hi + 0.1 * bhi;
    }
    fq.forward({&x}, out, true);
    CHECK(fq.range_min() == doctest::Approx(lo).epsilon(1e-5));
    CHECK(fq.range_max() == doctest::Approx(hi).epsilon(1e-5));
    CHECK(fq.steps() == step + 1);
    double scale, zp;
    reference_params(lo, hi, scale, zp);
    CHECK(fq.params().zero_point == int(zp));
    CHECK(fq.params().scale == doctest::Approx(scale).epsilon(1e-5));
    // Forward: dequantize(quantize(x)) with the updated range.
    const tl::QuantParams p = fq.params();
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double q = std::clamp(round_away(double(x.data()[i]) / p.scale) + p.zero_point, -128.0, 127.0);
      CHECK(out.data()[i] == doctest::Approx((q - p.zero_point) * p.scale).epsilon(1e-6));
    }
    // Backward: the gradient passes inside the representable range, accumulates (+=).
    Tensor dout = random_tensor(rng, {2, 4, 3}, -1.0, 1.0);
    Tensor din = Tensor::from_shape({2, 4, 3});
    std::fill(din.begin(), din.end(), 0.25f);
    fq.backward({&x}, out, dout, {&din});
    const double rlo = (-128.0 - p.zero_point) * p.scale, rhi = (127.0 - p.zero_point) * p.scale;
    int clipped = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const bool inside = x.data()[i] >= rlo && x.data()[i] <= rhi;
      clipped += !inside;
      CHECK(din.data()[i] == doctest::Approx(0.25 + (inside ? dout.data()[i] : 0.0)));
    }
    if (step == 4) CHECK(clipped > 0);  // the last batch's range exceeds the moving average's
  }
}

TEST_CASE("FakeQuant: quant_delay, fixed and same-as-source parameters") {
  tl::Random init(1);
  tl::FakeQuant delayed(0.999f, 3);
  delayed.build({{2}}, init);
  Tensor x = Tensor::from_shape({1, 2});
  x.data()[0] = -0.3f;
  x.data()[1] = 0.7001f;
  Tensor out;
  for (int step = 1; step <= 4; ++step) {
    delayed.forward({&x}, out, true);
    CHECK(delayed.active() == (step > 3));
    CHECK((out.data()[1] == x.data()[1]) == (step <= 3));
  }
  auto fixed = tl::FakeQuant::fixed({1.0f / 256.0f, -128});
  fixed->build({{2}}, init);
  x.data()[0] = 0.30f;
  x.data()[1] = 1.5f;
  fixed->forward({&x}, out, false);
  CHECK(out.data()[0] == doctest::Approx(77.0 / 256.0));  // round(76.8) = 77
  CHECK(out.data()[1] == doctest::Approx(255.0 / 256.0)); // clamped at 127
  auto src = std::make_shared<tl::FakeQuant>(0.5f, 0);
  src->build({{2}}, init);
  auto same = tl::FakeQuant::same_as(src);
  same->build({{2}}, init);
  CHECK_FALSE(same->active());
  x.data()[0] = -1.0f;
  x.data()[1] = 3.0f;
  src->forward({&x}, out, true);
  CHECK(same->active());
  CHECK(same->params().scale == src->params().scale);
  CHECK(same->params().zero_point == src->params().zero_point);
  CHECK_THROWS_AS(tl::FakeQuant(1.0f, 0), std::invalid_argument);
  CHECK_THROWS_AS(tl::FakeQuant(0.9f, -1), std::invalid_argument);
  CHECK_THROWS_AS(tl::FakeQuant::fixed({0.0f, 0}), std::invalid_argument);
}

TEST_CASE("weight_bits: a Conv2D computes with its fake-quantized kernel, gradients straight through") {
  tlref::Rng rng(5);
  tl::Random init(2);
  tl::Conv2D q(3, {2, 2}), f(3, {2, 2});
  q.weight_bits = 8;
  q.build({{4, 4, 2}}, init);
  f.build({{4, 4, 2}}, init);
  for (float& v : q.kernel) v = float(rng.uniform(-1.0, 1.0));
  for (float& v : q.bias) v = float(rng.uniform(-0.1, 0.1));
  // f holds q's kernel fake-quantized by hand: the two must compute the same.
  std::vector<float> scales(3);
  tl::fake_quant_weights(f.kernel.data(), q.kernel.data(), q.kernel.size(), 3, 8, scales.data());
  f.bias = q.bias;
  const Tensor x = random_tensor(rng, {2, 4, 4, 2}, -1.0, 1.0);
  Tensor yq, yf;
  q.forward({&x}, yq, true);
  f.forward({&x}, yf, true);
  for (std::size_t i = 0; i < yq.size(); ++i) CHECK(yq.data()[i] == doctest::Approx(yf.data()[i]).epsilon(1e-6));
  const Tensor dout = random_tensor(rng, {2, 3, 3, 3}, -1.0, 1.0);
  Tensor dxq = Tensor::from_shape({2, 4, 4, 2}), dxf = Tensor::from_shape({2, 4, 4, 2});
  std::fill(dxq.begin(), dxq.end(), 0.0f);
  std::fill(dxf.begin(), dxf.end(), 0.0f);
  std::fill(q.kernel_grad.begin(), q.kernel_grad.end(), 0.0f);
  std::fill(f.kernel_grad.begin(), f.kernel_grad.end(), 0.0f);
  q.backward({&x}, yq, dout, {&dxq});
  f.backward({&x}, yf, dout, {&dxf});
  for (std::size_t i = 0; i < dxq.size(); ++i) CHECK(dxq.data()[i] == doctest::Approx(dxf.data()[i]).epsilon(1e-5));
  for (std::size_t i = 0; i < q.kernel_grad.size(); ++i)
    CHECK(q.kernel_grad.data()[i] == doctest::Approx(f.kernel_grad.data()[i]).epsilon(1e-5));
}
