// tinylearn micro: the model blob format, version 1. This file is its one documentation.
//
// A model blob is a single little-endian byte string, read in place (from flash on a device).
// Every section starts at a 4-byte aligned offset; the blob itself must be 4-byte aligned.
//
//   offset  size  field
//   ------  ----  ----------------------------------------------------------------------------
//        0     4  magic "TLMB"
//        4     2  format version (TLM_FORMAT_VERSION); a reader rejects versions it does not know
//        6     2  header bytes (32)
//        8     4  total bytes of the blob
//       12     4  CRC-32 (IEEE 802.3, as zlib.crc32) of bytes [16, total)
//       16     4  arena bytes: the exact peak the memory planner computed
//       20     2  tensor count  (<= TLM_MAX_TENSORS)
//       22     2  operator count (<= TLM_MAX_OPS)
//       24     2  input tensor index  (an int8 or float32 arena tensor)
//       26     2  output tensor index (an int8 or float32 arena tensor)
//       28     4  flags (0 in version 1)
//       32        tensor records, 32 bytes each (tlm_tensor_record)
//        .        operator records, 32 bytes each (tlm_op_record)
//        .        payload: operator parameters and constant tensor data, each 4-byte aligned
//
// Quantization follows the TFLite int8 spec: real = scale * (q - zero_point); activations are
// asymmetric int8, weights symmetric int8 (zero point 0, per tensor or per channel), biases int32
// with scale input_scale * weight_scale and zero point 0. Requantization multipliers are
// precomputed by the converter (exactly as TFLite's QuantizeMultiplier does) and stored in the
// operator parameters, so the core does integer arithmetic only.
//
// Enumerations below are append-only: a number, once given, keeps its meaning forever. New
// operator codes and tensor types leave the header and the records unchanged, so the version stays
// 1: a core that predates an operator rejects a blob using it with TLM_ERR_UNKNOWN_OP (and one
// that predates float32 tensors rejects them with TLM_ERR_BAD_TENSOR). A core may also be built
// without some operators (cpp/micro/ops_config.h); it then rejects them with TLM_ERR_UNKNOWN_OP.
//
// Layouts are TFLite's: activations NHWC; convolution filters [out_c, kh, kw, in_c] (OHWI);
// depthwise filters [1, kh, kw, in_c * depth_multiplier]. Per-channel requantization: the
// multipliers and shifts are two int32 constant tensors [out_c] (scale 0), operator inputs.
// Padding is explicit (pad_top, pad_left, computed by the converter as TFLite does for SAME or
// VALID); a position outside the input contributes nothing (TFLite's "zero padding by omitting").
//
// In place: an elementwise operator (ADD, RELU, int8 QUANTIZE) may write its output over one of
// its inputs when the two occupy exactly the same arena bytes; a RESHAPE output either aliases
// its input exactly (no work at all) or is disjoint from it (a copy). Every other operand pair of
// an operator must be disjoint in the arena; partial overlaps are always rejected (TLM_ERR_BAD_OP).
#ifndef TINYLEARN_MICRO_FORMAT_H
#define TINYLEARN_MICRO_FORMAT_H

#include <stdint.h>

#define TLM_MAGIC_0 'T'
#define TLM_MAGIC_1 'L'
#define TLM_MAGIC_2 'M'
#define TLM_MAGIC_3 'B'
#define TLM_FORMAT_VERSION 1u
#define TLM_HEADER_BYTES 32u
#define TLM_TENSOR_RECORD_BYTES 32u
#define TLM_OP_RECORD_BYTES 32u
#define TLM_MAX_TENSORS 1024u
#define TLM_MAX_OPS 1024u
#define TLM_NO_TENSOR 0xFFFFu

// Tensor element types. float32 tensors live in the arena only (QUANTIZE's input, DEQUANTIZE's
// output; the model's input and output may be float32 when the graph starts with QUANTIZE or ends
// with DEQUANTIZE).
// TLM_TYPE_INT8_SPARSE: an int8 constant whose zeros are left out (see "Sparse int8 weights"
// below); only as FULLY_CONNECTED weights and CONV_2D filters.
enum tlm_type {
  TLM_TYPE_INT8 = 1,
  TLM_TYPE_INT32 = 2,
  TLM_TYPE_FLOAT32 = 3,
  TLM_TYPE_INT8_SPARSE = 4,
};

