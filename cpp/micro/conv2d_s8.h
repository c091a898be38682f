// 2-D convolution, int8, per-channel requantization (TFLite CONV_2D with int8 input, int8
// per-channel filter, int32 bias).
#ifndef TINYLEARN_MICRO_CONV2D_S8_H
#define TINYLEARN_MICRO_CONV2D_S8_H

#include <stdint.h>

#include "nn_types.h"
#include "requantize.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

namespace tlm_detail {

// acc (the window's sum) + bias, requantized per channel, plus the output offset, clamped: the
// last step of every conv2d kernel (dense and sparse filters alike).
// TFLite adds the offset in int32; |acc| <= 2^31 - 1 can only wrap there for absurd scales
// (undefined behaviour in TFLite): in 64 bits the clamp stays exact.
inline int8_t conv2d_requantize(const tlm_conv2d_params* p, int32_t acc, int32_t multiplier,
                                int32_t shift) {
  acc = multiply_by_quantized_multiplier(acc, multiplier, shift);
  int64_t out = int64_t{acc} + p->output_offset;
  if (out < p->activation_min) out = p->activation_min;
  if (out > p->activation_max) out = p->activation_max;
  return static_cast<int8_t>(out);
}

}  // namespace tlm_detail

// Checks parameters, dims, per-channel multipliers/shifts and biases before the kernel may run;
// TLM_OK when it may.
//   multipliers, shifts: [output_c]; bias: [output_c] or null
tlm_status tlm_conv2d_s8_check(const tlm_conv2d_params* params, const tlm_conv_dims* dims,
                               const int32_t* multipliers, const int32_t* shifts,
                               const int32_t* bias);

// output[b, y, x, o] = clamp(requantize_o(bias[o] + sum over the window's positions inside the
//                      input and every input channel of (input + input_offset) * filter[o, ...])
//                      + output_offset)
//   input:  [batches, input_h, input_w, input_c]
//   filter: [output_c, filter_h, filter_w, input_c], symmetric (zero point 0)
//   output: [batches, output_h, output_w, output_c]; must not overlap input
// Needs no scratch memory. Call only after tlm_conv2d_s8_check returned TLM_OK.
void tlm_conv2d_s8(const tlm_conv2d_params* params, const tlm_conv_dims* dims,
                   const int32_t* multipliers, const int32_t* shifts, const int8_t* input,
                   const int8_t* filter, const int32_t* bias, int8_t* output);

// Host fast path (host_simd.h): the bytes tlm_conv2d_s8 writes for output rows [row_begin,
// row_end) of the [batches * output_h] rows, bit for bit, computed as GEMM tiles read in place
// from bands of padded input rows in `scratch` (tlm_conv2d_s8_fast_scratch_bytes(dims) bytes,
// any alignment; one per concurrent caller): int16 rows for AVX2, bytes for AVX-512 VNNI.
// `packed`: the filter rearranged once by tlm_conv2d_s8_fast_pack into
// tlm_conv2d_s8_fast_packed_bytes(dims) bytes (32-byte aligned), in the layout of the inner loops
// this CPU runs (tlm_host_vnni() at pack time); the kernel runs the layout it finds, and returns
// false for a VNNI layout where tlm_host_vnni() has become false since.
// Bands run in raster order, each band's input read before its outputs are written, so an output
// trailing its input by window_lead (nn_types.h) stays exact for one caller over all rows.
// Returns false, writing nothing, where this build or CPU has no fast path (always on the
// firmware), for dilated filters, paddings of a filter width or more, and without `packed`.
size_t tlm_conv2d_s8_fast_scratch_bytes(const tlm_conv_dims* dims);
size_t tlm_conv2d_s8_fast_packed_bytes(const tlm_conv_dims* dims);
void tlm_conv2d_s8_fast_pack(const tlm_conv_dims* dims, const int8_t* filter, void* packed);
bool tlm_conv2d_s8_fast(const tlm_conv2d_params* params, const tlm_conv_dims* dims,
                        const int32_t* multipliers, const int32_t* shifts, const int8_t* input,
                        const void* packed, const int32_t* bias, int32_t row_begin,
                        int32_t row_end, void* scratch, int8_t* output);

#endif  // TINYLEARN_MICRO_CONV2D_S8_H
