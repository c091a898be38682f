// 2-D convolution, int8, on a sparse filter (format.h, TLM_TYPE_INT8_SPARSE): the results of
// tlm_conv2d_s8 on the same filter, bit for bit.
#ifndef TINYLEARN_MICRO_CONV2D_S8_SPARSE_H
#define TINYLEARN_MICRO_CONV2D_S8_SPARSE_H

#include "conv2d_s8.h"
#include "sparse_s8.h"

// As tlm_conv2d_s8 (and its check, tlm_conv2d_s8_check), with the filter [output_c, filter_h,
// filter_w, input_c] as an encoding tlm_sparse_s8_check accepted (rows = output_c, cols =
// filter_h * filter_w * input_c). Output pixels in raster order, each pixel's window read before
// it is written, as tlm_conv2d_s8: an output trailing its input by window_lead stays exact.
void tlm_conv2d_s8_sparse(const tlm_conv2d_params* params, const tlm_conv_dims* dims,
                          const int32_t* multipliers, const int32_t* shifts, const int8_t* input,
                          const tlm_sparse_s8* filter, const int32_t* bias, int8_t* output);

#endif  // TINYLEARN_MICRO_CONV2D_S8_SPARSE_H
