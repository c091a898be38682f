// tinylearn training core: a graph of layers (Model; Sequential for a chain), optimizers, fit.
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
//   History h = model.fit(x, y, opt);            // x: (N, 1), y: (N, 1) tinylearn::Tensor
//   Tensor y_pred = model.predict(x_test);
//
// A graph (functional API): int in = m.add_input({28, 28, 1});
//   int a = m.add_node(layer_a, {in}); int b = m.add_node(layer_b, {a}); m.set_output(b);
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

#include "tinylearn/train/layers.h"
#include "tinylearn/train/random.h"
#include "tinylearn/train/tensor.h"

namespace tinylearn {

enum class Loss { MSE, MAE, BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy, Huber };
// Accuracy follows the loss, as Keras's "accuracy": sparse (argmax == label), categorical
// (argmax == argmax) or binary (p > 0.5, or logit > 0 with from_logits). The named accuracies
// are Keras's metrics of those names: SparseCategoricalAccuracy needs the sparse loss (labels),
// BinaryAccuracy thresholds at 0.5.
enum class Metric { MAE, MSE, Accuracy, SparseCategoricalAccuracy, CategoricalAccuracy, BinaryAccuracy };

std::string loss_name(Loss loss);

// Knowledge distillation (Hinton et al. 2015), as Keras's "Knowledge Distillation" example:
//   loss = alpha * student_loss(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T)),
// each term the mean over the batch (Keras's KLDivergence clips both distributions to [1e-7, 1]).
// s are the student's outputs, t the teacher's for the same samples; outputs that are
// probabilities (the student with from_logits = false, the teacher with teacher_from_logits =
// false) enter as logits log(clip(p)), clipped to [1e-7, 1 - 1e-7] as the crossentropies do.
// The student loss is the compiled loss (sparse or categorical crossentropy), and the targets
// carry the teacher's outputs after the labels: (N, 1 + K) rows [label, t_1..t_K] for the sparse
// loss, (N, 2K) rows [one-hot y_1..y_K, t_1..t_K] for the categorical one. Metrics (accuracy
// kinds only) read the labels. fit logs "student_loss" and "distillation_loss" (the T^2-scaled
// KL term) besides "loss"; class_weight is refused, sample_weight weights both terms.
struct Distillation {
  bool enabled = false;
  float alpha = 0.1f;        // in [0, 1]
  float temperature = 3.0f;  // > 0
  bool teacher_from_logits = true;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string kind() const = 0;
  // Applies one update from the gradients in `params` (state is keyed by position).
  virtual void step(std::vector<Param>& params) = 0;
  // The optimizer's state, for saving and resuming: per-parameter arrays (slot-major: every
  // parameter's first slot, then every parameter's second slot...), empty before the first step.
  virtual std::vector<std::vector<float>*> slots() = 0;
  // Creates zeroed slots for `params` if there are none yet (before restoring saved ones).
  virtual void prepare(const std::vector<Param>& params) = 0;
  float learning_rate;
  std::int64_t iterations = 0;  // steps taken
  // Learning-rate schedule over steps, as Keras's schedules (None: the constant learning_rate).
  struct Schedule {
    enum Kind { None, ExponentialDecay, CosineDecay } kind = None;
    float initial = 0.0f;      // initial learning rate
    std::int64_t steps = 1;    // decay_steps
    float rate = 1.0f;         // ExponentialDecay: decay_rate; CosineDecay: alpha (final fraction)
    bool staircase = false;    // ExponentialDecay only
  } schedule;
  // Sets learning_rate from the schedule for the step about to be taken (iterations).
  void apply_schedule();

 protected:
  explicit Optimizer(float lr) : learning_rate(lr) {}
};

// w -= lr * g, with optional (Nesterov) momentum, as Keras's SGD.
class SGD final : public Optimizer {
 public:
  explicit SGD(float lr = 0.01f, float momentum = 0.0f, bool nesterov = false);
  std::string kind() const override { return "sgd"; }
  void step(std::vector<Param>& params) override;
  std::vector<std::vector<float>*> slots() override;
  void prepare(const std::vector<Param>& params) override;
  float momentum;
  bool nesterov;

 private:
  std::vector<std::vector<float>> velocity_;
};

// Adam as Keras computes it: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t m / (sqrt(v) + eps).
// With weight_decay > 0 it is AdamW (Keras's): first w -= lr * weight_decay * w, decoupled.
class Adam final : public Optimizer {
 public:
  explicit Adam(float lr = 0.001f, float beta_1 = 0.9f, float beta_2 = 0.999f,
                float epsilon = 1e-7f, float weight_decay = 0.0f);
  std::string kind() const override { return weight_decay > 0.0f ? "adamw" : "adam"; }
  float weight_decay;
  void step(std::vector<Param>& params) override;
  std::vector<std::vector<float>*> slots() override;
  void prepare(const std::vector<Param>& params) override;
  float beta_1, beta_2, epsilon;

