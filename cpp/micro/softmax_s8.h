// Softmax over the last dim, int8 in, int8 out (TFLite SOFTMAX, int8; output zero point -128,
// scale 1/256).
#ifndef TINYLEARN_MICRO_SOFTMAX_S8_H
#define TINYLEARN_MICRO_SOFTMAX_S8_H

#include <stdint.h>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

typedef struct tlm_softmax_dims {
  int32_t rows;   // product of every dim but the last
  int32_t depth;  // the last dim: softmax runs over it
} tlm_softmax_dims;

// Largest depth accepted (the Q12.19 sum of exponentials, see softmax_s8.cpp).
#define TLM_SOFTMAX_MAX_DEPTH 4095

// Checks parameters and dims; TLM_OK when the kernel may run.
tlm_status tlm_softmax_s8_check(const tlm_softmax_params* params, const tlm_softmax_dims* dims);

// output[r, c] = round(256 * exp(beta * s * (x[r, c] - max_r)) / sum_c' ...) - 128, in TFLite's
// gemmlowp fixed point (see softmax_s8.cpp).
//   input, output: [rows, depth]; output must not overlap input. No scratch memory.
void tlm_softmax_s8(const tlm_softmax_params* params, const tlm_softmax_dims* dims,
                    const int8_t* input, int8_t* output);

#endif  // TINYLEARN_MICRO_SOFTMAX_S8_H
