// QUANTIZE with an int8 output, the two paths of TFLite's quantize.cc under kReference:
//
// float32 -> int8 follows reference_ops::AffineQuantize
// (tensorflow/lite/kernels/internal/reference/quantize.h):
//   static_cast<int32_t>(TfLiteRound(x / static_cast<float>(scale))) + zero_point, clamped.
// Float math in the inner loop because TFLite's reference does exactly this: an IEEE float32
// division and roundf (halves away from zero), identical on x86 SSE and the Cortex-M4 FPU. The
// float->int conversion is undefined in C++ outside int32 (TFLite relies on it); here the
// rounded value is first clamped to [-512, 512], which changes no in-range result (the output
// clamps at +-128 anyway) and gives the saturated int8 for huge values and +-infinity. NaN,
// which TFLite turns into an unspecified integer, gives the zero point here.
//
// int8 -> int8 follows reference_ops::Requantize (reference/requantize.h):
//   clamp(MultiplyByQuantizedMultiplier(x - input_zero_point, multiplier, shift) +
//   output_zero_point, -128, 127), multiplier and shift from QuantizeMultiplier(input_scale /
//   output_scale) (quantize.cc Prepare). Its int8<->uint8 shortcut does not apply to int8 -> int8.
// Accumulator bound: |x + input_offset| <= 255, the product with 2^shift wraps as TFLite's int32
// one would, and the offset is added in 64 bits: no overflow.
#include "quantize_s8.h"

#include <math.h>

#include "nn_types.h"
#include "requantize.h"

tlm_status tlm_quantize_f32_s8_check(const tlm_quantize_params* p, int32_t count) {
  if (count < 1) return TLM_ERR_SHAPE;
  // !(scale > 0) also catches NaN; scale <= FLT_MAX excludes +infinity.
  if (!(p->scale > 0.0f) || !(p->scale <= 3.40282347e38f) || p->output_offset < -128 ||
      p->output_offset > 127 || p->input_offset != 0 || p->output_multiplier != 0 ||
      p->output_shift != 0)
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_quantize_f32_s8(const tlm_quantize_params* p, int32_t count, const float* input,
                         int8_t* output) {
  const float scale = p->scale;
  for (int32_t i = 0; i < count; ++i) {
    float r = roundf(input[i] / scale);  // TfLiteRound(float) is std::round: halves away from 0
    int32_t q;
    if (r != r) {
      q = 0;  // NaN
    } else {
      if (r > 512.0f) r = 512.0f;
      if (r < -512.0f) r = -512.0f;
      q = static_cast<int32_t>(r);
    }
    q += p->output_offset;
    if (q < -128) q = -128;
    if (q > 127) q = 127;
    output[i] = static_cast<int8_t>(q);
  }
}

tlm_status tlm_requantize_s8_check(const tlm_quantize_params* p, int32_t count) {
  if (count < 1) return TLM_ERR_SHAPE;
  if (tlm_detail::bad_offsets(p->input_offset, p->output_offset) ||
      tlm_detail::bad_multiplier(p->output_multiplier, p->output_shift) || p->scale != 0.0f)
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_requantize_s8(const tlm_quantize_params* p, int32_t count, const int8_t* input,
                       int8_t* output) {
  for (int32_t i = 0; i < count; ++i) {
    int64_t out = int64_t{p->output_offset} +
                  tlm_detail::multiply_by_quantized_multiplier(
                      input[i] + p->input_offset, p->output_multiplier, p->output_shift);
    if (out < -128) out = -128;
    if (out > 127) out = 127;
    output[i] = static_cast<int8_t>(out);
  }
}