// Sparse int8 weights (TLM_TYPE_INT8_SPARSE). The record is an int8 weight tensor's (dims the
// dense [out, in] or [out_c, kh, kw, in_c], scale and zero point as the dense tensor's), storage
// TLM_STORAGE_BLOB; `offset` points at the encoding instead of the dense bytes. The tensor is
// seen as R = dims[0] rows (output channels) of C = dims[1] * ... * dims[rank - 1] weights, the
// dense row-major order (for a filter, C = kh * kw * in_c in OHWI order); 1 <= C <= 65535.
//
//   offset  size                 field
//        0  4                    u32 n: entries of all rows (nonzero weights plus fillers)
//        4  align4(2 R)          u16 count[R]: entries of each row, in row order; sum = n
//        .  align4(n)            u8  step[n]: each entry's position gap (below)
//        .  align4(n)            i8  value[n]: each entry's weight
//   total  4 + align4(2 R) + 2 align4(n) bytes (padding bytes 0); the record's byte count
//
// Row r owns the count[r] entries after those of rows 0..r-1. Its position starts at -1 and each
// entry moves it by step + 1: the entry is the weight at that column, every column no entry
// names is 0. Positions thus strictly increase by construction, and the last must be < C. A gap
// of more than 255 zeros is bridged by filler entries of value 0 (a zero product, the same sum).
// Why u8 steps: at density d a row costs 2 d C bytes plus 2 (count), 1 byte per weight dense,
// so the encoding pays below d = 0.5 (0.4x at 80% sparsity), where u16 indices (3 d C) would pay
// below d = 0.33 only (0.6x at 80%). Zero gaps over 255 are rare at the sparsities that pay
// (each filler costs 2 bytes); the converter writes, per tensor, whichever encoding is smaller.
// The kernels (fully_connected_s8_sparse, conv2d_s8_sparse) add the same int32 products as the
// dense kernels, minus the zeros, then requantize the same way: bit-exact outputs.
// tlm_model_init rejects with TLM_ERR_BAD_TENSOR an encoding outside the blob, n above R * C,
// counts whose sum is not n, a row whose last position is C or more, C above 65535, and a sparse
// record in the arena or of rank 1; a sparse tensor as any other operand (a depthwise filter, a
// bias, ...) is TLM_ERR_SHAPE. Cores older than type 4, and cores built without sparse weights
// (ops_config.h: TLM_WITH_SPARSE=0; the firmware's TL_OPS=AUTO builds them only for a model that
// has some), reject it as an unknown tensor type (TLM_ERR_BAD_TENSOR), so the version stays 1.

// Where a tensor's bytes live.
enum tlm_storage {
  TLM_STORAGE_ARENA = 1,  // offset is a byte offset into the arena
  TLM_STORAGE_BLOB = 2,   // offset is a byte offset into the blob (constant data)
};

// Tensor record (32 bytes):
//    0  u8   type (tlm_type)
//    1  u8   rank, 1..4
//    2  u8   storage (tlm_storage)
//    3  u8   reserved, 0
//    4  i32  dims[4]; dims >= 1; dims past the rank are 1
//   20  u32  offset (see tlm_storage); 4-byte aligned
//   24  f32  scale (0 when the tensor carries no quantization, e.g. requantization tables)
//   28  i32  zero point

// Operator codes. 2 is never assigned (it stays an unknown operator: the blob tests use it).
enum tlm_opcode {
  TLM_OP_FULLY_CONNECTED = 1,
  TLM_OP_CONV_2D = 3,
  TLM_OP_DEPTHWISE_CONV_2D = 4,
  TLM_OP_MAX_POOL_2D = 5,
  TLM_OP_AVERAGE_POOL_2D = 6,
  TLM_OP_MEAN = 7,
  TLM_OP_ADD = 8,
  TLM_OP_CONCATENATION = 9,
  TLM_OP_SOFTMAX = 10,
  TLM_OP_RELU = 11,  // RELU, RELU6, RELU_N1_TO_1: a requantizing clamp
  TLM_OP_RESHAPE = 12,
  TLM_OP_QUANTIZE = 13,
  TLM_OP_DEQUANTIZE = 14,
};

