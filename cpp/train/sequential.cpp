#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "tinylearn/train/model.h"
#include "tinylearn/train/ops.h"

namespace tinylearn {

namespace {

std::string shape_str(const Matrix& m) {
  return "(" + std::to_string(m.shape()[0]) + ", " + std::to_string(m.shape()[1]) + ")";
}

float metric_value(Metric m, const float* pred, const float* target, std::size_t n) {
  return m == Metric::MAE ? ops::mae_forward(pred, target, n) : ops::mse_forward(pred, target, n);
}

// Rows `idx[begin, end)` of `src` into `dst`.
void gather_rows(const Matrix& src, const std::vector<std::size_t>& idx, std::size_t begin,
                 std::size_t end, Matrix& dst) {
  const std::size_t cols = src.shape()[1];
  dst.resize({end - begin, cols});
  for (std::size_t r = begin; r < end; ++r)
    std::memcpy(dst.data() + (r - begin) * cols, src.data() + idx[r] * cols, cols * sizeof(float));
}

}  // namespace

void Sequential::add(std::unique_ptr<Layer> layer) {
  if (!layer) throw std::invalid_argument("Sequential.add: expected a layer, got null");
  if (built_) throw std::logic_error("Sequential.add: the model is already built");
  layers_.push_back(std::move(layer));
}

void Sequential::build(std::size_t input_features, std::uint64_t seed) {
  if (layers_.empty()) throw std::logic_error("Sequential.build: the model has no layers");
  Random rng(seed);
  std::size_t features = input_features;
  for (auto& layer : layers_) {
    layer->build(features, rng);
    features = layer->output_features();
  }
  built_ = true;
}

void Sequential::compile(std::unique_ptr<Optimizer> optimizer, Loss loss,
                         std::vector<Metric> metrics) {
  if (!optimizer) throw std::invalid_argument("compile: expected an optimizer, got null");
  optimizer_ = std::move(optimizer);
  loss_ = loss;
  metrics_ = std::move(metrics);
}

std::size_t Sequential::input_features() const {
  if (!built_) throw std::logic_error("the model is not built yet");
  return layers_.front()->input_features();
}

std::size_t Sequential::output_features() const {
  if (!built_) throw std::logic_error("the model is not built yet");
  return layers_.back()->output_features();
}

std::size_t Sequential::param_count() {
  std::size_t n = 0;
  for (auto& l : layers_) n += l->param_count();
  return n;
}

std::vector<std::string> Sequential::metric_names() const {
  std::vector<std::string> names;
  for (Metric m : metrics_) names.push_back(m == Metric::MAE ? "mae" : "mse");
  return names;
}

std::vector<Param> Sequential::all_params() {
  std::vector<Param> all;
  for (auto& l : layers_)
    for (const Param& p : l->params()) all.push_back(p);
  return all;
}

void Sequential::check_data(const Matrix& x, const Matrix* y, const char* what) const {
  if (!built_) throw std::logic_error(std::string(what) + ": the model is not built yet");
  const std::size_t in = input_features(), out = output_features();
  if (x.shape()[0] == 0) throw std::invalid_argument(std::string(what) + ": x is empty (0 samples)");
  if (x.shape()[1] != in)
    throw std::invalid_argument(std::string(what) + ": expected x of shape (N, " +
                                std::to_string(in) + "), got " + shape_str(x));
  if (!std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); }))
    throw std::invalid_argument(std::string(what) + ": x contains NaN or infinity");
  if (!y) return;
  if (y->shape()[0] != x.shape()[0] || y->shape()[1] != out)
    throw std::invalid_argument(std::string(what) + ": expected y of shape (" +
                                std::to_string(x.shape()[0]) + ", " + std::to_string(out) +
                                ") to match x, got " + shape_str(*y));
  if (!std::all_of(y->begin(), y->end(), [](float v) { return std::isfinite(v); }))
    throw std::invalid_argument(std::string(what) + ": y contains NaN or infinity");
}

std::vector<Matrix> Sequential::forward_all(const Matrix& x) const {
  check_data(x, nullptr, "forward");
  std::vector<Matrix> acts(layers_.size());
  const Matrix* in = &x;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->forward(*in, acts[i]);
    in = &acts[i];
  }
  return acts;
}

