"""Import a Keras model (architecture and weights) as a tinylearn model.

    model = from_keras("model.keras")      # Keras 3's zip: config.json + model.weights.h5
    model = from_keras(keras_model)        # a live keras.Model (Sequential or functional)

A live model is read through its ``get_config()`` and each layer's ``get_weights()`` (nothing
from TensorFlow or Keras is imported here); a ``.keras`` file (or a folder holding its
``config.json`` and ``model.weights.h5``) is read with ``zipfile``, ``json`` and ``h5py``, so it
imports without TensorFlow. Both go through the same walk over the Keras configuration.

Supported: InputLayer, Dense, Conv2D, DepthwiseConv2D, MaxPooling2D, AveragePooling2D,
GlobalAveragePooling2D, Flatten, Reshape, Dropout, BatchNormalization, Add, Concatenate (last
axis), Activation, ReLU (plain or ``max_value=6``), Softmax (last axis); activations linear,
relu, relu6, sigmoid, tanh, softmax; NHWC (``channels_last``), no dilation, one input, one
output. Anything else raises ValueError naming the Keras layer and what is not supported.
Training-only settings (initializers, constraints, regularizers other than a kernel L2, Dropout's
``noise_shape``) do not change what the model computes and are not carried over; a kernel L2
regularizer is.

Layer names and the model's name are kept; a Keras Sequential becomes a tl.Sequential, a
functional model a tl.Model.

The weights file of Keras 3 (``model.weights.h5``, written by ``keras.saving``) holds, for each
layer of ``model.layers``, a group ``layers/<key>/vars`` whose datasets ``0``, ``1``, ... are
the layer's variables in ``get_weights()`` order. ``<key>`` is the layer's class name in snake
case, numbered in model order (``conv2d``, ``conv2d_1``, ...), not the layer's name; recent Keras
versions store the layer's name in the group's ``name`` attribute. Layers are matched by that
attribute and, where it is missing, by the key.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
import zlib
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from . import layers as _layers

__all__ = ["from_keras"]

SUPPORTED_LAYERS = ("InputLayer", "Dense", "Conv2D", "DepthwiseConv2D", "MaxPooling2D",
                    "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Reshape", "Dropout",
                    "BatchNormalization", "Add", "Concatenate", "Activation", "ReLU", "Softmax")
SUPPORTED_ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "softmax")

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.weights.h5"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def from_keras(source):
    """A tinylearn model with the architecture and weights of a Keras model.

    `source`: a ``keras.Model`` (Sequential or functional; Keras 3 or tf.keras), or the path of
    a ``.keras`` file. Returns a tl.Sequential for a Keras Sequential, else a tl.Model, built
    and holding Keras's weights (not compiled). Raises ValueError for a layer or an option
    tinylearn does not have (naming the Keras layer), or for a file that is not a readable
    ``.keras`` model; FileNotFoundError for a missing file.
    """
    if isinstance(source, (str, os.PathLike)):
        config, weights = _read_keras_file(Path(source))
    elif callable(getattr(source, "get_config", None)) and hasattr(source, "layers"):
        config, weights = _read_live_model(source)
    else:
        raise TypeError(f"from_keras: expected a keras.Model or the path of a .keras file, "
                        f"got {type(source).__name__}")
    try:
        return _build(config, weights)
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError) as e:
        # A configuration Keras would not write (hand-edited, hostile): values of the wrong type.
        raise ValueError(f"from_keras: a malformed Keras model configuration "
                         f"({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# Sources: a live model or a .keras file, both as (model config, weights by layer name)

def _read_live_model(model):
    try:
        config = model.get_config()
    except NotImplementedError:
        raise ValueError(f"from_keras: {type(model).__name__} has no get_config(); only Sequential "
                         "and functional Keras models can be imported") from None
    if not isinstance(config, dict):
        raise ValueError(f"from_keras: {type(model).__name__}.get_config() returned "
                         f"{type(config).__name__}, expected a dict")
    weights = {}
    for layer in model.layers:
        weights[str(layer.name)] = [np.asarray(w) for w in layer.get_weights()]
    return {"class_name": type(model).__name__, "config": config}, _Weights(weights, {})


def _read_keras_file(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"from_keras: {path}: no such file")
    if path.is_dir():  # Keras's unzipped layout: a folder with the archive's files
        files = {p.name: p for p in path.iterdir()}
        if _CONFIG_FILE not in files:
            raise ValueError(f"from_keras: {path}: a folder without {_CONFIG_FILE}; expected a "
                             f".keras file or a folder holding {_CONFIG_FILE} and {_WEIGHTS_FILE}")
        config_bytes = files[_CONFIG_FILE].read_bytes()
        weights_bytes = files[_WEIGHTS_FILE].read_bytes() if _WEIGHTS_FILE in files else None
        listing = sorted(files)
    else:
        config_bytes, weights_bytes, listing = _read_zip(path)
    try:
        config = json.loads(config_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"from_keras: {path}: {_CONFIG_FILE} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ValueError(f"from_keras: {path}: {_CONFIG_FILE} does not describe a Keras model")
    if weights_bytes is None:
        extra = " (sharded weights are not supported)" if any(n.endswith(".json") and n != _CONFIG_FILE
                                                               and "weights" in n for n in listing) else ""
        raise ValueError(f"from_keras: {path}: no {_WEIGHTS_FILE} in the archive{extra}; it holds "
                         f"{listing}")
    return config, _read_weights_h5(weights_bytes, path, config)


def _read_zip(path: Path):
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ValueError(f"from_keras: {path}: cannot be read ({e})") from None
    if head == _HDF5_MAGIC:
        raise ValueError(f"from_keras: {path}: a legacy HDF5 (.h5) Keras file, which is not "
                         "supported; load it in Keras and pass the model, or re-save it as .keras")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if _CONFIG_FILE not in names:
                raise ValueError(f"from_keras: {path}: not a Keras .keras file (no {_CONFIG_FILE} "
                                 f"in the archive; it holds {sorted(names)})")
            config_bytes = z.read(_CONFIG_FILE)
            weights_bytes = z.read(_WEIGHTS_FILE) if _WEIGHTS_FILE in names else None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
            NotImplementedError, RuntimeError) as e:
        raise ValueError(f"from_keras: {path}: not a readable .keras file (a zip archive): {e}") from None
    return config_bytes, weights_bytes, sorted(names)


def _read_weights_h5(data: bytes, path: Path, config: dict) -> "_Weights":
    try:
        import h5py
    except ImportError:
        raise ImportError("from_keras: reading a .keras file needs h5py (pip install h5py)") from None
    by_key: dict[str, list[np.ndarray]] = {}
    by_name: dict[str, list[np.ndarray]] = {}
    duplicate_names = set()
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            group = f.get("layers")
            if group is not None and not isinstance(group, h5py.Group):
                raise ValueError("'layers' is not a group")
            for key in (group.keys() if group is not None else ()):
                vars_ = group[key].get("vars") if isinstance(group[key], h5py.Group) else None
                if not isinstance(vars_, h5py.Group):
                    continue
                arrays = []
                for i in range(len(vars_)):
                    ds = vars_.get(str(i))
                    if not isinstance(ds, h5py.Dataset):
                        raise ValueError(f"layers/{key}/vars holds {sorted(vars_.keys())}, expected "
                                         f"datasets 0..{len(vars_) - 1}")
                    arrays.append(np.asarray(ds[()]))
                by_key[key] = arrays
                name = vars_.attrs.get("name")
                if isinstance(name, bytes):
                    name = name.decode("utf-8", "replace")
                if isinstance(name, str):
                    if name in by_name:
                        duplicate_names.add(name)
                    by_name[name] = arrays
    except ValueError as e:
        raise ValueError(f"from_keras: {path}: {_WEIGHTS_FILE} is not a Keras weights file ({e})") from None
    except (OSError, KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"from_keras: {path}: {_WEIGHTS_FILE} cannot be read as HDF5 ({e})") from None
    for name in duplicate_names:
        del by_name[name]
    # Where the name attribute is missing: Keras's key, the snake-case class name numbered in
    # the order of model.layers (the order of the configuration's layer list).
    fallback, counts = {}, {}
    layers_cfg = config.get("config", {}).get("layers")
    for entry in layers_cfg if isinstance(layers_cfg, list) else ():
        if not isinstance(entry, dict):
            continue
        base = _snake_case(str(entry.get("class_name", "")))
        n = counts.get(base, -1) + 1
        counts[base] = n
        key = base if n == 0 else f"{base}_{n}"
        name = _layer_name(entry)
        if key in by_key and name not in by_name:
            fallback[name] = by_key[key]
    return _Weights({**fallback, **by_name}, by_key)


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Weights:
    """A layer's weights by its name, in Keras's get_weights() order."""

    def __init__(self, by_name: dict, by_key: dict):
        self.by_name, self.by_key = by_name, by_key

    def get(self, name: str):
        return self.by_name.get(name)


# ---------------------------------------------------------------------------------------------
# The configuration walk

def _build(config: dict, weights: _Weights):
    from .models import Model, Sequential

    cfg = config.get("config")
    class_name = config.get("class_name")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise ValueError(f"from_keras: a {class_name or 'Keras'} model whose configuration lists no "
                         "layers; only Sequential and functional models can be imported")
    name = cfg.get("name") if isinstance(cfg.get("name"), str) else None
    if "input_layers" in cfg or class_name in ("Functional", "Model"):
        inputs, outputs = _walk_functional(cfg)
        model = Model(inputs, outputs, name=name)
        model.build(seed=0)
    else:
        layers, input_shape = _walk_sequential(cfg)
        model = Sequential(layers, name=name)
        model.build(input_shape=input_shape, seed=0)
    _set_weights(model, weights)
    return model


def _walk_sequential(cfg: dict):
    entries = [e for e in cfg["layers"]]
    input_shape = None
    if entries and isinstance(entries[0], dict) and entries[0].get("class_name") == "InputLayer":
        input_shape = _input_shape(entries[0])
        entries = entries[1:]
    if not entries:
        raise ValueError("from_keras: the Sequential model has no layers")
    if input_shape is None:
        first = entries[0].get("config", {}) if isinstance(entries[0], dict) else {}
        shape = first.get("batch_input_shape") or first.get("batch_shape") or cfg.get("build_input_shape")
        if shape is None:
            raise ValueError("from_keras: the Sequential model's input shape is unknown (it was never "
                             "built); give it a keras.Input or build it before importing")
        input_shape = _check_shape(shape, "the Sequential model's input")
    layers, rank = [], len(input_shape) + 1
    for entry in entries:
        if isinstance(entry, dict) and entry.get("class_name") == "InputLayer":
            raise ValueError(f"from_keras: {_where(entry)}: an input layer inside the Sequential "
                             "model is not supported")
        layer, rank = _convert(entry, [rank])
        layers.append(layer)
    return layers, input_shape


def _walk_functional(cfg: dict):
    in_refs = _refs_list(cfg.get("input_layers"), "input_layers")
    out_refs = _refs_list(cfg.get("output_layers"), "output_layers")
    if len(in_refs) != 1 or len(out_refs) != 1:
        raise ValueError(f"from_keras: the model has {len(in_refs)} inputs and {len(out_refs)} outputs; "
                         "tinylearn models have one of each")
    tensors = {}   # (layer name, node index, tensor index) -> (SymbolicTensor, rank)
    pending = []   # (entry, node index, input refs)
    for entry in cfg["layers"]:
        if not isinstance(entry, dict):
            raise ValueError(f"from_keras: a layer entry is {type(entry).__name__}, expected a dict")
        lname = _layer_name(entry)
        if entry.get("class_name") == "InputLayer":
            shape = _input_shape(entry)
            tensors[(lname, 0, 0)] = (_layers.Input(shape, name=lname), len(shape) + 1)
            continue
        nodes = entry.get("inbound_nodes") or []
        if not nodes:
            continue  # a layer the model never calls
        for k, node in enumerate(nodes):
            pending.append((entry, k, _node_refs(node, entry)))
    built = {}
    while pending:
        progress, rest = False, []
        for entry, k, refs in pending:
            if not all(r in tensors for r in refs):
                rest.append((entry, k, refs))
                continue
            lname = _layer_name(entry)
            ins = [tensors[r] for r in refs]
            if lname in built:
                layer, out_rank = built[lname][0], _out_rank(built[lname][1], [r for _, r in ins])
            else:
                layer, out_rank = _convert(entry, [r for _, r in ins])
                built[lname] = (layer, entry)
            syms = [t for t, _ in ins]
            tensors[(lname, k, 0)] = (layer(syms if len(syms) > 1 else syms[0]), out_rank)
            progress = True
        if not progress:
            entry, _, refs = rest[0]
            missing = [r for r in refs if r not in tensors][0]
            raise ValueError(f"from_keras: {_where(entry)}: its input {missing[0]!r} (node {missing[1]}, "
                             f"tensor {missing[2]}) is not produced by any layer of the model")
        pending = rest
    for what, ref in (("input", in_refs[0]), ("output", out_refs[0])):
        if ref not in tensors:
            raise ValueError(f"from_keras: the model's {what} {ref[0]!r} is not a layer of the model")
    return tensors[in_refs[0]][0], tensors[out_refs[0]][0]


def _out_rank(entry: dict, in_ranks: list) -> int:
    """The output rank of an already converted layer called again (a shared layer)."""
    return _convert(entry, in_ranks)[1]


def _refs_list(value, what: str) -> list:
    """input_layers / output_layers: ["name", 0, 0] or [["name", 0, 0], ...]."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, list) and len(v) >= 3 for v in value):
        raise ValueError(f"from_keras: the model configuration's {what} is {value!r}, expected "
                         "[layer name, node index, tensor index] entries")
    return [(str(v[0]), int(v[1]), int(v[2])) for v in value]