// Operator record (32 bytes):
//    0  u16  opcode (tlm_opcode)
//    2  u8   input count (<= 6)
//    3  u8   output count (<= 2)
//    4  u16  inputs[6]  (TLM_NO_TENSOR for an absent optional input)
//   16  u16  outputs[2]
//   20  u32  params offset in the blob (4-byte aligned)
//   24  u32  params bytes (exactly the size of the operator's params struct; 0 for RESHAPE)
//   28  u32  reserved, 0
//
// Every operator below has exactly the input and output counts listed. Parameter ranges common
// to all operators: an input offset is -zero_point, in [-127, 128]; an output offset is the
// output zero point, in [-128, 127]; a Q31 multiplier is >= 0 (QuantizeMultiplier gives
// [2^30, 2^31), or 0 for a zero scale) with a shift in [-31, 30] (left shift if > 0); activation
// clamps satisfy -128 <= min <= max <= 127. The requantization is TFLite's double-rounding
// MultiplyByQuantizedMultiplier. Each operator's "follows" line names the TFLite reference
// kernel (tensorflow/lite/kernels/internal/reference/...) it is bit-exact with.

// TLM_OP_FULLY_CONNECTED, in two requantization variants told apart by the params bytes:
//   24 bytes, tlm_fully_connected_params: the fixed-point requantization (MultiplyByQuantized-
//     Multiplier with output_multiplier/output_shift) of TFLite's optimized kernels and TFLM.
//   36 bytes, tlm_fully_connected_ref_params: TFLite's reference kernel (reference/integer_ops/
//     fully_connected.h FullyConnected and FullyConnectedPerChannel, what LiteRT runs under
//     BUILTIN_REF): round(double(acc) * effective_scale), effective_scale = double(input_scale) *
//     double(filter_scale) / double(output_scale), emulated exactly in integers (requantize_fp64.h).
//     The scale is mantissa * 2^-exponent, mantissa < 2^53 (the converter's frexp of the double).
//     tinylearn's converter writes this variant.
//   inputs:  [0] input  int8 arena  [batches, in]: any shape of batches * in elements (TFLite
//                                     flattens a FULLY_CONNECTED input to [-1, in])
//            [1] weights int8 blob  [out, in], symmetric (zero point 0); dense or sparse
//                (TLM_TYPE_INT8_SPARSE)
//            [2] bias   int32 blob  [out], or TLM_NO_TENSOR
//            [3] (36-byte params only, optional) scales int32 blob [out, 3]: per output channel
//                {mantissa_lo, mantissa_hi, exponent} (weights per channel); when absent, the
//                params' scale applies to every channel
//   outputs: [0] output int8 arena  [batches, out], disjoint from the input
typedef struct tlm_fully_connected_params {
  int32_t input_offset;       // -input zero point, in [-127, 128]
  int32_t output_offset;      // output zero point, in [-128, 127]
  int32_t output_multiplier;  // Q31 fixed point, in [2^30, 2^31) (or 0 for a zero scale)
  int32_t output_shift;       // left shift if > 0, right shift if < 0; in [-31, 30]
  int32_t activation_min;     // fused activation clamp, -128 <= min <= max <= 127
  int32_t activation_max;
} tlm_fully_connected_params;

typedef struct tlm_fully_connected_ref_params {
  tlm_fully_connected_params base;  // output_multiplier and output_shift are 0 (unused)
  uint32_t scale_mantissa_lo;       // low 32 bits of the mantissa
  uint32_t scale_mantissa_hi;       // high bits: in [2^20, 2^21) (normalized), or 0 with lo for 0
  int32_t scale_exponent;           // in [0, 1100]
} tlm_fully_connected_ref_params;

// TLM_OP_CONV_2D (follows integer_ops/conv.h ConvPerChannel; TFLite CONV_2D, int8)
//   inputs:  [0] input       int8 arena  [n, h, w, in_c]
//            [1] filter      int8 blob   [out_c, kh, kw, in_c], symmetric per channel (zp 0);
//                                        dense or sparse (TLM_TYPE_INT8_SPARSE)
//            [2] bias        int32 blob  [out_c], or TLM_NO_TENSOR
//            [3] multipliers int32 blob  [out_c]  per-channel Q31 multipliers
//            [4] shifts      int32 blob  [out_c]  per-channel shifts
//   outputs: [0] output      int8 arena  [n, out_h, out_w, out_c]
//   params:  tlm_conv2d_params (10 x i32)
//   Limits: kh * kw * in_c <= 32768 and |bias| <= INT32_MAX - kh * kw * in_c * 32640 (int32
//   accumulator); 0 <= pad < (k - 1) * dilation + 1 <= 2^24 per axis; the last window starts
//   inside the input ((out - 1) * stride - pad <= in - 1).
typedef struct tlm_conv2d_params {
  int32_t input_offset;   // -input zero point
  int32_t output_offset;  // output zero point
  int32_t stride_h, stride_w;          // >= 1
  int32_t dilation_h, dilation_w;      // >= 1
  int32_t pad_top, pad_left;           // >= 0 (TFLite's padding_values.height / .width)
  int32_t activation_min, activation_max;
} tlm_conv2d_params;

