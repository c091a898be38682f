"""Whole-model files: architecture, weights and optimizer state.

Format (version 1). A model file is a NumPy .npz archive (a zip of .npy arrays) holding:
  "__model__"                 uint8 array: UTF-8 JSON, {"format": "tinylearn.model",
                              "version": 1, "class": "Sequential" | "Model", "name",
                              "input_shape": [...], "nodes": [{"name", "kind", "config",
                              "inputs": [node indices], "trainable": false only for a frozen
                              layer}...] (node 0 is the input, the rest in graph order; the layers
                              of nested models inline), "output": node index, "layers": [layer
                              names in weight order], "compile": null | {"optimizer": {...},
                              "loss", "from_logits", "loss_config", "metrics" (the named ones),
                              "frozen": [names of the layers frozen at compile]}}
  "weights/<layer>/<i>"       float32 arrays of each layer in Keras's order and layouts
                              (trainable, then non-trainable such as moving statistics)
  "optimizer/iterations"      int64 scalar; "optimizer/<i>": float32 slots (Adam: every m, then
                              every v; SGD with momentum: the velocities)
Loading reads each array's .npy header before its data and checks the declared sizes of the
architecture (units, filters, kernel sizes, input shape) against the stored weights before it
builds anything, so a small file cannot demand a large allocation; whatever is wrong with a
file raises ModelFormatError (a ValueError).
Readers refuse a version newer than theirs. Files are written atomically. The suffix is free,
".tlmodel" by convention, except Keras's own (".keras", ".h5", ".hdf5"): save_model refuses
them, since Keras and tl.from_keras could not read the file.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import layers as _layers
from . import losses as _losses
from . import optimizers as _optimizers
from ._io import write_atomic
from .quantize import ModelFormatError

__all__ = ["FORMAT", "MODEL_FORMAT_VERSION", "SUFFIX", "load_model", "save_model"]

FORMAT = "tinylearn.model"
MODEL_FORMAT_VERSION = 1
SUFFIX = ".tlmodel"
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def save_model(model, path) -> Path:
    from .models import Sequential

    path = Path(path)
    if path.suffix.lower() in _KERAS_SUFFIXES:
        raise ValueError(f"save: {str(path)!r} names a Keras file ({path.suffix}), but tinylearn writes "
                         f"its own format, which Keras cannot read; save to "
                         f"{str(path.with_suffix(SUFFIX))!r} ({SUFFIX}) and read it back with "
                         f"tl.load_model")
    if not model.built:
        raise RuntimeError("save: the model has no weights yet; call fit() or build() first")
    ids = {}
    nodes = []
    for t in model._order:
        ids[id(t)] = len(nodes)
        if t.layer is None:
            nodes.append({"name": "input", "kind": "Input", "config": {"shape": list(t.shape)}, "inputs": []})
        else:
            nodes.append({"name": t.layer.name, "kind": t.layer.kind, "config": t.layer.get_config(),
                          "inputs": [ids[id(p)] for p in t.inputs]})
            if not t.layer.trainable:
                nodes[-1]["trainable"] = False
    layer_list = model._leaves()
    nested = any(t.owners for t in model._order)
    meta = {
        "format": FORMAT, "version": MODEL_FORMAT_VERSION,
        "class": "Sequential" if isinstance(model, Sequential) and not nested else "Model",
        "name": model.name, "input_shape": list(model.input_shape), "nodes": nodes,
        "output": ids[id(model._output)], "layers": [layer.name for layer in layer_list],
        "compile": None,
    }
    arrays = {}
    for layer in layer_list:
        for i, w in enumerate(model._layer_weights(model._core, layer)):
            arrays[f"weights/{layer.name}/{i}"] = np.asarray(w, dtype=np.float32)
    # A compile of tl.optimize.Distiller (active during its fit only) is not the model's own.
    if model._compiled is not None and not getattr(model._compiled[1], "core_distillation", None):
        opt, loss, metrics = model._compiled
        meta["compile"] = {"optimizer": opt._config(), "loss": loss.name,
                           "from_logits": loss.from_logits, "loss_config": loss.get_config(),
                           "metrics": [m for m in metrics if isinstance(m, str)],
                           "frozen": [layer.name for layer in model._compiled_frozen or []]}
        iterations, slots = model._core.get_optimizer_state()
        arrays["optimizer/iterations"] = np.asarray(iterations, dtype=np.int64)
        for i, s in enumerate(slots):
            arrays[f"optimizer/{i}"] = s
    if len({layer.name for layer in layer_list}) != len(layer_list):
        raise ValueError("save: two layers share a name; give them distinct names")
    arrays["__model__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_atomic(path, buf.getvalue())


# Errors that a damaged zip archive or .npy member raises while it is read (a zip member's
# unknown compression method: NotImplementedError; NumPy's parse of a bad .npy header:
# ValueError, SyntaxError or tokenize.TokenError).
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
                   RuntimeError, struct.error, KeyError, OverflowError, SyntaxError, tokenize.TokenError)


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_arrays(path: Path, z: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive, each checked against its header before its data is read:
    only numeric dtypes (no pickles), and exactly the bytes that the header's shape declares."""
    arrays = {}
    for info in z.infolist():
        if not info.filename.endswith(".npy"):
            raise ModelFormatError(f"{path}: not a tinylearn model file: unexpected member {info.filename!r}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFormatError(f"{path}: not a tinylearn model file: member {info.filename!r} uses "
                                   f"zip compression method {info.compress_type} (expected stored or deflated)")
        with z.open(info) as member:
            read_header = _NPY_HEADERS.get(np.lib.format.read_magic(member))
            if read_header is None:
                raise ModelFormatError(f"{path}: array {info.filename!r} has an .npy version this "
                                       "reader does not know")
            shape, fortran, dtype = read_header(member)
            if dtype.kind not in "fiu" or dtype.fields is not None or dtype.subdtype is not None:
                raise ModelFormatError(f"{path}: array {info.filename!r} has dtype {dtype}; a model file "
                                       "holds numbers only")
            declared = math.prod(shape) * dtype.itemsize
            stored = info.file_size - member.tell()
            if declared != stored:
                raise ModelFormatError(f"{path}: array {info.filename!r} declares shape {shape} "
                                       f"({declared} bytes), the file holds {stored} bytes")
            data = member.read(stored)
        arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        arrays[info.filename[:-4]] = arr
    return arrays


