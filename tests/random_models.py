"""Seeded random tinylearn models covering every operator of the int8 core (test helper).

Each model is a small graph on an NHWC input: a few random blocks (convolution with random
kernel, stride, padding and filters, optionally followed by batch normalization and a ReLU or
ReLU6 layer; depthwise convolution with a depth multiplier; max or average pooling; a residual
Add; a Concatenate of two branches; standalone ReLU/ReLU6) and a random head (global average
pooling or Flatten/Reshape, then Dense, optionally softmax). Weights, batch-normalization
statistics and the calibration data are random too, so that every requantization path is used.
"""

from __future__ import annotations

import numpy as np

import tinylearn as tl

L = tl.layers


def _act(rng) -> str:
    return ["linear", "relu", "relu6"][rng.integers(3)]


def _same_or_valid(rng, size: int, k: int) -> str:
    return "same" if size < k or rng.random() < 0.5 else "valid"


def _out(size: int, k: int, s: int, pad: str) -> int:
    return -(-size // s) if pad == "same" else (size - k) // s + 1


def random_model(seed: int) -> tuple[tl.Model, np.ndarray]:
    """A random built model and random calibration data (64 samples)."""
    rng = np.random.default_rng(seed)
    h, w, c = int(rng.integers(4, 13)), int(rng.integers(4, 13)), int(rng.integers(1, 5))
    inp = tl.Input(shape=(h, w, c))
    x = inp
    shape = [h, w, c]

    def conv(x, shape, filters=None, stride=None):
        k = int(rng.integers(1, 4))
        s = int(stride or rng.integers(1, 3))
        pad = _same_or_valid(rng, min(shape[:2]), k)
        f = int(filters or rng.integers(1, 9))
        bn = rng.random() < 0.4
        y = L.Conv2D(f, k, strides=s, padding=pad, activation="linear" if bn else _act(rng))(x)
        if bn:
            y = L.BatchNormalization()(y)
            a = _act(rng)
            if a != "linear":
                y = L.ReLU(max_value=6)(y) if a == "relu6" else L.ReLU()(y)
        return y, [_out(shape[0], k, s, pad), _out(shape[1], k, s, pad), f]

    for _ in range(int(rng.integers(1, 4))):
        kind = rng.choice(["conv", "depthwise", "pool", "add", "concat", "relu"])
        if kind == "conv":
            x, shape = conv(x, shape)
        elif kind == "depthwise":
            k, s, m = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
            pad = _same_or_valid(rng, min(shape[:2]), k)
            x = L.DepthwiseConv2D(k, strides=s, padding=pad, depth_multiplier=m, activation=_act(rng))(x)
            shape = [_out(shape[0], k, s, pad), _out(shape[1], k, s, pad), shape[2] * m]
        elif kind == "pool" and min(shape[:2]) >= 2:
            p, s = int(rng.integers(2, 4)), int(rng.integers(1, 3))
            pad = _same_or_valid(rng, min(shape[:2]), p)
            pool = L.MaxPooling2D if rng.random() < 0.5 else L.AveragePooling2D
            x = pool(pool_size=p, strides=s, padding=pad)(x)
            shape = [_out(shape[0], p, s, pad), _out(shape[1], p, s, pad), shape[2]]
        elif kind == "add":
            y = L.Conv2D(shape[2], 3, padding="same", activation=_act(rng))(x)
            x = L.Add()([x, y])
            if rng.random() < 0.5:
                x = L.ReLU()(x)
        elif kind == "concat":
            f = int(rng.integers(1, 5))
            y = L.Conv2D(f, 1, activation=_act(rng))(x)
            if rng.random() < 0.5:
                x, shape = L.Concatenate()([x, y]), shape[:2] + [shape[2] + f]
            else:
                x, shape = L.Concatenate()([y, x, y]), shape[:2] + [shape[2] + 2 * f]
        else:
            x = L.ReLU(max_value=6)(x) if rng.random() < 0.5 else L.ReLU()(x)
    if rng.random() < 0.5:
        x = L.GlobalAveragePooling2D()(x)
    else:
        x = L.Flatten()(x)
    units = int(rng.integers(2, 11))
    out = L.Dense(units, activation="softmax" if rng.random() < 0.4 else _act(rng))(x)
    model = tl.Model(inp, out)
    model.build(seed=seed)
    # Random batch-normalization statistics and biases (the initial ones are 1, 0 and 0).
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = ws
            ws = [rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                  rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape)]
        elif len(ws) == 2:
            ws = [ws[0], rng.normal(0, 0.1, ws[1].shape)]
        layer.set_weights([np.asarray(w, np.float32) for w in ws])
    calibration = rng.uniform(-1, 1, (64, h, w, c)).astype(np.float32)
    return model, calibration
