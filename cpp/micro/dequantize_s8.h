// DEQUANTIZE, int8 -> float32 (TFLite DEQUANTIZE).
#ifndef TINYLEARN_MICRO_DEQUANTIZE_S8_H
#define TINYLEARN_MICRO_DEQUANTIZE_S8_H

#include <stdint.h>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

// Checks parameters (offset in [-127, 128], scale finite); TLM_OK when the kernel may run on
// `count` (>= 1) elements.
tlm_status tlm_dequantize_s8_check(const tlm_dequantize_params* params, int32_t count);

// output[i] = scale * (input[i] + input_offset), in float32. output must not overlap input.
void tlm_dequantize_s8(const tlm_dequantize_params* params, int32_t count, const int8_t* input,
                       float* output);

#endif  // TINYLEARN_MICRO_DEQUANTIZE_S8_H