def load_model(path):
    """A model saved by model.save(): same predictions, and training resumes where it stopped.

    Raises ModelFormatError (a ValueError) for a file that is not a tinylearn model or is
    damaged, and OSError (FileNotFoundError...) for a file that cannot be opened."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            archive = zipfile.ZipFile(f)
        except _ARCHIVE_ERRORS as e:
            raise ModelFormatError(f"{path}: not a tinylearn model file: {_reason(e)}") from None
        try:
            with archive:
                data = _read_arrays(path, archive)
        except ModelFormatError:
            raise
        except _ARCHIVE_ERRORS as e:
            raise ModelFormatError(f"{path}: damaged tinylearn model file: {_reason(e)}") from None
    if "__model__" not in data:
        raise ModelFormatError(f"{path}: not a tinylearn model file: no architecture record")
    try:
        meta = json.loads(data["__model__"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelFormatError(f"{path}: corrupt architecture record ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: not a tinylearn model file "
                               f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version", 0)
    if not isinstance(version, int):
        raise ModelFormatError(f"{path}: corrupt architecture record (version {version!r})")
    if version > MODEL_FORMAT_VERSION:
        raise ModelFormatError(f"{path}: model file version {version} is newer than this tinylearn "
                               f"reads (version {MODEL_FORMAT_VERSION}): upgrade tinylearn")
    try:
        return _build(path, meta, data)
    except ModelFormatError:
        raise
    except (KeyError, TypeError, IndexError, ValueError, AttributeError, OverflowError, RecursionError) as e:
        raise ModelFormatError(f"{path}: corrupt tinylearn model file ({type(e).__name__}: {e})") from None


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _build(path: Path, meta: dict, data: dict):
    from .models import Model, Sequential

    built = {}
    tensors = []
    calls = []  # (layer, input node indices, node index), in graph order
    for k, node in enumerate(meta["nodes"]):
        if node["kind"] == "Input":
            tensors.append(_layers.Input(tuple(node["config"]["shape"])))
            continue
        layer = built.get(node["name"])
        if layer is None:
            layer = _layers.from_config(node["kind"], node["config"], node["name"])
            layer.trainable = bool(node.get("trainable", True))
            built[node["name"]] = layer
        ins = node["inputs"]
        if not isinstance(ins, list) or not ins or not all(type(i) is int and 0 <= i < k for i in ins):
            raise ModelFormatError(f"{path}: node {k} ({node['name']!r}) has inputs {ins!r}; expected "
                                   "indices of earlier nodes")
        calls.append((layer, ins, k))
        tensors.append(layer([tensors[i] for i in ins] if len(ins) > 1 else tensors[ins[0]]))
    if meta["class"] == "Sequential":
        input_shape = _layers.Input(tuple(meta["input_shape"])).shape
        chain = [(built[name], [i], i + 1) for i, name in enumerate(meta["layers"])]
        _check_weights(path, {0: input_shape}, chain, data)
        model = Sequential([built[name] for name in meta["layers"]], name=meta["name"])
        model.build(input_shape=input_shape, seed=0)
    else:  # node 0 is the input: a layer there would have no earlier node to take
        _check_weights(path, {0: tensors[0].shape}, calls, data)
        model = Model(tensors[0], tensors[meta["output"]], name=meta["name"])
        model.build(seed=0)
    weights = []
    for layer in model.layers:
        weights += _stored(data, layer.name)
    model.set_weights(weights)
    c = meta.get("compile")
    if c:
        flags = {name: layer.trainable for name, layer in built.items()}
        for name, layer in built.items():  # the optimizer state covers what compile froze
            layer.trainable = name not in c.get("frozen", [])
        model.compile(optimizer=_optimizers.from_config(c["optimizer"]),
                      loss=_losses.from_config(c["loss"], c.get("loss_config", {"from_logits": c["from_logits"]})),
                      metrics=c["metrics"])
        for name, layer in built.items():
            layer.trainable = flags[name]
        slots, i = [], 0
        while f"optimizer/{i}" in data:
            slots.append(data[f"optimizer/{i}"])
            i += 1
        model._core.set_optimizer_state(int(data.get("optimizer/iterations", 0)), slots)
    return model


def _stored(data: dict, name: str) -> list[np.ndarray]:
    out = []
    while f"weights/{name}/{len(out)}" in data:
        out.append(data[f"weights/{name}/{len(out)}"])
    return out


def _check_weights(path: Path, shapes: dict, calls, data: dict) -> None:
    """Propagates the sample shapes through the graph and compares each layer's weight shapes,
    as its configuration and inputs declare them, with the arrays stored for it; nothing is
    allocated before this holds."""
    checked = {}
    for layer, ins, k in calls:
        where = f"{path}: layer {layer.name!r} ({layer.kind})"
        if any(i not in shapes for i in ins):
            raise ModelFormatError(f"{where}: its input is not connected to the model's input")
        try:
            shapes[k], expected = _SHAPE_RULES[layer.kind](layer, [shapes[i] for i in ins])
        except _Mismatch as e:
            raise ModelFormatError(f"{where}: {e}") from None
        if id(layer) in checked:
            if checked[id(layer)] != expected:
                raise ModelFormatError(f"{where}: a shared layer called on inputs of other sizes")
            continue
        checked[id(layer)] = expected
        stored = _stored(data, layer.name)
        if len(stored) != len(expected):
            raise ModelFormatError(f"{where}: the file holds {len(stored)} weight arrays, the layer has "
                                   f"{len(expected)} ({', '.join(w for w, _, _ in expected) or 'none'})")
        for (what, shape, dims), arr in zip(expected, stored):
            if arr.shape == shape:
                continue
            if arr.ndim != len(shape):
                raise ModelFormatError(f"{where}: the stored {what} has shape {arr.shape}, expected "
                                       f"{len(shape)} axes ({', '.join(dims)})")
            j = next(j for j in range(len(shape)) if arr.shape[j] != shape[j])
            raise ModelFormatError(f"{where}: {dims[j]} is {shape[j]} but the stored {what} has "
                                   f"shape {arr.shape}, expected {shape}")


class _Mismatch(Exception):
    """A layer's configuration that does not fit its inputs."""


