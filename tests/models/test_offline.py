"""Offline change points: the O(1) costs against ruptures' own, a planted variance jump and mean shift found within
a few rows by every model that should see them, white noise left whole by the default penalty, missing closes
mapped back to their rows, the segments' statistics and table, autumn 2008 in the real S&P 500, bad input."""

from __future__ import annotations

import itertools
import pickle
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ruptures.costs import CostL2, CostNormal  # type: ignore[import-untyped]

from models.base import Observations
from models.offline import (
    ChangePoints,
    CumsumL2Cost,
    CumsumNormalCost,
    RbfGramCost,
    change_points_frame,
    default_penalty,
    offline_change_points,
)

MINUTE = 60 * 10**9
DAY = 86_400 * 10**9
JUMP = 301  # the row of the first return of the second segment (returns 300: are rows 301:)


def _obs(returns: np.ndarray) -> Observations:
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    return Observations(np.arange(len(close), dtype=np.int64) * MINUTE, {"close": close}, "X", MINUTE)


def _variance_jump(seed: int) -> np.ndarray:
    """600 returns of 10 bps a bar, then 40 bps from the 301st."""
    returns = np.random.default_rng(seed).normal(0, 1e-3, 600)
    returns[300:] *= 4
    return returns


def _mean_shift(seed: int) -> np.ndarray:
    """600 returns of 10 bps a bar, the last 300 with a mean of +20 bps."""
    returns = np.random.default_rng(seed).normal(0, 1e-3, 600)
    returns[300:] += 2e-3
    return returns


@pytest.fixture(scope="module")
def sp500() -> Observations:
    """Daily S&P 500 closes (adjusted), 1999-2018, from arch's bundled data."""
    from arch.data import sp500

    frame = sp500.load()
    return Observations(
        pd.DatetimeIndex(frame.index).as_unit("ns").asi8,
        {"close": frame["Adj Close"].to_numpy()},
        symbol="^GSPC",
        interval_ns=DAY,
    )


# ---- the costs -----------------------------------------------------------------------------------------
def _segments(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    starts = rng.integers(0, n - 2, 50)
    return [(int(s), int(rng.integers(s + 2, n + 1))) for s in starts]


def test_cumsum_costs_equal_ruptures_costs_on_any_segment():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 1, 150), rng.normal(2, 3, 150)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CostNormal announces its small diagonal
        normal = CostNormal().fit(z)
    pairs: list[tuple[Any, Any]] = [(CumsumL2Cost().fit(z), CostL2().fit(z)), (CumsumNormalCost().fit(z), normal)]
    for start, end in _segments(len(z), rng):
        for fast, reference in pairs:
            assert fast.error(start, end) == pytest.approx(reference.error(start, end), rel=1e-9, abs=1e-9)


def test_rbf_gram_cost_equals_the_kernel_cost_on_any_segment():
    rng = np.random.default_rng(1)
    z = rng.standard_t(4, 200)
    cost = RbfGramCost(0.3).fit(z)
    for start, end in _segments(len(z), rng):
        seg = z[start:end]
        kernel = np.exp(-0.3 * np.subtract.outer(seg, seg) ** 2)
        assert cost.error(start, end) == pytest.approx(len(seg) - kernel.sum() / len(seg), rel=1e-9, abs=1e-9)


# ---- planted changes -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "method"), [("rbf", "pelt"), ("rbf", "binseg"), ("normal", "pelt"), ("normal", "binseg")]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_variance_jump_is_the_one_change_point_within_a_few_rows(model, method, seed):
    obs = _obs(_variance_jump(seed))
    cp = offline_change_points(obs, model=model, method=method)
    assert len(cp) == 1
    assert abs(int(cp.index[0]) - JUMP) <= 8
    assert cp.ts[0] == obs.ts[cp.index[0]]
    assert cp.segment_std[1] > 3 * cp.segment_std[0]


