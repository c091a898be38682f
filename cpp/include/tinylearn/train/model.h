// tinylearn training core: layers, optimizers and a sequential model, trained in C++.
//
// Usage (C++ only, no Python needed):
//
//   using namespace tinylearn;
//   Sequential model;
//   model.add(std::make_unique<Dense>(16, Activation::ReLU));
//   model.add(std::make_unique<Dense>(16, Activation::ReLU));
//   model.add(std::make_unique<Dense>(1));
//   model.build(/*input_features=*/1, /*seed=*/1);
//   model.compile(std::make_unique<Adam>(0.001f), Loss::MSE, {Metric::MAE});
//   FitOptions opt; opt.epochs = 500; opt.batch_size = 64; opt.seed = 1;
//   History h = model.fit(x, y, opt);            // x: (N, 1), y: (N, 1) xt::xtensor<float, 2>
//   xt::xtensor<float, 2> y_pred = model.predict(x_test);
//
// Inputs are validated here (shapes, finiteness, compile state): bad input throws
// std::invalid_argument or std::logic_error with a message saying what was expected.
#ifndef TINYLEARN_TRAIN_MODEL_H
#define TINYLEARN_TRAIN_MODEL_H

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "tinylearn/train/random.h"

namespace tinylearn {

using Matrix = xt::xtensor<float, 2>;  // (batch, features)
using Vector = xt::xtensor<float, 1>;

enum class Activation { Linear, ReLU };
enum class Loss { MSE };
enum class Metric { MAE, MSE };

Activation activation_from_name(const std::string& name);
std::string activation_name(Activation a);

// One trainable array and its gradient, same shape.
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
  // Creates the weights for `input_features` inputs, drawing from `rng`.
  virtual void build(std::size_t input_features, Random& rng) = 0;
  virtual bool built() const = 0;
  virtual std::size_t input_features() const = 0;
  virtual std::size_t output_features() const = 0;
  // y = f(x). x: (B, input_features); y resized to (B, output_features).
  virtual void forward(const Matrix& x, Matrix& y) const = 0;
  // Given x, y = f(x) and dL/dy, accumulates parameter gradients and writes dL/dx into dx
  // (when dx is not null; dx is resized and overwritten).
  virtual void backward(const Matrix& x, const Matrix& y, const Matrix& dy, Matrix* dx) = 0;
  virtual std::vector<Param> params() = 0;
  std::size_t param_count();
};

class Dense final : public Layer {
 public:
  explicit Dense(std::size_t units, Activation activation = Activation::Linear,
                 bool use_bias = true);
  std::string kind() const override { return "Dense"; }
  void build(std::size_t input_features, Random& rng) override;  // Glorot uniform, zero bias
  bool built() const override { return kernel.size() != 0; }
  std::size_t input_features() const override { return kernel.shape()[0]; }
  std::size_t output_features() const override { return units_; }
  void forward(const Matrix& x, Matrix& y) const override;
  void backward(const Matrix& x, const Matrix& y, const Matrix& dy, Matrix* dx) override;
  std::vector<Param> params() override;

  std::size_t units() const { return units_; }
  Activation activation() const { return activation_; }
  bool use_bias() const { return use_bias_; }

  Matrix kernel;  // (input_features, units)
  Vector bias;    // (units), empty without bias
  Matrix kernel_grad;
  Vector bias_grad;

 private:
  std::size_t units_;
  Activation activation_;
  bool use_bias_;
  mutable Matrix dz_;  // scratch of backward
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string kind() const = 0;
  // Applies one update from the gradients in `params` (state is keyed by position).
  virtual void step(std::vector<Param>& params) = 0;
  float learning_rate;

 protected:
  explicit Optimizer(float lr) : learning_rate(lr) {}
};

// w -= lr * g, with optional (Nesterov) momentum, as Keras's SGD.
class SGD final : public Optimizer {
 public:
  explicit SGD(float lr = 0.01f, float momentum = 0.0f, bool nesterov = false);
  std::string kind() const override { return "sgd"; }
  void step(std::vector<Param>& params) override;
  float momentum;
  bool nesterov;

 private:
  std::vector<std::vector<float>> velocity_;
};

// Adam as Keras computes it: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t m / (sqrt(v) + eps).
class Adam final : public Optimizer {
 public:
  explicit Adam(float lr = 0.001f, float beta_1 = 0.9f, float beta_2 = 0.999f,
                float epsilon = 1e-7f);
  std::string kind() const override { return "adam"; }
  void step(std::vector<Param>& params) override;
  float beta_1, beta_2, epsilon;
  std::int64_t iterations = 0;

 private:
  std::vector<std::vector<float>> m_, v_;
};

struct FitOptions {
  int epochs = 1;
  std::size_t batch_size = 32;
  bool shuffle = true;
  std::uint64_t seed = 0;
  // Called after every epoch with the epoch index and its logs; also every `check_every`
  // batches with epoch = -1 and empty logs. Return false to stop training (at that point the
  // weights hold the last completed step, so the model stays usable).
  std::function<bool(int epoch, const std::map<std::string, float>& logs)> callback;
  std::size_t check_every = 256;
};

struct History {
  std::map<std::string, std::vector<float>> history;  // "loss", "mae", "val_loss", ...
  int epochs_run = 0;
  bool stopped = false;  // the callback asked to stop
};

class Sequential {
 public:
  Sequential() = default;
  void add(std::unique_ptr<Layer> layer);
  // Creates the weights of every layer for inputs of `input_features` values.
  void build(std::size_t input_features, std::uint64_t seed);
  bool built() const { return built_; }
  void compile(std::unique_ptr<Optimizer> optimizer, Loss loss, std::vector<Metric> metrics = {});
  bool compiled() const { return optimizer_ != nullptr; }

  History fit(const Matrix& x, const Matrix& y, const FitOptions& options,
              const Matrix* x_val = nullptr, const Matrix* y_val = nullptr);
  Matrix predict(const Matrix& x, std::size_t batch_size = 1024) const;
  // Loss followed by the metrics, in compile order.
  std::vector<float> evaluate(const Matrix& x, const Matrix& y, std::size_t batch_size = 1024) const;
  // Outputs of every layer for x (used by the converter to calibrate ranges).
  std::vector<Matrix> forward_all(const Matrix& x) const;

  std::size_t size() const { return layers_.size(); }
  Layer& layer(std::size_t i) { return *layers_.at(i); }
  const Layer& layer(std::size_t i) const { return *layers_.at(i); }
  std::size_t input_features() const;
  std::size_t output_features() const;
  std::size_t param_count();
  Optimizer* optimizer() { return optimizer_.get(); }
  const std::vector<Metric>& metrics() const { return metrics_; }
  std::vector<std::string> metric_names() const;

 private:
  void check_data(const Matrix& x, const Matrix* y, const char* what) const;
  std::vector<Param> all_params();

  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<Optimizer> optimizer_;
  Loss loss_ = Loss::MSE;
  std::vector<Metric> metrics_;
  bool built_ = false;
};

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_MODEL_H
