// Follows TFLite's reference_ops::Dequantize
// (tensorflow/lite/kernels/internal/reference/dequantize.h), which dequantize.cc runs for int8
// under kReference: static_cast<float>(double(scale) * (x - zero_point)). The integer x -
// zero_point has |.| <= 255 (8 bits) and the float scale a 24-bit significand, so the double
// product is exact and TFLite rounds that exact value to float once. A float32 multiplication
// rounds the same exact product once, to the same float (IEEE 754 round to nearest, overflow to
// infinity and gradual underflow alike; the Cortex-M4 FPU does not flush to zero by default), so
// no double arithmetic (software floating point on the Cortex-M4) is needed for bit-exactness.
// No accumulator: one product per element.
#include "dequantize_s8.h"

tlm_status tlm_dequantize_s8_check(const tlm_dequantize_params* p, int32_t count) {
  if (count < 1) return TLM_ERR_SHAPE;
  if (p->input_offset < -127 || p->input_offset > 128 ||
      !(p->scale <= 3.40282347e38f && p->scale >= -3.40282347e38f))  // finite (NaN fails too)
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_dequantize_s8(const tlm_dequantize_params* p, int32_t count, const int8_t* input,
                       float* output) {
  const float scale = p->scale;
  for (int32_t i = 0; i < count; ++i)
    output[i] = scale * static_cast<float>(input[i] + p->input_offset);
}
