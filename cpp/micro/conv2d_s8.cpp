// Follows TFLite's reference_integer_ops::ConvPerChannel
// (tensorflow/lite/kernels/internal/reference/integer_ops/conv.h), the kernel conv.cc runs for
// int8 under kReference: for each output position and channel, an int32 sum over the filter
// window of filter * (input + input_offset), skipping window positions outside the input ("zero
// padding by omitting"), then + bias, MultiplyByQuantizedMultiplier with the channel's multiplier
// and shift (double rounding, requantize.h), + output_offset, clamp to the activation range.
// Integer sums are exact, so the loop order does not matter as long as nothing overflows.
//
// Accumulator bound. input + input_offset lies in [-255, 255] and a filter tap in [-128, 127],
// so each product has |p| <= 32640 (TLM_PRODUCT_BOUND). At most filter_h * filter_w * input_c <=
// 32768 products are summed: |sum| <= 1,069,547,520 < 2^30; the check admits a bias only if
// |bias| <= INT32_MAX - depth * 32640, so sum + bias never leaves int32. (TFLite only notes the
// 2^16-products limit in a TODO; a model within these limits gets TFLite's exact result.)
#include "conv2d_s8.h"
#include "host_simd.h"

#include "requantize.h"

tlm_status tlm_conv2d_s8_check(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                               const int32_t* multipliers, const int32_t* shifts,
                               const int32_t* bias) {
  if (d->batches < 1 || d->input_c < 1 || d->output_c < 1) return TLM_ERR_SHAPE;
  tlm_status s;
  if ((s = tlm_detail::check_window(d->input_h, d->output_h, d->filter_h, p->stride_h,
                                    p->dilation_h, p->pad_top)) != TLM_OK ||
      (s = tlm_detail::check_window(d->input_w, d->output_w, d->filter_w, p->stride_w,
                                    p->dilation_w, p->pad_left)) != TLM_OK)
    return s;
  const int64_t depth = int64_t{d->filter_h} * d->filter_w * d->input_c;
  return tlm_detail::check_conv_common(p, depth, d->output_c, multipliers, shifts, bias);
}

namespace {

// acc (the window's sum) + bias, requantized per channel, plus the output offset, clamped.
// TFLite adds the offset in int32; |acc| <= 2^31 - 1 can only wrap there for absurd scales
// (undefined behaviour in TFLite): in 64 bits the clamp stays exact.
inline int8_t requantize(const tlm_conv2d_params* p, int32_t acc, int32_t multiplier,
                         int32_t shift) {
  acc = tlm_detail::multiply_by_quantized_multiplier(acc, multiplier, shift);
  int64_t out = int64_t{acc} + p->output_offset;
  if (out < p->activation_min) out = p->activation_min;
  if (out > p->activation_max) out = p->activation_max;
  return static_cast<int8_t>(out);
}

}  // namespace

TLM_HOST_CLONES void tlm_conv2d_s8(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                   const int32_t* multipliers, const int32_t* shifts, const int8_t* input,
                   const int8_t* filter, const int32_t* bias, int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t f_h = d->filter_h, f_w = d->filter_w;
  const int32_t out_c = d->output_c;
  const int32_t input_offset = p->input_offset;
  const int32_t filter_c = f_h * f_w * in_c;  // bytes of one output channel's filter
  const bool dense_window = p->dilation_h == 1 && p->dilation_w == 1;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      // Without dilation, the window's taps inside the input are rows [y0, y1) and columns
      // [x0, x1) of the filter: each row is one contiguous run of (x1 - x0) * in_c bytes in both
      // the input (NHWC) and the filter (OHWI). Same products, same int32 sums (exact whatever
      // the order), fewer loop levels; four output channels share each input load.
      const int32_t y0 = in_y_origin < 0 ? -in_y_origin : 0;
      const int32_t y1 = in_h - in_y_origin < f_h ? in_h - in_y_origin : f_h;
      for (int32_t out_x = 0; out_x < d->output_w; ++out_x) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        const int32_t x0 = in_x_origin < 0 ? -in_x_origin : 0;
        const int32_t x1 = in_w - in_x_origin < f_w ? in_w - in_x_origin : f_w;
        int8_t* out = output + ((b * d->output_h + out_y) * d->output_w + out_x) * out_c;
        int32_t o = 0;
        if (dense_window) {
          const int32_t run = (x1 - x0) * in_c;
          for (; o + 4 <= out_c; o += 4) {
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (int32_t f_y = y0; f_y < y1; ++f_y) {
              const int8_t* x =
                  input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + x0) * in_c;
              const int8_t* w0 = filter + ((o * f_h + f_y) * f_w + x0) * in_c;
              const int8_t *w1 = w0 + filter_c, *w2 = w1 + filter_c, *w3 = w2 + filter_c;
              for (int32_t i = 0; i < run; ++i) {
                const int32_t v = x[i] + input_offset;
                a0 += w0[i] * v;
                a1 += w1[i] * v;
                a2 += w2[i] * v;
                a3 += w3[i] * v;
              }
            }
            const int32_t acc[4] = {a0, a1, a2, a3};
            for (int32_t k = 0; k < 4; ++k)
              out[o + k] = requantize(p, acc[k] + (bias ? bias[o + k] : 0), multipliers[o + k],
                                      shifts[o + k]);
          }
          for (; o < out_c; ++o) {
            int32_t acc = 0;
            for (int32_t f_y = y0; f_y < y1; ++f_y) {
              const int8_t* x =
                  input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + x0) * in_c;
              const int8_t* w = filter + ((o * f_h + f_y) * f_w + x0) * in_c;
              for (int32_t i = 0; i < run; ++i) acc += w[i] * (x[i] + input_offset);
            }
            out[o] = requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
          }
          continue;
        }
        for (; o < out_c; ++o) {  // dilated windows: tap by tap
          int32_t acc = 0;
          for (int32_t f_y = 0; f_y < f_h; ++f_y) {
            const int32_t in_y = in_y_origin + p->dilation_h * f_y;
            if (in_y < 0 || in_y >= in_h) continue;  // zero padding: the position is omitted
            for (int32_t f_x = 0; f_x < f_w; ++f_x) {
              const int32_t in_x = in_x_origin + p->dilation_w * f_x;
              if (in_x < 0 || in_x >= in_w) continue;
              const int8_t* x = input + ((b * in_h + in_y) * in_w + in_x) * in_c;
              const int8_t* w = filter + ((o * f_h + f_y) * f_w + f_x) * in_c;
              for (int32_t i = 0; i < in_c; ++i) acc += w[i] * (x[i] + input_offset);
            }
          }
          out[o] = requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
        }
      }
    }
  }
}
