// Convolutional-network layers (declared in tinylearn/train/cnn_layers.h) on the kernels of
// conv_ops.h and nn_ops.h.
#include "tinylearn/train/cnn_layers.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace tinylearn {

namespace {

std::string full_shape_str(const Tensor& t) {
  return shape_str(Shape(t.shape().begin(), t.shape().end()));
}

std::string size2_str(Size2 s) {
  return "(" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ")";
}

// Empty when the layer is built (for `built_inputs`) and `in` is one batch of samples of the
// built shape; otherwise what is wrong.
std::string input_error(const std::vector<const Tensor*>& in,
                        const std::vector<Shape>& built_inputs) {
  if (built_inputs.size() != 1) return "is not built yet (call build first)";
  const Shape& sample = built_inputs[0];
  if (in.size() != 1 || in[0] == nullptr)
    return "takes one input, got " + std::to_string(in.size());
  const Tensor& x = *in[0];
  if (x.dimension() != sample.size() + 1 || sample_shape(x) != sample)
    return "expected inputs of shape " + shape_str(sample, true) + ", got " + full_shape_str(x);
  return {};
}

// Empty when the backward's arguments fit together; otherwise what is wrong.
std::string backward_error(const std::vector<const Tensor*>& in, const Tensor& out,
                           const Tensor& dout, const std::vector<Tensor*>& din,
                           const std::vector<Shape>& built_inputs, const Shape& out_sample) {
  std::string e = input_error(in, built_inputs);
  if (!e.empty()) return e;
  const std::size_t N = in[0]->shape()[0];
  if (out.size() != N * numel(out_sample) || dout.size() != out.size())
    return "backward: expected out and dout of shape " +
           shape_str(Shape(batch_shape(N, out_sample))) + ", got " + full_shape_str(out) +
           " and " + full_shape_str(dout);
  if (din.size() > 1) return "backward: expected one input gradient, got " + std::to_string(din.size());
  if (!din.empty() && din[0] && din[0]->size() != in[0]->size())
    return "backward: the input gradient has shape " + full_shape_str(*din[0]) +
           ", the input " + full_shape_str(*in[0]);
  return {};
}

float* din_ptr(const std::vector<Tensor*>& din) {
  return din.empty() || din[0] == nullptr ? nullptr : din[0]->data();
}

// The layer's kernel initializer (Glorot uniform by default, as Keras) on a (KH, KW, A, B)
// kernel: fan_in = KH * KW * A and fan_out = KH * KW * B (Keras's compute_fans), drawn in
// row-major order.
void init_kernel(Initializer init, Tensor& w, Random& rng) {
  const std::size_t receptive = w.shape()[0] * w.shape()[1];
  initialize(init, w.data(), w.size(), double(receptive * w.shape()[2]),
             double(receptive * w.shape()[3]), rng);
}

void check_window(const char* kind, const char* what, Size2 s) {
  if (s[0] == 0 || s[1] == 0)
    throw std::invalid_argument(std::string(kind) + ": " + what + " must be positive, got " +
                                size2_str(s));
}

std::string rank3_error(const std::vector<Shape>& inputs) {
  if (inputs.size() != 1) return "takes one input, got " + std::to_string(inputs.size());
  if (inputs[0].size() != 3)
    return "expects inputs of rank 4 (batch, height, width, channels), got samples of shape " +
           shape_str(inputs[0], true);
  return {};
}

}  // namespace

// ---- Conv2D ----------------------------------------------------------------------------------

Conv2D::Conv2D(std::size_t filters, Size2 kernel_size, Size2 strides, ops::Padding padding,
               Activation activation, bool use_bias)
    : filters_(filters), kernel_size_(kernel_size), strides_(strides), padding_(padding),
      activation_(activation), use_bias_(use_bias) {
  if (filters == 0) throw std::invalid_argument("Conv2D: filters must be a positive integer, got 0");
  check_window("Conv2D", "kernel_size", kernel_size);
  check_window("Conv2D", "strides", strides);
}

