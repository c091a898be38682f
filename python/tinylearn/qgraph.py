"""QGraph: tinylearn's exchange format for int8-quantized graphs (a small IR, TFLite-shaped).

A ``QGraph`` is what ``tinylearn.tflite_io.read_tflite`` returns and ``write_tflite`` takes. It
follows TFLite's model closely, so that a .tflite file goes through it and back without losing
anything that changes the int8 results:

- ``tensors``: a list of :class:`QTensor`; ops and graph inputs/outputs refer to them by index.
- ``ops``: a list of :class:`QOp` in execution (topological) order.
- ``inputs``/``outputs``: tensor indices of the graph's inputs and outputs.

Conventions (TFLite's):

- Layouts: activations NHWC; CONV_2D filters OHWI ``[out, kh, kw, in]``; DEPTHWISE_CONV_2D
  filters ``[1, kh, kw, in * depth_multiplier]`` (per-channel quantization on dimension 3);
  FULLY_CONNECTED weights ``[out, in]``; biases int32 ``[out]`` with scale
  ``input_scale * weight_scale`` and zero point 0.
- Quantization: ``real = scale * (q - zero_point)``. int8 tensors always carry it; per-tensor
  tensors have one scale, per-channel tensors one per slice of ``quantized_dimension``.
- Op inputs use -1 for an absent optional input (e.g. a FULLY_CONNECTED without bias). MEAN and
  RESHAPE keep TFLite's second input (the int32 axes / new-shape constant).
- Option names and values (``QOp.options``), per op; every listed key is required and no other
  key is accepted:

  ================== =========================================================================
  FULLY_CONNECTED    fused_activation, keep_num_dims
  CONV_2D            fused_activation, padding, stride_h, stride_w
  DEPTHWISE_CONV_2D  fused_activation, padding, stride_h, stride_w, depth_multiplier
  MAX_POOL_2D        fused_activation, padding, stride_h, stride_w, filter_h, filter_w
  AVERAGE_POOL_2D    (as MAX_POOL_2D)
  MEAN               keep_dims, axes (tuple of non-negative ints, equal to the axes tensor)
  ADD                fused_activation
  CONCATENATION      fused_activation, axis (non-negative)
  SOFTMAX            beta
  RESHAPE            optional new_shape (tuple; TFLite's ReshapeOptions, kept if the file has it)
  RELU, RELU6, QUANTIZE, DEQUANTIZE: none
  ================== =========================================================================

  ``fused_activation`` is 'NONE', 'RELU' or 'RELU6'; ``padding`` 'SAME' or 'VALID'; strides and
  filter sizes are positive ints; ``beta`` a positive float; the flags are bools.

``QGraph.validate()`` checks all of this and raises ``ValueError`` saying what is wrong where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["QTensor", "QOp", "QGraph", "OPS", "OPTION_KEYS", "DTYPES", "ACTIVATIONS", "PADDINGS"]

DTYPES = ("int8", "int32", "float32")
ACTIVATIONS = ("NONE", "RELU", "RELU6")
PADDINGS = ("SAME", "VALID")

_CONV = ("fused_activation", "padding", "stride_h", "stride_w")
_POOL = _CONV + ("filter_h", "filter_w")
OPTION_KEYS: dict[str, tuple[str, ...]] = {
    "FULLY_CONNECTED": ("fused_activation", "keep_num_dims"),
    "CONV_2D": _CONV,
    "DEPTHWISE_CONV_2D": _CONV + ("depth_multiplier",),
    "MAX_POOL_2D": _POOL,
    "AVERAGE_POOL_2D": _POOL,
    "MEAN": ("keep_dims", "axes"),
    "ADD": ("fused_activation",),
    "CONCATENATION": ("fused_activation", "axis"),
    "SOFTMAX": ("beta",),
    "RESHAPE": (),
    "RELU": (),
    "RELU6": (),
    "QUANTIZE": (),
    "DEQUANTIZE": (),
}
_OPTIONAL_KEYS = {"RESHAPE": ("new_shape",)}
OPS = tuple(OPTION_KEYS)

# Number of inputs (min, max) and outputs of each op.
_ARITY = {
    "FULLY_CONNECTED": (2, 3, 1), "CONV_2D": (2, 3, 1), "DEPTHWISE_CONV_2D": (2, 3, 1),
    "MAX_POOL_2D": (1, 1, 1), "AVERAGE_POOL_2D": (1, 1, 1), "MEAN": (2, 2, 1),
    "ADD": (2, 2, 1), "CONCATENATION": (1, None, 1), "SOFTMAX": (1, 1, 1),
    "RESHAPE": (1, 2, 1), "RELU": (1, 1, 1), "RELU6": (1, 1, 1), "QUANTIZE": (1, 1, 1),
    "DEQUANTIZE": (1, 1, 1),
}


@dataclass(eq=False)
class QTensor:
    """A tensor: an activation (``data is None``) or a constant.

    ``scale`` (float32) and ``zero_point`` (int64) have 1 element (per-tensor), or one per index
    of dimension ``quantized_dimension`` (per-channel); both are empty for an unquantized tensor
    (float32 tensors, int32 shape/axes constants). ``==`` compares every field, arrays
    element by element (and constant data's dtype).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    zero_point: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    quantized_dimension: int = 0
    data: Optional[np.ndarray] = None

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        self.scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        self.zero_point = np.asarray(self.zero_point, dtype=np.int64).reshape(-1)

    def __eq__(self, other) -> bool:
        if not isinstance(other, QTensor):
            return NotImplemented
        same_data = (self.data is None and other.data is None) or (
            self.data is not None and other.data is not None
            and self.data.dtype == other.data.dtype and np.array_equal(self.data, other.data))
        return (self.name == other.name and self.shape == other.shape
                and self.dtype == other.dtype and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.zero_point, other.zero_point)
                and self.quantized_dimension == other.quantized_dimension and same_data)

    __hash__ = None  # mutable

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def quantized(self) -> bool:
        return self.scale.size > 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class QOp:
    """One operator: ``op`` (TFLite builtin name), tensor indices, options (see module doc)."""

    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class QGraph:
    tensors: list[QTensor]
    ops: list[QOp]
    inputs: list[int]
    outputs: list[int]

    def validate(self) -> "QGraph":
        """Check the graph's structure; raise ``ValueError`` naming the first problem found.

        Checks: tensor fields (dtype, shape, quantization, constant data), indices, op names,
        arities, options, dtypes around each op, each op's output shape against the one TFLite
        computes from its inputs and options, that every tensor is written at most once, and
        that every op reads only graph inputs, constants or earlier ops' outputs.
        Returns the graph.
        """
        n = len(self.tensors)
        for i, t in enumerate(self.tensors):
            _check_tensor(i, t)

        def index(where: str, k, optional: bool = False) -> None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise ValueError(f"{where}: tensor index must be an int, got {k!r}")
            if optional and k == -1:
                return
            if not 0 <= k < n:
                raise ValueError(f"{where}: tensor index {k} out of range (the graph has {n} tensors)")

        if not self.inputs or not self.outputs:
            raise ValueError("the graph needs at least one input and one output "
                             f"(inputs {list(self.inputs)}, outputs {list(self.outputs)})")
        for k in self.inputs:
            index("graph inputs", k)
            if self.tensors[k].is_constant:
                raise ValueError(f"graph input {k} ({self.tensors[k].name!r}) is a constant")
        for k in self.outputs:
            index("graph outputs", k)

        available = {int(k) for k in self.inputs} | {i for i, t in enumerate(self.tensors)
                                                     if t.is_constant}
        written: dict[int, int] = {}
        for j, op in enumerate(self.ops):
            where = f"operator {j} ({op.op})"
            if not isinstance(op, QOp):
                raise ValueError(f"operator {j}: expected a QOp, got {type(op).__name__}")
            if op.op not in _ARITY:
                raise ValueError(f"operator {j}: unsupported op {op.op!r}; supported: {', '.join(OPS)}")
            lo, hi, n_out = _ARITY[op.op]
            if not lo <= len(op.inputs) <= (hi if hi is not None else len(op.inputs)):
                raise ValueError(f"{where}: takes {lo}" + (f"-{hi}" if hi != lo else "")
                                 + f" inputs, got {len(op.inputs)}")
            if len(op.outputs) != n_out:
                raise ValueError(f"{where}: has {n_out} output(s), got {len(op.outputs)}")
            for pos, k in enumerate(op.inputs):
                index(f"{where} input {pos}", k, optional=pos == 2)
                if k != -1 and k not in available:
                    raise ValueError(f"{where} reads tensor {k} ({self.tensors[k].name!r}) before "
                                     "any operator writes it (ops must be in execution order)")
            for k in op.outputs:
                index(f"{where} output", k)
                if k in written or k in self.inputs or self.tensors[k].is_constant:
                    what = (f"operator {written[k]}" if k in written else
                            "the graph input" if k in self.inputs else "a constant")
                    raise ValueError(f"{where} writes tensor {k} ({self.tensors[k].name!r}), "
                                     f"which is already {what}")
                written[k] = j
                available.add(k)
            _check_options(where, op)
            _check_op_tensors(where, op, self.tensors)
            _check_output_shape(where, op, self.tensors)
        for k in self.outputs:
            if k not in available:
                raise ValueError(f"graph output {k} ({self.tensors[k].name!r}) is never written")
        return self

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.op] = counts.get(op.op, 0) + 1
        return counts


