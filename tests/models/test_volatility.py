"""GARCH, GJR-GARCH and EGARCH: the numba filter against its pure reference and against arch, the 2008 crash on
real daily S&P 500 closes, walk-forward refits at the same rows whatever the split, missing closes, and
parameters refused by name."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from arch.data import sp500
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import Observations, Scores
from models.volatility import (
    Egarch,
    Garch,
    GarchFamily,
    GjrGarch,
    initial_lags,
    variance_filter,
    variance_filter_reference,
)

DAY = 86_400 * 10**9
MODELS = [Garch, GjrGarch, Egarch]


def _o(det: GarchFamily) -> int:
    return int(getattr(det, "o", 0))


@pytest.fixture(scope="module")
def sp500_close() -> pd.Series:
    """Daily S&P 500 closes (adjusted), 1999-2018, from arch's bundled data."""
    return sp500.load()["Adj Close"]


def _observations(close: pd.Series) -> Observations:
    ts = close.index.to_numpy().astype("datetime64[ns]").astype(np.int64)
    return Observations(ts, {"close": close.to_numpy()}, "SPX", DAY)


# ---- the recursion ---------------------------------------------------------------------------------------
@st.composite
def _recursions(draw):
    egarch = draw(st.booleans())
    p, o, q = draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    mu = draw(st.floats(-0.5, 0.5))
    if egarch:
        omega = draw(st.floats(-0.5, 0.5))
        alpha = draw(st.lists(st.floats(-0.3, 0.3), min_size=p, max_size=p))
        gamma = draw(st.lists(st.floats(-0.3, 0.3), min_size=o, max_size=o))
        start = draw(st.floats(-3.0, 3.0))
    else:
        omega = draw(st.floats(1e-3, 1.0))
        alpha = draw(st.lists(st.floats(0.0, 0.3), min_size=p, max_size=p))
        gamma = draw(st.lists(st.floats(0.0, 0.3), min_size=o, max_size=o))
        start = draw(st.floats(1e-2, 10.0))
    beta = draw(st.lists(st.floats(0.0, 0.95 / q), min_size=q, max_size=q))
    params = np.array([mu, omega, *alpha, *gamma, *beta])
    floor = draw(st.floats(1e-6, 0.5))  # up to a floor that binds now and then
    values = draw(st.lists(st.one_of(st.floats(-20.0, 20.0), st.just(float("nan"))), max_size=60))
    cut = draw(st.integers(0, len(values)))
    return params, p, o, q, egarch, floor, start, np.array(values, dtype=np.float64), cut


@settings(max_examples=150, deadline=None)
@given(_recursions())
def test_variance_filter_kernel_in_two_calls_equals_its_pure_reference(case):
    params, p, o, q, egarch, floor, start, x, cut = case
    lags = initial_lags(start, p, o, q, egarch)
    z1, s1 = variance_filter(x[:cut], params, lags, p, o, q, egarch, floor)
    z2, s2 = variance_filter(x[cut:], params, lags, p, o, q, egarch, floor)
    z_ref, s_ref = variance_filter_reference(x, params, p, o, q, egarch, floor, start)
    np.testing.assert_allclose(np.concatenate([z1, z2]), z_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([s1, s2]), s_ref, rtol=1e-12)


@pytest.mark.parametrize("dist", ["normal", "t"])
@pytest.mark.parametrize("model", MODELS)
def test_the_filter_reproduces_arch_and_the_stream_starts_from_archs_forecast_on_daily_sp500(model, dist, sp500_close):
    close = sp500_close["2000":"2018-01-02"]
    history, first_new = _observations(close[:-1]), _observations(close[-1:])
    det = model(dist=dist).fit(history)
    assert det.scale_ == 100.0  # daily returns in per cent
    p, o, q, egarch = 1, _o(det), 1, model.vol == "EGARCH"
    y = np.diff(np.log(close[:-1].to_numpy())) * det.scale_
    res = arch_model(y, vol=model.vol, p=p, o=o, q=q, dist=dist, rescale=False).fit(disp="off")
    np.testing.assert_allclose(det.params_, res.params.to_numpy()[: 2 + p + o + q], rtol=1e-9)
    lags = initial_lags(det.backcast_, p, o, q, egarch)
    z, sigma = variance_filter(y, det.params_, lags, p, o, q, egarch, float(np.var(y)) / 1e8)
    np.testing.assert_allclose(sigma, res.conditional_volatility, rtol=1e-6)
    np.testing.assert_allclose(z, res.std_resid, rtol=1e-6, atol=1e-9)
    # the stream continues after the history: the first new row gets arch's one-step-ahead forecast
    forecast = res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    scored = det.score(first_new)
    assert scored.detail["sigma"][0] == pytest.approx(np.sqrt(forecast) / det.scale_, rel=1e-9)
    assert np.isfinite(scored.raw[0])


