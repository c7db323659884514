"""The regime model: kernels against their pure references and against hmmlearn's own forward pass, regimes of
the real S&P 500 (calm 2005-2006, storm in the autumn of 2008, out of sample), causality and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hmmlearn import _hmmc
from hmmlearn.hmm import GaussianHMM
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import NotFittedError, Observations
from models.regimes import (
    HmmRegime,
    forward_filter,
    forward_filter_reference,
    gaussian_terms,
    hmm_features,
    hmm_features_reference,
)

DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def sp500() -> tuple[np.ndarray, Observations]:
    """Daily S&P 500 closes (adjusted), 1999-2018, from arch's bundled data, and their dates."""
    from arch.data import sp500

    close = sp500.load()["Adj Close"]
    dates = close.index.to_numpy().astype("datetime64[D]")
    return dates, Observations(dates.astype("datetime64[ns]").astype(np.int64), {"close": close.to_numpy()}, "SPX", DAY)


def _span(dates: np.ndarray, start: str, end: str) -> np.ndarray:
    mask: np.ndarray = (dates >= np.datetime64(start)) & (dates < np.datetime64(end))
    return mask


def _window(data: tuple[np.ndarray, Observations], start: str, end: str) -> Observations:
    dates, obs = data
    return obs.take(_span(dates, start, end))


def _dates(data: tuple[np.ndarray, Observations], start: str, end: str) -> np.ndarray:
    dates = data[0]
    out: np.ndarray = dates[_span(dates, start, end)]
    return out


@pytest.fixture(scope="module")
def fitted(sp500) -> HmmRegime:
    """The default 3-state model fitted on 1999-2006."""
    return HmmRegime().fit(_window(sp500, "1999-01-01", "2007-01-01"))


def _random_model(seed: int, k: int, d: int = 2) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(k))
    trans = rng.dirichlet(np.ones(k), size=k) * 0.3 + np.eye(k) * 0.7
    means = rng.normal(0, 2, (k, d))
    a = rng.normal(0, 1, (k, d, d))
    covars = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(d)
    precisions, log_norm = gaussian_terms(covars)
    return np.log(start), np.log(trans), means, precisions, log_norm, covars


# ---- kernels ------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.floats(1e-3, 1e6), st.just(float("nan")), st.just(0.0), st.just(-1.0)), max_size=60),
    st.floats(0.01, 0.99),
    st.integers(1, 8),
    st.floats(1e-12, 1e-2),
    st.floats(0.5, 10.0),
)
def test_feature_kernel_equals_its_pure_reference(values, alpha, min_periods, var_floor, limit):
    close = np.array(values, dtype=np.float64)
    center, scale = np.array([1e-4, -4.0]), np.array([0.01, 0.5])
    got = hmm_features(close, np.array([np.nan, 0.0, 0.0]), alpha, min_periods, var_floor, center, scale, limit)
    want = hmm_features_reference(close, alpha, min_periods, var_floor, center, scale, limit)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.integers(0, 40), st.floats(0.0, 0.3))
def test_forward_filter_kernel_equals_its_pure_reference(seed, k, n, nan_share):
    log_start, log_trans, means, precisions, log_norm, _ = _random_model(seed, k)
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(0, 3, (n, 2))
    x[rng.random((n, 2)) < nan_share] = np.nan
    probs, raw = forward_filter(x, np.zeros(k + 1), log_start, log_trans, means, precisions, log_norm)
    want_probs, want_raw = forward_filter_reference(x, log_start, log_trans, means, precisions, log_norm)
    np.testing.assert_allclose(probs, want_probs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(raw, want_raw, rtol=1e-9, atol=1e-12)
    finite = np.isfinite(probs).all(axis=1)
    np.testing.assert_allclose(probs[finite].sum(axis=1), 1.0)
    assert np.isnan(probs[~finite]).all()
    assert np.isnan(raw[~finite]).all()


def test_forward_filter_equals_hmmlearns_forward_pass_and_its_smoothing_on_the_last_row(fitted, sp500):
    x = fitted.features(_window(sp500, "1999-01-01", "2007-01-01"))
    x = x[np.isfinite(x).all(axis=1)]
    k = fitted.n_states
    model = GaussianHMM(n_components=k, covariance_type="full", init_params="", params="")
    model.startprob_, model.transmat_ = fitted.stationary_, fitted.transmat_
    model.means_, model.covars_ = fitted.means_, fitted.covars_
    log_start, log_trans = np.log(fitted.stationary_), np.log(fitted.transmat_)
    probs, _ = forward_filter(
        x, np.zeros(k + 1), log_start, log_trans, fitted.means_, fitted.precisions_, fitted.log_norm_
    )
    # hmmlearn's forward lattice holds log P(state, rows <= t); normalised per row it is the filter
    _, lattice = _hmmc.forward_log(model.startprob_, model.transmat_, model._compute_log_likelihood(x))
    want = np.exp(lattice - np.logaddexp.reduce(lattice, axis=1, keepdims=True))
    np.testing.assert_allclose(probs, want, rtol=1e-7, atol=1e-9)
    # smoothing conditions on every row, filtering on the rows so far: on the last row they are the same
    np.testing.assert_allclose(probs[-1], model.predict_proba(x)[-1], rtol=1e-7, atol=1e-9)


# ---- the model on the real S&P 500 --------------------------------------------------------------------
def test_states_are_ordered_calm_to_stormy_and_the_fit_is_deterministic(fitted, sp500):
    assert np.all(np.diff(fitted.means_[:, 1]) > 0)
    again = HmmRegime().fit(_window(sp500, "1999-01-01", "2007-01-01"))
    for name in ("transmat_", "means_", "covars_", "stationary_"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fitted, name))