def _node_refs(node, entry) -> list:
    """The (layer, node, tensor) references a call of the layer takes, in order: Keras 3 nodes
    are {"args": [...], "kwargs": {...}} holding __keras_tensor__ records, tf.keras 2 nodes are
    lists of [layer, node, tensor, kwargs]."""
    refs = []
    if isinstance(node, dict):
        def visit(v):
            if isinstance(v, dict):
                if v.get("class_name") == "__keras_tensor__":
                    h = v.get("config", {}).get("keras_history")
                    if not isinstance(h, list) or len(h) < 3:
                        raise ValueError(f"from_keras: {_where(entry)}: an input without keras_history")
                    refs.append((str(h[0]), int(h[1]), int(h[2])))
                else:
                    for x in v.values():
                        visit(x)
            elif isinstance(v, (list, tuple)):
                for x in v:
                    visit(x)

        visit(node.get("args", []))
        kw_refs = len(refs)
        visit(node.get("kwargs", {}))
        if len(refs) != kw_refs:
            raise ValueError(f"from_keras: {_where(entry)}: tensors passed as keyword arguments "
                             "(such as a mask) are not supported")
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str):
                refs.append((item[0], int(item[1]), int(item[2])))
            else:
                raise ValueError(f"from_keras: {_where(entry)}: cannot read its inbound node {node!r}")
    else:
        raise ValueError(f"from_keras: {_where(entry)}: cannot read its inbound node {node!r}")
    if not refs:
        raise ValueError(f"from_keras: {_where(entry)}: a call without tensor inputs")
    return refs


