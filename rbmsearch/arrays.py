"""Numpy arrays in and out of the model: the checks every numeric function enforces, and batching.

A bad array raises ValueError saying what was expected and what was found, before any
TensorFlow op or long computation starts. `pad_batch` is the one batch layout the model reads.
"""

from __future__ import annotations

import numpy as np

__all__ = ["binary_array", "check_positive_int", "float_array", "pad_batch"]


def check_positive_int(name: str, value) -> None:
    """Raise ValueError unless `value` is an int >= 1 (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, but got {value!r}.")


def float_array(x: object, name: str, shape_doc: str, ndim: int, dtype: type) -> np.ndarray:
    """Return `x` as a finite `dtype` array with `ndim` dimensions, or raise ValueError."""
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(
            f"Expected {name} to be a {ndim}-D array of shape {shape_doc}, "
            f"but got an array of shape {arr.shape}."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"Expected {name} to be a numeric array, but got dtype {arr.dtype}.")
    arr = arr.astype(dtype, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Expected {name} to contain only finite values, but found {int(bad.sum())} "
            f"NaN/inf entries (first at index {first}). Non-finite parameters usually "
            "mean training diverged; fix the run instead of evaluating it."
        )
    return arr


def binary_array(x: object, name: str, shape_doc: str, ndim: int) -> np.ndarray:
    """Return `x` as a bool array with `ndim` dimensions; values must be 0/1 or bool."""
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(
            f"Expected {name} to be a {ndim}-D binary array of shape {shape_doc}, "
            f"but got an array of shape {arr.shape}."
        )
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"Expected {name} to be a bool or 0/1 array, but got dtype {arr.dtype}.")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Expected {name} to contain only 0 and 1 (a binary piano roll), but found "
            f"{int(bad.sum())} other values, e.g. {arr[first].item()!r} at index {first}."
        )
    return arr != 0


def pad_batch(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sequences (T_i, n_v) -> v (B, T_max, n_v) float32 zero-padded after, mask (B, T_max) float32."""
    t_max = max(len(s) for s in seqs)
    v = np.zeros((len(seqs), t_max, seqs[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(seqs), t_max), dtype=np.float32)
    for i, s in enumerate(seqs):
        v[i, : len(s)] = s
        mask[i, : len(s)] = 1.0
    return v, mask
