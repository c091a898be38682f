// Which operators the core is built with. Each TLM_WITH_<OP> defaults to 1; define it to 0 (e.g.
// -DTLM_WITH_SOFTMAX=0, or through firmware/CMakeLists.txt's TL_OPS) to leave the operator out
// of model.cpp's validation and interpreter. A blob using a left-out operator is then rejected by
// tlm_model_init with TLM_ERR_UNKNOWN_OP, and the kernel's code is not linked (with
// -ffunction-sections -Wl,--gc-sections), which keeps small firmware small.
#ifndef TINYLEARN_MICRO_OPS_CONFIG_H
#define TINYLEARN_MICRO_OPS_CONFIG_H

#ifndef TLM_WITH_FULLY_CONNECTED
#define TLM_WITH_FULLY_CONNECTED 1
#endif
// The fixed-point variant of FULLY_CONNECTED (24-byte params; format.h), kept for blobs written
// before the reference variant. Without it, such a blob is an unknown operator.
#ifndef TLM_WITH_FULLY_CONNECTED_FIXED_POINT
#define TLM_WITH_FULLY_CONNECTED_FIXED_POINT TLM_WITH_FULLY_CONNECTED
#endif
// FULLY_CONNECTED with per-channel weights (a scales input). Without it, such a blob is an
// unknown operator.
#ifndef TLM_WITH_FULLY_CONNECTED_PER_CHANNEL
#define TLM_WITH_FULLY_CONNECTED_PER_CHANNEL TLM_WITH_FULLY_CONNECTED
#endif
#ifndef TLM_WITH_CONV_2D
#define TLM_WITH_CONV_2D 1
#endif
#ifndef TLM_WITH_DEPTHWISE_CONV_2D
#define TLM_WITH_DEPTHWISE_CONV_2D 1
#endif
#ifndef TLM_WITH_MAX_POOL_2D
#define TLM_WITH_MAX_POOL_2D 1
#endif
#ifndef TLM_WITH_AVERAGE_POOL_2D
#define TLM_WITH_AVERAGE_POOL_2D 1
#endif
#ifndef TLM_WITH_MEAN
#define TLM_WITH_MEAN 1
#endif
#ifndef TLM_WITH_ADD
#define TLM_WITH_ADD 1
#endif
#ifndef TLM_WITH_CONCATENATION
#define TLM_WITH_CONCATENATION 1
#endif
#ifndef TLM_WITH_SOFTMAX
#define TLM_WITH_SOFTMAX 1
#endif
#ifndef TLM_WITH_RELU
#define TLM_WITH_RELU 1
#endif
#ifndef TLM_WITH_RESHAPE
#define TLM_WITH_RESHAPE 1
#endif
#ifndef TLM_WITH_QUANTIZE
#define TLM_WITH_QUANTIZE 1
#endif
#ifndef TLM_WITH_DEQUANTIZE
#define TLM_WITH_DEQUANTIZE 1
#endif

// Sparse int8 weights (format.h, TLM_TYPE_INT8_SPARSE) for FULLY_CONNECTED and CONV_2D. Without
// them, a blob with a sparse tensor is rejected (TLM_ERR_BAD_TENSOR) and neither the encoding's
// check nor the sparse kernels are linked.
#ifndef TLM_WITH_SPARSE
#define TLM_WITH_SPARSE 1
#endif

// Checks of tlm_model_init that serve a host runner: refusing tensors no operator uses (a host
// allocates the arena a blob claims; TLM_ERR_UNUSED_TENSOR) and saying where a blob is rejected
// (tlm_model.error_op / error_tensor). A device's arena is a fixed array, and its firmware
// reports the status only: firmware/CMakeLists.txt builds without them (TL_HOST_VALIDATION=OFF),
// which keeps the smallest image within 4 KB of flash.
#ifndef TLM_WITH_HOST_VALIDATION
#define TLM_WITH_HOST_VALIDATION 1
#endif

#endif  // TINYLEARN_MICRO_OPS_CONFIG_H
