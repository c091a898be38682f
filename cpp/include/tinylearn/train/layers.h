// Layers of the training core. A layer is built once from the per-sample shapes of its inputs
// (creating its weights), then runs forward and backward on batches.
#ifndef TINYLEARN_TRAIN_LAYERS_H
#define TINYLEARN_TRAIN_LAYERS_H

#include <memory>
#include <string>
#include <vector>

#include "tinylearn/train/random.h"
#include "tinylearn/train/tensor.h"

namespace tinylearn {

enum class Activation { Linear, ReLU };

Activation activation_from_name(const std::string& name);
std::string activation_name(Activation a);

// One trainable array and its gradient, same size.
struct Param {
  std::string name;
  float* value;
  float* grad;
  std::size_t size;
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string kind() const = 0;
  std::string name;

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
  std::size_t param_count();

 protected:
  virtual Shape do_build(const std::vector<Shape>& inputs, Random& rng) = 0;
  [[noreturn]] void fail(const std::string& what) const;

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
};

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_LAYERS_H
