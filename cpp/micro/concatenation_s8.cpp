// Follows TFLite's reference_ops::Concatenation
// (tensorflow/lite/kernels/internal/reference/concatenation.h): for each outer index, the inputs'
// slices of axis_size * inner elements one after the other. For int8, concatenation.cc's Prepare
// requires every input to have the output's scale and zero point, so no value changes: the
// result is bit-exact by construction. No arithmetic on values, so no accumulator.
#include "concatenation_s8.h"

tlm_status tlm_concatenation_s8_check(const tlm_concatenation_dims* d) {
  if (d->input_count < 1 || d->input_count > TLM_CONCATENATION_MAX_INPUTS) return TLM_ERR_BAD_OP;
  if (d->outer < 1 || d->inner < 1) return TLM_ERR_SHAPE;
  for (int32_t k = 0; k < d->input_count; ++k)
    if (d->axis_sizes[k] < 1) return TLM_ERR_SHAPE;
  return TLM_OK;
}

void tlm_concatenation_s8(const tlm_concatenation_dims* d, const int8_t* const* inputs,
                          int8_t* output) {
  int8_t* y = output;
  for (int32_t o = 0; o < d->outer; ++o) {
    for (int32_t k = 0; k < d->input_count; ++k) {
      const int32_t n = d->axis_sizes[k] * d->inner;
      const int8_t* x = inputs[k] + o * n;
      for (int32_t i = 0; i < n; ++i) y[i] = x[i];
      y += n;
    }
  }
}
