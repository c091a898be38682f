"""Read and write int8 TFLite models as :class:`tinylearn.qgraph.QGraph`.

- ``read_tflite(path_or_bytes)`` parses a .tflite flatbuffer (subgraph 0) into a validated
  ``QGraph``. Anything outside tinylearn's int8 op set (see ``qgraph.OPS``) raises ``ValueError``
  naming the operator and its index; so do float models, unsupported option values (dilation,
  fused activations other than NONE/RELU/RELU6, shuffled FC weights, ...) and truncated or
  corrupted files (never a crash: flatbuffer accessors run inside a guard, and every vector
  length is checked against the file's size before it is walked).
- ``write_tflite(graph, path=None)`` serializes a ``QGraph`` to a .tflite (schema version 3, one
  subgraph, buffer 0 empty, one buffer per constant aligned to 16 bytes, operator codes with
  the versions TFLite's converter gives int8 ops, an options table per op, per-tensor or
  per-channel quantization with its ``quantized_dimension``). With ``path`` the bytes are also
  written to that file atomically.

Both use the ``tflite`` package (the flatbuffer classes and builder functions generated from
TFLite's schema.fbs) and ``flatbuffers``; neither needs TensorFlow or tinylearn's C++ core.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import flatbuffers
import numpy as np
import tflite

from ._io import write_atomic
from .errors import UnsupportedModelError
from .qgraph import OPS, QGraph, QOp, QTensor

__all__ = ["read_tflite", "write_tflite", "SCHEMA_VERSION"]

SCHEMA_VERSION = 3
_IDENTIFIER = b"TFL3"

_BUILTIN_NAME = {v: k for k, v in vars(tflite.BuiltinOperator).items()
                 if not k.startswith("_") and isinstance(v, int)}
_BUILTIN_CODE = {k: v for v, k in _BUILTIN_NAME.items()}
_TT = tflite.TensorType
_TYPE_NAME = {v: k for k, v in vars(_TT).items() if not k.startswith("_") and isinstance(v, int)}
_DTYPE_OF = {_TT.INT8: "int8", _TT.INT32: "int32", _TT.FLOAT32: "float32"}
_TYPE_OF = {v: k for k, v in _DTYPE_OF.items()}
_NP = {"int8": np.dtype("<i1"), "int32": np.dtype("<i4"), "float32": np.dtype("<f4")}
_AF = tflite.ActivationFunctionType
_ACT_NAME = {v: k for k, v in vars(_AF).items() if not k.startswith("_") and isinstance(v, int)}
_ACT_CODE = {"NONE": _AF.NONE, "RELU": _AF.RELU, "RELU6": _AF.RELU6}
_READ_ACTS = frozenset((_AF.NONE, _AF.RELU, _AF.RELU6))
_PAD_NAME = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}
_PAD_CODE = {v: k for k, v in _PAD_NAME.items()}
_BO = tflite.BuiltinOptions
_OPTIONS_TYPE = {   # op -> (BuiltinOptions union member, options class)
    "FULLY_CONNECTED": (_BO.FullyConnectedOptions, tflite.FullyConnectedOptions),
    "CONV_2D": (_BO.Conv2DOptions, tflite.Conv2DOptions),
    "DEPTHWISE_CONV_2D": (_BO.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptions),
    "MAX_POOL_2D": (_BO.Pool2DOptions, tflite.Pool2DOptions),
    "AVERAGE_POOL_2D": (_BO.Pool2DOptions, tflite.Pool2DOptions),
    "MEAN": (_BO.ReducerOptions, tflite.ReducerOptions),
    "ADD": (_BO.AddOptions, tflite.AddOptions),
    "CONCATENATION": (_BO.ConcatenationOptions, tflite.ConcatenationOptions),
    "SOFTMAX": (_BO.SoftmaxOptions, tflite.SoftmaxOptions),
    "RESHAPE": (_BO.ReshapeOptions, tflite.ReshapeOptions),
}


def builtin_code(oc) -> int:
    """An OperatorCode's builtin operator, as TFLite's GetBuiltinCode computes it: the larger of
    ``builtin_code`` (int32, field 3; absent = 0 in files from before it existed) and
    ``deprecated_builtin_code`` (int8, field 0; 127 = "see builtin_code"). Reads the raw field
    (vtable slot 10), since some versions of the ``tflite`` package already mix the two."""
    slot = oc._tab.Offset(10)
    raw = oc._tab.Get(flatbuffers.number_types.Int32Flags, slot + oc._tab.Pos) if slot else 0
    return max(int(raw), int(oc.DeprecatedBuiltinCode()))


# =============================================================================================
# Reading

def read_tflite(src: Union[str, os.PathLike, bytes, bytearray, memoryview]) -> QGraph:
    """Parse an int8 .tflite model (a path or its bytes) into a validated :class:`QGraph`."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        buf = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        buf = Path(src).read_bytes()
    else:
        raise TypeError(f"read_tflite takes a path or bytes, got {type(src).__name__}")
    if len(buf) < 8 or buf[4:8] != _IDENTIFIER:
        raise ValueError(f"not a TFLite model: expected the file identifier {_IDENTIFIER!r} at bytes "
                         f"4-8, got {buf[4:8]!r} ({len(buf)} bytes)")
    try:
        graph = _Reader(buf).graph()
    except UnsupportedModelError:
        raise
    except Exception as e:   # any accessor failure on a truncated or corrupted flatbuffer
        raise ValueError(f"truncated or corrupted TFLite model ({len(buf)} bytes): "
                         f"{type(e).__name__}: {e}") from None
    try:
        return graph.validate()
    except ValueError as e:
        raise ValueError(f"invalid TFLite model: {e}") from None


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = buf
        self.model = tflite.Model.GetRootAs(buf, 0)

    def n(self, count: int, what: str, elem: int = 4) -> int:
        """A vector length, checked against the file size (so loops over it stay bounded)."""
        if count < 0 or count * elem > len(self.buf):
            raise ValueError(f"{what}: vector of {count} elements does not fit in the file")
        return count

    def graph(self) -> QGraph:
        m = self.model
        if m.Version() != SCHEMA_VERSION:
            raise UnsupportedModelError(f"TFLite schema version {m.Version()}, expected {SCHEMA_VERSION}")
        if self.n(m.SubgraphsLength(), "subgraphs") < 1:
            raise UnsupportedModelError("the TFLite model has no subgraph")
        sg = m.Subgraphs(0)
        n_codes = self.n(m.OperatorCodesLength(), "operator codes")
        n_ops = self.n(sg.OperatorsLength(), "operators")
        n_tensors = self.n(sg.TensorsLength(), "tensors")

        # 1. Op kinds first: an unsupported op is the most useful thing to report.
        names = []
        for i in range(n_ops):
            op = sg.Operators(i)
            k = op.OpcodeIndex()
            if not 0 <= k < n_codes:
                raise ValueError(f"operator {i}: opcode index {k} out of range ({n_codes} codes)")
            names.append(self.op_name(i, m.OperatorCodes(k)))

        # 2. Tensors.
        tensors = [self.tensor(j, sg.Tensors(j)) for j in range(n_tensors)]

        def indices(arr, what) -> list[int]:
            if isinstance(arr, int):            # flatbuffers returns 0 for an absent vector
                return []
            self.n(len(arr), what)
            return [int(v) for v in arr]

        graph_in = indices(sg.InputsAsNumpy(), "subgraph inputs")
        graph_out = indices(sg.OutputsAsNumpy(), "subgraph outputs")

        # 3. Operators.
        ops = []
        for i in range(n_ops):
            op = sg.Operators(i)
            name = names[i]
            ins = indices(op.InputsAsNumpy(), f"operator {i} inputs")
            outs = indices(op.OutputsAsNumpy(), f"operator {i} outputs")
            for k in ins + outs:
                if not -1 <= k < n_tensors:
                    raise ValueError(f"operator {i} ({name}): tensor index {k} out of range "
                                     f"({n_tensors} tensors)")
            ops.append(QOp(name, ins, outs, self.options(i, name, op, ins, outs, tensors)))

        self.reject_float(ops, tensors, graph_in, graph_out)
        return QGraph(tensors, ops, graph_in, graph_out)

    def op_name(self, i: int, oc) -> str:
        code = builtin_code(oc)
        name = _BUILTIN_NAME.get(code)
        if name == "CUSTOM":
            custom = oc.CustomCode()
            custom = custom.decode("utf-8", "replace") if custom is not None else "?"
            raise UnsupportedModelError(f"operator {i}: custom op {custom!r} is not supported; tinylearn "
                            f"reads the builtin ops {', '.join(OPS)}")
        if name is None:
            raise UnsupportedModelError(f"operator {i}: unknown builtin operator code {code}")
        if name not in OPS:
            raise UnsupportedModelError(f"operator {i}: {name} is not supported; tinylearn reads the builtin "
                            f"ops {', '.join(OPS)}")
        return name

    def tensor(self, j: int, t) -> QTensor:
        raw_name = t.Name()
        name = raw_name.decode("utf-8", "replace") if raw_name is not None else f"tensor_{j}"
        ttype = t.Type()
        if ttype not in _DTYPE_OF:
            raise UnsupportedModelError(f"tensor {j} ({name!r}) has type {_TYPE_NAME.get(ttype, ttype)}; "
                            "tinylearn reads int8 models (int8, int32 and float32 tensors only)")
        dtype = _DTYPE_OF[ttype]
        shape = t.ShapeAsNumpy()
        shape = () if isinstance(shape, int) else tuple(int(d) for d in shape[:self.n(len(shape), "shape")])
        if t.Sparsity() is not None:
            raise UnsupportedModelError(f"tensor {j} ({name!r}) is sparse; sparse tensors are not supported")
        if t.IsVariable():
            raise UnsupportedModelError(f"tensor {j} ({name!r}) is a variable; variables are not supported")

        scale, zero_point, qdim = np.zeros(0, np.float32), np.zeros(0, np.int64), 0
        q = t.Quantization()
        if q is not None:
            if q.DetailsType() != 0:
                raise UnsupportedModelError(f"tensor {j} ({name!r}) has custom quantization details")
            s, z = q.ScaleAsNumpy(), q.ZeroPointAsNumpy()
            if not isinstance(s, int):
                scale = np.array(s[:self.n(len(s), "scales")], np.float32)
            if not isinstance(z, int):
                zero_point = np.array(z[:self.n(len(z), "zero points", 8)], np.int64)
            qdim = int(q.QuantizedDimension())
            if scale.size == 0 and zero_point.size > 0 and not np.any(zero_point):
                zero_point = np.zeros(0, np.int64)      # zero points without scales: unquantized

        data = None
        b = t.Buffer()
        if b != 0:
            n_buffers = self.n(self.model.BuffersLength(), "buffers")
            if not 0 <= b < n_buffers:
                raise ValueError(f"tensor {j} ({name!r}): buffer index {b} out of range")
            raw = self.buffer_bytes(j, name, self.model.Buffers(b))
            if raw:
                count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                itemsize = _NP[dtype].itemsize
                if len(raw) != count * itemsize:
                    raise ValueError(f"tensor {j} ({name!r}): buffer holds {len(raw)} bytes, "
                                     f"shape {shape} of {dtype} needs {count * itemsize}")
                data = np.frombuffer(raw, _NP[dtype]).astype(np.dtype(dtype)).reshape(shape)
        return QTensor(name, shape, dtype, scale, zero_point, qdim, data)

    def buffer_bytes(self, j: int, name: str, buffer) -> bytes:
        offset, size = buffer.Offset(), buffer.Size()
        if offset > 1:                        # data stored after the flatbuffer (models > 2 GB)
            if offset + size > len(self.buf):
                raise ValueError(f"tensor {j} ({name!r}): external buffer runs past the file end")
            return self.buf[offset:offset + size]
        d = buffer.DataAsNumpy()
        return b"" if isinstance(d, int) else d[:self.n(len(d), "buffer", 1)].tobytes()

    def options(self, i, name, op, ins, outs, tensors) -> dict:
        where = f"operator {i} ({name})"
        table = None
        if name in _OPTIONS_TYPE:
            union, cls = _OPTIONS_TYPE[name]
            otype = op.BuiltinOptionsType()
            if otype not in (_BO.NONE, union):
                raise ValueError(f"{where}: options of union type {otype}, expected {union}")
            tab = op.BuiltinOptions() if otype == union else None
            if tab is not None:
                table = cls()
                table.Init(tab.Bytes, tab.Pos)

        def get(method: str, default):
            return getattr(table, method)() if table is not None else default

        def activation() -> str:
            a = get("FusedActivationFunction", _AF.NONE)
            if a not in _READ_ACTS:
                raise UnsupportedModelError(f"{where}: fused activation {_ACT_NAME.get(a, a)} is not "
                                "supported (NONE, RELU or RELU6)")
            return _ACT_NAME[a]

        def padding() -> str:
            p = get("Padding", tflite.Padding.SAME)
            if p not in _PAD_NAME:
                raise ValueError(f"{where}: unknown padding code {p}")
            return _PAD_NAME[p]

        def no_dilation() -> None:
            dw, dh = get("DilationWFactor", 1), get("DilationHFactor", 1)
            if (dw, dh) != (1, 1):
                raise UnsupportedModelError(f"{where}: dilation {dh}x{dw} is not supported (only 1x1)")

        def rank(k: int) -> int:
            return len(tensors[k].shape)

        o: dict = {}
        if name == "FULLY_CONNECTED":
            if get("WeightsFormat", 0) != tflite.FullyConnectedOptionsWeightsFormat.DEFAULT:
                raise UnsupportedModelError(f"{where}: shuffled weights (SHUFFLED4x16INT8) are not supported")
            o = {"fused_activation": activation(), "keep_num_dims": bool(get("KeepNumDims", False))}
        elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            no_dilation()
            o = {"fused_activation": activation(), "padding": padding(),
                 "stride_h": int(get("StrideH", 0)), "stride_w": int(get("StrideW", 0))}
            if name == "DEPTHWISE_CONV_2D":
                o["depth_multiplier"] = int(get("DepthMultiplier", 0))
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            o = {"fused_activation": activation(), "padding": padding(),
                 "stride_h": int(get("StrideH", 0)), "stride_w": int(get("StrideW", 0)),
                 "filter_h": int(get("FilterHeight", 0)), "filter_w": int(get("FilterWidth", 0))}
        elif name == "MEAN":
            if len(ins) != 2 or ins[1] == -1 or tensors[ins[1]].data is None:
                raise UnsupportedModelError(f"{where}: the axes must be a constant second input")
            r = rank(ins[0])
            axes = [int(v) for v in np.ravel(tensors[ins[1]].data)]
            if any(not -r <= a < r for a in axes):
                raise ValueError(f"{where}: axes {axes} out of range for rank {r}")
            o = {"keep_dims": bool(get("KeepDims", False)), "axes": tuple(a % r for a in axes)}
        elif name == "ADD":
            o = {"fused_activation": activation()}
        elif name == "CONCATENATION":
            r = rank(outs[0]) if outs else 0
            axis = int(get("Axis", 0))
            if not -r <= axis < r:
                raise ValueError(f"{where}: axis {axis} out of range for rank {r}")
            o = {"fused_activation": activation(), "axis": axis % r}
        elif name == "SOFTMAX":
            o = {"beta": float(get("Beta", 0.0))}
        elif name == "RESHAPE":
            if table is not None and not table.NewShapeIsNone():
                ns = table.NewShapeAsNumpy()
                o = {"new_shape": tuple(int(v) for v in ns[:self.n(len(ns), "new_shape")])}
        return o

    @staticmethod
    def reject_float(ops, tensors, graph_in, graph_out) -> None:
        """Float tensors may only be the graph's own inputs/outputs around QUANTIZE/DEQUANTIZE."""
        for i, op in enumerate(ops):
            if op.op == "QUANTIZE":
                boundary = [op.inputs[0]] if op.inputs and op.inputs[0] in graph_in else []
            elif op.op == "DEQUANTIZE":
                boundary = [op.outputs[0]] if op.outputs and op.outputs[0] in graph_out else []
            else:
                boundary = []
            for k in op.inputs + op.outputs:
                if k != -1 and tensors[k].dtype == "float32" and k not in boundary:
                    raise UnsupportedModelError(
                        f"operator {i} ({op.op}) computes in float32 (tensor {k}, "
                        f"{tensors[k].name!r}): this is a float or hybrid model; tinylearn reads "
                        "fully int8-quantized models (float only at QUANTIZE/DEQUANTIZE on the "
                        "graph's inputs and outputs)")


