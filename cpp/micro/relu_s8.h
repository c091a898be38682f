// Standalone requantizing RELU / RELU6 / RELU_N1_TO_1, int8 (TFLite RELU and RELU6 operators).
#ifndef TINYLEARN_MICRO_RELU_S8_H
#define TINYLEARN_MICRO_RELU_S8_H

#include <stdint.h>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

// Checks parameters; TLM_OK when the kernel may run on `count` (>= 1) elements.
tlm_status tlm_relu_s8_check(const tlm_relu_params* params, int32_t count);

// output[i] = clamp(output_offset + requantize(input[i] + input_offset), min, max)
// Elementwise: output may be input (exactly the same bytes); no other overlap. No scratch memory.
void tlm_relu_s8(const tlm_relu_params* params, int32_t count, const int8_t* input,
                 int8_t* output);

#endif  // TINYLEARN_MICRO_RELU_S8_H
