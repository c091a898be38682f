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

// Window operators (conv, depthwise conv, pools) may write an output that trails their input in
// the arena. Their kernels compute output pixels in raster order, writing a pixel's out_c bytes
// while reading only its window, and the first input byte a window reads never moves backwards
// from pixel to pixel. So if out_offset + (q + 1) * out_c <= in_offset + first_read(q) for every
// output pixel q, every output byte is written after the last read of the input byte under it.
// window_lead() is the smallest in_offset - out_offset with that property:
//   max over q of (q + 1) * out_c - first_read(q), first_read(q) the byte offset (in the input
//   [n, h, w, c]) of the first position inside the input of pixel q's window.
// The core checks an overlap with it; the converter's planner places outputs with it.
inline int64_t window_lead(int32_t n, int32_t h, int32_t w, int32_t c, int32_t out_h,
                           int32_t out_w, int32_t out_c, int32_t stride_h, int32_t stride_w,
                           int32_t dilation_h, int32_t dilation_w, int32_t pad_top,
                           int32_t pad_left) {
  const int64_t never = int64_t{1} << 40;  // larger than any arena: no overlap allowed
  if (stride_h < 1 || stride_w < 1 || dilation_h < 1 || dilation_w < 1 || pad_top < 0 ||
      pad_left < 0)
    return never;
  int64_t lead = 0, q = 0;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oy = 0; oy < out_h; ++oy) {
      int64_t y = oy * stride_h - pad_top;
      if (y < 0) y += (-y + dilation_h - 1) / dilation_h * dilation_h;
      if (y > h - 1) y = h - 1;  // no position inside: conservative
      for (int64_t ox = 0; ox < out_w; ++ox, ++q) {
        int64_t x = ox * stride_w - pad_left;
        if (x < 0) x += (-x + dilation_w - 1) / dilation_w * dilation_w;
        if (x > w - 1) x = w - 1;
        const int64_t need = (q + 1) * out_c - ((b * h + y) * int64_t{w} + x) * c;
        if (need > lead) lead = need;
      }
    }
  return lead;
}

}  // namespace tlm_detail

#endif  // TINYLEARN_MICRO_NN_TYPES_H
