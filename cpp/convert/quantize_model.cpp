// Post-training int8 quantization of a trained model into a QGraph (tinylearn/convert/qgraph.h),
// following TFLite's converter: BatchNormalization folded into the conv/dense before it,
// ReLU/ReLU6 fused, per-channel symmetric conv weights, per-tensor symmetric dense weights,
// int32 biases with scale input_scale * weight_scale, activation ranges from calibration.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

#include "tinylearn/convert/convert.h"
#include "tinylearn/convert/qgraph.h"
#include "tinylearn/train/cnn_layers.h"
#include "tinylearn/train/fake_quant.h"

namespace tinylearn {

namespace {

std::vector<std::int32_t> batch1(const Shape& s) {
  std::vector<std::int32_t> d{1};
  for (std::size_t v : s) d.push_back(std::int32_t(v));
  return d;
}

template <class T>
std::vector<std::uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<std::uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

class Quantizer {
 public:
  Quantizer(Model& model, const Tensor& rep) : model_(model) {
    if (!model.built())
      throw std::logic_error("convert: the model has no weights yet (train or build it first)");
    for (int i : model.path())
      for (int j : model.node(std::size_t(i)).inputs) ++consumers_[j];
    for (int i : model.path())
      if (as<FakeQuant>(i)) qat_ = true;
    if (!qat_ && (rep.dimension() == 0 || rep.shape()[0] == 0))
      throw std::invalid_argument("convert: representative data is empty (0 samples)");
    if (qat_)
      learned_ranges();
    else
      calibrate(rep);
  }

  QGraph run() {
    const int in = model_.input_node();
    value_[in] = add_activation("input", model_.input_shape(), range(in));
    g_.inputs = {value_[in]};
    for (int i : model_.path()) {
      if (i == in || absorbed_.count(i)) continue;
      node(i);
    }
    const auto it = value_.find(model_.output_node());
    if (it == value_.end() || it->second == value_[in])
      throw std::invalid_argument("convert: the model's output is its input; nothing to quantize");
    g_.outputs = {it->second};
    return std::move(g_);
  }

 private:
  const Model::Node& nd(int i) const { return model_.node(std::size_t(i)); }
  std::string layer_name(int i) const { return "layer '" + nd(i).layer->name + "' (" + nd(i).layer->kind() + ")"; }

  // Every node's output range (and the logits' range of a Dense with softmax) over the
  // representative data, run in batches so that a large calibration set costs little memory.
  void calibrate(const Tensor& rep) {
    const std::size_t n = rep.shape()[0], row = rep.size() / n, batch = 256;
    for (std::size_t s = 0; s < n; s += batch) {
      const std::size_t e = std::min(n, s + batch);
      std::vector<std::size_t> shape(rep.shape().begin(), rep.shape().end());
      shape[0] = e - s;
      Tensor xb(shape);
      std::copy(rep.data() + s * row, rep.data() + e * row, xb.data());
      // forward_all validates the shape and the finiteness of the data.
      const std::vector<Tensor> acts = model_.forward_all(xb);
      for (std::size_t i = 0; i < acts.size(); ++i) {
        if (acts[i].size() == 0) continue;
        const auto [lo, hi] = std::minmax_element(acts[i].begin(), acts[i].end());
        extend(int(i), *lo, *hi);
      }
      for (int i : model_.path()) {  // a Dense with softmax: its logits, x . kernel + bias
        const auto* d = as<Dense>(i);
        if (!d || d->activation() != Activation::Softmax) continue;
        const Tensor& x = acts[std::size_t(nd(i).inputs[0])];
        const std::size_t C = d->input_features(), OC = d->units(), rows = x.size() / C;
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t o = 0; o < OC; ++o) {
            double z = d->use_bias() ? d->bias(o) : 0.0;
            for (std::size_t c = 0; c < C; ++c) z += double(x.data()[r * C + c]) * d->kernel(c, o);
            extend(kLogits - i, float(z), float(z));
          }
      }
    }
  }
  // A quantization-aware model: each tensor's parameters are those its FakeQuant learned in
  // training (the node it follows gets them; the FakeQuant itself is the identity here).
  void learned_ranges() {
    for (int i : model_.path()) {
      const auto* fq = as<FakeQuant>(i);
      if (!fq || fq->mode() != FakeQuant::Mode::MovingAverage) continue;
      if (fq->steps() == 0)
        throw std::invalid_argument("convert: layer '" + fq->name +
                                    "' (FakeQuant) has no activation range yet; fit the "
                                    "quantization-aware model before converting it");
      const QuantParams q = fq->params();
      params_[i] = q;
      params_[nd(i).inputs[0]] = q;
    }
  }

