#include <cmath>
#include <stdexcept>

#include "tinylearn/train/model.h"
#include "tinylearn/train/ops.h"

namespace tinylearn {

Activation activation_from_name(const std::string& name) {
  if (name.empty() || name == "linear" || name == "none") return Activation::Linear;
  if (name == "relu") return Activation::ReLU;
  throw std::invalid_argument("unknown activation '" + name + "': expected 'linear' or 'relu'");
}

std::string activation_name(Activation a) { return a == Activation::ReLU ? "relu" : "linear"; }

std::size_t Layer::param_count() {
  std::size_t n = 0;
  for (const Param& p : params()) n += p.size;
  return n;
}

Dense::Dense(std::size_t units, Activation activation, bool use_bias)
    : units_(units), activation_(activation), use_bias_(use_bias) {
  if (units == 0) throw std::invalid_argument("Dense: units must be a positive integer, got 0");
}

void Dense::build(std::size_t input_features, Random& rng) {
  if (input_features == 0)
    throw std::invalid_argument("Dense: input must have at least one feature, got 0");
  // Glorot uniform, as Keras's default kernel initializer: U(-l, l), l = sqrt(6 / (in + out)).
  const float limit = std::sqrt(6.0f / float(input_features + units_));
  kernel = Matrix({input_features, units_});
  for (float& w : kernel) w = rng.uniform(-limit, limit);
  kernel_grad = xt::zeros<float>({input_features, units_});
  if (use_bias_) {
    bias = xt::zeros<float>({units_});
    bias_grad = xt::zeros<float>({units_});
  }
}

void Dense::forward(const Matrix& x, Matrix& y) const {
  const std::size_t B = x.shape()[0], C = input_features();
  if (x.shape()[1] != C)
    throw std::invalid_argument("Dense: expected " + std::to_string(C) + " input features, got " +
                                std::to_string(x.shape()[1]));
  y.resize({B, units_});
  ops::dense_forward(y.data(), x.data(), kernel.data(), use_bias_ ? bias.data() : nullptr, B, C,
                     units_);
  if (activation_ == Activation::ReLU) ops::relu_forward(y.data(), y.data(), y.size());
}

void Dense::backward(const Matrix& x, const Matrix& y, const Matrix& dy, Matrix* dx) {
  const std::size_t B = x.shape()[0], C = input_features();
  const float* dz = dy.data();
  if (activation_ == Activation::ReLU) {
    dz_ = xt::zeros<float>(dy.shape());
    ops::relu_backward(dz_.data(), dy.data(), y.data(), dy.size());
    dz = dz_.data();
  }
  float* dxp = nullptr;
  if (dx) {
    *dx = xt::zeros<float>({B, C});
    dxp = dx->data();
  }
  ops::dense_backward(dxp, kernel_grad.data(), use_bias_ ? bias_grad.data() : nullptr, dz,
                      x.data(), kernel.data(), B, C, units_);
}

std::vector<Param> Dense::params() {
  std::vector<Param> p{{"kernel", kernel.data(), kernel_grad.data(), kernel.size()}};
  if (use_bias_) p.push_back({"bias", bias.data(), bias_grad.data(), bias.size()});
  return p;
}

}  // namespace tinylearn