# -- checks --------------------------------------------------------------------------------------

def _check_tensor(i: int, t: QTensor) -> None:
    where = f"tensor {i} ({getattr(t, 'name', '?')!r})"
    if not isinstance(t, QTensor):
        raise ValueError(f"tensor {i}: expected a QTensor, got {type(t).__name__}")
    if t.dtype not in DTYPES:
        raise ValueError(f"{where}: unsupported dtype {t.dtype!r}; expected one of {DTYPES}")
    if any(d < 0 for d in t.shape):
        raise ValueError(f"{where}: negative dimension in shape {t.shape}")
    if t.scale.size != t.zero_point.size:
        raise ValueError(f"{where}: {t.scale.size} scales but {t.zero_point.size} zero points")
    if t.dtype == "int8" and not t.quantized:
        raise ValueError(f"{where}: int8 tensor without quantization parameters (scale, zero point)")
    if t.dtype == "float32" and t.quantized:
        raise ValueError(f"{where}: float32 tensor with quantization parameters")
    if t.quantized:
        if not (np.all(np.isfinite(t.scale)) and np.all(t.scale > 0)):
            raise ValueError(f"{where}: scales must be finite and positive, got {t.scale}")
        if t.dtype == "int8" and (t.zero_point.min() < -128 or t.zero_point.max() > 127):
            raise ValueError(f"{where}: int8 zero point outside [-128, 127]: {t.zero_point}")
        if t.per_channel:
            qd = t.quantized_dimension
            if not 0 <= qd < len(t.shape):
                raise ValueError(f"{where}: quantized_dimension {qd} out of range for shape {t.shape}")
            if t.shape[qd] != t.scale.size:
                raise ValueError(f"{where}: {t.scale.size} per-channel scales but dimension {qd} "
                                 f"of shape {t.shape} has {t.shape[qd]} entries")
    if t.data is not None:
        if not isinstance(t.data, np.ndarray) or t.data.dtype != np.dtype(t.dtype):
            got = t.data.dtype if isinstance(t.data, np.ndarray) else type(t.data).__name__
            raise ValueError(f"{where}: constant data must be a {t.dtype} array, got {got}")
        if tuple(t.data.shape) != t.shape:
            raise ValueError(f"{where}: data has shape {tuple(t.data.shape)}, tensor shape is {t.shape}")


