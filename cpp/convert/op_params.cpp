// The TFLite Prepare computations behind each operator's parameters (see op_params.h). Where the
// TFLite source is quoted, the file is tensorflow/lite/kernels/<file> (LiteRT: tflite/kernels/).
#include "op_params.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace tinylearn {

namespace {

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

void check_scale(float scale, const char* what) {
  if (!std::isfinite(scale) || !(scale > 0.0f))
    fail(std::string(what) + " scale must be finite and > 0, got " + std::to_string(scale));
}

void check_quant(QuantParams q, const char* what) {
  check_scale(q.scale, what);
  if (q.zero_point < -128 || q.zero_point > 127)
    fail(std::string(what) + " zero point must be in [-128, 127], got " +
         std::to_string(q.zero_point));
}

// quantization_util.cc QuantizeMultiplier (double rounding build): q = frexp(x), q_fixed =
// round(q * 2^31), 2^31 -> 2^30 with shift + 1, shift < -31 -> (0, 0). The shift is not capped at
// 30 there; the caller decides which shifts it accepts.
void tflite_quantize_multiplier(double x, std::int32_t* multiplier, int* shift) {
  if (x == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  const double q = std::frexp(x, shift);
  auto q_fixed = static_cast<std::int64_t>(std::round(q * double(std::int64_t{1} << 31)));
  if (q_fixed == (std::int64_t{1} << 31)) {
    q_fixed /= 2;
    ++*shift;
  }
  if (*shift < -31) {
    *shift = 0;
    q_fixed = 0;
  }
  *multiplier = static_cast<std::int32_t>(q_fixed);
}

// QuantizeMultiplier for a requantization the core applies with MultiplyByQuantizedMultiplier
// (shift in [-31, 30]).
void requant_multiplier(double x, std::int32_t* multiplier, std::int32_t* shift,
                        const char* what) {
  if (!std::isfinite(x) || x < 0.0)
    fail(std::string(what) + ": requantization scale must be finite and >= 0, got " +
         std::to_string(x));
  int s = 0;
  tflite_quantize_multiplier(x, multiplier, &s);
  if (s > 30)
    fail(std::string(what) + ": requantization scale " + std::to_string(x) +
         " is too large for int8 (2^30 or more)");
  *shift = s;
}

// quantization_util.cc QuantizeMultiplierSmallerThanOneExp: TFLite CHECKs 0 < x < 1.
void smaller_than_one(double x, std::int32_t* multiplier, std::int32_t* shift, const char* what) {
  if (!(x > 0.0 && x < 1.0))
    fail(std::string(what) + ": TFLite needs a multiplier in (0, 1), got " + std::to_string(x));
  int s = 0;
  tflite_quantize_multiplier(x, multiplier, &s);
  if (s > 0) fail(std::string(what) + ": multiplier rounds to 1");  // TFLite CHECK_LE(shift, 0)
  *shift = s;
}

// kernel_util.cc Quantize: zp + (int32)TfLiteRound(f / scale), float32 division.
std::int32_t quantize_bound(float f, QuantParams q) {
  const float t = std::round(f / q.scale);
  if (!(t >= -2147483648.0f && t <= 2147483520.0f))  // TFLite returns an error here
    fail("activation bound " + std::to_string(f) + " overflows int32 at scale " +
         std::to_string(q.scale));
  return q.zero_point + static_cast<std::int32_t>(t);
}

void check_window_options(std::int32_t stride_h, std::int32_t stride_w, std::int32_t dilation_h,
                          std::int32_t dilation_w) {
  if (stride_h < 1 || stride_w < 1) fail("strides must be >= 1");
  if (dilation_h < 1 || dilation_w < 1) fail("dilation factors must be >= 1");
}

}  // namespace

ActivationRange activation_range(FusedActivation activation, QuantParams output) {
  check_quant(output, "output");
  const std::int32_t qmin = -128, qmax = 127;
  switch (activation) {
    case FusedActivation::None:
      return {qmin, qmax};
    case FusedActivation::Relu:
      return {std::max(qmin, quantize_bound(0.0f, output)), qmax};
    case FusedActivation::Relu6:
      return {std::max(qmin, quantize_bound(0.0f, output)),
              std::min(qmax, quantize_bound(6.0f, output))};
    case FusedActivation::ReluN1To1:
      return {std::max(qmin, quantize_bound(-1.0f, output)),
              std::min(qmax, quantize_bound(1.0f, output))};
  }
  fail("unknown fused activation");
}

WindowAxis window_axis(Padding padding, std::int32_t input, std::int32_t filter,
                       std::int32_t stride, std::int32_t dilation) {
  if (input < 1 || filter < 1) fail("window: input and filter sizes must be >= 1");
  if (stride < 1 || dilation < 1) fail("window: stride and dilation must be >= 1");
  // padding.h ComputeOutSizeChecked / ComputePaddingWithOffsetChecked, in 64 bits.
  const std::int64_t effective = std::int64_t{filter - 1} * dilation + 1;
  std::int64_t out = 0;
  if (padding == Padding::Same)
    out = (std::int64_t{input} + stride - 1) / stride;
  else
    out = (std::int64_t{input} + stride - effective) / stride;
  if (out < 1)
    fail("window: a VALID filter of effective size " + std::to_string(effective) +
         " does not fit an input of " + std::to_string(input));
  std::int64_t total = (out - 1) * stride + effective - input;
  if (total < 0) total = 0;
  return {std::int32_t(out), std::int32_t(total / 2), std::int32_t(total - total / 2)};
}

PerChannelMultipliers per_channel_multipliers(float input_scale,
                                              const std::vector<float>& filter_scales,
                                              float output_scale) {
  check_scale(input_scale, "input");
  check_scale(output_scale, "output");
  if (filter_scales.empty()) fail("per-channel multipliers: no filter scales");
  PerChannelMultipliers r;
  for (float fs : filter_scales) {
    if (!std::isfinite(fs) || fs < 0.0f)
      fail("filter scales must be finite and >= 0, got " + std::to_string(fs));
    // PopulateConvolutionQuantizationParams: everything in double.
    const double effective_output_scale =
        static_cast<double>(input_scale) * static_cast<double>(fs) /
        static_cast<double>(output_scale);
    std::int32_t m = 0, s = 0;
    requant_multiplier(effective_output_scale, &m, &s, "convolution");
    r.multipliers.push_back(m);
    r.shifts.push_back(s);
  }
  return r;
}

Conv2DParams conv2d_params(QuantParams input, const std::vector<float>& filter_scales,
                           QuantParams output, const Conv2DOptions& o, std::int32_t input_h,
                           std::int32_t input_w, std::int32_t filter_h, std::int32_t filter_w) {
  check_quant(input, "input");
  check_quant(output, "output");
  check_window_options(o.stride_h, o.stride_w, o.dilation_h, o.dilation_w);
  const WindowAxis h = window_axis(o.padding, input_h, filter_h, o.stride_h, o.dilation_h);
  const WindowAxis w = window_axis(o.padding, input_w, filter_w, o.stride_w, o.dilation_w);
  PerChannelMultipliers pc = per_channel_multipliers(input.scale, filter_scales, output.scale);
  const ActivationRange act = activation_range(o.activation, output);
  Conv2DParams r;
  r.params = {-input.zero_point, output.zero_point, o.stride_h, o.stride_w,
              o.dilation_h,      o.dilation_w,      h.pad_before, w.pad_before,
              act.min,           act.max};
  r.multipliers = std::move(pc.multipliers);
  r.shifts = std::move(pc.shifts);
  r.output_h = h.output;
  r.output_w = w.output;
  return r;
}

DepthwiseConv2DParams depthwise_conv2d_params(QuantParams input,
                                              const std::vector<float>& filter_scales,
                                              QuantParams output, const Conv2DOptions& o,
                                              std::int32_t depth_multiplier,
                                              std::int32_t input_h, std::int32_t input_w,
                                              std::int32_t filter_h, std::int32_t filter_w) {
  if (depth_multiplier < 1) fail("depth multiplier must be >= 1");
  if (filter_scales.size() % std::size_t(depth_multiplier) != 0)
    fail("depthwise: the number of filter scales must be in_c * depth_multiplier");
  const Conv2DParams c =
      conv2d_params(input, filter_scales, output, o, input_h, input_w, filter_h, filter_w);
  DepthwiseConv2DParams r;
  const tlm_conv2d_params& p = c.params;
  r.params = {p.input_offset, p.output_offset, p.stride_h, p.stride_w, p.dilation_h,
              p.dilation_w,   p.pad_top,       p.pad_left, depth_multiplier,
              p.activation_min, p.activation_max};
  r.multipliers = c.multipliers;
  r.shifts = c.shifts;
  r.output_h = c.output_h;
  r.output_w = c.output_w;
  return r;
}

Pool2DParams pool2d_params(QuantParams input, QuantParams output, const Pool2DOptions& o,
                           std::int32_t input_h, std::int32_t input_w) {
  check_quant(input, "input");
  check_quant(output, "output");
  if (input.scale != output.scale || input.zero_point != output.zero_point)
    fail("pooling: input and output must have the same scale and zero point");
  check_window_options(o.stride_h, o.stride_w, 1, 1);
  const WindowAxis h = window_axis(o.padding, input_h, o.filter_h, o.stride_h, 1);
  const WindowAxis w = window_axis(o.padding, input_w, o.filter_w, o.stride_w, 1);
  const ActivationRange act = activation_range(o.activation, output);
  Pool2DParams r;
  r.params = {o.stride_h,   o.stride_w,   o.filter_h, o.filter_w,
              h.pad_before, w.pad_before, act.min,    act.max};
  r.output_h = h.output;
  r.output_w = w.output;
  return r;
}

tlm_mean_params mean_params(QuantParams input, QuantParams output, std::int64_t num_elements) {
  check_quant(input, "input");
  check_quant(output, "output");
  if (num_elements < 1) fail("mean: the number of averaged elements must be >= 1");
  // reduce.cc PrepareMeanOrSum.
  const double real_multiplier =
      static_cast<double>(input.scale) / static_cast<double>(output.scale);
  std::int32_t multiplier = 0;
  int shift = 0;
  tflite_quantize_multiplier(real_multiplier, &multiplier, &shift);
  // reference_ops::QuantizedMeanOrSum (compute_sum = false).
  int s = 63 - __builtin_clzll(static_cast<unsigned long long>(num_elements));
  s = std::min(s, 32);
  s = std::min(s, 31 + shift);
  multiplier = static_cast<std::int32_t>((static_cast<std::int64_t>(multiplier) << s) /
                                         num_elements);
  shift -= s;
  if (shift < -31 || shift > 30)
    fail("mean: requantization shift " + std::to_string(shift) + " outside [-31, 30]");
  return {-input.zero_point, output.zero_point, multiplier, shift};
}

tlm_add_params add_params(QuantParams input1, QuantParams input2, QuantParams output,
                          FusedActivation activation) {
  check_quant(input1, "input1");
  check_quant(input2, "input2");
  check_quant(output, "output");
  const int left_shift = 20;
  // add.cc Prepare, with its types: 2 * max(float, float) is float (exact), then double.
  const double twice_max_input_scale = 2 * std::max(input1.scale, input2.scale);
  const double real_input1_multiplier = input1.scale / twice_max_input_scale;
  const double real_input2_multiplier = input2.scale / twice_max_input_scale;
  // (1 << 20) * float is float (exact).
  const double real_output_multiplier =
      twice_max_input_scale / ((1 << left_shift) * output.scale);
  tlm_add_params p;
  p.input1_offset = -input1.zero_point;
  p.input2_offset = -input2.zero_point;
  p.left_shift = left_shift;
  smaller_than_one(real_input1_multiplier, &p.input1_multiplier, &p.input1_shift, "add input1");
  smaller_than_one(real_input2_multiplier, &p.input2_multiplier, &p.input2_shift, "add input2");
  p.output_offset = output.zero_point;
  smaller_than_one(real_output_multiplier, &p.output_multiplier, &p.output_shift, "add output");
  const ActivationRange act = activation_range(activation, output);
  p.activation_min = act.min;
  p.activation_max = act.max;
  return p;
}

tlm_softmax_params softmax_params(float input_scale, float beta) {
  check_scale(input_scale, "input");
  if (!std::isfinite(beta) || !(beta > 0.0f))
    fail("softmax beta must be finite and > 0, got " + std::to_string(beta));
  const int kScaledDiffIntegerBits = 5;
  // quantization_util.cc PreprocessSoftmaxScaling (double rounding: max (1 << 31) - 1).
  const double max_real_multiplier = (1LL << 31) - 1.0;
  const double input_beta_real_multiplier =
      std::min<double>(static_cast<double>(beta) * static_cast<double>(input_scale) *
                           (1 << (31 - kScaledDiffIntegerBits)),
                       max_real_multiplier);
  // QuantizeMultiplierGreaterThanOne: TFLite CHECKs > 1 and a left shift >= 0.
  if (!(input_beta_real_multiplier > 1.0))
    fail("softmax: beta * input_scale * 2^26 must be > 1 (TFLite refuses it), got " +
         std::to_string(input_beta_real_multiplier));
  tlm_softmax_params p;
  int left_shift = 0;
  tflite_quantize_multiplier(input_beta_real_multiplier, &p.input_multiplier, &left_shift);
  p.input_left_shift = left_shift;  // in [1, 31]
  // CalculateInputRadius(5, left_shift): floor((2^5 - 1) * 2^26 / 2^left_shift), in double.
  const double max_input_rescaled = 1.0 * ((1 << kScaledDiffIntegerBits) - 1) *
                                    (1LL << (31 - kScaledDiffIntegerBits)) /
                                    (1LL << left_shift);
  p.diff_min = static_cast<std::int32_t>(-1.0 * static_cast<int>(std::floor(max_input_rescaled)));
  return p;
}

QuantParams softmax_output_quantization() { return {1.0f / 256.0f, -128}; }

tlm_relu_params relu_params(QuantParams input, QuantParams output, FusedActivation activation) {
  check_quant(input, "input");
  check_quant(output, "output");
  float lo = 0.0f, hi = std::numeric_limits<float>::infinity();
  switch (activation) {
    case FusedActivation::Relu: break;
    case FusedActivation::Relu6: hi = 6.0f; break;
    case FusedActivation::ReluN1To1: lo = -1.0f, hi = 1.0f; break;
    case FusedActivation::None: fail("relu_params: the activation must be a RELU variant");
  }
  tlm_relu_params p;
  p.input_offset = -input.zero_point;
  p.output_offset = output.zero_point;
  // activations.cc ReluPrepare: `double real_multiplier = input->params.scale /
  // output->params.scale;` -- a float32 division, widened afterwards.
  const float ratio = input.scale / output.scale;
  requant_multiplier(static_cast<double>(ratio), &p.output_multiplier, &p.output_shift, "relu");
  // QuantizedReluX: max(int8 min, zp + (int32)roundf(act_min / scale)); the upper bound is
  // int8 max for an infinite act_max.
  p.activation_min = std::max(-128, quantize_bound(lo, output));
  p.activation_max = std::isinf(hi) ? 127 : std::min(127, quantize_bound(hi, output));
  if (p.activation_min > p.activation_max)
    fail("relu_params: the clamp range is empty at this output quantization");
  return p;
}

tlm_quantize_params quantize_params(QuantParams output) {
  check_quant(output, "output");
  return {0, output.zero_point, 0, 0, output.scale};
}

tlm_quantize_params requantize_params(QuantParams input, QuantParams output) {
  check_quant(input, "input");
  check_quant(output, "output");
  tlm_quantize_params p{-input.zero_point, output.zero_point, 0, 0, 0.0f};
  // quantize.cc Prepare (requantize): double(input_scale) / double(output_scale).
  requant_multiplier(static_cast<double>(input.scale) / static_cast<double>(output.scale),
                     &p.output_multiplier, &p.output_shift, "requantize");
  return p;
}

tlm_dequantize_params dequantize_params(QuantParams input) {
  check_quant(input, "input");
  return {-input.zero_point, input.scale};
}

}  // namespace tinylearn
