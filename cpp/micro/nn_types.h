// Shapes shared by the int8 kernels (NHWC), and the window checks of the convolution and pooling
// kernels.
#ifndef TINYLEARN_MICRO_NN_TYPES_H
#define TINYLEARN_MICRO_NN_TYPES_H

#include <stdint.h>

#include "tinylearn/micro/micro.h"

// CONV_2D and DEPTHWISE_CONV_2D: input [batches, input_h, input_w, input_c], filter
// [output_c, filter_h, filter_w, input_c] (conv) or [1, filter_h, filter_w, output_c] (depthwise),
// output [batches, output_h, output_w, output_c].
typedef struct tlm_conv_dims {
  int32_t batches;
  int32_t input_h, input_w, input_c;
  int32_t filter_h, filter_w;
  int32_t output_h, output_w, output_c;
} tlm_conv_dims;

// MAX_POOL_2D and AVERAGE_POOL_2D: input [batches, input_h, input_w, channels], output
// [batches, output_h, output_w, channels] (the filter size is in tlm_pool_params).
typedef struct tlm_pool_dims {
  int32_t batches;
  int32_t input_h, input_w;
  int32_t channels;
  int32_t output_h, output_w;
} tlm_pool_dims;

// Accumulation depth limit of the convolutions (as TLM_FC_MAX_IN_FEATURES): each product
// (x + input_offset) * w has |.| <= 255 * 128 = 32640, so 32768 of them stay below 2^30.
#define TLM_CONV_MAX_DEPTH 32768
#define TLM_PRODUCT_BOUND 32640

namespace tlm_detail {

// One spatial axis of a sliding window: `in` input positions, `out` output positions, a filter of
// `filter` taps `dilation` apart, moved by `stride`, starting at -pad. Accepts only windows as
// TFLite's SAME / VALID padding produces them: 0 <= pad < effective filter <= 2^24, and the last
// window starting inside the input ((out - 1) * stride - pad <= in - 1). Then every window
// overlaps the input when dilation is 1 (the pools never divide by 0), and every coordinate the
// kernels compute, out_y * stride - pad + dilation * filter_y, lies in (-2^24, 2^29): no int32
// overflow (in, out <= 2^28: check_tensor's element limit).
inline tlm_status check_window(int32_t in, int32_t out, int32_t filter, int32_t stride,
                               int32_t dilation, int32_t pad) {
  if (in < 1 || out < 1 || filter < 1) return TLM_ERR_SHAPE;
  if (stride < 1 || dilation < 1 || pad < 0) return TLM_ERR_BAD_PARAMS;
  const int64_t effective = int64_t{filter - 1} * dilation + 1;
  if (effective > (int64_t{1} << 24) || pad >= effective) return TLM_ERR_BAD_PARAMS;
  if (int64_t{out - 1} * stride - pad > in - 1) return TLM_ERR_SHAPE;
  return TLM_OK;
}

inline bool bad_offsets(int32_t input_offset, int32_t output_offset) {
  return input_offset < -127 || input_offset > 128 || output_offset < -128 || output_offset > 127;
}

inline bool bad_activation(int32_t min, int32_t max) {
  return min < -128 || max > 127 || min > max;
}

// A Q31 multiplier and shift MultiplyByQuantizedMultiplier accepts.
inline bool bad_multiplier(int32_t multiplier, int32_t shift) {
  return multiplier < 0 || shift < -31 || shift > 30;
}

// The checks CONV_2D and DEPTHWISE_CONV_2D share once their windows are valid: accumulation
// depth (products per output), offsets, clamp, per-channel multipliers, and the bias bound
// |bias| <= INT32_MAX - depth * TLM_PRODUCT_BOUND.
template <typename P>
inline tlm_status check_conv_common(const P* p, int64_t depth, int32_t output_c,
                                    const int32_t* multipliers, const int32_t* shifts,
                                    const int32_t* bias) {
  if (depth > TLM_CONV_MAX_DEPTH) return TLM_ERR_ACCUMULATOR_RANGE;
  if (bad_offsets(p->input_offset, p->output_offset) ||
      bad_activation(p->activation_min, p->activation_max))
    return TLM_ERR_BAD_PARAMS;
  for (int32_t o = 0; o < output_c; ++o)
    if (bad_multiplier(multipliers[o], shifts[o])) return TLM_ERR_BAD_PARAMS;
  if (bias) {
    const int64_t limit = INT32_MAX - depth * TLM_PRODUCT_BOUND;
    for (int32_t o = 0; o < output_c; ++o) {
      const int64_t b = bias[o];
      if (b > limit || -b > limit) return TLM_ERR_ACCUMULATOR_RANGE;
    }
  }
  return TLM_OK;
}

}  // namespace tlm_detail

#endif  // TINYLEARN_MICRO_NN_TYPES_H