  void extend(int key, float lo, float hi) {
    auto [it, fresh] = ranges_.try_emplace(key, lo, hi);
    if (!fresh) it->second = {std::min(it->second.first, lo), std::max(it->second.second, hi)};
  }
  static constexpr int kLogits = -1;  // ranges_ key of node i's logits: kLogits - i

  QuantParams range(int node) const {
    if (qat_) {
      const auto p = params_.find(node);
      if (p == params_.end())
        throw std::invalid_argument("convert: the quantization-aware model has no FakeQuant after " +
                                    (node < 0 ? layer_name(kLogits - node) + "'s logits"
                                              : node == model_.input_node() ? std::string("the input")
                                                                            : layer_name(node)) +
                                    "; make it with tl.optimize.quantize_model");
      return p->second;
    }
    const auto& r = ranges_.at(node);
    return choose_activation_params(r.first, r.second);
  }

  int add_tensor(QTensor t) {
    g_.tensors.push_back(std::move(t));
    return int(g_.tensors.size()) - 1;
  }
  int add_activation(const std::string& name, const Shape& shape, QuantParams q) {
    QTensor t;
    t.name = name;
    t.shape = batch1(shape);
    t.scale = {q.scale};
    t.zero_point = {q.zero_point};
    return add_tensor(std::move(t));
  }
  QuantParams params_of(int tensor) const {
    const QTensor& t = g_.tensors[std::size_t(tensor)];
    return {t.scale[0], std::int32_t(t.zero_point[0])};
  }

  // The only consumer of node i on the path (-1 if none or several, or i is the output).
  int sole_consumer(int i) const {
    if (i == model_.output_node()) return -1;
    const auto c = consumers_.find(i);
    if (c == consumers_.end() || c->second != 1) return -1;
    for (int j : model_.path())
      for (int k : nd(j).inputs)
        if (k == i) return j;
    return -1;
  }
  template <class L>
  const L* as(int i) const { return i < 0 || !nd(i).layer ? nullptr : dynamic_cast<const L*>(nd(i).layer.get()); }

  // A ReLU/ReLU6 activation layer right after node `end`, fused into its producer.
  std::string fuse_activation(int& end, Activation own) {
    if (own == Activation::ReLU) return "RELU";
    if (own == Activation::ReLU6) return "RELU6";
    const int next = sole_consumer(end);
    if (const auto* a = as<ActivationLayer>(next)) {
      if (a->activation() == Activation::ReLU || a->activation() == Activation::ReLU6) {
        absorbed_.insert(next);
        end = next;
        return a->activation() == Activation::ReLU ? "RELU" : "RELU6";
      }
    }
    return "NONE";
  }

  // Folds a BatchNormalization that only follows node `end` into (kernel, bias), per output
  // channel c: kernel *= gamma / sqrt(var + eps); bias = (bias - mean) * gamma / sqrt(var + eps) + beta.
  // `scale_kernel(c, k)` multiplies the kernel values of channel c by k.
  template <class Visit>
  void fold_batchnorm(int& end, std::vector<float>& bias, std::size_t channels, Visit scale_kernel) {
    const int next = sole_consumer(end);
    const auto* bn = as<BatchNormalization>(next);
    if (!bn) return;
    if (bn->channels() != channels) return;
    for (std::size_t c = 0; c < channels; ++c) {
      const float gamma = bn->scale() ? bn->gamma(c) : 1.0f;
      const float beta = bn->center() ? bn->beta(c) : 0.0f;
      const float k = gamma / std::sqrt(bn->moving_variance(c) + bn->epsilon());
      scale_kernel(c, k);
      bias[c] = (bias[c] - bn->moving_mean(c)) * k + beta;
    }
    absorbed_.insert(next);
    end = next;
  }

