"""Keras-shaped models backed by the C++ training core."""

from __future__ import annotations

import math
import sys
import warnings
import weakref
from pathlib import Path

import numpy as np

from . import _core
from . import callbacks as _callbacks
from . import losses as _losses
from . import optimizers as _optimizers
from ._validate import as_array, as_float_array
from .layers import Input, Layer, SymbolicTensor, auto_name, to_snake_case

__all__ = ["History", "Model", "Sequential"]

# Metric names (Keras's strings and class names) -> the C++ core's metric.
_METRICS = {"mae": "mae", "mean_absolute_error": "mae", "MeanAbsoluteError": "mae",
            "mse": "mse", "mean_squared_error": "mse", "MeanSquaredError": "mse",
            "accuracy": "accuracy", "acc": "accuracy",
            "sparse_categorical_accuracy": "sparse_categorical_accuracy",
            "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
            "categorical_accuracy": "categorical_accuracy", "CategoricalAccuracy": "categorical_accuracy",
            "binary_accuracy": "binary_accuracy", "BinaryAccuracy": "binary_accuracy"}
# tinylearn's loss functions passed as metrics run in the core too.
_METRIC_FUNCTIONS = {_losses.mean_squared_error: "mse", _losses.mean_absolute_error: "mae"}


class History:
    """What fit() recorded: `history` maps "loss", metrics and "val_*" to one value per epoch."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.params: dict = {}

    def _append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


class Model:
    """A graph of layers from one input to one output (Keras's functional API):

        inputs = tl.Input(shape=(32, 32, 3))
        x = tl.layers.Dense(16, activation="relu")(inputs)
        model = tl.Model(inputs, tl.layers.Dense(10)(x))

    Weights are created on first need (fit, predict, build) from a seed, so runs repeat.

    A model is also a layer, as in Keras: `model(x)` on an array returns predictions (inference
    mode), and on a symbolic tensor adds the model's layers to the graph being built
    (`outputs = base(inputs)`, `Sequential([base, Dense(10)])`), sharing their weights with
    `base` once it is built.
    """

    def __init__(self, inputs=None, outputs=None, name: str | None = None):
        self.name = name or auto_name("Functional" if type(self) is Model else type(self).__name__)
        self._core = None
        self._compiled = None
        self._trainable = True
        self._metric_plan: list = []
        self._compiled_frozen = None
        self._ids_of_layers: set = set()
        self.history: History | None = None
        self.stop_training = False
        if inputs is not None or outputs is not None:
            self._set_graph(inputs, outputs)

    # -- structure -------------------------------------------------------------------------
    def _set_graph(self, inputs, outputs) -> None:
        inputs = _single(inputs, "inputs")
        outputs = _single(outputs, "outputs")
        for what, t in (("inputs", inputs), ("outputs", outputs)):
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"Model: {what} must come from tl.Input() and layer calls, got {type(t).__name__}")
        if inputs.layer is not None:
            raise ValueError("Model: inputs must be a tl.Input(), not a layer's output")
        # Every node the output depends on, in an order where inputs come first (post-order).
        order, state = [], {}

        def visit(t):
            mark = state.get(id(t))
            if mark == "done":
                return
            if mark == "active":  # unreachable through the public API, kept as a guard
                raise ValueError("Model: the graph has a cycle")
            state[id(t)] = "active"
            for parent in t.inputs:
                visit(parent)
            state[id(t)] = "done"
            order.append(t)

        visit(outputs)
        sources = [t for t in order if t.layer is None]
        if inputs not in sources:
            raise ValueError("Model: the outputs do not depend on the given input")
        extra = [t for t in sources if t is not inputs]
        if extra:
            raise ValueError(f"Model: the outputs depend on an input that is not the model's input "
                             f"({extra[0]!r}); a disconnected input cannot be fed")
        self._input, self._output, self._order = inputs, outputs, order

    def _graph_ready(self) -> bool:
        return getattr(self, "_order", None) is not None

    @property
    def layers(self) -> list:
        """The model's layers, as Keras lists them: a model used as a layer is one entry."""
        seen, out = set(), []
        for t in getattr(self, "_order", None) or []:
            item = t.owners[0] if t.owners else t.layer
            if item is not None and id(item) not in seen:
                seen.add(id(item))
                out.append(item)
        return out

    def _leaves(self) -> list[Layer]:
        """Every layer of the graph, those of nested models included, once each, in graph order."""
        seen, out = set(), []
        for t in getattr(self, "_order", None) or []:
            if t.layer is not None and id(t.layer) not in seen:
                seen.add(id(t.layer))
                out.append(t.layer)
        return out

    def _holds(self, layer: Layer) -> bool:
        return self._core is not None and id(layer) in self._ids_of_layers

    def _layer_shapes(self, layer: Layer):
        """((None, *shape) of each input, (None, *shape) of the output) of the layer's first node."""
        for t in self._order:
            if t.layer is layer:
                ins = [(None, *self._core.node_shape(self._ids[id(p)])) for p in t.inputs]
                return ins, (None, *self._core.node_shape(self._ids[id(t)]))
        return None

    # -- a model as a layer ----------------------------------------------------------------
    def __call__(self, inputs, training=None):
        """On a NumPy array: predict(inputs) (Keras's model(x) with training=False). On a symbolic
        tensor: the model as a layer of the graph being built (weights shared with this model)."""
        if isinstance(inputs, SymbolicTensor) or (
                isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], SymbolicTensor)):
            return self._call_symbolic(_single(inputs, "inputs"))
        if training:
            raise ValueError("model(x, training=True) is not supported: tinylearn runs a model in "
                             "training mode only inside fit(); call model(x) or model.predict(x)")
        return self.predict(inputs)

    def _call_symbolic(self, t: SymbolicTensor) -> SymbolicTensor:
        if not self._graph_ready() and t.layer is None and getattr(self, "_layers", None):
            self._chain(t.shape)  # a Sequential called on an input learns its input shape, as Keras
        if not self._graph_ready():
            if not getattr(self, "_layers", None):
                raise ValueError(f"{self.name}: the model has no layers to call")
            out = t
            for layer in self._layers:  # a Sequential whose input shape is not known yet
                out = layer(out)
            stack, seen = [out], set()
            while stack:  # the nodes just made come from this model
                n = stack.pop()
                if n is t or id(n) in seen:
                    continue
                seen.add(id(n))
                n.owners = (self, *n.owners)
                stack.extend(n.inputs)
            return out
        mapped = {id(self._input): t}
        for n in self._order:
            if n is not self._input:
                mapped[id(n)] = SymbolicTensor(n.layer, [mapped[id(p)] for p in n.inputs],
                                               owners=(self, *n.owners))
        return mapped[id(self._output)]

    # -- trainable -------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """Sets the flag of the model and of every layer in it (nested models included), as Keras:
        setting it back to True makes every layer trainable again. Takes effect at compile()."""
        self._trainable = bool(value)
        for item in self.layers:
            item.trainable = self._trainable

    def _trainable_map(self) -> dict:
        """id(layer) -> whether it trains: its flag, and those of the models it sits in."""
        out = {}
        for t in getattr(self, "_order", None) or []:
            if t.layer is not None:
                ok = self._trainable and t.layer.trainable and all(m.trainable for m in t.owners)
                out[id(t.layer)] = out.get(id(t.layer), True) and ok
        return out

    def _frozen_layers(self) -> list[Layer]:
        trains = self._trainable_map()
        return [layer for layer in self._leaves() if not trains[id(layer)]]

    def _split_weights(self):
        trains, tw, ntw = self._trainable_map(), [], []
        if self._core is None:
            return tw, ntw
        for layer in self._leaves():
            w = self._layer_weights(self._core, layer)
            cut = len(w) - layer._state_arrays if trains[id(layer)] else 0
            tw += w[:cut]
            ntw += w[cut:]
        return tw, ntw

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        """Copies of the weights fit updates ([] before the model is built, as in Keras)."""
        return self._split_weights()[0]

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        """Copies of the other weights: frozen layers' and BatchNormalization's moving statistics."""
        return self._split_weights()[1]

    @property
    def weights(self) -> list[np.ndarray]:
        """Copies of all weights (NumPy arrays; Keras returns variables), layer by layer."""
        return self.get_weights() if self._core is not None else []

    @property
    def input_shape(self) -> tuple | None:
        return self._input.shape if self._graph_ready() else None

    def _make_core(self, seed: int):
        """A C++ model of this graph, built (weights drawn from `seed`). A layer that another
        built model holds is that model's very layer (weights shared, as in Keras)."""
        core = _core.Model()
        ids = {}
        for t in self._order:
            if t.layer is None:
                ids[id(t)] = core.add_input(list(t.shape))
            else:
                owner = t.layer._owner(exclude=self)
                ids[id(t)] = core.add_layer(id(t.layer), t.layer.kind, t.layer.name,
                                            t.layer.get_config(), [ids[id(p)] for p in t.inputs],
                                            share_from=owner._core if owner is not None else None)
        core.set_output(ids[id(self._output)])
        core.build(seed)
        return core, ids

    def build(self, input_shape=None, seed: int = 0) -> None:
        """Creates the weights (Keras's default initializers) from `seed`; layers already built
        in another model keep their weights."""
        if not self._graph_ready():
            raise ValueError("build: the model has no graph yet")
        self._core, self._ids = self._make_core(_seed(seed))
        leaves = self._leaves()
        self._ids_of_layers = {id(layer) for layer in leaves}
        for layer in leaves:  # layer.get_weights() reads them from this model
            if not any(ref() is self for ref in layer._models):
                layer._models.append(weakref.ref(self))
        if self._compiled is not None:
            self._compile_core()

    @property
    def built(self) -> bool:
        return self._core is not None

    @property
    def output_shape(self) -> tuple | None:
        if self._core is not None:
            return tuple(self._core.node_shape(self._ids[id(self._output)]))
        return None

    # -- training --------------------------------------------------------------------------
    def compile(self, optimizer="adam", loss="mse", metrics=None) -> None:
        """`loss`: a name ("mse", "huber", ...), a class name ("MeanSquaredError"), a tl.losses
        object or function; any other callable raises TypeError (the C++ core could not
        differentiate it). `metrics`: a name or a list of them ("mae", "accuracy",
        "sparse_categorical_accuracy", "MeanAbsoluteError", ...; History keys them as given) or
        callables f(y_true, y_pred) returning per-sample values or a scalar, computed in NumPy
        on the predictions of the whole data at the end of each epoch (named after the
        function). Layers' `trainable` flags take effect here: compile again after changing
        them, as in Keras."""
        opt = _optimizers.get(optimizer)
        loss = _losses.get(loss)
        if isinstance(loss, _losses.KLDivergence):
            raise ValueError("compile: KLDivergence is the distillation loss of tl.optimize.Distiller "
                             "(distillation_loss_fn); the C++ core does not train a model on it alone")
        if isinstance(metrics, str) or callable(metrics):
            metrics = [metrics]
        plan = [_metric_entry(m, loss) for m in list(metrics or [])]
        if self._graph_ready() and self._core is None:
            self._make_core(0)  # shapes that do not connect fail here, naming the layer
        self._compiled = (opt, loss, list(metrics or []))
        self._metric_plan = plan
        self._compiled_frozen = self._frozen_layers() if self._graph_ready() else None
        if self._core is not None:
            self._compile_core()

    def _compile_core(self) -> None:
        opt, loss, _ = self._compiled
        if self._compiled_frozen is None:  # the graph appeared after compile (Sequential)
            self._compiled_frozen = self._frozen_layers()
        core_metrics = [(name, kind) for name, kind, fn in self._metric_plan if kind is not None]
        self._core.compile(**opt._config(), loss=loss.name, from_logits=loss.from_logits,
                           huber_delta=getattr(loss, "delta", 1.0),
                           **getattr(loss, "core_distillation", {}),
                           metrics=[kind for _, kind in core_metrics],
                           metric_names=[name for name, _ in core_metrics],
                           frozen=[id(layer) for layer in self._compiled_frozen])

    def _warn_if_trainable_changed(self, what: str) -> None:
        if [id(la) for la in self._frozen_layers()] != [id(la) for la in self._compiled_frozen or []]:
            warnings.warn(f"{what}: a layer's `trainable` flag changed after compile(); as in Keras, "
                          "the change takes effect at the next model.compile()", stacklevel=3)

    def _python_metrics(self, x, y, batch_size: int = 1024) -> dict:
        """The callable metrics on the model's predictions for x (inference mode)."""
        fns = [(name, fn) for name, kind, fn in self._metric_plan if fn is not None]
        if not fns:
            return {}
        pred = self._core.predict(x, batch_size)
        y_true = y.reshape(pred.shape[:-1]) if y.size != pred.size else y.reshape(pred.shape)
        return {name: float(np.mean(fn(y_true, pred))) for name, fn in fns}

    @property
    def learning_rate(self) -> float:
        """The optimizer's current learning rate (set it to change it, e.g. from a callback)."""
        if self._core is None or self._compiled is None:
            return self._compiled[0].learning_rate if self._compiled else None
        return self._core.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if self._core is None:
            raise RuntimeError("learning_rate: the model has no weights yet")
        if self._compiled[0].schedule is not None:
            raise TypeError("learning_rate: the optimizer was compiled with a learning-rate schedule, "
                            "which sets the rate at every step; it cannot be set (as in Keras)")
        self._core.learning_rate = float(value)

    def _targets(self, y, name: str) -> np.ndarray:
        """y as float32: class indices for the sparse loss, else samples of the output shape;
        labels the crossentropies cannot take are refused here, once per call."""
        if getattr(self._compiled[1], "core_distillation", None):  # built by tl.optimize.Distiller
            return np.ascontiguousarray(y, dtype=np.float32)
        loss = self._compiled[1].name
        if loss == "binary_crossentropy":
            arr = as_float_array(y, name, self.output_shape)
            if arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"{name}: binary_crossentropy needs labels in [0, 1], got values from "
                                 f"{arr.min():g} to {arr.max():g}")
            return arr
        if loss == "categorical_crossentropy":
            arr = as_float_array(y, name, self.output_shape)
            sums = arr.sum(axis=-1, dtype=np.float64)
            bad = np.flatnonzero(((arr < 0).any(axis=-1) | (np.abs(sums - 1) > 1e-3)).ravel())
            if bad.size:
                i = int(bad[0])
                row = arr.reshape(-1, arr.shape[-1])[i]
                raise ValueError(f"{name}: categorical_crossentropy needs targets that are probability "
                                 f"distributions over the last axis (non-negative, summing to 1, as "
                                 f"one-hot labels); row {i} has minimum {row.min():g} and sum "
                                 f"{sums.ravel()[i]:g} (integer class labels go with "
                                 f"sparse_categorical_crossentropy)")
            return arr
        if loss == "sparse_categorical_crossentropy":
            if y is None:
                raise TypeError(f"{name}: expected integer class labels, got None")
            arr = as_array(y, name)
            if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
                raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise ValueError(f"{name}: expected integer class labels of shape (N,), got shape {arr.shape}")
            if len(arr) == 0:
                raise ValueError(f"{name}: expected at least one label, got an empty array")
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError(f"{name}: class labels must be integers")
            return np.ascontiguousarray(arr, dtype=np.float32)
        return as_float_array(y, name, self.output_shape)

    def _prepare_fit(self, x, seed: int) -> None:
        """Creates the weights if there are none yet (Sequential infers its input from x)."""
        if self._core is None:
            self.build(seed=seed)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1, *, seed=None) -> History:
        """Trains in C++ with the GIL released, with Keras's arguments in Keras's order
        (batch_size None: 32); Ctrl-C stops after the current step and raises KeyboardInterrupt,
        leaving the model usable and `model.history` holding the epochs run.

        `sample_weight` (N,) weights each sample's loss: a batch's loss is sum(w * l) / batch
        size (Keras's "sum_over_batch_size"); metrics stay unweighted (Keras's `metrics`).
        `class_weight` {class: weight} must name every class in y (not with sample_weight).
        `validation_split` holds out the last fraction of x, y (and sample_weight), before
        shuffling, as Keras; `validation_data` is (x_val, y_val) or (x_val, y_val, weights).
        Epochs run from `initial_epoch` to `epochs` - 1 and keep those indices in History and
        callbacks. `callbacks`: tl.callbacks.Callback objects (batch hooks: see
        tinylearn.callbacks) or callables f(epoch, logs) (returning False stops).
        `seed` (keyword-only) drives the shuffling and, when the model has no weights yet, their
        initialization (a model that already has weights keeps them).
        steps_per_epoch and validation_steps need a data generator: tinylearn takes arrays and
        refuses them.
        """
        if self._compiled is None:
            raise RuntimeError("fit: the model is not compiled; call "
                               "model.compile(optimizer=..., loss=...) before fit()")
        _unsupported("fit", steps_per_epoch=steps_per_epoch, validation_steps=validation_steps)
        verbose = _verbose(verbose, "fit")
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "fit: batch_size")
        epochs = _positive_int(epochs, "fit: epochs", _MAX_EPOCHS, allow_zero=True)
        initial_epoch = _positive_int(initial_epoch, "fit: initial_epoch", _MAX_EPOCHS, allow_zero=True)
        validation_freq = _positive_int(validation_freq, "fit: validation_freq", _MAX_EPOCHS)
        val_batch = _inference_batch(validation_batch_size, "fit: validation_batch_size")
        if isinstance(shuffle, str):
            raise ValueError(f"fit: shuffle must be True or False, got {shuffle!r} (Keras's 'batch' "
                             "is for HDF5 data)")
        seed = _seed(0 if seed is None else seed)
        x = as_float_array(x, "fit: x", self.input_shape)
        self._prepare_fit(x, seed)
        y = self._targets(y, "fit: y")
        if len(y) != len(x):
            raise ValueError(f"fit: x has {len(x)} samples but y has {len(y)}")
        sw = _sample_weights(sample_weight, len(x), "fit: sample_weight")
        xv = yv = swv = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val) or "
                                 "(x_val, y_val, val_sample_weight)")
            xv = as_float_array(validation_data[0], "fit: validation x", self.input_shape)
            yv = self._targets(validation_data[1], "fit: validation y")
            if len(xv) != len(yv):
                raise ValueError(f"fit: validation x has {len(xv)} samples but y has {len(yv)}")
            if len(validation_data) == 3:
                swv = _sample_weights(validation_data[2], len(xv), "fit: validation sample_weight")
        elif validation_split:
            if not 0.0 < float(validation_split) < 1.0:
                raise ValueError(f"fit: validation_split must be in (0, 1), got {validation_split!r}")
            cut = int(len(x) * (1.0 - float(validation_split)))
            if cut == 0 or cut == len(x):
                raise ValueError(f"fit: validation_split={validation_split} leaves no training or "
                                 f"no validation samples out of {len(x)}")
            x, xv, y, yv = x[:cut], x[cut:], y[:cut], y[cut:]
            if sw is not None:
                sw, swv = sw[:cut], sw[cut:]
        if class_weight is not None and sw is not None:
            raise ValueError("fit: give class_weight or sample_weight, not both (as Keras)")
        weights = self._class_weights(class_weight, y)
        params = {"verbose": verbose, "epochs": epochs, "steps": -(-len(x) // batch_size)}  # Keras's
        cbs = _callbacks._CallbackList(
            [c if isinstance(c, _callbacks.Callback) else _FunctionCallback(c) for c in callbacks or []],
            self, params)

        history = History()
        history.params = {**params, "batch_size": batch_size, "samples": len(x)}
        self.history = history
        bar = _progress_bar(verbose, max(epochs - initial_epoch, 0))
        last_logs = {}

        def on_epoch(epoch, core_logs):
            logs = {**core_logs, **self._python_metrics(x, y)}
            if xv is not None:
                logs.update({f"val_{k}": v for k, v in self._python_metrics(xv, yv).items()})
            cbs("on_epoch_end", epoch, logs)  # callbacks may add to the logs (learning_rate)
            history._append(epoch, logs)
            last_logs.clear()
            last_logs.update(logs)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in sorted(logs.items())}, refresh=False)
                bar.update(1)
            elif verbose == 2:
                items = " - ".join(f"{k}: {v:.4g}" for k, v in sorted(logs.items()))
                print(f"Epoch {epoch + 1}/{epochs} - {items}", flush=True)
            if not self.stop_training and epoch + 1 < epochs:
                cbs("on_epoch_begin", epoch + 1, {})
            return not self.stop_training

        self._warn_if_trainable_changed("fit")
        # The core returns to Python between batches, and around validation, only for the hooks
        # some callback defines (see tinylearn.callbacks).
        hooks = {}
        if cbs.defines("on_train_batch_begin", "on_batch_begin"):
            hooks["on_batch_begin"] = lambda batch: cbs("on_train_batch_begin", batch, logs={})
        if cbs.defines("on_train_batch_end", "on_batch_end"):
            def on_batch_end(batch, logs):
                cbs("on_train_batch_end", batch, logs=dict(logs))
                return not self.stop_training

            hooks["on_batch_end"] = on_batch_end
        if xv is not None and cbs.defines("on_test_begin"):
            hooks["on_test_begin"] = lambda: cbs("on_test_begin", {})
        if xv is not None and cbs.defines("on_test_end"):
            hooks["on_test_end"] = lambda logs: cbs("on_test_end", dict(logs))

        self.stop_training = False
        self._fit_validates = xv is not None
        cbs("on_train_begin", {})
        if initial_epoch < epochs:
            cbs("on_epoch_begin", initial_epoch, {})
        try:
            self._core.fit(x, y, epochs, min(batch_size, len(x)), bool(shuffle), seed, xv, yv, on_epoch,
                           class_weight=weights, sample_weight=sw, validation_sample_weight=swv,
                           initial_epoch=initial_epoch, validation_freq=validation_freq,
                           validation_batch_size=min(val_batch, len(xv)) if xv is not None else 1,
                           **hooks)
        finally:
            if bar is not None:
                bar.close()
        cbs("on_train_end", dict(last_logs))
        return history

    def _class_weights(self, class_weight, y) -> list[float]:
        """Keras's class_weight as one weight per class; every class in y must have one."""
        if class_weight is None:
            return []
        if not isinstance(class_weight, dict):
            raise TypeError(f"fit: class_weight must be a dict {{class: weight}}, got {type(class_weight).__name__}")
        loss = self._compiled[1].name
        if loss not in _CLASSIFICATION_LOSSES:
            raise ValueError(f"fit: class_weight needs a classification loss, not {loss}")
        classes = 2 if loss == "binary_crossentropy" else int(self.output_shape[-1])
        bad = [k for k in class_weight
               if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < classes]
        if bad:
            raise ValueError(f"fit: class_weight has class {bad[0]!r}; the model has classes 0..{classes - 1}")
        for k, w in class_weight.items():
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
                raise TypeError(f"fit: class_weight[{k}] must be a number, got {w!r}")
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"fit: class_weight[{k}] must be a finite number >= 0, got {w!r}")
        if loss == "sparse_categorical_crossentropy":
            present = np.unique(y.astype(np.int64))
        elif loss == "binary_crossentropy":
            present = np.unique((y > 0.5).astype(np.int64))
        else:
            present = np.unique(np.argmax(y.reshape(len(y), -1), axis=1))
        missing = [int(c) for c in present if int(c) not in class_weight]
        if missing:
            raise ValueError(f"fit: class_weight has no weight for class {missing[0]}, which y contains "
                             f"(classes in y without a weight: {missing}); give every class in y a weight")
        return [float(class_weight.get(k, 1.0)) for k in range(classes)]

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None) -> np.ndarray:
        """The outputs for x, in C++ with the GIL released. `batch_size` only sets how many
        samples go through at once (memory, speed), not the results; None: 1024. `verbose`
        takes Keras's values; nothing is printed. `callbacks` get on_predict_begin/end; `steps`
        needs a data generator and is refused."""
        _unsupported("predict", steps=steps)
        _verbose(verbose, "predict")
        batch_size = _inference_batch(batch_size, "predict: batch_size")
        self._require_weights("predict")
        x = as_float_array(x, "predict: x", self.input_shape)
        cbs = self._inference_callbacks(callbacks)
        cbs("on_predict_begin", {})
        out = self._core.predict(x, min(batch_size, len(x)))
        cbs("on_predict_end", {})
        return out

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False):
        """The loss, or [loss, *metrics] when the model was compiled with metrics, or with
        return_dict=True {"loss": ..., metric: ...}. `sample_weight` (N,) weights the loss as in
        fit (sum(w * l) / N); metrics stay unweighted. `batch_size` (None: 1024) does not change
        the results. `callbacks` get on_test_begin/end; `verbose` and `steps` as in predict."""
        _unsupported("evaluate", steps=steps)
        _verbose(verbose, "evaluate")
        batch_size = _inference_batch(batch_size, "evaluate: batch_size")
        self._require_weights("evaluate")
        if self._compiled is None:
            raise RuntimeError("evaluate: the model is not compiled; call model.compile() first")
        x = as_float_array(x, "evaluate: x", self.input_shape)
        y = self._targets(y, "evaluate: y")
        if len(y) != len(x):
            raise ValueError(f"evaluate: x has {len(x)} samples but y has {len(y)}")
        sw = _sample_weights(sample_weight, len(x), "evaluate: sample_weight")
        cbs = self._inference_callbacks(callbacks)
        cbs("on_test_begin", {})
        batch_size = min(batch_size, len(x))
        core_values = iter(self._core.evaluate(x, y, batch_size, sample_weight=sw))
        extra = self._python_metrics(x, y, batch_size)
        values = [next(core_values)] + [next(core_values) if kind is not None else extra[name]
                                        for name, kind, _ in self._metric_plan]
        logs = dict(zip(["loss", *(name for name, _, _ in self._metric_plan)], values))
        cbs("on_test_end", dict(logs))
        if return_dict:
            return logs
        return values[0] if len(values) == 1 else values

    def _inference_callbacks(self, callbacks):
        cbs = list(callbacks or [])
        for c in cbs:
            if not isinstance(c, _callbacks.Callback):
                raise TypeError(f"callbacks must be tl.callbacks.Callback objects, got {c!r}")
        return _callbacks._CallbackList(cbs, self, {})

    # -- weights ---------------------------------------------------------------------------
    def get_layer(self, name: str) -> Layer:
        """The layer called `name` (as keras.Model.get_layer)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; the layers are "
                         f"{[layer.name for layer in self.layers]}")

    def _layer_weights(self, core, layer) -> list[np.ndarray]:
        return core.get_weights(id(layer))  # in Keras's layouts

    def get_weights(self) -> list[np.ndarray]:
        self._require_weights("get_weights")
        return [w for layer in self._leaves() for w in self._layer_weights(self._core, layer)]

    def set_weights(self, weights) -> None:
        self._require_weights("set_weights")
        weights = list(weights)
        current = self.get_weights()
        if len(weights) != len(current):
            raise ValueError(f"set_weights: expected {len(current)} arrays, got {len(weights)}")
        for w, c in zip(weights, current):
            if np.shape(w) != c.shape:
                raise ValueError(f"set_weights: expected an array of shape {c.shape}, got {np.shape(w)}")
        it = iter(weights)
        for layer in self._leaves():
            n = len(self._core.get_weights(id(layer)))
            self._core.set_weights(id(layer), [np.ascontiguousarray(next(it), dtype=np.float32).ravel()
                                               for _ in range(n)])

    def save(self, path) -> Path:
        """Writes the whole model (architecture, weights, optimizer state) atomically; see
        tinylearn.saving for the format. tl.load_model(path) reads it back."""
        from .saving import save_model

        return save_model(self, path)

    def count_params(self) -> int:
        """All weights, trainable or not (as Keras)."""
        return sum(int(w.size) for _, _, leaves in self._describe() for _, ws in leaves for w in ws)

    def _describe(self):
        """(entry of model.layers, output shape, [(layer, weights)] of the layers it holds), from
        the model or a throwaway build."""
        if not self._graph_ready():
            raise ValueError("the input shape is unknown; give the first layer input_shape or call fit()")
        core, ids = (self._core, self._ids) if self._core is not None else self._make_core(0)
        rows, index, seen = [], {}, set()
        for t in self._order:
            if t.layer is None:
                continue
            item = t.owners[0] if t.owners else t.layer
            if id(item) not in index:
                index[id(item)] = len(rows)
                rows.append([item, None, []])
            row = rows[index[id(item)]]
            row[1] = tuple(core.node_shape(ids[id(t)]))  # the item's last node gives its output
            if id(t.layer) not in seen:
                seen.add(id(t.layer))
                row[2].append((t.layer, self._layer_weights(core, t.layer)))
        return [tuple(r) for r in rows]

    def summary(self, print_fn=None) -> None:
        """Prints, per layer (a nested model as one row), the output shape and parameters; then
        Keras's totals (total, trainable, non-trainable) and the bytes in float32 and int8.
        Returns None, as Keras (so Jupyter shows it once); print_fn receives each line."""
        print_fn = print_fn or print
        trains = self._trainable_map()
        rows, total, trainable, int8 = [], 0, 0, 0
        for item, shape, leaves in self._describe():
            p = 0
            for layer, weights in leaves:
                sizes = [int(w.size) for w in weights]
                p += sum(sizes)
                if trains[id(layer)]:
                    trainable += sum(sizes[:len(sizes) - layer._state_arrays])
                int8 += layer.int8_bytes(weights)
            total += p
            kind = "Functional" if type(item) is Model else type(item).__name__
            rows.append((f"{item.name} ({kind})", str((None, *shape)), f"{p:,}"))
        w = (34, 20, 10)
        line = "=" * sum(w)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        print_fn(f"{'Layer (type)':<{w[0]}}{'Output Shape':<{w[1]}}{'Param #':>{w[2]}}")
        print_fn(line)
        for r in rows:
            print_fn(f"{r[0]:<{w[0]}}{r[1]:<{w[1]}}{r[2]:>{w[2]}}")
        print_fn(line)
        print_fn(f"Total params: {total:,} ({4 * total:,} bytes float32)")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")
        print_fn(f"As int8: {int8:,} bytes (int8 weights, int32 biases)")
        print_fn(line)

    def _require_weights(self, what: str) -> None:
        if self._core is None:
            if not self._graph_ready():
                raise RuntimeError(f"{what}: the model has no weights yet; call fit() or build() first")
            self.build(seed=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layers!r})"


class Sequential(Model):
    """A linear stack of layers, trained by tinylearn's C++ core (a Model whose graph is a chain).
    As in Keras 3, a first element tl.Input(shape) sets the input shape, and a model may be one
    of the layers (its weights shared with it)."""

    def __init__(self, layers=None, name: str | None = None):
        super().__init__(name=name)
        self._layers: list = []
        self._input_arg = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer) -> None:
        if self._core is not None:
            raise RuntimeError("Sequential.add: the model already has weights; build a new model")
        if isinstance(layer, SymbolicTensor) and layer.layer is None:
            if self._layers or self._input_arg is not None:
                raise ValueError("Sequential.add: a tl.Input() may only come first")
            self._input_arg = layer.shape
            return
        if not isinstance(layer, (Layer, Model)):
            raise TypeError(f"Sequential.add: expected a tinylearn layer or model, got {type(layer).__name__}")
        if (self._layers or self._input_arg is not None) and isinstance(layer, Layer) \
                and layer._input_shape_arg is not None:
            raise ValueError("only the first layer takes input_shape")
        self._layers.append(layer)
        self._order = None
        first = self._layers[0]
        shape = self._input_arg if self._input_arg is not None else (
            first.input_shape if isinstance(first, Model) else first._input_shape_arg)
        if shape is not None:
            self._chain(shape)

    def _chain(self, input_shape) -> None:
        t = inputs = Input(input_shape)
        for layer in self._layers:
            t = layer(t)
        self._set_graph(inputs, t)

    @property
    def layers(self) -> list:
        return list(self._layers)

    def build(self, input_shape=None, seed: int = 0) -> None:
        if not self._layers:
            raise ValueError("the model has no layers: add some before building it")
        if input_shape is not None:
            shape = tuple(input_shape)
            shape = shape[1:] if len(shape) > 1 and shape[0] is None else shape
            if self.input_shape is not None and shape != self.input_shape:
                raise ValueError(f"build: input_shape {shape} does not match the model's {self.input_shape}")
            self._chain(shape)
        if not self._graph_ready():
            raise ValueError("build: the input shape is unknown; pass input_shape=(features,)")
        super().build(seed=seed)

    def _prepare_fit(self, x, seed: int) -> None:
        if not self._graph_ready():
            self._chain(x.shape[1:])
        super()._prepare_fit(x, seed)


class _FunctionCallback(_callbacks.Callback):
    """A plain callable f(epoch, logs) as a callback; returning False stops training."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"fit: callbacks must be tl.callbacks.Callback objects or callables, got {fn!r}")
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.fn(epoch, logs) is False:
            self.model.stop_training = True


