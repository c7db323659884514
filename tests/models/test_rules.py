"""The bar rules: the numba kernel against its pure reference, and planted events found."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import Observations
from models.rules import PriceJump, StaleFeed, VolumeBurst, ew_zscore, ew_zscore_reference

MINUTE = 60 * 10**9


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=0, max_size=80),
    st.floats(0.01, 0.99),
    st.integers(1, 10),
    st.booleans(),
)
def test_ew_zscore_kernel_equals_its_pure_reference(values, alpha, min_periods, center):
    x = np.array(values, dtype=np.float64)
    got = ew_zscore(x, np.zeros(3), alpha, min_periods, center)
    np.testing.assert_allclose(got, ew_zscore_reference(x, alpha, min_periods, center), rtol=1e-9, atol=1e-12)


def _bars(close: np.ndarray, volume: np.ndarray | None = None, ts: np.ndarray | None = None) -> Observations:
    n = len(close)
    return Observations(
        np.arange(n, dtype=np.int64) * MINUTE if ts is None else ts,
        {"close": close, "volume": np.full(n, 100.0) if volume is None else volume},
        "X",
        MINUTE,
    )


def test_a_planted_one_bar_jump_scores_far_above_the_calm_bars_and_severity_is_the_normal_mass():
    rng = np.random.default_rng(3)
    returns = rng.normal(0, 1e-3, 500)
    returns[400] = -0.02  # a 20-sigma drop
    close = 100 * np.exp(np.cumsum(returns))
    scores = PriceJump().score(_bars(close))
    assert np.nanargmax(scores.raw) == 400
    assert scores.raw[400] > 10
    assert np.nanmax(np.delete(scores.raw, 400)) < 6
    assert scores.severity[400] == pytest.approx(math.erf(scores.raw[400] / math.sqrt(2)))
    assert np.isnan(scores.raw[:30]).all()  # warming up


def test_a_volume_burst_is_found_and_a_quiet_bar_is_not_an_event():
    volume = np.full(300, 1000.0) * np.random.default_rng(1).uniform(0.8, 1.2, 300)
    volume[250], volume[260] = 50_000.0, 1.0
    scores = VolumeBurst().score(_bars(np.full(300, 10.0), volume))
    assert np.nanargmax(scores.raw) == 250
    assert scores.raw[260] == 0.0  # one-sided: low volume is not a burst


def test_stale_feed_counts_the_missing_bars_and_needs_the_bar_length():
    ts = np.array([0, 1, 2, 7, 8, 10], dtype=np.int64) * MINUTE
    scores = StaleFeed(max_missing=4).score(_bars(np.ones(6), ts=ts))
    np.testing.assert_array_equal(scores.raw, [np.nan, 0, 0, 4, 0, 0])  # one empty bar is not a gap
    np.testing.assert_array_equal(scores.detail["missing"], [np.nan, 0, 0, 4, 0, 1])
    assert scores.severity[3] == 1.0
    assert StaleFeed(min_missing=1).score(_bars(np.ones(6), ts=ts)).raw[5] == 1
    with pytest.raises(ValueError, match="interval_ns=0"):
        StaleFeed().score(Observations(ts, {}))
    with pytest.raises(ValueError, match="max_missing=0"):
        StaleFeed(max_missing=0).score(_bars(np.ones(6), ts=ts))
    with pytest.raises(ValueError, match="halflife=-1"):
        PriceJump(halflife=-1).score(_bars(np.ones(5)))


def test_a_missing_close_gives_the_same_returns_whether_a_batch_ends_on_it_or_not():
    close = np.array([100.0, 101.0, np.nan, 102.0, 101.5] + [100.0 + k % 3 for k in range(60)])
    det = PriceJump(min_periods=2)
    whole = det.score(_bars(close))
    state = det.init_state()
    parts = [det.update(state, _bars(close).take(slice(0, 3))), det.update(state, _bars(close).take(slice(3, None)))]
    np.testing.assert_array_equal(np.concatenate([p.raw for p in parts]), whole.raw)
    assert np.isnan(whole.detail["z"][3])
