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

// ---- Host fast path (AVX2) ----------------------------------------------------------------------
//
// Depth multiplier 1 without dilation, as the plain kernel's first branch: pixels in raster order,
// per pixel the channels 16 (then 8) at a time in vectors, the last in_c % 8 as the 8 channels
// ending at in_c (one by one, as above, when in_c < 8).
// Numerics: x + input_offset is in [-255, 255] and the filter in [-128, 127], so each product has
// |.| <= 32640 and fits int16. With 16 channels of (x + offset) in int16 lanes, _mm256_madd_epi16
// against the filter with its odd (even) channels zeroed gives, per int32 lane, the even (odd)
// channel's product plus 0: exact. The int32 sums are the plain kernel's (|sum| < 2^30, plus the
// bounded bias), and requantize_avx2.h reproduces requantize.h lane by lane.
#if TLM_HOST_AVX2
#include <immintrin.h>

#include "requantize_avx2.h"

namespace {

TLM_AVX2_TARGET inline __m256i load_i32x8(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// y[0..7] = clamp(requantize(acc + bias) + output_offset) for channels [o, o + 8).
TLM_AVX2_TARGET inline void requantize_store8(const tlm_depthwise_conv2d_params* p, __m256i acc,
                                              const int32_t* multipliers, const int32_t* shifts,
                                              const int32_t* bias, int32_t o, int8_t* y) {
  if (bias) acc = _mm256_add_epi32(acc, load_i32x8(bias + o));
  acc = tlm_avx2::multiply_by_quantized_multiplier(acc, load_i32x8(multipliers + o),
                                                   load_i32x8(shifts + o));
  tlm_avx2::store_s8x8(y + o, tlm_avx2::offset_clamp(acc, p->output_offset, p->activation_min,
                                                     p->activation_max));
}

// Channels [o, o + 8) of one output pixel: `rows` x `cols` taps from x (input) and w (filter),
// consecutive taps c_n bytes apart, rows x_line (input) and w_line (filter) bytes apart.
TLM_AVX2_TARGET inline void channels8(const tlm_depthwise_conv2d_params* p, const int8_t* x_row,
                                      const int8_t* w_row, int32_t rows, int32_t cols,
                                      int32_t x_line, int32_t w_line, int32_t c_n,
                                      const int32_t* multipliers, const int32_t* shifts,
                                      const int32_t* bias, int32_t o, int8_t* y) {
  // 8 channels in int32 lanes; the int32 products are the same exact values.
  const __m256i offset = _mm256_set1_epi32(p->input_offset);
  __m256i acc = _mm256_setzero_si256();
  for (int32_t i = 0; i < rows; ++i, x_row += x_line, w_row += w_line) {
    const int8_t* x = x_row;
    const int8_t* w = w_row;
    for (int32_t j = 0; j < cols; ++j, x += c_n, w += c_n)
      acc = _mm256_add_epi32(
          acc, _mm256_mullo_epi32(_mm256_add_epi32(tlm_avx2::load_s8x8(x), offset),
                                  tlm_avx2::load_s8x8(w)));
  }
  requantize_store8(p, acc, multipliers, shifts, bias, o, y);
}

TLM_AVX2_TARGET void depthwise_fast(const tlm_depthwise_conv2d_params* p, const tlm_conv_dims* d,
                                    const int32_t* multipliers, const int32_t* shifts,
                                    const int8_t* input, const int8_t* filter,
                                    const int32_t* bias, int32_t row_begin, int32_t row_end,
                                    int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, c_n = d->input_c;  // output_c == input_c
  const int32_t f_h = d->filter_h, f_w = d->filter_w, out_h = d->output_h, out_w = d->output_w;
  const __m256i offset16 = _mm256_set1_epi16(static_cast<int16_t>(p->input_offset));
  const __m256i even = _mm256_set1_epi32(0x0000FFFF), odd = _mm256_set1_epi32(-65536);
  for (int32_t r = row_begin; r < row_end; ++r) {
    const int32_t b = r / out_h, out_y = r - b * out_h;
    const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
    const int32_t y0 = in_y_origin < 0 ? -in_y_origin : 0;
    const int32_t y1 = in_h - in_y_origin < f_h ? in_h - in_y_origin : f_h;
    for (int32_t out_x = 0; out_x < out_w; ++out_x) {
      const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
      const int32_t x0 = in_x_origin < 0 ? -in_x_origin : 0;
      const int32_t x1 = in_w - in_x_origin < f_w ? in_w - in_x_origin : f_w;
      // The window's first tap inside the input (filter row y0, column x0), and the filter's.
      const int8_t* x_first =
          input + ((b * in_h + in_y_origin + y0) * in_w + in_x_origin + x0) * c_n;
      const int8_t* w_first = filter + (y0 * f_w + x0) * c_n;
      const int32_t x_line = in_w * c_n, w_line = f_w * c_n;
      int8_t* y = output + (r * out_w + out_x) * c_n;
      int32_t c = 0;
      for (; c + 16 <= c_n; c += 16) {
        // acc_e: channels c + {0, 2, 4, 6, 8, 10, 12, 14}; acc_o: c + {1, 3, ..., 15}.
        __m256i acc_e = _mm256_setzero_si256(), acc_o = _mm256_setzero_si256();
        const int8_t* x_row = x_first + c;
        const int8_t* w_row = w_first + c;
        for (int32_t f_y = y0; f_y < y1; ++f_y, x_row += x_line, w_row += w_line) {
          const int8_t* x = x_row;
          const int8_t* w = w_row;
          for (int32_t f_x = x0; f_x < x1; ++f_x, x += c_n, w += c_n) {
            const __m256i xv = _mm256_add_epi16(tlm_avx2::load_s8x16_epi16(x), offset16);
            const __m256i wv = tlm_avx2::load_s8x16_epi16(w);
            acc_e = _mm256_add_epi32(acc_e, _mm256_madd_epi16(xv, _mm256_and_si256(wv, even)));
            acc_o = _mm256_add_epi32(acc_o, _mm256_madd_epi16(xv, _mm256_and_si256(wv, odd)));
          }
        }
        // Interleave back: unpack gives channels {0..3, 8..11} and {4..7, 12..15}.
        const __m256i lo = _mm256_unpacklo_epi32(acc_e, acc_o);
        const __m256i hi = _mm256_unpackhi_epi32(acc_e, acc_o);
        requantize_store8(p, _mm256_permute2x128_si256(lo, hi, 0x20), multipliers, shifts, bias,
                          c, y);
        requantize_store8(p, _mm256_permute2x128_si256(lo, hi, 0x31), multipliers, shifts, bias,
                          c + 8, y);
      }
      if (c + 8 <= c_n) {
        channels8(p, x_first + c, w_first + c, y1 - y0, x1 - x0, x_line, w_line, c_n,
                  multipliers, shifts, bias, c, y);
        c += 8;
      }
      if (c < c_n && c_n >= 8) {
        // The last in_c % 8 channels as the 8 channels ending at in_c. The ones recomputed get the
        // same bytes again; inside the pixel, still in bounds (its output lies below its window,
        // so rewriting it cannot change an input byte the window reads).
        channels8(p, x_first + c_n - 8, w_first + c_n - 8, y1 - y0, x1 - x0, x_line, w_line, c_n,
                  multipliers, shifts, bias, c_n - 8, y);
        c = c_n;
      }
      for (; c < c_n; ++c) {  // in_c < 8: one by one, as the plain kernel
        int32_t acc = 0;
        const int8_t* x_row = x_first + c;
        const int8_t* w_row = w_first + c;
        for (int32_t f_y = y0; f_y < y1; ++f_y, x_row += x_line, w_row += w_line)
          for (int32_t k = 0; k < x1 - x0; ++k)
            acc += w_row[k * c_n] * (x_row[k * c_n] + p->input_offset);
        if (bias) acc += bias[c];
        acc = tlm_detail::multiply_by_quantized_multiplier(acc, multipliers[c], shifts[c]);
        int64_t out = int64_t{acc} + p->output_offset;
        if (out < p->activation_min) out = p->activation_min;
        if (out > p->activation_max) out = p->activation_max;
        y[c] = static_cast<int8_t>(out);
      }
    }
  }
}

}  // namespace

bool tlm_depthwise_conv2d_s8_fast(const tlm_depthwise_conv2d_params* p, const tlm_conv_dims* d,
                                  const int32_t* multipliers, const int32_t* shifts,
                                  const int8_t* input, const int8_t* filter, const int32_t* bias,
                                  int32_t row_begin, int32_t row_end, int8_t* output) {
  if (!tlm_host_avx2() || p->depth_multiplier != 1 || p->dilation_h != 1 || p->dilation_w != 1)
    return false;
  depthwise_fast(p, d, multipliers, shifts, input, filter, bias, row_begin, row_end, output);
  return true;
}

#else  // no fast path in this build

bool tlm_depthwise_conv2d_s8_fast(const tlm_depthwise_conv2d_params*, const tlm_conv_dims*,
                                  const int32_t*, const int32_t*, const int8_t*, const int8_t*,
                                  const int32_t*, int32_t, int32_t, int8_t*) {
  return false;
}

#endif  // TLM_HOST_AVX2