 private:
  std::vector<std::vector<float>> m_, v_;
};

// RMSprop as Keras computes it: v = rho v + (1 - rho) g^2; centered: a = rho a + (1 - rho) g and
// the denominator is v - a^2; step = lr g / sqrt(denominator + epsilon) (epsilon inside the root);
// with momentum: m = momentum m + step, w -= m; else w -= step.
class RMSprop final : public Optimizer {
 public:
  explicit RMSprop(float lr = 0.001f, float rho = 0.9f, float momentum = 0.0f,
                   float epsilon = 1e-7f, bool centered = false);
  std::string kind() const override { return "rmsprop"; }
  void step(std::vector<Param>& params) override;
  std::vector<std::vector<float>*> slots() override;  // velocities, then momenta, then averages
  void prepare(const std::vector<Param>& params) override;
  float rho, momentum, epsilon;
  bool centered;

 private:
  std::vector<std::vector<float>> velocity_, momentum_, average_;
};

using Logs = std::map<std::string, float>;

struct FitOptions {
  int epochs = 1;
  // Epochs run from initial_epoch to epochs - 1 and are numbered so (Keras's initial_epoch).
  int initial_epoch = 0;
  std::size_t batch_size = 32;
  bool shuffle = true;
  std::uint64_t seed = 0;
  // Called after every epoch with the epoch index and its logs; also every `check_every`
  // batches with epoch = -1 and empty logs. Return false to stop training (at that point the
  // weights hold the last completed step, so the model stays usable).
  std::function<bool(int epoch, const Logs& logs)> callback;
  std::size_t check_every = 256;
  // Optional batch hooks (Keras's on_train_batch_begin/end), each batch, with the batch's index
  // in its epoch. batch_end's logs are the epoch's running means so far ("loss", metrics);
  // returning false ends the epoch there (its logs average the batches run; validation and
  // `callback` follow) and then training.
  std::function<void(int batch)> batch_begin;
  std::function<bool(int batch, const Logs& logs)> batch_end;
  // Optional hooks around each validation pass (Keras's on_test_begin/end); test_end gets the
  // validation logs without the "val_" prefix.
  std::function<void()> test_begin;
  std::function<void(const Logs& logs)> test_end;
  // Per-class weights of the loss (Keras's class_weight): empty for none; for the sparse loss
  // indexed by label, for the categorical one by argmax(y), for the binary one by y (0 or 1).
  std::vector<float> class_weight;
  // Per-sample weights of the loss (Keras's sample_weight): empty for none, else one finite
  // weight >= 0 per sample of x. A batch's loss is sum_i w_i l_i / batch_size, as Keras's
  // "sum_over_batch_size" reduction. Not together with class_weight (Keras refuses both).
  std::vector<float> sample_weight;
  // Validation: per-sample weights of its loss (empty for none), run after every
  // validation_freq-th epoch (epoch + 1 divisible by it), in batches of validation_batch_size.
  std::vector<float> validation_sample_weight;
  int validation_freq = 1;
  std::size_t validation_batch_size = 1024;
};

struct History {
  std::map<std::string, std::vector<float>> history;  // "loss", "mae", "val_loss", ...
  int epochs_run = 0;
  bool stopped = false;  // the callback asked to stop
};

// A graph of layers with one input and one output, trained as a whole. Nodes are added in
// topological order (a node's inputs must exist already), so a cycle cannot be built.
class Model {
 public:
  struct Node {
    std::shared_ptr<Layer> layer;  // null for the input node; may be shared (tied weights)
    std::vector<int> inputs;
    Shape shape;  // per-sample output shape, known once built
  };

  Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  virtual ~Model() = default;

  int add_input(const Shape& shape);
  int add_node(std::shared_ptr<Layer> layer, const std::vector<int>& inputs);
  void set_output(int node);

  // Builds every layer on the path from the input to the output (weights from `seed`).
  // Throws std::invalid_argument, naming the layer, when shapes do not connect, and when the
  // output does not depend on the input.
  void build(std::uint64_t seed);
  bool built() const { return built_; }
  // `metric_names` (one per metric, or empty for the defaults "mae", "mse", "accuracy", ...)
  // key the metrics in fit's logs and History. `frozen`: layers (Keras's trainable=False) that
  // fit neither updates nor computes weight gradients for (their L2 penalty still counts in the
  // loss); a frozen BatchNormalization runs in inference mode in fit (moving statistics used,
  // not updated). The optimizer's state covers the trainable parameters of this compile.
  void compile(std::unique_ptr<Optimizer> optimizer, Loss loss, std::vector<Metric> metrics = {},
               bool from_logits = false, std::vector<std::string> metric_names = {},
               std::vector<const Layer*> frozen = {}, float huber_delta = 1.0f,
               Distillation distillation = {});
  bool frozen(const Layer* layer) const;
  bool compiled() const { return optimizer_ != nullptr; }
  const Distillation& distillation() const { return distillation_; }