# =============================================================================================
# Writing

def write_tflite(graph: QGraph, path: Optional[Union[str, os.PathLike]] = None) -> bytes:
    """Serialize ``graph`` (validated first) to .tflite bytes; also write them to ``path``."""
    if not isinstance(graph, QGraph):
        raise TypeError(f"write_tflite takes a QGraph, got {type(graph).__name__}")
    graph.validate()
    data = _serialize(graph)
    if path is not None:
        write_atomic(path, data)
    return data


def op_version(graph: QGraph, op: QOp) -> int:
    """The operator-code version TFLite's converter gives this op (tools/versioning/op_version.cc,
    int8 cases), so that older runtimes find a kernel that supports it."""
    t = graph.tensors
    first = t[op.inputs[0]].dtype if op.inputs and op.inputs[0] != -1 else None
    if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return 3
    if op.op == "FULLY_CONNECTED":
        if len(op.inputs) == 2:
            return 6
        return 5 if op.options.get("keep_num_dims") else 4
    if op.op == "RESHAPE":
        return 1
    if op.op == "QUANTIZE":
        return 3 if t[op.outputs[0]].per_channel else 1
    if op.op == "DEQUANTIZE":
        return (5 if t[op.inputs[0]].per_channel else 2) if first == "int8" else 1
    return 2 if first == "int8" else 1


