// Follows TFLite's reference_integer_ops::AveragePool
// (tensorflow/lite/kernels/internal/reference/integer_ops/pooling.h), the kernel pooling.cc runs
// for int8 under kReference: the window is clipped to the input, its int32 sum is divided by the
// number of positions inside the input (padding does not count), rounding half away from zero
// with C's truncating division: sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count.
// Then the clamp to the activation range. TFLite returns an error when a window has no position
// inside the input; the window check (nn_types.h) rejects such parameters, so count >= 1.
//
// Accumulator bound: |sum| <= 128 * count and count <= filter_h * filter_w <= 2^23
// (TLM_AVG_POOL_MAX_AREA), so |sum| + count / 2 < 2^31.
#include "avg_pool2d_s8.h"
#include "host_simd.h"

tlm_status tlm_avg_pool2d_s8_check(const tlm_pool_params* p, const tlm_pool_dims* d) {
  if (d->batches < 1 || d->channels < 1) return TLM_ERR_SHAPE;
  tlm_status s;
  if ((s = tlm_detail::check_window(d->input_h, d->output_h, p->filter_h, p->stride_h, 1,
                                    p->pad_top)) != TLM_OK ||
      (s = tlm_detail::check_window(d->input_w, d->output_w, p->filter_w, p->stride_w, 1,
                                    p->pad_left)) != TLM_OK)
    return s;
  if (int64_t{p->filter_h} * p->filter_w > TLM_AVG_POOL_MAX_AREA) return TLM_ERR_ACCUMULATOR_RANGE;
  if (tlm_detail::bad_activation(p->activation_min, p->activation_max)) return TLM_ERR_BAD_PARAMS;
  return TLM_OK;
}

namespace {
constexpr int32_t kChunk = 32;  // channels summed together: 128 bytes of stack
}  // namespace

TLM_HOST_CLONES void tlm_avg_pool2d_s8(const tlm_pool_params* p, const tlm_pool_dims* d, const int8_t* input,
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
        const int32_t count = (f_y_end - f_y_start) * (f_x_end - f_x_start);
        int8_t* y = output + ((b * d->output_h + out_y) * d->output_w + out_x) * channels;
        // Channels kChunk at a time, the window's pixels outer: each pixel's channels are
        // consecutive bytes, so the sums vectorize (the same integer sums in another order).
        for (int32_t c0 = 0; c0 < channels; c0 += kChunk) {
          const int32_t n = channels - c0 < kChunk ? channels - c0 : kChunk;
          int32_t acc[kChunk] = {0};
          for (int32_t f_y = f_y_start; f_y < f_y_end; ++f_y)
            for (int32_t f_x = f_x_start; f_x < f_x_end; ++f_x) {
              const int8_t* x =
                  input + ((b * in_h + in_y_origin + f_y) * in_w + in_x_origin + f_x) * channels + c0;
              for (int32_t c = 0; c < n; ++c) acc[c] += x[c];
            }
          for (int32_t c = 0; c < n; ++c) {
            // Round to the closest integer, halves away from zero (TFLite's exact expression).
            int32_t v = acc[c];
            v = v > 0 ? (v + count / 2) / count : (v - count / 2) / count;
            if (v < p->activation_min) v = p->activation_min;
            if (v > p->activation_max) v = p->activation_max;
            y[c0 + c] = static_cast<int8_t>(v);
          }
        }
      }
    }
  }
}
