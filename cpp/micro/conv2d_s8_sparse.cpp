// tlm_conv2d_s8's int32 sum per output pixel and channel, bias + sum over the window's taps inside
// the input of (x + input_offset) * w, taken over the channel's entries only (a zero weight adds
// a zero product), then the same requantization (requantize.h's MultiplyByQuantizedMultiplier,
// offset, clamp): tlm_conv2d_s8's outputs exactly. Integer sums are exact in any order: every
// partial sum below is a sum of a subset of the dense kernel's products, or sum(x * w) and
// input_offset * sum(w) over the window (each |.| <= 128 * 128 * depth <= 2^29), so nothing
// leaves int32 within tlm_conv2d_s8_check's accumulator bound.
//
// An entry's position p in its channel's row is the tap (f_y, f_x, c) of OHWI order, p = (f_y *
// filter_w + f_x) * input_c + c. Without dilation, the tap lies at input offset p + f_y * (input_w
// - filter_w) * input_c from the window's first pixel, f_y followed as p grows (no division):
//   * windows wholly inside the input, in groups of 4 pixels along a row, decode each entry once
//     for the 4 (input_offset folded in as input_offset * sum(w), once per group) when the output
//     does not overlap the input (a trailing output, format.h, is written pixel by pixel, as the
//     dense kernel writes it); a lone inside window the same way for one pixel;
//   * border windows also follow f_x and omit the taps outside the input.
// Dilated windows follow (f_y, f_x, c) entry by entry, as the dense kernel's tap loop.
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

struct Geometry {
  int32_t in_h, in_w, in_c, f_h, f_w, out_c;
  int32_t filter_row;  // positions per filter row: f_w * in_c
  int32_t skip;        // input bytes from the end of a window row to the next one's start
};

// Channel o's sums over windows inside the input: the entries at steps/values (advanced past
// them), the window of pixel k starting at x + k * pitch; returns sum(w).
struct Inside {
  const uint8_t* steps;
  const int8_t* values;
  uint32_t count;
};

// Four pixels: each entry decoded once, four products (scalar accumulators: -Os neither unrolls
// a loop over the pixels nor keeps an array of sums in registers).
inline int32_t inside_sums4(const Geometry& g, const Inside& e, const int8_t* x, int32_t pitch,
                            int32_t* a) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, wsum = 0, pos = -1, row_end = g.filter_row;
  const int8_t* t = x;  // x + row skips so far
  for (uint32_t j = 0; j < e.count; ++j) {
    pos += int32_t{e.steps[j]} + 1;
    while (pos >= row_end) row_end += g.filter_row, t += g.skip;
    const int8_t* q = t + pos;
    const int32_t v = e.values[j];
    wsum += v;
    a0 += q[0] * v;
    a1 += q[pitch] * v;
    a2 += q[2 * pitch] * v;
    a3 += q[3 * pitch] * v;
  }
  a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
  return wsum;
}

inline int32_t inside_sum1(const Geometry& g, const Inside& e, const int8_t* x, int32_t* a) {
  int32_t a0 = 0, wsum = 0, pos = -1, row_end = g.filter_row;
  const int8_t* t = x;
  for (uint32_t j = 0; j < e.count; ++j) {
    pos += int32_t{e.steps[j]} + 1;
    while (pos >= row_end) row_end += g.filter_row, t += g.skip;
    const int32_t v = e.values[j];
    wsum += v;
    a0 += t[pos] * v;
  }
  a[0] = a0;
  return wsum;
}

// Pixels `N` (1 or 4) of one output row, windows inside the input, `pitch` input bytes apart,
// the first at x; outputs `out_c` bytes apart from out.
template <int N>
inline void inside_pixels(const tlm_conv2d_params* p, const Geometry& g, const tlm_sparse_s8* f,
                          const int32_t* multipliers, const int32_t* shifts, const int32_t* bias,
                          const int8_t* x, int32_t pitch, int8_t* out) {
  Inside e{f->steps, f->values, 0};
  for (int32_t o = 0; o < g.out_c; ++o) {
    e.count = f->counts[o];
    int32_t acc[4];
    const int32_t wsum = N == 4 ? inside_sums4(g, e, x, pitch, acc) : inside_sum1(g, e, x, acc);
    e.steps += e.count;
    e.values += e.count;
    const int32_t base = p->input_offset * wsum + (bias ? bias[o] : 0);
    for (int k = 0; k < N; ++k)
      out[k * g.out_c + o] = requantize(p, acc[k] + base, multipliers[o], shifts[o]);
  }
}

}  // namespace

