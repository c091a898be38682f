// Depthwise 2-D convolution, int8, per-channel requantization (TFLite DEPTHWISE_CONV_2D with int8
// input, int8 per-channel filter, int32 bias).
#ifndef TINYLEARN_MICRO_DEPTHWISE_CONV2D_S8_H
#define TINYLEARN_MICRO_DEPTHWISE_CONV2D_S8_H

#include <stdint.h>

#include "nn_types.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

// Checks parameters, dims (output_c == input_c * depth_multiplier), per-channel multipliers and
// shifts and biases; TLM_OK when the kernel may run.
//   multipliers, shifts: [output_c]; bias: [output_c] or null
tlm_status tlm_depthwise_conv2d_s8_check(const tlm_depthwise_conv2d_params* params,
                                         const tlm_conv_dims* dims, const int32_t* multipliers,
                                         const int32_t* shifts, const int32_t* bias);

// output[b, y, x, c * dm + m] = clamp(requantize(bias + sum over the window of
//   (input[b, ., ., c] + input_offset) * filter[0, ., ., c * dm + m]) + output_offset)
//   input:  [batches, input_h, input_w, input_c]
//   filter: [1, filter_h, filter_w, output_c], symmetric (zero point 0)
//   output: [batches, output_h, output_w, output_c]; must not overlap input
// Needs no scratch memory. Call only after tlm_depthwise_conv2d_s8_check returned TLM_OK.
void tlm_depthwise_conv2d_s8(const tlm_depthwise_conv2d_params* params,
                             const tlm_conv_dims* dims, const int32_t* multipliers,
                             const int32_t* shifts, const int8_t* input, const int8_t* filter,
                             const int32_t* bias, int8_t* output);

// Host fast path (host_simd.h): the bytes tlm_depthwise_conv2d_s8 writes for output rows
// [row_begin, row_end) of the [batches * output_h] rows, bit for bit, channels in AVX2 vectors.
// `scratch`: tlm_depthwise_conv2d_s8_fast_scratch_bytes(dims) bytes, any alignment, one per
// concurrent caller (thread; not kept between calls). It holds the filter rearranged as int16
// pairs of filter rows, and a band of input rows widened to int16 and interleaved two by two,
// with the padding filled in: about 32 KB of them, or as many as one output row's window needs
// (bounded by the dims: filter_h / 2 + 1 pairs of padded rows). Bands run in raster order, each
// band's input read before its outputs are written, so an output trailing its input by
// window_lead (nn_types.h) stays exact for one caller over all rows. Returns false, writing
// nothing, where this build, CPU or shape (depth multiplier > 1, dilation) has no fast path;
// with row_begin == row_end it only answers that (no work, scratch untouched).
size_t tlm_depthwise_conv2d_s8_fast_scratch_bytes(const tlm_conv_dims* dims);
bool tlm_depthwise_conv2d_s8_fast(const tlm_depthwise_conv2d_params* params,
                                  const tlm_conv_dims* dims, const int32_t* multipliers,
                                  const int32_t* shifts, const int8_t* input,
                                  const int8_t* filter, const int32_t* bias, int32_t row_begin,
                                  int32_t row_end, void* scratch, int8_t* output);

#endif  // TINYLEARN_MICRO_DEPTHWISE_CONV2D_S8_H
