"""Post-training int8 quantization and the int8 model (run by the freestanding core)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from . import _core
from ._io import write_atomic
from ._validate import as_float_array
from .errors import UnsupportedModelError

__all__ = ["Int8Model", "MAX_ARENA_BYTES", "ModelFormatError", "convert", "from_tflite",
           "load_int8"]

_NP_DTYPES = {"int8": np.int8, "int32": np.dtype("<i4"), "float32": np.dtype("<f4")}

# The largest arena a model may ask for unless the caller allows more (max_arena_bytes=): a
# blob of a few bytes can declare tensors of up to 1 GiB each, and the host runtime allocates the
# arena when it loads the model. 256 MiB is hundreds of times what a microcontroller holds.
MAX_ARENA_BYTES = 256 * 1024 * 1024

_NO_INDEX = 0xFFFF


class ModelFormatError(ValueError):
    """A model file or blob that tinylearn cannot read: not a model, corrupt, truncated or newer."""


class Int8Model:
    """An int8 model in tinylearn's blob format (see cpp/include/tinylearn/micro/format.h).

    Runs in C++ with the same freestanding core that the firmware runs. Its input and output are
    int8, or float32 for a model that starts with QUANTIZE or ends with DEQUANTIZE (as TFLite
    models with float inputs or outputs do): ``input_dtype`` and ``output_dtype`` say which.

    ``max_arena_bytes`` (default ``MAX_ARENA_BYTES``, 256 MiB; None for no limit) refuses, before
    any allocation, a model that needs a larger arena.

    Sparse weights (a pruned model's, format.h) are unpacked once for the host's fast dense
    kernels, which compute the same bits; ``host_sparse=True`` runs them with the sparse kernels,
    as the firmware does. The blob (to_bytes, save, export_c, firmware) stays as given.
    """

    def __init__(self, blob: bytes, graph=None, *, max_arena_bytes: int | None = MAX_ARENA_BYTES,
                 host_sparse: bool = False):
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected the model as bytes, got {type(blob).__name__}")
        if max_arena_bytes is not None and (isinstance(max_arena_bytes, bool) or
                                            not isinstance(max_arena_bytes, (int, np.integer))):
            raise TypeError(f"max_arena_bytes: expected an int or None, got "
                            f"{type(max_arena_bytes).__name__}")
        blob = bytes(blob)
        # Validated first without the arena, so that a hostile claim allocates nothing.
        status, arena, bad_op, bad_tensor = _core.inspect_blob(blob)
        if status != 0:
            try:
                _core.Int8Model(blob)  # the same rejection, in the runtime's words (newer versions)
            except ValueError as e:
                raise ModelFormatError(str(e) + _rejection_detail(blob, status, bad_op, bad_tensor)) from None
        if max_arena_bytes is not None and arena > max_arena_bytes:
            raise ValueError(f"max_arena_bytes: the model needs an arena of {arena:,} bytes, above "
                             f"the limit of {int(max_arena_bytes):,}; pass a larger "
                             "max_arena_bytes (or None) to load it")
        self._m = _core.Int8Model(blob, bool(host_sparse))
        self._in = self._m.input
        self._out = self._m.output
        self._in_dtype = np.dtype(_NP_DTYPES[self._in["dtype"]])
        self._out_dtype = np.dtype(_NP_DTYPES[self._out["dtype"]])
        # Computed once: invoke() checks shapes on every call (single-sample latency).
        self._in_shape = _sample_shape(self._in)
        self._out_shape = _sample_shape(self._out)
        # invoke()'s fast path: a C-order int8 ndarray of shape (N, features) goes to the binding
        # as it is, and its (N, outputs) result comes back as it is.
        self._flat_in = len(self._in_shape) == 2 and self._in_dtype == np.int8
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
    def input_dtype(self) -> np.dtype:
        """int8, or float32 for a model that starts with QUANTIZE (what invoke() takes)."""
        return self._in_dtype

    @property
    def output_dtype(self) -> np.dtype:
        """int8, or float32 for a model that ends with DEQUANTIZE (what invoke() returns)."""
        return self._out_dtype

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
        if self._in_dtype != np.int8:
            raise ValueError("quantize_input: this model takes float32 input (its first operator "
                             "quantizes it); pass float32 arrays to invoke() or predict()")
        x = as_float_array(x, "quantize_input: x", self.input_shape[1:])
        r = x / np.float32(self.input_scale)  # float32 division, as TFLite's Quantize
        t = np.trunc(r)
        q = t + np.sign(r) * (np.abs(r - t) >= 0.5)  # round half away from zero (exact)
        return np.clip(q + self.input_zero_point, -128, 127).astype(np.int8)

    def dequantize_output(self, q) -> np.ndarray:
        if self._out_dtype != np.int8:
            raise ValueError("dequantize_output: this model's output is float32 already (its last "
                             "operator dequantizes it)")
        q = np.asarray(q)
        return (self.output_scale * (q.astype(np.float64) - self.output_zero_point)).astype(np.float32)

    def invoke(self, x_int8) -> np.ndarray:
        """int8 (N, inputs) -> int8 (N, outputs), exactly what the firmware computes. A model
        with float32 input or output (input_dtype, output_dtype) takes or gives float32."""
        if self._flat_in:  # a C-order int8 array (N, features) runs as it is; else None
            y = self._m.invoke_exact(x_int8)
            if y is not None:
                if self._out_dtype != np.int8:
                    y = y.view(self._out_dtype)
                return y if self._flat_out else y.reshape((y.shape[0],) + self._out_shape[1:])
        x = np.asarray(x_int8)
        if x.dtype != self._in_dtype:
            if self._in_dtype == np.int8:
                raise TypeError(f"invoke: expected an int8 array, got dtype {x.dtype}; "
                                "use predict() for float input or quantize_input() first")
            raise TypeError(f"invoke: this model takes float32 input (its first operator "
                            f"quantizes it), got dtype {x.dtype}")
        sample = self._in_shape[1:]
        if x.ndim == 1 and sample == (1,):
            x = x.reshape(-1, 1)
        if x.shape[1:] != sample:
            raise ValueError(f"invoke: expected shape (N, {', '.join(map(str, sample))}), got {x.shape}")
        n = x.shape[0]
        if n == 0:
            raise ValueError("invoke: expected at least one sample, got an empty array")
        if self._in_dtype == np.int8:
            y = self._m.invoke(x.reshape(n, -1))  # the binding copies a non-contiguous view
        else:  # float32 samples, passed to the core as their bytes
            y = self._m.invoke(np.ascontiguousarray(x, dtype="<f4").reshape(n, -1).view(np.int8))
        if self._out_dtype != np.int8:
            y = y.view(self._out_dtype)
        return y.reshape((n,) + self._out_shape[1:])

    def predict(self, x) -> np.ndarray:
        """Float in, float out: quantize, run int8, dequantize (a float32 input or output of the
        model itself is passed as it is)."""
        x = as_float_array(x, "predict: x", self.input_shape[1:])
        y = self._m.predict(np.ascontiguousarray(x.reshape(len(x), -1)))
        return y.reshape((len(x),) + self.output_shape[1:])

    # -- description of the layers ---------------------------------------------------------
    def weight_encodings(self) -> list:
        """Per operator of the graph with weights (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D):
        a dict with the operator's index `op`, the `encoding` its weights are stored in ("dense",
        or "sparse": format.h, TLM_TYPE_INT8_SPARSE), their `density` (the fraction of nonzero
        weights) and `bytes` (as stored in the blob)."""
        import struct

        g = self._need_graph("weight_encodings")
        blob = self.to_bytes()
        n_tensors, n_ops = struct.unpack_from("<HH", blob, 20)
        result = []
        for k in range(n_ops):
            at = 32 + 32 * (n_tensors + k)
            code = struct.unpack_from("<H", blob, at)[0]
            if _OPCODES.get(code) not in _WEIGHTED_OPS:
                continue
            t = struct.unpack_from("<H", blob, at + 6)[0]
            ttype, rank = struct.unpack_from("<BB", blob, 32 + 32 * t)
            dims = struct.unpack_from("<4i", blob, 32 + 32 * t + 4)[:rank]
            offset = struct.unpack_from("<I", blob, 32 + 32 * t + 20)[0]
            index = _graph_op_index(g, k)
            w = g.tensors[g.ops[index].inputs[1]].data
            density = float(np.count_nonzero(w)) / w.size
            if ttype == _TYPE_INT8_SPARSE:
                entries = struct.unpack_from("<I", blob, offset)[0]
                stored = 4 + (2 * dims[0] + 3) // 4 * 4 + 2 * ((entries + 3) // 4 * 4)
                result.append({"op": index, "encoding": "sparse", "density": density, "bytes": stored})
            else:
                result.append({"op": index, "encoding": "dense", "density": density,
                               "bytes": int(np.prod(dims))})
        return result

    def summary(self, print_fn=None) -> None:
        """Prints, per operator: op, output shape, the weights' encoding (dense or sparse) and
        density (nonzero fraction), MACs, weight bytes (weights as stored, a sparse tensor's
        encoding, plus biases), activation (output) bytes; then the totals, the model bytes and
        the arena bytes (the planned peak, which is below the sum of the activations because
        tensors whose lifetimes do not overlap share memory).
        Returns None, as Keras's summary() (Jupyter shows it once); print_fn gets the text."""
        g = self._need_graph("summary")
        encodings = {e["op"]: e for e in self.weight_encodings()}
        rows = [("#", "op", "output shape", "encoding", "density", "MACs", "weights (B)",
                 "activations (B)")]
        tm = tw = ta = 0
        for i, op in enumerate(g.ops):
            out = g.tensors[op.outputs[0]]
            macs = op_macs(g, op)
            e = encodings.get(i)
            # Weights and biases; RESHAPE's shape and MEAN's axes live in the operator itself.
            w = 0 if op.op in ("RESHAPE", "MEAN") else sum(
                e["bytes"] if e is not None and j == 1 else _nbytes(g.tensors[t])
                for j, t in enumerate(op.inputs) if t >= 0 and g.tensors[t].data is not None)
            a = _nbytes(out)
            tm, tw, ta = tm + macs, tw + w, ta + a
            rows.append((str(i), op.op, str(tuple(out.shape)), e["encoding"] if e else "",
                         f"{100 * e['density']:.1f}%" if e else "", f"{macs:,}", f"{w:,}", f"{a:,}"))
        rows.append(("", "total", "", "", "", f"{tm:,}", f"{tw:,}", f"{ta:,}"))
        widths = [max(len(r[k]) for r in rows) for k in range(8)]
        lines = ["  ".join(c.rjust(w) if k >= 4 else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        lines.append(f"model: {self.size_bytes:,} bytes; arena: {self.arena_bytes:,} bytes "
                     f"(peak of the memory plan); MACs per inference: {tm:,}")
        (print_fn or print)("\n".join(lines))

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
        if not isinstance(name, str):
            raise TypeError(f"export_c: name must be a string, got {type(name).__name__}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in _C_KEYWORDS:
            raise ValueError(f"export_c: name must be a C and C++ identifier that is not a keyword "
                             f"(it names the array and the files), got {name!r}")
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


def convert(model, representative_data=None, *, weight_encoding: str = "auto") -> Int8Model:
    """Int8 quantization (TFLite int8 spec) of a trained model.

    Post-training quantization: activation ranges are calibrated on `representative_data`: an
    array of samples, or, as TFLiteConverter.representative_dataset, a generator function (any
    callable returning an iterable) or a generator/iterator, yielding batches: each an array, or
    a list/tuple whose first element is the input (TFLite's `yield [x]`); the batches are
    concatenated. Convolution kernels become per-channel symmetric int8, dense kernels
    per-tensor, biases int32, requantization fixed point.

    A quantization-aware model (tl.optimize.quantize_model, trained) needs no representative
    data: its int8 parameters are the ranges its FakeQuant layers learned (data given is ignored).

    weight_encoding: how the weights of FULLY_CONNECTED and CONV_2D operators are stored in the
    blob. "auto" (default): per tensor, dense or sparse (the nonzero weights only, format.h),
    whichever takes fewer bytes: a pruned model (tl.optimize.prune_low_magnitude, strip_pruning)
    gets a smaller blob and fewer instructions per inference, with exactly the same outputs.
    "dense": every one dense. "sparse": every one sparse where the format allows (rows of at most
    65535 weights), even when larger (for tests). The TFLite export (to_tflite) is dense either
    way. Int8Model.summary() shows each operator's encoding.
    """
    from .models import Model
    from .optimize._qat import is_quantization_aware

    if not isinstance(model, Model):
        raise TypeError(f"convert: expected a tinylearn model, got {type(model).__name__}")
    if weight_encoding not in ("auto", "dense", "sparse"):
        raise ValueError(f"convert: weight_encoding must be 'auto', 'dense' or 'sparse', "
                         f"got {weight_encoding!r}")
    if not model.built:
        raise RuntimeError("convert: the model has no weights yet; train it (fit) first")
    if is_quantization_aware(model):
        x = np.zeros((0, *model.input_shape), np.float32)
    elif representative_data is None:
        raise TypeError("convert: representative_data is required (samples to calibrate the "
                        "activation ranges), unless the model is quantization-aware "
                        "(tl.optimize.quantize_model)")
    else:
        x = _representative(representative_data, model.input_shape)
    d = _core.quantize(model._core, x)
    return Int8Model(_core.lower(d, weight_encoding), graph=_graph_from_core(d))


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


def from_tflite(src, *, max_arena_bytes: int | None = MAX_ARENA_BYTES) -> Int8Model:
    """Imports a fully int8-quantized .tflite model (path or bytes) made of the operators the
    int8 core runs (float32 only as the input of a first QUANTIZE or the output of a last
    DEQUANTIZE). An operator it does not support raises UnsupportedModelError (a ValueError)
    naming it, its index and what was expected. A model whose arena would exceed
    `max_arena_bytes` is refused, as by load_int8."""
    read_tflite = _tflite_io("from_tflite").read_tflite

    g = read_tflite(src)
    try:
        blob = _core.lower(_graph_to_core(g))
    except ValueError as e:
        raise UnsupportedModelError(f"from_tflite: {e}") from None
    status, _, bad_op, bad_tensor = _core.inspect_blob(blob)
    if status != 0:
        raise UnsupportedModelError(
            f"from_tflite: the int8 core refuses the model: {_core.status_str(status)} "
            f"(status {status})" + _rejection_detail(blob, status, bad_op, bad_tensor, g))
    return Int8Model(blob, graph=g, max_arena_bytes=max_arena_bytes)


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


def load_int8(path, *, max_arena_bytes: int | None = MAX_ARENA_BYTES) -> Int8Model:
    """Reads an int8 model saved by Int8Model.save(). A model that needs an arena above
    `max_arena_bytes` (default MAX_ARENA_BYTES, 256 MiB; None: no limit) is refused with a
    ValueError before anything is allocated."""
    data = Path(path).read_bytes()
    try:
        return Int8Model(data, max_arena_bytes=max_arena_bytes)
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {e}") from None


# Keywords of C (C23) and C++ (C++23), and the alternative operator spellings of C++: none can
# name the exported array.
_C_KEYWORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
char32_t class co_await co_return co_yield compl concept const const_cast consteval constexpr
constinit continue decltype default delete do double dynamic_cast else enum explicit export
extern false float for friend goto if inline int long mutable namespace new noexcept not not_eq
nullptr operator or or_eq private protected public register reinterpret_cast requires restrict
return short signed sizeof static static_assert static_cast struct switch template this
thread_local throw true try typedef typeid typename typeof typeof_unqual union unsigned using
virtual void volatile wchar_t while xor xor_eq _Alignas _Alignof _Atomic _BitInt _Bool _Complex
_Decimal128 _Decimal32 _Decimal64 _Generic _Imaginary _Noreturn _Static_assert _Thread_local
""".split())

# The blob format's operator codes (format.h, enum tlm_opcode) and what each operator expects of
# its operands, for the messages of a rejected blob.
_OPCODES = {1: "FULLY_CONNECTED", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 5: "MAX_POOL_2D",
            6: "AVERAGE_POOL_2D", 7: "MEAN", 8: "ADD", 9: "CONCATENATION", 10: "SOFTMAX",
            11: "RELU", 12: "RESHAPE", 13: "QUANTIZE", 14: "DEQUANTIZE"}
_EXPECTS = {
    "FULLY_CONNECTED": "an int8 input of batches * k elements (any shape: TFLite flattens it to "
                       "[batches, k]), int8 constant weights [out, k] (dense or sparse), an optional int32 constant "
                       "bias [out], an int8 output [..., out] of batches rows, disjoint from the "
                       "input",
    "CONV_2D": "an int8 input [n, h, w, c], an int8 constant filter [out_c, kh, kw, c] (dense "
               "or sparse), an "
               "optional int32 bias [out_c], int32 multipliers and shifts [out_c], an int8 output "
               "[n, out_h, out_w, out_c] whose windows all start inside the input",
    "DEPTHWISE_CONV_2D": "an int8 input [n, h, w, c], an int8 constant filter [1, kh, kw, c * "
                         "depth_multiplier], an optional int32 bias, int32 multipliers and shifts "
                         "per output channel, an int8 output [n, out_h, out_w, c * "
                         "depth_multiplier]",
    "MAX_POOL_2D": "an int8 input [n, h, w, c] and an int8 output [n, out_h, out_w, c] with the "
                   "input's scale and zero point, every window overlapping the input",
    "AVERAGE_POOL_2D": "an int8 input [n, h, w, c] and an int8 output [n, out_h, out_w, c] with "
                       "the input's scale and zero point, every window overlapping the input",
    "MEAN": "an int8 input [n, h, w, c] and an int8 output [n, 1, 1, c] or [n, c], disjoint",
    "ADD": "two int8 inputs with the output's shape (no broadcasting)",
    "CONCATENATION": "1 to 6 int8 inputs with the output's rank, scale and zero point, equal to it "
                     "except along the axis, whose sizes add up to the output's",
    "SOFTMAX": "an int8 input and output of the same shape, the output's zero point -128, at "
               "most 4095 elements in the last dimension",
    "RELU": "an int8 input and output of the same shape",
    "RESHAPE": "an arena input and output of the same type, byte count and quantization",
    "QUANTIZE": "a float32 or int8 input and an int8 output of the same shape",
    "DEQUANTIZE": "an int8 input and a float32 output of the same shape, disjoint",
}
_TYPES = {1: "int8", 2: "int32", 3: "float32", 4: "sparse int8"}
_TYPE_INT8_SPARSE = 4
_WEIGHTED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


def _rejection_detail(blob: bytes, status: int, bad_op: int, bad_tensor: int, graph=None) -> str:
    """Where the core rejected `blob`: the operator (index, type, operands as stored, what it
    expects) or the tensor. `graph`: the QGraph it was lowered from, whose operator index is
    named (a CONCATENATION of more than 6 inputs lowers to several operators)."""
    import struct

    if bad_op == _NO_INDEX and bad_tensor == _NO_INDEX:
        return ""
    # The core checked the header's counts and that the records lie inside the blob.
    n_tensors, n_ops = struct.unpack_from("<HH", blob, 20)

    def tensor(k: int) -> str:
        if k >= n_tensors:
            return f"tensor {k} (out of range)"
        ttype, rank, storage = struct.unpack_from("<BBB", blob, 32 + 32 * k)
        dims = struct.unpack_from("<4i", blob, 32 + 32 * k + 4)[:min(max(rank, 1), 4)]
        where = {1: "arena", 2: "constant"}.get(storage, f"storage {storage}")
        return f"{_TYPES.get(ttype, f'type {ttype}')} {tuple(dims)} {where}"

    if bad_op != _NO_INDEX and bad_op < n_ops:
        at = 32 + 32 * (n_tensors + bad_op)
        code, n_in, n_out = struct.unpack_from("<HBB", blob, at)
        ins = struct.unpack_from("<6H", blob, at + 4)[:min(n_in, 6)]
        outs = struct.unpack_from("<2H", blob, at + 16)[:min(n_out, 2)]
        name = _OPCODES.get(code, f"opcode {code}")
        index = bad_op if graph is None else _graph_op_index(graph, bad_op)

        def described(ks) -> str:
            return ", ".join("none" if k == _NO_INDEX else tensor(k) for k in ks)

        text = (f"; operator {index} ({name}) with inputs [{described(ins)}] and outputs "
                f"[{described(outs)}]")
        if name in _EXPECTS:
            text += f"; {name} expects {_EXPECTS[name]} (format.h)"
        return text
    if bad_tensor != _NO_INDEX and bad_tensor < n_tensors:
        why = "no operator uses it" if status == 15 else "its record is invalid"
        return f"; tensor {bad_tensor} ({tensor(bad_tensor)}): {why}"
    return ""


def _graph_op_index(graph, blob_op: int) -> int:
    """The QGraph operator that blob operator `blob_op` was lowered from (lower.cpp: one operator
    each, but a CONCATENATION of n > 6 inputs becomes 1 + ceil((n - 6) / 5) of them)."""
    first = 0
    for k, op in enumerate(graph.ops):
        n = len(op.inputs)
        count = 1 + -(-(n - 6) // 5) if op.op == "CONCATENATION" and n > 6 else 1
        if blob_op < first + count:
            return k
        first += count
    return blob_op
