"""Layers, configured in Python and run by the C++ core. Calling a layer on a symbolic tensor
(from tl.Input) adds it to a graph, as in Keras's functional API."""

from __future__ import annotations

from numbers import Integral

__all__ = ["Activation", "Add", "Concatenate", "Dense", "Flatten", "Input", "Layer", "ReLU",
           "Reshape", "Softmax", "SymbolicTensor"]

_ACTIVATIONS = {None: "linear", "linear": "linear", "relu": "relu", "relu6": "relu6",
                "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax"}


def _activation(name, layer: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{layer}: unknown activation {name!r}; expected one of "
                         "None, 'linear', 'relu', 'relu6', 'sigmoid', 'tanh', 'softmax'")
    return _ACTIVATIONS[name]


class SymbolicTensor:
    """The output of a layer in a graph under construction (no data)."""

    def __init__(self, layer: "Layer | None", inputs: list["SymbolicTensor"], shape=None,
                 name: str | None = None):
        self.layer = layer
        self.inputs = inputs
        self.shape = shape  # per-sample shape; known for inputs only
        self.name = name

    def __repr__(self) -> str:
        if self.layer is None:
            return f"<tl.Input shape={(None, *self.shape)}>"
        return f"<SymbolicTensor from {self.layer.name or type(self.layer).__name__}>"


def Input(shape, name: str | None = None) -> SymbolicTensor:  # noqa: N802 (Keras's name)
    """A model input: samples of `shape` (without the batch dimension)."""
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not shape or not all(isinstance(d, Integral) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"Input: shape must be a tuple of positive integers, got {shape!r}")
    return SymbolicTensor(None, [], tuple(int(d) for d in shape), name)


class Layer:
    """Base of all layers: a name, a configuration and, for the first layer of a Sequential,
    an input shape."""

    kind = ""

    def __init__(self, input_shape=None, name: str | None = None):
        if input_shape is not None:
            input_shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
            if not input_shape or not all(isinstance(d, Integral) and d > 0 for d in input_shape):
                raise ValueError(f"input_shape must be a tuple of positive integers, got {input_shape!r}")
        self.input_shape = input_shape
        self.name = name

    def get_config(self) -> dict:
        raise NotImplementedError

    def __call__(self, inputs) -> SymbolicTensor:
        many = isinstance(inputs, (list, tuple))
        items = list(inputs) if many else [inputs]
        for t in items:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"{type(self).__name__}: call it on tl.Input() or another layer's "
                                f"output, got {type(t).__name__}")
        return SymbolicTensor(self, items)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer on the last axis: activation(x @ kernel + bias), as keras.layers.Dense."""

    kind = "Dense"

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 input_shape=None, name: str | None = None):
        super().__init__(input_shape, name)
        if isinstance(units, bool) or not isinstance(units, Integral) or units <= 0:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = _activation(activation, "Dense")
        self.use_bias = bool(use_bias)

    def get_config(self) -> dict:
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias}


class Activation(Layer):
    """An activation function as a layer (softmax over the last axis), as keras.layers.Activation."""

    kind = "Activation"

    def __init__(self, activation: str, name: str | None = None, input_shape=None):
        super().__init__(input_shape, name)
        self.activation = _activation(activation, "Activation")

    def get_config(self) -> dict:
        return {"activation": self.activation}


class ReLU(Activation):
    def __init__(self, name: str | None = None, input_shape=None):
        super().__init__("relu", name, input_shape)


class Softmax(Activation):
    def __init__(self, name: str | None = None, input_shape=None):
        super().__init__("softmax", name, input_shape)


class Flatten(Layer):
    """(batch, d1, d2, ...) -> (batch, d1 * d2 * ...)."""

    kind = "Flatten"

    def get_config(self) -> dict:
        return {}


class Reshape(Layer):
    """Reshapes each sample to `target_shape` (one entry may be -1)."""

    kind = "Reshape"

    def __init__(self, target_shape, name: str | None = None, input_shape=None):
        super().__init__(input_shape, name)
        target = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else (target_shape,)
        if not target or not all(isinstance(d, Integral) and (d > 0 or d == -1) for d in target):
            raise ValueError(f"Reshape: target_shape must hold positive integers (one may be -1), got {target_shape!r}")
        self.target_shape = tuple(int(d) for d in target)

    def get_config(self) -> dict:
        return {"target_shape": list(self.target_shape)}


class Add(Layer):
    """Elementwise sum of a list of inputs of one shape."""

    kind = "Add"

    def get_config(self) -> dict:
        return {}


class Concatenate(Layer):
    """Joins a list of inputs along the last axis."""

    kind = "Concatenate"

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(None, name)
        if axis != -1:
            raise ValueError(f"Concatenate: only axis=-1 (the channels) is supported, got {axis!r}")

    def get_config(self) -> dict:
        return {}


_KINDS = {"Dense": Dense, "Activation": Activation, "Flatten": Flatten, "Reshape": Reshape,
          "Add": Add, "Concatenate": Concatenate}


def from_config(kind: str, config: dict, name: str | None = None) -> Layer:
    """A layer from its kind and get_config() (as saved in model files)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    return _KINDS[kind](**config, name=name)