TLM_HOST_CLONES void tlm_conv2d_s8_sparse(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                                          const int32_t* multipliers, const int32_t* shifts,
                                          const int8_t* input, const tlm_sparse_s8* filter,
                                          const int32_t* bias, int8_t* output) {
  const Geometry g{d->input_h, d->input_w, d->input_c, d->filter_h, d->filter_w, d->output_c,
                   d->filter_w * d->input_c, (d->input_w - d->filter_w) * d->input_c};
  const int32_t in_h = g.in_h, in_w = g.in_w, in_c = g.in_c, f_h = g.f_h, f_w = g.f_w;
  const int32_t out_c = g.out_c;
  const int32_t input_offset = p->input_offset;
  const int32_t dil_h = p->dilation_h, dil_w = p->dilation_w;
  const bool undilated = dil_h == 1 && dil_w == 1;
  // Groups of pixels only when the output cannot overwrite input a group still reads.
  const uintptr_t in_lo = reinterpret_cast<uintptr_t>(input);
  const uintptr_t in_hi = in_lo + uintptr_t(d->batches) * uintptr_t(in_h) * uintptr_t(in_w) * uintptr_t(in_c);
  const uintptr_t out_lo = reinterpret_cast<uintptr_t>(output);
  const uintptr_t out_hi =
      out_lo + uintptr_t(d->batches) * uintptr_t(d->output_h) * uintptr_t(d->output_w) * uintptr_t(out_c);
  const bool groups = out_hi <= in_lo || in_hi <= out_lo;
  const int32_t pitch = p->stride_w * in_c;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      const int32_t y0 = in_y_origin < 0 ? -in_y_origin : 0;
      const int32_t y1 = in_h - in_y_origin < f_h ? in_h - in_y_origin : f_h;
      const bool rows_inside = undilated && y0 == 0 && y1 == f_h;
      int8_t* out_row = output + (b * d->output_h + out_y) * d->output_w * out_c;
      for (int32_t out_x = 0; out_x < d->output_w;) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        int8_t* out = out_row + out_x * out_c;
        const bool inside = rows_inside && in_x_origin >= 0 && in_x_origin + f_w <= in_w;
        if (inside) {
          const int8_t* x = input + ((b * in_h + in_y_origin) * in_w + in_x_origin) * in_c;
          // 4 windows inside: the last one's right edge within the input.
          if (groups && out_x + 4 <= d->output_w && in_x_origin + 3 * p->stride_w + f_w <= in_w) {
            inside_pixels<4>(p, g, filter, multipliers, shifts, bias, x, pitch, out);
            out_x += 4;
          } else {
            inside_pixels<1>(p, g, filter, multipliers, shifts, bias, x, pitch, out);
            out_x += 1;
          }
          continue;
        }
        const uint8_t* steps = filter->steps;
        const int8_t* values = filter->values;
        if (undilated) {
          // Border window: taps in filter rows [y0, y1) and columns [x0, x1).
          const int32_t x0 = in_x_origin < 0 ? -in_x_origin : 0;
          const int32_t x1 = in_w - in_x_origin < f_w ? in_w - in_x_origin : f_w;
          // Index of the window's first tap (possibly outside the input; only taps inside are read).
          const int32_t first = ((b * in_h + in_y_origin) * in_w + in_x_origin) * in_c;
          for (int32_t o = 0; o < out_c; ++o) {
            const uint32_t count = filter->counts[o];
            int32_t acc = 0, pos = -1, f_y = 0, f_x = 0, tap_end = in_c, shift = 0;
            for (uint32_t j = 0; j < count; ++j) {
              pos += int32_t{steps[j]} + 1;
              while (pos >= tap_end) {
                tap_end += in_c;
                if (++f_x == f_w) f_x = 0, ++f_y, shift += g.skip;
              }
              if (uint32_t(f_y - y0) >= uint32_t(y1 - y0) || uint32_t(f_x - x0) >= uint32_t(x1 - x0))
                continue;  // zero padding: the position is omitted
              acc += (input[first + pos + shift] + input_offset) * values[j];
            }
            steps += count;
            values += count;
            out[o] = requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
          }
          ++out_x;
          continue;
        }
        for (int32_t o = 0; o < out_c; ++o) {  // dilated windows: tap by tap
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
        ++out_x;
      }
    }
  }
}
