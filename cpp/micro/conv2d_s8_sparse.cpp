// tlm_conv2d_s8's int32 sum per output pixel and channel, bias + sum over the window's taps inside
// the input of (x + input_offset) * w, taken over the channel's entries only (a zero weight adds
// a zero product; integer sums are exact in any order, within tlm_conv2d_s8_check's accumulator
// bound as a subset of the dense products), then the same requantization (requantize.h's
// MultiplyByQuantizedMultiplier, offset, clamp): tlm_conv2d_s8's outputs exactly.
//
// An entry's position p in its channel's row is the tap (f_y, f_x, c) of OHWI order, p = (f_y *
// filter_w + f_x) * input_c + c. A window wholly inside the input without dilation reads the tap
// at input offset p + f_y * (input_w - filter_w) * input_c from the window's first pixel, with
// f_y followed as p grows (no division). Other windows (at the border, or dilated) follow
// (f_y, f_x, c) entry by entry and omit taps outside the input, as the dense kernel does.
#include "conv2d_s8_sparse.h"
#include "host_simd.h"

#include "requantize.h"

namespace {

inline int8_t requantize(const tlm_conv2d_params* p, int32_t acc, int32_t multiplier,
                         int32_t shift) {
  acc = tlm_detail::multiply_by_quantized_multiplier(acc, multiplier, shift);
  int64_t out = int64_t{acc} + p->output_offset;
  if (out < p->activation_min) out = p->activation_min;
  if (out > p->activation_max) out = p->activation_max;
  return static_cast<int8_t>(out);
}

}  // namespace

TLM_HOST_CLONES void tlm_conv2d_s8_sparse(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                                          const int32_t* multipliers, const int32_t* shifts,
                                          const int8_t* input, const tlm_sparse_s8* filter,
                                          const int32_t* bias, int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t f_h = d->filter_h, f_w = d->filter_w;
  const int32_t out_c = d->output_c;
  const int32_t input_offset = p->input_offset;
  const int32_t filter_row = f_w * in_c;              // positions per filter row
  const int32_t skip = (in_w - f_w) * in_c;           // input bytes between two window rows
  const int32_t dil_h = p->dilation_h, dil_w = p->dilation_w;
  const bool undilated = dil_h == 1 && dil_w == 1;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      for (int32_t out_x = 0; out_x < d->output_w; ++out_x) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        int8_t* out = output + ((b * d->output_h + out_y) * d->output_w + out_x) * out_c;
        const bool inside = undilated && in_y_origin >= 0 && in_x_origin >= 0 &&
                            in_y_origin + f_h <= in_h && in_x_origin + f_w <= in_w;
        const uint8_t* steps = filter->steps;
        const int8_t* values = filter->values;
        if (inside) {
          const int8_t* x = input + ((b * in_h + in_y_origin) * in_w + in_x_origin) * in_c;
          for (int32_t o = 0; o < out_c; ++o) {
            const uint32_t count = filter->counts[o];
            int32_t acc = 0, pos = -1, row_end = filter_row, shift = 0;
            for (uint32_t j = 0; j < count; ++j) {
              pos += int32_t{steps[j]} + 1;
              while (pos >= row_end) row_end += filter_row, shift += skip;
              acc += (x[pos + shift] + input_offset) * values[j];
            }
            steps += count;
            values += count;
            out[o] = requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
          }
          continue;
        }
        for (int32_t o = 0; o < out_c; ++o) {
          const uint32_t count = filter->counts[o];
          int32_t acc = 0, f_y = 0, f_x = 0, c = -1;
          for (uint32_t j = 0; j < count; ++j) {
            c += int32_t{steps[j]} + 1;
            while (c >= in_c) {
              c -= in_c;
              if (++f_x == f_w) f_x = 0, ++f_y;
            }
            const int32_t in_y = in_y_origin + dil_h * f_y;
            const int32_t in_x = in_x_origin + dil_w * f_x;
            if (in_y < 0 || in_y >= in_h || in_x < 0 || in_x >= in_w) continue;  // omitted
            acc += (input[((b * in_h + in_y) * in_w + in_x) * in_c + c] + input_offset) * values[j];
          }
          steps += count;
          values += count;
          out[o] = requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
        }
      }
    }
  }
}
