"""Quantization-aware training: tl.optimize.quantize_model (tfmot's name and behaviour)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .. import layers as L
from ..errors import UnsupportedModelError
from ..layers import Input, SymbolicTensor

__all__ = ["is_quantization_aware", "quantize_model"]

# TFLite's int8 softmax output: scale 1/256, zero point -128 (the spec fixes them).
_SOFTMAX_SCALE, _SOFTMAX_ZERO_POINT = 1.0 / 256.0, -128
_WEIGHTED = (L.Dense, L.Conv2D, L.DepthwiseConv2D)


def is_quantization_aware(model) -> bool:
    """Whether `model` holds FakeQuant layers (made by quantize_model)."""
    return any(isinstance(layer, L.FakeQuant) for layer in model._leaves())


def quantize_model(model, *, ema_decay: float = 0.999, quant_delay: int = 0):
    """A quantization-aware copy of `model` (tfmot.quantization.keras.quantize_model): a
    trainable tl.Model whose forward pass simulates the int8 graph that tl.convert makes of it.

        qat = tl.optimize.quantize_model(model)     # from a trained float model
        qat.compile(optimizer=tl.optimizers.Adam(1e-4), loss=..., metrics=["accuracy"])
        qat.fit(x, y, epochs=2, seed=1)
        q = tl.convert(qat)                          # no representative data: learned ranges

    What it simulates, as the converter lowers the model:
      - each BatchNormalization is folded into the Conv2D, DepthwiseConv2D or Dense before it
        (kernel * gamma / sqrt(var + eps), bias (b - mean) * gamma / sqrt(var + eps) + beta, with
        the moving statistics: the statistics are frozen during QAT, gamma and beta live on in the
        folded weights), and a ReLU or ReLU6 after it is fused into it;
      - kernels are fake-quantized as tl.convert quantizes them: symmetric int8, per output
        channel for convolutions, per tensor for Dense (FakeQuant-free: `weight_bits=8` on the
        layer, straight-through gradients);
      - a FakeQuant layer at every tensor of the int8 graph: the input, after each fused
        activation, Add, Concatenate, GlobalAveragePooling2D, standalone ReLU; a Dense with
        softmax becomes Dense -> FakeQuant (logits) -> softmax -> FakeQuant fixed at 1/256, -128;
        an AveragePooling2D's output keeps its input's quantization; max pooling, Flatten,
        Reshape and Dropout need none. Activation ranges are exponential moving averages of the
        training batches' min and max (``ema_decay``), starting after ``quant_delay`` steps.

    Layers are renamed "quant_<name>" (as tfmot). The copy must be compiled before fit. Layers
    with no int8 form (sigmoid, tanh, a BatchNormalization that follows no foldable layer)
    raise UnsupportedModelError naming the layer. The returned model's weights start as the
    (folded) weights of `model`, which is left unchanged.
    """
    from ..models import Model

    if not isinstance(model, Model):
        raise TypeError(f"quantize_model: expected a tinylearn model, got {type(model).__name__}")
    if not 0.0 <= float(ema_decay) < 1.0:
        raise ValueError(f"quantize_model: ema_decay must be in [0, 1), got {ema_decay!r}")
    if isinstance(quant_delay, bool) or not isinstance(quant_delay, (int, np.integer)) or quant_delay < 0:
        raise ValueError(f"quantize_model: quant_delay must be a non-negative integer, got {quant_delay!r}")
    if not model._graph_ready():
        raise ValueError("quantize_model: the model's input shape is unknown; give the first layer "
                         "input_shape (or build the model) first")
    if not model.built:
        model.build()
    if is_quantization_aware(model):
        raise ValueError(f"quantize_model: model {model.name!r} is already quantization-aware")
    return _Transform(model, float(ema_decay), int(quant_delay)).run()


class _Transform:
    def __init__(self, model, ema_decay: float, quant_delay: int):
        self.model = model
        self.ema = {"ema_decay": ema_decay, "quant_delay": quant_delay}
        order = model._order
        self.consumers: dict[int, list] = {id(t): [] for t in order}
        for t in order:
            for p in t.inputs:
                self.consumers[id(p)].append(t)
        uses = Counter(id(t.layer) for t in order if t.layer is not None)
        for t in order:
            if isinstance(t.layer, _WEIGHTED + (L.BatchNormalization,)) and uses[id(t.layer)] > 1:
                raise UnsupportedModelError(
                    f"quantize_model: layer {t.layer.name!r} ({t.layer.kind}) is called "
                    f"{uses[id(t.layer)]} times; quantization-aware training needs each layer "
                    "with weights called once")
        self.names: Counter = Counter()
        self.value: dict[int, SymbolicTensor] = {}  # id(original node) -> new tensor
        self.fq_of: dict[int, L.FakeQuant] = {}     # id(new tensor) -> the FakeQuant that made it
        self.absorbed: set[int] = set()
        self.weights: list = []    # (new layer, weights) to set once built
        self.trainable: list = []  # (new layer, original layer)

    def name(self, base: str) -> str:
        base = f"quant_{base}"
        n = self.names[base]
        self.names[base] += 1
        return base if n == 0 else f"{base}_{n}"

    def sole_consumer(self, t):
        if t is self.model._output:
            return None
        c = self.consumers[id(t)]
        return c[0] if len(c) == 1 else None

    def fake_quant(self, x: SymbolicTensor, base: str, **config) -> SymbolicTensor:
        fq = L.FakeQuant(**(config or {"mode": "moving_average", **self.ema}),
                         name=self.name(f"{base}_fq" if base else "input_fq"))
        out = fq(x)
        self.fq_of[id(out)] = fq
        return out

    def source_fq(self, t: SymbolicTensor):
        """The FakeQuant whose grid the new tensor `t` is on (through max pooling, reshapes)."""
        while id(t) not in self.fq_of:
            if t.layer is None or not isinstance(t.layer, (L.MaxPooling2D, L.Flatten, L.Reshape,
                                                           L.Dropout, L.AveragePooling2D)):
                return None
            t = t.inputs[0]
        return self.fq_of[id(t)]

    def run(self):
        from ..models import Model

        m = self.model
        for t in m._order:
            if id(t) in self.absorbed:
                continue
            if t.layer is None:
                x = Input(t.shape)
                self.value[id(t)] = self.fake_quant(x, "")
                continue
            self.node(t)
        out = self.value[id(m._output)]
        qat = Model(self.value[id(m._input)].inputs[0], out, name=m.name)
        qat.build()
        trains = m._trainable_map()
        for layer, w in self.weights:
            layer.set_weights(w)
        for new, old in self.trainable:  # a frozen layer stays frozen (its model's flag included)
            new.trainable = trains[id(old)]
        return qat

    def fail(self, layer, why: str):
        raise UnsupportedModelError(f"quantize_model: layer {layer.name!r} ({layer.kind}) {why}")

    def node(self, t) -> None:
        layer = t.layer
        ins = [self.value[id(p)] for p in t.inputs]
        if isinstance(layer, L.FakeQuant):
            self.fail(layer, "is already a fake quantizer")
        if isinstance(layer, _WEIGHTED):
            return self.weighted(t, ins[0])
        if isinstance(layer, L.BatchNormalization):
            self.fail(layer, "does not directly follow a Conv2D, DepthwiseConv2D or Dense layer "
                      "(with no activation), so it cannot be folded into one; int8 models have no "
                      "separate batch normalization")
        if isinstance(layer, L.Activation):
            return self.activation(t, layer.activation, ins[0], layer.name, layer)
        if isinstance(layer, (L.Add, L.Concatenate)):
            new = type(layer)(name=self.name(layer.name))
            y = new(ins)
            end = t
            nxt = self.sole_consumer(t)
            if isinstance(layer, L.Add) and isinstance(getattr(nxt, "layer", None), L.Activation) \
                    and nxt.layer.activation in ("relu", "relu6"):
                y = L.Activation(nxt.layer.activation, name=self.name(nxt.layer.name))(y)
                self.absorbed.add(id(nxt))
                end = nxt
            self.value[id(end)] = self.value[id(t)] = self.fake_quant(y, layer.name)
            return None
        if isinstance(layer, L.GlobalAveragePooling2D):
            y = L.GlobalAveragePooling2D(name=self.name(layer.name))(ins[0])
            self.value[id(t)] = self.fake_quant(y, layer.name)
            return None
        if isinstance(layer, L.AveragePooling2D):
            new = L.AveragePooling2D(layer.pool_size, layer.strides, layer.padding, name=self.name(layer.name))
            y = new(ins[0])
            src = self.source_fq(ins[0])
            if src is None:
                self.fail(layer, "does not follow a quantized tensor")
            self.value[id(t)] = self.fake_quant(y, layer.name, mode="same_as", source=src.name)
            self.fq_of[id(self.value[id(t)])] = src
            return None
        if isinstance(layer, (L.MaxPooling2D, L.Flatten, L.Reshape, L.Dropout)):
            config = layer.get_config()
            new = L.from_config(layer.kind, config, self.name(layer.name))
            self.value[id(t)] = new(ins[0])
            return None
        self.fail(layer, "has no int8 form")
        return None

    def activation(self, t, act: str, x, name: str, layer) -> None:
        if act == "linear":
            self.value[id(t)] = x
            return
        if act in ("relu", "relu6"):
            y = L.Activation(act, name=self.name(name))(x)
            self.value[id(t)] = self.fake_quant(y, name)
            return
        if act == "softmax":
            y = L.Activation("softmax", name=self.name(name))(x)
            self.value[id(t)] = self.fake_quant(y, name, mode="fixed", scale=_SOFTMAX_SCALE,
                                                zero_point=_SOFTMAX_ZERO_POINT)
            return
        self.fail(layer, f"uses activation {act!r}, which has no int8 kernel (int8 models support "
                  "relu, relu6 and softmax)")

    def weighted(self, t, x) -> None:
        layer = t.layer
        kernel, *rest = layer.get_weights()
        bias = rest[0] if layer.use_bias else None
        act = layer.activation
        if act not in ("linear", "relu", "relu6", "softmax") or (
                act == "softmax" and not isinstance(layer, L.Dense)):
            self.fail(layer, f"uses activation {act!r}, which has no int8 kernel (int8 models "
                      "support relu, relu6, and softmax on Dense)")
        end = t
        nxt = self.sole_consumer(end)
        if act == "linear" and isinstance(getattr(nxt, "layer", None), L.BatchNormalization):
            kernel, bias = _fold(layer, kernel, bias, nxt.layer)
            self.absorbed.add(id(nxt))
            end = nxt
            nxt = self.sole_consumer(end)
        if act == "linear" and isinstance(getattr(nxt, "layer", None), L.Activation) \
                and nxt.layer.activation in ("relu", "relu6"):
            act = nxt.layer.activation
            self.absorbed.add(id(nxt))
            end = nxt
        config = layer.get_config()
        config["activation"] = "linear" if act == "softmax" else act
        config["use_bias"] = bias is not None
        new = L.from_config(layer.kind, config, self.name(layer.name))
        new.weight_bits = 8
        self.weights.append((new, [kernel] + ([bias] if bias is not None else [])))
        self.trainable.append((new, layer))
        y = self.fake_quant(new(x), layer.name)
        if act == "softmax":  # Dense -> logits -> SOFTMAX, as the converter lowers it
            y = self.fake_quant(L.Activation("softmax", name=self.name(f"{layer.name}_softmax"))(y),
                                f"{layer.name}_softmax", mode="fixed", scale=_SOFTMAX_SCALE,
                                zero_point=_SOFTMAX_ZERO_POINT)
        self.value[id(end)] = self.value[id(t)] = y


def _fold(layer, kernel, bias, bn):
    """(kernel, bias) with the BatchNormalization `bn` folded in (its moving statistics)."""
    w = bn.get_weights()
    gamma = w.pop(0) if bn.scale else None
    beta = w.pop(0) if bn.center else None
    mean, var = w
    k = (gamma if gamma is not None else 1.0) / np.sqrt(var + np.float32(bn.epsilon))
    k = k.astype(np.float32)
    if isinstance(layer, L.DepthwiseConv2D):  # (KH, KW, C, M): output channel c * M + m
        kernel = kernel * k.reshape(kernel.shape[2], kernel.shape[3])
    else:  # Dense (in, units), Conv2D (KH, KW, C, OC): the output channel is the last axis
        kernel = kernel * k
    b = bias if bias is not None else np.zeros_like(mean)
    b = (b - mean) * k + (beta if beta is not None else 0.0)
    return kernel.astype(np.float32), b.astype(np.float32)