def _metric_entry(m, loss) -> tuple:
    """(History's name, the C++ core's metric or None, the Python callable or None)."""
    if isinstance(m, str):
        if m not in _METRICS:
            raise ValueError(f"unknown metric {m!r}; expected one of {sorted(_METRICS)} or a callable "
                             f"f(y_true, y_pred)")
        kind = _METRICS[m]
        sparse = loss.name == "sparse_categorical_crossentropy"
        if kind == "sparse_categorical_accuracy" and not sparse:
            raise ValueError(f"metric {m!r} needs integer class labels, which go with "
                             f"loss='sparse_categorical_crossentropy'; for one-hot targets use "
                             f"'categorical_accuracy' (or 'accuracy')")
        if kind == "categorical_accuracy" and sparse:
            raise ValueError(f"metric {m!r} needs one-hot targets, but the loss "
                             f"sparse_categorical_crossentropy takes class labels; use "
                             f"'sparse_categorical_accuracy' (or 'accuracy')")
        return m, kind, None
    for fn, kind in _METRIC_FUNCTIONS.items():
        if m is fn:
            return fn.__name__, kind, None
    if callable(m):
        name = getattr(m, "__name__", None) or type(m).__name__
        return to_snake_case(name), None, m
    raise TypeError(f"metrics: expected a metric name or a callable f(y_true, y_pred), got {m!r}")