def _check_options(where: str, op: QOp) -> None:
    o = op.options
    if not isinstance(o, dict):
        raise ValueError(f"{where}: options must be a dict, got {type(o).__name__}")
    required = OPTION_KEYS[op.op]
    allowed = set(required) | set(_OPTIONAL_KEYS.get(op.op, ()))
    missing = [k for k in required if k not in o]
    if missing:
        raise ValueError(f"{where}: missing option(s) {missing}")
    extra = sorted(set(o) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown option(s) {extra}; {op.op} takes {sorted(allowed)}")

    def positive_int(k):
        v = o[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{where}: option {k} must be a positive int, got {v!r}")

    if "fused_activation" in o and o["fused_activation"] not in ACTIVATIONS:
        raise ValueError(f"{where}: unsupported fused_activation {o['fused_activation']!r}; "
                         f"expected one of {ACTIVATIONS}")
    if "padding" in o and o["padding"] not in PADDINGS:
        raise ValueError(f"{where}: padding must be one of {PADDINGS}, got {o['padding']!r}")
    for k in ("stride_h", "stride_w", "filter_h", "filter_w", "depth_multiplier"):
        if k in o:
            positive_int(k)
    for k in ("keep_num_dims", "keep_dims"):
        if k in o and not isinstance(o[k], (bool, np.bool_)):
            raise ValueError(f"{where}: option {k} must be a bool, got {o[k]!r}")
    if "beta" in o:
        b = o["beta"]
        if isinstance(b, bool) or not isinstance(b, (int, float, np.floating)) or not (
                np.isfinite(b) and b > 0):
            raise ValueError(f"{where}: option beta must be a positive float, got {b!r}")
    if "axis" in o:
        a = o["axis"]
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 0:
            raise ValueError(f"{where}: option axis must be a non-negative int, got {a!r}")
    if "axes" in o:
        a = o["axes"]
        if not isinstance(a, tuple) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in a):
            raise ValueError(f"{where}: option axes must be a tuple of non-negative ints, got {a!r}")
    if "new_shape" in o:
        a = o["new_shape"]
        if not isinstance(a, tuple) or not all(isinstance(v, (int, np.integer)) for v in a):
            raise ValueError(f"{where}: option new_shape must be a tuple of ints, got {a!r}")


def _check_op_tensors(where: str, op: QOp, tensors: list[QTensor]) -> None:
    """Dtypes, ranks and constants around one op (the structure the kernels rely on)."""
    ins = [tensors[k] if k != -1 else None for k in op.inputs]
    out = tensors[op.outputs[0]]
    x = ins[0]
    o = op.options

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(f"{where}: {msg}")

    if op.op == "QUANTIZE":
        need(x.dtype in ("float32", "int8") and out.dtype == "int8",
             f"QUANTIZE maps float32 or int8 to int8, got {x.dtype} -> {out.dtype}")
        return
    if op.op == "DEQUANTIZE":
        need(x.dtype == "int8" and out.dtype == "float32",
             f"DEQUANTIZE maps int8 to float32, got {x.dtype} -> {out.dtype}")
        return
    need(x.dtype == "int8", f"input 0 ({x.name!r}) must be int8, got {x.dtype}")
    need(out.dtype == "int8", f"output ({out.name!r}) must be int8, got {out.dtype}")
    need(not out.per_channel, f"output ({out.name!r}) must be quantized per tensor")
    if op.op in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
        w, b = ins[1], ins[2] if len(ins) > 2 else None
        need(w.dtype == "int8" and w.is_constant, f"weights ({w.name!r}) must be a constant int8 tensor")
        need(bool(np.all(w.zero_point == 0)), f"weights ({w.name!r}) must be symmetric (zero point 0)")
        rank = {"FULLY_CONNECTED": 2, "CONV_2D": 4, "DEPTHWISE_CONV_2D": 4}[op.op]
        need(len(w.shape) == rank, f"weights ({w.name!r}) must have rank {rank}, got shape {w.shape}")
        channel_dim = 3 if op.op == "DEPTHWISE_CONV_2D" else 0
        need(not w.per_channel or w.quantized_dimension == channel_dim,
             f"per-channel weights ({w.name!r}) must be quantized along dimension {channel_dim}, "
             f"got {w.quantized_dimension}")
        if op.op != "FULLY_CONNECTED":
            need(len(x.shape) == 4 and len(out.shape) == 4,
                 f"input and output must be NHWC (rank 4), got {x.shape} and {out.shape}")
            if op.op == "CONV_2D":
                need(x.shape[3] == w.shape[3],
                     f"filter shape {w.shape} does not match input channels {x.shape[3]}")
            else:
                need(w.shape[0] == 1 and w.shape[3] == x.shape[3] * o["depth_multiplier"],
                     f"depthwise filter shape {w.shape} does not match input channels {x.shape[3]} "
                     f"x depth_multiplier {o['depth_multiplier']}")
        else:
            need(w.shape[1] > 0 and int(np.prod(x.shape)) % w.shape[1] == 0,
                 f"input shape {x.shape} is not a whole number of rows of {w.shape[1]} features")
        out_channels = w.shape[channel_dim]
        if b is not None:
            need(b.dtype == "int32" and b.is_constant and b.shape == (out_channels,),
                 f"bias ({b.name!r}) must be a constant int32 tensor of shape ({out_channels},)")
    elif op.op == "ADD":
        need(ins[1].dtype == "int8", f"input 1 ({ins[1].name!r}) must be int8")
    elif op.op == "CONCATENATION":
        rank = len(out.shape)
        need(o["axis"] < rank, f"axis {o['axis']} out of range for rank {rank}")
        for t in ins:
            need(t.dtype == "int8" and len(t.shape) == rank,
                 f"input {t.name!r} must be int8 of rank {rank}")
    elif op.op == "MEAN":
        a = ins[1]
        need(a.dtype == "int32" and a.is_constant, f"axes ({a.name!r}) must be a constant int32 tensor")
        rank = len(x.shape)
        axes = tuple(int(v) % rank if rank else int(v) for v in np.ravel(a.data))
        need(axes == tuple(int(v) for v in o["axes"]),
             f"option axes {o['axes']} differ from the axes tensor {axes}")
        need(all(v < rank for v in axes), f"axes {axes} out of range for rank {rank}")
    elif op.op == "RESHAPE":
        need(int(np.prod(x.shape)) == int(np.prod(out.shape)),
             f"cannot reshape {x.shape} ({int(np.prod(x.shape))} elements) to {out.shape}")
        if len(ins) == 2:
            need(ins[1].dtype == "int32", f"shape ({ins[1].name!r}) must be int32")
    elif op.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        need(len(x.shape) == 4 and len(out.shape) == 4,
             f"input and output must be NHWC (rank 4), got {x.shape} and {out.shape}")


def _window_out(size: int, filt: int, stride: int, padding: str) -> int:
    """TFLite's ComputeOutSize (kernels/padding.h), dilation 1."""
    return (size + stride - 1) // stride if padding == "SAME" else (size - filt + stride) // stride


def _check_output_shape(where: str, op: QOp, tensors: list[QTensor]) -> None:
    """The output shape TFLite's Prepare computes from the inputs and options must be the one
    the graph stores: a runtime recomputes it (LiteRT does), so another stored shape would mean
    another result."""
    x = tensors[op.inputs[0]]
    out = tensors[op.outputs[0]].shape
    o = op.options
    how = f"the input {x.shape}"
    if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
        if op.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            fh, fw, channels = o["filter_h"], o["filter_w"], x.shape[3]
            how += f", a {fh}x{fw} window"
        else:
            w = tensors[op.inputs[1]].shape
            fh, fw = w[1], w[2]
            channels = w[0] if op.op == "CONV_2D" else w[3]
            how += f", the filter {w}"
        how += f", strides {o['stride_h']}x{o['stride_w']} and {o['padding']} padding"
        want = (x.shape[0], _window_out(x.shape[1], fh, o["stride_h"], o["padding"]),
                _window_out(x.shape[2], fw, o["stride_w"], o["padding"]), channels)
    elif op.op == "FULLY_CONNECTED":
        units, depth = tensors[op.inputs[1]].shape
        how += f" and the weights ({units}, {depth})"
        if o["keep_num_dims"]:
            how += " with keep_num_dims"
            want = x.shape[:-1] + (units,) if x.shape and x.shape[-1] == depth else None
        else:
            want = (int(np.prod(x.shape)) // depth, units)
    elif op.op == "ADD":
        y = tensors[op.inputs[1]].shape
        how += f" and {y}"
        try:
            want = tuple(np.broadcast_shapes(x.shape, y))
        except ValueError:
            want = None
    elif op.op == "CONCATENATION":
        axis = o["axis"]
        sizes = [tensors[k].shape[axis] if axis < len(tensors[k].shape) else 0 for k in op.inputs]
        how = f"the inputs {[tensors[k].shape for k in op.inputs]} along axis {axis}"
        want = x.shape[:axis] + (sum(sizes),) + x.shape[axis + 1:]
    elif op.op == "MEAN":
        axes = set(o["axes"])
        how += f", axes {o['axes']}" + (" with keep_dims" if o["keep_dims"] else "")
        want = tuple(1 if k in axes else d for k, d in enumerate(x.shape) if o["keep_dims"] or k not in axes)
    elif op.op in ("SOFTMAX", "RELU", "RELU6", "QUANTIZE", "DEQUANTIZE"):
        want = x.shape
    else:  # RESHAPE: the element count (checked above) is what the data fixes
        return
    if want != out:
        raise ValueError(f"{where}: output shape {out} does not match "
                         f"{want if want is not None else 'any shape'}, the shape TFLite computes "
                         f"from {how}")