  History fit(const Tensor& x, const Tensor& y, const FitOptions& options,
              const Tensor* x_val = nullptr, const Tensor* y_val = nullptr);
  Tensor predict(const Tensor& x, std::size_t batch_size = 1024);
  // Loss followed by the metrics, in compile order (when distilling, then the student loss and
  // the distillation term, without the L2 penalties that the loss includes). With sample_weight (one weight >= 0 per
  // sample) the loss is sum_i w_i l_i / N, as Keras's; the metrics are not weighted (Keras's
  // `metrics`, as opposed to `weighted_metrics`).
  std::vector<float> evaluate(const Tensor& x, const Tensor& y, std::size_t batch_size = 1024,
                              const std::vector<float>& sample_weight = {});
  // Outputs of every node on the path (in graph order) for x; used to calibrate int8 ranges.
  std::vector<Tensor> forward_all(const Tensor& x);

  const Shape& input_shape() const;
  const Shape& output_shape() const;
  std::size_t node_count() const { return nodes_.size(); }
  const Node& node(std::size_t i) const { return nodes_.at(i); }
  int input_node() const { return input_; }
  int output_node() const { return output_; }
  // Nodes from the input to the output, in graph (topological) order.
  const std::vector<int>& path() const { return path_; }
  // Parameters of every layer on the path, frozen ones included (not the moving statistics).
  std::size_t param_count();
  // Trainable parameters (of the layers not frozen) in optimizer order (a shared layer's once).
  std::vector<Param> trainable_params() { return all_params(); }
  Optimizer* optimizer() { return optimizer_.get(); }
  const std::vector<Metric>& metrics() const { return metrics_; }
  std::vector<std::string> metric_names() const;

 protected:
  std::vector<Node> nodes_;

 private:
  struct Targets;
  void check_data(const Tensor& x, const Tensor* y, const char* what) const;
  Targets targets(const Tensor& y, const char* what) const;
  // parts (distillation only, may be null): receives the student loss and the distillation term.
  float loss_value(const Tensor& pred, const float* y, const std::int32_t* labels,
                   const float* weights, double* parts = nullptr) const;
  // Distillation targets: the one-hot rows (categorical loss only) and the teacher's outputs.
  void split_targets(const float* y, std::size_t B, std::size_t K, std::vector<float>& hard,
                     std::vector<float>& teacher) const;
  void loss_gradient(Tensor& dpred, const Tensor& pred, const float* y, const std::int32_t* labels,
                     const float* weights) const;
  float metric_value(Metric m, const Tensor& pred, const float* y, const std::int32_t* labels) const;
  // The layers' L2 penalties (sum of kernel_l2 * sum(kernel^2)); with add_gradient, also adds
  // their gradients (2 * kernel_l2 * kernel) to the kernels' gradients (not the frozen ones).
  float regularization(bool add_gradient);
  std::vector<Param> all_params();
  // Runs the path on a batch; acts[node] receives each node's output.
  void run_forward(const Tensor& xb, std::vector<Tensor>& acts, bool training);

  int input_ = -1, output_ = -1;
  std::vector<int> path_;
  std::unique_ptr<Optimizer> optimizer_;
  Loss loss_ = Loss::MSE;
  bool from_logits_ = false;
  std::vector<Metric> metrics_;
  std::vector<std::string> metric_names_;
  std::vector<const Layer*> frozen_;
  float huber_delta_ = 1.0f;
  Distillation distillation_;
  bool built_ = false;
};

// A chain of layers: a Model whose every layer takes the previous one's output.
class Sequential : public Model {
 public:
  void add(std::unique_ptr<Layer> layer);
  // Adds the input node (samples of `input_shape`) and builds the chain.
  void build(const Shape& input_shape, std::uint64_t seed);
  void build(std::size_t input_features, std::uint64_t seed) { build(Shape{input_features}, seed); }
  using Model::build;
  std::size_t size() const { return layers_.size(); }
  Layer& layer(std::size_t i) { return *layers_.at(i); }
  const Layer& layer(std::size_t i) const { return *layers_.at(i); }
  History fit(const Tensor& x, const Tensor& y, const FitOptions& options,
              const Tensor* x_val = nullptr, const Tensor* y_val = nullptr);

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

}  // namespace tinylearn

#endif  // TINYLEARN_TRAIN_MODEL_H
