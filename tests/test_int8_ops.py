"""Random models built in tinylearn, converted by tl.convert, against LiteRT's reference kernels.

Each model (tests/random_models.py) is quantized by tinylearn, exported with q.to_tflite(), and
run by LiteRT with its reference kernels (BUILTIN_REF); every output element must be identical
to what tinylearn's freestanding core computes on the host.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinylearn as tl
from random_models import random_model
from tflite_oracle import run_litert

SEEDS = range(120)


def _ops(q) -> set:
    return {op.op for op in q.graph.ops}


@pytest.mark.parametrize("seed", SEEDS)
def test_random_model_matches_litert_reference(seed):
    model, calibration = random_model(seed)
    q = tl.convert(model, calibration)
    rng = np.random.default_rng(1000 + seed)
    x = rng.integers(-128, 128, (8,) + q.input_shape[1:], dtype=np.int8)
    ours = q.invoke(x)
    theirs = run_litert(q.to_tflite(), x).reshape(ours.shape)
    np.testing.assert_array_equal(ours, theirs)


def test_random_models_cover_every_operator():
    seen = set()
    for seed in SEEDS:
        model, calibration = random_model(seed)
        seen |= _ops(tl.convert(model, calibration))
    assert seen >= {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "ADD",
                    "CONCATENATION", "SOFTMAX", "RESHAPE", "RELU", "RELU6", "FULLY_CONNECTED", "QUANTIZE"}


def test_float_and_int8_agree_on_random_models():
    """Quantization error stays small relative to the output range (a sanity bound)."""
    for seed in range(20):
        model, calibration = random_model(seed)
        q = tl.convert(model, calibration)
        y = model.predict(calibration)
        yq = q.predict(calibration)
        span = float(y.max() - y.min()) or 1.0
        assert np.max(np.abs(y - yq)) <= 0.25 * span, seed


def test_summary_lists_macs_and_bytes_per_operator():
    L = tl.layers
    model = tl.Sequential([L.Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                           L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                           L.Dense(64, activation="relu"), L.Dense(10)])
    model.build(seed=0)
    q = tl.convert(model, np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype(np.float32))
    lines = []
    assert q.summary(print_fn=lines.append) is None  # printed once, not also returned (Jupyter)
    assert len(lines) == 1
    text = lines[0]
    rows = [line.split() for line in text.splitlines()[2:9]]
    # op, MACs (output elements x window size), weight bytes (int8 weights + int32 biases), output bytes
    expected = [("CONV_2D", 26 * 26 * 16 * 9, 16 * 9 + 4 * 16, 26 * 26 * 16),
                ("MAX_POOL_2D", 0, 0, 13 * 13 * 16),
                ("CONV_2D", 11 * 11 * 32 * 9 * 16, 32 * 9 * 16 + 4 * 32, 11 * 11 * 32),
                ("MAX_POOL_2D", 0, 0, 5 * 5 * 32),
                ("RESHAPE", 0, 0, 800),
                ("FULLY_CONNECTED", 800 * 64, 800 * 64 + 4 * 64, 64),
                ("FULLY_CONNECTED", 64 * 10, 64 * 10 + 4 * 10, 10)]
    for row, (op, macs, weights, acts) in zip(rows, expected):
        assert row[1] == op
        assert [int(v.replace(",", "")) for v in row[-3:]] == [macs, weights, acts], row
    total = sum(e[1] for e in expected)
    assert f"MACs per inference: {total:,}" in text
    assert f"arena: {q.arena_bytes:,} bytes" in text


def test_calibration_covers_every_sample_of_a_large_set():
    """Ranges come from all representative samples (calibrated in batches), not the first few."""
    model, calibration = random_model(3)
    rng = np.random.default_rng(5)
    big = rng.uniform(-1, 1, (700,) + calibration.shape[1:]).astype(np.float32)
    big[-1].flat[0] = 9.0  # the largest input, in the last sample
    q = tl.convert(model, big)
    # The input's int8 range spans [min(x, 0), max(x, 0)] = [-1, 9]: scale 10 / 255.
    assert q.input_scale == pytest.approx(float(big.max() - min(big.min(), 0)) / 255, rel=1e-6)
    # The same data in another order gives the same model.
    assert tl.convert(model, big[::-1].copy()).to_bytes() == q.to_bytes()