def _layer_name(entry: dict) -> str:
    c = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    name = c.get("name", entry.get("name"))
    return str(name) if name is not None else ""


def _where(entry: dict) -> str:
    return f"Keras layer {_layer_name(entry)!r} ({entry.get('class_name')})"


def _input_shape(entry: dict) -> tuple:
    c = entry.get("config", {})
    if c.get("sparse") or c.get("ragged"):
        raise ValueError(f"from_keras: {_where(entry)}: sparse or ragged inputs are not supported")
    shape = c.get("batch_shape", c.get("batch_input_shape"))
    if shape is None:
        raise ValueError(f"from_keras: {_where(entry)}: no input shape (batch_shape) in its config")
    return _check_shape(shape, _where(entry))


def _check_shape(shape, where: str) -> tuple:
    dims = list(shape)[1:]
    if not dims or not all(isinstance(d, Integral) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"from_keras: {where}: the input shape {tuple(shape)} has unknown or "
                         "non-positive dimensions; tinylearn needs every dimension but the batch fixed")
    return tuple(int(d) for d in dims)


# ---------------------------------------------------------------------------------------------
# One Keras layer -> one tinylearn layer

class _Options:
    """A Keras layer's config with checks that name the layer."""

    def __init__(self, entry: dict):
        self.entry = entry
        self.c = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        self.where = _where(entry)
        self.name = _layer_name(entry)

    def unsupported(self, what: str):
        return ValueError(f"from_keras: {self.where}: unsupported {what}")

    def get(self, key, default=None):
        return self.c.get(key, default)

    def require(self, key, allowed, default=None, show=None):
        value = self.c.get(key, default)
        if value not in allowed:
            raise self.unsupported(f"{key}={value!r}" + (f" ({show})" if show else ""))
        return value

    def activation(self, key: str = "activation") -> str:
        value = self.c.get(key, "linear")
        if isinstance(value, dict):  # Keras 3 may record a function as {"class_name": "function", ...}
            inner = value.get("config")
            value = inner if value.get("class_name") == "function" and isinstance(inner, str) \
                else value.get("class_name")
        if value is None:
            value = "linear"
        if not isinstance(value, str) or value not in SUPPORTED_ACTIVATIONS:
            raise self.unsupported(f"activation {value!r} (tinylearn has {', '.join(SUPPORTED_ACTIVATIONS)})")
        return value

    def pair(self, key: str, default=None) -> tuple:
        value = self.c.get(key, default)
        if isinstance(value, Integral):
            value = (value, value)
        if not isinstance(value, (list, tuple)) or len(value) != 2 or \
                not all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in value):
            raise self.unsupported(f"{key}={value!r}")
        return (int(value[0]), int(value[1]))

    def padding(self) -> str:
        value = self.c.get("padding", "valid")
        if not isinstance(value, str) or value.lower() not in ("valid", "same"):
            raise self.unsupported(f"padding={value!r} (only 'valid' and 'same')")
        return value.lower()

    def channels_last(self) -> None:
        self.require("data_format", (None, "channels_last"), show="NHWC only")

    def no_dilation(self) -> None:
        if "dilation_rate" in self.c and self.pair("dilation_rate") != (1, 1):
            raise self.unsupported(f"dilation_rate={self.c['dilation_rate']!r} (only 1)")

    def axis_last(self, key: str, in_rank: int, default=-1) -> None:
        value = self.c.get(key, default)
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if not isinstance(value, Integral) or value not in (-1, in_rank - 1):
            raise self.unsupported(f"{key}={value!r} (only the last axis)")

    def rank(self, in_ranks: list, want: int) -> None:
        if in_ranks[0] != want:
            raise ValueError(f"from_keras: {self.where}: expects a {want - 2}-D image input of rank "
                             f"{want} (batch, height, width, channels), got rank {in_ranks[0]}")

    def kernel_regularizer(self, key: str = "kernel_regularizer"):
        """A Keras L2 kernel regularizer as tinylearn's; any other is a training-only setting."""
        from .regularizers import L2

        r = self.c.get(key)
        if isinstance(r, dict) and r.get("class_name") in ("L2", "l2"):
            l2 = (r.get("config") or {}).get("l2")
            if isinstance(l2, Real) and l2 > 0:
                return L2(float(l2))
        return None


