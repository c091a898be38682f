// Follows TFLite's reference_ops::ReluX(const ReluParams&, ...)
// (tensorflow/lite/kernels/internal/reference/reference_ops.h), which activations.cc's ReluEval
// and Relu6Eval call for int8 (through optimized_ops, which re-exports it; those operators have no
// separate kReference path): clamp(output_offset + MultiplyByQuantizedMultiplier(x -
// input_zero_point, multiplier, shift)). ReluPrepare takes the multiplier from
// QuantizeMultiplier(input_scale / output_scale); QuantizedReluX the bounds from the output
// quantization: min = max(-128, zp + (int)roundf(act_min / scale)), max = 127 or
// min(127, zp + (int)roundf(act_max / scale)) (see tinylearn::relu_params). TFLite's ReluParams
// carries the input zero point itself; tlm_relu_params its negation, as every other operator.
//
// Accumulator bound: |x + input_offset| <= 255; MultiplyByQuantizedMultiplier wraps x * 2^shift
// modulo 2^32 exactly as TFLite's int32 product would for absurd shifts, and the offset is added
// in 64 bits (see conv2d_s8.cpp), so nothing overflows.
#include "relu_s8.h"

#include "nn_types.h"
#include "requantize.h"

tlm_status tlm_relu_s8_check(const tlm_relu_params* p, int32_t count) {
  if (count < 1) return TLM_ERR_SHAPE;
  if (tlm_detail::bad_offsets(p->input_offset, p->output_offset) ||
      tlm_detail::bad_multiplier(p->output_multiplier, p->output_shift) ||
      tlm_detail::bad_activation(p->activation_min, p->activation_max))
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_relu_s8(const tlm_relu_params* p, int32_t count, const int8_t* input, int8_t* output) {
  for (int32_t i = 0; i < count; ++i) {
    int64_t out = int64_t{p->output_offset} +
                  tlm_detail::multiply_by_quantized_multiplier(
                      input[i] + p->input_offset, p->output_multiplier, p->output_shift);
    if (out < p->activation_min) out = p->activation_min;
    if (out > p->activation_max) out = p->activation_max;
    output[i] = static_cast<int8_t>(out);
  }
}