def _serialize(graph: QGraph, check: bool = True) -> bytes:
    """Build the flatbuffer. ``check=False`` (tests only) also writes op names outside ``OPS``
    (as a builtin without options) and skips the dtype checks, to make unsupported models."""
    b = flatbuffers.Builder(1024)

    def vec_i32(values) -> int:
        return b.CreateNumpyVector(np.asarray(list(values), dtype="<i4").reshape(-1))

    # Buffers: 0 is the empty sentinel, then one per constant tensor.
    buffer_of: dict[int, int] = {}
    buffer_tables = []
    tflite.BufferStart(b)
    buffer_tables.append(tflite.BufferEnd(b))
    for j, t in enumerate(graph.tensors):
        if t.data is None:
            continue
        raw = np.ascontiguousarray(t.data, dtype=_NP[t.dtype]).tobytes()
        b.StartVector(1, len(raw), 16)                       # aligned like TFLite's converter
        b.head -= len(raw)
        b.Bytes[b.head:b.head + len(raw)] = raw
        data_vec = b.EndVector()
        tflite.BufferStart(b)
        tflite.BufferAddData(b, data_vec)
        buffer_of[j] = len(buffer_tables)
        buffer_tables.append(tflite.BufferEnd(b))

    # Tensors.
    tensor_tables = []
    for j, t in enumerate(graph.tensors):
        name = b.CreateString(t.name)
        shape = vec_i32(t.shape)
        scale = b.CreateNumpyVector(np.asarray(t.scale, "<f4")) if t.scale.size else None
        zp = b.CreateNumpyVector(np.asarray(t.zero_point, "<i8")) if t.zero_point.size else None
        tflite.QuantizationParametersStart(b)
        if scale is not None:
            tflite.QuantizationParametersAddScale(b, scale)
        if zp is not None:
            tflite.QuantizationParametersAddZeroPoint(b, zp)
        if t.quantized_dimension:
            tflite.QuantizationParametersAddQuantizedDimension(b, int(t.quantized_dimension))
        quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, _TYPE_OF[t.dtype])
        tflite.TensorAddBuffer(b, buffer_of.get(j, 0))
        tflite.TensorAddName(b, name)
        tflite.TensorAddQuantization(b, quant)
        tensor_tables.append(tflite.TensorEnd(b))

    # Operator codes: one per op kind, in order of first use, with the highest version its ops
    # need (as TFLite's converter does).
    codes: dict[str, int] = {}
    for op in graph.ops:
        if check and op.op not in OPS:
            raise ValueError(f"unsupported op {op.op!r}")
        if op.op not in _BUILTIN_CODE:
            raise ValueError(f"unknown TFLite builtin operator {op.op!r}")
        version = op_version(graph, op) if op.op in OPS else 1
        codes[op.op] = max(codes.get(op.op, 1), version)
    code_index = {name: k for k, name in enumerate(codes)}
    op_code_index = [code_index[op.op] for op in graph.ops]
    code_tables = []
    for name, version in codes.items():
        code = _BUILTIN_CODE[name]
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, version)
        code_tables.append(tflite.OperatorCodeEnd(b))

    # Operators.
    op_tables = []
    for i, op in enumerate(graph.ops):
        ins, outs = vec_i32(op.inputs), vec_i32(op.outputs)
        otype, options = _write_options(b, op)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, op_code_index[i])
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, otype)
            tflite.OperatorAddBuiltinOptions(b, options)
        op_tables.append(tflite.OperatorEnd(b))

    def table_vector(start, items) -> int:
        start(b, len(items))
        for off in reversed(items):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    tensors_vec = table_vector(tflite.SubGraphStartTensorsVector, tensor_tables)
    ops_vec = table_vector(tflite.SubGraphStartOperatorsVector, op_tables)
    sg_in, sg_out = vec_i32(graph.inputs), vec_i32(graph.outputs)
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vec)
    tflite.SubGraphAddInputs(b, sg_in)
    tflite.SubGraphAddOutputs(b, sg_out)
    tflite.SubGraphAddOperators(b, ops_vec)
    tflite.SubGraphAddName(b, sg_name)
    subgraph = tflite.SubGraphEnd(b)

    codes_vec = table_vector(tflite.ModelStartOperatorCodesVector, code_tables)
    subgraphs_vec = table_vector(tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_vec = table_vector(tflite.ModelStartBuffersVector, buffer_tables)
    description = b.CreateString("tinylearn")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, SCHEMA_VERSION)
    tflite.ModelAddOperatorCodes(b, codes_vec)
    tflite.ModelAddSubgraphs(b, subgraphs_vec)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers_vec)
    model = tflite.ModelEnd(b)
    b.Finish(model, file_identifier=_IDENTIFIER)
    return bytes(b.Output())


