"""Record value types and columnar batches."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from ingest.records import Bar, BarBatch, InvalidRecordError, Quote, Tick, TickBatch, to_ns


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"price": math.nan}, "price"),
        ({"price": 0.0}, "price"),
        ({"size": -1.0}, "size"),
        ({"symbol": ""}, "symbol"),
        ({"ts": 1.5}, "ts"),
    ],
)
def test_tick_rejects_bad_values_naming_the_field(kwargs: dict[str, object], field: str):
    base: dict[str, object] = {"ts": 1, "symbol": "SPY", "price": 1.0, "size": 1.0}
    with pytest.raises(InvalidRecordError) as info:
        Tick(**{**base, **kwargs})  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_crossed_quote_is_invalid():
    with pytest.raises(InvalidRecordError, match="crossed"):
        Quote(ts=1, symbol="X", bid=2.0, ask=1.0, bid_size=1, ask_size=1)


def test_bar_with_high_below_close_is_invalid():
    with pytest.raises(InvalidRecordError, match="high"):
        Bar(ts=0, symbol="X", interval_ns=60, open=1.0, high=1.0, low=0.5, close=2.0, volume=1)


def test_batches_round_trip_through_frames_and_pickle():
    t = TickBatch.from_ticks([Tick(1, "A", 1.0, 2.0, 0), Tick(2, "B", 3.0, 4.0, 1)])
    assert TickBatch.from_frame(t.to_frame()).equals(t)
    assert pickle.loads(pickle.dumps(t)).equals(t)
    assert TickBatch.concat([t.take(slice(0, 1)), t.take(slice(1, 2))]).equals(t)


def test_batch_with_unequal_columns_names_the_column():
    with pytest.raises(InvalidRecordError, match="price"):
        TickBatch(
            ts=np.array([1, 2]),
            symbol=np.array(["A", "B"]),
            price=np.array([1.0]),
            size=np.array([1.0, 1.0]),
            seq=np.array([0, 1]),
            suspicious=np.array([False] * 2),
        )


def test_bar_batch_to_bars_gives_value_types():
    bars = BarBatch(
        ts=np.array([0]),
        symbol=np.array(["X"]),
        interval_ns=np.array([60]),
        open=np.array([1.0]),
        high=np.array([2.0]),
        low=np.array([0.5]),
        close=np.array([1.5]),
        volume=np.array([10.0]),
        vwap=np.array([1.2]),
        trade_count=np.array([3]),
        bid=np.array([np.nan]),
        ask=np.array([np.nan]),
        bid_size=np.array([np.nan]),
        ask_size=np.array([np.nan]),
        spread=np.array([np.nan]),
        quote_count=np.array([0]),
        suspicious_count=np.array([0]),
    )
    (bar,) = bars.to_bars()
    assert bar.close == 1.5
    assert bar.trade_count == 3


def test_to_ns_reads_zoned_and_naive_timestamps_as_utc():
    got = to_ns(pd.Series(["2024-01-02T09:30:00-05:00", "2024-01-02T14:30:00"]))
    assert got[0] == got[1] == pd.Timestamp("2024-01-02T14:30:00Z").value
    with pytest.raises(InvalidRecordError, match="timestamp"):
        to_ns(pd.Series(["2024-01-02", "not a time"]))