  // Symmetric int8 weights: scale = max|w| / 127 per channel (or per tensor), values in
  // [-127, 127]; `channel(i)` gives the channel of flat element i.
  template <class Channel>
  int add_weights(const std::string& name, const std::vector<std::int32_t>& shape,
                  const std::vector<float>& w, std::size_t channels, int qdim, Channel channel) {
    std::vector<float> mx(channels, 0.0f);
    for (std::size_t i = 0; i < w.size(); ++i) {
      if (!std::isfinite(w[i]))
        throw std::invalid_argument("convert: " + name + " has a non-finite weight");
      float& m = mx[channel(i)];
      m = std::max(m, std::fabs(w[i]));
    }
    QTensor t;
    t.name = name;
    t.shape = shape;
    t.constant = true;
    t.quantized_dimension = qdim;
    for (float m : mx) {  // the scales and values that QAT's fake_quant_weights simulates
      t.scale.push_back(weight_scale(m, 8));
      t.zero_point.push_back(0);
    }
    std::vector<std::int8_t> q(w.size());  // std::round: halves away from zero, as TFLite
    for (std::size_t i = 0; i < w.size(); ++i)
      q[i] = std::int8_t(quantize_weight(w[i], t.scale[channel(i)], 8));
    t.data = bytes_of(q);
    return add_tensor(std::move(t));
  }

  // int32 bias with scale input_scale * weight_scale[c] (a float product, as TFLite).
  int add_bias(const std::string& name, const std::vector<float>& b, float in_scale,
               const std::vector<float>& w_scale) {
    QTensor t;
    t.name = name;
    t.type = QType::Int32;
    t.shape = {std::int32_t(b.size())};
    t.constant = true;
    std::vector<std::int32_t> q(b.size());
    // One scale per weight scale: per tensor for dense layers, per channel for convolutions.
    for (float ws : w_scale) {
      t.scale.push_back(in_scale * ws);
      t.zero_point.push_back(0);
    }
    for (std::size_t c = 0; c < b.size(); ++c) {
      const float s = t.scale[t.scale.size() == 1 ? 0 : c];
      const double v = std::round(double(b[c]) / double(s));
      q[c] = std::int32_t(std::clamp(v, -2147483647.0, 2147483647.0));
    }
    t.data = bytes_of(q);
    return add_tensor(std::move(t));
  }

  void emit(QOp op, int i_out_node, int out_tensor) {
    op.outputs = {out_tensor};
    g_.ops.push_back(std::move(op));
    value_[i_out_node] = out_tensor;
  }

  // The operator writing tensor t (-1 for a graph input).
  int producer_of(int t) const {
    for (std::size_t k = 0; k < g_.ops.size(); ++k)
      for (int o : g_.ops[k].outputs)
        if (o == t) return int(k);
    return -1;
  }

  int input_of(int i, std::size_t k = 0) const { return value_.at(nd(i).inputs.at(k)); }

