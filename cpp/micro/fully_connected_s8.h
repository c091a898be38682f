// Fully connected int8 kernel (TFLite FULLY_CONNECTED, int8 in/out, int32 bias).
#ifndef TINYLEARN_MICRO_FULLY_CONNECTED_S8_H
#define TINYLEARN_MICRO_FULLY_CONNECTED_S8_H

#include <stdint.h>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

typedef struct tlm_fc_dims {
  int32_t batches;       // rows of input and output
  int32_t in_features;   // accumulation depth
  int32_t out_features;  // output channels
} tlm_fc_dims;

// Largest accumulation depth accepted (see the accumulator bound in fully_connected_s8.cpp).
#define TLM_FC_MAX_IN_FEATURES 32768

// Checks parameters, dims and biases before the kernel may run; TLM_OK when it may.
//   bias: [out_features] or null
tlm_status tlm_fully_connected_s8_check(const tlm_fully_connected_params* params,
                                        const tlm_fc_dims* dims, const int32_t* bias);

// output = clamp(requantize(bias + (input + input_offset) . weights^T) + output_offset)
//   input:   [batches, in_features]
//   weights: [out_features, in_features], symmetric (zero point 0)
//   bias:    [out_features] or null
//   output:  [batches, out_features]; must not overlap input
// Needs no scratch memory. Call only after tlm_fully_connected_s8_check returned TLM_OK.
void tlm_fully_connected_s8(const tlm_fully_connected_params* params, const tlm_fc_dims* dims,
                            const int8_t* input, const int8_t* weights, const int32_t* bias,
                            int8_t* output);

// The same with TFLite's reference requantization (format.h, tlm_fully_connected_ref_params):
//   scales: [out_features, 3] {mantissa_lo, mantissa_hi, exponent} per channel, or null for the
//           params' one scale.
tlm_status tlm_fully_connected_ref_s8_check(const tlm_fully_connected_ref_params* params,
                                            const tlm_fc_dims* dims, const int32_t* bias,
                                            const int32_t* scales);
void tlm_fully_connected_ref_s8(const tlm_fully_connected_ref_params* params,
                                const tlm_fc_dims* dims, const int8_t* input,
                                const int8_t* weights, const int32_t* bias, const int32_t* scales,
                                int8_t* output);

// Host fast path (host_simd.h) of tlm_fully_connected_ref_s8: output columns [out_begin, out_end)
// of every batch row, bit for bit, with the input offset applied once per row into `scratch`
// (tlm_fully_connected_ref_s8_fast_scratch_bytes(dims) bytes, 32-byte aligned) and the
// requantization in the host's IEEE-754 doubles (exactly what requantize_fp64.h emulates).
// Returns false, writing nothing, where this build or CPU has no fast path.
size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims* dims);
bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params* params,
                                     const tlm_fc_dims* dims, const int8_t* input,
                                     const int8_t* weights, const int32_t* bias,
                                     const int32_t* scales, int32_t out_begin, int32_t out_end,
                                     void* scratch, int8_t* output);

#endif  // TINYLEARN_MICRO_FULLY_CONNECTED_S8_H