def _single(t, what: str):
    if isinstance(t, (list, tuple)):
        if len(t) != 1:
            raise ValueError(f"Model: one {what[:-1]} is supported, got {len(t)}")
        return t[0]
    return t


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed) & 0xFFFFFFFFFFFFFFFF


_MAX_SIZE = 2**63 - 1  # batch sizes (int64, as Keras's tensors count them)
_MAX_EPOCHS = 2**31 - 1  # epoch indices (int32 in the core)
_CLASSIFICATION_LOSSES = ("binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy")


def _positive_int(v, name: str, maximum: int = _MAX_SIZE, allow_zero: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")
    if v > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}, got {v!r}")
    return int(v)


def _inference_batch(batch_size, name: str) -> int:
    """predict's and evaluate's batch size: None for 1024 (it sets memory and speed only)."""
    return 1024 if batch_size is None else _positive_int(batch_size, name)


def _verbose(verbose, who: str):
    if isinstance(verbose, str) and verbose == "auto":
        return 1
    if isinstance(verbose, (bool, int, np.integer)) and int(verbose) in (0, 1, 2):
        return int(verbose)
    raise ValueError(f"{who}: verbose must be 'auto', 0, 1 or 2, got {verbose!r}")


def _unsupported(who: str, **args) -> None:
    """Keras's arguments for data generators: tinylearn takes arrays, so they must stay None."""
    for name, value in args.items():
        if value is not None:
            raise ValueError(f"{who}: {name}={value!r} is not supported: tinylearn takes arrays and "
                             f"runs over all of them (ceil(N / batch_size) batches); leave {name}=None")


def _sample_weights(weights, n: int, name: str):
    """Keras's sample_weight: None, or one finite weight >= 0 per sample, shape (N,) or (N, 1)."""
    if weights is None:
        return None
    arr = as_array(weights, name)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), one weight per sample, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise ValueError(f"{name}: weights must be finite numbers >= 0")
    return arr


def _progress_bar(verbose: int, epochs: int):
    if verbose != 1:
        return None
    try:  # tqdm.auto draws a widget in Jupyter, but only where ipywidgets is installed
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    return tqdm(total=epochs, unit="epoch", file=sys.stdout, leave=True, dynamic_ncols=True)