  void node(int i) {
    const Layer* l = nd(i).layer.get();
    const std::string name = l->name;
    if (const auto* d = dynamic_cast<const Dense*>(l)) return dense(i, *d);
    if (const auto* c = dynamic_cast<const Conv2D*>(l)) return conv(i, *c);
    if (const auto* c = dynamic_cast<const DepthwiseConv2D*>(l)) return depthwise(i, *c);
    if (const auto* p = dynamic_cast<const Pooling2D*>(l)) {
      QOp op;
      op.op = dynamic_cast<const MaxPooling2D*>(l) ? "MAX_POOL_2D" : "AVERAGE_POOL_2D";
      op.inputs = {input_of(i)};
      op.filter_h = int(p->pool_size()[0]);
      op.filter_w = int(p->pool_size()[1]);
      op.stride_h = int(p->strides()[0]);
      op.stride_w = int(p->strides()[1]);
      op.padding = p->padding() == ops::Padding::Same ? "SAME" : "VALID";
      // TFLite's pools keep the input's quantization.
      return emit(op, i, add_activation(name, nd(i).shape, params_of(op.inputs[0])));
    }
    if (const auto* gap = dynamic_cast<const GlobalAveragePooling2D*>(l)) {
      QTensor axes;
      axes.name = name + "/axes";
      axes.type = QType::Int32;
      axes.shape = {2};
      axes.constant = true;
      axes.data = bytes_of(std::vector<std::int32_t>{1, 2});
      QOp op;
      op.op = "MEAN";
      op.inputs = {input_of(i), add_tensor(std::move(axes))};
      op.keep_dims = gap->keepdims();
      return emit(op, i, add_activation(name, nd(i).shape, range(i)));
    }
    if (dynamic_cast<const Flatten*>(l) || dynamic_cast<const Reshape*>(l)) {
      QTensor shape;
      shape.name = name + "/shape";
      shape.type = QType::Int32;
      std::vector<std::int32_t> s = batch1(nd(i).shape);
      s[0] = -1;
      shape.shape = {std::int32_t(s.size())};
      shape.constant = true;
      shape.data = bytes_of(s);
      QOp op;
      op.op = "RESHAPE";
      op.inputs = {input_of(i), add_tensor(std::move(shape))};
      return emit(op, i, add_activation(name, nd(i).shape, params_of(op.inputs[0])));
    }
    if (dynamic_cast<const Dropout*>(l) || dynamic_cast<const FakeQuant*>(l)) {  // identities here
      value_[i] = input_of(i);
      return;
    }
    if (dynamic_cast<const Add*>(l)) {
      QOp op;
      op.op = "ADD";
      for (std::size_t k = 0; k < nd(i).inputs.size(); ++k) op.inputs.push_back(input_of(i, k));
      if (op.inputs.size() != 2)
        throw std::invalid_argument("convert: " + layer_name(i) + " adds " +
                                    std::to_string(op.inputs.size()) +
                                    " inputs; the int8 ADD takes exactly 2 (chain Add layers)");
      int end = i;
      op.fused_activation = fuse_activation(end, Activation::Linear);
      return emit(op, end, add_activation(name, nd(end).shape, range(end)));
    }
    if (dynamic_cast<const Concatenate*>(l)) {
      QOp op;
      op.op = "CONCATENATION";
      for (std::size_t k = 0; k < nd(i).inputs.size(); ++k) op.inputs.push_back(input_of(i, k));
      op.axis = int(nd(i).shape.size());  // the last axis, counting the batch
      // TFLite's int8 concatenation is a copy: every input has the output's quantization. An
      // input that only feeds this layer and comes from an operator that sets its own output
      // scale takes the output's; any other is requantized by an int8 QUANTIZE first.
      const QuantParams q = range(i);
      for (std::size_t k = 0; k < op.inputs.size(); ++k) {
        const int t = op.inputs[k];
        if (params_of(t).scale == q.scale && params_of(t).zero_point == q.zero_point) continue;
        const int producer = producer_of(t);
        static const std::set<std::string> free_scale{"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D",
                                                      "MEAN", "ADD", "RELU", "RELU6"};
        // (Not in a quantization-aware model, whose producer was trained with its own scale.)
        if (!qat_ && producer >= 0 && free_scale.count(g_.ops[std::size_t(producer)].op) &&
            consumers_.at(nd(i).inputs[k]) == 1 && t != g_.inputs[0]) {
          g_.tensors[std::size_t(t)].scale = {q.scale};
          g_.tensors[std::size_t(t)].zero_point = {q.zero_point};
          continue;
        }
        QOp rq;
        rq.op = "QUANTIZE";
        rq.inputs = {t};
        rq.outputs = {add_activation(name + "/requantize" + std::to_string(k),
                                     nd(nd(i).inputs[k]).shape, q)};
        op.inputs[k] = rq.outputs[0];
        g_.ops.push_back(std::move(rq));
      }
      return emit(op, i, add_activation(name, nd(i).shape, q));
    }
    if (const auto* a = dynamic_cast<const ActivationLayer*>(l)) {
      QOp op;
      op.inputs = {input_of(i)};
      switch (a->activation()) {
        case Activation::Linear: value_[i] = op.inputs[0]; return;
        case Activation::ReLU: op.op = "RELU"; break;
        case Activation::ReLU6: op.op = "RELU6"; break;
        case Activation::Softmax: return softmax(i, op.inputs[0], name);
        default:
          throw std::invalid_argument("convert: " + layer_name(i) + " (activation '" +
                                      activation_name(a->activation()) +
                                      "') has no int8 kernel; int8 models support relu, relu6 and softmax");
      }
      return emit(op, i, add_activation(name, nd(i).shape, range(i)));
    }
    if (dynamic_cast<const BatchNormalization*>(l))
      throw std::invalid_argument("convert: " + layer_name(i) +
                                  " does not directly follow a Conv2D, DepthwiseConv2D or Dense "
                                  "layer (with no activation), so it cannot be folded into one; "
                                  "int8 models have no separate batch normalization");
    throw std::invalid_argument("convert: " + layer_name(i) + " has no int8 kernel");
  }

