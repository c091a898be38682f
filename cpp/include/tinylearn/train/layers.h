// Layers of the training core. A layer is built once from the per-sample shapes of its inputs
// (creating its weights), then runs forward and backward on batches.
#ifndef TINYLEARN_TRAIN_LAYERS_H
#define TINYLEARN_TRAIN_LAYERS_H

#include <memory>
#include <string>
#include <vector>

#include "tinylearn/train/pruning.h"
#include "tinylearn/train/random.h"
#include "tinylearn/train/tensor.h"

namespace tinylearn {

enum class Activation { Linear, ReLU, ReLU6, Sigmoid, Tanh, Softmax };

Activation activation_from_name(const std::string& name);
std::string activation_name(Activation a);

// out = f(in) over n values; softmax normalizes each run of `last_dim` values. In place allowed.
void activation_forward(Activation a, float* out, const float* in, std::size_t n, std::size_t last_dim);
// dinp += f'(in) * dout, from the forward output `out`.
void activation_backward(Activation a, float* dinp, const float* dout, const float* out,
                         std::size_t n, std::size_t last_dim);

// Kernel initializers, as Keras's: Glorot (fan_in + fan_out) or He (fan_in), uniform or
// truncated normal (cut at 2 standard deviations, rescaled as Keras does).
enum class Initializer { GlorotUniform, GlorotNormal, HeUniform, HeNormal };
Initializer initializer_from_name(const std::string& name);
std::string initializer_name(Initializer i);
void initialize(Initializer init, float* w, std::size_t n, double fan_in, double fan_out, Random& rng);

// One trainable array and its gradient, same size.
struct Param {
  std::string name;
  float* value;
  float* grad;
  std::size_t size;
  Shape shape;  // Keras's layout of the array (e.g. a Dense kernel is (inputs, units))
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string kind() const = 0;
  std::string name;
  Initializer kernel_initializer = Initializer::GlorotUniform;
  float kernel_l2 = 0.0f;  // L2 penalty on the "kernel" parameter: kernel_l2 * sum(w^2)
  // Whether backward accumulates the parameter gradients (the model clears it for a frozen
  // layer before calling backward, so no weight-gradient work is done for it).
  bool param_grads = true;
  // Quantization-aware training (Dense, Conv2D, DepthwiseConv2D): the forward uses the kernel
  // fake-quantized to this many bits as tl.convert quantizes it (symmetric; per output channel
  // for convolutions, per tensor for Dense); gradients reach the float kernel straight through.
  // 0: the float kernel.
  int weight_bits = 0;
  // Magnitude pruning of the kernel (Dense, Conv2D, DepthwiseConv2D; tinylearn/train/pruning.h):
  // set before the model is built; its mask, threshold and step join the layer's state().
  std::shared_ptr<Pruning> pruning;
  // The kernel as the (inputs, outputs) matrix pruning ranks (row-major), or false for a layer
  // without one.
  virtual bool kernel_matrix(float*& kernel, std::size_t& rows, std::size_t& cols) {
    (void)kernel, (void)rows, (void)cols;
    return false;
  }

  // Creates the weights for inputs of these per-sample shapes and returns the output's
  // per-sample shape. Throws std::invalid_argument, naming the layer, when they do not fit.
  Shape build(const std::vector<Shape>& inputs, Random& rng);
  bool built() const { return built_; }
  const std::vector<Shape>& input_shapes() const { return input_shapes_; }
  const Shape& output_shape() const { return output_shape_; }

  // out = f(in...); `in` are batches of the built shapes; `out` is resized.
  virtual void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) = 0;
  // Given the forward's inputs and output and dL/dout: accumulates (+=) parameter gradients and,
  // for each din[i] that is not null, dL/din[i] into it (same shape as in[i]).
  virtual void backward(const std::vector<const Tensor*>& in, const Tensor& out,
                        const Tensor& dout, const std::vector<Tensor*>& din) = 0;
  virtual std::vector<Param> params() { return {}; }
  // Non-trainable arrays that are part of the model (e.g. batch norm's moving statistics);
  // grad is null.
  virtual std::vector<Param> state() { return pruning_state(); }
  std::size_t param_count();

 protected:
  virtual Shape do_build(const std::vector<Shape>& inputs, Random& rng) = 0;
  [[noreturn]] void fail(const std::string& what) const;
  // The pruning state as Params ("pruning_mask" (kernel shape), "pruning_threshold",
  // "pruning_step"; grad null), or none without pruning.
  std::vector<Param> pruning_state();
  // The kernel a forward and its backward use: `kernel` itself, or (weight_bits > 0) its
  // fake-quantized copy in `scratch` with `channels` scales (see fake_quant_weights).
  const float* forward_kernel(const float* kernel, std::size_t n, std::size_t channels,
                              std::vector<float>& scratch);
  // fail(error) unless error is empty.
  void require(const std::string& error) const {
    if (!error.empty()) fail(error);
  }

 private:
  bool built_ = false;
  std::vector<Shape> input_shapes_;
  Shape output_shape_;
};

// activation(x . kernel + bias) over the last axis, as keras.layers.Dense.
class Dense final : public Layer {
 public:
  explicit Dense(std::size_t units, Activation activation = Activation::Linear,
                 bool use_bias = true);
  std::string kind() const override { return "Dense"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;
  std::vector<Param> params() override;
  bool kernel_matrix(float*& w, std::size_t& rows, std::size_t& cols) override {
    w = kernel.data();
    rows = kernel.shape()[0];
    cols = kernel.shape()[1];
    return true;
  }

  std::size_t units() const { return units_; }
  Activation activation() const { return activation_; }
  bool use_bias() const { return use_bias_; }
  std::size_t input_features() const { return kernel.shape()[0]; }

  Matrix kernel;  // (input_features, units), Glorot uniform
  Vector bias;    // (units), zeros; empty without bias
  Matrix kernel_grad;
  Vector bias_grad;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  std::size_t units_;
  Activation activation_;
  bool use_bias_;
  std::vector<float> dz_;  // backward scratch
  std::vector<float> kernel_q_;  // QAT: the fake-quantized kernel of the last forward
};

// Applies an activation function elementwise (softmax: over the last axis).
class ActivationLayer final : public Layer {
 public:
  explicit ActivationLayer(Activation activation) : activation_(activation) {}
  std::string kind() const override { return "Activation"; }
  Activation activation() const { return activation_; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  Activation activation_;
};

// (batch, d1, d2, ...) -> (batch, d1 * d2 * ...), as keras.layers.Flatten.
class Flatten final : public Layer {
 public:
  std::string kind() const override { return "Flatten"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;
};

// Samples reshaped to `target` (one entry may be -1: inferred), as keras.layers.Reshape.
class Reshape final : public Layer {
 public:
  explicit Reshape(std::vector<long> target) : target_(std::move(target)) {}
  std::string kind() const override { return "Reshape"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;

 private:
  std::vector<long> target_;
};

// Elementwise sum of two or more inputs of one shape, as keras.layers.Add.
class Add final : public Layer {
 public:
  std::string kind() const override { return "Add"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;
};

// Joins two or more inputs along the last axis, as keras.layers.Concatenate(axis=-1).
class Concatenate final : public Layer {
 public:
  std::string kind() const override { return "Concatenate"; }
  void forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) override;
  void backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                const std::vector<Tensor*>& din) override;

 protected:
  Shape do_build(const std::vector<Shape>& inputs, Random& rng) override;
};

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_LAYERS_H
