// QGraph -> model blob: each operator's parameters computed as TFLite's kernels compute them
// (op_params.h), the tensors the core needs, and the arena plan (tensors whose lifetimes do not
// overlap share bytes; a RESHAPE output aliases its input; elementwise operators run in place
// when their input dies there).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "../micro/nn_types.h"
#include "op_params.h"
#include "tinylearn/convert/convert.h"
#include "tinylearn/convert/qgraph.h"
#include "tinylearn/micro/format.h"

namespace tinylearn {

namespace {

std::string where(const QGraph& g, std::size_t k) {
  return "operator " + std::to_string(k) + " (" + g.ops[k].op + ")";
}

[[noreturn]] void fail(const QGraph& g, std::size_t k, const std::string& what) {
  throw std::invalid_argument(where(g, k) + ": " + what);
}

std::size_t type_size(QType t) { return t == QType::Int8 ? 1 : 4; }

FusedActivation fused(const QGraph& g, std::size_t k) {
  const std::string& a = g.ops[k].fused_activation;
  if (a == "NONE") return FusedActivation::None;
  if (a == "RELU") return FusedActivation::Relu;
  if (a == "RELU6") return FusedActivation::Relu6;
  fail(g, k, "unsupported fused activation '" + a + "' (expected NONE, RELU or RELU6)");
}

Padding padding(const QGraph& g, std::size_t k) {
  const std::string& p = g.ops[k].padding;
  if (p == "SAME") return Padding::Same;
  if (p == "VALID") return Padding::Valid;
  fail(g, k, "padding must be SAME or VALID, got '" + p + "'");
}

class Lowering {
 public:
  Lowering(const QGraph& g, bool trailing, WeightEncoding encoding)
      : g_(g), trailing_(trailing), encoding_(encoding), blob_id_(g.tensors.size(), -1) {}

  std::vector<std::uint8_t> run() {
    validate(g_);
    if (g_.inputs.size() != 1 || g_.outputs.size() != 1)
      throw std::invalid_argument("the int8 core runs graphs with one input and one output, got " +
                                  std::to_string(g_.inputs.size()) + " and " +
                                  std::to_string(g_.outputs.size()));
    // Readers of each tensor, for in-place decisions.
    for (std::size_t k = 0; k < g_.ops.size(); ++k)
      for (int t : g_.ops[k].inputs)
        if (t >= 0) last_reader_[t] = int(k);
    for (std::size_t k = 0; k < g_.ops.size(); ++k) op(k);
    return b_.finish(id(g_.inputs[0]), id(g_.outputs[0]));
  }

 private:
  const QTensor& t(int i) const { return g_.tensors[std::size_t(i)]; }
  QuantParams q(int i) const { return {t(i).scale.at(0), std::int32_t(t(i).zero_point.at(0))}; }

  std::uint8_t blob_type(QType ty) const {
    return ty == QType::Int8 ? TLM_TYPE_INT8 : ty == QType::Int32 ? TLM_TYPE_INT32 : TLM_TYPE_FLOAT32;
  }

  // The blob tensor of graph tensor i (created on first use).
  std::uint16_t id(int i) {
    if (blob_id_[std::size_t(i)] >= 0) return std::uint16_t(blob_id_[std::size_t(i)]);
    const QTensor& x = t(i);
    const float scale = x.scale.size() == 1 ? x.scale[0] : 0.0f;
    const std::int32_t zp = x.zero_point.size() == 1 ? std::int32_t(x.zero_point[0]) : 0;
    std::uint16_t r;
    if (x.constant)
      r = b_.add_const_tensor(blob_type(x.type), x.shape, x.data.data(), {scale, zp});
    else
      r = b_.add_arena_tensor(blob_type(x.type), x.shape, {scale, zp});
    blob_id_[std::size_t(i)] = r;
    return r;
  }

