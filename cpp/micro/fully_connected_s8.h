// Fully connected int8 kernel (TFLite FULLY_CONNECTED, int8 in/out, int32 bias).
#ifndef TINYLEARN_MICRO_FULLY_CONNECTED_S8_H
#define TINYLEARN_MICRO_FULLY_CONNECTED_S8_H

#include <stdint.h>

#include "requantize.h"
#include "requantize_fp64.h"
#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

namespace tlm_detail {

// The last step of the fully connected kernels (dense and sparse weights alike): the int32 sum
// requantized, plus the output offset (in 64 bits: |acc| <= 2^31 - 1 and |offset| <= 128, so
// no case can wrap), clamped to the activation range.
inline int8_t fc_clamp(int64_t out, int32_t lo, int32_t hi) {
  if (out < lo) out = lo;
  if (out > hi) out = hi;
  return static_cast<int8_t>(out);
}
// Fixed point (tlm_fully_connected_params): MultiplyByQuantizedMultiplier.
inline int8_t fc_requantize(const tlm_fully_connected_params* p, int32_t acc) {
  acc = multiply_by_quantized_multiplier(acc, p->output_multiplier, p->output_shift);
  return fc_clamp(int64_t{acc} + p->output_offset, p->activation_min, p->activation_max);
}
// TFLite's reference (tlm_fully_connected_ref_params): round(double(acc) * scale) exactly, with
// output channel o's scale from `scales` [out, 3] when given, else the params' one.
inline int8_t fc_ref_requantize(const tlm_fully_connected_ref_params* p, const int32_t* scales,
                                int32_t o, int32_t acc) {
  uint64_t m;
  int32_t e;
  if (scales) {
    m = uint64_t(uint32_t(scales[3 * o])) | (uint64_t(uint32_t(scales[3 * o + 1])) << 32);
    e = scales[3 * o + 2];
  } else {
    m = uint64_t(p->scale_mantissa_lo) | (uint64_t(p->scale_mantissa_hi) << 32);
    e = p->scale_exponent;
  }
  return fc_clamp(requantize_fp64(acc, m, e) + p->base.output_offset, p->base.activation_min,
                  p->base.activation_max);
}

}  // namespace tlm_detail

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

// Host fast path (host_simd.h) of tlm_fully_connected_ref_s8, bit for bit, on weights packed once
// (tlm_fully_connected_ref_s8_fast_pack into tlm_fully_connected_ref_s8_fast_packed_bytes(dims)
// bytes, 32-byte aligned: weights in blocks of 8 output channels, bias, exact scales), with the
// requantization in the host's IEEE-754 doubles (exactly what requantize_fp64.h emulates).
//   input:  `samples` operands [batches, in_features], sample s at input + s * sample_stride
//   output: [batches, out_features] each, sample s at output + s * sample_stride; must not
//           overlap any input
//   blocks [block_begin, block_end) of tlm_fully_connected_ref_s8_fast_blocks(dims): block b is
//           the output channels [8b, min(8b + 8, out_features)), the only ones written
//   scratch: tlm_fully_connected_ref_s8_fast_scratch_bytes(dims) bytes, any alignment
//   scales:  the same per-channel scales the plain kernel takes (or null), read only for scales
//           too small for a normal double
// The pack takes any int8 weights. The kernel returns false, writing nothing, where this build or
// CPU has no fast path.
size_t tlm_fully_connected_ref_s8_fast_packed_bytes(const tlm_fc_dims* dims);
void tlm_fully_connected_ref_s8_fast_pack(const tlm_fully_connected_ref_params* params,
                                          const tlm_fc_dims* dims, const int8_t* weights,
                                          const int32_t* bias, const int32_t* scales,
                                          void* packed);
int32_t tlm_fully_connected_ref_s8_fast_blocks(const tlm_fc_dims* dims);
size_t tlm_fully_connected_ref_s8_fast_scratch_bytes(const tlm_fc_dims* dims);
bool tlm_fully_connected_ref_s8_fast(const tlm_fully_connected_ref_params* params,
                                     const tlm_fc_dims* dims, const int8_t* input,
                                     const void* packed, const int32_t* scales, int32_t samples,
                                     size_t sample_stride, int32_t block_begin, int32_t block_end,
                                     void* scratch, int8_t* output);

#endif  // TINYLEARN_MICRO_FULLY_CONNECTED_S8_H
