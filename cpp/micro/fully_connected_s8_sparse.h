// Fully connected int8 kernels on sparse weights (format.h, TLM_TYPE_INT8_SPARSE): the results of
// tlm_fully_connected_s8 / tlm_fully_connected_ref_s8 on the same weights, bit for bit.
#ifndef TINYLEARN_MICRO_FULLY_CONNECTED_S8_SPARSE_H
#define TINYLEARN_MICRO_FULLY_CONNECTED_S8_SPARSE_H

#include "fully_connected_s8.h"
#include "sparse_s8.h"

// As tlm_fully_connected_s8 (and its check, tlm_fully_connected_s8_check), with the weights
// [out_features, in_features] as an encoding tlm_sparse_s8_check accepted (rows = out_features,
// cols = in_features): only the entries are multiplied.
void tlm_fully_connected_s8_sparse(const tlm_fully_connected_params* params,
                                   const tlm_fc_dims* dims, const int8_t* input,
                                   const tlm_sparse_s8* weights, const int32_t* bias,
                                   int8_t* output);

// As tlm_fully_connected_ref_s8 (check: tlm_fully_connected_ref_s8_check), sparse weights.
void tlm_fully_connected_ref_s8_sparse(const tlm_fully_connected_ref_params* params,
                                       const tlm_fc_dims* dims, const int8_t* input,
                                       const tlm_sparse_s8* weights, const int32_t* bias,
                                       const int32_t* scales, int8_t* output);

#endif  // TINYLEARN_MICRO_FULLY_CONNECTED_S8_SPARSE_H