  // The blob tensor of constant int8 weights i, [rows, ...] (FULLY_CONNECTED weights, CONV_2D
  // filter): dense or sparse as encoding_ asks (see lower()).
  std::uint16_t weights_id(int i) {
    const auto known = sparse_id_.find(i);
    if (known != sparse_id_.end()) return known->second;
    if (blob_id_[std::size_t(i)] >= 0) return std::uint16_t(blob_id_[std::size_t(i)]);
    const QTensor& x = t(i);
    if (!x.constant || x.type != QType::Int8 || x.shape.size() < 2 || encoding_ == WeightEncoding::Dense)
      return id(i);
    const std::int32_t rows = x.shape[0];
    const std::int64_t cols = std::int64_t(x.elements()) / rows;
    if (cols > 65535) return id(i);
    std::vector<std::uint8_t> e =
        encode_sparse_s8(reinterpret_cast<const std::int8_t*>(x.data.data()), rows, std::int32_t(cols));
    if (encoding_ == WeightEncoding::Auto && e.size() >= align4(x.elements())) return id(i);
    const float scale = x.scale.size() == 1 ? x.scale[0] : 0.0f;
    const std::int32_t zp = x.zero_point.size() == 1 ? std::int32_t(x.zero_point[0]) : 0;
    // Kept apart from blob_id_: another operator reading the same constant gets it dense.
    const std::uint16_t r = b_.add_sparse_tensor(x.shape, std::move(e), {scale, zp});
    sparse_id_[i] = r;
    return r;
  }
  static std::size_t align4(std::size_t n) { return (n + 3) & ~std::size_t{3}; }

  std::uint16_t i32_const(const std::vector<std::int32_t>& v) {
    return b_.add_const_tensor(TLM_TYPE_INT32, {std::int32_t(v.size())}, v.data(), {0.0f, 0});
  }

  // Elementwise operator k may write over its input `in` when nothing reads `in`, or any tensor
  // sharing its bytes, after k, and none of them is the graph's input (which the caller fills
  // before each invoke, and may read back) or output.
  bool can_overwrite(std::size_t k, int in) const {
    const int out = g_.ops[k].outputs[0];
    if (t(in).shape != t(out).shape || t(in).type != t(out).type) return false;
    return overwritable(k, in);
  }
  // Nothing reads `in` (or a tensor sharing its bytes) after operator k, and none of them is the
  // graph's input or output.
  bool overwritable(std::size_t k, int in) const {
    for (const auto& [tensor, group] : group_) {
      if (find(tensor) != find(in)) continue;
      if (tensor == g_.inputs[0] || tensor == g_.outputs[0]) return false;
      const auto r = last_reader_.find(tensor);
      if (r != last_reader_.end() && r->second > int(k)) return false;
    }
    return in != g_.inputs[0] && in != g_.outputs[0] && last_reader_.at(in) <= int(k);
  }

  // Graph tensor b sits at a's offset + delta in the arena from now on (0: the same bytes).
  void share(int a, int b, std::int32_t delta = 0) {
    group_.emplace(a, a);
    group_.emplace(b, b);
    group_[find(b)] = find(a);
    b_.share_arena(id(a), id(b), delta);
  }

  // Lets a window operator write its output trailing its dying input (format: window operators),
  // when that costs at most a quarter of the output in extra bytes before the input.
  void trail(std::size_t k, int in, int out, std::int32_t sh, std::int32_t sw, std::int32_t pad_top,
             std::int32_t pad_left) {
    if (!trailing_ || !overwritable(k, in)) return;
    // The core's own formula, so that it accepts what is planned here.
    const auto& i = t(in).shape;
    const auto& o = t(out).shape;
    const std::int64_t lead = (tlm_detail::window_lead(i[0], i[1], i[2], i[3], o[1], o[2], o[3], sh,
                                                       sw, 1, 1, pad_top, pad_left) + 3) / 4 * 4;
    if (lead > std::int64_t(t(out).elements()) / 4) return;
    share(in, out, -std::int32_t(lead));
  }
  int find(int x) const {
    auto it = group_.find(x);
    while (it != group_.end() && it->second != x) {
      x = it->second;
      it = group_.find(x);
    }
    return x;
  }

  void require_rank(std::size_t k, int i, std::size_t rank, const char* what) {
    if (t(i).shape.size() != rank)
      fail(g_, k, std::string(what) + " must have rank " + std::to_string(rank) + ", got shape " +
                      shape_text(t(i).shape));
  }
  static std::string shape_text(const std::vector<std::int32_t>& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }

  template <class P>
  void emit(std::uint16_t opcode, const std::vector<std::uint16_t>& in, std::uint16_t out, const P* p) {
    b_.add_op(opcode, in, {out}, p, p ? sizeof(P) : 0);
  }

