"""Layers, configured in Python and run by the C++ core."""

from __future__ import annotations

from numbers import Integral

__all__ = ["Dense", "Layer"]

_ACTIVATIONS = {None: "linear", "linear": "linear", "relu": "relu"}


class Layer:
    """Base of all layers: a name and, for the first layer of a model, an input shape."""

    def __init__(self, input_shape=None, name: str | None = None):
        if input_shape is not None:
            input_shape = tuple(input_shape)
            if not input_shape or not all(isinstance(d, Integral) and d > 0 for d in input_shape):
                raise ValueError(f"input_shape must be a tuple of positive integers, got {input_shape!r}")
        self.input_shape = input_shape
        self.name = name

    def output_features(self, input_features: int) -> int:
        raise NotImplementedError

    def param_count(self, input_features: int) -> int:
        raise NotImplementedError

    def int8_bytes(self, input_features: int) -> int:
        """Bytes of this layer's parameters once quantized (int8 weights, int32 biases)."""
        raise NotImplementedError


class Dense(Layer):
    """Fully connected layer: activation(x @ kernel + bias), as keras.layers.Dense."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 input_shape=None, name: str | None = None):
        super().__init__(input_shape, name)
        if isinstance(units, bool) or not isinstance(units, Integral) or units <= 0:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"Dense: unknown activation {activation!r}; expected one of None, 'linear', 'relu'")
        self.units = int(units)
        self.activation = _ACTIVATIONS[activation]
        self.use_bias = bool(use_bias)

    def output_features(self, input_features: int) -> int:
        return self.units

    def param_count(self, input_features: int) -> int:
        return input_features * self.units + (self.units if self.use_bias else 0)

    def int8_bytes(self, input_features: int) -> int:
        return input_features * self.units + (4 * self.units if self.use_bias else 0)

    def __repr__(self) -> str:
        return f"Dense({self.units}, activation={self.activation!r})"