ops::Conv2DGeometry Conv2D::geometry(std::size_t batch, const Shape& s) const {
  try {
    return ops::conv2d_geometry(batch, s[0], s[1], s[2], kernel_size_[0], kernel_size_[1],
                                filters_, strides_[0], strides_[1], padding_);
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
}

Shape Conv2D::do_build(const std::vector<Shape>& inputs, Random& rng) {
  require(rank3_error(inputs));
  const ops::Conv2DGeometry g = geometry(1, inputs[0]);
  kernel = Tensor::from_shape({g.KH, g.KW, g.C, filters_});
  init_kernel(kernel_initializer, kernel, rng);
  kernel_grad = xt::zeros<float>(kernel.shape());
  if (use_bias_) {
    bias = xt::zeros<float>({filters_});
    bias_grad = xt::zeros<float>({filters_});
  }
  return {g.OH, g.OW, filters_};
}

void Conv2D::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  require(input_error(in, input_shapes()));
  const Tensor& x = *in[0];
  const std::size_t N = x.shape()[0];
  out.resize(batch_shape(N, output_shape()));
  if (N == 0) return;
  const ops::Conv2DGeometry g = geometry(N, input_shapes()[0]);
  const std::size_t ws = ops::conv2d_workspace_floats(g);
  if (workspace_.size() < ws) workspace_.resize(ws);
  const float* w = forward_kernel(kernel.data(), kernel.size(), filters_, kernel_q_);
  ops::conv2d_forward(out.data(), x.data(), w, use_bias_ ? bias.data() : nullptr, g,
                      workspace_.data(), workspace_.size());
  activation_forward(activation_, out.data(), out.data(), out.size(), filters_);
}

void Conv2D::backward(const std::vector<const Tensor*>& in, const Tensor& out, const Tensor& dout,
                      const std::vector<Tensor*>& din) {
  require(backward_error(in, out, dout, din, input_shapes(), output_shape()));
  const Tensor& x = *in[0];
  const std::size_t N = x.shape()[0];
  if (N == 0) return;
  const ops::Conv2DGeometry g = geometry(N, input_shapes()[0]);
  const std::size_t ws = ops::conv2d_workspace_floats(g);
  if (workspace_.size() < ws) workspace_.resize(ws);
  const float* dz = dout.data();
  if (activation_ != Activation::Linear) {
    dz_.assign(dout.size(), 0.0f);
    activation_backward(activation_, dz_.data(), dout.data(), out.data(), dout.size(), filters_);
    dz = dz_.data();
  }
  ops::conv2d_backward(din_ptr(din), param_grads ? kernel_grad.data() : nullptr,
                       param_grads && use_bias_ ? bias_grad.data() : nullptr, dz, x.data(),
                       weight_bits ? kernel_q_.data() : kernel.data(), g, workspace_.data(),
                       workspace_.size());
}

std::vector<Param> Conv2D::params() {
  const Shape kshape(kernel.shape().begin(), kernel.shape().end());
  std::vector<Param> p{{"kernel", kernel.data(), kernel_grad.data(), kernel.size(), kshape}};
  if (use_bias_) p.push_back({"bias", bias.data(), bias_grad.data(), bias.size(), {filters_}});
  return p;
}

// ---- DepthwiseConv2D -------------------------------------------------------------------------

DepthwiseConv2D::DepthwiseConv2D(Size2 kernel_size, Size2 strides, ops::Padding padding,
                                 std::size_t depth_multiplier, Activation activation,
                                 bool use_bias)
    : kernel_size_(kernel_size), strides_(strides), padding_(padding),
      depth_multiplier_(depth_multiplier), activation_(activation), use_bias_(use_bias) {
  if (depth_multiplier == 0)
    throw std::invalid_argument("DepthwiseConv2D: depth_multiplier must be a positive integer, got 0");
  check_window("DepthwiseConv2D", "kernel_size", kernel_size);
  check_window("DepthwiseConv2D", "strides", strides);
}

ops::Conv2DGeometry DepthwiseConv2D::geometry(std::size_t batch, const Shape& s) const {
  try {
    return ops::depthwise_conv2d_geometry(batch, s[0], s[1], s[2], kernel_size_[0],
                                          kernel_size_[1], depth_multiplier_, strides_[0],
                                          strides_[1], padding_);
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
}

Shape DepthwiseConv2D::do_build(const std::vector<Shape>& inputs, Random& rng) {
  require(rank3_error(inputs));
  const ops::Conv2DGeometry g = geometry(1, inputs[0]);
  kernel = Tensor::from_shape({g.KH, g.KW, g.C, g.M});
  init_kernel(kernel_initializer, kernel, rng);
  kernel_grad = xt::zeros<float>(kernel.shape());
  if (use_bias_) {
    bias = xt::zeros<float>({g.OC});
    bias_grad = xt::zeros<float>({g.OC});
  }
  return {g.OH, g.OW, g.OC};
}

void DepthwiseConv2D::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  require(input_error(in, input_shapes()));
  const Tensor& x = *in[0];
  const std::size_t N = x.shape()[0];
  out.resize(batch_shape(N, output_shape()));
  if (N == 0) return;
  const ops::Conv2DGeometry g = geometry(N, input_shapes()[0]);
  const float* w = forward_kernel(kernel.data(), kernel.size(), g.OC, kernel_q_);
  ops::depthwise_conv2d_forward(out.data(), x.data(), w, use_bias_ ? bias.data() : nullptr, g);
  activation_forward(activation_, out.data(), out.data(), out.size(), g.OC);
}

