"""Keras-shaped models backed by the C++ training core."""

from __future__ import annotations

import sys

import numpy as np

from . import _core
from . import optimizers as _optimizers
from ._validate import as_float_matrix
from .layers import Layer

__all__ = ["History", "Sequential"]

_LOSSES = {"mse": "mse", "mean_squared_error": "mse"}
_METRICS = {"mae": "mae", "mean_absolute_error": "mae", "mse": "mse", "mean_squared_error": "mse"}


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


class Sequential:
    """A linear stack of layers, trained by tinylearn's C++ core.

    Weights are created on first need (fit, predict, build) from a seed, so runs repeat.
    """

    def __init__(self, layers=None, name: str | None = None):
        self.name = name or "sequential"
        self._layers: list[Layer] = []
        self._core = None
        self._compiled = None
        self.history: History | None = None
        for layer in layers or []:
            self.add(layer)

    # -- structure -------------------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a tinylearn layer, got {type(layer).__name__}")
        if self._core is not None:
            raise RuntimeError("Sequential.add: the model already has weights; build a new model")
        if self._layers and layer.input_shape is not None:
            raise ValueError("only the first layer takes input_shape")
        if layer.name is None:  # Keras's names: dense, dense_1, dense_2, ...
            base = type(layer).__name__.lower()
            taken = sum(1 for other in self._layers if type(other) is type(layer))
            layer.name = base if taken == 0 else f"{base}_{taken}"
        self._layers.append(layer)

    @property
    def input_features(self) -> int | None:
        if self._core is not None:
            return self._input_features
        if self._layers and self._layers[0].input_shape is not None:
            shape = self._layers[0].input_shape
            if len(shape) != 1:
                raise ValueError(f"Dense models take 1-D samples; input_shape {shape} is not")
            return int(shape[0])
        return None

    @property
    def output_features(self) -> int | None:
        f = self.input_features
        if f is None:
            return None
        for layer in self._layers:
            f = layer.output_features(f)
        return f

    def build(self, input_shape=None, seed: int = 0) -> None:
        """Creates the weights (Glorot uniform kernels, zero biases) from `seed`."""
        if not self._layers:
            raise ValueError("the model has no layers: add some before building it")
        features = self.input_features
        if input_shape is not None:
            shape = tuple(input_shape)[-1:]
            if features is not None and shape[0] != features:
                raise ValueError(f"build: input_shape {input_shape} does not match the model's {features}")
            features = int(shape[0])
        if features is None:
            raise ValueError("build: the input shape is unknown; pass input_shape=(features,)")
        core = _core.Sequential()
        for layer in self._layers:
            core.add_dense(layer.units, layer.activation, layer.use_bias)
        core.build(features, _seed(seed))
        self._core, self._input_features = core, features
        if self._compiled is not None:
            self._compile_core()

    @property
    def built(self) -> bool:
        return self._core is not None

    # -- training --------------------------------------------------------------------------
    def compile(self, optimizer="adam", loss="mse", metrics=None) -> None:
        opt = _optimizers.get(optimizer)
        if loss not in _LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_LOSSES)}")
        metrics = list(metrics or [])
        for m in metrics:
            if m not in _METRICS:
                raise ValueError(f"unknown metric {m!r}; expected one of {sorted(_METRICS)}")
        self._compiled = (opt, _LOSSES[loss], [_METRICS[m] for m in metrics], metrics)
        if self._core is not None:
            self._compile_core()

    def _compile_core(self) -> None:
        opt, loss, metrics, _ = self._compiled
        self._core.compile(**opt._config(), loss=loss, metrics=metrics)

    def fit(self, x, y, epochs: int = 1, batch_size: int = 32, verbose="auto",
            validation_data=None, shuffle: bool = True, seed: int | None = None) -> History:
        """Trains in C++ with the GIL released; Ctrl-C stops after the current step and raises
        KeyboardInterrupt, leaving the model usable and `model.history` holding the epochs run.

        `seed` drives the shuffling and, when the model has no weights yet, their initialization
        (a model that already has weights, from build() or an earlier fit, keeps them).
        """
        if self._compiled is None:
            raise RuntimeError("fit: the model is not compiled; call "
                               "model.compile(optimizer=..., loss=...) before fit()")
        epochs = _positive_int(epochs, "epochs", allow_zero=True)
        batch_size = _positive_int(batch_size, "batch_size")
        seed = _seed(0 if seed is None else seed)
        x = as_float_matrix(x, "fit: x", self.input_features)
        if self._core is None:
            self.build((x.shape[1],), seed=seed)
        y = as_float_matrix(y, "fit: y", self.output_features)
        if len(y) != len(x):
            raise ValueError(f"fit: x has {len(x)} samples but y has {len(y)}")
        xv = yv = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            xv = as_float_matrix(validation_data[0], "fit: validation x", self.input_features)
            yv = as_float_matrix(validation_data[1], "fit: validation y", self.output_features)
            if len(xv) != len(yv):
                raise ValueError(f"fit: validation x has {len(xv)} samples but y has {len(yv)}")

        history = History()
        history.params = {"epochs": epochs, "batch_size": batch_size, "samples": len(x)}
        self.history = history
        bar = _progress_bar(verbose, epochs)

        def on_epoch(epoch, logs):
            history._append(epoch, logs)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in sorted(logs.items())}, refresh=False)
                bar.update(1)
            elif verbose == 2:
                items = " - ".join(f"{k}: {v:.4g}" for k, v in sorted(logs.items()))
                print(f"Epoch {epoch + 1}/{epochs} - {items}", flush=True)
            return True

        try:
            self._core.fit(x, y, epochs, batch_size, bool(shuffle), seed, xv, yv, on_epoch)
        finally:
            if bar is not None:
                bar.close()
        return history

    def predict(self, x, batch_size: int | None = None, verbose=0) -> np.ndarray:
        self._require_weights("predict")
        x = as_float_matrix(x, "predict: x", self.input_features)
        return self._core.predict(x, _positive_int(batch_size or 1024, "batch_size"))

    def evaluate(self, x, y, batch_size: int | None = None, verbose=0):
        """The loss, or [loss, *metrics] when the model was compiled with metrics."""
        self._require_weights("evaluate")
        if self._compiled is None:
            raise RuntimeError("evaluate: the model is not compiled; call model.compile() first")
        x = as_float_matrix(x, "evaluate: x", self.input_features)
        y = as_float_matrix(y, "evaluate: y", self.output_features)
        if len(y) != len(x):
            raise ValueError(f"evaluate: x has {len(x)} samples but y has {len(y)}")
        values = self._core.evaluate(x, y, _positive_int(batch_size or 1024, "batch_size"))
        return values[0] if len(values) == 1 else list(values)

    # -- weights ---------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        self._require_weights("get_weights")
        return [w for i in range(len(self._layers)) for w in self._core.get_layer_weights(i)]

    def set_weights(self, weights) -> None:
        self._require_weights("set_weights")
        weights = list(weights)
        expected = sum(2 if layer.use_bias else 1 for layer in self._layers)
        if len(weights) != expected:
            raise ValueError(f"set_weights: expected {expected} arrays, got {len(weights)}")
        it = iter(weights)
        for i, layer in enumerate(self._layers):
            kernel = np.ascontiguousarray(next(it), dtype=np.float32)
            bias = np.ascontiguousarray(next(it), dtype=np.float32) if layer.use_bias else None
            self._core.set_layer_weights(i, kernel, bias)

    def count_params(self) -> int:
        f = self.input_features
        if f is None:
            raise ValueError("count_params: the input shape is unknown (give input_shape)")
        total = 0
        for layer in self._layers:
            total += layer.param_count(f)
            f = layer.output_features(f)
        return total

    def summary(self, print_fn=None) -> None:
        """Per layer: output shape and parameters; totals in float32 and int8 bytes."""
        print_fn = print_fn or print
        f = self.input_features
        if f is None:
            raise ValueError("summary: the input shape is unknown; give the first layer input_shape")
        rows, total, int8 = [], 0, 0
        for layer in self._layers:
            p = layer.param_count(f)
            int8 += layer.int8_bytes(f)
            f = layer.output_features(f)
            total += p
            rows.append((f"{layer.name} ({type(layer).__name__})", f"(None, {f})", f"{p:,}"))
        w = (34, 16, 10)
        line = "=" * sum(w)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        print_fn(f"{'Layer (type)':<{w[0]}}{'Output Shape':<{w[1]}}{'Param #':>{w[2]}}")
        print_fn(line)
        for r in rows:
            print_fn(f"{r[0]:<{w[0]}}{r[1]:<{w[1]}}{r[2]:>{w[2]}}")
        print_fn(line)
        print_fn(f"Total params: {total:,} ({4 * total:,} bytes float32)")
        print_fn(f"As int8: {int8:,} bytes (int8 weights, int32 biases)")
        print_fn(line)

    def _require_weights(self, what: str) -> None:
        if self._core is None:
            if self.input_features is None:
                raise RuntimeError(f"{what}: the model has no weights yet; call fit() or build() first")
            self.build(seed=0)

    def __repr__(self) -> str:
        return f"Sequential({self._layers!r})"


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed) & 0xFFFFFFFFFFFFFFFF


def _positive_int(v, name: str, allow_zero: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")
    return int(v)


def _progress_bar(verbose, epochs: int):
    if verbose == "auto":
        verbose = 1
    if verbose != 1:
        return None
    try:  # tqdm.auto draws a widget in Jupyter, but only where ipywidgets is installed
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm

    return tqdm(total=epochs, unit="epoch", file=sys.stdout, leave=True, dynamic_ncols=True)