// TLM_OP_DEPTHWISE_CONV_2D (follows integer_ops/depthwise_conv.h DepthwiseConvPerChannel)
//   inputs:  [0] input       int8 arena  [n, h, w, in_c]
//            [1] filter      int8 blob   [1, kh, kw, out_c], out_c = in_c * depth_multiplier,
//                                        symmetric per channel (zp 0)
//            [2] bias        int32 blob  [out_c], or TLM_NO_TENSOR
//            [3] multipliers int32 blob  [out_c]
//            [4] shifts      int32 blob  [out_c]
//   outputs: [0] output      int8 arena  [n, out_h, out_w, out_c]
//   params:  tlm_depthwise_conv2d_params (11 x i32)
//   Limits: kh * kw <= 32768 and the bias bound with kh * kw; windows as CONV_2D.
typedef struct tlm_depthwise_conv2d_params {
  int32_t input_offset;
  int32_t output_offset;
  int32_t stride_h, stride_w;
  int32_t dilation_h, dilation_w;
  int32_t pad_top, pad_left;
  int32_t depth_multiplier;  // >= 1; output channel of input channel c, multiplier m: c * dm + m
  int32_t activation_min, activation_max;
} tlm_depthwise_conv2d_params;

// TLM_OP_MAX_POOL_2D (follows integer_ops/pooling.h MaxPool) and
// TLM_OP_AVERAGE_POOL_2D (follows integer_ops/pooling.h AveragePool: the window's sum, divided by
//   the number of its positions inside the input, rounded half away from zero)
//   inputs:  [0] input  int8 arena [n, h, w, c]
//   outputs: [0] output int8 arena [n, out_h, out_w, c]; same scale and zero point as the input
//   params:  tlm_pool_params (8 x i32)
//   Limits: every window overlaps the input (0 <= pad < filter, (out - 1) * stride - pad <=
//   in - 1); average pool: filter_h * filter_w <= 2^23.
typedef struct tlm_pool_params {
  int32_t stride_h, stride_w;  // >= 1
  int32_t filter_h, filter_w;  // >= 1
  int32_t pad_top, pad_left;
  int32_t activation_min, activation_max;  // the fused activation (TFLite's, on the output scale)
} tlm_pool_params;

// TLM_OP_MEAN: average over H and W of NHWC (Keras GlobalAveragePooling2D; TFLite MEAN over axes
// 1 and 2). Follows reference/reduce.h QuantizedMeanOrSum, the path TFLite's reference kernel
// (reduce.cc EvalMean, kReference) runs for int8 whatever keep_dims: an int32 sum per (n, c),
// minus input_zero_point * h * w, then MultiplyByQuantizedMultiplier with the multiplier and shift
// that already hold 1 / (h * w) (see tinylearn::mean_params), plus the output zero point, clamped
// to [-128, 127] (MEAN has no fused activation).
//   inputs:  [0] input  int8 arena [n, h, w, c]
//   outputs: [0] output int8 arena [n, 1, 1, c] or [n, c]
//   params:  tlm_mean_params (4 x i32)
//   Limits: h * w <= 2^23 (the int32 sum).
typedef struct tlm_mean_params {
  int32_t input_offset;       // -input zero point
  int32_t output_offset;      // output zero point
  int32_t output_multiplier;  // >= 0 (may be below 2^30: 1 / (h * w) folded in as TFLite does)
  int32_t output_shift;       // [-31, 30]
} tlm_mean_params;

// TLM_OP_ADD (follows integer_ops/add.h Add / AddFunc; same-shape inputs, no broadcasting)
//   inputs:  [0] input1 int8 arena, [1] input2 int8 arena; both with the output's dims
//   outputs: [0] output int8 arena (may alias either input exactly)
//   params:  tlm_add_params (12 x i32), as TFLite's add.cc Prepare computes them
typedef struct tlm_add_params {
  int32_t input1_offset, input2_offset;  // -zero points, in [-127, 128]
  int32_t left_shift;                    // [0, 22]; TFLite uses 20 for int8
  int32_t input1_multiplier, input1_shift;  // multiplier >= 0, shift in [-31, 0]
  int32_t input2_multiplier, input2_shift;
  int32_t output_offset;
  int32_t output_multiplier, output_shift;  // shift in [-31, 0]
  int32_t activation_min, activation_max;
} tlm_add_params;

