// tinylearn conversion: the quantized graph, between a trained model (or a .tflite file) and the
// blob the freestanding core runs.
//
// Usage:
//   tinylearn::QGraph g = tinylearn::quantize(model, x_calibration);  // BN folded, ranges calibrated
//   std::vector<uint8_t> blob = tinylearn::lower(g);                  // params, arena plan, blob
//
// A QGraph is TFLite's int8 graph in plain structs: the same operators, tensor layouts (NHWC,
// conv filters OHWI, depthwise filters [1, KH, KW, C*M], dense weights [out, in]) and
// quantization (per-channel symmetric weights, asymmetric int8 activations, int32 biases), so
// that a .tflite file maps onto it one to one (python/tinylearn/tflite_io.py) and back.
#ifndef TINYLEARN_CONVERT_QGRAPH_H
#define TINYLEARN_CONVERT_QGRAPH_H

#include <cstdint>
#include <string>
#include <vector>

#include "tinylearn/train/model.h"

namespace tinylearn {

enum class QType { Int8, Int32, Float32 };

struct QTensor {
  std::string name;
  std::vector<std::int32_t> shape;
  QType type = QType::Int8;
  std::vector<float> scale;              // one (per tensor) or one per channel; empty: float
  std::vector<std::int64_t> zero_point;  // as many as scale
  int quantized_dimension = 0;
  std::vector<std::uint8_t> data;  // little-endian constant data; empty for activations
  bool constant = false;
  std::size_t elements() const;
};

struct QOp {
  std::string op;  // TFLite's builtin name: "CONV_2D", "FULLY_CONNECTED", ...
  std::vector<int> inputs;   // tensor indices, -1 for an absent optional input
  std::vector<int> outputs;
  // TFLite's options.
  std::string fused_activation = "NONE";  // NONE, RELU, RELU6
  std::string padding = "VALID";          // SAME, VALID
  int stride_h = 1, stride_w = 1, filter_h = 1, filter_w = 1, depth_multiplier = 1, axis = 0;
  float beta = 1.0f;
  bool keep_dims = false;
};

struct QGraph {
  std::vector<QTensor> tensors;
  std::vector<QOp> ops;
  std::vector<int> inputs, outputs;
};

// The operators the int8 core runs, in QOp::op spelling.
const std::vector<std::string>& supported_ops();

// Post-training int8 quantization of a built model: BatchNormalization folded into the preceding
// Conv2D/DepthwiseConv2D/Dense, ReLU/ReLU6 fused into the operator before them, activation
// ranges calibrated on `representative` (N, ...input shape), weights quantized per channel
// (conv, depthwise) or per tensor (dense). Throws std::invalid_argument naming the layer that
// has no int8 form.
QGraph quantize(Model& model, const Tensor& representative);

// Checks indices, types, shapes and quantization of every tensor and operator; throws
// std::invalid_argument naming the operator (index and op) that is wrong.
void validate(const QGraph& graph);

// Serializes a graph into a model blob (tinylearn/micro/format.h): requantization parameters
// computed as TFLite's kernels do, arena planned. Throws std::invalid_argument on a graph the
// core cannot run (naming the operator).
//
// Weights: `encoding` Auto writes each FULLY_CONNECTED weights and CONV_2D filter dense or sparse
// (format.h, TLM_TYPE_INT8_SPARSE), whichever takes fewer bytes (dense on a tie); Dense writes
// every one dense; Sparse writes every one the encoding can describe sparse (rows of at most
// 65535 weights), whatever its size (for tests of the sparse kernels).
enum class WeightEncoding { Auto, Dense, Sparse };
std::vector<std::uint8_t> lower(const QGraph& graph, WeightEncoding encoding = WeightEncoding::Auto);

// The sparse encoding (format.h) of int8 weights [rows, cols] in row-major order, cols in
// [1, 65535]: u32 entries, u16 counts, u8 steps, int8 values, each section 4-byte aligned; zero
// gaps over 255 bridged by filler entries of value 0.
std::vector<std::uint8_t> encode_sparse_s8(const std::int8_t* weights, std::int32_t rows,
                                           std::int32_t cols);

}  // namespace tinylearn

#endif  // TINYLEARN_CONVERT_QGRAPH_H
