"""The TinyML "hello world" data set."""

from __future__ import annotations

import numpy as np


def sine(n: int = 1000, noise: float = 0.1, seed: int = 0):
    """The TinyML "hello world" data: x ~ U[0, 2pi), y = sin(x) + noise * N(0, 1).

    Returns float32 arrays x and y of shape (n, 1).
    """
    if int(n) <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 2.0 * np.pi, size=(int(n), 1))
    y = np.sin(x) + float(noise) * rng.standard_normal(size=(int(n), 1))
    return x.astype(np.float32), y.astype(np.float32)
