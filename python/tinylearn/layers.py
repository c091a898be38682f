"""Layers, configured in Python and run by the C++ core. Calling a layer on a symbolic tensor
(from tl.Input) adds it to a graph, as in Keras's functional API."""

from __future__ import annotations

import re
from collections import Counter
from numbers import Integral

import numpy as np

__all__ = ["Activation", "Add", "AveragePooling2D", "BatchNormalization", "Concatenate", "Conv2D",
           "Dense", "DepthwiseConv2D", "Dropout", "FakeQuant", "Flatten", "GlobalAveragePooling2D", "Input",
           "Layer", "MaxPooling2D", "ReLU", "Reshape", "Softmax", "SymbolicTensor", "clear_session"]

_ACTIVATIONS = {None: "linear", "linear": "linear", "relu": "relu", "relu6": "relu6",
                "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax"}


def _activation(name, layer: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{layer}: unknown activation {name!r}; expected one of "
                         "None, 'linear', 'relu', 'relu6', 'sigmoid', 'tanh', 'softmax'")
    return _ACTIVATIONS[name]


def to_snake_case(name: str) -> str:
    """Keras's snake_case of a class name: MaxPooling2D -> max_pooling2d, ReLU -> re_lu."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


_name_uids: Counter = Counter()


def auto_name(class_name: str) -> str:
    """Keras's default name: the snake_case class name, numbered per name in this session
    (dense, dense_1, dense_2, ...); clear_session() starts the numbering again."""
    base = to_snake_case(class_name)
    n = _name_uids[base]
    _name_uids[base] += 1
    return base if n == 0 else f"{base}_{n}"


def clear_session() -> None:
    """Restarts the default layer and model names (as keras.backend.clear_session())."""
    _name_uids.clear()


class SymbolicTensor:
    """The output of a layer in a graph under construction (no data)."""

    def __init__(self, layer: "Layer | None", inputs: list["SymbolicTensor"], shape=None,
                 name: str | None = None, owners: tuple = ()):
        self.layer = layer
        self.inputs = inputs
        self.shape = shape  # per-sample shape; known for inputs only
        self.name = name
        self.owners = owners  # the nested models this node came from, outermost first

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


_INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal")


def _kernel_options(layer, kernel_initializer, kernel_regularizer) -> None:
    from .regularizers import L2

    if kernel_initializer not in _INITIALIZERS:
        raise ValueError(f"{type(layer).__name__}: unknown kernel_initializer {kernel_initializer!r}; "
                         f"expected one of {_INITIALIZERS}")
    if kernel_regularizer is not None and not isinstance(kernel_regularizer, L2):
        raise TypeError(f"{type(layer).__name__}: kernel_regularizer must be tl.regularizers.l2(...) "
                        f"or None, got {kernel_regularizer!r}")
    layer.kernel_initializer = kernel_initializer
    layer.kernel_regularizer = kernel_regularizer


def _kernel_config(layer) -> dict:
    config = {"kernel_initializer": layer.kernel_initializer,
              "kernel_l2": layer.kernel_regularizer.l2 if layer.kernel_regularizer else 0.0}
    if getattr(layer, "weight_bits", 0):  # a quantization-aware layer (tl.optimize.quantize_model)
        config["weight_bits"] = layer.weight_bits
    if getattr(layer, "pruning", None) is not None:  # tl.optimize.prune_low_magnitude
        config["pruning"] = layer.pruning
    return config


class Layer:
    """Base of all layers: a name (Keras's default: dense, dense_1, ...), a configuration, a
    `trainable` flag and, for the first layer of a Sequential, an input shape.

    `trainable = False` freezes the layer as in Keras: fit does not update its weights, which
    count as non-trainable, and a frozen BatchNormalization runs in inference mode in fit. The
    flag takes effect at the model's next compile() (as Keras documents: compile again after
    changing it); weights lists and summary() show it at once."""

    kind = ""
    _state_arrays = 0  # weights that are never trainable (BatchNormalization's moving statistics)

    def __init__(self, input_shape=None, name: str | None = None):
        if input_shape is not None:
            input_shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
            if not input_shape or not all(isinstance(d, Integral) and d > 0 for d in input_shape):
                raise ValueError(f"input_shape must be a tuple of positive integers, got {input_shape!r}")
        self._input_shape_arg = input_shape
        self.name = name if name is not None else auto_name(type(self).__name__)
        self.trainable = True
        self._models: list = []  # weak references to the built models that hold this layer

    def get_config(self) -> dict:
        raise NotImplementedError

    def _owner(self, exclude=None):
        """A built model holding this layer (and its weights), other than `exclude`, or None."""
        for ref in self._models:
            model = ref()
            if model is not None and model is not exclude and model.built and model._holds(self):
                return model
        return None

    def _node_shapes(self):
        """(input shapes, output shape) of this layer's first node in its model, batch as None."""
        model = self._owner()
        if model is None:
            return None
        return model._layer_shapes(self)

    @property
    def input_shape(self):
        """(None, *shape) of the input (a list of them for layers with several inputs), as Keras 2's
        layer.input_shape; before the model is built, the input_shape given to the layer (or None)."""
        shapes = self._node_shapes()
        if shapes is None:
            return None if self._input_shape_arg is None else (None, *self._input_shape_arg)
        return shapes[0][0] if len(shapes[0]) == 1 else shapes[0]

    @property
    def output_shape(self):
        """(None, *shape) of the output, as Keras 2's layer.output_shape (None before the model is built)."""
        shapes = self._node_shapes()
        return None if shapes is None else shapes[1]

    @property
    def weights(self) -> list:
        """The layer's weights as NumPy arrays (copies; Keras returns variables), trainable first:
        get_weights()'s order. [] before the model is built, as in Keras."""
        return self.get_weights()

    @property
    def trainable_weights(self) -> list:
        """The weights fit updates: none for a frozen layer, never BatchNormalization's moving
        statistics."""
        w = self.get_weights()
        return w[:len(w) - self._state_arrays] if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        w = self.get_weights()
        return w[len(w) - self._state_arrays:] if self.trainable else w

    def get_weights(self) -> list:
        """This layer's weights as NumPy arrays in Keras's layouts (a copy); [] before its model
        is built, as in Keras."""
        model = self._owner()
        return [] if model is None else model._layer_weights(model._core, self)

    def set_weights(self, weights) -> None:
        """Replaces this layer's weights: the same number of arrays, each of the same shape."""
        model = self._owner()
        if model is None:
            raise ValueError(f"set_weights: layer {self.name!r} has no weights yet (build or fit its model first)")
        current = self.get_weights()
        weights = list(weights)
        if len(weights) != len(current):
            raise ValueError(f"set_weights: layer {self.name!r} has {len(current)} weight arrays, got {len(weights)}")
        for w, c in zip(weights, current):
            if np.shape(w) != c.shape:
                raise ValueError(f"set_weights: layer {self.name!r} expected an array of shape {c.shape}, "
                                 f"got {np.shape(w)}")
        model._core.set_weights(id(self), [np.ascontiguousarray(w, dtype=np.float32).ravel() for w in weights])

    def int8_bytes(self, weights) -> int:
        """Bytes of this layer's weights in an int8 model: int8 kernels, int32 biases; none for
        layers without weights (or folded away, as batch normalization)."""
        if not weights:
            return 0
        bias = int(weights[1].size) if len(weights) > 1 and getattr(self, "use_bias", False) else 0
        return int(weights[0].size) + 4 * bias

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
                 kernel_initializer: str = "glorot_uniform", kernel_regularizer=None,
                 input_shape=None, name: str | None = None):
        super().__init__(input_shape, name)
        _kernel_options(self, kernel_initializer, kernel_regularizer)
        if isinstance(units, bool) or not isinstance(units, Integral) or units <= 0:
            raise ValueError(f"Dense: units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = _activation(activation, "Dense")
        self.use_bias = bool(use_bias)

    def get_config(self) -> dict:
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias,
                **_kernel_config(self)}