def _check_common(o: _Options) -> None:
    dtype = o.get("dtype")
    if isinstance(dtype, dict):  # a DTypePolicy record (or a reference to a shared one)
        inner = dtype.get("config")
        dtype = inner.get("name", "float32") if isinstance(inner, dict) else "float32"
    if dtype not in (None, "float32"):
        raise o.unsupported(f"dtype policy {dtype!r} (tinylearn computes in float32)")
    if o.get("lora_rank"):
        raise o.unsupported(f"lora_rank={o.get('lora_rank')!r}")
    if o.get("quantization_config") is not None:
        raise o.unsupported("quantization_config (a quantized Keras layer)")


def _convert(entry, in_ranks: list):
    """(tinylearn layer, output rank) for one Keras layer entry of a model configuration."""
    if not isinstance(entry, dict):
        raise ValueError(f"from_keras: a layer entry is {type(entry).__name__}, expected a dict")
    o = _Options(entry)
    if not isinstance(entry.get("config"), dict):
        raise ValueError(f"from_keras: {o.where}: its config is {entry.get('config')!r}, expected a dict")
    cls = entry.get("class_name")
    if cls not in _CONVERTERS:
        raise ValueError(f"from_keras: {o.where}: layer type {cls!r} is not supported; tinylearn imports "
                         f"{', '.join(SUPPORTED_LAYERS)}")
    _check_common(o)
    try:
        layer, rank = _CONVERTERS[cls](o, in_ranks)
    except ValueError as e:
        if str(e).startswith("from_keras:"):
            raise
        raise ValueError(f"from_keras: {o.where}: {e}") from None
    layer.trainable = bool(entry["config"].get("trainable", True))  # Keras's frozen layers stay frozen
    return layer, rank


