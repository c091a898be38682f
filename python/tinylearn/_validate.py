"""Checks on user input that turn bad arrays into clear exceptions."""

from __future__ import annotations

import numpy as np


def as_float_matrix(a, name: str, features: int | None = None) -> np.ndarray:
    """`a` as a C-contiguous float32 (N, features) array; 1-D accepted when features == 1."""
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    arr = np.asarray(a)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1 and features == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        want = f"(N, {features})" if features is not None else "(N, features)"
        raise ValueError(f"{name}: expected shape {want}, got shape {arr.shape}")
    if features is not None and arr.shape[1] != features:
        raise ValueError(f"{name}: expected shape (N, {features}), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got an empty array {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: contains NaN or infinity (after conversion to float32)")
    return out
