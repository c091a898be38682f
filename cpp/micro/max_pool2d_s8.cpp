// Follows TFLite's reference_integer_ops::MaxPool
// (tensorflow/lite/kernels/internal/reference/integer_ops/pooling.h), the kernel pooling.cc runs
// for int8 under kReference: the window is clipped to the input (filter_x_start = max(0,
// -in_x_origin), filter_x_end = min(filter_w, input_w - in_x_origin)), the maximum starts at -128,
// then is clamped to the activation range. No arithmetic, so no accumulator; the window check
// (nn_types.h) keeps every coordinate in int32.
#include "max_pool2d_s8.h"

tlm_status tlm_max_pool2d_s8_check(const tlm_pool_params* p, const tlm_pool_dims* d) {
  if (d->batches < 1 || d->channels < 1) return TLM_ERR_SHAPE;
  tlm_status s;
  if ((s = tlm_detail::check_window(d->input_h, d->output_h, p->filter_h, p->stride_h, 1,
                                    p->pad_top)) != TLM_OK ||
      (s = tlm_detail::check_window(d->input_w, d->output_w, p->filter_w, p->stride_w, 1,
                                    p->pad_left)) != TLM_OK)
    return s;
  if (tlm_detail::bad_activation(p->activation_min, p->activation_max)) return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

void tlm_max_pool2d_s8(const tlm_pool_params* p, const tlm_pool_dims* d, const int8_t* input,
                       int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, channels = d->channels;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      const int32_t f_y_start = in_y_origin < 0 ? -in_y_origin : 0;
      const int32_t f_y_end = p->filter_h < in_h - in_y_origin ? p->filter_h : in_h - in_y_origin;
      for (int32_t out_x = 0; out_x < d->output_w; ++out_x) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        const int32_t f_x_start = in_x_origin < 0 ? -in_x_origin : 0;
        const int32_t f_x_end =
            p->filter_w < in_w - in_x_origin ? p->filter_w : in_w - in_x_origin;
        int8_t* y = output + ((b * d->output_h + out_y) * d->output_w + out_x) * channels;
        for (int32_t c = 0; c < channels; ++c) {
          int32_t max = -128;
          for (int32_t f_y = f_y_start; f_y < f_y_end; ++f_y)
            for (int32_t f_x = f_x_start; f_x < f_x_end; ++f_x) {
              const int32_t v =
                  input[((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + f_x) * channels + c];
              if (v > max) max = v;
            }
          if (max < p->activation_min) max = p->activation_min;
          if (max > p->activation_max) max = p->activation_max;
          y[c] = static_cast<int8_t>(max);
        }
      }
    }
  }
}
