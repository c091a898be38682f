#include "fully_connected_s8.h"
#include "host_simd.h"

#include "requantize.h"
#include "requantize_fp64.h"

// Accumulator bound. input + input_offset lies in [-255, 255] (input in [-128, 127], offset in
// [-127, 128]) and a weight in [-128, 127], so each product has |p| <= 255 * 128 = 32640. With
// in_features <= 32768 the sum of products has |sum| <= 1,069,547,520 < 2^30, and the check below
// admits a bias only if |bias| <= INT32_MAX - in_features * 32640, so sum + bias never leaves int32.
namespace {

// The checks both variants share: dims, offsets, clamp and the accumulator bound.
inline tlm_status check_common(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
                               const int32_t* bias) {
  if (d->batches < 1 || d->in_features < 1 || d->out_features < 1) return TLM_ERR_SHAPE;
  if (d->in_features > TLM_FC_MAX_IN_FEATURES) return TLM_ERR_ACCUMULATOR_RANGE;
  if (p->input_offset < -127 || p->input_offset > 128) return TLM_ERR_BAD_PARAMS;
  if (p->output_offset < -128 || p->output_offset > 127) return TLM_ERR_BAD_PARAMS;
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

}  // namespace

tlm_status tlm_fully_connected_s8_check(const tlm_fully_connected_params* p,
                                        const tlm_fc_dims* d, const int32_t* bias) {
  const tlm_status s = check_common(p, d, bias);
  if (s != TLM_OK) return s;
  if (p->output_multiplier < 0 || p->output_shift < -31 || p->output_shift > 30)
    return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

TLM_HOST_CLONES void tlm_fully_connected_s8(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
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

namespace {

// A normalized mantissa (2^52 <= m < 2^53, or m == 0 for a zero scale) and an exponent in
// [0, 1100]: a finite non-negative double, as requantize_fp64 requires.
inline bool valid_scale(uint32_t lo, uint32_t hi, int32_t e) {
  const bool zero = lo == 0 && hi == 0;
  return (zero || (hi >= (1u << 20) && hi < (1u << 21))) && e >= 0 && e <= 1100;
}

}  // namespace

tlm_status tlm_fully_connected_ref_s8_check(const tlm_fully_connected_ref_params* p,
                                            const tlm_fc_dims* d, const int32_t* bias,
                                            const int32_t* scales) {
  const tlm_status s = check_common(&p->base, d, bias);
  if (s != TLM_OK) return s;
  if (p->base.output_multiplier != 0 || p->base.output_shift != 0) return TLM_ERR_BAD_PARAMS;
  if (!valid_scale(p->scale_mantissa_lo, p->scale_mantissa_hi, p->scale_exponent))
    return TLM_ERR_BAD_PARAMS;
  if (scales)
    for (int32_t o = 0; o < d->out_features; ++o)
      if (!valid_scale(uint32_t(scales[3 * o]), uint32_t(scales[3 * o + 1]), scales[3 * o + 2]))
        return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

// As tlm_fully_connected_s8 (same accumulator bound), then TFLite's reference requantization:
// round(double(acc) * scale) exactly (in 64 bits), plus the output offset, clamped to the
// activation range.
TLM_HOST_CLONES void tlm_fully_connected_ref_s8(const tlm_fully_connected_ref_params* p, const tlm_fc_dims* d,
                                const int8_t* input, const int8_t* weights, const int32_t* bias,
                                const int32_t* scales, int8_t* output) {
  const int32_t in_n = d->in_features;
  const int32_t out_n = d->out_features;
  const int32_t input_offset = p->base.input_offset;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    for (int32_t o = 0; o < out_n; ++o) {
      const int8_t* w = weights + o * in_n;
      int32_t acc = bias ? bias[o] : 0;
      for (int32_t i = 0; i < in_n; ++i) acc += (x[i] + input_offset) * w[i];
      uint64_t m;
      int32_t e;
      if (scales) {
        m = uint64_t(uint32_t(scales[3 * o])) | (uint64_t(uint32_t(scales[3 * o + 1])) << 32);
        e = scales[3 * o + 2];
      } else {
        m = uint64_t(p->scale_mantissa_lo) | (uint64_t(p->scale_mantissa_hi) << 32);
        e = p->scale_exponent;
      }
      int64_t out = tlm_detail::requantize_fp64(acc, m, e) + p->base.output_offset;
      if (out < p->base.activation_min) out = p->base.activation_min;
      if (out > p->base.activation_max) out = p->base.activation_max;
      output[b * out_n + o] = static_cast<int8_t>(out);
    }
  }
}