class Activation(Layer):
    """An activation function as a layer (softmax over the last axis), as keras.layers.Activation."""

    kind = "Activation"

    def __init__(self, activation: str, name: str | None = None, input_shape=None):
        super().__init__(input_shape, name)
        self.activation = _activation(activation, "Activation")

    def get_config(self) -> dict:
        return {"activation": self.activation}


class ReLU(Activation):
    """max(x, 0), or min(max(x, 0), 6) with ``max_value=6`` (keras.layers.ReLU's two int8 forms)."""

    def __init__(self, max_value: float | None = None, name: str | None = None, input_shape=None):
        if max_value is not None and max_value != 6:
            raise ValueError(f"ReLU: max_value must be None or 6 (relu6), got {max_value!r}")
        super().__init__("relu" if max_value is None else "relu6", name, input_shape)


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


def _pair(v, what: str, layer: str) -> tuple:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(t) != 2 or not all(isinstance(d, Integral) and not isinstance(d, bool) and d > 0 for d in t):
        raise ValueError(f"{layer}: {what} must be a positive integer or a pair of them, got {v!r}")
    return (int(t[0]), int(t[1]))


def _padding(p, layer: str) -> str:
    if not isinstance(p, str) or p.lower() not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {p!r}")
    return p.lower()


class Conv2D(Layer):
    """2-D convolution over NHWC inputs, as keras.layers.Conv2D (kernel (kh, kw, in, filters))."""

    kind = "Conv2D"

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", kernel_regularizer=None,
                 input_shape=None, name: str | None = None):
        super().__init__(input_shape, name)
        _kernel_options(self, kernel_initializer, kernel_regularizer)
        if isinstance(filters, bool) or not isinstance(filters, Integral) or filters <= 0:
            raise ValueError(f"Conv2D: filters must be a positive integer, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = _pair(strides, "strides", "Conv2D")
        self.padding = _padding(padding, "Conv2D")
        self.activation = _activation(activation, "Conv2D")
        self.use_bias = bool(use_bias)

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": self.activation, "use_bias": self.use_bias, **_kernel_config(self)}


class DepthwiseConv2D(Layer):
    """Depthwise 2-D convolution, as keras.layers.DepthwiseConv2D (kernel (kh, kw, in, multiplier))."""

    kind = "DepthwiseConv2D"

    def __init__(self, kernel_size, strides=(1, 1), padding: str = "valid", depth_multiplier: int = 1,
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", kernel_regularizer=None,
                 input_shape=None, name: str | None = None):
        super().__init__(input_shape, name)
        _kernel_options(self, kernel_initializer, kernel_regularizer)
        if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, Integral) or depth_multiplier <= 0:
            raise ValueError(f"DepthwiseConv2D: depth_multiplier must be a positive integer, got {depth_multiplier!r}")
        self.kernel_size = _pair(kernel_size, "kernel_size", "DepthwiseConv2D")
        self.strides = _pair(strides, "strides", "DepthwiseConv2D")
        self.padding = _padding(padding, "DepthwiseConv2D")
        self.depth_multiplier = int(depth_multiplier)
        self.activation = _activation(activation, "DepthwiseConv2D")
        self.use_bias = bool(use_bias)

    def get_config(self) -> dict:
        return {"kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "depth_multiplier": self.depth_multiplier,
                "activation": self.activation, "use_bias": self.use_bias, **_kernel_config(self)}


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", input_shape=None,
                 name: str | None = None):
        super().__init__(input_shape, name)
        self.pool_size = _pair(pool_size, "pool_size", self.kind)
        self.strides = _pair(strides, "strides", self.kind) if strides is not None else self.pool_size
        self.padding = _padding(padding, self.kind)

    def get_config(self) -> dict:
        return {"pool_size": list(self.pool_size), "strides": list(self.strides), "padding": self.padding}