  // SOFTMAX: TFLite's int8 softmax output has scale 1/256 and zero point -128.
  void softmax(int i, int in_tensor, const std::string& name) {
    QOp op;
    op.op = "SOFTMAX";
    op.inputs = {in_tensor};
    emit(op, i, add_activation(name, nd(i).shape, {1.0f / 256.0f, -128}));
  }

  void check_activation(int i, Activation a, bool allow_softmax) {
    if (a == Activation::Linear || a == Activation::ReLU || a == Activation::ReLU6) return;
    if (allow_softmax && a == Activation::Softmax) return;
    throw std::invalid_argument("convert: " + layer_name(i) + " uses activation '" +
                                activation_name(a) +
                                "', which has no int8 kernel (int8 models support relu, relu6"
                                " and softmax on Dense)");
  }

  void dense(int i, const Dense& d) {
    check_activation(i, d.activation(), true);
    const std::size_t C = d.input_features(), OC = d.units();
    std::vector<float> w(OC * C), b(OC, 0.0f);  // [out, in], the TFLite layout
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t o = 0; o < OC; ++o) w[o * C + c] = d.kernel(c, o);
    if (d.use_bias())
      for (std::size_t o = 0; o < OC; ++o) b[o] = d.bias(o);
    int end = i;
    if (d.activation() == Activation::Linear)
      fold_batchnorm(end, b, OC, [&](std::size_t o, float k) {
        for (std::size_t c = 0; c < C; ++c) w[o * C + c] *= k;
      });
    const std::string fused = d.activation() == Activation::Softmax
                                  ? "NONE" : fuse_activation(end, d.activation());
    QOp op;
    op.op = "FULLY_CONNECTED";
    const int in = input_of(i);
    const int wt = add_weights(d.name + "/kernel", {std::int32_t(OC), std::int32_t(C)}, w, 1, 0,
                               [](std::size_t) { return std::size_t(0); });
    const int bt = add_bias(d.name + "/bias", b, params_of(in).scale, g_.tensors[std::size_t(wt)].scale);
    op.inputs = {in, wt, bt};
    op.fused_activation = fused;
    if (d.activation() != Activation::Softmax)
      return emit(op, end, add_activation(d.name, nd(end).shape, range(end)));
    // Dense with softmax: the logits' range, calibrated from the layer's input and weights.
    emit(op, i, add_activation(d.name + "/logits", nd(i).shape, range(kLogits - i)));
    softmax(i, value_[i], d.name);
  }

