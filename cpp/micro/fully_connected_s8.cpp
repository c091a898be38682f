#include "fully_connected_s8.h"

#include "requantize.h"

// Accumulator bound. input + input_offset lies in [-255, 255] (input in [-128, 127], offset in
// [-127, 128]) and a weight in [-128, 127], so each product has |p| <= 255 * 128 = 32640. With
// in_features <= 32768 the sum of products has |sum| <= 1,069,547,520 < 2^30, and the check below
// admits a bias only if |bias| <= INT32_MAX - in_features * 32640, so sum + bias never leaves int32.
tlm_status tlm_fully_connected_s8_check(const tlm_fully_connected_params* p,
                                        const tlm_fc_dims* d, const int32_t* bias) {
  if (d->batches < 1 || d->in_features < 1 || d->out_features < 1) return TLM_ERR_SHAPE;
  if (d->in_features > TLM_FC_MAX_IN_FEATURES) return TLM_ERR_ACCUMULATOR_RANGE;
  if (p->input_offset < -127 || p->input_offset > 128) return TLM_ERR_BAD_PARAMS;
  if (p->output_offset < -128 || p->output_offset > 127) return TLM_ERR_BAD_PARAMS;
  if (p->output_multiplier < 0 || p->output_shift < -31 || p->output_shift > 30)
    return TLM_ERR_BAD_PARAMS;
  if (p->activation_min < -128 || p->activation_max > 127 ||
      p->activation_min > p->activation_max)
    return TLM_ERR_BAD_PARAMS;
  if (bias) {
    const int64_t limit = INT32_MAX - int64_t{d->in_features} * 32640;
    for (int32_t o = 0; o < d->out_features; ++o) {
      const int64_t b = bias[o];
      if (b > limit || -b > limit) return TLM_ERR_ACCUMULATOR_RANGE;
    }
  }
  return TLM_OK;
}

void tlm_fully_connected_s8(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
                            const int8_t* input, const int8_t* weights, const int32_t* bias,
                            int8_t* output) {
  const int32_t in_n = d->in_features;
  const int32_t out_n = d->out_features;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    for (int32_t o = 0; o < out_n; ++o) {
      const int8_t* w = weights + o * in_n;
      int32_t acc = bias ? bias[o] : 0;
      for (int32_t i = 0; i < in_n; ++i) acc += (x[i] + p->input_offset) * w[i];
      acc = tlm_detail::multiply_by_quantized_multiplier(acc, p->output_multiplier,
                                                         p->output_shift);
      // |acc| <= 2^31 - 1 and |offset| <= 128: add in 64 bits so no case can wrap.
      int64_t out = int64_t{acc} + p->output_offset;
      if (out < p->activation_min) out = p->activation_min;
      if (out > p->activation_max) out = p->activation_max;
      output[b * out_n + o] = static_cast<int8_t>(out);
    }
  }
}
