// Follows TFLite's reference_integer_ops::Add / AddFunc
// (tensorflow/lite/kernels/internal/reference/integer_ops/add.h), the kernel add.cc runs for int8
// same-shape inputs under kReference:
//   shifted_k = (input_k + input_k_offset) * 2^left_shift
//   scaled_k  = MultiplyByQuantizedMultiplierSmallerThanOneExp(shifted_k, mult_k, shift_k)
//   output    = MultiplyByQuantizedMultiplierSmallerThanOneExp(scaled_1 + scaled_2, out_mult,
//               out_shift) + output_offset, clamped to the activation range.
// MultiplyByQuantizedMultiplierSmallerThanOneExp(x, m, s) with s <= 0 is
// RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, m), -s): the same arithmetic as
// MultiplyByQuantizedMultiplier for a non-positive shift (requantize.h), which is used here.
//
// Accumulator bound: |input + offset| <= 255 and left_shift <= 22, so |shifted_k| <= 255 * 2^22
// < 2^30; SaturatingRoundingDoublingHighMul with a multiplier < 2^31 and a right shift do not grow
// a magnitude, so |scaled_1 + scaled_2| < 2^31, and the output requantization shrinks it again.
#include "add_s8.h"

#include "nn_types.h"
#include "requantize.h"

tlm_status tlm_add_s8_check(const tlm_add_params* p, int32_t count) {
  if (count < 1) return TLM_ERR_SHAPE;
  if (tlm_detail::bad_offsets(p->input1_offset, p->output_offset) ||
      tlm_detail::bad_offsets(p->input2_offset, p->output_offset) ||
      tlm_detail::bad_activation(p->activation_min, p->activation_max) ||
      p->left_shift < 0 || p->left_shift > 22 ||
      tlm_detail::bad_multiplier(p->input1_multiplier, p->input1_shift) || p->input1_shift > 0 ||
      tlm_detail::bad_multiplier(p->input2_multiplier, p->input2_shift) || p->input2_shift > 0 ||
      tlm_detail::bad_multiplier(p->output_multiplier, p->output_shift) || p->output_shift > 0)
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_add_s8(const tlm_add_params* p, int32_t count, const int8_t* input1,
                const int8_t* input2, int8_t* output) {
  using tlm_detail::multiply_by_quantized_multiplier;
  const int32_t scale = int32_t{1} << p->left_shift;
  for (int32_t i = 0; i < count; ++i) {
    const int32_t shifted1 = (input1[i] + p->input1_offset) * scale;
    const int32_t shifted2 = (input2[i] + p->input2_offset) * scale;
    const int32_t scaled1 =
        multiply_by_quantized_multiplier(shifted1, p->input1_multiplier, p->input1_shift);
    const int32_t scaled2 =
        multiply_by_quantized_multiplier(shifted2, p->input2_multiplier, p->input2_shift);
    int32_t out = multiply_by_quantized_multiplier(scaled1 + scaled2, p->output_multiplier,
                                                   p->output_shift) +
                  p->output_offset;
    if (out < p->activation_min) out = p->activation_min;
    if (out > p->activation_max) out = p->activation_max;
    output[i] = static_cast<int8_t>(out);
  }
}
