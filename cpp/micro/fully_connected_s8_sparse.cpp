// The dense kernels' int32 sum, bias + sum over i of (x[i] + input_offset) * w[o, i], taken over
// the row's entries only (a zero weight adds a zero product; integer sums are exact in any order
// and stay within the dense kernel's accumulator bound, a subset of its products), then the same
// requantization: the dense kernels' outputs exactly.
#include "fully_connected_s8_sparse.h"

#include "requantize.h"
#include "requantize_fp64.h"

namespace {

// acc plus row o's sum from its `count` entries at steps/values; advances them past the row.
// Out of line, with a tap pointer and an end pointer: few enough registers that -Os (the
// firmware) keeps the whole loop in them.
__attribute__((noinline)) int32_t sparse_row(const int8_t* x, int32_t input_offset, uint32_t count,
                                             const uint8_t*& steps, const int8_t*& values,
                                             int32_t acc) {
  if (count == 0) return acc;
  const uint8_t* s = steps;
  const uint8_t* const end = s + count;
  const int8_t* v = values;
  const int8_t* q = x + *s;  // position -1 + step + 1
  for (;;) {
    acc += (*q + input_offset) * *v++;
    if (++s == end) break;
    q += int32_t{*s} + 1;
  }
  steps = end;
  values = v;
  return acc;
}

}  // namespace

void tlm_fully_connected_s8_sparse(const tlm_fully_connected_params* p, const tlm_fc_dims* d,
                                   const int8_t* input, const tlm_sparse_s8* w,
                                   const int32_t* bias, int8_t* output) {
  const int32_t in_n = d->in_features, out_n = d->out_features;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    const uint8_t* steps = w->steps;
    const int8_t* values = w->values;
    for (int32_t o = 0; o < out_n; ++o) {
      const int32_t acc =
          sparse_row(x, p->input_offset, w->counts[o], steps, values, bias ? bias[o] : 0);
      output[b * out_n + o] = tlm_detail::fc_requantize(p, acc);
    }
  }
}

void tlm_fully_connected_ref_s8_sparse(const tlm_fully_connected_ref_params* p,
                                       const tlm_fc_dims* d, const int8_t* input,
                                       const tlm_sparse_s8* w, const int32_t* bias,
                                       const int32_t* scales, int8_t* output) {
  const int32_t in_n = d->in_features, out_n = d->out_features;
  for (int32_t b = 0; b < d->batches; ++b) {
    const int8_t* x = input + b * in_n;
    const uint8_t* steps = w->steps;
    const int8_t* values = w->values;
    for (int32_t o = 0; o < out_n; ++o) {
      const int32_t acc =
          sparse_row(x, p->base.input_offset, w->counts[o], steps, values, bias ? bias[o] : 0);
      output[b * out_n + o] = tlm_detail::fc_ref_requantize(p, scales, o, acc);
    }
  }
}