  void op(std::size_t k) {
    const QOp& o = g_.ops[k];
    const int in = o.inputs.at(0), out = o.outputs.at(0);
    const std::string& name = o.op;
    try {
      if (name == "FULLY_CONNECTED") return fully_connected(k);
      if (name == "CONV_2D" || name == "DEPTHWISE_CONV_2D") return conv(k);
      if (name == "MAX_POOL_2D" || name == "AVERAGE_POOL_2D") {
        require_rank(k, in, 4, "the input");
        Pool2DOptions opt;
        opt.filter_h = o.filter_h, opt.filter_w = o.filter_w;
        opt.stride_h = o.stride_h, opt.stride_w = o.stride_w;
        opt.padding = padding(g_, k);
        opt.activation = fused(g_, k);
        const Pool2DParams p = pool2d_params(q(in), q(out), opt, t(in).shape[1], t(in).shape[2]);
        trail(k, in, out, p.params.stride_h, p.params.stride_w, p.params.pad_top, p.params.pad_left);
        return emit(name == "MAX_POOL_2D" ? TLM_OP_MAX_POOL_2D : TLM_OP_AVERAGE_POOL_2D, {id(in)}, id(out),
                    &p.params);
      }
      if (name == "MEAN") {
        require_rank(k, in, 4, "the input");
        const QTensor& axes = t(o.inputs.at(1));
        std::vector<std::int32_t> a(axes.data.size() / 4);
        if (!a.empty()) std::memcpy(a.data(), axes.data.data(), a.size() * 4);
        for (std::int32_t& v : a) v = v < 0 ? v + 4 : v;
        std::sort(a.begin(), a.end());
        if (a != std::vector<std::int32_t>{1, 2})
          fail(g_, k, "MEAN runs over the height and width axes (1, 2) of NHWC only");
        const tlm_mean_params p =
            mean_params(q(in), q(out), std::int64_t(t(in).shape[1]) * t(in).shape[2]);
        return emit(TLM_OP_MEAN, {id(in)}, id(out), &p);
      }
      if (name == "ADD") {
        const int in2 = o.inputs.at(1);
        if (t(in).shape != t(out).shape || t(in2).shape != t(out).shape)
          fail(g_, k, "ADD needs inputs of the output's shape (no broadcasting), got " +
                          shape_text(t(in).shape) + " + " + shape_text(t(in2).shape));
        const tlm_add_params p = add_params(q(in), q(in2), q(out), fused(g_, k));
        if (can_overwrite(k, in)) share(in, out);
        else if (can_overwrite(k, in2)) share(in2, out);
        return emit(TLM_OP_ADD, {id(in), id(in2)}, id(out), &p);
      }
      if (name == "CONCATENATION") return concatenation(k);
      if (name == "SOFTMAX") {
        const tlm_softmax_params p = softmax_params(q(in).scale, o.beta);
        const QuantParams want = softmax_output_quantization();
        if (q(out).scale != want.scale || q(out).zero_point != want.zero_point)
          fail(g_, k, "an int8 SOFTMAX output must have scale 1/256 and zero point -128");
        return emit(TLM_OP_SOFTMAX, {id(in)}, id(out), &p);
      }
      if (name == "RESHAPE") {
        if (t(in).elements() != t(out).elements() || t(in).type != t(out).type)
          fail(g_, k, "RESHAPE from " + shape_text(t(in).shape) + " to " + shape_text(t(out).shape) +
                          " changes the element count or type");
        // The output is the input's bytes seen with other dims: no work, no memory.
        share(in, out);
        return b_.add_op(TLM_OP_RESHAPE, {id(in)}, {id(out)}, nullptr, 0);
      }
      if (name == "RELU" || name == "RELU6") {
        const tlm_relu_params p =
            relu_params(q(in), q(out), name == "RELU" ? FusedActivation::Relu : FusedActivation::Relu6);
        if (can_overwrite(k, in)) share(in, out);
        return emit(TLM_OP_RELU, {id(in)}, id(out), &p);
      }
      if (name == "QUANTIZE") {
        if (t(in).type == QType::Float32) {
          const tlm_quantize_params p = quantize_params(q(out));
          return emit(TLM_OP_QUANTIZE, {id(in)}, id(out), &p);
        }
        const tlm_quantize_params p = requantize_params(q(in), q(out));
        if (can_overwrite(k, in)) share(in, out);
        return emit(TLM_OP_QUANTIZE, {id(in)}, id(out), &p);
      }
      if (name == "DEQUANTIZE") {
        const tlm_dequantize_params p = dequantize_params(q(in));
        return emit(TLM_OP_DEQUANTIZE, {id(in)}, id(out), &p);
      }
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      if (msg.rfind("operator ", 0) == 0) throw;
      fail(g_, k, msg);
    }
    fail(g_, k, "the int8 core has no kernel for " + name);
  }

