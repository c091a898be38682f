// tlm_conv2d_s8's int32 sum per output pixel and channel, bias + sum over the window's taps inside
// the input of (x + input_offset) * w, taken over the channel's entries only (a zero weight adds
// a zero product), then the same requantization (requantize.h's MultiplyByQuantizedMultiplier,
// offset, clamp): tlm_conv2d_s8's outputs exactly. Integer sums are exact in any order: every
// partial sum below is a sum of a subset of the dense kernel's products, or sum(x * w) and
// input_offset * sum(w) over the window's taps inside the input (each |.| <= 128 * 128 * depth
// <= 2^29), so nothing leaves int32 within tlm_conv2d_s8_check's accumulator bound.
//
// An entry's position p in its channel's row is the tap (f_y, f_x, c) of OHWI order, p = (f_y *
// filter_w + f_x) * input_c + c. Without dilation, the tap lies at input offset p + f_y * (input_w
// - filter_w) * input_c from the window's first pixel, f_y followed as p grows (no division).
// The filter rows inside the input, [y0, y1), are the same for a whole output row: entries
// before them are only stepped over, entries after them not visited.
//   * Windows whose columns all lie inside the input: in groups of 4 (else 2) pixels along the
//     row, each entry decoded once for the group, input_offset folded in as input_offset *
//     sum(w) once per channel and group, when the output does not overlap the input (a trailing
//     output, format.h, is written pixel by pixel, as the dense kernel writes it); a lone window
//     the same way.
//   * Windows reaching past the left or right edge also check the tap's column.
// Dilated windows follow (f_y, f_x, c) entry by entry, as the dense kernel's tap loop.
// Loops keep scalar accumulators: -Os (the firmware) neither unrolls a loop over pixels nor keeps
// an array of sums in registers.
#include "conv2d_s8_sparse.h"
#include "host_simd.h"

#include "requantize.h"

namespace {

using tlm_detail::conv2d_requantize;


struct Geometry {
  int32_t in_c, f_w, out_c;
  int32_t filter_row;  // positions per filter row: f_w * in_c
  int32_t skip;        // input bytes from the end of a window row to the next one's start
};

// One channel's entries (count of them at steps / values) and one output row's filter rows
// inside the input, [y0, y1), as positions [begin, end).
struct Channel {
  const uint8_t* steps;
  const int8_t* values;
  uint32_t count;
  int32_t begin, end;
};

// Sums over windows whose columns are all inside the input: pixel k's window starts at input
// index first + k * pitch (first possibly outside the input: only taps inside are read). Writes
// sum(x * w) of each of the N pixels to a[k], returns sum(w), over the taps in rows [y0, y0 +
// rows). The tap pointer q and the positions left in the current filter row (rem) follow the
// entries; a row change adds the input's row skip.
template <int N>
__attribute__((noinline)) int32_t sums(const Geometry& g, const Channel& e, const int8_t* input,
                                       int32_t first, int32_t y0, int32_t rows, int32_t pitch,
                                       int32_t* a) {
  const uint8_t* s = e.steps;
  const uint8_t* const end = s + e.count;
  int32_t pos = -1;
  for (; s != end; ++s) {  // entries above the input: stepped over
    pos += int32_t{*s} + 1;
    if (pos >= e.begin) break;
  }
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, wsum = 0;
  if (s != end) {
    const int8_t* v = e.values + (s - e.steps);
    const int8_t* q = input + (first + y0 * g.skip + pos);
    int32_t rem = e.begin + g.filter_row - pos, rows_left = rows;
    for (;;) {
      while (rem <= 0) {
        rem += g.filter_row;
        q += g.skip;
        if (--rows_left == 0) goto done;  // entries below the input: not visited
      }
      const int32_t w = *v++;
      wsum += w;
      a0 += q[0] * w;
      if (N >= 2) a1 += q[pitch] * w;
      if (N == 4) a2 += q[2 * pitch] * w, a3 += q[3 * pitch] * w;
      if (++s == end) break;
      const int32_t step = int32_t{*s} + 1;
      q += step;
      rem -= step;
    }
  }
done:
  a[0] = a0;
  if (N >= 2) a[1] = a1;
  if (N == 4) a[2] = a2, a[3] = a3;
  return wsum;
}

// A window reaching past the left or right edge: taps in rows [y0, y0 + rows) and columns
// [x0, x1), followed as in sums (the column within the row: filter_row - rem).
__attribute__((noinline)) int32_t edge_sum(const Geometry& g, const Channel& e,
                                           const int8_t* input, int32_t first, int32_t y0,
                                           int32_t rows, int32_t x0, int32_t x1,
                                           int32_t input_offset) {
  const uint8_t* s = e.steps;
  const uint8_t* const end = s + e.count;
  int32_t pos = -1;
  for (; s != end; ++s) {
    pos += int32_t{*s} + 1;
    if (pos >= e.begin) break;
  }
  int32_t acc = 0;
  if (s != end) {
    const int8_t* v = e.values + (s - e.steps);
    const int8_t* q = input + (first + y0 * g.skip + pos);
    int32_t rem = e.begin + g.filter_row - pos, rows_left = rows;
    // filter_row - rem - c0 < width: the column lies in [x0, x1).
    const int32_t c0 = g.filter_row - x0 * g.in_c;
    const uint32_t width = uint32_t((x1 - x0) * g.in_c);
    for (;;) {
      while (rem <= 0) {
        rem += g.filter_row;
        q += g.skip;
        if (--rows_left == 0) return acc;
      }
      if (uint32_t(c0 - rem) < width)  // else zero padding: the position is omitted
        acc += (q[0] + input_offset) * *v;
      ++v;
      if (++s == end) break;
      const int32_t step = int32_t{*s} + 1;
      q += step;
      rem -= step;
    }
  }
  return acc;
}

}  // namespace

