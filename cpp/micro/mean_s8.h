// Mean over height and width of an NHWC tensor, int8 (TFLite MEAN over axes 1 and 2, as Keras
// GlobalAveragePooling2D converts).
#ifndef TINYLEARN_MICRO_MEAN_S8_H
#define TINYLEARN_MICRO_MEAN_S8_H

#include <stdint.h>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

typedef struct tlm_mean_dims {
  int32_t batches;
  int32_t height, width;  // reduced
  int32_t channels;
} tlm_mean_dims;

// Largest height * width accepted (the int32 sum, see mean_s8.cpp).
#define TLM_MEAN_MAX_ELEMENTS (1 << 23)

// Checks parameters and dims; TLM_OK when the kernel may run.
tlm_status tlm_mean_s8_check(const tlm_mean_params* params, const tlm_mean_dims* dims);

// output[b, c] = clamp(requantize(sum over (y, x) of (input[b, y, x, c] + input_offset))
//                      + output_offset, -128, 127); the multiplier holds 1 / (height * width).
//   input: [batches, height, width, channels]; output: [batches, channels] (any shape with these
//   elements), must not overlap input. Needs no scratch memory. Call only after the check.
void tlm_mean_s8(const tlm_mean_params* params, const tlm_mean_dims* dims, const int8_t* input,
                 int8_t* output);

#endif  // TINYLEARN_MICRO_MEAN_S8_H