def test_the_stormy_regime_holds_in_the_autumn_of_2008_and_not_in_2005_2006(fitted, sp500):
    top = f"p_state_{fitted.n_states - 1}"
    calm = fitted.score(_window(sp500, "2005-01-01", "2007-01-01")).detail[top]
    assert np.nanmean(calm > 0.5) < 0.1
    live = fitted.score(_window(sp500, "2007-01-01", "2011-01-01"))  # out of sample
    dates = _dates(sp500, "2007-01-01", "2011-01-01")
    autumn = _span(dates, "2008-10-01", "2008-12-01")
    assert np.mean(live.detail[top][autumn] > 0.5) > 0.9
    assert (live.detail["regime"][autumn] == fitted.n_states - 1).mean() > 0.9
    # the raw score: a switch to a stormier regime (the 3.5 % fall of 2007-02-27 after a calm winter) scores
    # high, the calm weeks before it do not
    crash = int(np.searchsorted(dates, np.datetime64("2007-02-27")))
    assert live.raw[crash] > 0.5 > np.nanmax(live.raw[:crash])
    assert live.detail["regime"][crash - 1] < live.detail["regime"][crash]


def test_probabilities_at_a_day_are_unchanged_when_the_input_is_cut_after_it(fitted, sp500):
    live = _window(sp500, "2007-01-01", "2011-01-01")
    whole = fitted.score(live)
    dates = _dates(sp500, "2007-01-01", "2011-01-01")
    for day in ("2008-09-15", "2008-10-10", "2009-03-09"):
        cut = int(np.searchsorted(dates, np.datetime64(day))) + 1
        prefix = fitted.score(live.take(slice(0, cut)))
        for name, values in prefix.detail.items():
            np.testing.assert_array_equal(values, whole.detail[name][:cut])
        np.testing.assert_array_equal(prefix.raw, whole.raw[:cut])


def test_a_missing_close_scores_nan_and_leaves_the_state_as_it_was(fitted, sp500):
    live = _window(sp500, "2008-01-01", "2009-01-01")
    close = live.column("close").copy()
    holes = np.array([40, 41, 120])
    close[holes] = np.nan
    holed = fitted.score(Observations(live.ts, {"close": close}, "SPX", DAY))
    keep = np.ones(len(live), dtype=bool)
    keep[holes] = False
    without = fitted.score(live.take(keep))
    assert np.isnan(holed.raw[holes]).all()
    assert np.isnan(holed.detail["p_state_0"][holes]).all()
    np.testing.assert_array_equal(holed.raw[keep], without.raw)
    np.testing.assert_array_equal(holed.detail["p_state_2"][keep], without.detail["p_state_2"])


# ---- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_states": 1}, "n_states=1"),
        ({"n_states": 5}, "n_states=5"),
        ({"n_states": 2.5}, "n_states=2.5"),
        ({"vol_halflife": 0}, "vol_halflife=0"),
        ({"min_periods": 0}, "min_periods=0"),
        ({"n_init": 0}, "n_init=0"),
        ({"random_state": None}, "random_state=None"),
    ],
)
def test_bad_parameters_get_an_error_naming_them(params, message, sp500):
    with pytest.raises(ValueError, match=message):
        HmmRegime(**params).fit(_window(sp500, "2005-01-01", "2007-01-01"))


def test_a_too_short_history_is_refused_naming_its_length(sp500):
    with pytest.raises(ValueError, match="history: 100 rows"):
        HmmRegime().fit(_window(sp500, "2005-01-01", "2007-01-01").take(slice(0, 100)))
    HmmRegime(n_states=2).fit(_window(sp500, "2005-01-01", "2007-01-01").take(slice(0, 120)))


def test_features_need_a_fit(sp500):
    with pytest.raises(NotFittedError, match="HmmRegime"):
        HmmRegime().features(_window(sp500, "2005-01-01", "2006-01-01"))