def _write_options(b: flatbuffers.Builder, op: QOp):
    """Build the op's options table; returns (BuiltinOptions union type, offset or None)."""
    o = op.options
    name = op.op
    act = _ACT_CODE.get(o.get("fused_activation", "NONE"), _AF.NONE)
    if name == "FULLY_CONNECTED":
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(b, act)
        tflite.FullyConnectedOptionsAddKeepNumDims(b, bool(o["keep_num_dims"]))
        return _BO.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(b)
    if name == "CONV_2D":
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, _PAD_CODE[o["padding"]])
        tflite.Conv2DOptionsAddStrideW(b, int(o["stride_w"]))
        tflite.Conv2DOptionsAddStrideH(b, int(o["stride_h"]))
        tflite.Conv2DOptionsAddFusedActivationFunction(b, act)
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        return _BO.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    if name == "DEPTHWISE_CONV_2D":
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, _PAD_CODE[o["padding"]])
        tflite.DepthwiseConv2DOptionsAddStrideW(b, int(o["stride_w"]))
        tflite.DepthwiseConv2DOptionsAddStrideH(b, int(o["stride_h"]))
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, int(o["depth_multiplier"]))
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, act)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        return _BO.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)
    if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, _PAD_CODE[o["padding"]])
        tflite.Pool2DOptionsAddStrideW(b, int(o["stride_w"]))
        tflite.Pool2DOptionsAddStrideH(b, int(o["stride_h"]))
        tflite.Pool2DOptionsAddFilterWidth(b, int(o["filter_w"]))
        tflite.Pool2DOptionsAddFilterHeight(b, int(o["filter_h"]))
        tflite.Pool2DOptionsAddFusedActivationFunction(b, act)
        return _BO.Pool2DOptions, tflite.Pool2DOptionsEnd(b)
    if name == "MEAN":
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, bool(o["keep_dims"]))
        return _BO.ReducerOptions, tflite.ReducerOptionsEnd(b)
    if name == "ADD":
        tflite.AddOptionsStart(b)
        tflite.AddOptionsAddFusedActivationFunction(b, act)
        return _BO.AddOptions, tflite.AddOptionsEnd(b)
    if name == "CONCATENATION":
        tflite.ConcatenationOptionsStart(b)
        tflite.ConcatenationOptionsAddAxis(b, int(o["axis"]))
        tflite.ConcatenationOptionsAddFusedActivationFunction(b, act)
        return _BO.ConcatenationOptions, tflite.ConcatenationOptionsEnd(b)
    if name == "SOFTMAX":
        tflite.SoftmaxOptionsStart(b)
        tflite.SoftmaxOptionsAddBeta(b, float(o["beta"]))
        return _BO.SoftmaxOptions, tflite.SoftmaxOptionsEnd(b)
    if name == "RESHAPE" and "new_shape" in o:
        shape = b.CreateNumpyVector(np.asarray(o["new_shape"], "<i4").reshape(-1))
        tflite.ReshapeOptionsStart(b)
        tflite.ReshapeOptionsAddNewShape(b, shape)
        return _BO.ReshapeOptions, tflite.ReshapeOptionsEnd(b)
    return _BO.NONE, None