def _dense(o: _Options, r):
    return (_layers.Dense(o.get("units"), activation=o.activation(), use_bias=bool(o.get("use_bias", True)),
                          kernel_regularizer=o.kernel_regularizer(), name=o.name), r[0])


def _conv2d(o: _Options, r):
    o.rank(r, 4)
    o.channels_last()
    o.no_dilation()
    o.require("groups", (1,), default=1)
    return (_layers.Conv2D(o.get("filters"), o.pair("kernel_size"), strides=o.pair("strides", 1),
                           padding=o.padding(), activation=o.activation(),
                           use_bias=bool(o.get("use_bias", True)),
                           kernel_regularizer=o.kernel_regularizer(), name=o.name), 4)


def _depthwise(o: _Options, r):
    o.rank(r, 4)
    o.channels_last()
    o.no_dilation()
    return (_layers.DepthwiseConv2D(o.pair("kernel_size"), strides=o.pair("strides", 1),
                                    padding=o.padding(), depth_multiplier=o.get("depth_multiplier", 1),
                                    activation=o.activation(), use_bias=bool(o.get("use_bias", True)),
                                    kernel_regularizer=o.kernel_regularizer("depthwise_regularizer"),
                                    name=o.name), 4)


def _pooling(kind):
    def convert(o: _Options, r):
        o.rank(r, 4)
        o.channels_last()
        pool = o.pair("pool_size", 2)
        strides = o.pair("strides") if o.get("strides") is not None else pool
        return kind(pool, strides=strides, padding=o.padding(), name=o.name), 4
    return convert


