"""Random int8 models of every operator: the firmware on the emulated STM32F405 against the host.

Models come from tests/random_models.py (the same ones test_int8_ops.py checks against LiteRT's
reference kernels); a few seeds are picked so that together they use every operator the
converter emits. Each is converted by tl.convert, built into firmware (the core compiled with the
model's operators only), run on QEMU, and must print exactly the host's int8 outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinylearn as tl
from random_models import random_model

ALL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "ADD", "CONCATENATION",
           "SOFTMAX", "RESHAPE", "RELU", "RELU6", "FULLY_CONNECTED", "QUANTIZE"}


def covering_seeds(limit: int = 200) -> list[int]:
    """Seeds whose models together use every operator (greedy: most new operators first)."""
    ops_of = {}
    for seed in range(limit):
        model, calibration = random_model(seed)
        ops_of[seed] = {op.op for op in tl.convert(model, calibration).graph.ops}
    chosen, covered = [], set()
    while covered != ALL_OPS:
        best = max(ops_of, key=lambda s: len(ops_of[s] - covered))
        if not ops_of[best] - covered:
            raise AssertionError(f"random models never use {sorted(ALL_OPS - covered)}")
        chosen.append(best)
        covered |= ops_of.pop(best)
    return chosen


SEEDS = covering_seeds()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_firmware_equals_host_on_random_model(seed, tmp_path):
    model, calibration = random_model(seed)
    q = tl.convert(model, calibration)
    fw = tl.deploy.build_firmware(q, out_dir=tmp_path)
    rng = np.random.default_rng(7000 + seed)
    x = rng.integers(-128, 128, (16,) + q.input_shape[1:], dtype=np.int8)
    y_dev, icount = fw.run(x)
    np.testing.assert_array_equal(y_dev, q.invoke(x))
    assert (icount > 0).all()
    # The firmware holds only the operators this model uses.
    assert fw.flash_bytes < 64 * 1024


def test_covering_seeds_are_few():
    assert len(SEEDS) <= 8
