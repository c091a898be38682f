// Host side: the parameters of each int8 operator of the freestanding core (tinylearn/micro/
// format.h), computed from the TFLite quantization of the operator's tensors exactly as TFLite's
// kernels compute them in Prepare (and, for MEAN, in Eval). The graph converter calls these; the
// core then reproduces TFLite's reference kernels bit for bit.
//
// Scales are float32 as in a .tflite file (TfLiteQuantizationParams::scale); every function
// promotes them to double at the same places TFLite does. Bad input (non-finite or non-positive
// scales, zero points outside int8, shapes, a requantization scale TFLite would refuse or the
// core cannot represent) throws std::invalid_argument.
#ifndef TINYLEARN_CONVERT_OP_PARAMS_H
#define TINYLEARN_CONVERT_OP_PARAMS_H

#include <cstdint>
#include <vector>

#include "tinylearn/convert/convert.h"
#include "tinylearn/micro/format.h"

namespace tinylearn {

// A fused activation (TfLiteFusedActivation for NONE, RELU, RELU6, RELU_N1_TO_1).
enum class FusedActivation { None, Relu, Relu6, ReluN1To1 };

// TFLite's padding modes (TfLitePadding).
enum class Padding { Same, Valid };

struct ActivationRange {
  std::int32_t min, max;
};

// kernel_util.cc CalculateActivationRangeQuantized for an int8 output: [-128, 127] narrowed to
// zp + round(0 / scale), zp + round(6 / scale), ... with float32 division and round half away
// from zero.
ActivationRange activation_range(FusedActivation activation, QuantParams output);

// One spatial axis of a windowed operator, as padding.h computes it: output size
// (SAME: ceil(in / stride); VALID: (in + stride - effective_filter) / stride, effective_filter =
// (filter - 1) * dilation + 1), total padding max(0, (out - 1) * stride + effective_filter - in),
// pad_before = total / 2 (what the kernels use, TFLite's padding_values), pad_after = total -
// pad_before (the extra row or column, if any, goes at the bottom / right).
struct WindowAxis {
  std::int32_t output, pad_before, pad_after;
};
WindowAxis window_axis(Padding padding, std::int32_t input, std::int32_t filter,
                       std::int32_t stride, std::int32_t dilation = 1);

// kernel_util.cc PopulateConvolutionQuantizationParams, per channel: QuantizeMultiplier of
// double(input_scale) * double(filter_scale[c]) / double(output_scale), computed in double as
// TFLite does. One multiplier and shift per filter scale (pass out_c copies of a per-tensor scale).
struct PerChannelMultipliers {
  std::vector<std::int32_t> multipliers, shifts;
};
PerChannelMultipliers per_channel_multipliers(float input_scale,
                                              const std::vector<float>& filter_scales,
                                              float output_scale);

struct Conv2DOptions {
  std::int32_t stride_h = 1, stride_w = 1;
  std::int32_t dilation_h = 1, dilation_w = 1;
  Padding padding = Padding::Valid;
  FusedActivation activation = FusedActivation::None;
};

// CONV_2D: input [n, input_h, input_w, in_c], filter [out_c, filter_h, filter_w, in_c] with
// out_c = filter_scales.size(). Output spatial size in output_h / output_w.
struct Conv2DParams {
  tlm_conv2d_params params;
  std::vector<std::int32_t> multipliers, shifts;  // the [out_c] int32 constant tensors
  std::int32_t output_h, output_w;
};
Conv2DParams conv2d_params(QuantParams input, const std::vector<float>& filter_scales,
                           QuantParams output, const Conv2DOptions& options,
                           std::int32_t input_h, std::int32_t input_w, std::int32_t filter_h,
                           std::int32_t filter_w);

// DEPTHWISE_CONV_2D: filter [1, filter_h, filter_w, out_c], out_c = filter_scales.size() =
// in_c * depth_multiplier.
struct DepthwiseConv2DParams {
  tlm_depthwise_conv2d_params params;
  std::vector<std::int32_t> multipliers, shifts;
  std::int32_t output_h, output_w;
};
DepthwiseConv2DParams depthwise_conv2d_params(QuantParams input,
                                              const std::vector<float>& filter_scales,
                                              QuantParams output, const Conv2DOptions& options,
                                              std::int32_t depth_multiplier, std::int32_t input_h,
                                              std::int32_t input_w, std::int32_t filter_h,
                                              std::int32_t filter_w);

struct Pool2DOptions {
  std::int32_t filter_h = 2, filter_w = 2;
  std::int32_t stride_h = 2, stride_w = 2;
  Padding padding = Padding::Valid;
  FusedActivation activation = FusedActivation::None;
};

// MAX_POOL_2D / AVERAGE_POOL_2D (the same parameters). Input and output must have the same
// quantization (TFLite requires it; pooling does not requantize).
struct Pool2DParams {
  tlm_pool_params params;
  std::int32_t output_h, output_w;
};
Pool2DParams pool2d_params(QuantParams input, QuantParams output, const Pool2DOptions& options,
                           std::int32_t input_h, std::int32_t input_w);

// MEAN over H and W (num_elements = H * W): reduce.cc PrepareMeanOrSum's QuantizeMultiplier(
// double(input_scale) / double(output_scale)), then reference_ops::QuantizedMeanOrSum's
// adjustment for 1 / num_elements (shift = min(floor(log2 n), 32, 31 + shift); multiplier =
// (int64(multiplier) << shift) / n; shift -= shift), done here once instead of on every invoke.
tlm_mean_params mean_params(QuantParams input, QuantParams output, std::int64_t num_elements);

// ADD (int8): add.cc Prepare: left_shift 20, twice_max_input_scale = 2 * max(s1, s2),
// QuantizeMultiplierSmallerThanOneExp of s1 / twice_max, s2 / twice_max and
// twice_max / (2^20 * s_out); activation range of the fused activation.
tlm_add_params add_params(QuantParams input1, QuantParams input2, QuantParams output,
                          FusedActivation activation = FusedActivation::None);

// SOFTMAX (int8 -> int8, kReference): PreprocessSoftmaxScaling(double(beta), double(input_scale),
// 5) and diff_min = -CalculateInputRadius(5, input_left_shift). The output tensor must be
// quantized as softmax_output_quantization().
tlm_softmax_params softmax_params(float input_scale, float beta = 1.0f);
QuantParams softmax_output_quantization();  // {1/256, -128}, as TFLite requires

// Standalone RELU / RELU6 / RELU_N1_TO_1 (activations.cc ReluPrepare + QuantizedReluX):
// multiplier QuantizeMultiplier(input_scale / output_scale) with the division in float32 as
// TFLite writes it; bounds max(-128, zp + roundf(lo / scale)), min(127, zp + roundf(hi / scale)).
// `activation` must not be None.
tlm_relu_params relu_params(QuantParams input, QuantParams output, FusedActivation activation);

// QUANTIZE float32 -> int8 (the output's scale and zero point).
tlm_quantize_params quantize_params(QuantParams output);
// QUANTIZE int8 -> int8: quantize.cc Prepare's QuantizeMultiplier(double(s_in) / double(s_out)).
tlm_quantize_params requantize_params(QuantParams input, QuantParams output);
// DEQUANTIZE int8 -> float32.
tlm_dequantize_params dequantize_params(QuantParams input);

}  // namespace tinylearn

#endif  // TINYLEARN_CONVERT_OP_PARAMS_H