TLM_HOST_CLONES void tlm_conv2d_s8_sparse(const tlm_conv2d_params* p, const tlm_conv_dims* d,
                                          const int32_t* multipliers, const int32_t* shifts,
                                          const int8_t* input, const tlm_sparse_s8* filter,
                                          const int32_t* bias, int8_t* output) {
  const int32_t in_h = d->input_h, in_w = d->input_w, in_c = d->input_c;
  const int32_t f_h = d->filter_h, f_w = d->filter_w, out_c = d->output_c;
  const Geometry g{in_c, f_w, out_c, f_w * in_c, (in_w - f_w) * in_c};
  const int32_t input_offset = p->input_offset;
  const int32_t dil_h = p->dilation_h, dil_w = p->dilation_w;
  // Groups of pixels only when the output cannot overwrite input a group still reads.
  const uintptr_t in_lo = reinterpret_cast<uintptr_t>(input);
  const uintptr_t in_hi =
      in_lo + uintptr_t(d->batches) * uintptr_t(in_h) * uintptr_t(in_w) * uintptr_t(in_c);
  const uintptr_t out_lo = reinterpret_cast<uintptr_t>(output);
  const uintptr_t out_hi = out_lo + uintptr_t(d->batches) * uintptr_t(d->output_h) *
                                        uintptr_t(d->output_w) * uintptr_t(out_c);
  const bool groups = out_hi <= in_lo || in_hi <= out_lo;
  const int32_t pitch = p->stride_w * in_c;
  for (int32_t b = 0; b < d->batches; ++b) {
    for (int32_t out_y = 0; out_y < d->output_h; ++out_y) {
      const int32_t in_y_origin = out_y * p->stride_h - p->pad_top;
      int8_t* out_row = output + (b * d->output_h + out_y) * d->output_w * out_c;
      if (dil_h != 1 || dil_w != 1) {
        for (int32_t out_x = 0; out_x < d->output_w; ++out_x) {  // dilated: tap by tap
          const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
          const uint8_t* steps = filter->steps;
          const int8_t* values = filter->values;
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
              acc += (input[((b * in_h + in_y) * in_w + in_x) * in_c + c] + input_offset) *
                     values[j];
            }
            steps += count;
            values += count;
            out_row[out_x * out_c + o] =
                conv2d_requantize(p, acc + (bias ? bias[o] : 0), multipliers[o], shifts[o]);
          }
        }
        continue;
      }
      const int32_t y0 = in_y_origin < 0 ? -in_y_origin : 0;
      const int32_t y1 = in_h - in_y_origin < f_h ? in_h - in_y_origin : f_h;
      for (int32_t out_x = 0; out_x < d->output_w;) {
        const int32_t in_x_origin = out_x * p->stride_w - p->pad_left;
        int8_t* out = out_row + out_x * out_c;
        // Index of the window's first tap in the input (possibly outside it).
        const int32_t first = ((b * in_h + in_y_origin) * in_w + in_x_origin) * in_c;
        Channel e{filter->steps, filter->values, 0, y0 * g.filter_row, y1 * g.filter_row};
        const bool columns_inside = in_x_origin >= 0 && in_x_origin + f_w <= in_w;
        // Pixels in this group: 4 (or 2) whose windows' columns all lie inside the input.
        auto fits = [&](int32_t k) {
          return out_x + k <= d->output_w && in_x_origin + (k - 1) * p->stride_w + f_w <= in_w;
        };
        const int32_t n = !(columns_inside && groups) ? 1 : fits(4) ? 4 : fits(2) ? 2 : 1;
        const int32_t x0 = in_x_origin < 0 ? -in_x_origin : 0;
        const int32_t x1 = in_w - in_x_origin < f_w ? in_w - in_x_origin : f_w;
        for (int32_t o = 0; o < out_c; ++o) {
          e.count = filter->counts[o];
          const int32_t bias_o = bias ? bias[o] : 0;
          if (columns_inside) {
            int32_t acc[4];
            const int32_t wsum = n == 4 ? sums<4>(g, e, input, first, y0, y1 - y0, pitch, acc)
                               : n == 2 ? sums<2>(g, e, input, first, y0, y1 - y0, pitch, acc)
                                        : sums<1>(g, e, input, first, y0, y1 - y0, pitch, acc);
            const int32_t base = input_offset * wsum + bias_o;
            for (int32_t k = 0; k < n; ++k)
              out[k * out_c + o] = conv2d_requantize(p, acc[k] + base, multipliers[o], shifts[o]);
          } else {
            out[o] = conv2d_requantize(
                p, edge_sum(g, e, input, first, y0, y1 - y0, x0, x1, input_offset) + bias_o,
                multipliers[o], shifts[o]);
          }
          e.steps += e.count;
          e.values += e.count;
        }
        out_x += n;
      }
    }
  }
}
