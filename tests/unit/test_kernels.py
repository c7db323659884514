"""Compiled kernels agree with their pure references."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ingest.kernels import trailing_median, trailing_median_reference


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(np.float64, st.integers(0, 300), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    window=st.integers(1, 60),
    min_periods=st.integers(1, 60),
)
def test_trailing_median_kernel_equals_reference(values: np.ndarray, window: int, min_periods: int):
    min_periods = min(min_periods, window)
    fast = trailing_median(values, window, min_periods)
    ref = trailing_median_reference(values, window, min_periods)
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    # pandas' skiplist median and the sorted-window median average the same two middle values
    assert np.allclose(fast, ref, rtol=1e-12, atol=0, equal_nan=True)


def test_trailing_median_falls_back_to_reference_when_jit_is_off(monkeypatch):
    monkeypatch.setenv("SENTINEL_NO_JIT", "1")
    x = np.array([3.0, 1.0, 2.0, 10.0, 4.0])
    assert np.array_equal(trailing_median(x, 3, 1), trailing_median_reference(x, 3, 1), equal_nan=True)
