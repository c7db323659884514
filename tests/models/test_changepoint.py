"""Change points: the BOCPD and CUSUM kernels against their pure references, a planted variance jump found by
BOCPD within a few bars, a planted mean shift alarmed by CUSUM (and a calm series not), missing closes, bad
input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import Observations
from models.changepoint import Bocpd, Cusum, bocpd_filter, bocpd_reference, cusum_filter, cusum_reference

MINUTE = 60 * 10**9

closes = st.lists(
    st.one_of(st.floats(1.0, 2.0), st.just(float("nan")), st.just(0.0)),
    max_size=60,
)


def _bars(close: np.ndarray, start: int = 0) -> Observations:
    return Observations((start + np.arange(len(close), dtype=np.int64)) * MINUTE, {"close": close}, "X", MINUTE)


def _prices(returns: np.ndarray) -> np.ndarray:
    out: np.ndarray = 100.0 * np.exp(np.cumsum(returns))
    return out


@pytest.fixture(scope="module")
def calm_history() -> Observations:
    """500 one-minute bars of i.i.d. normal returns, 10 bps a bar."""
    return _bars(_prices(np.random.default_rng(7).normal(0, 1e-3, 500)))


# ---- kernels ------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(
    closes,
    st.integers(1, 12),
    st.floats(0.001, 0.5),
    st.floats(-0.05, 0.05),
    st.floats(0.1, 10.0),
    st.floats(0.5, 5.0),
    st.floats(1e-6, 1e-1),
    st.integers(1, 12),
)
def test_bocpd_kernel_equals_its_pure_reference(values, max_run, hazard, mu0, kappa0, alpha0, beta0, window):
    close = np.array(values, dtype=np.float64)
    prior = np.array([mu0, kappa0, alpha0, beta0])
    window = min(window, max_run)
    got = bocpd_filter(close, np.zeros((5, max_run + 1)), np.array([np.nan, 0.0]), hazard, prior, window)
    want = bocpd_reference(close, max_run, hazard, prior, window)
    np.testing.assert_allclose(got[:, :3], want[:, :3], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got[:, 3], want[:, 3])
    assert (got[:, 3][np.isfinite(got[:, 3])] <= max_run).all()


@settings(max_examples=80, deadline=None)
@given(
    closes,
    st.floats(-0.01, 0.01),
    st.floats(1e-6, 1e-1),
    st.floats(0.01, 0.99),
    st.floats(0, 2),
    st.floats(0.5, 10),
)
def test_cusum_kernel_equals_its_pure_reference(values, mean, var0, alpha, k, h):
    close = np.array(values, dtype=np.float64)
    got = cusum_filter(close, np.array([np.nan, np.nan, 0.0, 0.0]), mean, var0, alpha, k, h)
    np.testing.assert_allclose(got, cusum_reference(close, mean, var0, alpha, k, h), rtol=1e-12, atol=1e-12)


# ---- planted events -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_variance_jump_gets_the_largest_change_point_score_within_a_few_bars_after_it(seed, calm_history):
    jump = 600
    returns = np.random.default_rng(seed).normal(0, 1e-3, 800)
    returns[jump:] *= 3.0
    scores = Bocpd().fit(calm_history).score(_bars(_prices(returns), start=1000))
    top = int(np.nanargmax(scores.raw))
    assert jump <= top <= jump + 8
    assert scores.raw[top] > 0.9
    assert scores.severity[top] > 0.99
    # the run-length posterior restarts: the expected run length after the jump counts from it
    assert scores.detail["run_length"][jump + 20] < 30 < scores.detail["run_length"][jump - 1]


def test_a_variance_jump_is_found_on_any_price_scale(calm_history):
    jump = 300
    returns = np.random.default_rng(5).normal(0, 1e-3, 500)
    returns[jump:] *= 3.0
    for scale in (1e-4, 1e4):
        history = _bars(calm_history.column("close") * scale)
        scores = Bocpd().fit(history).score(_bars(_prices(returns) * scale, start=1000))
        assert jump <= np.nanargmax(scores.raw) <= jump + 8


def test_cusum_alarms_after_a_mean_shift_and_not_on_a_calm_series_of_the_same_length(calm_history):
    shift = 400
    rng = np.random.default_rng(11)
    returns = rng.normal(0, 1e-3, 600)
    returns[shift:] += 1e-3  # one standard deviation a bar
    det = Cusum().fit(calm_history)
    shifted = det.score(_bars(_prices(returns), start=1000))
    alarms = np.flatnonzero(shifted.detail["alarm"] == 1.0)
    assert len(alarms) > 0
    assert shift < alarms[0] <= shift + 40
    assert (shifted.raw[alarms] >= det.h).all()
    assert shifted.detail["up"][alarms[0] + 1] < det.h  # restarted after the alarm
    calm = det.score(_bars(_prices(rng.normal(0, 1e-3, 600)), start=1000))
    assert np.nansum(calm.detail["alarm"]) == 0
    assert np.nanmax(calm.raw) < det.h


# ---- missing closes and bad input ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Bocpd, Cusum])
def test_a_missing_close_scores_nan_and_leaves_the_state_as_it_was(cls, calm_history):
    close = _prices(np.random.default_rng(3).normal(0, 1e-3, 300))
    holes = np.array([0, 50, 51, 200])
    holed = close.copy()
    holed[holes] = np.nan
    det = cls().fit(calm_history)
    with_holes = det.score(_bars(holed, start=1000))
    keep = np.ones(len(close), dtype=bool)
    keep[holes] = False
    without = det.score(_bars(close, start=1000).take(keep))
    assert np.isnan(with_holes.raw[holes]).all()
    np.testing.assert_array_equal(with_holes.raw[keep], without.raw)
    for name, values in without.detail.items():
        np.testing.assert_array_equal(with_holes.detail[name][keep], values)


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (Bocpd, {"hazard_lambda": 0}, "hazard_lambda=0"),
        (Bocpd, {"hazard_lambda": 1.0}, "hazard_lambda=1.0"),
        (Bocpd, {"hazard_lambda": float("nan")}, "hazard_lambda=nan"),
        (Bocpd, {"max_run": 0}, "max_run=0"),
        (Bocpd, {"max_run": 10.5}, "max_run=10.5"),
        (Bocpd, {"window": 0}, "window=0"),
        (Bocpd, {"window": 50, "max_run": 20}, "window=50"),
        (Cusum, {"k": -1.0}, "k=-1.0"),
        (Cusum, {"h": 0}, "h=0"),
        (Cusum, {"halflife": -5}, "halflife=-5"),
    ],
)
def test_bad_parameters_get_an_error_naming_them(cls, params, message, calm_history):
    with pytest.raises(ValueError, match=message):
        cls(**params).fit(calm_history)


@pytest.mark.parametrize("cls", [Bocpd, Cusum])
def test_a_too_short_or_flat_history_is_refused_naming_it(cls, calm_history):
    with pytest.raises(ValueError, match="history: 20 rows with 19 returns"):
        cls().fit(calm_history.take(slice(0, 20)))
    with pytest.raises(ValueError, match="do not vary"):
        cls().fit(_bars(np.full(100, 5.0)))
