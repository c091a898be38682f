"""Whole-model files: architecture, weights and optimizer state.

Format (version 1). A model file is a NumPy .npz archive (a zip of .npy arrays) holding:
  "__model__"                 uint8 array: UTF-8 JSON, {"format": "tinylearn.model",
                              "version": 1, "class": "Sequential" | "Model", "name",
                              "input_shape": [...], "nodes": [{"name", "kind", "config",
                              "inputs": [node indices]}...] (node 0 is the input, the rest in
                              graph order), "output": node index, "layers": [layer names in
                              weight order], "compile": null | {"optimizer": {...}, "loss",
                              "from_logits", "metrics"}}
  "weights/<layer>/<i>"       float32 arrays of each layer in Keras's order and layouts
                              (trainable, then non-trainable such as moving statistics)
  "optimizer/iterations"      int64 scalar; "optimizer/<i>": float32 slots (Adam: every m, then
                              every v; SGD with momentum: the velocities)
Readers refuse a version newer than theirs. Files are written atomically. The suffix is free,
".tlmodel" by convention, except Keras's own (".keras", ".h5", ".hdf5"): save_model refuses
them, since Keras and tl.from_keras could not read the file.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from . import layers as _layers
from . import losses as _losses
from . import optimizers as _optimizers
from ._io import write_atomic

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
    layer_list = model.layers
    meta = {
        "format": FORMAT, "version": MODEL_FORMAT_VERSION,
        "class": "Sequential" if isinstance(model, Sequential) else "Model",
        "name": model.name, "input_shape": list(model.input_shape), "nodes": nodes,
        "output": ids[id(model._output)], "layers": [layer.name for layer in layer_list],
        "compile": None,
    }
    arrays = {}
    for layer in layer_list:
        for i, w in enumerate(model._layer_weights(model._core, layer)):
            arrays[f"weights/{layer.name}/{i}"] = np.asarray(w, dtype=np.float32)
    if model._compiled is not None:
        opt, loss, metrics = model._compiled
        meta["compile"] = {"optimizer": opt._config(), "loss": loss.name,
                           "from_logits": loss.from_logits, "metrics": metrics}
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


def load_model(path):
    """A model saved by model.save(): same predictions, and training resumes where it stopped."""
    from .models import Model, Sequential

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a tinylearn model file ({e})") from None
    if "__model__" not in data:
        raise ValueError(f"{path}: not a tinylearn model file (no architecture record)")
    try:
        meta = json.loads(bytes(data["__model__"]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt architecture record ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a tinylearn model file (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > MODEL_FORMAT_VERSION:
        raise ValueError(f"{path}: model file version {meta['version']} is newer than this tinylearn "
                         f"reads (version {MODEL_FORMAT_VERSION}): upgrade tinylearn")
    try:
        built = {}
        tensors = []
        for node in meta["nodes"]:
            if node["kind"] == "Input":
                tensors.append(_layers.Input(tuple(node["config"]["shape"])))
                continue
            layer = built.get(node["name"])
            if layer is None:
                layer = _layers.from_config(node["kind"], node["config"], node["name"])
                built[node["name"]] = layer
            ins = [tensors[i] for i in node["inputs"]]
            tensors.append(layer(ins if len(ins) > 1 else ins[0]))
        if meta["class"] == "Sequential":
            model = Sequential([built[name] for name in meta["layers"]], name=meta["name"])
            model.build(input_shape=tuple(meta["input_shape"]), seed=0)
        else:
            model = Model(tensors[0], tensors[meta["output"]], name=meta["name"])
            model.build(seed=0)
        weights = []
        for layer in model.layers:
            i = 0
            while f"weights/{layer.name}/{i}" in data:
                weights.append(data[f"weights/{layer.name}/{i}"])
                i += 1
        model.set_weights(weights)
        c = meta.get("compile")
        if c:
            model.compile(optimizer=_optimizers.from_config(c["optimizer"]),
                          loss=_losses.get(c["loss"]).__class__(from_logits=c["from_logits"]),
                          metrics=c["metrics"])
            slots, i = [], 0
            while f"optimizer/{i}" in data:
                slots.append(data[f"optimizer/{i}"])
                i += 1
            model._core.set_optimizer_state(int(data.get("optimizer/iterations", 0)), slots)
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: corrupt tinylearn model file ({type(e).__name__}: {e})") from None
    return model
