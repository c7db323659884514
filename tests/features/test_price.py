"""Price features: known values against independent pandas computations and textbook definitions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features import FeatureEngine, FeatureSet
from features.price import (
    RSI,
    Bollinger,
    LogReturn,
    MovingAverageDistance,
    Pivots,
    RateOfChange,
    RollingExtremes,
    Volatility,
    ZScore,
)
from ingest.records import NS_PER_DAY, NS_PER_MINUTE, BarBatch
from ingest.sources.replay import arch_daily_bars
from ingest.validation import Validator


@pytest.fixture(scope="module")
def sp500() -> BarBatch:
    return Validator("bar").validate(arch_daily_bars(("SP500",)), interval_ns=NS_PER_DAY).accepted


def _features(bars: BarBatch, *features, interval_ns: int = NS_PER_DAY) -> pd.DataFrame:
    return FeatureEngine(FeatureSet(tuple(features)), interval_ns).batch(bars).to_frame()


def test_close_to_close_and_range_volatility_match_pandas(sp500: BarBatch):
    f = _features(sp500, Volatility(20), Volatility(50, "parkinson"), Volatility(50, "garman_klass"))
    df = pd.DataFrame({c: getattr(sp500, c) for c in ("open", "high", "low", "close")})
    lr = np.log(df.close / df.close.shift())
    np.testing.assert_allclose(f["vol_cc_20"], lr.rolling(20).std(), rtol=1e-9)
    hl2 = np.log(df.high / df.low) ** 2
    np.testing.assert_allclose(f["vol_parkinson_50"], np.sqrt((hl2 / (4 * math.log(2))).rolling(50).mean()), rtol=1e-9)
    gk = 0.5 * hl2 - (2 * math.log(2) - 1) * np.log(df.close / df.open) ** 2
    np.testing.assert_allclose(f["vol_gk_50"], np.sqrt(gk.rolling(50).mean().clip(lower=0)), rtol=1e-9)


def test_momentum_and_mean_reversion_match_pandas(sp500: BarBatch):
    f = _features(sp500, RateOfChange(10), MovingAverageDistance(50), ZScore(20), Bollinger(20, 2.0))
    c = pd.Series(sp500.close)
    np.testing.assert_allclose(f["roc_10"], c / c.shift(10) - 1, rtol=1e-9)
    np.testing.assert_allclose(f["ma_dist_50"], c / c.rolling(50).mean() - 1, rtol=1e-9, atol=1e-12)
    z = (c - c.rolling(20).mean()) / c.rolling(20).std()
    np.testing.assert_allclose(f["zscore_20"], z, rtol=1e-6, atol=1e-9)
    lower = c.rolling(20).mean() - 2 * c.rolling(20).std()
    np.testing.assert_allclose(f["bb_pos_20_2"], (c - lower) / (4 * c.rolling(20).std()), rtol=1e-6, atol=1e-9)


def test_rsi_follows_wilders_smoothing():
    # a textbook check: steady gains give 100, steady losses 0, alternating equal moves 50
    ts = np.arange(200, dtype=np.int64) * NS_PER_DAY
    for closes, expected in (
        (100 + np.arange(200.0), 100.0),
        (200 - np.arange(200.0) * 0.5, 0.0),
        (100 + np.tile([0.0, 1.0], 100), 50.0),
    ):
        bars = _bars(ts, closes)
        rsi = _features(bars, RSI(14))["rsi_14"].to_numpy()
        assert np.isnan(rsi[:14]).all()
        # alternating equal moves swing around 50 (the latest move weighs more); average a gain and a loss
        last = rsi[-1] if expected != 50.0 else (rsi[-1] + rsi[-2]) / 2
        assert last == pytest.approx(expected, abs=0.5 if expected == 50.0 else 1e-9)


def test_rsi_matches_an_independent_ewm_computation(sp500: BarBatch):
    rsi = _features(sp500, RSI(14))["rsi_14"]
    d = pd.Series(sp500.close).diff()
    g = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False, ignore_na=True).mean()
    lo = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False, ignore_na=True).mean()
    ref = (100 - 100 / (1 + g / lo)).to_numpy()
    ref[:14] = np.nan
    np.testing.assert_allclose(rsi, ref, rtol=1e-9)


def test_extremes_and_breakouts(sp500: BarBatch):
    f = _features(sp500, RollingExtremes(20))
    hi, lo = pd.Series(sp500.high).rolling(20).max(), pd.Series(sp500.low).rolling(20).min()
    np.testing.assert_array_equal(f["high_20"], hi)
    np.testing.assert_array_equal(f["low_20"], lo)
    up = (pd.Series(sp500.close) > hi.shift()).astype(float).where(hi.shift().notna())
    np.testing.assert_array_equal(f["breakout_up_20"], up)
    assert 0 < f["breakout_up_20"].sum() < len(f) / 5


def test_time_based_returns_span_gaps(sp500: BarBatch):
    f = _features(sp500, LogReturn("1d"), LogReturn("7d"))
    c = pd.Series(sp500.close, index=pd.to_datetime(sp500.ts, utc=True))
    weekly = np.log(c / c.asof(c.index - pd.Timedelta("7d")).to_numpy())
    np.testing.assert_allclose(f["ret_7d"], weekly, rtol=1e-12)
    assert f["ret_1d"].iloc[1] == pytest.approx(math.log(sp500.close[1] / sp500.close[0]))


def test_horizon_shorter_than_the_bar_is_refused_naming_it():
    with pytest.raises(ValueError, match="horizon='1min'"):
        FeatureEngine(FeatureSet((LogReturn("1min"),)), NS_PER_DAY)
    assert LogReturn("5min").allowed(NS_PER_MINUTE)


def test_pivots_come_from_the_previous_session():
    ts = np.arange(6, dtype=np.int64) * 12 * 3600 * 10**9  # two bars a day, three days
    bars = _bars(
        ts,
        np.array([10.0, 12.0, 11.0, 13.0, 12.0, 12.5]),
        high=np.array([11, 13, 12, 14, 13, 13.0]),
        low=np.array([9, 11, 10, 12, 11, 12.0]),
    )
    f = _features(bars, Pivots())
    assert f["pivot"].iloc[:2].isna().all()
    h, lo, c = 13.0, 9.0, 12.0  # day one
    assert f["pivot"].iloc[2] == pytest.approx((h + lo + c) / 3)
    assert f["pivot_r1"].iloc[3] == pytest.approx(2 * (h + lo + c) / 3 - lo)


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (Volatility, {"window": 1}, "window"),
        (Volatility, {"window": 5, "estimator": "yz"}, "estimator"),
        (Bollinger, {"k": -1}, "k"),
        (Pivots, {"session_tz": "Mars/Olympus"}, "session_tz"),
        (LogReturn, {"horizon": "soon"}, "horizon"),
    ],
)
def test_bad_parameters_are_refused_naming_them(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


def _bars(ts: np.ndarray, close: np.ndarray, high: np.ndarray | None = None, low: np.ndarray | None = None) -> BarBatch:
    n = len(ts)
    high = close if high is None else high
    low = close if low is None else low
    nan = np.full(n, np.nan)
    return BarBatch(
        ts=ts,
        symbol=np.array(["X"] * n, dtype=object),
        interval_ns=np.full(n, NS_PER_DAY),
        open=close.copy(),
        high=np.asarray(high, float),
        low=np.asarray(low, float),
        close=close,
        volume=np.ones(n),
        vwap=close.copy(),
        trade_count=np.ones(n, np.int64),
        bid=nan,
        ask=nan,
        bid_size=nan,
        ask_size=nan,
        spread=nan,
        quote_count=np.zeros(n, np.int64),
        suspicious_count=np.zeros(n, np.int64),
    )