// TLM_OP_CONCATENATION (follows reference/concatenation.h Concatenation; int8, so, as TFLite
// requires, every input has the output's scale and zero point and the operator is a copy)
//   inputs:  [0..k-1] int8 arena, 1 <= k <= 6, each with the output's rank and dims except along
//            `axis`; the axis sizes add up to the output's. More than 6 inputs: chain operators
//            (concatenate the first 6, then that result with the next 5, ...), or concatenate
//            groups and the groups, along the same axis.
//   outputs: [0] output int8 arena, disjoint from every input
//   params:  tlm_concatenation_params (1 x i32)
typedef struct tlm_concatenation_params {
  int32_t axis;  // [0, rank)
} tlm_concatenation_params;

// TLM_OP_SOFTMAX over the last dim (follows reference/softmax.h Softmax<int8_t, int8_t>, the
// gemmlowp fixed-point path TFLite's activations.cc runs for int8 under kReference)
//   inputs:  [0] input  int8 arena
//   outputs: [0] output int8 arena, same dims; zero point -128, scale 1/256 (as TFLite requires)
//   params:  tlm_softmax_params (3 x i32), from PreprocessSoftmaxScaling(beta, input_scale, 5)
//   Limits: last dim <= 4095 (the Q12.19 sum of exponentials stays in int32).
typedef struct tlm_softmax_params {
  int32_t input_multiplier;  // >= 0
  int32_t input_left_shift;  // [0, 31]
  int32_t diff_min;          // <= 0 and >= -floor(31 * 2^26 / 2^input_left_shift)
} tlm_softmax_params;

// TLM_OP_RELU: RELU, RELU6 and RELU_N1_TO_1 as standalone operators (follows reference_ops.h
// ReluX(ReluParams): clamp(output_zp + MultiplyByQuantizedMultiplier(x - input_zp)), the path
// activations.cc's ReluEval / Relu6Eval take for int8)
//   inputs:  [0] input int8 arena; outputs: [0] output int8 arena, same dims (may alias exactly)
//   params:  tlm_relu_params (6 x i32); the clamp bounds select the function (see relu_params)
typedef struct tlm_relu_params {
  int32_t input_offset;       // -input zero point
  int32_t output_offset;      // output zero point
  int32_t output_multiplier;  // input_scale / output_scale
  int32_t output_shift;
  int32_t activation_min, activation_max;
} tlm_relu_params;

// TLM_OP_RESHAPE: the output has the input's type, byte count and quantization. When the
// output's arena offset equals the input's (the converter aliases them) it does nothing;
// otherwise the two must be disjoint and it copies.
//   inputs: [0] arena; outputs: [0] arena; params: none (0 bytes)

// TLM_OP_QUANTIZE
//   float32 -> int8 (follows reference/quantize.h AffineQuantize): q = clamp(round(x / scale)
//     + zero point), x / scale in float32, rounded half away from zero. Uses output_offset and
//     scale; input_offset, output_multiplier and output_shift must be 0. A NaN gives the zero
//     point (TFLite converts NaN with an undefined float->int cast).
//   int8 -> int8 (follows reference/requantize.h Requantize): clamp(output_zp +
//     MultiplyByQuantizedMultiplier(x - input_zp, multiplier, shift)); scale must be 0. The
//     output may alias the input exactly.
//   inputs:  [0] input float32 or int8 arena; outputs: [0] output int8 arena, same dims
//   params:  tlm_quantize_params (4 x i32, 1 x f32)
typedef struct tlm_quantize_params {
  int32_t input_offset;       // int8 input: -input zero point
  int32_t output_offset;      // output zero point
  int32_t output_multiplier;  // int8 input: input_scale / output_scale
  int32_t output_shift;
  float scale;                // float input: the output scale, finite and > 0
} tlm_quantize_params;

// TLM_OP_DEQUANTIZE (follows reference/dequantize.h Dequantize): y = scale * (x - zero point).
// TFLite multiplies in double and rounds to float; the product of a float and an integer of at
// most 9 bits is exact in double, so the single float32 multiplication used here rounds the
// same exact value the same way: bit-identical.
//   inputs:  [0] input int8 arena; outputs: [0] output float32 arena, same dims, disjoint
//   params:  tlm_dequantize_params (1 x i32, 1 x f32)
typedef struct tlm_dequantize_params {
  int32_t input_offset;  // -input zero point
  float scale;           // the input scale, finite
} tlm_dequantize_params;

#endif  // TINYLEARN_MICRO_FORMAT_H
