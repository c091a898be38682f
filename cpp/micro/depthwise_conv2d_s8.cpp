// Follows TFLite's reference_integer_ops::DepthwiseConvPerChannel
// (tensorflow/lite/kernels/internal/reference/integer_ops/depthwise_conv.h), the kernel
// depthwise_conv.cc runs for int8 under kReference. TFLite walks the input channels in chunks of
// 32 with one accumulator each; per output channel that is the same int32 sum over the filter
// window of filter * (input + input_offset) (positions outside the input omitted), then + bias,
// MultiplyByQuantizedMultiplier with the channel's multiplier and shift, + output_offset, clamp.
//
// Accumulator bound. Each product has |p| <= 255 * 128 = 32640 and a channel sums at most
// filter_h * filter_w <= 32768 of them: |sum| < 2^30, and the check bounds the bias by
// INT32_MAX - filter_h * filter_w * 32640, so sum + bias stays in int32.
#include "depthwise_conv2d_s8.h"
#include "host_simd.h"

#include "requantize.h"

tlm_status tlm_depthwise_conv2d_s8_check(const tlm_depthwise_conv2d_params* p,
                                         const tlm_conv_dims* d, const int32_t* multipliers,
                                         const int32_t* shifts, const int32_t* bias) {
  if (d->batches < 1 || d->input_c < 1 || d->output_c < 1) return TLM_ERR_SHAPE;
  if (p->depth_multiplier < 1) return TLM_ERR_BAD_PARAMS;
  if (int64_t{d->input_c} * p->depth_multiplier != d->output_c) return TLM_ERR_SHAPE;
  tlm_status s;
  if ((s = tlm_detail::check_window(d->input_h, d->output_h, d->filter_h, p->stride_h,
                                    p->dilation_h, p->pad_top)) != TLM_OK ||
      (s = tlm_detail::check_window(d->input_w, d->output_w, d->filter_w, p->stride_w,
                                    p->dilation_w, p->pad_left)) != TLM_OK)
    return s;
  const int64_t depth = int64_t{d->filter_h} * d->filter_w;
  return tlm_detail::check_conv_common(p, depth, d->output_c, multipliers, shifts, bias);
}

TLM_HOST_CLONES void tlm_depthwise_conv2d_s8(const tlm_depthwise_conv2d_params* p, const tlm_conv_dims* d,
                             const int32_t* multipliers, const int32_t* shifts,
                             const int8_t* input, const int8_t* filter, const int32_t* bias,
                             int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t f_h = d->filter_h, f_w = d->filter_w;
  const int32_t out_c = d->output_c, dm = p->depth_multiplier;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      for (int32_t out_x = 0; out_x < d->output_w; ++out_x) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        int8_t* y = output + ((b * d->output_h + out_y) * d->output_w + out_x) * out_c;
        if (dm == 1 && p->dilation_h == 1 && p->dilation_w == 1) {
          // Depth multiplier 1, no dilation: the taps inside the input are rows [y0, y1) and
          // columns [x0, x1) of the filter; channels innermost, kBlock at a time, so each tap's
          // input and filter bytes are contiguous. Same products, same int32 sums.
          const int32_t y0 = in_y_origin < 0 ? -in_y_origin : 0;
          const int32_t y1 = in_h - in_y_origin < f_h ? in_h - in_y_origin : f_h;
          const int32_t x0 = in_x_origin < 0 ? -in_x_origin : 0;
          const int32_t x1 = in_w - in_x_origin < f_w ? in_w - in_x_origin : f_w;
          constexpr int32_t kBlock = 8;
          for (int32_t c0 = 0; c0 < in_c; c0 += kBlock) {
            const int32_t n = in_c - c0 < kBlock ? in_c - c0 : kBlock;
            int32_t acc[kBlock] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int32_t f_y = y0; f_y < y1; ++f_y)
              for (int32_t f_x = x0; f_x < x1; ++f_x) {
                const int8_t* x =
                    input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + f_x) * in_c + c0;
                const int8_t* w = filter + (f_y * f_w + f_x) * out_c + c0;
                for (int32_t j = 0; j < n; ++j) acc[j] += w[j] * (x[j] + p->input_offset);
              }
            for (int32_t j = 0; j < n; ++j) {
              const int32_t o = c0 + j;
              int32_t a = acc[j] + (bias ? bias[o] : 0);
              a = tlm_detail::multiply_by_quantized_multiplier(a, multipliers[o], shifts[o]);
              int64_t out = int64_t{a} + p->output_offset;  // 64 bits: see conv2d_s8.cpp
              if (out < p->activation_min) out = p->activation_min;
              if (out > p->activation_max) out = p->activation_max;
              y[o] = static_cast<int8_t>(out);
            }
          }
          continue;
        }
        for (int32_t c = 0; c < in_c; ++c) {
          for (int32_t m = 0; m < dm; ++m) {
            const int32_t o = c * dm + m;
            int32_t acc = 0;
            for (int32_t f_y = 0; f_y < f_h; ++f_y) {
              const int32_t in_y = in_y_origin + p->dilation_h * f_y;
              if (in_y < 0 || in_y >= in_h) continue;  // zero padding: the position is omitted
              for (int32_t f_x = 0; f_x < f_w; ++f_x) {
                const int32_t in_x = in_x_origin + p->dilation_w * f_x;
                if (in_x < 0 || in_x >= in_w) continue;
                const int32_t x = input[((b * in_h + in_y) * in_w + in_x) * in_c + c];
                acc += filter[(f_y * f_w + f_x) * out_c + o] * (x + p->input_offset);
              }
            }
            if (bias) acc += bias[o];
            acc = tlm_detail::multiply_by_quantized_multiplier(acc, multipliers[o], shifts[o]);
            int64_t out = int64_t{acc} + p->output_offset;  // 64 bits: see conv2d_s8.cpp
            if (out < p->activation_min) out = p->activation_min;
            if (out > p->activation_max) out = p->activation_max;
            y[o] = static_cast<int8_t>(out);
          }
        }
      }
    }
  }
}
