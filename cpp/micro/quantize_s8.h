// QUANTIZE, int8 output: float32 -> int8 (quantization) and int8 -> int8 (requantization).
#ifndef TINYLEARN_MICRO_QUANTIZE_S8_H
#define TINYLEARN_MICRO_QUANTIZE_S8_H

#include <stdint.h>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

// Check for the float32 input: scale finite and > 0, output offset in [-128, 127], the int8-only
// fields 0; TLM_OK when tlm_quantize_f32_s8 may run on `count` (>= 1) elements.
tlm_status tlm_quantize_f32_s8_check(const tlm_quantize_params* params, int32_t count);

// output[i] = clamp(round(input[i] / scale) + output_offset, -128, 127), x / scale in float32,
// halves away from zero; NaN gives output_offset. output must not overlap input. No scratch.
void tlm_quantize_f32_s8(const tlm_quantize_params* params, int32_t count, const float* input,
                         int8_t* output);

// Check for the int8 input: offsets, multiplier and shift in range, scale 0; TLM_OK when
// tlm_requantize_s8 may run on `count` (>= 1) elements.
tlm_status tlm_requantize_s8_check(const tlm_quantize_params* params, int32_t count);

// output[i] = clamp(output_offset + requantize(input[i] + input_offset), -128, 127)
// Elementwise: output may be input (exactly the same bytes); no other overlap. No scratch.
void tlm_requantize_s8(const tlm_quantize_params* params, int32_t count, const int8_t* input,
                       int8_t* output);

#endif  // TINYLEARN_MICRO_QUANTIZE_S8_H