  // FULLY_CONNECTED with TFLite's reference requantization (format.h): per tensor, the scale in
  // the params; per channel (as TensorFlow's converter quantizes dense weights), a scales table.
  void fully_connected(std::size_t k) {
    const QOp& o = g_.ops[k];
    const int in = o.inputs.at(0), w = o.inputs.at(1), bias = o.inputs.size() > 2 ? o.inputs[2] : -1,
              out = o.outputs.at(0);
    require_rank(k, w, 2, "the weights");
    const std::size_t channels = t(w).scale.size();
    if (channels != 1 && channels != std::size_t(t(w).shape[0]))
      fail(g_, k, "the weights have " + std::to_string(channels) + " scales for " +
                      std::to_string(t(w).shape[0]) + " output channels");
    // effective_scale = double(input_scale) * double(filter_scale) / double(output_scale), as
    // fully_connected.h computes it, split into mantissa * 2^-exponent.
    auto split = [&](float filter_scale, std::uint32_t out3[3]) {
      const double eff = double(q(in).scale) * double(filter_scale) / double(q(out).scale);
      if (!(eff >= 0.0) || !std::isfinite(eff) || eff >= 9007199254740992.0)
        fail(g_, k, "the requantization scale is not a finite non-negative number below 2^53");
      int exp2 = 0;
      const double f = std::frexp(eff, &exp2);
      const std::uint64_t m = std::uint64_t(std::ldexp(f, 53));
      const std::int32_t e = eff == 0.0 ? 0 : 53 - exp2;
      if (e < 0 || e > 1100) fail(g_, k, "the requantization scale is out of range");
      out3[0] = std::uint32_t(m & 0xFFFFFFFFu);
      out3[1] = std::uint32_t(m >> 32);
      out3[2] = std::uint32_t(e);
    };
    const ActivationRange r = activation_range(fused(g_, k), q(out));
    tlm_fully_connected_ref_params p{};
    p.base.input_offset = -q(in).zero_point;
    p.base.output_offset = q(out).zero_point;
    p.base.activation_min = r.min;
    p.base.activation_max = r.max;
    std::vector<std::uint16_t> inputs{id(in), weights_id(w), bias >= 0 ? id(bias) : std::uint16_t(TLM_NO_TENSOR)};
    if (channels == 1) {
      std::uint32_t v[3];
      split(t(w).scale[0], v);
      p.scale_mantissa_lo = v[0], p.scale_mantissa_hi = v[1], p.scale_exponent = std::int32_t(v[2]);
    } else {
      std::vector<std::uint32_t> table(3 * channels);
      for (std::size_t c = 0; c < channels; ++c) split(t(w).scale[c], &table[3 * c]);
      inputs.push_back(b_.add_const_tensor(TLM_TYPE_INT32, {std::int32_t(channels), 3}, table.data(),
                                           {0.0f, 0}));
    }
    b_.add_op(TLM_OP_FULLY_CONNECTED, inputs, {id(out)}, &p, sizeof p);
  }

