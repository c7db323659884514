"""Microstructure features: streaming parity, pickled state, prefix invariance, and known values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import FeatureEngine, FeatureSet, make_feature
from features.base import Feature
from features.microstructure import DEFAULT_SPECS, Amihud, Depth, RollSpread, Spread, SpreadZScore
from ingest.records import NS_PER_MINUTE, BarBatch
from tests.features.helpers import (
    BAR_DATASETS,
    assert_frames_identical,
    assert_prefix_invariant,
    load_gbpusd_bars,
    load_spy_bars,
    resume_after_pickle,
    stream_in_batches,
    synthetic_bars,
)

FEATURES: list[Feature] = [Spread(), SpreadZScore(20), Depth(), Amihud(20), RollSpread(20)]


def _values(bars: BarBatch, *features: Feature) -> dict[str, np.ndarray]:
    return FeatureEngine(FeatureSet(features), NS_PER_MINUTE).batch(bars).values


def _close_bars(close: np.ndarray, volume: np.ndarray | None = None) -> BarBatch:
    n = len(close)
    nan = np.full(n, np.nan)
    return BarBatch(
        ts=np.arange(n, dtype=np.int64) * NS_PER_MINUTE,
        symbol=np.full(n, "X", dtype=object),
        interval_ns=np.full(n, NS_PER_MINUTE, np.int64),
        open=close,
        high=close,
        low=close,
        close=close,
        volume=np.ones(n) if volume is None else volume,
        vwap=nan,
        trade_count=np.ones(n, np.int64),
        bid=nan,
        ask=nan,
        bid_size=nan,
        ask_size=nan,
        spread=nan,
        quote_count=np.zeros(n, np.int64),
        suspicious_count=np.zeros(n, np.int64),
    )


# ------------------------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("dataset", sorted(BAR_DATASETS))
@pytest.mark.parametrize("feature", FEATURES, ids=repr)
def test_microstructure_feature_streamed_in_random_batches_equals_batch(feature: Feature, dataset: str):
    bars = BAR_DATASETS[dataset]()
    engine = FeatureEngine(FeatureSet((feature,)), NS_PER_MINUTE)
    for seed in (0, 1, 2):
        assert_frames_identical(stream_in_batches(engine, bars, seed=seed), engine.batch(bars))
    # many small batches over a prefix: a carried state crosses a batch boundary every few bars
    head = bars.take(slice(0, 1_500))
    assert_frames_identical(stream_in_batches(engine, head, sizes=(1, 7, 100), seed=3), engine.batch(head))


@pytest.mark.parametrize("dataset", ["spy_real", "gbpusd_real", "spy_synthetic"])
@pytest.mark.parametrize("feature", FEATURES, ids=repr)
def test_microstructure_feature_resumed_from_pickled_state_equals_batch(feature: Feature, dataset: str):
    bars = BAR_DATASETS[dataset]()
    engine = FeatureEngine(FeatureSet((feature,)), NS_PER_MINUTE)
    want = engine.batch(bars)
    for cut in (1, len(bars) // 2, len(bars) - 3):
        assert_frames_identical(resume_after_pickle(engine, bars, cut), want)


@pytest.mark.parametrize("dataset", ["spy_real", "eurusd_synthetic"])
@pytest.mark.parametrize("feature", FEATURES, ids=repr)
def test_microstructure_feature_of_a_prefix_leaves_earlier_values_unchanged(feature: Feature, dataset: str):
    bars = BAR_DATASETS[dataset]()
    engine = FeatureEngine(FeatureSet((feature,)), NS_PER_MINUTE)
    assert_prefix_invariant(engine, bars, (1, 2, 20, 21, 22, len(bars) // 3, len(bars) - 1))


def test_default_specs_build_features_with_distinct_columns():
    features = tuple(make_feature(s) for s in DEFAULT_SPECS)
    columns = FeatureSet(features).columns(NS_PER_MINUTE)
    assert len(columns) == len(set(columns))
    assert all(c == c.lower() for c in columns)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SpreadZScore(1), "window=1"),
        (lambda: Amihud(0), "window=0"),
        (lambda: RollSpread(1), "window=1"),
        (lambda: RollSpread(True), "window=True"),
    ],
)
def test_microstructure_feature_with_bad_parameter_names_it(make, message: str):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------------------------------ spread and depth
@pytest.mark.parametrize("load", [load_spy_bars, load_gbpusd_bars], ids=["spy", "gbpusd"])
def test_spread_and_its_zscore_match_pandas_on_real_quotes(load):
    bars = load()
    got = _values(bars, Spread(), SpreadZScore(30))
    bid, ask = pd.Series(bars.bid), pd.Series(bars.ask)
    bps = 1e4 * (ask - bid) / ((ask + bid) / 2)
    np.testing.assert_array_equal(got["spread"], ask - bid)
    np.testing.assert_allclose(got["spread_bps"], bps, rtol=1e-12)
    z = (bps - bps.rolling(30).mean()) / bps.rolling(30).std()
    np.testing.assert_allclose(got["spread_z_30"], z.where(bps.rolling(30).std() > 1e-9), rtol=1e-6, atol=1e-9)


def test_spread_features_are_nan_without_quotes_and_spread_z_in_every_window_touching_one():
    bars = load_spy_bars()
    got = _values(bars, Spread(), SpreadZScore(5), Depth())
    no_quote = np.flatnonzero(np.isnan(bars.bid))
    assert len(no_quote) > 0
    for col in ("spread", "spread_bps", "depth", "depth_imbalance"):
        assert np.isnan(got[col][no_quote]).all()
    for i in no_quote:
        assert np.isnan(got["spread_z_5"][i : i + 5]).all()


def test_depth_and_imbalance_by_hand():
    bars = load_spy_bars().take(slice(0, 3))
    got = _values(bars, Depth())
    np.testing.assert_array_equal(got["depth"], bars.bid_size + bars.ask_size)
    # the first minute: 300 shares bid, 20,000 offered
    assert got["depth"][0] == 20_300.0
    assert got["depth_imbalance"][0] == pytest.approx((300 - 20_000) / 20_300)
    imb = _values(load_spy_bars(), Depth())["depth_imbalance"]
    finite = imb[np.isfinite(imb)]
    assert (finite >= -1).all()
    assert (finite <= 1).all()


# ------------------------------------------------------------------------------------------------------- Amihud
@pytest.mark.parametrize("dataset", ["spy_real", "spy_synthetic"])
def test_amihud_matches_pandas_mean_over_bars_with_volume(dataset: str):
    bars = BAR_DATASETS[dataset]()
    got = _values(bars, Amihud(30))["amihud_30"]
    close, volume = pd.Series(bars.close), pd.Series(bars.volume)
    lr = pd.Series(np.log(close / close.shift()))
    traded = volume > 0
    term = (lr.abs() / (close * volume) * 1e6).where(traded, 0.0).where(lr.notna())
    want = term.rolling(30).sum() / traded.astype(float).rolling(30).sum()
    np.testing.assert_allclose(got, want.where(traded.rolling(30).sum() > 0), rtol=1e-9, atol=1e-18)
    assert np.isfinite(got).sum() > 700


def test_amihud_by_hand_skips_zero_volume_bars_and_is_nan_without_volume():
    close = np.array([100.0, 101.0, 99.0, 99.0])
    volume = np.array([10.0, 20.0, 0.0, 0.0])
    got = _values(_close_bars(close, volume), Amihud(2))["amihud_2"]
    first = abs(np.log(101 / 100)) / (101 * 20) * 1e6
    np.testing.assert_allclose(got, [np.nan, np.nan, first, np.nan])
    assert np.isnan(_values(load_gbpusd_bars(), Amihud(20))["amihud_20"]).all()


# ------------------------------------------------------------------------------------------------- Roll's spread
@pytest.mark.parametrize(
    "load", [load_spy_bars, lambda: synthetic_bars("SPY"), load_gbpusd_bars], ids=["spy", "spy_synthetic", "gbpusd"]
)
def test_roll_spread_matches_pandas_rolling_covariance(load):
    bars = load()
    got = _values(bars, RollSpread(40))["roll_spread_40"]
    dp = pd.Series(bars.close).diff()
    cov = dp.rolling(40).cov(dp.shift())
    scale = np.sqrt((dp**2).rolling(40).sum() * (dp.shift() ** 2).rolling(40).sum()) / 39
    want = (2 * np.sqrt((-cov).clip(lower=0))).where(-cov > 1e-6 * scale)
    settled = np.isfinite(want) | (cov >= 1e-6 * scale)
    assert settled.sum() > 0.5 * len(bars)
    np.testing.assert_allclose(got[settled], want[settled], rtol=1e-6)
    assert np.isnan(got[:41]).all()


def test_roll_spread_recovers_the_spread_of_a_simulated_bid_ask_bounce():
    rng = np.random.default_rng(3)
    n, spread = 20_000, 0.04
    side = rng.choice([-1.0, 1.0], n)
    close = 100.0 + np.cumsum(rng.normal(0, 0.002, n)) + spread / 2 * side
    got = _values(_close_bars(close), RollSpread(5_000))["roll_spread_5000"]
    assert np.nanmedian(got) == pytest.approx(spread, rel=0.1)


def test_roll_spread_is_nan_for_a_trending_or_flat_price():
    trend = _values(_close_bars(100.0 + 0.01 * np.arange(50.0)), RollSpread(10))["roll_spread_10"]
    flat = _values(_close_bars(np.full(50, 100.0)), RollSpread(10))["roll_spread_10"]
    assert np.isnan(trend).all()
    assert np.isnan(flat).all()