# ---- the 2008 crash --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_fitted_before_2008_the_first_crash_day_is_the_largest_surprise_and_october_a_high_volatility_regime(
    model, sp500_close
):
    history = _observations(sp500_close["1999":"2007"])
    crisis = sp500_close["2008":"2009"]
    scores = model().fit(history).score(_observations(crisis))
    severity = pd.Series(scores.severity, index=crisis.index)
    raw = pd.Series(scores.raw, index=crisis.index)
    regime = pd.Series(scores.detail["regime"], index=crisis.index)
    # 2008-09-29 (the House rejects the rescue plan, -8.8 %) follows weeks of moderate volatility
    assert raw.idxmax() == pd.Timestamp("2008-09-29")
    assert severity["2008-09-29"] > 0.99
    assert (severity > 0.99).mean() < 0.05
    # by mid-October the volatility had caught up: a larger fall (-9.0 % on 2008-10-15) is a smaller surprise
    moves = np.log(crisis).diff().abs()
    assert moves["2008-10-15"] > moves["2008-09-29"]
    assert raw["2008-10-15"] < raw["2008-09-29"]
    assert regime["2008-10"].mean() > 2.5
    assert regime["2008-01":"2008-06"].mean() < 2.0


# ---- walk-forward refits ---------------------------------------------------------------------------------
def _garch_path(n: int, seed: int) -> Observations:
    """Closes whose log returns follow a GARCH(1, 1) (about 1 % a bar), with two missing closes."""
    rng = np.random.default_rng(seed)
    r, s2 = np.empty(n), 1e-4
    for t in range(n):
        r[t] = np.sqrt(s2) * rng.standard_normal()
        s2 = 1e-5 + 0.1 * r[t] ** 2 + 0.8 * s2
    close = 100.0 * np.exp(np.cumsum(r))
    close[[n - 150, n - 60]] = np.nan
    return Observations(np.arange(n, dtype=np.int64) * DAY, {"close": close}, "X", DAY)


@pytest.mark.parametrize("model", MODELS)
def test_refits_happen_at_the_same_rows_for_any_split_and_after_pickling(model):
    obs = _garch_path(460, seed=5)
    history, live = obs.take(slice(0, 220)), obs.take(slice(220, None))
    det = model(dist="normal", refit_every=80, window=150).fit(history)
    state = det.init_state()
    whole = det.update(state, live)
    assert state.refits == 2  # 236 returns scored (four rows lack one): refits after the 80th and the 160th
    assert not np.array_equal(state.params, det.params_)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(live)), size=9, replace=False))
    parts, state = [], det.init_state()
    for a, b in zip([0, *cuts], [*cuts, len(live)], strict=True):
        parts.append(det.update(state, live.take(slice(a, b))))
        if a <= len(live) // 2 < b:  # mid-stream, between two refits
            det, state = pickle.loads(pickle.dumps((det, state)))
    assert Scores.concat(parts).equals(whole)
    # up to the 80th scored return the scores are those of the fit; the row after it uses the refit
    plain = model(dist="normal", window=150).fit(history).score(live)
    k = int(np.flatnonzero(np.isfinite(whole.raw))[79])
    assert np.array_equal(whole.detail["sigma"][: k + 1], plain.detail["sigma"][: k + 1])
    assert whole.detail["sigma"][k + 1] != plain.detail["sigma"][k + 1]


# ---- missing closes and bad parameters -------------------------------------------------------------------
def test_a_missing_close_scores_nan_with_the_next_row_and_leaves_the_recursion_unchanged():
    obs = _garch_path(300, seed=2)  # closes 150 and 240 missing
    det = Garch().fit(obs.take(slice(0, 120)))
    state = det.init_state()
    det.update(state, obs.take(slice(120, 150)))
    before = state.lags.copy()
    gap = det.update(state, obs.take(slice(150, 152)))
    np.testing.assert_array_equal(state.lags, before)
    assert np.isnan(gap.raw).all()  # the missing close, and the return from it
    assert gap.detail["sigma"][0] == gap.detail["sigma"][1]
    after = det.update(state, obs.take(slice(152, 153)))
    assert np.isfinite(after.raw[0])
    assert after.detail["sigma"][0] == gap.detail["sigma"][0]


@pytest.mark.parametrize(
    ("model", "params", "named"),
    [
        (Garch, {"p": 0}, "p=0"),
        (Garch, {"q": 1.5}, "q=1.5"),
        (Garch, {"dist": "cauchy"}, "dist='cauchy'"),
        (GjrGarch, {"o": 0}, "o=0"),
        (Egarch, {"o": -1}, "o=-1"),
        (Egarch, {"refit_every": 0}, "refit_every=0"),
        (GjrGarch, {"window": 50}, "window=50"),
    ],
)
def test_a_bad_parameter_is_refused_at_fit_naming_it(model, params, named, sp500_close):
    history = _observations(sp500_close["2005":"2006"])
    det = model(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=re.escape(named)):
        det.fit(history)


def test_a_history_too_short_is_refused_naming_its_length(sp500_close):
    with pytest.raises(ValueError, match=r"len\(history\)=60"):
        Egarch().fit(_observations(sp500_close[:60]))
