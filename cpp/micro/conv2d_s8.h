// 2-D convolution, int8, per-channel requantization (TFLite CONV_2D with int8 input, int8
// per-channel filter, int32 bias).
#ifndef TINYLEARN_MICRO_CONV2D_S8_H
#define TINYLEARN_MICRO_CONV2D_S8_H

#include <stdint.h>

#include "nn_types.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

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

#endif  // TINYLEARN_MICRO_CONV2D_S8_H
