"""Compiled kernels for per-row sequential work, each beside its pure reference.

The kernels are compiled with numba (``cache=True``: the first call in a fresh environment compiles, about a
second, later processes load the cache). Each has a reference implementation in plain pandas/numpy that a test
proves equal, and that the pipeline uses when ``SENTINEL_NO_JIT=1`` is set (a clear log line says so).
"""

from __future__ import annotations

import functools
import logging
import os

import numba
import numpy as np
import pandas as pd

from ingest.records import F64

log = logging.getLogger(__name__)


@numba.njit(cache=True, nogil=True)
def _trailing_median_jit(values: F64, window: int, min_periods: int) -> F64:  # pragma: no cover - compiled
    n = len(values)
    out = np.empty(n)
    buf = np.empty(window)  # the last `window` values, kept sorted
    count = 0
    for i in range(n):
        if count >= min_periods:
            mid = count // 2
            out[i] = buf[mid] if count % 2 == 1 else 0.5 * (buf[mid - 1] + buf[mid])
        else:
            out[i] = np.nan
        x = values[i]
        if count == window:
            # drop the value leaving the window, shifting the larger ones down
            j = np.searchsorted(buf[:count], values[i - window])
            for k in range(j, count - 1):
                buf[k] = buf[k + 1]
            count -= 1
        # insert the new value, shifting the larger ones up
        k = count
        while k > 0 and buf[k - 1] > x:
            buf[k] = buf[k - 1]
            k -= 1
        buf[k] = x
        count += 1
    return out


def trailing_median_reference(values: F64, window: int, min_periods: int) -> F64:
    """Median of the ``window`` values before each position (NaN with fewer than ``min_periods``)."""
    med = pd.Series(values).rolling(window, min_periods=min_periods).median().shift(1)
    return med.to_numpy(dtype=np.float64)


def trailing_median(values: F64, window: int, min_periods: int) -> F64:
    """Median of the ``window`` values before each position, excluding the value itself.

    Parameters
    ----------
    values : ndarray of float64
        Finite values in arrival order.
    window : int
        How many previous values the median covers.
    min_periods : int
        Fewer previous values than this gives NaN.

    Examples
    --------
    >>> trailing_median(np.array([1.0, 2.0, 100.0, 3.0]), window=3, min_periods=2).tolist()
    [nan, nan, 1.5, 2.0]
    """
    if window < 1 or min_periods < 1:
        raise ValueError(f"window={window!r}, min_periods={min_periods!r}: both must be >= 1")
    if _jit_disabled():
        return trailing_median_reference(values, window, min_periods)
    return np.asarray(_trailing_median_jit(np.ascontiguousarray(values, dtype=np.float64), window, min_periods))


@functools.cache
def _say_jit_is_off() -> None:
    log.warning("SENTINEL_NO_JIT is set: compiled kernels are off, using the pure-Python references")


def _jit_disabled() -> bool:
    off = os.environ.get("SENTINEL_NO_JIT", "") not in ("", "0")
    if off:
        _say_jit_is_off()
    return off