def _one(layer, ins) -> tuple:
    if len(ins) != 1:
        raise _Mismatch(f"takes one input, got {len(ins)}")
    return ins[0]


def _spatial(layer, ins) -> tuple:
    s = _one(layer, ins)
    if len(s) != 3:
        raise _Mismatch(f"expects samples of shape (height, width, channels), got {s}")
    return s


def _window(layer, s: tuple, size: tuple, strides: tuple) -> tuple:
    """Output height and width of a convolution or pooling window (Keras's conv_output_length)."""
    if layer.padding == "valid":
        out = tuple((n - k) // st + 1 if n >= k else 0 for n, k, st in zip(s[:2], size, strides))
    else:
        out = tuple(-(-n // st) for n, st in zip(s[:2], strides))
    if 0 in out:
        raise _Mismatch(f"the window {size} is larger than its input {s[:2]} with padding 'valid'")
    return out


def _dense(layer, ins):
    s = _one(layer, ins)
    w = [("kernel", (s[-1], layer.units), ("input features", "units"))]
    if layer.use_bias:
        w.append(("bias", (layer.units,), ("units",)))
    return s[:-1] + (layer.units,), w


def _conv2d(layer, ins):
    s = _spatial(layer, ins)
    w = [("kernel", (*layer.kernel_size, s[2], layer.filters),
          ("kernel_size[0]", "kernel_size[1]", "input channels", "filters"))]
    if layer.use_bias:
        w.append(("bias", (layer.filters,), ("filters",)))
    return _window(layer, s, layer.kernel_size, layer.strides) + (layer.filters,), w


def _depthwise(layer, ins):
    s = _spatial(layer, ins)
    channels = s[2] * layer.depth_multiplier
    w = [("kernel", (*layer.kernel_size, s[2], layer.depth_multiplier),
          ("kernel_size[0]", "kernel_size[1]", "input channels", "depth_multiplier"))]
    if layer.use_bias:
        w.append(("bias", (channels,), ("input channels * depth_multiplier",)))
    return _window(layer, s, layer.kernel_size, layer.strides) + (channels,), w


def _pooling(layer, ins):
    s = _spatial(layer, ins)
    return _window(layer, s, layer.pool_size, layer.strides) + (s[2],), []


def _batch_norm(layer, ins):
    s = _one(layer, ins)
    names = ["gamma"] * layer.scale + ["beta"] * layer.center + ["moving_mean", "moving_variance"]
    return s, [(n, (s[-1],), ("channels",)) for n in names]


def _reshape(layer, ins):
    s = _one(layer, ins)
    total, target = math.prod(s), layer.target_shape
    known = math.prod(d for d in target if d != -1)
    if target.count(-1) > 1 or (total != known if -1 not in target else total % known):
        raise _Mismatch(f"cannot reshape samples of {s} ({total} values) to {target}")
    return tuple(total // known if d == -1 else d for d in target), []


def _add(layer, ins):
    if len(ins) < 2 or any(s != ins[0] for s in ins):
        raise _Mismatch(f"expects two or more inputs of one shape, got {ins}")
    return ins[0], []


def _concatenate(layer, ins):
    if len(ins) < 2 or any(len(s) != len(ins[0]) or s[:-1] != ins[0][:-1] for s in ins):
        raise _Mismatch(f"expects two or more inputs that match on every axis but the last, got {ins}")
    return ins[0][:-1] + (sum(s[-1] for s in ins),), []


_SHAPE_RULES = {
    "Dense": _dense, "Conv2D": _conv2d, "DepthwiseConv2D": _depthwise, "BatchNormalization": _batch_norm,
    "MaxPooling2D": _pooling, "AveragePooling2D": _pooling,
    "GlobalAveragePooling2D": lambda layer, ins: ((_spatial(layer, ins)[2],), []),
    "Activation": lambda layer, ins: (_one(layer, ins), []),
    "Dropout": lambda layer, ins: (_one(layer, ins), []),
    "Flatten": lambda layer, ins: ((math.prod(_one(layer, ins)),), []),
    "Reshape": _reshape, "Add": _add, "Concatenate": _concatenate,
    "FakeQuant": lambda layer, ins: (_one(layer, ins), [(w, (1,), ("size",)) for w in ("min", "max", "steps")]),
}
