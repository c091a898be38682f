#include "tinylearn/train/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "tinylearn/train/nn_ops.h"
#include "tinylearn/train/ops.h"

namespace tinylearn {

namespace {

Shape full_shape(const Tensor& t) { return Shape(t.shape().begin(), t.shape().end()); }

// Rows `idx[begin, end)` (samples of `sample` floats each) of `src` into `dst`.
void gather(const Tensor& src, const std::vector<std::size_t>& idx, std::size_t begin,
            std::size_t end, Tensor& dst) {
  const std::size_t sample = src.size() / src.shape()[0];
  std::vector<std::size_t> shape(src.shape().begin(), src.shape().end());
  shape[0] = end - begin;
  dst.resize(shape);
  for (std::size_t r = begin; r < end; ++r)
    std::memcpy(dst.data() + (r - begin) * sample, src.data() + idx[r] * sample, sample * sizeof(float));
}

// Samples [begin, end) of `src` into `dst`.
void slice(const Tensor& src, std::size_t begin, std::size_t end, Tensor& dst) {
  const std::size_t sample = src.size() / src.shape()[0];
  std::vector<std::size_t> shape(src.shape().begin(), src.shape().end());
  shape[0] = end - begin;
  dst.resize(shape);
  std::memcpy(dst.data(), src.data() + begin * sample, (end - begin) * sample * sizeof(float));
}

// Per-sample loss weights: none (empty) or one finite weight >= 0 per sample.
void check_weights(const std::vector<float>& w, std::size_t n, const std::string& what) {
  if (w.empty()) return;
  if (w.size() != n)
    throw std::invalid_argument(what + ": expected one weight per sample (" + std::to_string(n) +
                                "), got " + std::to_string(w.size()));
  for (std::size_t i = 0; i < n; ++i)
    if (!(std::isfinite(w[i]) && w[i] >= 0.0f))
      throw std::invalid_argument(what + ": weight " + std::to_string(w[i]) + " of sample " +
                                  std::to_string(i) + " is not a finite number >= 0");
}

}  // namespace

std::string loss_name(Loss loss) {
  switch (loss) {
    case Loss::MSE: return "mse";
    case Loss::MAE: return "mae";
    case Loss::BinaryCrossentropy: return "binary_crossentropy";
    case Loss::CategoricalCrossentropy: return "categorical_crossentropy";
    case Loss::SparseCategoricalCrossentropy: return "sparse_categorical_crossentropy";
    case Loss::Huber: return "huber";
  }
  return "?";
}

struct Model::Targets {
  std::vector<std::int32_t> labels;  // sparse loss only: one class index per sample
};

Model::Targets Model::targets(const Tensor& y, const char* what) const {
  Targets t;
  if (loss_ != Loss::SparseCategoricalCrossentropy) return t;
  const std::size_t k = output_shape().back();
  // Distillation rows are [label, teacher outputs...].
  const std::size_t stride = distillation_.enabled ? 1 + k : 1;
  t.labels.resize(y.shape()[0]);
  for (std::size_t i = 0; i < t.labels.size(); ++i) {
    const float v = y.data()[i * stride];
    if (v != std::floor(v) || v < 0.0f || v >= float(k))
      throw std::invalid_argument(
          std::string(what) + ": label " + std::to_string(v) + " of sample " + std::to_string(i) +
          " is out of range for sparse_categorical_crossentropy: layer '" +
          nodes_[output_].layer->name + "' has " + std::to_string(k) + " classes (0.." +
          std::to_string(k - 1) + ")");
    t.labels[i] = std::int32_t(v);
  }
  return t;
}

void Model::split_targets(const float* y, std::size_t B, std::size_t K, std::vector<float>& hard,
                          std::vector<float>& teacher) const {
  const bool sparse = loss_ == Loss::SparseCategoricalCrossentropy;
  const std::size_t stride = sparse ? 1 + K : 2 * K, skip = sparse ? 1 : K;
  teacher.resize(B * K);
  if (!sparse) hard.resize(B * K);
  for (std::size_t i = 0; i < B; ++i) {
    const float* row = y + i * stride;
    std::memcpy(teacher.data() + i * K, row + skip, K * sizeof(float));
    if (!sparse) std::memcpy(hard.data() + i * K, row, K * sizeof(float));
  }
}

float Model::loss_value(const Tensor& pred, const float* y, const std::int32_t* labels,
                        const float* w, double* parts) const {
  const std::size_t K = pred.shape().back(), B = pred.size() / K;
  if (distillation_.enabled) {
    std::vector<float> hard, teacher;
    split_targets(y, B, K, hard, teacher);
    const Distillation& d = distillation_;
    const double student =
        loss_ == Loss::SparseCategoricalCrossentropy
            ? ops::sparse_categorical_crossentropy_forward(pred.data(), labels, w, B, K, from_logits_)
            : ops::categorical_crossentropy_forward(pred.data(), hard.data(), w, B, K, from_logits_);
    const double T = d.temperature;
    const double distill = T * T * ops::kl_distillation_forward(pred.data(), teacher.data(), w, B, K,
                                                                 d.temperature, from_logits_,
                                                                 d.teacher_from_logits);
    if (parts) {
      parts[0] = student;
      parts[1] = distill;
    }
    return float(double(d.alpha) * student + (1.0 - double(d.alpha)) * distill);
  }
  switch (loss_) {
    case Loss::MSE: return ops::mean_squared_error_forward(pred.data(), y, w, B, K);
    case Loss::MAE: return ops::mean_absolute_error_forward(pred.data(), y, w, B, K);
    case Loss::BinaryCrossentropy:
      return ops::binary_crossentropy_forward(pred.data(), y, w, B, K, from_logits_);
    case Loss::CategoricalCrossentropy:
      return ops::categorical_crossentropy_forward(pred.data(), y, w, B, K, from_logits_);
    case Loss::SparseCategoricalCrossentropy:
      return ops::sparse_categorical_crossentropy_forward(pred.data(), labels, w, B, K, from_logits_);
    case Loss::Huber: return ops::huber_forward(pred.data(), y, w, B, K, huber_delta_);
  }
  return 0.0f;
}

void Model::loss_gradient(Tensor& dpred, const Tensor& pred, const float* y,
                          const std::int32_t* labels, const float* w) const {
  const std::size_t K = pred.shape().back(), B = pred.size() / K;
  float* d = dpred.data();
  if (distillation_.enabled) {
    std::vector<float> hard, teacher;
    split_targets(y, B, K, hard, teacher);
    const Distillation& dl = distillation_;
    if (dl.alpha > 0.0f) {  // alpha * student loss: the crossentropy with weights alpha * w_i
      std::vector<float> aw(B);
      for (std::size_t i = 0; i < B; ++i) aw[i] = dl.alpha * (w ? w[i] : 1.0f);
      if (loss_ == Loss::SparseCategoricalCrossentropy)
        ops::sparse_categorical_crossentropy_backward(d, pred.data(), labels, aw.data(), B, K, from_logits_);
      else
        ops::categorical_crossentropy_backward(d, pred.data(), hard.data(), aw.data(), B, K, from_logits_);
    }
    if (dl.alpha < 1.0f)
      ops::kl_distillation_backward(d, pred.data(), teacher.data(), w, B, K, dl.temperature, from_logits_,
                                    dl.teacher_from_logits,
                                    (1.0f - dl.alpha) * dl.temperature * dl.temperature);
    return;
  }
  switch (loss_) {
    case Loss::MSE: ops::mean_squared_error_backward(d, pred.data(), y, w, B, K); break;
    case Loss::MAE: ops::mean_absolute_error_backward(d, pred.data(), y, w, B, K); break;
    case Loss::BinaryCrossentropy:
      ops::binary_crossentropy_backward(d, pred.data(), y, w, B, K, from_logits_);
      break;
    case Loss::CategoricalCrossentropy:
      ops::categorical_crossentropy_backward(d, pred.data(), y, w, B, K, from_logits_);
      break;
    case Loss::SparseCategoricalCrossentropy:
      ops::sparse_categorical_crossentropy_backward(d, pred.data(), labels, w, B, K, from_logits_);
      break;
    case Loss::Huber: ops::huber_backward(d, pred.data(), y, w, B, K, huber_delta_); break;
  }
}

float Model::metric_value(Metric m, const Tensor& pred, const float* y,
                          const std::int32_t* labels) const {
  const std::size_t K = pred.shape().back(), B = pred.size() / K;
  std::vector<float> hard, teacher;
  if (distillation_.enabled && loss_ == Loss::CategoricalCrossentropy) {  // the one-hot part
    split_targets(y, B, K, hard, teacher);
    y = hard.data();
  }
  switch (m) {
    case Metric::MAE: return ops::mae_forward(pred.data(), y, pred.size());
    case Metric::MSE: return ops::mse_forward(pred.data(), y, pred.size());
    case Metric::Accuracy:
      if (loss_ == Loss::SparseCategoricalCrossentropy)
        return ops::sparse_categorical_accuracy(pred.data(), labels, B, K);
      if (loss_ == Loss::CategoricalCrossentropy) return ops::categorical_accuracy(pred.data(), y, B, K);
      return ops::binary_accuracy(pred.data(), y, pred.size(), from_logits_ ? 0.0f : 0.5f);
    case Metric::SparseCategoricalAccuracy: return ops::sparse_categorical_accuracy(pred.data(), labels, B, K);
    case Metric::CategoricalAccuracy: return ops::categorical_accuracy(pred.data(), y, B, K);
    case Metric::BinaryAccuracy: return ops::binary_accuracy(pred.data(), y, pred.size(), 0.5f);
  }
  return 0.0f;
}

float Model::regularization(bool add_gradient) {
  double total = 0.0;
  std::vector<const Layer*> seen;
  for (int i : path_) {
    Layer* l = nodes_[std::size_t(i)].layer.get();
    if (!l || l->kernel_l2 == 0.0f || std::find(seen.begin(), seen.end(), l) != seen.end()) continue;
    seen.push_back(l);
    for (const Param& p : l->params()) {
      if (p.name != "kernel") continue;
      double s = 0.0;
      for (std::size_t k = 0; k < p.size; ++k) s += double(p.value[k]) * double(p.value[k]);
      total += double(l->kernel_l2) * s;
      if (add_gradient && !frozen(l))
        for (std::size_t k = 0; k < p.size; ++k) p.grad[k] += 2.0f * l->kernel_l2 * p.value[k];
    }
  }
  return float(total);
}

int Model::add_input(const Shape& shape) {
  if (input_ >= 0) throw std::logic_error("the model already has an input");
  if (built_) throw std::logic_error("the model is already built");
  if (shape.empty() || numel(shape) == 0)
    throw std::invalid_argument("input shape must have positive dimensions, got " + shape_str(shape));
  nodes_.push_back({nullptr, {}, shape});
  input_ = int(nodes_.size()) - 1;
  return input_;
}

int Model::add_node(std::shared_ptr<Layer> layer, const std::vector<int>& inputs) {
  if (built_) throw std::logic_error("the model is already built");
  if (!layer) throw std::invalid_argument("add_node: expected a layer, got null");
  if (inputs.empty()) throw std::invalid_argument("add_node: a layer needs at least one input");
  for (int i : inputs)
    if (i < 0 || i >= int(nodes_.size()))
      throw std::invalid_argument("add_node: input node " + std::to_string(i) +
                                  " does not exist (nodes are added in order, so no cycles)");
  nodes_.push_back({std::move(layer), inputs, {}});
  return int(nodes_.size()) - 1;
}

void Model::set_output(int node) {
  if (node < 0 || node >= int(nodes_.size()))
    throw std::invalid_argument("set_output: node " + std::to_string(node) + " does not exist");
  output_ = node;
}

void Model::build(std::uint64_t seed) {
  if (built_) return;
  if (input_ < 0) throw std::logic_error("build: the model has no input");
  if (output_ < 0) throw std::logic_error("build: the model has no output");
  // The nodes the output depends on, found backwards; the input must be one of them.
  std::vector<char> needed(nodes_.size(), 0);
  needed[output_] = 1;
  for (int i = output_; i >= 0; --i)
    if (needed[i])
      for (int j : nodes_[i].inputs) needed[j] = 1;
  if (!needed[input_]) throw std::invalid_argument("build: the output does not depend on the input");
  for (std::size_t i = 0; i < nodes_.size(); ++i)
    if (needed[i] && nodes_[i].layer == nullptr && int(i) != input_)
      throw std::invalid_argument("build: the graph has a second, disconnected input");
  Random rng(seed);
  path_.clear();
  for (int i = 0; i <= output_; ++i) {
    if (!needed[i]) continue;
    path_.push_back(i);
    Node& n = nodes_[i];
    if (!n.layer) continue;
    std::vector<Shape> in;
    for (int j : n.inputs) in.push_back(nodes_[j].shape);
    n.shape = n.layer->build(in, rng);
  }
  built_ = true;
}

void Model::compile(std::unique_ptr<Optimizer> optimizer, Loss loss, std::vector<Metric> metrics,
                    bool from_logits, std::vector<std::string> metric_names,
                    std::vector<const Layer*> frozen, float huber_delta, Distillation distillation) {
  if (!optimizer) throw std::invalid_argument("compile: expected an optimizer, got null");
  if (!metric_names.empty() && metric_names.size() != metrics.size())
    throw std::invalid_argument("compile: expected one name per metric, got " +
                                std::to_string(metric_names.size()) + " names for " +
                                std::to_string(metrics.size()) + " metrics");
  if (!(huber_delta > 0.0f) || !std::isfinite(huber_delta))
    throw std::invalid_argument("compile: the Huber loss's delta must be a positive number, got " +
                                std::to_string(huber_delta));
  if (distillation.enabled) {
    if (loss != Loss::SparseCategoricalCrossentropy && loss != Loss::CategoricalCrossentropy)
      throw std::invalid_argument("compile: distillation needs a student loss that is "
                                  "sparse_categorical_crossentropy or categorical_crossentropy, got " +
                                  loss_name(loss));
    if (!(distillation.alpha >= 0.0f && distillation.alpha <= 1.0f))
      throw std::invalid_argument("compile: distillation's alpha must be in [0, 1], got " +
                                  std::to_string(distillation.alpha));
    if (!(distillation.temperature > 0.0f) || !std::isfinite(distillation.temperature))
      throw std::invalid_argument("compile: distillation's temperature must be a positive number, got " +
                                  std::to_string(distillation.temperature));
    for (Metric m : metrics)
      if (m == Metric::MAE || m == Metric::MSE || m == Metric::BinaryAccuracy ||
          (m == Metric::SparseCategoricalAccuracy && loss != Loss::SparseCategoricalCrossentropy) ||
          (m == Metric::CategoricalAccuracy && loss != Loss::CategoricalCrossentropy))
        throw std::invalid_argument("compile: with distillation the metrics read the labels and can be "
                                    "'accuracy' or the " + std::string(loss == Loss::CategoricalCrossentropy
                                    ? "categorical" : "sparse categorical") + " accuracy only");
  }
  optimizer_ = std::move(optimizer);
  loss_ = loss;
  distillation_ = distillation;
  from_logits_ = from_logits;
  metrics_ = std::move(metrics);
  metric_names_ = std::move(metric_names);
  frozen_ = std::move(frozen);
  huber_delta_ = huber_delta;
}

bool Model::frozen(const Layer* layer) const {
  return std::find(frozen_.begin(), frozen_.end(), layer) != frozen_.end();
}

const Shape& Model::input_shape() const {
  if (input_ < 0) throw std::logic_error("the model has no input yet");
  return nodes_[input_].shape;
}

const Shape& Model::output_shape() const {
  if (!built_) throw std::logic_error("the model is not built yet");
  return nodes_[output_].shape;
}

std::size_t Model::param_count() {
  std::size_t n = 0;
  std::vector<const Layer*> seen;
  for (int i : path_) {
    Layer* l = nodes_[std::size_t(i)].layer.get();
    if (!l || std::find(seen.begin(), seen.end(), l) != seen.end()) continue;
    seen.push_back(l);
    n += l->param_count();
  }
  return n;
}

std::vector<std::string> Model::metric_names() const {
  if (!metric_names_.empty()) return metric_names_;
  static const char* const kNames[] = {"mae", "mse", "accuracy", "sparse_categorical_accuracy",
                                       "categorical_accuracy", "binary_accuracy"};
  std::vector<std::string> names;
  for (Metric m : metrics_) names.push_back(kNames[int(m)]);
  return names;
}

std::vector<Param> Model::all_params() {
  std::vector<Param> all;
  std::vector<const Layer*> seen;  // a shared layer's weights are updated once
  for (int i : path_) {
    Layer* l = nodes_[i].layer.get();
    if (!l || frozen(l) || std::find(seen.begin(), seen.end(), l) != seen.end()) continue;
    seen.push_back(l);
    for (const Param& p : l->params()) all.push_back(p);
  }
  return all;
}

void Model::check_data(const Tensor& x, const Tensor* y, const char* what) const {
  if (!built_) throw std::logic_error(std::string(what) + ": the model is not built yet");
  const std::string w(what);
  const Shape& in = input_shape();
  if (x.dimension() == 0 || x.shape()[0] == 0)
    throw std::invalid_argument(w + ": x is empty (0 samples)");
  if (sample_shape(x) != in)
    throw std::invalid_argument(w + ": expected x of shape " + shape_str(in, true) + ", got " +
                                shape_str(full_shape(x)));
  if (!std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); }))
    throw std::invalid_argument(w + ": x contains NaN or infinity");
  if (!y) return;
  const Shape& out = output_shape();
  if (distillation_.enabled && compiled()) {
    // Rows of labels followed by the teacher's outputs (see Distillation).
    const bool sp = loss_ == Loss::SparseCategoricalCrossentropy;
    if (out.size() != 1)
      throw std::invalid_argument(w + ": distillation needs a model whose output is (None, classes), got " +
                                  shape_str(out, true));
    const Shape want{sp ? 1 + out[0] : 2 * out[0]};
    if (y->dimension() == 0 || y->shape()[0] != x.shape()[0] || sample_shape(*y) != want)
      throw std::invalid_argument(w + ": distillation expects targets of shape " +
                                  shape_str(Shape(batch_shape(x.shape()[0], want))) +
                                  (sp ? " ([label, teacher outputs...] per sample)"
                                      : " ([one-hot labels..., teacher outputs...] per sample)") +
                                  " to match x, got " + shape_str(full_shape(*y)));
    if (!std::all_of(y->begin(), y->end(), [](float v) { return std::isfinite(v); }))
      throw std::invalid_argument(w + ": the targets contain NaN or infinity");
    return;
  }
  const bool sparse = loss_ == Loss::SparseCategoricalCrossentropy && compiled();
  if (sparse && out.size() != 1)
    throw std::invalid_argument(w + ": sparse_categorical_crossentropy needs a model whose output is "
                                "(None, classes), got " + shape_str(out, true));
  const Shape want = sparse ? Shape{} : out;  // sparse: one label per sample, (N,) or (N, 1)
  const bool ok = y->dimension() > 0 && y->shape()[0] == x.shape()[0] &&
                  (sample_shape(*y) == want || (sparse && sample_shape(*y) == Shape{1}));
  if (!ok)
    throw std::invalid_argument(w + ": expected y of shape " +
                                shape_str(Shape(batch_shape(x.shape()[0], want))) +
                                (sparse ? " (integer labels)" : "") + " to match x, got " +
                                shape_str(full_shape(*y)));
  if (!std::all_of(y->begin(), y->end(), [](float v) { return std::isfinite(v); }))
    throw std::invalid_argument(w + ": y contains NaN or infinity");
}