def _gap(o: _Options, r):
    o.rank(r, 4)
    o.channels_last()
    o.require("keepdims", (False, None), default=False)
    return _layers.GlobalAveragePooling2D(name=o.name), 2


def _flatten(o: _Options, r):
    o.channels_last()
    return _layers.Flatten(name=o.name), 2


def _reshape(o: _Options, r):
    target = o.get("target_shape")
    if not isinstance(target, (list, tuple)):
        raise o.unsupported(f"target_shape={target!r}")
    return _layers.Reshape(tuple(target), name=o.name), len(target) + 1


def _dropout(o: _Options, r):
    seed = o.get("seed")
    seed = int(seed) if isinstance(seed, Integral) and not isinstance(seed, bool) and seed >= 0 else None
    return _layers.Dropout(float(o.get("rate", 0.0)), seed=seed, name=o.name), r[0]


def _batchnorm(o: _Options, r):
    o.axis_last("axis", r[0])
    o.require("renorm", (False, None), default=False)
    o.require("virtual_batch_size", (None,))
    o.require("adjustment", (None,))
    return (_layers.BatchNormalization(momentum=o.get("momentum", 0.99), epsilon=o.get("epsilon", 1e-3),
                                       center=bool(o.get("center", True)), scale=bool(o.get("scale", True)),
                                       name=o.name), r[0])


