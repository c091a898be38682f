"""tl.from_tflite on models made by TensorFlow's converter, against LiteRT's reference kernels.

The fixtures (tests/fixtures/tflite, made by tests/fixtures/make_tflite_fixtures.py with
TensorFlow) are random Keras models of every supported layer and the four MLPerf Tiny reference
architectures, converted to full int8 by TFLiteConverter; expected.npz holds LiteRT's outputs
with its reference kernels (BUILTIN_REF). tinylearn's core must reproduce every element, and so
must LiteRT again on the .tflite tinylearn exports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinylearn as tl
from tflite_oracle import run_litert

FIXTURES = Path(__file__).parent / "fixtures" / "tflite"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
NAMES = sorted(MANIFEST["models"])


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def test_at_least_200_models_cover_every_operator():
    assert len(NAMES) >= 200
    ops = set()
    for name in NAMES:
        ops |= set(MANIFEST["models"][name]["ops"])
    assert ops >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D",
                   "MEAN", "ADD", "CONCATENATION", "SOFTMAX", "RESHAPE", "RELU", "RELU6"}


@pytest.mark.parametrize("name", NAMES)
def test_from_tflite_is_bit_exact_with_litert_reference(name, expected):
    x, y = expected[f"{name}/x"], expected[f"{name}/y"]
    q = tl.from_tflite(FIXTURES / f"{name}.tflite")
    np.testing.assert_array_equal(q.invoke(x).reshape(y.shape), y)
    # ... and LiteRT on the model tinylearn writes back gives the same again.
    np.testing.assert_array_equal(run_litert(q.to_tflite(), x).reshape(y.shape), y)


MLPERF = [n for n in NAMES if n.startswith("mlperf_")]


@pytest.mark.parametrize("name", MLPERF)
def test_single_samples_split_over_cores_are_bit_exact(name, expected):
    """One sample at a time, the host core splits each large operator over the cores (with outputs
    that trail their input written to a staging buffer first); a batch runs whole samples on
    separate cores instead. Both give LiteRT's reference outputs."""
    assert len(MLPERF) == 4
    x, y = expected[f"{name}/x"], expected[f"{name}/y"]
    q = tl.from_tflite(FIXTURES / f"{name}.tflite")
    y = y.reshape(len(x), -1)
    for i in range(len(x)):
        np.testing.assert_array_equal(q.invoke(x[i:i + 1]).reshape(-1), y[i])


@pytest.mark.parametrize("name", ["mlperf_ad_autoencoder", "mlperf_kws_dscnn"])
def test_batches_run_operator_by_operator_over_chunks_of_samples(name):
    """A batch runs operator by operator over chunks of up to 8 samples per core (each fully
    connected operator reading its weights once per chunk); 21 random samples make two parts with
    partial chunks. Every output equals LiteRT's reference kernels, sample by sample."""
    q = tl.from_tflite(FIXTURES / f"{name}.tflite")
    x = np.random.default_rng(21).integers(-128, 128, (21,) + tuple(q.input_shape[1:]), dtype=np.int8)
    y = run_litert(q.to_tflite(), x)
    np.testing.assert_array_equal(q.invoke(x).reshape(y.shape), y)