class MaxPooling2D(_Pooling2D):
    kind = "MaxPooling2D"


class AveragePooling2D(_Pooling2D):
    kind = "AveragePooling2D"


class GlobalAveragePooling2D(Layer):
    """(H, W, C) -> (C): the mean over the spatial axes."""

    kind = "GlobalAveragePooling2D"

    def get_config(self) -> dict:
        return {}


class BatchNormalization(Layer):
    """Normalizes over the last axis with batch statistics while training and moving statistics
    at inference, as keras.layers.BatchNormalization. Weights: gamma, beta, moving_mean,
    moving_variance."""

    kind = "BatchNormalization"
    _state_arrays = 2  # moving_mean, moving_variance

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, input_shape=None, name: str | None = None):
        super().__init__(input_shape, name)
        if not 0.0 <= float(momentum) < 1.0 or not float(epsilon) > 0.0:
            raise ValueError(f"BatchNormalization: expected 0 <= momentum < 1 and epsilon > 0, "
                             f"got momentum={momentum!r}, epsilon={epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)

    def get_config(self) -> dict:
        return {"momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale}

    def int8_bytes(self, weights) -> int:
        return 0  # folded into the preceding convolution or dense layer


class Dropout(Layer):
    """Inverted dropout while training, identity at inference. `seed` fixes the masks (by
    default they derive from the model's seed)."""

    kind = "Dropout"

    def __init__(self, rate: float, seed: int | None = None, input_shape=None, name: str | None = None):
        super().__init__(input_shape, name)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        if seed is not None and (not isinstance(seed, Integral) or seed < 0):
            raise ValueError(f"Dropout: seed must be a non-negative integer, got {seed!r}")
        self.rate, self.seed = float(rate), seed

    def get_config(self) -> dict:
        return {"rate": self.rate, "seed": self.seed}


class FakeQuant(Layer):
    """Fake quantization of an activation tensor for quantization-aware training: the forward
    pass rounds values to the int8 grid the converted model will use, the backward pass lets the
    gradient through inside the range (straight-through estimator). tl.optimize.quantize_model
    places them; tl.convert takes a quantization-aware model's int8 parameters from them.

    mode="moving_average": the range follows each training batch's min and max with an exponential
    moving average (``ema_decay``, tfmot's 0.999; the first batch sets it); quantization starts after
    ``quant_delay`` training steps. mode="fixed": ``scale`` and ``zero_point`` (softmax's 1/256,
    -128). mode="same_as": the quantization of the FakeQuant named ``source`` (an average pool's
    output keeps its input's). Weights (non-trainable): min, max, steps."""

    kind = "FakeQuant"
    _state_arrays = 3  # min, max, steps

    def __init__(self, mode: str = "moving_average", ema_decay: float = 0.999, quant_delay: int = 0,
                 scale: float | None = None, zero_point: int | None = None, source: str | None = None,
                 name: str | None = None, input_shape=None):
        super().__init__(input_shape, name)
        if mode not in ("moving_average", "fixed", "same_as"):
            raise ValueError(f"FakeQuant: mode must be 'moving_average', 'fixed' or 'same_as', got {mode!r}")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"FakeQuant: ema_decay must be in [0, 1), got {ema_decay!r}")
        if isinstance(quant_delay, bool) or not isinstance(quant_delay, Integral) or quant_delay < 0:
            raise ValueError(f"FakeQuant: quant_delay must be a non-negative integer, got {quant_delay!r}")
        if mode == "fixed" and not (scale is not None and float(scale) > 0 and zero_point is not None
                                    and -128 <= int(zero_point) <= 127):
            raise ValueError("FakeQuant: mode='fixed' needs scale > 0 and zero_point in [-128, 127], "
                             f"got scale={scale!r}, zero_point={zero_point!r}")
        if mode == "same_as" and not isinstance(source, str):
            raise ValueError(f"FakeQuant: mode='same_as' needs the source FakeQuant's name, got {source!r}")
        self.mode, self.ema_decay, self.quant_delay = mode, float(ema_decay), int(quant_delay)
        self.scale = None if scale is None else float(scale)
        self.zero_point = None if zero_point is None else int(zero_point)
        self.source = source

    def get_config(self) -> dict:
        if self.mode == "fixed":
            return {"mode": "fixed", "scale": self.scale, "zero_point": self.zero_point}
        if self.mode == "same_as":
            return {"mode": "same_as", "source": self.source}
        return {"mode": "moving_average", "ema_decay": self.ema_decay, "quant_delay": self.quant_delay}

    def int8_bytes(self, weights) -> int:
        return 0  # becomes the int8 tensors' scale and zero point


_KINDS = {cls.kind: cls for cls in (Dense, Activation, Flatten, Reshape, Add, Concatenate, Conv2D,
                                    DepthwiseConv2D, MaxPooling2D, AveragePooling2D,
                                    GlobalAveragePooling2D, BatchNormalization, Dropout, FakeQuant)}

_WEIGHT_BITS = (0, 8)  # float, int8 (quantization-aware training)


def from_config(kind: str, config: dict, name: str | None = None) -> Layer:
    """A layer from its kind and get_config() (as saved in model files)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    config = dict(config)
    if "kernel_l2" in config:
        from .regularizers import L2

        l2 = config.pop("kernel_l2")
        config["kernel_regularizer"] = L2(l2) if l2 else None
    bits = config.pop("weight_bits", 0)
    pruning = config.pop("pruning", None)
    if bits not in _WEIGHT_BITS or (bits and kind not in ("Dense", "Conv2D", "DepthwiseConv2D")):
        raise ValueError(f"layer {name!r} ({kind}): weight_bits must be one of {_WEIGHT_BITS} on "
                         f"Dense, Conv2D and DepthwiseConv2D, got {bits!r}")
    layer = _KINDS[kind](**config, name=name)
    if bits:
        layer.weight_bits = bits
    if pruning is not None:
        if kind not in ("Dense", "Conv2D", "DepthwiseConv2D"):
            raise ValueError(f"layer {name!r} ({kind}): only Dense, Conv2D and DepthwiseConv2D are pruned")
        from .optimize._prune import pruning_config

        layer.pruning = pruning_config(pruning)
        layer._state_arrays = 3  # pruning_mask, pruning_threshold, pruning_step
    return layer
