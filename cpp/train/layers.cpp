#include "tinylearn/train/layers.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "tinylearn/train/fake_quant.h"
#include "tinylearn/train/nn_ops.h"
#include "tinylearn/train/ops.h"

namespace tinylearn {

namespace {
const char* const kActivationNames[] = {"linear", "relu", "relu6", "sigmoid", "tanh", "softmax"};
}

Activation activation_from_name(const std::string& name) {
  if (name.empty() || name == "none") return Activation::Linear;
  for (int i = 0; i < 6; ++i)
    if (name == kActivationNames[i]) return Activation(i);
  throw std::invalid_argument("unknown activation '" + name +
                              "': expected linear, relu, relu6, sigmoid, tanh or softmax");
}

std::string activation_name(Activation a) { return kActivationNames[int(a)]; }

void activation_forward(Activation a, float* out, const float* in, std::size_t n, std::size_t last_dim) {
  switch (a) {
    case Activation::Linear:
      if (out != in) std::copy(in, in + n, out);
      break;
    case Activation::ReLU: ops::relu_forward(out, in, n); break;
    case Activation::ReLU6: ops::relu6_forward(out, in, n); break;
    case Activation::Sigmoid: ops::sigmoid_forward(out, in, n); break;
    case Activation::Tanh: ops::tanh_forward(out, in, n); break;
    case Activation::Softmax: ops::softmax_forward(out, in, n / last_dim, last_dim); break;
  }
}

void activation_backward(Activation a, float* dinp, const float* dout, const float* out,
                         std::size_t n, std::size_t last_dim) {
  switch (a) {
    case Activation::Linear:
      for (std::size_t i = 0; i < n; ++i) dinp[i] += dout[i];
      break;
    case Activation::ReLU: ops::relu_backward(dinp, dout, out, n); break;
    case Activation::ReLU6: ops::relu6_backward(dinp, dout, out, n); break;
    case Activation::Sigmoid: ops::sigmoid_backward(dinp, dout, out, n); break;
    case Activation::Tanh: ops::tanh_backward(dinp, dout, out, n); break;
    case Activation::Softmax: ops::softmax_backward(dinp, dout, out, n / last_dim, last_dim); break;
  }
}

namespace {
const char* const kInitializerNames[] = {"glorot_uniform", "glorot_normal", "he_uniform", "he_normal"};
}

Initializer initializer_from_name(const std::string& name) {
  for (int i = 0; i < 4; ++i)
    if (name == kInitializerNames[i]) return Initializer(i);
  throw std::invalid_argument("unknown initializer '" + name +
                              "': expected glorot_uniform, glorot_normal, he_uniform or he_normal");
}

std::string initializer_name(Initializer i) { return kInitializerNames[int(i)]; }

void initialize(Initializer init, float* w, std::size_t n, double fan_in, double fan_out, Random& rng) {
  const bool glorot = init == Initializer::GlorotUniform || init == Initializer::GlorotNormal;
  const double scale = glorot ? 2.0 / (fan_in + fan_out) : 2.0 / fan_in;  // variance
  if (init == Initializer::GlorotUniform || init == Initializer::HeUniform) {
    const float limit = float(std::sqrt(3.0 * scale));
    for (std::size_t i = 0; i < n; ++i) w[i] = rng.uniform(-limit, limit);
    return;
  }
  // Truncated normal: the standard deviation of N(0, 1) cut at +-2 is 0.87962566103423978.
  const double stddev = std::sqrt(scale) / 0.87962566103423978;
  for (std::size_t i = 0; i < n; ++i) {
    double z;
    do z = rng.normal(); while (std::fabs(z) > 2.0);
    w[i] = float(z * stddev);
  }
}

Shape Layer::build(const std::vector<Shape>& inputs, Random& rng) {
  if (built_) {  // a shared layer: every call must see the shapes it was built for
    if (inputs != input_shapes_) fail("called again on inputs of another shape");
    return output_shape_;
  }
  for (const Shape& s : inputs)
    if (s.empty() || numel(s) == 0) fail("an input has an empty shape " + shape_str(s));
  output_shape_ = do_build(inputs, rng);
  input_shapes_ = inputs;
  built_ = true;
  if (pruning) {
    float* w;
    std::size_t rows, cols;
    if (!kernel_matrix(w, rows, cols)) fail("has no kernel to prune");
    pruning->schedule.validate();
    if (pruning->block_rows == 0 || pruning->block_cols == 0) fail("pruning block sizes must be >= 1");
    pruning->mask.assign(rows * cols, 1.0f);
  }
  return output_shape_;
}

std::vector<Param> Layer::pruning_state() {
  if (!pruning || pruning->mask.empty()) return {};
  float* w;
  std::size_t rows, cols;
  kernel_matrix(w, rows, cols);
  Shape kshape;
  for (const Param& p : params())
    if (p.name == "kernel") kshape = p.shape;
  return {{"pruning_mask", pruning->mask.data(), nullptr, pruning->mask.size(), kshape},
          {"pruning_threshold", &pruning->threshold, nullptr, 1, {1}},
          {"pruning_step", &pruning->step, nullptr, 1, {1}}};
}

void Layer::fail(const std::string& what) const {
  throw std::invalid_argument("layer '" + (name.empty() ? kind() : name) + "' (" + kind() + "): " + what);
}

const float* Layer::forward_kernel(const float* kernel, std::size_t n, std::size_t channels,
                                   std::vector<float>& scratch) {
  if (weight_bits == 0) return kernel;
  scratch.resize(n + channels);  // the fake-quantized kernel, then its scales
  fake_quant_weights(scratch.data(), kernel, n, channels, weight_bits, scratch.data() + n);
  return scratch.data();
}

std::size_t Layer::param_count() {
  std::size_t n = 0;
  for (const Param& p : params()) n += p.size;
  return n;
}

Dense::Dense(std::size_t units, Activation activation, bool use_bias)
    : units_(units), activation_(activation), use_bias_(use_bias) {
  if (units == 0) throw std::invalid_argument("Dense: units must be a positive integer, got 0");
}

Shape Dense::do_build(const std::vector<Shape>& inputs, Random& rng) {
  if (inputs.size() != 1) fail("takes one input, got " + std::to_string(inputs.size()));
  const std::size_t in = inputs[0].back();
  kernel = Matrix({in, units_});
  initialize(kernel_initializer, kernel.data(), kernel.size(), double(in), double(units_), rng);
  kernel_grad = xt::zeros<float>({in, units_});
  if (use_bias_) {
    bias = xt::zeros<float>({units_});
    bias_grad = xt::zeros<float>({units_});
  }
  Shape out = inputs[0];
  out.back() = units_;
  return out;
}

void Dense::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  const Tensor& x = *in[0];
  const std::size_t C = input_features();
  if (x.dimension() < 2 || x.shape().back() != C)
    fail("expected inputs with " + std::to_string(C) + " features on the last axis, got shape " +
         shape_str(Shape(x.shape().begin(), x.shape().end())));
  const std::size_t rows = x.size() / C;
  std::vector<std::size_t> shape(x.shape().begin(), x.shape().end());
  shape.back() = units_;
  out.resize(shape);
  const float* w = forward_kernel(kernel.data(), kernel.size(), 1, kernel_q_);
  ops::dense_forward(out.data(), x.data(), w, use_bias_ ? bias.data() : nullptr, rows, C, units_);
  activation_forward(activation_, out.data(), out.data(), out.size(), units_);
}

void Dense::backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                     const std::vector<Tensor*>& din) {
  const Tensor& x = *in[0];
  const std::size_t C = input_features(), rows = x.size() / C;
  const float* dz = dout.data();
  if (activation_ != Activation::Linear) {
    dz_.assign(dout.size(), 0.0f);
    activation_backward(activation_, dz_.data(), dout.data(), out.data(), dout.size(), units_);
    dz = dz_.data();
  }
  float* dx = din.empty() || !din[0] ? nullptr : din[0]->data();
  ops::dense_backward(dx, param_grads ? kernel_grad.data() : nullptr,
                      param_grads && use_bias_ ? bias_grad.data() : nullptr, dz, x.data(),
                      weight_bits ? kernel_q_.data() : kernel.data(), rows, C, units_);
}

std::vector<Param> Dense::params() {
  std::vector<Param> p{{"kernel", kernel.data(), kernel_grad.data(), kernel.size(),
                        {kernel.shape()[0], kernel.shape()[1]}}};
  if (use_bias_) p.push_back({"bias", bias.data(), bias_grad.data(), bias.size(), {units_}});
  return p;
}

}  // namespace tinylearn