void DepthwiseConv2D::backward(const std::vector<const Tensor*>& in, const Tensor& out,
                               const Tensor& dout, const std::vector<Tensor*>& din) {
  require(backward_error(in, out, dout, din, input_shapes(), output_shape()));
  const Tensor& x = *in[0];
  const std::size_t N = x.shape()[0];
  if (N == 0) return;
  const ops::Conv2DGeometry g = geometry(N, input_shapes()[0]);
  const float* dz = dout.data();
  if (activation_ != Activation::Linear) {
    dz_.assign(dout.size(), 0.0f);
    activation_backward(activation_, dz_.data(), dout.data(), out.data(), dout.size(), g.OC);
    dz = dz_.data();
  }
  ops::depthwise_conv2d_backward(din_ptr(din), param_grads ? kernel_grad.data() : nullptr,
                                 param_grads && use_bias_ ? bias_grad.data() : nullptr, dz,
                                 x.data(), weight_bits ? kernel_q_.data() : kernel.data(), g);
}

std::vector<Param> DepthwiseConv2D::params() {
  const Shape kshape(kernel.shape().begin(), kernel.shape().end());
  std::vector<Param> p{{"kernel", kernel.data(), kernel_grad.data(), kernel.size(), kshape}};
  if (use_bias_) p.push_back({"bias", bias.data(), bias_grad.data(), bias.size(), {bias.size()}});
  return p;
}

// ---- Pooling ---------------------------------------------------------------------------------

Pooling2D::Pooling2D(const char* kind, Size2 pool_size, std::optional<Size2> strides,
                     ops::Padding padding)
    : pool_size_(pool_size), strides_(strides ? *strides : pool_size), padding_(padding) {
  check_window(kind, "pool_size", pool_size_);
  check_window(kind, "strides", strides_);
}

ops::Pool2dGeometry Pooling2D::geometry(std::size_t batch, const Shape& s) const {
  try {
    return ops::pool2d_geometry(batch, s[0], s[1], s[2], pool_size_[0], pool_size_[1],
                                strides_[0], strides_[1], padding_);
  } catch (const std::invalid_argument& e) {
    fail(std::string(e.what()) + " (input samples " + shape_str(s, true) + ", pool_size " +
         size2_str(pool_size_) + ", strides " + size2_str(strides_) + ", padding '" +
         ops::padding_name(padding_) + "')");
  }
}

Shape Pooling2D::do_build(const std::vector<Shape>& inputs, Random&) {
  require(rank3_error(inputs));
  const ops::Pool2dGeometry g = geometry(1, inputs[0]);
  return {g.OH, g.OW, g.C};
}

void MaxPooling2D::forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) {
  require(input_error(in, input_shapes()));
  const Tensor& x = *in[0];
  const std::size_t N = x.shape()[0];
  out.resize(batch_shape(N, output_shape()));
  if (N == 0) return;
  const ops::Pool2dGeometry g = geometry(N, input_shapes()[0]);
  std::int32_t* argmax = nullptr;
  if (training) {
    std::vector<std::int32_t>& a = argmax_.put(out);
    a.resize(out.size());
    argmax = a.data();
  } else {
    argmax_.erase(out);
  }
  ops::max_pool2d_forward(out.data(), argmax, x.data(), g);
}

void MaxPooling2D::backward(const std::vector<const Tensor*>& in, const Tensor& out,
                            const Tensor& dout, const std::vector<Tensor*>& din) {
  require(backward_error(in, out, dout, din, input_shapes(), output_shape()));
  float* dx = din_ptr(din);
  const std::size_t N = in[0]->shape()[0];
  if (!dx || N == 0) return;
  const ops::Pool2dGeometry g = geometry(N, input_shapes()[0]);
  const std::vector<std::int32_t>* a = argmax_.find(out);
  // Without a saved argmax (an inference forward), the kernel recomputes it from the input.
  ops::max_pool2d_backward(dx, dout.data(), in[0]->data(),
                           a && a->size() == out.size() ? a->data() : nullptr, g);
}

