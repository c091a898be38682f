#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "tinylearn/convert/convert.h"
#include "tinylearn/micro/format.h"

namespace tinylearn {

namespace {

QuantParams range_params(const Tensor& m) {
  const auto [lo, hi] = std::minmax_element(m.begin(), m.end());
  return choose_activation_params(*lo, *hi);
}

}  // namespace

std::vector<std::uint8_t> convert(Model& model, const Tensor& representative) {
  if (!model.built()) throw std::logic_error("convert: the model has no weights yet (train it first)");
  if (representative.dimension() == 0 || representative.shape()[0] == 0)
    throw std::invalid_argument("convert: representative data is empty (0 samples)");
  // forward_all validates shape and finiteness of the calibration data.
  const std::vector<Tensor> acts = model.forward_all(representative);
  if (model.input_shape().size() != 1)
    throw std::invalid_argument("convert: only models on 1-D samples convert to int8 yet, got input " +
                                shape_str(model.input_shape(), true));

  BlobBuilder builder;
  QuantParams in_q = range_params(representative);
  const std::uint16_t input = builder.add_arena_tensor(
      TLM_TYPE_INT8, {1, std::int32_t(model.input_shape()[0])}, in_q);
  std::uint16_t current = input;
  int previous = model.input_node();
  for (int i : model.path()) {
    const Model::Node& node = model.node(std::size_t(i));
    if (!node.layer) continue;
    const auto* dense = dynamic_cast<const Dense*>(node.layer.get());
    if (!dense || node.inputs.size() != 1 || node.inputs[0] != previous)
      throw std::invalid_argument("convert: layer '" + node.layer->name + "' (" + node.layer->kind() +
                                  ") has no int8 kernel yet");
    previous = i;
    const std::size_t C = dense->input_features(), OC = dense->units();

    // Per-tensor symmetric weights: scale = max|w| / 127, zero point 0, values in [-127, 127].
    float wmax = 0.0f;
    for (float w : dense->kernel) wmax = std::max(wmax, std::fabs(w));
    const float w_scale = wmax > 0.0f ? wmax / 127.0f : 1.0f;
    std::vector<std::int8_t> wq(OC * C);  // [out, in], the TFLite layout
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t o = 0; o < OC; ++o)
        wq[o * C + c] = std::int8_t(std::clamp(std::round(dense->kernel(c, o) / w_scale), -127.0f, 127.0f));
    const std::uint16_t weights = builder.add_const_tensor(
        TLM_TYPE_INT8, {std::int32_t(OC), std::int32_t(C)}, wq.data(), {w_scale, 0});

    // Bias: int32 with scale input_scale * weight_scale (a float product, as TFLite).
    const float b_scale = in_q.scale * w_scale;
    std::uint16_t bias = TLM_NO_TENSOR;
    if (dense->use_bias()) {
      std::vector<std::int32_t> bq(OC);
      for (std::size_t o = 0; o < OC; ++o) {
        const double v = std::round(double(dense->bias(o)) / double(b_scale));
        bq[o] = std::int32_t(std::clamp(v, -2147483647.0, 2147483647.0));
      }
      bias = builder.add_const_tensor(TLM_TYPE_INT32, {std::int32_t(OC)}, bq.data(), {b_scale, 0});
    }

    // Output range calibrated after the activation; a fused ReLU clamps at the zero point.
    const QuantParams out_q = range_params(acts[std::size_t(i)]);
    const std::uint16_t out = builder.add_arena_tensor(TLM_TYPE_INT8, {1, std::int32_t(OC)}, out_q);
    // The effective scale, computed as TFLite does: double(float(s_in * s_w)) / double(s_out).
    const QuantizedMultiplier m = quantize_multiplier(double(b_scale) / double(out_q.scale));
    tlm_fully_connected_params p{};
    p.input_offset = -in_q.zero_point;
    p.output_offset = out_q.zero_point;
    p.output_multiplier = m.multiplier;
    p.output_shift = m.shift;
    p.activation_min = dense->activation() == Activation::ReLU ? std::max(-128, out_q.zero_point) : -128;
    p.activation_max = 127;
    builder.add_op(TLM_OP_FULLY_CONNECTED, {current, weights, bias}, {out}, &p, sizeof p);
    current = out;
    in_q = out_q;
  }
  return builder.finish(input, current);
}

}  // namespace tinylearn
