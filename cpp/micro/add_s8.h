// Elementwise addition of two same-shape int8 tensors (TFLite ADD, int8, no broadcasting).
#ifndef TINYLEARN_MICRO_ADD_S8_H
#define TINYLEARN_MICRO_ADD_S8_H

#include <stdint.h>

#include "tinylearn/micro/format.h"
#include "tinylearn/micro/micro.h"

// Checks parameters; TLM_OK when the kernel may run on `count` (>= 1) elements.
tlm_status tlm_add_s8_check(const tlm_add_params* params, int32_t count);

// output[i] = clamp(requantize(rescale1(input1[i]) + rescale2(input2[i])) + output_offset)
// Each output element depends only on the same element of each input, so output may be input1 or
// input2 (exactly the same bytes); any other overlap is not allowed. No scratch memory.
void tlm_add_s8(const tlm_add_params* params, int32_t count, const int8_t* input1,
                const int8_t* input2, int8_t* output);

// Host fast path (host_simd.h): tlm_add_s8 on elements [begin, end), bit for bit, 8 lanes at a
// time; the same overlap rule. Returns false, writing nothing, where this build or CPU has none.
bool tlm_add_s8_fast(const tlm_add_params* params, int32_t begin, int32_t end,
                     const int8_t* input1, const int8_t* input2, int8_t* output);

// Host fast path for long runs: every output of the operator as a table of the 65,536 pairs of
// int8 inputs, table[(uint8(input1) << 8) | uint8(input2)], written once by
// tlm_add_s8_fast_table (TLM_ADD_TABLE_BYTES bytes) with tlm_add_s8_fast, so a lookup is the
// kernel's output by construction; tlm_add_s8_lookup then computes elements [begin, end) from it,
// with the same overlap rule. Both write nothing and return false where this build has no fast
// paths.
#define TLM_ADD_TABLE_BYTES 65536u
bool tlm_add_s8_fast_table(const tlm_add_params* params, int8_t* table);
bool tlm_add_s8_lookup(const int8_t* table, int32_t begin, int32_t end, const int8_t* input1,
                       const int8_t* input2, int8_t* output);

#endif  // TINYLEARN_MICRO_ADD_S8_H
