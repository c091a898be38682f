// Fake quantization for quantization-aware training (tinylearn/train/fake_quant.h).
#include "tinylearn/train/fake_quant.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "parallel.h"

namespace tinylearn {

namespace {

// The elementwise loops below are compiled twice, for AVX2 and for the baseline, and the loader
// picks one per machine (as conv_ops.cpp does): 8 lanes instead of 4. No FMA: both clones
// compute the same bits.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define TL_FQ_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef TL_FQ_CLONES
#define TL_FQ_CLONES
#endif

// out = fq(x) over n values (restrict: the loop vectorizes).
TL_FQ_CLONES
void fake_quant_values(float* __restrict out, const float* __restrict x, std::size_t n, float scale,
                       float zero_point) {
  for (std::size_t i = 0; i < n; ++i)
    out[i] = (quantize_activation(x[i], scale, zero_point) - zero_point) * scale;
}

// out = the value on the grid of the stored int8 x, rounded as an average pool rounds.
TL_FQ_CLONES
void fake_quant_stored(float* __restrict out, const float* __restrict x, std::size_t n, float scale,
                       float zero_point) {
  for (std::size_t i = 0; i < n; ++i)
    out[i] = (quantize_stored(x[i], scale, zero_point) - zero_point) * scale;
}

// (lo, hi) = (min, max) of n > 0 values, in 8 lanes (an elementwise compare-and-select that
// vectorizes, unlike a scalar min reduction), then across them.
TL_FQ_CLONES
void min_max(const float* __restrict x, std::size_t n, float& lo, float& hi) {
  constexpr std::size_t kLanes = 8;
  float a[kLanes], b[kLanes];
  for (std::size_t k = 0; k < kLanes; ++k) a[k] = b[k] = x[0];
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (std::size_t k = 0; k < kLanes; ++k) {
      a[k] = x[i + k] < a[k] ? x[i + k] : a[k];
      b[k] = x[i + k] > b[k] ? x[i + k] : b[k];
    }
  for (; i < n; ++i) {
    a[0] = x[i] < a[0] ? x[i] : a[0];
    b[0] = x[i] > b[0] ? x[i] : b[0];
  }
  lo = a[0];
  hi = b[0];
  for (std::size_t k = 1; k < kLanes; ++k) {
    lo = a[k] < lo ? a[k] : lo;
    hi = b[k] > hi ? b[k] : hi;
  }
}

// d += g where lo <= x <= hi (the straight-through gradient inside the range).
TL_FQ_CLONES
void pass_inside(float* __restrict d, const float* __restrict g, const float* __restrict x, std::size_t n,
                 float lo, float hi) {
  for (std::size_t i = 0; i < n; ++i) {
    const float gi = g[i], xi = x[i];
    d[i] += (xi >= lo) & (xi <= hi) ? gi : 0.0f;
  }
}

}  // namespace

void fake_quant_weights(float* out, const float* w, std::size_t n, std::size_t channels, int bits,
                        float* scales) {
  if (channels == 0 || n % channels != 0)
    throw std::invalid_argument("fake_quant_weights: " + std::to_string(n) +
                                " weights do not split into " + std::to_string(channels) + " channels");
  if (bits < 2 || bits > 8)
    throw std::invalid_argument("fake_quant_weights: bits must be in [2, 8], got " + std::to_string(bits));
  std::fill(scales, scales + channels, 0.0f);
  for (std::size_t i = 0; i < n; ++i) scales[i % channels] = std::max(scales[i % channels], std::fabs(w[i]));
  for (std::size_t c = 0; c < channels; ++c) scales[c] = weight_scale(scales[c], bits);
  for (std::size_t i = 0; i < n; i += channels)  // one row of every channel at a time
    for (std::size_t c = 0; c < channels; ++c) out[i + c] = quantize_weight(w[i + c], scales[c], bits) * scales[c];
}

FakeQuant::FakeQuant(float ema_decay, std::int64_t quant_delay)
    : ema_decay_(ema_decay), quant_delay_(quant_delay) {
  if (!(ema_decay >= 0.0f && ema_decay < 1.0f))
    throw std::invalid_argument("FakeQuant: ema_decay must be in [0, 1), got " + std::to_string(ema_decay));
  if (quant_delay < 0)
    throw std::invalid_argument("FakeQuant: quant_delay must be >= 0, got " + std::to_string(quant_delay));
}

std::shared_ptr<FakeQuant> FakeQuant::fixed(QuantParams params) {
  if (!(params.scale > 0.0f) || !std::isfinite(params.scale) || params.zero_point < -128 ||
      params.zero_point > 127)
    throw std::invalid_argument("FakeQuant: a fixed quantization needs a finite scale > 0 and a "
                                "zero point in [-128, 127]");
  auto f = std::make_shared<FakeQuant>();
  f->mode_ = Mode::Fixed;
  f->fixed_ = params;
  return f;
}

std::shared_ptr<FakeQuant> FakeQuant::same_as(std::shared_ptr<const FakeQuant> source) {
  if (!source) throw std::invalid_argument("FakeQuant: same_as needs a source FakeQuant");
  auto f = std::make_shared<FakeQuant>();
  f->mode_ = Mode::SameAsSource;
  f->source_ = std::move(source);
  return f;
}

bool FakeQuant::active() const {
  switch (mode_) {
    case Mode::Fixed: return true;
    case Mode::SameAsSource: return source_->active();
    case Mode::MovingAverage: break;
  }
  return steps_ > 0.0f && steps_ > float(quant_delay_);
}

QuantParams FakeQuant::params() const {
  switch (mode_) {
    case Mode::Fixed: return fixed_;
    case Mode::SameAsSource: return source_->params();
    case Mode::MovingAverage: break;
  }
  if (!(steps_ > 0.0f))
    throw std::logic_error("layer '" + name + "' (FakeQuant) has no activation range yet: fit the "
                           "quantization-aware model first");
  return choose_activation_params(min_, max_);
}

Shape FakeQuant::do_build(const std::vector<Shape>& inputs, Random&) {
  if (inputs.size() != 1) fail("takes one input, got " + std::to_string(inputs.size()));
  return inputs[0];
}

void FakeQuant::forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) {
  const Tensor& x = *in[0];
  const float* xp = x.data();
  const std::size_t n = x.size();
  if (training && mode_ == Mode::MovingAverage && n > 0) {
    // Per-part extremes, combined in part order (min and max do not depend on it anyway).
    const std::size_t parts = par::parts_for(n, double(n), 65536.0);
    std::vector<float> plo(parts), phi(parts);
    par::for_parts(n, parts, [&](std::size_t k, std::size_t b, std::size_t e) {
      if (e > b) min_max(xp + b, e - b, plo[k], phi[k]);
      else plo[k] = phi[k] = xp[0];
    });
    float lo = plo[0], hi = phi[0];
    for (std::size_t k = 1; k < parts; ++k) {
      lo = std::min(lo, plo[k]);
      hi = std::max(hi, phi[k]);
    }
    if (!std::isfinite(lo) || !std::isfinite(hi))
      fail("a non-finite value reached the quantizer (the training diverged)");
    if (steps_ == 0.0f) {
      min_ = lo;
      max_ = hi;
    } else {
      min_ = ema_decay_ * min_ + (1.0f - ema_decay_) * lo;
      max_ = ema_decay_ * max_ + (1.0f - ema_decay_) * hi;
    }
    steps_ += 1.0f;  // exact up to 2^24 steps
  }
  out.resize(x.shape());
  last_active_ = active();
  if (!last_active_) {
    std::copy(xp, xp + n, out.data());
    return;
  }
  const QuantParams p = params();
  const float zp = float(p.zero_point), s = p.scale;
  last_lo_ = (-128.0f - zp) * s;
  last_hi_ = (127.0f - zp) * s;
  float* o = out.data();
  const bool stored = mode_ == Mode::SameAsSource;
  par::for_range(n, [&](std::size_t b, std::size_t e) {
    if (stored)
      fake_quant_stored(o + b, xp + b, e - b, s, zp);
    else
      fake_quant_values(o + b, xp + b, e - b, s, zp);
  });
}

void FakeQuant::backward(const std::vector<const Tensor*>& in, const Tensor&, const Tensor& dout,
                         const std::vector<Tensor*>& din) {
  if (din.empty() || !din[0]) return;
  float* d = din[0]->data();
  const float* g = dout.data();
  const float* x = in[0]->data();
  const std::size_t n = dout.size();
  if (!last_active_) {
    par::for_range(n, [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) d[i] += g[i];
    });
    return;
  }
  // Straight-through estimator: the rounding passes the gradient, the clamp stops it.
  const float lo = last_lo_, hi = last_hi_;
  par::for_range(n, [&](std::size_t b, std::size_t e) { pass_inside(d + b, g + b, x + b, e - b, lo, hi); });
}

std::vector<Param> FakeQuant::state() {
  return {{"min", &min_, nullptr, 1, {1}}, {"max", &max_, nullptr, 1, {1}},
          {"steps", &steps_, nullptr, 1, {1}}};
}

}  // namespace tinylearn
