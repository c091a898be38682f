"""Losses, as keras.losses: by name ("mse", "sparse_categorical_crossentropy") or class name
("MeanSquaredError"), as an object that carries `from_logits` (Huber: `delta`), or as one of the
functions below. The C++ core computes the loss and its gradient in fit; the objects and
functions here also compute it in NumPy, as Keras's do (functions: one value per sample, the
mean over the last axis; objects: the mean over the batch).

An arbitrary Python callable f(y_true, y_pred) cannot be a loss: the C++ core could not
differentiate it (compile raises TypeError). As a metric it can (see Model.compile).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "Huber", "KLDivergence", "Loss",
           "MeanAbsoluteError", "MeanSquaredError", "SparseCategoricalCrossentropy",
           "binary_crossentropy", "categorical_crossentropy", "get", "huber", "kl_divergence", "kld",
           "mae", "mean_absolute_error", "mean_squared_error", "mse", "sparse_categorical_crossentropy"]

_EPS = 1e-7  # Keras's backend.epsilon()


def _pair(y_true, y_pred):
    return np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)


def mean_squared_error(y_true, y_pred) -> np.ndarray:
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.square(y_pred - y_true), axis=-1)


def mean_absolute_error(y_true, y_pred) -> np.ndarray:
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(np.abs(y_pred - y_true), axis=-1)


mse, mae = mean_squared_error, mean_absolute_error


def huber(y_true, y_pred, delta: float = 1.0) -> np.ndarray:
    """Mean over the last axis of e^2 / 2 where |e| <= delta, else delta * (|e| - delta / 2)."""
    y_true, y_pred = _pair(y_true, y_pred)
    e = np.abs(y_pred - y_true)
    return np.mean(np.where(e <= delta, 0.5 * e * e, delta * e - 0.5 * delta * delta), axis=-1)


def binary_crossentropy(y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    y_true, y_pred = _pair(y_true, y_pred)
    if from_logits:
        z = y_pred
        v = np.maximum(z, 0) - z * y_true + np.log1p(np.exp(-np.abs(z)))
    else:
        p = np.clip(y_pred, _EPS, 1 - _EPS)
        v = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))
    return np.mean(v, axis=-1)


def kl_divergence(y_true, y_pred) -> np.ndarray:
    """Keras's KL divergence per sample: sum(y_true * log(y_true / y_pred)) over the last axis,
    both clipped to [1e-7, 1]."""
    y_true, y_pred = _pair(y_true, y_pred)
    y_true, y_pred = np.clip(y_true, _EPS, 1.0), np.clip(y_pred, _EPS, 1.0)
    return np.sum(y_true * np.log(y_true / y_pred), axis=-1)


kld = kl_divergence


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def categorical_crossentropy(y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    y_true, y_pred = _pair(y_true, y_pred)
    if from_logits:
        return -np.sum(y_true * _log_softmax(y_pred), axis=-1)
    q = np.clip(y_pred / y_pred.sum(axis=-1, keepdims=True), _EPS, 1 - _EPS)
    return -np.sum(y_true * np.log(q), axis=-1)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False) -> np.ndarray:
    y_pred = np.asarray(y_pred, dtype=np.float64)
    labels = np.asarray(y_true).reshape(y_pred.shape[:-1]).astype(np.int64)
    logp = _log_softmax(y_pred if from_logits else np.log(np.clip(y_pred, _EPS, 1 - _EPS)))
    return -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


class Loss:
    """A loss of the C++ core (`name`); calling it gives Keras's batch mean in NumPy."""

    name = ""

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}

    def _values(self, y_true, y_pred) -> np.ndarray:
        return _FUNCTIONS_OF[type(self)](y_true, y_pred, from_logits=self.from_logits)

    def __call__(self, y_true, y_pred) -> float:
        return float(np.mean(self._values(y_true, y_pred)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MeanSquaredError(Loss):
    name = "mse"

    def _values(self, y_true, y_pred):
        return mean_squared_error(y_true, y_pred)


class MeanAbsoluteError(Loss):
    name = "mae"

    def _values(self, y_true, y_pred):
        return mean_absolute_error(y_true, y_pred)


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"


class KLDivergence(Loss):
    """Keras's KLDivergence: sum(y_true * log(y_true / y_pred)) per sample (both clipped to
    [1e-7, 1]), the mean over the batch. It is the distillation loss of
    tl.optimize.Distiller (the C++ core computes it there, with its gradient); the core does not
    train a model on it alone, so Model.compile refuses it."""

    name = "kl_divergence"

    def __init__(self):
        super().__init__()

    def get_config(self) -> dict:
        return {}

    def _values(self, y_true, y_pred):
        return kl_divergence(y_true, y_pred)


class Huber(Loss):
    """Keras's Huber loss: quadratic for |error| <= delta, linear beyond."""

    name = "huber"

    def __init__(self, delta: float = 1.0):
        super().__init__()
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0:
            raise ValueError(f"Huber: delta must be a positive number, got {delta!r}")
        self.delta = float(delta)

    def get_config(self) -> dict:
        return {"delta": self.delta}

    def _values(self, y_true, y_pred):
        return huber(y_true, y_pred, self.delta)


_FUNCTIONS_OF = {BinaryCrossentropy: binary_crossentropy, CategoricalCrossentropy: categorical_crossentropy,
                 SparseCategoricalCrossentropy: sparse_categorical_crossentropy}

_ALIASES = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError, "MeanSquaredError": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError, "MeanAbsoluteError": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy, "BinaryCrossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy, "CategoricalCrossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "SparseCategoricalCrossentropy": SparseCategoricalCrossentropy,
    "huber": Huber, "Huber": Huber,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "KLDivergence": KLDivergence,
}

# tinylearn's loss functions, passed as callables, stand for the core's losses.
_CALLABLES = {mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError,
              binary_crossentropy: BinaryCrossentropy, categorical_crossentropy: CategoricalCrossentropy,
              sparse_categorical_crossentropy: SparseCategoricalCrossentropy, huber: Huber,
              kl_divergence: KLDivergence}


def get(identifier) -> Loss:
    """A loss object from a name, a class name, a tl.losses object or a tl.losses function."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier in _ALIASES:
        return _ALIASES[identifier]()
    for fn, cls in _CALLABLES.items():
        if identifier is fn:
            return cls()
    if callable(identifier) and not isinstance(identifier, str):
        raise TypeError(f"loss: {getattr(identifier, '__name__', identifier)!r} is a Python callable, which "
                        f"tinylearn's C++ training core cannot differentiate; pass a loss name "
                        f"({', '.join(sorted(k for k in _ALIASES if k.islower()))}), a tl.losses object "
                        f"or a tl.losses function")
    raise ValueError(f"unknown loss {identifier!r}; expected one of {sorted(_ALIASES)} or a tl.losses.Loss")


def from_config(name: str, config: dict) -> Loss:
    """The loss object of `name` (Loss.name) and get_config() (as saved in model files)."""
    cls = {c.name: c for c in _ALIASES.values()}
    if name not in cls:
        raise ValueError(f"unknown loss {name!r}")
    return cls[name](**config)