Matrix Sequential::predict(const Matrix& x, std::size_t batch_size) const {
  check_data(x, nullptr, "predict");
  if (batch_size == 0) throw std::invalid_argument("predict: batch_size must be positive");
  const std::size_t n = x.shape()[0], in = x.shape()[1], out = output_features();
  Matrix result({n, out});
  std::vector<Matrix> acts(layers_.size());
  Matrix xb;
  for (std::size_t begin = 0; begin < n; begin += batch_size) {
    const std::size_t end = std::min(n, begin + batch_size);
    xb.resize({end - begin, in});
    std::memcpy(xb.data(), x.data() + begin * in, (end - begin) * in * sizeof(float));
    const Matrix* cur = &xb;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      layers_[i]->forward(*cur, acts[i]);
      cur = &acts[i];
    }
    std::memcpy(result.data() + begin * out, cur->data(), cur->size() * sizeof(float));
  }
  return result;
}

std::vector<float> Sequential::evaluate(const Matrix& x, const Matrix& y,
                                        std::size_t batch_size) const {
  check_data(x, &y, "evaluate");
  const Matrix pred = predict(x, batch_size);
  std::vector<float> out{ops::mse_forward(pred.data(), y.data(), pred.size())};
  for (Metric m : metrics_) out.push_back(metric_value(m, pred.data(), y.data(), pred.size()));
  return out;
}

History Sequential::fit(const Matrix& x, const Matrix& y, const FitOptions& opt,
                        const Matrix* x_val, const Matrix* y_val) {
  if (!optimizer_) throw std::logic_error("fit: call compile() before fit()");
  if (!built_) build(x.shape()[1], opt.seed);
  check_data(x, &y, "fit");
  if ((x_val == nullptr) != (y_val == nullptr))
    throw std::invalid_argument("fit: validation data needs both x and y");
  if (x_val) check_data(*x_val, y_val, "fit (validation_data)");
  if (opt.epochs < 0) throw std::invalid_argument("fit: epochs must be >= 0");
  if (opt.batch_size == 0) throw std::invalid_argument("fit: batch_size must be positive");
  if (opt.check_every == 0) throw std::invalid_argument("fit: check_every must be positive");

  const std::size_t n = x.shape()[0];
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  Random rng(opt.seed ^ 0x9E3779B97F4A7C15ull);
  std::vector<Param> params = all_params();
  const std::vector<std::string> names = metric_names();
  std::vector<Matrix> acts(layers_.size()), grads(layers_.size());
  Matrix xb, yb;
  History hist;
  std::size_t batches_seen = 0;

  for (int epoch = 0; epoch < opt.epochs; ++epoch) {
    if (opt.shuffle) rng.shuffle(order);
    double loss_sum = 0.0;
    std::vector<double> metric_sum(metrics_.size(), 0.0);
    for (std::size_t begin = 0; begin < n; begin += opt.batch_size) {
      const std::size_t end = std::min(n, begin + opt.batch_size), bs = end - begin;
      gather_rows(x, order, begin, end, xb);
      gather_rows(y, order, begin, end, yb);
      const Matrix* in = &xb;
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        layers_[i]->forward(*in, acts[i]);
        in = &acts[i];
      }
      const Matrix& pred = acts.back();
      loss_sum += double(ops::mse_forward(pred.data(), yb.data(), pred.size())) * double(bs);
      for (std::size_t k = 0; k < metrics_.size(); ++k)
        metric_sum[k] += double(metric_value(metrics_[k], pred.data(), yb.data(), pred.size())) * double(bs);

      for (Param& p : params) std::fill(p.grad, p.grad + p.size, 0.0f);
      Matrix& dpred = grads.back();
      dpred = xt::zeros<float>(pred.shape());
      ops::mse_backward(dpred.data(), pred.data(), yb.data(), pred.size());
      for (std::size_t i = layers_.size(); i-- > 0;) {
        const Matrix& layer_in = i == 0 ? xb : acts[i - 1];
        layers_[i]->backward(layer_in, acts[i], grads[i], i == 0 ? nullptr : &grads[i - 1]);
      }
      optimizer_->step(params);

      if (opt.callback && ++batches_seen % opt.check_every == 0 && !opt.callback(-1, {})) {
        hist.stopped = true;
        return hist;
      }
    }
    std::map<std::string, float> logs{{"loss", float(loss_sum / double(n))}};
    for (std::size_t k = 0; k < metrics_.size(); ++k) logs[names[k]] = float(metric_sum[k] / double(n));
    if (x_val) {
      const std::vector<float> v = evaluate(*x_val, *y_val);
      logs["val_loss"] = v[0];
      for (std::size_t k = 0; k < metrics_.size(); ++k) logs["val_" + names[k]] = v[k + 1];
    }
    for (const auto& [key, value] : logs) hist.history[key].push_back(value);
    hist.epochs_run = epoch + 1;
    if (opt.callback && !opt.callback(epoch, logs)) {
      hist.stopped = true;
      break;
    }
  }
  return hist;
}

}  // namespace tinylearn
