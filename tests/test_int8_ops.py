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
