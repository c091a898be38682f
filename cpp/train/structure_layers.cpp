// Layers that move or combine values without weights: Flatten, Reshape, Add, Concatenate, and
// the standalone activation layer.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "tinylearn/train/layers.h"
#include "tinylearn/train/ops.h"

namespace tinylearn {

namespace {

std::vector<std::size_t> with_batch(const Tensor& like, const Shape& sample) {
  return batch_shape(like.shape()[0], sample);
}

void copy_to(Tensor& out, const Tensor& in, const std::vector<std::size_t>& shape) {
  out.resize(shape);
  std::memcpy(out.data(), in.data(), in.size() * sizeof(float));
}

void accumulate(Tensor* din, const Tensor& dout) {
  if (!din) return;
  float* d = din->data();
  const float* g = dout.data();
  for (std::size_t i = 0, n = dout.size(); i < n; ++i) d[i] += g[i];
}

}  // namespace

Shape ActivationLayer::do_build(const std::vector<Shape>& inputs, Random&) {
  if (inputs.size() != 1) fail("takes one input, got " + std::to_string(inputs.size()));
  return inputs[0];
}

void ActivationLayer::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  out.resize(in[0]->shape());
  activation_forward(activation_, out.data(), in[0]->data(), in[0]->size(), in[0]->shape().back());
}

void ActivationLayer::backward(const std::vector<const Tensor*>&, const Tensor& out,
                               const Tensor& dout, const std::vector<Tensor*>& din) {
  if (din[0])
    activation_backward(activation_, din[0]->data(), dout.data(), out.data(), out.size(),
                        out.shape().back());
}

Shape Flatten::do_build(const std::vector<Shape>& inputs, Random&) {
  if (inputs.size() != 1) fail("takes one input, got " + std::to_string(inputs.size()));
  return {numel(inputs[0])};
}

void Flatten::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  copy_to(out, *in[0], with_batch(*in[0], output_shape()));
}

void Flatten::backward(const std::vector<const Tensor*>&, const Tensor&, const Tensor& dout,
                       const std::vector<Tensor*>& din) {
  accumulate(din[0], dout);
}

Shape Reshape::do_build(const std::vector<Shape>& inputs, Random&) {
  if (inputs.size() != 1) fail("takes one input, got " + std::to_string(inputs.size()));
  const std::size_t total = numel(inputs[0]);
  std::size_t known = 1;
  int infer = -1;
  for (std::size_t i = 0; i < target_.size(); ++i) {
    if (target_[i] == -1 && infer < 0) infer = int(i);
    else if (target_[i] <= 0) fail("target shape entries must be positive (one may be -1)");
    else known *= std::size_t(target_[i]);
  }
  if (target_.empty() || (infer < 0 && known != total) || (infer >= 0 && total % known != 0))
    fail("cannot reshape samples of " + shape_str(inputs[0]) + " (" + std::to_string(total) +
         " values) to the target shape");
  Shape out;
  for (std::size_t i = 0; i < target_.size(); ++i)
    out.push_back(int(i) == infer ? total / known : std::size_t(target_[i]));
  return out;
}

void Reshape::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  copy_to(out, *in[0], with_batch(*in[0], output_shape()));
}

void Reshape::backward(const std::vector<const Tensor*>&, const Tensor&, const Tensor& dout,
                       const std::vector<Tensor*>& din) {
  accumulate(din[0], dout);
}

Shape Add::do_build(const std::vector<Shape>& inputs, Random&) {
  if (inputs.size() < 2) fail("takes two or more inputs, got " + std::to_string(inputs.size()));
  for (const Shape& s : inputs)
    if (s != inputs[0])
      fail("inputs must have one shape, got " + shape_str(inputs[0], true) + " and " + shape_str(s, true));
  return inputs[0];
}

void Add::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  copy_to(out, *in[0], std::vector<std::size_t>(in[0]->shape().begin(), in[0]->shape().end()));
  for (std::size_t k = 1; k < in.size(); ++k) {
    const float* x = in[k]->data();
    float* o = out.data();
    for (std::size_t i = 0, n = out.size(); i < n; ++i) o[i] += x[i];
  }
}

void Add::backward(const std::vector<const Tensor*>&, const Tensor&, const Tensor& dout,
                   const std::vector<Tensor*>& din) {
  for (Tensor* d : din) accumulate(d, dout);
}

Shape Concatenate::do_build(const std::vector<Shape>& inputs, Random&) {
  if (inputs.size() < 2) fail("takes two or more inputs, got " + std::to_string(inputs.size()));
  Shape out = inputs[0];
  out.back() = 0;
  for (const Shape& s : inputs) {
    if (s.size() != out.size() || !std::equal(s.begin(), s.end() - 1, out.begin()))
      fail("inputs must match on every axis but the last, got " + shape_str(inputs[0], true) +
           " and " + shape_str(s, true));
    out.back() += s.back();
  }
  return out;
}

void Concatenate::forward(const std::vector<const Tensor*>& in, Tensor& out, bool) {
  out.resize(with_batch(*in[0], output_shape()));
  const std::size_t width = output_shape().back(), rows = out.size() / width;
  std::size_t at = 0;
  for (const Tensor* t : in) {
    const std::size_t w = t->shape().back();
    for (std::size_t r = 0; r < rows; ++r)
      std::memcpy(out.data() + r * width + at, t->data() + r * w, w * sizeof(float));
    at += w;
  }
}

void Concatenate::backward(const std::vector<const Tensor*>& in, const Tensor&, const Tensor& dout,
                           const std::vector<Tensor*>& din) {
  const std::size_t width = output_shape().back(), rows = dout.size() / width;
  std::size_t at = 0;
  for (std::size_t k = 0; k < in.size(); ++k) {
    const std::size_t w = in[k]->shape().back();
    if (din[k])
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = 0; j < w; ++j) din[k]->data()[r * w + j] += dout.data()[r * width + at + j];
    at += w;
  }
}

}  // namespace tinylearn