void Model::run_forward(const Tensor& xb, std::vector<Tensor>& acts, bool training) {
  acts.resize(nodes_.size());
  std::vector<const Tensor*> in;
  for (int i : path_) {
    const Node& n = nodes_[i];
    if (!n.layer) continue;
    in.clear();
    for (int j : n.inputs) in.push_back(j == input_ ? &xb : &acts[j]);
    // A frozen BatchNormalization runs in inference mode, as in Keras (>= 2.1).
    const bool frozen_bn = training && frozen(n.layer.get()) && n.layer->kind() == "BatchNormalization";
    n.layer->forward(in, acts[i], training && !frozen_bn);
  }
}

std::vector<Tensor> Model::forward_all(const Tensor& x) {
  check_data(x, nullptr, "forward");
  std::vector<Tensor> acts;
  run_forward(x, acts, false);
  acts[input_] = x;
  return acts;
}

Tensor Model::predict(const Tensor& x, std::size_t batch_size) {
  check_data(x, nullptr, "predict");
  if (batch_size == 0) throw std::invalid_argument("predict: batch_size must be positive");
  const std::size_t n = x.shape()[0], out_n = numel(output_shape());
  Tensor result(batch_shape(n, output_shape()));
  std::vector<Tensor> acts;
  Tensor xb;
  for (std::size_t begin = 0; begin < n; begin += batch_size) {
    const std::size_t end = std::min(n, begin + batch_size);
    slice(x, begin, end, xb);
    run_forward(xb, acts, false);
    const Tensor& out = output_ == input_ ? xb : acts[output_];
    std::memcpy(result.data() + begin * out_n, out.data(), out.size() * sizeof(float));
  }
  return result;
}

