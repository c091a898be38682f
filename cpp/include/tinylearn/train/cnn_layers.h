// Layers for convolutional networks (NHWC, Keras semantics, defaults and weight layouts, so
// weights move between tinylearn and Keras as they are): Conv2D, DepthwiseConv2D, MaxPooling2D,
// AveragePooling2D, GlobalAveragePooling2D, BatchNormalization and Dropout. They run on the
// kernels of conv_ops.h and nn_ops.h.
//
// `training` (the forward's flag) matters to BatchNormalization (batch statistics and moving
// average updates vs the moving statistics) and Dropout (random mask vs identity). What a
// training forward saves for its backward (BN batch statistics, dropout mask, max-pooling
// argmax) is kept per output tensor, so a layer shared by several nodes of a graph
// backpropagates each call with its own state.
#ifndef TINYLEARN_TRAIN_CNN_LAYERS_H
#define TINYLEARN_TRAIN_CNN_LAYERS_H

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tinylearn/train/conv_ops.h"
#include "tinylearn/train/layers.h"
#include "tinylearn/train/nn_ops.h"
#include "tinylearn/train/random.h"
#include "tinylearn/train/tensor.h"

namespace tinylearn {

// (height, width) of a window or of strides.
using Size2 = std::array<std::size_t, 2>;

namespace detail {

// State a forward saved for the backward of the same call, keyed by the forward's output buffer
// (its address and size); the most recent few entries are kept (a non-shared layer uses one).
template <class T>
class SavedPerOutput {
 public:
  // The entry for `out` (after the forward resized it), created if needed, made the latest.
  T& put(const Tensor& out) {
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].key == out.data() && entries_[i].size == out.size()) {
        Entry e = std::move(entries_[i]);
        entries_.erase(entries_.begin() + std::ptrdiff_t(i));
        entries_.push_back(std::move(e));
        return entries_.back().value;
      }
    if (entries_.size() == kMaxEntries) entries_.erase(entries_.begin());
    entries_.push_back({out.data(), out.size(), T{}});
    return entries_.back().value;
  }
  // Forgets what was saved for `out` (an inference forward wrote it).
  void erase(const Tensor& out) {
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].key == out.data() && entries_[i].size == out.size()) {
        entries_.erase(entries_.begin() + std::ptrdiff_t(i));
        return;
      }
  }
  // The entry saved for `out`, or null.
  T* find(const Tensor& out) {
    for (Entry& e : entries_)
      if (e.key == out.data() && e.size == out.size()) return &e.value;
    return nullptr;
  }
  // The most recent entry for an output of `size` values, or null.
  T* latest(std::size_t size) {
    return !entries_.empty() && entries_.back().size == size ? &entries_.back().value : nullptr;
  }

 private:
  struct Entry {
    const float* key;
    std::size_t size;
    T value;
  };
  static constexpr std::size_t kMaxEntries = 8;
  std::vector<Entry> entries_;
};

}  // namespace detail

// activation(conv2d(x, kernel) + bias), as keras.layers.Conv2D (channels_last, dilation 1).
// Input (H, W, C) -> output (OH, OW, filters).
class Conv2D final : public Layer {
 public:
  Conv2D(std::size_t filters, Size2 kernel_size, Size2 strides = {1, 1},
         ops::Padding padding = ops::Padding::Valid, Activation activation = Activation::Linear,
         bool use_bias = true);
  std::string kind() const override { return "Conv2D"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;
  std::vector<Param> params() override;  // "kernel" (KH, KW, C, filters), "bias" (filters)
  bool kernel_matrix(float*& w, std::size_t& rows, std::size_t& cols) override {
    w = kernel.data();
    cols = filters_;
    rows = kernel.size() / cols;
    return true;
  }

  std::size_t filters() const { return filters_; }
  Size2 kernel_size() const { return kernel_size_; }
  Size2 strides() const { return strides_; }
  ops::Padding padding() const { return padding_; }
  Activation activation() const { return activation_; }
  bool use_bias() const { return use_bias_; }

  Tensor kernel;  // (KH, KW, C, filters), Glorot uniform (fan_in KH*KW*C, fan_out KH*KW*filters)
  Tensor bias;    // (filters), zeros; empty without bias
  Tensor kernel_grad;
  Tensor bias_grad;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  ops::Conv2DGeometry geometry(std::size_t batch, const Shape& sample) const;
  std::size_t filters_;
  Size2 kernel_size_, strides_;
  ops::Padding padding_;
  Activation activation_;
  bool use_bias_;
  std::vector<float> workspace_;  // im2col scratch, grown to conv2d_workspace_floats
  std::vector<float> dz_;         // backward scratch: dL/d(pre-activation)
  std::vector<float> kernel_q_;   // QAT: the fake-quantized kernel of the last forward
};

// activation(depthwise_conv2d(x, kernel) + bias), as keras.layers.DepthwiseConv2D: each input
// channel c is convolved with its own depth_multiplier filters, output channel c * M + m.
// Input (H, W, C) -> output (OH, OW, C * M).
class DepthwiseConv2D final : public Layer {
 public:
  explicit DepthwiseConv2D(Size2 kernel_size, Size2 strides = {1, 1},
                           ops::Padding padding = ops::Padding::Valid,
                           std::size_t depth_multiplier = 1,
                           Activation activation = Activation::Linear, bool use_bias = true);
  std::string kind() const override { return "DepthwiseConv2D"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;
  std::vector<Param> params() override;  // "kernel" (KH, KW, C, M), "bias" (C * M)
  bool kernel_matrix(float*& w, std::size_t& rows, std::size_t& cols) override {
    w = kernel.data();
    rows = kernel.shape()[0] * kernel.shape()[1];
    cols = kernel.size() / rows;
    return true;
  }

  Size2 kernel_size() const { return kernel_size_; }
  Size2 strides() const { return strides_; }
  ops::Padding padding() const { return padding_; }
  std::size_t depth_multiplier() const { return depth_multiplier_; }
  Activation activation() const { return activation_; }
  bool use_bias() const { return use_bias_; }

  Tensor kernel;  // (KH, KW, C, M), Glorot uniform (fan_in KH*KW*C, fan_out KH*KW*M)
  Tensor bias;    // (C * M), zeros; empty without bias
  Tensor kernel_grad;
  Tensor bias_grad;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  ops::Conv2DGeometry geometry(std::size_t batch, const Shape& sample) const;
  Size2 kernel_size_, strides_;
  ops::Padding padding_;
  std::size_t depth_multiplier_;
  Activation activation_;
  bool use_bias_;
  std::vector<float> dz_;
  std::vector<float> kernel_q_;  // QAT: the fake-quantized kernel of the last forward
};

// Shared part of MaxPooling2D and AveragePooling2D: input (H, W, C) -> (OH, OW, C) with
// TensorFlow's window geometry (padded cells are never read).
class Pooling2D : public Layer {
 public:
  Size2 pool_size() const { return pool_size_; }
  Size2 strides() const { return strides_; }
  ops::Padding padding() const { return padding_; }