void AveragePooling2D::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  require(input_error(in, input_shapes()));
  const Tensor& x = *in[0];
  const std::size_t N = x.shape()[0];
  out.resize(batch_shape(N, output_shape()));
  if (N == 0) return;
  ops::avg_pool2d_forward(out.data(), x.data(), geometry(N, input_shapes()[0]));
}

void AveragePooling2D::backward(const std::vector<const Tensor*>& in, const Tensor& out,
                                const Tensor& dout, const std::vector<Tensor*>& din) {
  require(backward_error(in, out, dout, din, input_shapes(), output_shape()));
  float* dx = din_ptr(din);
  const std::size_t N = in[0]->shape()[0];
  if (!dx || N == 0) return;
  ops::avg_pool2d_backward(dx, dout.data(), geometry(N, input_shapes()[0]));
}

Shape GlobalAveragePooling2D::do_build(const std::vector<Shape>& inputs, Random&) {
  require(rank3_error(inputs));
  const std::size_t C = inputs[0][2];
  return keepdims_ ? Shape{1, 1, C} : Shape{C};
}

void GlobalAveragePooling2D::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  require(input_error(in, input_shapes()));
  const Tensor& x = *in[0];
  const Shape& s = input_shapes()[0];
  const std::size_t N = x.shape()[0];
  out.resize(batch_shape(N, output_shape()));
  ops::global_avg_pool2d_forward(out.data(), x.data(), N, s[0], s[1], s[2]);
}

void GlobalAveragePooling2D::backward(const std::vector<const Tensor*>& in, const Tensor& out,
                                      const Tensor& dout, const std::vector<Tensor*>& din) {
  require(backward_error(in, out, dout, din, input_shapes(), output_shape()));
  float* dx = din_ptr(din);
  if (!dx) return;
  const Shape& s = input_shapes()[0];
  ops::global_avg_pool2d_backward(dx, dout.data(), in[0]->shape()[0], s[0], s[1], s[2]);
}

// ---- BatchNormalization ----------------------------------------------------------------------

BatchNormalization::BatchNormalization(float momentum, float epsilon, bool center, bool scale)
    : momentum_(momentum), epsilon_(epsilon), center_(center), scale_(scale) {
  if (!(momentum >= 0.0f && momentum <= 1.0f))
    throw std::invalid_argument("BatchNormalization: momentum must be in [0, 1], got " +
                                std::to_string(momentum));
  if (!(epsilon > 0.0f) || !std::isfinite(epsilon))
    throw std::invalid_argument("BatchNormalization: epsilon must be a positive number, got " +
                                std::to_string(epsilon));
}

Shape BatchNormalization::do_build(const std::vector<Shape>& inputs, Random&) {
  if (inputs.size() != 1) fail("takes one input, got " + std::to_string(inputs.size()));
  const std::size_t C = inputs[0].back();
  if (scale_) {
    gamma = xt::ones<float>({C});
    gamma_grad = xt::zeros<float>({C});
  }
  if (center_) {
    beta = xt::zeros<float>({C});
    beta_grad = xt::zeros<float>({C});
  }
  moving_mean = xt::zeros<float>({C});
  moving_variance = xt::ones<float>({C});
  return inputs[0];
}

void BatchNormalization::forward(const std::vector<const Tensor*>& in, Tensor& out,
                                 bool training) {
  require(input_error(in, input_shapes()));
  const Tensor& x = *in[0];
  const std::size_t C = channels(), M = x.size() / C;
  out.resize(x.shape());
  last_training_ = training;
  Saved& s = saved_.put(out);
  s.training = training;
  const float* g = scale_ ? gamma.data() : nullptr;
  const float* b = center_ ? beta.data() : nullptr;
  if (M == 0) return;  // an empty batch: nothing to normalize, no statistics to update
  if (training) {
    s.mean.resize(C);
    s.inv_std.resize(C);
    ops::batch_norm_forward_train(out.data(), s.mean.data(), s.inv_std.data(), moving_mean.data(),
                                  moving_variance.data(), x.data(), g, b, M, C, momentum_,
                                  epsilon_);
  } else {
    s.mean.clear();
    s.inv_std.clear();
    ops::batch_norm_forward_inference(out.data(), x.data(), g, b, moving_mean.data(),
                                      moving_variance.data(), M, C, epsilon_);
  }
}

