// Quantization-aware training in the training core: the int8 numerics that training simulates
// (shared with the converter, so the simulation and the int8 graph agree) and the FakeQuant layer.
//
// Usage (what tl.optimize.quantize_model builds from a float model):
//
//   input -> FakeQuant(ema) -> Conv2D(weight_bits=8, relu, BN folded) -> FakeQuant(ema)
//         -> MaxPooling2D -> ... -> Dense(weight_bits=8) -> FakeQuant(ema)
//         -> Activation(softmax) -> FakeQuant(fixed 1/256, -128)
//
// A FakeQuant sits at every tensor the int8 graph has (after a fused ReLU/ReLU6, the outputs of
// Add, Concatenate, mean and the model input); the layers with weights fake-quantize their kernel
// as tl.convert quantizes it (per channel for Conv2D and DepthwiseConv2D, per tensor for Dense).
// tinylearn::quantize() then takes a QAT model's ranges from its FakeQuant layers instead of
// calibrating, so the int8 model computes what the QAT model simulated, up to the int8 kernels'
// fixed-point rounding.
#ifndef TINYLEARN_TRAIN_FAKE_QUANT_H
#define TINYLEARN_TRAIN_FAKE_QUANT_H

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tinylearn/train/layers.h"

namespace tinylearn {

// Asymmetric int8 parameters of an activation tensor: real = scale * (q - zero_point).
struct QuantParams {
  float scale;
  std::int32_t zero_point;
};

// Asymmetric int8 parameters for a real range, widened to contain 0 and with the zero point
// nudged to an integer so that 0.0 is exact (as TFLite's converter and tfmot). Throws
// std::invalid_argument for a non-finite range or min > max.
QuantParams choose_activation_params(float min, float max);

// ---- Symmetric weights (per tensor or per output channel), TFLite's int8 weight spec ----
//
// bits = 8: values in [-127, 127] (the spec leaves -128 out); bits = 4: [-7, 7].
inline int weight_qmax(int bits) { return (1 << (bits - 1)) - 1; }
// scale = max|w| / qmax (1 for an all-zero channel, whose values then quantize to 0).
inline float weight_scale(float max_abs, int bits) {
  return max_abs > 0.0f ? max_abs / float(weight_qmax(bits)) : 1.0f;
}
// round(w / scale) in float, halves away from zero (as TFLite's std::round), clamped; written
// with a truncation and the exact fraction instead of std::round so that loops vectorize.
inline float quantize_weight(float w, float scale, int bits) {
  const float q = float(weight_qmax(bits));
  const float t = std::min(std::max(w / scale, -q), q);  // integer bounds: clamp, then round
  const float i = float(int(t));
  const float f = t - i;
  return i + (f >= 0.5f ? 1.0f : 0.0f) - (f <= -0.5f ? 1.0f : 0.0f);
}

// out[i] = quantize_weight(w[i], s[c], bits) * s[c] with c = i % channels (the channel is the
// fastest-varying index: Dense kernels with channels = 1 (per tensor), Conv2D kernels
// (KH, KW, C, OC) and DepthwiseConv2D kernels (KH, KW, C, M) with channels = OC = C * M).
//   out:    (n)          in place allowed
//   w:      (n)
//   scales: (channels)   receives s[c] = weight_scale(max |w| of channel c, bits)
void fake_quant_weights(float* out, const float* w, std::size_t n, std::size_t channels, int bits,
                        float* scales);

// clamp(round(x / scale) + zero_point, -128, 127) as a float, round half away from zero: TFLite's
// Quantize (tinylearn::quantize_value). Written without std::round so that loops over it
// vectorize: the clamp comes first (its bounds are integers, so it commutes with the rounding),
// then the truncation and the exact fraction decide the rounding.
inline float quantize_activation(float x, float scale, float zero_point) {
  // The zero point is added after the rounding: halves round away from zero in x / scale.
  const float t = std::min(std::max(x / scale, -128.0f - zero_point), 127.0f - zero_point);
  const float i = float(int(t));  // toward zero; |t| <= 255
  const float f = t - i;          // exact
  return i + (f >= 0.5f ? 1.0f : 0.0f) - (f <= -0.5f ? 1.0f : 0.0f) + zero_point;
}

// clamp(round(x / scale + zero_point), -128, 127): the rounding of an int8 kernel that averages
// stored values (zero point included), as the average pool's (sum +- count / 2) / count.
inline float quantize_stored(float x, float scale, float zero_point) {
  const float t = std::min(std::max(x / scale + zero_point, -128.0f), 127.0f);
  const float i = float(int(t));
  const float f = t - i;
  return i + (f >= 0.5f ? 1.0f : 0.0f) - (f <= -0.5f ? 1.0f : 0.0f);
}

// Activation fake quantization (TFLite's Quantize then Dequantize, in float):
//   fq(x) = (clamp(round(x / scale) + zero_point, -128, 127) - zero_point) * scale
// with round half away from zero, as tinylearn::quantize_value and TFLite's reference Quantize.
// Its straight-through gradient is dout where x lies inside the representable range
// [(-128 - zp) * scale, (127 - zp) * scale] and 0 outside.
//
// Modes:
//   MovingAverage: the range is an exponential moving average of each training batch's min and
//     max (min = decay * min + (1 - decay) * batch_min; the first batch sets it), tfmot's
//     MovingAverageQuantizer. Quantization starts after `quant_delay` training steps (ranges are
//     tracked from the first); before the first training step it is the identity.
//   Fixed: fixed parameters (softmax's output: scale 1/256, zero point -128, per the spec).
//   SameAsSource: the current parameters of another FakeQuant (an average pool's output keeps
//     its input's quantization in the int8 graph), rounding as the pool does (quantize_stored:
//     halves away from zero in the stored value, zero point included).
// State (saved with the weights, non-trainable): "min", "max", "steps", one value each.
class FakeQuant final : public Layer {
 public:
  enum class Mode { MovingAverage, Fixed, SameAsSource };
  // MovingAverage with tfmot's default decay.
  explicit FakeQuant(float ema_decay = 0.999f, std::int64_t quant_delay = 0);
  static std::shared_ptr<FakeQuant> fixed(QuantParams params);
  static std::shared_ptr<FakeQuant> same_as(std::shared_ptr<const FakeQuant> source);

  std::string kind() const override { return "FakeQuant"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;
  std::vector<Param> state() override;

  Mode mode() const { return mode_; }
  float ema_decay() const { return ema_decay_; }
  std::int64_t quant_delay() const { return quant_delay_; }
  // Whether forwards quantize now (a range exists and the delay has passed; Fixed: always).
  bool active() const;
  // The parameters forwards use; throws std::logic_error when no range exists yet.
  QuantParams params() const;
  // The tracked range (MovingAverage), valid once `steps` > 0.
  float range_min() const { return min_; }
  float range_max() const { return max_; }
  std::int64_t steps() const { return std::int64_t(steps_); }

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  Mode mode_ = Mode::MovingAverage;
  float ema_decay_ = 0.999f;
  std::int64_t quant_delay_ = 0;
  QuantParams fixed_{1.0f, 0};
  std::shared_ptr<const FakeQuant> source_;
  // State, as floats so that it saves with the weights: the range and the training steps seen.
  float min_ = 0.0f, max_ = 0.0f, steps_ = 0.0f;
  // What the last forward did, for its backward: quantized, and the unclipped real range.
  bool last_active_ = false;
  float last_lo_ = 0.0f, last_hi_ = 0.0f;
};

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_FAKE_QUANT_H
