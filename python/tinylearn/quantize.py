"""Post-training int8 quantization and the int8 model (run by the freestanding core)."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from . import _core
from ._io import write_atomic
from ._validate import as_float_array

__all__ = ["Int8Model", "ModelFormatError", "convert", "from_tflite", "load_int8"]

_NP_DTYPES = {"int8": np.int8, "int32": np.dtype("<i4"), "float32": np.dtype("<f4")}


class ModelFormatError(ValueError):
    """A model blob or file that tinylearn's inference core rejects (corrupt, truncated, newer)."""


class Int8Model:
    """An int8 model in tinylearn's blob format (see cpp/include/tinylearn/micro/format.h).

    Runs in C++ with the same freestanding core that the firmware runs.
    """

    def __init__(self, blob: bytes, graph=None):
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected the model as bytes, got {type(blob).__name__}")
        try:
            self._m = _core.Int8Model(bytes(blob))
        except ValueError as e:
            raise ModelFormatError(str(e)) from None
        self._in = self._m.input
        self._out = self._m.output
        # Computed once: invoke() checks shapes on every call (single-sample latency).
        self._in_shape = _sample_shape(self._in)
        self._out_shape = _sample_shape(self._out)
        # invoke()'s fast path: a C-order int8 ndarray of shape (N, features) goes to the binding
        # as it is, and its (N, outputs) result comes back as it is.
        self._flat_in = len(self._in_shape) == 2
        self._flat_out = len(self._out_shape) == 2
        self._graph = graph

    @property
    def graph(self):
        """The quantized graph (tinylearn.qgraph.QGraph) this model was lowered from, or None for
        a model loaded from a blob."""
        return self._graph

    # -- description -----------------------------------------------------------------------
    @property
    def input_scale(self) -> float:
        return float(self._in["scale"])

    @property
    def input_zero_point(self) -> int:
        return int(self._in["zero_point"])

    @property
    def output_scale(self) -> float:
        return float(self._out["scale"])

    @property
    def output_zero_point(self) -> int:
        return int(self._out["zero_point"])

    @property
    def input_shape(self) -> tuple:
        """(None, ...): the input tensor's shape without its batch dimension of 1."""
        return self._in_shape

    @property
    def output_shape(self) -> tuple:
        return self._out_shape

    @property
    def size_bytes(self) -> int:
        """Bytes of the whole serialized model (what goes into flash)."""
        return int(self._m.size_bytes)

    @property
    def arena_bytes(self) -> int:
        """Exact arena bytes the model needs, from the memory planner."""
        return int(self._m.arena_bytes)

    def to_bytes(self) -> bytes:
        return self._m.blob

    # -- running ---------------------------------------------------------------------------
    def quantize_input(self, x) -> np.ndarray:
        """Float inputs to int8 with the input scale and zero point (TFLite rounding)."""
        x = as_float_array(x, "quantize_input: x", self.input_shape[1:])
        r = x / np.float32(self.input_scale)  # float32 division, as TFLite's Quantize
        t = np.trunc(r)
        q = t + np.sign(r) * (np.abs(r - t) >= 0.5)  # round half away from zero (exact)
        return np.clip(q + self.input_zero_point, -128, 127).astype(np.int8)

    def dequantize_output(self, q) -> np.ndarray:
        q = np.asarray(q)
        return (self.output_scale * (q.astype(np.float64) - self.output_zero_point)).astype(np.float32)

    def invoke(self, x_int8) -> np.ndarray:
        """int8 (N, inputs) -> int8 (N, outputs), exactly what the firmware computes."""
        if self._flat_in:  # a C-order int8 array (N, features) runs as it is; else None
            y = self._m.invoke_exact(x_int8)
            if y is not None:
                return y if self._flat_out else y.reshape((y.shape[0],) + self._out_shape[1:])
        x = np.asarray(x_int8)
        if x.dtype != np.int8:
            raise TypeError(f"invoke: expected an int8 array, got dtype {x.dtype}; "
                            "use predict() for float input or quantize_input() first")
        sample = self._in_shape[1:]
        if x.ndim == 1 and sample == (1,):
            x = x.reshape(-1, 1)
        if x.shape[1:] != sample:
            raise ValueError(f"invoke: expected shape (N, {', '.join(map(str, sample))}), got {x.shape}")
        n = x.shape[0]
        if n == 0:
            raise ValueError("invoke: expected at least one sample, got an empty array")
        y = self._m.invoke(x.reshape(n, -1))  # the binding copies a non-contiguous view
        return y.reshape((n,) + self._out_shape[1:])

    def predict(self, x) -> np.ndarray:
        """Float in, float out: quantize, run int8, dequantize."""
        x = as_float_array(x, "predict: x", self.input_shape[1:])
        y = self._m.predict(np.ascontiguousarray(x.reshape(len(x), -1)))
        return y.reshape((len(x),) + self.output_shape[1:])

    # -- description of the layers ---------------------------------------------------------
    def summary(self, print_fn=print) -> str:
        """Per operator: op, output shape, MACs, weight bytes, activation (output) bytes; then the
        totals, the model bytes and the arena bytes (the planned peak, which is below the sum of
        the activations because tensors whose lifetimes do not overlap share memory)."""
        g = self._need_graph("summary")
        rows = [("#", "op", "output shape", "MACs", "weights (B)", "activations (B)")]
        tm = tw = ta = 0
        for i, op in enumerate(g.ops):
            out = g.tensors[op.outputs[0]]
            macs = op_macs(g, op)
            # Weights and biases; RESHAPE's shape and MEAN's axes live in the operator itself.
            w = 0 if op.op in ("RESHAPE", "MEAN") else sum(
                _nbytes(g.tensors[t]) for t in op.inputs if t >= 0 and g.tensors[t].data is not None)
            a = _nbytes(out)
            tm, tw, ta = tm + macs, tw + w, ta + a
            rows.append((str(i), op.op, str(tuple(out.shape)), f"{macs:,}", f"{w:,}", f"{a:,}"))
        rows.append(("", "total", "", f"{tm:,}", f"{tw:,}", f"{ta:,}"))
        widths = [max(len(r[k]) for r in rows) for k in range(6)]
        lines = ["  ".join(c.rjust(w) if k >= 3 else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        lines.append(f"model: {self.size_bytes:,} bytes; arena: {self.arena_bytes:,} bytes "
                     f"(peak of the memory plan); MACs per inference: {tm:,}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def _need_graph(self, what: str):
        if self._graph is None:
            raise ValueError(f"{what}: this Int8Model was loaded from a blob, which keeps no layer "
                             "graph; convert() or from_tflite() give models that have one")
        return self._graph

    def to_tflite(self, path=None) -> bytes:
        """The model as a .tflite flatbuffer (int8, TFLite's operators), which LiteRT runs with
        the same results. Written atomically to `path` if given; returns the bytes."""
        write_tflite = _tflite_io("to_tflite").write_tflite

        data = write_tflite(self._need_graph("to_tflite"))
        if path is not None:
            write_atomic(path, data)
        return data

    # -- saving ----------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Writes the blob to `path` atomically (a temporary file, then a rename)."""
        return write_atomic(path, self.to_bytes())

    def export_c(self, directory, name: str = "model") -> tuple[Path, Path]:
        """Writes `<name>.h` and `<name>.cc`: the model as a const array (flash) and its exact
        arena size as `<NAME>_ARENA_BYTES`. Returns the two paths."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or "") or keyword.iskeyword(name):
            raise ValueError(f"export_c: name must be a C identifier, got {name!r}")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        upper = name.upper()
        blob = self.to_bytes()
        guard = f"TINYLEARN_MODEL_{upper}_H"
        header = f"""// Generated by tinylearn: int8 model '{name}', {len(blob)} bytes.
#ifndef {guard}
#define {guard}

#define {upper}_ARENA_BYTES {self.arena_bytes}u
#define {upper}_INPUT_SCALE {self.input_scale!r}f
#define {upper}_INPUT_ZERO_POINT {self.input_zero_point}
#define {upper}_OUTPUT_SCALE {self.output_scale!r}f
#define {upper}_OUTPUT_ZERO_POINT {self.output_zero_point}

#ifdef __cplusplus
extern "C" {{
#endif
extern const unsigned char {name}[];
extern const unsigned int {name}_len;
#ifdef __cplusplus
}}
#endif

#endif  // {guard}
"""
        rows = ",\n".join(
            "  " + ", ".join(f"0x{b:02x}" for b in blob[i:i + 12]) for i in range(0, len(blob), 12))
        source = f"""// Generated by tinylearn: int8 model '{name}'. Format: tinylearn/micro/format.h
#include "{name}.h"

// 4-byte aligned and const, so it is read in place from flash.
alignas(4) const unsigned char {name}[{len(blob)}] = {{
{rows}
}};
const unsigned int {name}_len = {len(blob)}u;
"""
        h = write_atomic(d / f"{name}.h", header)
        c = write_atomic(d / f"{name}.cc", source)
        return h, c

    def __repr__(self) -> str:
        return (f"Int8Model(input={self.input_shape}, output={self.output_shape}, "
                f"size_bytes={self.size_bytes}, arena_bytes={self.arena_bytes})")


def convert(model, representative_data) -> Int8Model:
    """Post-training int8 quantization (TFLite int8 spec) of a trained model.

    Activation ranges are calibrated on `representative_data`: an array of samples, or, as
    TFLiteConverter.representative_dataset, a generator function (any callable returning an
    iterable) or a generator/iterator, yielding batches: each an array, or a list/tuple whose
    first element is the input (TFLite's `yield [x]`); the batches are concatenated. Kernels
    become per-tensor symmetric int8, biases int32, requantization fixed point.
    """
    from .models import Model

    if not isinstance(model, Model):
        raise TypeError(f"convert: expected a tinylearn model, got {type(model).__name__}")
    if not model.built:
        raise RuntimeError("convert: the model has no weights yet; train it (fit) first")
    x = _representative(representative_data, model.input_shape)
    d = _core.quantize(model._core, x)
    return Int8Model(_core.lower(d), graph=_graph_from_core(d))


def _representative(data, input_shape) -> np.ndarray:
    """convert's representative data as one float32 array of samples (see convert)."""
    name = "convert: representative_data"
    if isinstance(data, (np.ndarray, list, tuple)) or not (callable(data) or isinstance(data, Iterator)):
        return as_float_array(data, name, input_shape)
    items = data() if callable(data) else data
    if not isinstance(items, Iterable):
        raise TypeError(f"{name}: the callable must return an iterable of batches (a generator), "
                        f"got {type(items).__name__}")
    batches = []
    for i, item in enumerate(items):
        if isinstance(item, (list, tuple)):
            if not item:
                raise ValueError(f"{name}: batch {i} is an empty {type(item).__name__}; expected [x]")
            item = item[0]
        batches.append(as_float_array(item, f"{name} (batch {i})", input_shape))
    if not batches:
        raise ValueError(f"{name}: the generator yielded no batches; expected at least one sample")
    return np.concatenate(batches)


def from_tflite(src) -> Int8Model:
    """Imports a fully int8-quantized .tflite model (path or bytes) made of the operators the
    int8 core runs. An operator it does not support raises ValueError naming it and its index."""
    read_tflite = _tflite_io("from_tflite").read_tflite

    g = read_tflite(src)
    try:
        blob = _core.lower(_graph_to_core(g))
    except ValueError as e:
        raise ValueError(f"from_tflite: {e}") from None
    return Int8Model(blob, graph=g)


def _tflite_io(what: str):
    """tinylearn.tflite_io, which needs the optional `tflite` and `flatbuffers` packages."""
    try:
        from . import tflite_io
    except ImportError as e:
        raise ImportError(f"{what} needs the packages 'tflite' and 'flatbuffers' "
                          f"(pip install 'tinylearn[tflite]'): {e}") from None
    return tflite_io


def _sample_shape(info: dict) -> tuple:
    shape = tuple(int(d) for d in info["shape"])
    return (None,) + (shape[1:] if len(shape) > 1 else shape)


def _nbytes(t) -> int:
    return int(np.prod(t.shape, dtype=np.int64)) * np.dtype(_NP_DTYPES[t.dtype]).itemsize


def op_macs(g, op) -> int:
    """Multiply-accumulates of one operator of a QGraph."""
    out = g.tensors[op.outputs[0]]
    n_out = int(np.prod(out.shape, dtype=np.int64))
    if op.op == "FULLY_CONNECTED":
        return n_out * int(g.tensors[op.inputs[1]].shape[1])
    if op.op == "CONV_2D":
        _, kh, kw, c = g.tensors[op.inputs[1]].shape
        return n_out * kh * kw * c
    if op.op == "DEPTHWISE_CONV_2D":
        _, kh, kw, _ = g.tensors[op.inputs[1]].shape
        return n_out * kh * kw
    return 0


def _graph_to_core(g) -> dict:
    g.validate()
    tensors = []
    for t in g.tensors:
        data = None
        if t.data is not None:
            data = np.ascontiguousarray(t.data, dtype=_NP_DTYPES[t.dtype]).tobytes()
        tensors.append({"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                        "scale": [float(v) for v in t.scale], "zero_point": [int(v) for v in t.zero_point],
                        "quantized_dimension": int(t.quantized_dimension), "data": data})
    ops = [{"op": op.op, "inputs": list(op.inputs), "outputs": list(op.outputs), "options": dict(op.options)}
           for op in g.ops]
    return {"tensors": tensors, "ops": ops, "inputs": list(g.inputs), "outputs": list(g.outputs)}


def _graph_from_core(d: dict):
    from .qgraph import QGraph, QOp, QTensor

    tensors = []
    for t in d["tensors"]:
        data = None
        if t["data"] is not None:
            data = np.frombuffer(t["data"], dtype=_NP_DTYPES[t["dtype"]]).reshape(t["shape"]).copy()
        tensors.append(QTensor(t["name"], tuple(t["shape"]), t["dtype"], np.asarray(t["scale"], np.float32),
                               np.asarray(t["zero_point"], np.int64), t["quantized_dimension"], data))
    ops = [QOp(o["op"], list(o["inputs"]), list(o["outputs"]), dict(o["options"])) for o in d["ops"]]
    return QGraph(tensors, ops, list(d["inputs"]), list(d["outputs"])).validate()


def load_int8(path) -> Int8Model:
    """Reads an int8 model saved by Int8Model.save()."""
    data = Path(path).read_bytes()
    try:
        return Int8Model(data)
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {e}") from None