  void conv(std::size_t k) {
    const QOp& o = g_.ops[k];
    const bool depthwise = o.op == "DEPTHWISE_CONV_2D";
    const int in = o.inputs.at(0), w = o.inputs.at(1), bias = o.inputs.size() > 2 ? o.inputs[2] : -1,
              out = o.outputs.at(0);
    require_rank(k, in, 4, "the input");
    require_rank(k, w, 4, "the filter");
    const std::int32_t out_c = t(w).shape[depthwise ? 3 : 0];
    std::vector<float> scales = t(w).scale;
    if (scales.size() == 1) scales.assign(std::size_t(out_c), scales[0]);
    if (std::int32_t(scales.size()) != out_c)
      fail(g_, k, "the filter has " + std::to_string(scales.size()) + " scales for " +
                      std::to_string(out_c) + " output channels");
    Conv2DOptions opt;
    opt.stride_h = o.stride_h, opt.stride_w = o.stride_w;
    opt.padding = padding(g_, k);
    opt.activation = fused(g_, k);
    std::uint16_t opcode;
    std::vector<std::uint8_t> params;
    std::vector<std::int32_t> mult, shift;
    if (depthwise) {
      const DepthwiseConv2DParams p =
          depthwise_conv2d_params(q(in), scales, q(out), opt, o.depth_multiplier, t(in).shape[1],
                                  t(in).shape[2], t(w).shape[1], t(w).shape[2]);
      opcode = TLM_OP_DEPTHWISE_CONV_2D;
      trail(k, in, out, p.params.stride_h, p.params.stride_w, p.params.pad_top, p.params.pad_left);
      params.resize(sizeof p.params);
      std::memcpy(params.data(), &p.params, sizeof p.params);
      mult = p.multipliers, shift = p.shifts;
    } else {
      const Conv2DParams p = conv2d_params(q(in), scales, q(out), opt, t(in).shape[1], t(in).shape[2],
                                           t(w).shape[1], t(w).shape[2]);
      opcode = TLM_OP_CONV_2D;
      trail(k, in, out, p.params.stride_h, p.params.stride_w, p.params.pad_top, p.params.pad_left);
      params.resize(sizeof p.params);
      std::memcpy(params.data(), &p.params, sizeof p.params);
      mult = p.multipliers, shift = p.shifts;
    }
    const std::uint16_t ids[3] = {id(in), depthwise ? id(w) : weights_id(w), bias >= 0 ? id(bias) : std::uint16_t(TLM_NO_TENSOR)};
    b_.add_op(opcode, {ids[0], ids[1], ids[2], i32_const(mult), i32_const(shift)}, {id(out)},
              params.data(), std::uint32_t(params.size()));
  }

  // CONCATENATION: up to 6 inputs per core operator; more are joined in a chain along the same
  // axis (the first 6, then that result with the next 5, ...). Every input must carry the
  // output's quantization (TFLite's int8 rule).
  void concatenation(std::size_t k) {
    const QOp& o = g_.ops[k];
    const int out = o.outputs.at(0);
    const std::size_t rank = t(out).shape.size();
    const int axis = o.axis < 0 ? o.axis + int(rank) : o.axis;
    if (axis < 0 || axis >= int(rank)) fail(g_, k, "axis " + std::to_string(o.axis) + " out of range");
    if (fused(g_, k) != FusedActivation::None)
      fail(g_, k, "a fused activation on CONCATENATION is not supported (use a RELU after it)");
    for (int in : o.inputs)
      if (q(in).scale != q(out).scale || q(in).zero_point != q(out).zero_point)
        fail(g_, k, "every int8 CONCATENATION input must have the output's scale and zero point "
                    "(TFLite's rule); input '" + t(in).name + "' differs");
    const tlm_concatenation_params p{axis};
    std::vector<std::uint16_t> pending;
    for (int in : o.inputs) pending.push_back(id(in));
    while (pending.size() > 6) {
      // Join the first 6 into an intermediate tensor.
      std::vector<std::int32_t> dims = t(out).shape;
      std::int32_t along = 0;
      for (std::size_t i = 0; i < 6; ++i) along += axis_size(pending[i], o, axis);
      dims[std::size_t(axis)] = along;
      const std::uint16_t mid = b_.add_arena_tensor(TLM_TYPE_INT8, dims, q(out));
      mid_axis_[mid] = along;
      b_.add_op(TLM_OP_CONCATENATION, std::vector<std::uint16_t>(pending.begin(), pending.begin() + 6),
                {mid}, &p, sizeof p);
      pending.erase(pending.begin(), pending.begin() + 6);
      pending.insert(pending.begin(), mid);
    }
    b_.add_op(TLM_OP_CONCATENATION, pending, {id(out)}, &p, sizeof p);
  }

  std::int32_t axis_size(std::uint16_t blob_tensor, const QOp& o, int axis) const {
    const auto m = mid_axis_.find(blob_tensor);
    if (m != mid_axis_.end()) return m->second;
    for (int in : o.inputs)
      if (blob_id_[std::size_t(in)] == blob_tensor) return t(in).shape[std::size_t(axis)];
    return 0;
  }

