// QGraph <-> plain Python values (dicts, lists, bytes), the form python/tinylearn/quantize.py
// turns into and out of tinylearn.qgraph's dataclasses.
//
//   graph:  {"tensors": [tensor...], "ops": [op...], "inputs": [int], "outputs": [int]}
//   tensor: {"name": str, "shape": [int], "dtype": "int8"|"int32"|"float32", "scale": [float],
//            "zero_point": [int], "quantized_dimension": int, "data": bytes | None}
//   op:     {"op": str, "inputs": [int], "outputs": [int], "options": {...}}  (TFLite's names,
//            the keys tinylearn.qgraph.OPTION_KEYS lists per op)
#ifndef TINYLEARN_BINDINGS_QGRAPH_DICT_H
#define TINYLEARN_BINDINGS_QGRAPH_DICT_H

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "tinylearn/convert/qgraph.h"

namespace tinylearn::bindings {

namespace py = pybind11;

inline const char* qtype_name(QType t) {
  return t == QType::Int8 ? "int8" : t == QType::Int32 ? "int32" : "float32";
}

inline QType qtype_from(const std::string& s) {
  if (s == "int8") return QType::Int8;
  if (s == "int32") return QType::Int32;
  if (s == "float32") return QType::Float32;
  throw std::invalid_argument("tensor dtype must be int8, int32 or float32, got '" + s + "'");
}

inline py::dict op_options(const QOp& op) {
  py::dict o;
  const std::string& k = op.op;
  const bool conv = k == "CONV_2D" || k == "DEPTHWISE_CONV_2D";
  const bool pool = k == "MAX_POOL_2D" || k == "AVERAGE_POOL_2D";
  if (conv || pool || k == "FULLY_CONNECTED" || k == "ADD" || k == "CONCATENATION")
    o["fused_activation"] = op.fused_activation;
  if (conv || pool) {
    o["padding"] = op.padding;
    o["stride_h"] = op.stride_h;
    o["stride_w"] = op.stride_w;
  }
  if (pool) {
    o["filter_h"] = op.filter_h;
    o["filter_w"] = op.filter_w;
  }
  if (k == "DEPTHWISE_CONV_2D") o["depth_multiplier"] = op.depth_multiplier;
  if (k == "FULLY_CONNECTED") o["keep_num_dims"] = op.keep_dims;
  if (k == "CONCATENATION") o["axis"] = op.axis;
  if (k == "SOFTMAX") o["beta"] = op.beta;
  if (k == "MEAN") o["keep_dims"] = op.keep_dims;
  return o;
}

inline py::dict to_dict(const QGraph& g) {
  py::list tensors, ops;
  for (const QTensor& t : g.tensors) {
    py::dict d;
    d["name"] = t.name;
    d["shape"] = t.shape;
    d["dtype"] = qtype_name(t.type);
    d["scale"] = t.scale;
    d["zero_point"] = t.zero_point;
    d["quantized_dimension"] = t.quantized_dimension;
    d["data"] = t.constant ? py::object(py::bytes(reinterpret_cast<const char*>(t.data.data()), t.data.size()))
                           : py::object(py::none());
    tensors.append(d);
  }
  for (const QOp& op : g.ops) {
    py::dict d;
    d["op"] = op.op;
    d["inputs"] = op.inputs;
    d["outputs"] = op.outputs;
    py::dict o = op_options(op);
    if (op.op == "MEAN") {  // the axes, as the constant input holds them
      const QTensor& axes = g.tensors.at(std::size_t(op.inputs.at(1)));
      py::list a;
      for (std::size_t i = 0; i + 4 <= axes.data.size(); i += 4) {
        std::int32_t v;
        std::memcpy(&v, axes.data.data() + i, 4);
        a.append(v);
      }
      o["axes"] = py::tuple(a);
    }
    d["options"] = o;
    ops.append(d);
  }
  py::dict d;
  d["tensors"] = tensors;
  d["ops"] = ops;
  d["inputs"] = g.inputs;
  d["outputs"] = g.outputs;
  return d;
}

template <class T>
T get_or(const py::dict& d, const char* key, T fallback) {
  return d.contains(key) ? d[key].cast<T>() : fallback;
}

inline QGraph from_dict(const py::dict& d) {
  QGraph g;
  for (const py::handle h : d["tensors"].cast<py::list>()) {
    const py::dict t = h.cast<py::dict>();
    QTensor q;
    q.name = t["name"].cast<std::string>();
    q.shape = t["shape"].cast<std::vector<std::int32_t>>();
    q.type = qtype_from(t["dtype"].cast<std::string>());
    q.scale = t["scale"].cast<std::vector<float>>();
    q.zero_point = t["zero_point"].cast<std::vector<std::int64_t>>();
    q.quantized_dimension = get_or<int>(t, "quantized_dimension", 0);
    if (!t["data"].is_none()) {
      const std::string bytes = t["data"].cast<std::string>();
      q.data.assign(bytes.begin(), bytes.end());
      q.constant = true;
    }
    g.tensors.push_back(std::move(q));
  }
  for (const py::handle h : d["ops"].cast<py::list>()) {
    const py::dict o = h.cast<py::dict>();
    QOp op;
    op.op = o["op"].cast<std::string>();
    op.inputs = o["inputs"].cast<std::vector<int>>();
    op.outputs = o["outputs"].cast<std::vector<int>>();
    const py::dict opt = o.contains("options") ? o["options"].cast<py::dict>() : py::dict();
    op.fused_activation = get_or<std::string>(opt, "fused_activation", "NONE");
    op.padding = get_or<std::string>(opt, "padding", "VALID");
    op.stride_h = get_or<int>(opt, "stride_h", 1);
    op.stride_w = get_or<int>(opt, "stride_w", 1);
    op.filter_h = get_or<int>(opt, "filter_h", 1);
    op.filter_w = get_or<int>(opt, "filter_w", 1);
    op.depth_multiplier = get_or<int>(opt, "depth_multiplier", 1);
    op.axis = get_or<int>(opt, "axis", 0);
    op.beta = get_or<float>(opt, "beta", 1.0f);
    op.keep_dims = get_or<bool>(opt, op.op == "FULLY_CONNECTED" ? "keep_num_dims" : "keep_dims", false);
    g.ops.push_back(std::move(op));
  }
  g.inputs = d["inputs"].cast<std::vector<int>>();
  g.outputs = d["outputs"].cast<std::vector<int>>();
  return g;
}

}  // namespace tinylearn::bindings

#endif  // TINYLEARN_BINDINGS_QGRAPH_DICT_H