def _add(o: _Options, r):
    if len(r) < 2:
        raise ValueError(f"from_keras: {o.where}: expects at least two inputs, got {len(r)}")
    return _layers.Add(name=o.name), r[0]


def _concatenate(o: _Options, r):
    if len(r) < 2:
        raise ValueError(f"from_keras: {o.where}: expects at least two inputs, got {len(r)}")
    o.axis_last("axis", r[0])
    return _layers.Concatenate(name=o.name), r[0]


def _activation(o: _Options, r):
    return _layers.Activation(o.activation(), name=o.name), r[0]


def _relu(o: _Options, r):
    max_value = o.get("max_value")
    for key in ("negative_slope", "threshold"):
        value = o.get(key, 0.0)
        if value not in (None, 0, 0.0):
            raise o.unsupported(f"{key}={value!r} (only 0)")
    if max_value is None:
        return _layers.ReLU(name=o.name), r[0]
    if isinstance(max_value, Real) and float(max_value) == 6.0:
        return _layers.Activation("relu6", name=o.name), r[0]
    raise o.unsupported(f"max_value={max_value!r} (only None or 6, ReLU6)")


def _softmax(o: _Options, r):
    o.axis_last("axis", r[0])
    return _layers.Softmax(name=o.name), r[0]


_CONVERTERS = {
    "Dense": _dense, "Conv2D": _conv2d, "DepthwiseConv2D": _depthwise,
    "MaxPooling2D": _pooling(_layers.MaxPooling2D), "AveragePooling2D": _pooling(_layers.AveragePooling2D),
    "GlobalAveragePooling2D": _gap, "Flatten": _flatten, "Reshape": _reshape, "Dropout": _dropout,
    "BatchNormalization": _batchnorm, "Add": _add, "Concatenate": _concatenate,
    "Activation": _activation, "ReLU": _relu, "Softmax": _softmax,
}


# ---------------------------------------------------------------------------------------------
# Weights

def _set_weights(model, weights: _Weights) -> None:
    flat = []
    for layer in model.layers:
        want = model._layer_weights(model._core, layer)
        got = weights.get(layer.name)
        if not want:
            if got:
                raise ValueError(f"from_keras: layer {layer.name!r}: Keras has {len(got)} weight arrays "
                                 "for it, tinylearn's layer has none")
            continue
        if got is None:
            raise ValueError(f"from_keras: layer {layer.name!r}: no weights for it in the Keras model")
        if len(got) != len(want):
            raise ValueError(f"from_keras: layer {layer.name!r}: Keras has {len(got)} weight arrays "
                             f"({[tuple(np.shape(g)) for g in got]}), tinylearn expects {len(want)} "
                             f"({[w.shape for w in want]})")
        for i, (g, w) in enumerate(zip(got, want)):
            g = np.asarray(g)
            if g.shape != w.shape:
                raise ValueError(f"from_keras: layer {layer.name!r}: weight {i} has shape {g.shape} in "
                                 f"Keras, tinylearn expects {w.shape}")
            if not np.issubdtype(g.dtype, np.floating):
                raise ValueError(f"from_keras: layer {layer.name!r}: weight {i} has dtype {g.dtype}, "
                                 "expected floating point")
            if not np.all(np.isfinite(g)):
                raise ValueError(f"from_keras: layer {layer.name!r}: weight {i} holds NaN or infinity")
            flat.append(np.ascontiguousarray(g, dtype=np.float32))
    model.set_weights(flat)
