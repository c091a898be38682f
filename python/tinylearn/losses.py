"""Losses, as keras.losses: by name ("mse", "sparse_categorical_crossentropy", ...) or as an
object that carries `from_logits`."""

from __future__ import annotations

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "Loss", "MeanAbsoluteError",
           "MeanSquaredError", "SparseCategoricalCrossentropy", "get"]


class Loss:
    name = ""

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class MeanSquaredError(Loss):
    name = "mse"


class MeanAbsoluteError(Loss):
    name = "mae"


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"


_ALIASES = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(identifier) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier in _ALIASES:
        return _ALIASES[identifier]()
    raise ValueError(f"unknown loss {identifier!r}; expected one of {sorted(_ALIASES)} or a tl.losses.Loss")
