// 2-D average pooling, int8 (TFLite AVERAGE_POOL_2D; input and output share scale and zero point).
#ifndef TINYLEARN_MICRO_AVG_POOL2D_S8_H
#define TINYLEARN_MICRO_AVG_POOL2D_S8_H

#include <stdint.h>

#include "nn_types.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

// Largest filter area accepted (the int32 window sum, see avg_pool2d_s8.cpp).
#define TLM_AVG_POOL_MAX_AREA (1 << 23)

// Checks parameters and dims; TLM_OK when the kernel may run.
tlm_status tlm_avg_pool2d_s8_check(const tlm_pool_params* params, const tlm_pool_dims* dims);

// output[b, y, x, c] = clamp(round(sum / count)) over the window's `count` positions inside the
// input, rounded half away from zero.
//   input: [batches, input_h, input_w, channels]; output: [batches, output_h, output_w, channels],
//   must not overlap input. Needs no scratch memory. Call only after the check returned TLM_OK.
void tlm_avg_pool2d_s8(const tlm_pool_params* params, const tlm_pool_dims* dims,
                       const int8_t* input, int8_t* output);

#endif  // TINYLEARN_MICRO_AVG_POOL2D_S8_H
