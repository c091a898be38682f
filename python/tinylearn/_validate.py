"""Checks on user input that turn bad arrays into clear exceptions."""

from __future__ import annotations

import numpy as np


def _shape_str(shape) -> str:
    return "(N, " + ", ".join(str(d) for d in shape) + ")" if shape else "(N, ...)"


def as_array(a, name: str) -> np.ndarray:
    """np.asarray(a), with a ragged nested sequence refused by a message naming `name`."""
    try:
        return np.asarray(a)
    except ValueError:
        raise ValueError(f"{name}: expected a rectangular array, got a ragged sequence (its rows "
                         "differ in length)") from None


def as_float_array(a, name: str, shape: tuple | None = None) -> np.ndarray:
    """`a` as a C-contiguous float32 array of samples of `shape` (any when None).

    A 1-D array is taken as N samples of one value when `shape` is (1,)."""
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    arr = as_array(a, name)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if shape is not None:
        shape = tuple(shape)
        if arr.ndim == 1 and shape == (1,):
            arr = arr.reshape(-1, 1)
        if arr.shape[1:] != shape:
            raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got shape {arr.shape}")
    elif arr.ndim < 2:
        raise ValueError(f"{name}: expected an array of samples (N, ...), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got an empty array {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: contains NaN or infinity (after conversion to float32)")
    return out