  const QGraph& g_;
  bool trailing_;  // let window operators write their output trailing their input
  WeightEncoding encoding_;
  BlobBuilder b_;
  std::vector<int> blob_id_;
  std::map<int, int> last_reader_;
  std::map<int, int> group_;  // union-find parent of graph tensors that share bytes
  std::map<std::uint16_t, std::int32_t> mid_axis_;
  std::map<int, std::uint16_t> sparse_id_;  // graph tensor -> its sparse blob tensor
};

}  // namespace

void validate(const QGraph& g) {
  const int n = int(g.tensors.size());
  auto bad = [](const std::string& what) { throw std::invalid_argument(what); };
  for (int i = 0; i < n; ++i) {
    const QTensor& x = g.tensors[std::size_t(i)];
    const std::string tn = "tensor " + std::to_string(i) + " ('" + x.name + "')";
    if (x.shape.empty() || x.shape.size() > 4)
      bad(tn + ": rank must be 1..4 for the int8 core, got " + std::to_string(x.shape.size()));
    for (std::int32_t d : x.shape)
      if (d < 1) bad(tn + ": every dimension must be >= 1");
    if (x.scale.size() != x.zero_point.size()) bad(tn + ": scale and zero_point differ in length");
    if (x.type == QType::Int8 && x.scale.empty()) bad(tn + ": an int8 tensor needs quantization");
    for (float s : x.scale)
      if (!(std::isfinite(s) && s >= 0.0f)) bad(tn + ": scales must be finite and >= 0");
    for (std::int64_t z : x.zero_point)
      if (z < -128 || z > 127) bad(tn + ": zero points must be in [-128, 127]");
    if (x.constant && x.data.size() != x.elements() * type_size(x.type))
      bad(tn + ": constant data has " + std::to_string(x.data.size()) + " bytes, expected " +
          std::to_string(x.elements() * type_size(x.type)));
  }
  std::vector<bool> written(std::size_t(n), false);
  for (int i : g.inputs) {
    if (i < 0 || i >= n) bad("graph input index " + std::to_string(i) + " out of range");
    written[std::size_t(i)] = true;
  }
  const auto& known = supported_ops();
  for (std::size_t k = 0; k < g.ops.size(); ++k) {
    const QOp& o = g.ops[k];
    if (std::find(known.begin(), known.end(), o.op) == known.end())
      fail(g, k, "the int8 core has no kernel for this operator");
    if (o.inputs.empty() || o.outputs.size() != 1)
      fail(g, k, "expected at least one input and exactly one output");
    for (std::size_t j = 0; j < o.inputs.size(); ++j) {
      const int i = o.inputs[j];
      if (i == -1 && j > 0) continue;
      if (i < 0 || i >= n) fail(g, k, "input index " + std::to_string(i) + " out of range");
      if (!written[std::size_t(i)] && !g.tensors[std::size_t(i)].constant)
        fail(g, k, "reads tensor " + std::to_string(i) + " before any operator writes it");
    }
    const int out = o.outputs[0];
    if (out < 0 || out >= n) fail(g, k, "output index " + std::to_string(out) + " out of range");
    if (written[std::size_t(out)] || g.tensors[std::size_t(out)].constant)
      fail(g, k, "writes tensor " + std::to_string(out) + ", which is a constant or already written");
    written[std::size_t(out)] = true;
  }
  for (int i : g.outputs)
    if (i < 0 || i >= n || !written[std::size_t(i)])
      bad("graph output " + std::to_string(i) + " is not written by any operator");
}

// Plans with and without trailing outputs and keeps the smaller arena (trailing saves a whole
// buffer on chains of convolutions, but its lead bytes live as long as the input they precede,
// which can raise another operator's peak).
std::vector<std::uint8_t> lower(const QGraph& graph, WeightEncoding encoding) {
  std::vector<std::uint8_t> plain = Lowering(graph, false, encoding).run();
  std::vector<std::uint8_t> trailing = Lowering(graph, true, encoding).run();
  auto arena = [](const std::vector<std::uint8_t>& b) {
    std::uint32_t v;
    std::memcpy(&v, b.data() + 16, 4);  // format.h: header offset 16
    return v;
  };
  return arena(trailing) < arena(plain) ? trailing : plain;
}

std::vector<std::uint8_t> convert(Model& model, const Tensor& representative) {
  return lower(quantize(model, representative));
}

}  // namespace tinylearn
