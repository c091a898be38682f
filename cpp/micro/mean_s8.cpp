// Follows TFLite's reference_ops::QuantizedMeanOrSum (compute_sum = false,
// tensorflow/lite/kernels/internal/reference/reduce.h). That is the path reduce.cc's EvalMean
// takes for int8 under kReference whatever the axes and keep_dims (the 4-D axes-{1,2} special case
// there, optimized_integer_ops::Mean, runs only under kGenericOptimized). It sums each output's
// inputs in int32 (its temp_sum), subtracts input_zero_point * num_elements, then applies
// MultiplyByQuantizedMultiplier with a multiplier and shift that Eval derives from Prepare's
// QuantizeMultiplier(input_scale / output_scale):
//     shift = min(floor(log2(num_elements)), 32, 31 + output_shift)
//     output_multiplier = (int64(output_multiplier) << shift) / num_elements   (truncating)
//     output_shift -= shift
// adds the output zero point and clamps to [-128, 127] (no fused activation). The converter does
// that derivation (tinylearn::mean_params) and stores the result in tlm_mean_params, so this kernel
// needs no 64-bit division.
//
// Accumulator bound: with count = height * width <= 2^23 (TLM_MEAN_MAX_ELEMENTS), |sum| <= 128 *
// count <= 2^30 and |sum + input_offset * count| <= 255 * count < 2^31.
#include "mean_s8.h"

#include "nn_types.h"
#include "requantize.h"

tlm_status tlm_mean_s8_check(const tlm_mean_params* p, const tlm_mean_dims* d) {
  if (d->batches < 1 || d->height < 1 || d->width < 1 || d->channels < 1) return TLM_ERR_SHAPE;
  if (int64_t{d->height} * d->width > TLM_MEAN_MAX_ELEMENTS) return TLM_ERR_ACCUMULATOR_RANGE;
  if (tlm_detail::bad_offsets(p->input_offset, p->output_offset) ||
      tlm_detail::bad_multiplier(p->output_multiplier, p->output_shift))
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_mean_s8(const tlm_mean_params* p, const tlm_mean_dims* d, const int8_t* input,
                 int8_t* output) {
  const int32_t count = d->height * d->width, channels = d->channels;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * count * channels;
    for (int32_t c = 0; c < channels; ++c) {
      int32_t sum = 0;
      for (int32_t i = 0; i < count; ++i) sum += x[i * channels + c];
      // TFLite: temp_sum - input_zero_point * num_elements_in_axis.
      const int32_t shifted = sum + p->input_offset * count;
      int64_t out = int64_t{tlm_detail::multiply_by_quantized_multiplier(
                        shifted, p->output_multiplier, p->output_shift)} +
                    p->output_offset;
      if (out < -128) out = -128;
      if (out > 127) out = 127;
      output[b * channels + c] = static_cast<int8_t>(out);
    }
  }
}
