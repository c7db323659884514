"""Tick features: streaming parity, pickled state, prefix invariance, and known values on real and simulated trades."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from features.ticks import TickFeatureEngine, duration_label, per_bar
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND, Tick, TickBatch, to_ns
from tests.conftest import shared_data
from tests.features.helpers import random_splits, synthetic_market

WINDOWS = ("100ms", "1s", "1min")


@lru_cache(maxsize=1)
def _spy_ticks() -> TickBatch:
    frame = pd.read_parquet(shared_data("spy_trade_ticks_20131008.parquet"))
    n = len(frame)
    return TickBatch(
        ts=to_ns(frame["ts"]),
        symbol=frame["symbol"].to_numpy(dtype=object),
        price=frame["price"].to_numpy(dtype=np.float64),
        size=frame["size"].to_numpy(dtype=np.float64),
        seq=np.arange(n, dtype=np.int64),
        suspicious=frame["suspicious"].to_numpy(dtype=bool),
    )


def _synthetic_ticks() -> TickBatch:
    return synthetic_market().trades


TICKS: dict[str, Callable[[], TickBatch]] = {"spy_real": _spy_ticks, "spy_synthetic": _synthetic_ticks}


def _stream(
    engine: TickFeatureEngine, ticks: TickBatch, seed: int, sizes: tuple[int, ...] = (1, 7, 100, 10_000)
) -> dict[str, np.ndarray]:
    state, parts, start = engine.init_state(), [], 0
    for stop in random_splits(len(ticks), sizes, seed):
        out, state = engine.step(state, ticks.take(slice(start, stop)))
        parts.append(out)
        start = stop
    return {c: np.concatenate([p[c] for p in parts]) for c in engine.columns}


def _assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for col in want:
        assert got[col].dtype == want[col].dtype, col
        assert np.array_equal(got[col], want[col], equal_nan=want[col].dtype.kind == "f"), col


# ------------------------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("dataset", sorted(TICKS))
def test_tick_features_streamed_in_random_batches_equal_batch(dataset: str):
    ticks = TICKS[dataset]()
    engine = TickFeatureEngine(WINDOWS)
    want = engine.batch(ticks)
    for seed in (0, 1, 2):
        _assert_identical(_stream(engine, ticks, seed), want)
    head = ticks.take(slice(0, 3_000))
    _assert_identical(_stream(engine, head, seed=3, sizes=(1, 7, 100)), engine.batch(head))


@pytest.mark.parametrize("dataset", sorted(TICKS))
def test_tick_features_resumed_from_pickled_state_equal_batch(dataset: str):
    ticks = TICKS[dataset]()
    engine = TickFeatureEngine(WINDOWS)
    want = engine.batch(ticks)
    for cut in (1, len(ticks) // 2):
        first, state = engine.step(engine.init_state(), ticks.take(slice(0, cut)))
        state = pickle.loads(pickle.dumps(state))
        second, _ = engine.step(state, ticks.take(slice(cut, len(ticks))))
        _assert_identical({c: np.concatenate([first[c], second[c]]) for c in engine.columns}, want)


@pytest.mark.parametrize("dataset", sorted(TICKS))
def test_tick_features_of_a_prefix_leave_earlier_values_unchanged(dataset: str):
    ticks = TICKS[dataset]()
    engine = TickFeatureEngine(WINDOWS)
    full = engine.batch(ticks)
    for cut in (1, 2, len(ticks) // 3, len(ticks) - 1):
        part = engine.batch(ticks.take(slice(0, cut)))
        _assert_identical(part, {c: v[:cut] for c, v in full.items()})


# ---------------------------------------------------------------------------------------------------- known values
@pytest.mark.parametrize("dataset", sorted(TICKS))
def test_tick_features_match_pandas_diff_and_a_searchsorted_count(dataset: str):
    ticks = TICKS[dataset]()
    got = TickFeatureEngine(WINDOWS).batch(ticks)
    assert got["ts"].dtype == np.int64
    np.testing.assert_array_equal(got["ts"], ticks.ts)
    want_gap = pd.Series(ticks.ts).diff().to_numpy(dtype=np.float64) / 1e9
    np.testing.assert_allclose(got["inter_trade_s"], want_gap, rtol=1e-15)
    rows = np.arange(len(ticks))
    for label, ns in (("100ms", 10**8), ("1s", NS_PER_SECOND), ("1min", NS_PER_MINUTE)):
        count = rows - np.searchsorted(ticks.ts, ticks.ts - ns, side="right") + 1
        np.testing.assert_array_equal(got[f"burst_rate_{label}"], count / (ns / 1e9))


def test_burst_rate_by_hand_counts_prints_sharing_a_timestamp_in_arrival_order():
    ms = 1_000_000
    ts = [0, 0, 0, 400 * ms, 1_000 * ms, 1_000 * ms, 2_500 * ms]
    ticks = TickBatch.from_ticks([Tick(t, "SPY", 100.0, 1.0) for t in ts])
    got = TickFeatureEngine(("1s", "500ms")).batch(ticks)
    # (t - 1 s, t]: at 1.000 s the three prints at 0 have left
    np.testing.assert_array_equal(got["burst_rate_1s"], [1, 2, 3, 4, 2, 3, 1])
    np.testing.assert_array_equal(got["burst_rate_500ms"], np.array([1, 2, 3, 4, 1, 2, 1]) / 0.5)
    np.testing.assert_array_equal(got["inter_trade_s"], [np.nan, 0, 0, 0.4, 0.6, 0, 1.5])


def test_real_spy_open_has_bursts_far_above_the_pre_market():
    ticks = _spy_ticks()
    got = TickFeatureEngine(("1s",)).batch(ticks)
    hour = pd.DatetimeIndex(pd.to_datetime(ticks.ts, utc=True)).hour.to_numpy()
    assert np.median(got["burst_rate_1s"][hour == 13]) > 10 * np.median(got["burst_rate_1s"][hour < 12])


def test_tick_engine_rejects_out_of_order_trades_other_symbols_and_bad_windows():
    engine = TickFeatureEngine()
    good = TickBatch.from_ticks([Tick(10, "SPY", 1.0, 1.0), Tick(20, "SPY", 1.0, 1.0)])
    state = engine.step(engine.init_state(), good)[1]
    with pytest.raises(ValueError, match="ts=15"):
        engine.step(state, TickBatch.from_ticks([Tick(15, "SPY", 1.0, 1.0)]))
    with pytest.raises(ValueError, match="ts=5"):
        engine.batch(TickBatch.from_ticks([Tick(10, "SPY", 1.0, 1.0), Tick(5, "SPY", 1.0, 1.0)]))
    with pytest.raises(ValueError, match="symbol='QQQ'"):
        engine.step(state, TickBatch.from_ticks([Tick(30, "QQQ", 1.0, 1.0)]))
    for bad in ("soon", "-1s", "0s"):
        with pytest.raises(ValueError, match=f"windows='{bad}'"):
            TickFeatureEngine((bad,))
    with pytest.raises(ValueError, match="appears twice"):
        TickFeatureEngine(("1s", "1000ms"))


def test_tick_engine_step_with_no_trades_returns_empty_columns():
    engine = TickFeatureEngine()
    out, state = engine.step(engine.init_state(), TickBatch.empty())
    assert all(len(v) == 0 for v in out.values())
    assert out["ts"].dtype == np.int64
    assert state.rows == 0


def test_duration_labels_use_the_largest_whole_unit():
    assert [duration_label(v) for v in (10**9, 10**8, 60 * 10**9, 90 * 10**9, 1_500)] == [
        "1s",
        "100ms",
        "1min",
        "90s",
        "1500ns",
    ]


def test_per_bar_summary_matches_a_groupby_of_the_tick_values():
    ticks = _synthetic_ticks()
    values = TickFeatureEngine(("1s",)).batch(ticks)
    bars = per_bar(values, NS_PER_MINUTE)
    minute = ticks.ts // NS_PER_MINUTE
    assert bars["trades"].sum() == len(ticks)
    np.testing.assert_array_equal(
        bars["trades"].to_numpy(), np.bincount(minute - minute[0])[np.unique(minute - minute[0])]
    )
    frame = pd.DataFrame({"m": minute, "b": values["burst_rate_1s"], "g": values["inter_trade_s"]})
    np.testing.assert_array_equal(bars["burst_rate_1s_max"].to_numpy(), frame.groupby("m")["b"].max().to_numpy())
    np.testing.assert_allclose(bars["inter_trade_s_mean"].to_numpy(), frame.groupby("m")["g"].mean().to_numpy())