  void conv(int i, const Conv2D& cv) {
    check_activation(i, cv.activation(), false);
    const std::size_t KH = cv.kernel_size()[0], KW = cv.kernel_size()[1];
    const std::size_t C = cv.kernel.shape()[2], OC = cv.filters();
    std::vector<float> w(OC * KH * KW * C), b(OC, 0.0f);  // OHWI from Keras's (KH, KW, C, OC)
    for (std::size_t kh = 0; kh < KH; ++kh)
      for (std::size_t kw = 0; kw < KW; ++kw)
        for (std::size_t c = 0; c < C; ++c)
          for (std::size_t o = 0; o < OC; ++o)
            w[((o * KH + kh) * KW + kw) * C + c] = cv.kernel(kh, kw, c, o);
    if (cv.use_bias())
      for (std::size_t o = 0; o < OC; ++o) b[o] = cv.bias(o);
    const std::size_t per = KH * KW * C;
    int end = i;
    if (cv.activation() == Activation::Linear)
      fold_batchnorm(end, b, OC, [&](std::size_t o, float k) {
        for (std::size_t j = 0; j < per; ++j) w[o * per + j] *= k;
      });
    QOp op;
    op.op = "CONV_2D";
    op.fused_activation = fuse_activation(end, cv.activation());
    op.stride_h = int(cv.strides()[0]);
    op.stride_w = int(cv.strides()[1]);
    op.padding = cv.padding() == ops::Padding::Same ? "SAME" : "VALID";
    const int in = input_of(i);
    const int wt = add_weights(cv.name + "/kernel",
                               {std::int32_t(OC), std::int32_t(KH), std::int32_t(KW), std::int32_t(C)},
                               w, OC, 0, [per](std::size_t j) { return j / per; });
    const int bt = add_bias(cv.name + "/bias", b, params_of(in).scale, g_.tensors[std::size_t(wt)].scale);
    op.inputs = {in, wt, bt};
    emit(op, end, add_activation(cv.name, nd(end).shape, range(end)));
  }

  void depthwise(int i, const DepthwiseConv2D& cv) {
    check_activation(i, cv.activation(), false);
    const std::size_t KH = cv.kernel_size()[0], KW = cv.kernel_size()[1];
    const std::size_t C = cv.kernel.shape()[2], M = cv.depth_multiplier(), OC = C * M;
    // [1, KH, KW, C*M] from Keras's (KH, KW, C, M): the same order in memory.
    std::vector<float> w(cv.kernel.begin(), cv.kernel.end()), b(OC, 0.0f);
    if (cv.use_bias())
      for (std::size_t o = 0; o < OC; ++o) b[o] = cv.bias(o);
    int end = i;
    if (cv.activation() == Activation::Linear)
      fold_batchnorm(end, b, OC, [&](std::size_t o, float k) {
        for (std::size_t j = o; j < w.size(); j += OC) w[j] *= k;
      });
    QOp op;
    op.op = "DEPTHWISE_CONV_2D";
    op.fused_activation = fuse_activation(end, cv.activation());
    op.stride_h = int(cv.strides()[0]);
    op.stride_w = int(cv.strides()[1]);
    op.padding = cv.padding() == ops::Padding::Same ? "SAME" : "VALID";
    op.depth_multiplier = int(M);
    const int in = input_of(i);
    const int wt = add_weights(cv.name + "/depthwise_kernel",
                               {1, std::int32_t(KH), std::int32_t(KW), std::int32_t(OC)}, w, OC, 3,
                               [OC](std::size_t j) { return j % OC; });
    const int bt = add_bias(cv.name + "/bias", b, params_of(in).scale, g_.tensors[std::size_t(wt)].scale);
    op.inputs = {in, wt, bt};
    emit(op, end, add_activation(cv.name, nd(end).shape, range(end)));
  }

  Model& model_;
  std::map<int, std::pair<float, float>> ranges_;  // calibrated (min, max) per node
  bool qat_ = false;                  // a quantization-aware model: parameters from its FakeQuants
  std::map<int, QuantParams> params_;  // learned parameters per node (qat_)
  std::map<int, int> consumers_, value_;
  std::set<int> absorbed_;
  QGraph g_;
};

}  // namespace

std::size_t QTensor::elements() const {
  std::size_t n = 1;
  for (std::int32_t d : shape) n *= std::size_t(d < 0 ? 0 : d);
  return n;
}

const std::vector<std::string>& supported_ops() {
  static const std::vector<std::string> ops{
      "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D",
      "MEAN", "ADD", "CONCATENATION", "SOFTMAX", "RESHAPE", "RELU", "RELU6", "QUANTIZE",
      "DEQUANTIZE"};
  return ops;
}

QGraph quantize(Model& model, const Tensor& representative) {
  return Quantizer(model, representative).run();
}

}  // namespace tinylearn