void BatchNormalization::backward(const std::vector<const Tensor*>& in, const Tensor& out,
                                  const Tensor& dout, const std::vector<Tensor*>& din) {
  require(backward_error(in, out, dout, din, input_shapes(), output_shape()));
  const Tensor& x = *in[0];
  const std::size_t C = channels(), M = x.size() / C;
  if (M == 0) return;
  const Saved* s = saved_.find(out);
  const bool training = s ? s->training : last_training_;
  float* dg = scale_ && param_grads ? gamma_grad.data() : nullptr;
  float* db = center_ && param_grads ? beta_grad.data() : nullptr;
  const float* g = scale_ ? gamma.data() : nullptr;
  if (!training) {
    ops::batch_norm_backward_inference(din_ptr(din), dg, db, dout.data(), x.data(), g,
                                       moving_mean.data(), moving_variance.data(), M, C, epsilon_);
    return;
  }
  const float *mean, *inv_std;
  std::vector<float> mean2, inv_std2;
  if (s && s->mean.size() == C) {
    mean = s->mean.data();
    inv_std = s->inv_std.data();
  } else {  // `out` is not the buffer the forward wrote: recompute the batch statistics
    std::vector<float> scratch(x.size());
    mean2.resize(C);
    inv_std2.resize(C);
    ops::batch_norm_forward_train(scratch.data(), mean2.data(), inv_std2.data(), nullptr, nullptr,
                                  x.data(), g, center_ ? beta.data() : nullptr, M, C, momentum_,
                                  epsilon_);
    mean = mean2.data();
    inv_std = inv_std2.data();
  }
  ops::batch_norm_backward(din_ptr(din), dg, db, dout.data(), x.data(), mean, inv_std, g, M, C);
}

std::vector<Param> BatchNormalization::params() {
  std::vector<Param> p;
  const std::size_t C = channels();
  if (scale_) p.push_back({"gamma", gamma.data(), gamma_grad.data(), C, {C}});
  if (center_) p.push_back({"beta", beta.data(), beta_grad.data(), C, {C}});
  return p;
}

std::vector<Param> BatchNormalization::state() {
  const std::size_t C = channels();
  return {{"moving_mean", moving_mean.data(), nullptr, C, {C}},
          {"moving_variance", moving_variance.data(), nullptr, C, {C}}};
}

// ---- Dropout ---------------------------------------------------------------------------------

Dropout::Dropout(float rate, std::optional<std::uint64_t> seed) : rate_(rate), seed_(seed) {
  if (!(rate >= 0.0f && rate < 1.0f))
    throw std::invalid_argument("Dropout: rate must be in [0, 1), got " + std::to_string(rate));
}

Shape Dropout::do_build(const std::vector<Shape>& inputs, Random& rng) {
  if (inputs.size() != 1) fail("takes one input, got " + std::to_string(inputs.size()));
  // One draw whether or not a seed is given, so the layers built after this one get the same
  // weights either way.
  const std::uint64_t drawn = rng.below(std::numeric_limits<std::uint64_t>::max());
  rng_ = Random(seed_ ? *seed_ : drawn);
  return inputs[0];
}

void Dropout::forward(const std::vector<const Tensor*>& in, Tensor& out, bool training) {
  require(input_error(in, input_shapes()));
  const Tensor& x = *in[0];
  const std::size_t n = x.size();
  out.resize(x.shape());
  Saved& s = saved_.put(out);
  s.training = training && rate_ > 0.0f;
  if (s.training) {
    s.mask.resize(n);
    ops::dropout_forward(out.data(), s.mask.data(), x.data(), n, rate_, rng_);
  } else {
    s.mask.clear();
    if (n) std::memcpy(out.data(), x.data(), n * sizeof(float));
  }
}

void Dropout::backward(const std::vector<const Tensor*>& in, const Tensor& out,
                       const Tensor& dout, const std::vector<Tensor*>& din) {
  require(backward_error(in, out, dout, din, input_shapes(), output_shape()));
  float* dx = din_ptr(din);
  if (!dx) return;
  const std::size_t n = dout.size();
  const Saved* s = saved_.find(out);
  if (!s) s = saved_.latest(n);  // `out` is a copy: the latest forward's mask
  if (!s) fail("backward: no forward of this layer produced an output of this size");
  if (s->training) {
    ops::dropout_backward(dx, dout.data(), s->mask.data(), n);
  } else {
    const float* d = dout.data();
    for (std::size_t i = 0; i < n; ++i) dx[i] += d[i];
  }
}

}  // namespace tinylearn