std::vector<float> Model::evaluate(const Tensor& x, const Tensor& y, std::size_t batch_size,
                                  const std::vector<float>& sample_weight) {
  if (!compiled()) throw std::logic_error("evaluate: call compile() first");
  check_data(x, &y, "evaluate");
  check_weights(sample_weight, x.shape()[0], "evaluate: sample_weight");
  const Targets t = targets(y, "evaluate");
  const std::int32_t* labels = t.labels.empty() ? nullptr : t.labels.data();
  const Tensor pred = predict(x, batch_size);
  const float* w = sample_weight.empty() ? nullptr : sample_weight.data();
  double parts[2] = {0.0, 0.0};
  std::vector<float> out{loss_value(pred, y.data(), labels, w, parts) + regularization(false)};
  for (Metric m : metrics_) out.push_back(metric_value(m, pred, y.data(), labels));
  if (distillation_.enabled) {
    out.push_back(float(parts[0]));
    out.push_back(float(parts[1]));
  }
  return out;
}

History Model::fit(const Tensor& x, const Tensor& y, const FitOptions& opt, const Tensor* x_val,
                   const Tensor* y_val) {
  if (!optimizer_) throw std::logic_error("fit: call compile() before fit()");
  if (!built_) build(opt.seed);
  check_data(x, &y, "fit");
  if ((x_val == nullptr) != (y_val == nullptr))
    throw std::invalid_argument("fit: validation data needs both x and y");
  if (x_val) check_data(*x_val, y_val, "fit (validation_data)");
  if (opt.epochs < 0) throw std::invalid_argument("fit: epochs must be >= 0");
  if (opt.initial_epoch < 0) throw std::invalid_argument("fit: initial_epoch must be >= 0");
  if (opt.batch_size == 0) throw std::invalid_argument("fit: batch_size must be positive");
  if (opt.check_every == 0) throw std::invalid_argument("fit: check_every must be positive");
  if (opt.validation_freq <= 0) throw std::invalid_argument("fit: validation_freq must be positive");
  if (opt.validation_batch_size == 0)
    throw std::invalid_argument("fit: validation_batch_size must be positive");
  if (output_ == input_) throw std::invalid_argument("fit: the model has no layers to train");
  const std::size_t n = x.shape()[0];
  check_weights(opt.sample_weight, n, "fit: sample_weight");
  if (x_val) check_weights(opt.validation_sample_weight, x_val->shape()[0], "fit: validation sample_weight");
  else if (!opt.validation_sample_weight.empty())
    throw std::invalid_argument("fit: validation sample weights need validation data");
  const Targets targets_all = targets(y, "fit");
  if (x_val) targets(*y_val, "fit (validation_data)");
  const std::size_t classes = output_shape().back();
  if (!opt.class_weight.empty() && distillation_.enabled)
    throw std::invalid_argument("fit: class_weight is not supported with distillation; pass "
                                "sample_weight (it weights both terms of the loss)");
  if (!opt.class_weight.empty()) {
    if (!opt.sample_weight.empty())
      throw std::invalid_argument("fit: class_weight and sample_weight cannot both be given");
    if (loss_ == Loss::MSE || loss_ == Loss::MAE)
      throw std::invalid_argument("fit: class_weight needs a classification loss, not " + loss_name(loss_));
    const std::size_t need = loss_ == Loss::BinaryCrossentropy ? 2 : classes;
    if (opt.class_weight.size() != need || output_shape().size() != 1 ||
        (loss_ == Loss::BinaryCrossentropy && classes != 1))
      throw std::invalid_argument("fit: class_weight needs one weight per class (" + std::to_string(need) +
                                  ") for a model with outputs " + shape_str(output_shape(), true));
    for (float c : opt.class_weight)
      if (!(std::isfinite(c) && c >= 0.0f))
        throw std::invalid_argument("fit: class_weight " + std::to_string(c) + " is not a finite number >= 0");
  }
  // The loss weight of every sample: given, or its class's weight (Keras turns class_weight into
  // sample weights the same way); empty when unweighted.
  std::vector<float> weight_all = opt.sample_weight;
  if (!opt.class_weight.empty()) {
    weight_all.resize(n);
    for (std::size_t r = 0; r < n; ++r) {
      const float* yr = y.data() + r * classes;
      std::size_t c;
      if (!targets_all.labels.empty()) c = std::size_t(targets_all.labels[r]);
      else if (loss_ == Loss::BinaryCrossentropy) c = y.data()[r] > 0.5f ? 1 : 0;
      else c = std::size_t(std::max_element(yr, yr + classes) - yr);
      weight_all[r] = opt.class_weight[c];
    }
  }

  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  Random rng(opt.seed ^ 0x9E3779B97F4A7C15ull);
  std::vector<Param> params = all_params();
  // wants[i]: node i's output depends on a trainable parameter, so its gradient is needed;
  // the backward runs only through such nodes (frozen prefixes cost no backward work).
  std::vector<char> wants(nodes_.size(), 0);
  for (int i : path_) {
    const Node& nd = nodes_[i];
    if (!nd.layer) continue;
    wants[i] = !frozen(nd.layer.get()) && !nd.layer->params().empty();
    for (int j : nd.inputs) wants[i] |= wants[j];
  }
  const std::vector<std::string> names = metric_names();
  std::vector<Tensor> acts, grads(nodes_.size());
  std::vector<const Tensor*> in;
  std::vector<Tensor*> din;
  Tensor xb, yb;
  std::vector<std::int32_t> lb;
  std::vector<float> wb;
  History hist;
  std::size_t batches_seen = 0;

  for (int epoch = opt.initial_epoch; epoch < opt.epochs; ++epoch) {
    if (opt.shuffle) rng.shuffle(order);
    double loss_sum = 0.0, part_sum[2] = {0.0, 0.0};
    std::vector<double> metric_sum(metrics_.size(), 0.0);
    std::size_t seen = 0;  // samples of this epoch trained on
    // The epoch's logs so far: means over its samples (each batch's value weighted by its size).
    auto running_logs = [&] {
      Logs logs{{"loss", float(loss_sum / double(seen))}};
      for (std::size_t k = 0; k < metrics_.size(); ++k) logs[names[k]] = float(metric_sum[k] / double(seen));
      if (distillation_.enabled) {
        logs["student_loss"] = float(part_sum[0] / double(seen));
        logs["distillation_loss"] = float(part_sum[1] / double(seen));
      }
      return logs;
    };
    bool stop = false;
    for (std::size_t begin = 0, batch = 0; begin < n && !stop; begin += opt.batch_size, ++batch) {
      if (opt.batch_begin) opt.batch_begin(int(batch));
      const std::size_t end = begin + std::min(opt.batch_size, n - begin), bs = end - begin;
      gather(x, order, begin, end, xb);
      gather(y, order, begin, end, yb);
      const std::int32_t* labels = nullptr;
      if (!targets_all.labels.empty()) {
        lb.resize(bs);
        for (std::size_t r = begin; r < end; ++r) lb[r - begin] = targets_all.labels[order[r]];
        labels = lb.data();
      }
      const float* weights = nullptr;
      if (!weight_all.empty()) {
        wb.resize(bs);
        for (std::size_t r = begin; r < end; ++r) wb[r - begin] = weight_all[order[r]];
        weights = wb.data();
      }
      run_forward(xb, acts, true);
      const Tensor& pred = acts[output_];
      double parts[2] = {0.0, 0.0};
      loss_sum += double(loss_value(pred, yb.data(), labels, weights, parts)) * double(bs);
      part_sum[0] += parts[0] * double(bs);
      part_sum[1] += parts[1] * double(bs);
      for (std::size_t k = 0; k < metrics_.size(); ++k)
        metric_sum[k] += double(metric_value(metrics_[k], pred, yb.data(), labels)) * double(bs);

      // Backward in reverse graph order; every gradient accumulates, so a node read by several
      // layers (a residual branch) receives the sum.
      for (Param& p : params) std::fill(p.grad, p.grad + p.size, 0.0f);
      // Reuse the gradient buffers (a fresh large allocation per batch costs page faults).
      for (int i : path_)
        if (wants[i]) {
          if (grads[i].shape() != acts[i].shape()) grads[i].resize(acts[i].shape());
          std::fill(grads[i].begin(), grads[i].end(), 0.0f);
        }
      if (wants[output_]) loss_gradient(grads[output_], pred, yb.data(), labels, weights);
      loss_sum += double(regularization(true)) * double(bs);  // before the step, as Keras logs it
      for (auto it = path_.rbegin(); it != path_.rend(); ++it) {
        const Node& nd = nodes_[*it];
        if (!nd.layer || !wants[*it]) continue;
        in.clear();
        din.clear();
        for (int j : nd.inputs) {
          in.push_back(j == input_ ? &xb : &acts[j]);
          din.push_back(wants[j] ? &grads[j] : nullptr);
        }
        nd.layer->param_grads = !frozen(nd.layer.get());
        nd.layer->backward(in, acts[*it], grads[*it], din);
      }
      optimizer_->step(params);
      seen += bs;

      if (opt.batch_end && !opt.batch_end(int(batch), running_logs())) stop = true;
      if (opt.callback && ++batches_seen % opt.check_every == 0 && !opt.callback(-1, {})) {
        hist.stopped = true;
        return hist;
      }
    }
    Logs logs = running_logs();
    if (x_val && (epoch + 1) % opt.validation_freq == 0) {
      if (opt.test_begin) opt.test_begin();
      const std::vector<float> v = evaluate(*x_val, *y_val, opt.validation_batch_size,
                                            opt.validation_sample_weight);
      Logs val{{"loss", v[0]}};
      for (std::size_t k = 0; k < metrics_.size(); ++k) val[names[k]] = v[k + 1];
      if (distillation_.enabled) {
        val["student_loss"] = v[metrics_.size() + 1];
        val["distillation_loss"] = v[metrics_.size() + 2];
      }
      if (opt.test_end) opt.test_end(val);
      for (const auto& [key, value] : val) logs["val_" + key] = value;
    }
    for (const auto& [key, value] : logs) hist.history[key].push_back(value);
    hist.epochs_run = epoch + 1 - opt.initial_epoch;
    if ((opt.callback && !opt.callback(epoch, logs)) || stop) {
      hist.stopped = true;
      break;
    }
  }
  return hist;
}

void Sequential::add(std::unique_ptr<Layer> layer) {
  if (!layer) throw std::invalid_argument("Sequential.add: expected a layer, got null");
  if (built()) throw std::logic_error("Sequential.add: the model is already built");
  layers_.push_back(std::move(layer));
}

void Sequential::build(const Shape& input_shape, std::uint64_t seed) {
  if (layers_.empty()) throw std::logic_error("Sequential.build: the model has no layers");
  if (built()) throw std::logic_error("Sequential.build: the model is already built");
  int prev = add_input(input_shape);
  for (auto& l : layers_) prev = add_node(l, {prev});
  set_output(prev);
  Model::build(seed);
}

History Sequential::fit(const Tensor& x, const Tensor& y, const FitOptions& options,
                        const Tensor* x_val, const Tensor* y_val) {
  if (!compiled()) throw std::logic_error("fit: call compile() before fit()");
  if (!built()) {
    if (x.dimension() < 2) throw std::invalid_argument("fit: expected x of shape (N, features...)");
    build(sample_shape(x), options.seed);
  }
  return Model::fit(x, y, options, x_val, y_val);
}

}  // namespace tinylearn
