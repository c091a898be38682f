// Concatenation of int8 tensors along one axis (TFLite CONCATENATION, int8: every input has the
// output's scale and zero point, so it is a copy).
#ifndef TINYLEARN_MICRO_CONCATENATION_S8_H
#define TINYLEARN_MICRO_CONCATENATION_S8_H

#include <stdint.h>

#include "tinylearn/micro/micro.h"

#define TLM_CONCATENATION_MAX_INPUTS 6

// The tensors seen as [outer, axis, inner]: outer is the product of the dims before the axis,
// inner of those after it; input k has axis_sizes[k] along the axis, the output their sum.
typedef struct tlm_concatenation_dims {
  int32_t outer;
  int32_t inner;
  int32_t input_count;  // 1..TLM_CONCATENATION_MAX_INPUTS
  int32_t axis_sizes[TLM_CONCATENATION_MAX_INPUTS];
} tlm_concatenation_dims;

// Checks dims; TLM_OK when the kernel may run. (The caller checks that outer * sum(axis_sizes) *
// inner is the output's size.)
tlm_status tlm_concatenation_s8_check(const tlm_concatenation_dims* dims);

// output[o, :, i] = input_0[o, :, i] ++ input_1[o, :, i] ++ ...
//   inputs: input_count pointers; output: [outer, sum(axis_sizes), inner], disjoint from every
//   input (inputs may overlap each other). No scratch memory. Call only after the check.
void tlm_concatenation_s8(const tlm_concatenation_dims* dims, const int8_t* const* inputs,
                          int8_t* output);

#endif  // TINYLEARN_MICRO_CONCATENATION_S8_H
