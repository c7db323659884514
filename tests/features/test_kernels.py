"""The stateful kernels against plain pandas references, and split invariance."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from features.kernels import ewma, extrema_state, lagged, rolling_max, value_at_lookback
from features.windows import RollingWindow

finite = st.floats(-1e3, 1e3, allow_nan=False)
with_nan = st.one_of(finite, st.just(np.nan))


def _sums_in_pieces(x: np.ndarray, w: int, cuts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    window = RollingWindow.new(w)
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(x)}), len(x)]
    parts = [window.sum1(x[a:b]) for a, b in itertools.pairwise(bounds)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float64, st.integers(1, 200), elements=with_nan),
    w=st.integers(1, 30),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_rolling_sums_match_pandas_and_any_split(x: np.ndarray, w: int, cuts: list[int]):
    s, q = _sums_in_pieces(x, w, cuts)
    whole_s, whole_q = _sums_in_pieces(x, w, [])
    assert np.array_equal(s, whole_s, equal_nan=True)
    assert np.array_equal(q, whole_q, equal_nan=True)
    ref = pd.Series(x).rolling(w, min_periods=w).sum().to_numpy()
    assert np.array_equal(np.isnan(s), np.isnan(ref))
    assert np.allclose(s, ref, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_rolling_moments_match_pandas_mean_and_std():
    x = np.cumsum(np.random.default_rng(1).normal(size=5000)) + 100
    mean, std = RollingWindow.new(50).mean_std(x)
    r = pd.Series(x).rolling(50)
    assert np.allclose(mean, r.mean(), rtol=1e-12, equal_nan=True)
    assert np.allclose(std, r.std(), rtol=1e-8, equal_nan=True)


def test_flat_window_has_exactly_zero_std():
    _, std = RollingWindow.new(10).mean_std(np.full(30, 4703.25))
    assert (std[9:] == 0.0).all()


def test_several_series_keep_their_own_windows():
    x = np.random.default_rng(3).normal(size=(500, 3))
    x[7, 1] = np.nan
    s, _ = RollingWindow.new(20, 3).sums(x[:, 0], x[:, 1], x[:, 2])
    for j in range(3):
        assert np.array_equal(s[j], RollingWindow.new(20).sum1(x[:, j])[0], equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.float64, st.integers(1, 200), elements=with_nan), w=st.integers(1, 30), cut=st.integers(0, 200))
def test_rolling_max_and_min_match_pandas_and_any_split(x: np.ndarray, w: int, cut: int):
    for sign, ref in (
        (1.0, pd.Series(x).rolling(w, min_periods=1).max()),
        (-1.0, pd.Series(x).rolling(w, min_periods=1).min()),
    ):
        expected = ref.to_numpy().copy()
        expected[: w - 1] = np.nan
        out = np.empty(len(x))
        idx, val, ist = extrema_state(w)
        c = min(cut, len(x))
        rolling_max(x[:c], sign, idx, val, ist, out[:c])
        rolling_max(x[c:], sign, idx, val, ist, out[c:])
        assert np.array_equal(out, expected, equal_nan=True)


def test_lag_and_ewma_match_pandas():
    x = np.random.default_rng(2).normal(size=300)
    x[[5, 50, 51]] = np.nan
    out = np.empty(300)
    lagged(x, np.full(3, np.nan), np.zeros(2, np.int64), out)
    assert np.array_equal(out, pd.Series(x).shift(3).to_numpy(), equal_nan=True)
    fst = np.zeros(2)
    ewma(x, 0.1, fst, out)
    ref = pd.Series(x).ewm(alpha=0.1, adjust=False, ignore_na=True).mean().to_numpy()
    assert np.allclose(out, ref, rtol=1e-12, equal_nan=True)


def test_value_at_lookback_finds_the_last_value_at_or_before_the_horizon():
    ts = np.array([0, 10, 20, 35, 40, 100], dtype=np.int64)
    x = np.arange(6, dtype=np.float64)
    out = np.empty(6)
    value_at_lookback(ts, x, 20, np.zeros(16, np.int64), np.zeros(16), np.zeros(2, np.int64), out)
    # t=20 -> ts<=0 -> x=0; t=35 -> ts<=15 -> x=1; t=40 -> ts<=20 -> x=2; t=100 -> ts<=80 -> x=4
    assert np.array_equal(out, [np.nan, np.nan, 0, 1, 2, 4], equal_nan=True)
