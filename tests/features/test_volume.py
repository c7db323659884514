"""Volume features: streaming parity, pickled state, prefix invariance, and known values from pandas and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import FeatureEngine, FeatureSet, make_feature
from features.base import Feature
from features.volume import (
    DEFAULT_SPECS,
    OrderFlowImbalance,
    RelativeVolumeTimeOfDay,
    RollingVwap,
    SessionVwap,
    VolumeRatio,
    VolumeZScore,
)
from ingest.records import NS_PER_DAY, NS_PER_MINUTE, BarBatch
from tests.features.helpers import (
    BAR_DATASETS,
    assert_frames_identical,
    assert_prefix_invariant,
    load_spy_bars,
    resume_after_pickle,
    stream_in_batches,
    synthetic_bars,
)

FEATURES: list[Feature] = [
    SessionVwap(),
    SessionVwap("America/New_York"),
    RollingVwap(20),
    VolumeRatio(20),
    VolumeZScore(20),
    RelativeVolumeTimeOfDay(3),
    RelativeVolumeTimeOfDay(2, "America/New_York"),
    OrderFlowImbalance(20),
]


def _engine(*features: Feature, interval_ns: int = NS_PER_MINUTE) -> FeatureEngine:
    return FeatureEngine(FeatureSet(features), interval_ns)


def _values(bars: BarBatch, feature: Feature, interval_ns: int = NS_PER_MINUTE) -> dict[str, np.ndarray]:
    return _engine(feature, interval_ns=interval_ns).batch(bars).values


def _bars(volume, close=None, vwap=None, bid=None, ask=None, interval_ns=NS_PER_MINUTE, ts=None) -> BarBatch:
    n = len(volume)
    close = np.full(n, 100.0) if close is None else np.asarray(close, float)
    nan = np.full(n, np.nan)
    bid = nan if bid is None else np.asarray(bid, float)
    ask = nan if ask is None else np.asarray(ask, float)
    return BarBatch(
        ts=np.arange(n, dtype=np.int64) * interval_ns if ts is None else np.asarray(ts, np.int64),
        symbol=np.full(n, "X", dtype=object),
        interval_ns=np.full(n, interval_ns, np.int64),
        open=close,
        high=close,
        low=close,
        close=close,
        volume=np.asarray(volume, float),
        vwap=nan if vwap is None else np.asarray(vwap, float),
        trade_count=(np.asarray(volume) > 0).astype(np.int64),
        bid=bid,
        ask=ask,
        bid_size=nan,
        ask_size=nan,
        spread=ask - bid,
        quote_count=(~np.isnan(bid)).astype(np.int64),
        suspicious_count=np.zeros(n, np.int64),
    )


# ------------------------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("dataset", sorted(BAR_DATASETS))
@pytest.mark.parametrize("feature", FEATURES, ids=repr)
def test_volume_feature_streamed_in_random_batches_equals_batch(feature: Feature, dataset: str):
    bars = BAR_DATASETS[dataset]()
    engine = _engine(feature)
    for seed in (0, 1, 2):
        assert_frames_identical(stream_in_batches(engine, bars, seed=seed), engine.batch(bars))
    # many small batches over a prefix: a carried state crosses a batch boundary every few bars
    head = bars.take(slice(0, 1_500))
    assert_frames_identical(stream_in_batches(engine, head, sizes=(1, 7, 100), seed=3), engine.batch(head))


@pytest.mark.parametrize("dataset", ["spy_real", "spy_synthetic"])
@pytest.mark.parametrize("feature", FEATURES, ids=repr)
def test_volume_feature_resumed_from_pickled_state_equals_batch(feature: Feature, dataset: str):
    bars = BAR_DATASETS[dataset]()
    engine = _engine(feature)
    want = engine.batch(bars)
    for cut in (1, len(bars) // 2, len(bars) - 3):
        assert_frames_identical(resume_after_pickle(engine, bars, cut), want)


@pytest.mark.parametrize("dataset", ["spy_real", "eurusd_synthetic"])
@pytest.mark.parametrize("feature", FEATURES, ids=repr)
def test_volume_feature_of_a_prefix_leaves_earlier_values_unchanged(feature: Feature, dataset: str):
    bars = BAR_DATASETS[dataset]()
    assert_prefix_invariant(_engine(feature), bars, (1, 19, 20, len(bars) // 3, len(bars) - 1))


def test_default_specs_build_features_with_distinct_columns():
    features = tuple(make_feature(s) for s in DEFAULT_SPECS)
    columns = FeatureSet(features).columns(NS_PER_MINUTE)
    assert len(columns) == len(set(columns))
    assert all(c == c.lower() for c in columns)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RollingVwap(0), "window=0"),
        (lambda: VolumeRatio(2.5), "window=2.5"),  # type: ignore[arg-type]
        (lambda: VolumeZScore(1), "window=1"),
        (lambda: RelativeVolumeTimeOfDay(0), "days=0"),
        (lambda: RelativeVolumeTimeOfDay(5, "Mars/Olympus"), "session_tz='Mars/Olympus'"),
        (lambda: SessionVwap("nowhere"), "session_tz='nowhere'"),
        (lambda: OrderFlowImbalance(-3), "window=-3"),
    ],
)
def test_volume_feature_with_bad_parameter_names_it(make, message: str):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------------------------------------------------- VWAP
def _session_vwap_reference(bars: BarBatch, tz: str) -> pd.Series:
    local = pd.DatetimeIndex(pd.to_datetime(bars.ts, utc=True)).tz_convert(tz)
    session = pd.Series(local.date)
    price = pd.Series(np.where(np.isnan(bars.vwap), bars.close, bars.vwap))
    volume = pd.Series(bars.volume)
    pv = (price * volume).groupby(session).cumsum()
    v = volume.groupby(session).cumsum()
    return (pv / v).where(v > 0)


@pytest.mark.parametrize(("dataset", "tz"), [("spy_real", "America/New_York"), ("spy_synthetic", "UTC")])
def test_session_vwap_matches_pandas_cumulative_sums_per_session(dataset: str, tz: str):
    bars = BAR_DATASETS[dataset]()
    got = _values(bars, SessionVwap(tz))
    want = _session_vwap_reference(bars, tz)
    np.testing.assert_allclose(got["vwap_session"], want, rtol=1e-12)
    np.testing.assert_allclose(got["vwap_session_dist"], bars.close / want - 1, rtol=1e-9, atol=1e-15)
    assert np.isfinite(got["vwap_session"]).mean() > 0.9


def test_session_vwap_uses_bar_vwap_skips_zero_volume_and_restarts_each_day():
    day = NS_PER_DAY // NS_PER_MINUTE
    volume = np.zeros(day + 2)
    volume[[1, 2, day + 1]] = [100.0, 300.0, 50.0]
    close = np.full(day + 2, 10.0)
    close[2] = 12.0
    vwap = np.full(day + 2, np.nan)
    vwap[1] = 11.0  # bar 2 has no vwap: its close counts
    v = _values(_bars(volume, close, vwap), SessionVwap())["vwap_session"]
    assert np.isnan(v[0])
    assert v[1] == 11.0
    assert v[2] == pytest.approx((11.0 * 100 + 12.0 * 300) / 400)
    assert v[day - 1] == v[2]  # zero-volume bars leave it where it was
    assert np.isnan(v[day])  # a new session without volume yet
    assert v[day + 1] == 10.0


@pytest.mark.parametrize("dataset", ["spy_real", "spy_synthetic"])
def test_rolling_vwap_matches_pandas_rolling_sums(dataset: str):
    bars = BAR_DATASETS[dataset]()
    got = _values(bars, RollingVwap(30))
    price = np.where(np.isnan(bars.vwap), bars.close, bars.vwap)
    pv, v = pd.Series(price * bars.volume).rolling(30).sum(), pd.Series(bars.volume).rolling(30).sum()
    want = (pv / v).where(v > 0)
    np.testing.assert_allclose(got["vwap_30"], want, rtol=1e-9)
    np.testing.assert_allclose(got["vwap_dist_30"], bars.close / want - 1, rtol=1e-7, atol=1e-12)


# ------------------------------------------------------------------------------------------------ volume momentum
def test_volume_ratio_and_zscore_match_pandas_rolling():
    bars = load_spy_bars()
    got = {**_values(bars, VolumeRatio(20)), **_values(bars, VolumeZScore(50))}
    vol = pd.Series(bars.volume)
    np.testing.assert_allclose(got["volume_ratio_20"], vol / vol.rolling(20).mean() - 1, rtol=1e-9, atol=1e-12)
    z = (vol - vol.rolling(50).mean()) / vol.rolling(50).std()
    np.testing.assert_allclose(got["volume_z_50"], z, rtol=1e-6, atol=1e-9)


def test_volume_zscore_is_nan_on_a_flat_window_and_ratio_nan_without_volume():
    bars = _bars(np.r_[np.zeros(5), np.full(5, 7.0)])
    z = _values(bars, VolumeZScore(3))["volume_z_3"]
    ratio = _values(bars, VolumeRatio(3))["volume_ratio_3"]
    assert np.isnan(z[[2, 3, 4, 7, 8, 9]]).all()
    assert np.isfinite(z[[5, 6]]).all()
    assert np.isnan(ratio[:5]).all()
    np.testing.assert_allclose(ratio[5:], [2.0, 0.5, 0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------------- relative volume by time of day
def _rvol_reference(bars: BarBatch, days: int, tz: str) -> pd.Series:
    local = pd.DatetimeIndex(pd.to_datetime(bars.ts, utc=True)).tz_convert(tz).tz_localize(None)
    slot = pd.Series((local.asi8 % NS_PER_DAY) // NS_PER_MINUTE)
    vol = pd.Series(bars.volume)
    past = vol.groupby(slot).transform(lambda s: s.shift(1).rolling(days, min_periods=1).mean())
    return (vol / past).where(past > 0)


@pytest.mark.parametrize(("days", "tz"), [(3, "UTC"), (2, "America/New_York")])
def test_rvol_tod_matches_pandas_groupby_over_time_of_day_slots(days: int, tz: str):
    bars = load_spy_bars()
    got = _values(bars, RelativeVolumeTimeOfDay(days, tz))[f"rvol_tod_{days}"]
    np.testing.assert_allclose(got, _rvol_reference(bars, days, tz), rtol=1e-12)
    first_day = bars.ts < bars.ts[0] + NS_PER_DAY // 2
    assert np.isnan(got[first_day]).all()
    assert np.isfinite(got).sum() > 2000


def test_rvol_tod_on_daily_bars_uses_the_previous_days_of_the_one_slot():
    volume = [10.0, 20.0, 30.0, 0.0, 60.0]
    got = _values(_bars(volume, interval_ns=NS_PER_DAY), RelativeVolumeTimeOfDay(2), NS_PER_DAY)["rvol_tod_2"]
    np.testing.assert_allclose(got, [np.nan, 2.0, 30.0 / 15.0, 0.0, 60.0 / 15.0])


def test_rvol_tod_skips_days_without_a_bar_in_the_slot():
    # one-hour bars; day 1 lacks the 01:00 bar, so day 2's 01:00 compares with day 0's only
    hour = 3_600 * 10**9
    ts = np.array([0, hour, NS_PER_DAY, 2 * NS_PER_DAY, 2 * NS_PER_DAY + hour], dtype=np.int64)
    bars = _bars([5.0, 8.0, 10.0, 20.0, 4.0], interval_ns=hour, ts=ts)
    got = _values(bars, RelativeVolumeTimeOfDay(5), hour)["rvol_tod_5"]
    np.testing.assert_allclose(got, [np.nan, np.nan, 2.0, 20.0 / 7.5, 0.5])


# -------------------------------------------------------------------------------------------- order-flow imbalance
def _signs_reference(close, volume, bid, ask) -> np.ndarray:
    out, last_close, direction = [], None, 0.0
    for c, v, b, a in zip(close, volume, bid, ask, strict=True):
        tick = direction
        if v > 0 and last_close is not None and c != last_close:
            tick = 1.0 if c > last_close else -1.0
        mid = (b + a) / 2
        out.append(tick if np.isnan(mid) or c == mid else (1.0 if c > mid else -1.0))
        if v > 0:
            last_close, direction = c, tick
    return np.array(out)


@pytest.mark.parametrize("dataset", ["spy_real", "spy_synthetic"])
def test_ofi_matches_a_python_lee_ready_loop_and_pandas_rolling(dataset: str):
    bars = BAR_DATASETS[dataset]()
    got = _values(bars, OrderFlowImbalance(20))["ofi_20"]
    sign = _signs_reference(bars.close, bars.volume, bars.bid, bars.ask)
    sv, v = pd.Series(sign * bars.volume).rolling(20).sum(), pd.Series(bars.volume).rolling(20).sum()
    np.testing.assert_allclose(got, (sv / v).where(v > 0), rtol=1e-9, atol=1e-12)
    finite = got[np.isfinite(got)]
    assert len(finite) > 700
    assert (finite >= -1).all()
    assert (finite <= 1).all()


def test_ofi_classifies_by_midpoint_then_tick_rule():
    # bars: tick rule (no quote) up, unchanged keeps +1, above mid, below mid, at mid -> tick rule (down)
    close = [100.0, 101.0, 101.0, 101.0, 100.5, 100.0]
    bid = [np.nan, np.nan, np.nan, 100.0, 100.8, 99.9]
    ask = [np.nan, np.nan, np.nan, 101.0, 101.0, 100.1]
    volume = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    got = _values(_bars(volume, close, bid=bid, ask=ask), OrderFlowImbalance(1))["ofi_1"]
    np.testing.assert_array_equal(got, [0.0, 1.0, 1.0, 1.0, -1.0, -1.0])
    two = _values(_bars(volume, close, bid=bid, ask=ask), OrderFlowImbalance(2))["ofi_2"]
    np.testing.assert_allclose(two, [np.nan, 2 / 3, 1.0, 1.0, -1 / 9, -1.0])


def test_ofi_is_nan_without_volume():
    got = _values(synthetic_bars("EURUSD"), OrderFlowImbalance(5))["ofi_5"]
    assert np.isnan(got).all()