 protected:
  Pooling2D(const char* kind, Size2 pool_size, std::optional<Size2> strides, ops::Padding padding);
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;
  // Geometry for a batch of `batch` samples of shape `sample` (errors name the layer).
  ops::Pool2dGeometry geometry(std::size_t batch, const Shape& sample) const;

 private:
  Size2 pool_size_, strides_;
  ops::Padding padding_;
};

// Maximum over each window, as keras.layers.MaxPooling2D (strides default to the pool size).
class MaxPooling2D final : public Pooling2D {
 public:
  explicit MaxPooling2D(Size2 pool_size = {2, 2}, std::optional<Size2> strides = std::nullopt,
                        ops::Padding padding = ops::Padding::Valid)
      : Pooling2D("MaxPooling2D", pool_size, strides, padding) {}
  std::string kind() const override { return "MaxPooling2D"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 private:
  detail::SavedPerOutput<std::vector<std::int32_t>> argmax_;  // from training forwards
};

// Mean of the real cells of each window, as keras.layers.AveragePooling2D.
class AveragePooling2D final : public Pooling2D {
 public:
  explicit AveragePooling2D(Size2 pool_size = {2, 2}, std::optional<Size2> strides = std::nullopt,
                            ops::Padding padding = ops::Padding::Valid)
      : Pooling2D("AveragePooling2D", pool_size, strides, padding) {}
  std::string kind() const override { return "AveragePooling2D"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;
};

// Mean over height and width, as keras.layers.GlobalAveragePooling2D:
// (H, W, C) -> (C), or (1, 1, C) with keepdims.
class GlobalAveragePooling2D final : public Layer {
 public:
  explicit GlobalAveragePooling2D(bool keepdims = false) : keepdims_(keepdims) {}
  std::string kind() const override { return "GlobalAveragePooling2D"; }
  bool keepdims() const { return keepdims_; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  bool keepdims_;
};

// Batch normalization over the last axis, as keras.layers.BatchNormalization (Keras 3): inputs
// of any rank, e.g. per-sample (C) or (H, W, C). Training forwards normalize with the batch mean
// and biased variance and update moving = moving * momentum + batch * (1 - momentum);
// inference forwards use the moving statistics.
class BatchNormalization final : public Layer {
 public:
  explicit BatchNormalization(float momentum = 0.99f, float epsilon = 1e-3f, bool center = true,
                              bool scale = true);
  std::string kind() const override { return "BatchNormalization"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  // After a training forward: through the batch statistics; after an inference forward: with
  // the moving statistics as constants.
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;
  // Trainable: "gamma" (if scale), "beta" (if center), each (C).
  std::vector<Param> params() override;
  // Non-trainable state, Keras's order and names: "moving_mean", "moving_variance", each (C);
  // grad is null.
  std::vector<Param> state();

  float momentum() const { return momentum_; }
  float epsilon() const { return epsilon_; }
  bool center() const { return center_; }
  bool scale() const { return scale_; }
  std::size_t channels() const { return moving_mean.size(); }

  Vector gamma;  // (C), ones; empty without scale
  Vector beta;   // (C), zeros; empty without center
  Vector gamma_grad, beta_grad;
  Vector moving_mean;      // (C), zeros
  Vector moving_variance;  // (C), ones

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  struct Saved {
    bool training = false;
    std::vector<float> mean, inv_std;  // batch statistics of a training forward
  };
  float momentum_, epsilon_;
  bool center_, scale_;
  bool last_training_ = false;
  detail::SavedPerOutput<Saved> saved_;
};

// Inverted dropout, as keras.layers.Dropout: in training forwards each value is zeroed with
// probability `rate` and the others are scaled by 1 / (1 - rate); inference is the identity.
// The layer's random stream is seeded at build: from `seed` when given, otherwise from one
// 64-bit draw of the build's Random (so a model built with the same seed drops the same values).
class Dropout final : public Layer {
 public:
  explicit Dropout(float rate, std::optional<std::uint64_t> seed = std::nullopt);
  std::string kind() const override { return "Dropout"; }
  float rate() const { return rate_; }
  std::optional<std::uint64_t> seed() const { return seed_; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  struct Saved {
    bool training = false;
    std::vector<float> mask;  // 0 or 1 / (1 - rate), from a training forward
  };
  float rate_;
  std::optional<std::uint64_t> seed_;
  Random rng_{0};
  detail::SavedPerOutput<Saved> saved_;
};

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_CNN_LAYERS_H