@pytest.mark.parametrize(("model", "method"), [("l2", "pelt"), ("l2", "binseg"), ("rbf", "pelt")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_mean_shift_is_the_one_change_point_within_a_few_rows(model, method, seed):
    cp = offline_change_points(_obs(_mean_shift(seed)), model=model, method=method)
    assert len(cp) == 1
    assert abs(int(cp.index[0]) - JUMP) <= 8
    assert cp.segment_mean[1] - cp.segment_mean[0] == pytest.approx(2e-3, abs=5e-4)


@pytest.mark.parametrize("model", ["rbf", "l2", "normal"])
@pytest.mark.parametrize("method", ["pelt", "binseg"])
def test_white_noise_has_no_change_point_with_the_default_penalty(model, method):
    for seed in range(3):
        cp = offline_change_points(_obs(np.random.default_rng(seed).normal(0, 1e-3, 500)), model=model, method=method)
        assert len(cp) == 0, (seed, cp.index)
        assert cp.segment_rows.tolist() == [500]
        if model == "rbf":  # scaled by the returns' variance in the kernel's feature space, below 1
            assert 0 < cp.penalty < default_penalty(model, 500)
        else:
            assert cp.penalty == default_penalty(model, 500)


@pytest.mark.parametrize("model", ["rbf", "l2", "normal"])
@pytest.mark.parametrize("step", [0.0, 1e-3])
def test_equal_returns_are_one_segment(model, step):
    cp = offline_change_points(_obs(np.full(100, step)), model=model)
    assert len(cp) == 0
    assert cp.segment_rows.tolist() == [100]
    assert cp.segment_std[0] < 1e-12


def test_an_explicit_penalty_is_used_and_a_small_one_gives_more_changes():
    obs = _obs(_variance_jump(0))
    few = offline_change_points(obs, model="normal", method="binseg")
    many = offline_change_points(obs, model="normal", method="binseg", penalty=0.5, min_size=5)
    assert many.penalty == 0.5
    assert len(many) > len(few)


# ---- missing closes ------------------------------------------------------------------------------------
def test_missing_and_zero_closes_drop_their_returns_and_positions_map_back_to_their_rows():
    clean = _obs(_variance_jump(3))
    close = clean.column("close")
    # after row 99 and row 199, insert a gap: a NaN (or zero) close, then the last close again, so the finite
    # returns are exactly the clean ones
    gappy_close = np.concatenate([close[:100], [np.nan, close[99]], close[100:200], [0.0, close[199]], close[200:]])
    gappy = Observations(np.arange(len(gappy_close), dtype=np.int64) * MINUTE, {"close": gappy_close})
    want = offline_change_points(clean)
    got = offline_change_points(gappy)
    assert len(want) == 1
    np.testing.assert_array_equal(got.index, want.index + 4)  # both gaps are before the change
    np.testing.assert_array_equal(got.ts, gappy.ts[got.index])
    np.testing.assert_array_equal(got.segment_rows, want.segment_rows)
    np.testing.assert_allclose(got.segment_mean, want.segment_mean, rtol=1e-12)
    np.testing.assert_allclose(got.segment_std, want.segment_std, rtol=1e-12)
    assert np.isfinite(gappy_close[got.index]).all()
    assert np.isfinite(gappy_close[got.index - 1]).all()


# ---- the segments ----------------------------------------------------------------------------------------
def test_segments_cover_the_returns_and_their_statistics_are_the_segments():
    returns = _variance_jump(4)
    obs = _obs(returns)
    cp = offline_change_points(obs, model="normal", method="binseg", penalty=5.0)
    assert len(cp) >= 1
    assert cp.segment_rows.sum() == len(returns)
    bounds = [1, *cp.index.tolist(), len(obs)]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        assert cp.segment_start[i] == obs.ts[a]
        assert cp.segment_end[i] == obs.ts[b - 1]
        assert cp.segment_rows[i] == b - a
        assert cp.segment_mean[i] == pytest.approx(returns[a - 1 : b - 1].mean(), rel=1e-9)
        assert cp.segment_std[i] == pytest.approx(returns[a - 1 : b - 1].std(ddof=1), rel=1e-9)
    assert pickle.loads(pickle.dumps(cp)).index.tolist() == cp.index.tolist()


def test_frame_has_a_row_a_segment_with_utc_timestamps():
    obs = _obs(_variance_jump(0))
    cp = offline_change_points(obs)
    frame = change_points_frame(cp)
    assert list(frame.columns) == ["timestamp", "end", "change", "rows", "mean_log_return", "std_log_return"]
    assert len(frame) == len(cp) + 1
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["change"].tolist() == [False] + [True] * len(cp)
    assert frame["timestamp"].iloc[1] == pd.Timestamp(int(cp.ts[0]), unit="ns", tz="UTC")
    assert frame["timestamp"].iloc[0] == pd.Timestamp(int(obs.ts[1]), unit="ns", tz="UTC")


# ---- real data -------------------------------------------------------------------------------------------
def _in_autumn_2008(cp: ChangePoints) -> pd.DatetimeIndex:
    times = pd.to_datetime(cp.ts, unit="ns", utc=True)
    return times[(times >= pd.Timestamp("2008-06-01", tz="UTC")) & (times < pd.Timestamp("2009-06-01", tz="UTC"))]


def test_sp500_whole_history_has_a_volatility_change_in_2008_and_it_starts_the_stormiest_segment(sp500):
    cp = offline_change_points(sp500, model="normal", method="binseg")
    found = _in_autumn_2008(cp)
    assert len(found) >= 1
    stormiest = int(np.argmax(cp.segment_std))
    start = pd.Timestamp(int(cp.segment_start[stormiest]), unit="ns", tz="UTC")
    assert start in found
    assert cp.segment_std[stormiest] > 0.03  # over 3% a day
    assert cp.symbol == "^GSPC"


def test_sp500_2006_to_2010_pelt_finds_the_change_in_2008(sp500):
    years = pd.to_datetime(sp500.ts, unit="ns").year
    window = sp500.take((years >= 2006) & (years <= 2010))
    assert len(_in_autumn_2008(offline_change_points(window, model="normal", method="pelt"))) >= 1


# ---- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"model": "l1"}, "model='l1'"),
        ({"method": "dynp"}, "method='dynp'"),
        ({"min_size": 1}, "min_size=1"),
        ({"min_size": 2.5}, "min_size=2.5"),
        ({"penalty": 0.0}, "penalty=0.0"),
        ({"penalty": float("nan")}, "penalty=nan"),
        ({"max_rows": 0}, "max_rows=0"),
        ({"max_rows": 100}, "max_rows=100"),
        ({"min_size": 400}, "min_size=400"),
    ],
)
def test_bad_input_raises_naming_the_parameter_and_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        offline_change_points(_obs(_variance_jump(0)), **kwargs)


def test_a_missing_column_raises_naming_it():
    with pytest.raises(KeyError, match="column='vwap'"):
        offline_change_points(_obs(_variance_jump(0)), column="vwap")


def test_too_few_finite_returns_raise_naming_the_count():
    close = np.full(50, np.nan)
    close[:30] = 100.0
    obs = Observations(np.arange(50, dtype=np.int64) * MINUTE, {"close": close})
    with pytest.raises(ValueError, match="obs: 29 finite log returns"):
        offline_change_points(obs, min_size=20)
