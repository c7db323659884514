"""Files in the input contract and replays of them, including the real daily history shipped with arch."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest

from ingest.files import FileFormatError, infer_bar_interval, read_market_file
from ingest.records import NS_PER_DAY
from ingest.sources import ArchReplay, FileReplay, FrameReplay, RawBatch
from ingest.sources.replay import arch_daily_bars


def collect(source) -> list[RawBatch]:
    async def run() -> list[RawBatch]:
        return [b async for b in source.batches()]

    return asyncio.run(run())


def _trades(n: int, start: str = "2024-01-02T14:30:00Z", step_ms: int = 100) -> pd.DataFrame:
    ts = pd.Timestamp(start) + pd.to_timedelta(np.arange(n) * step_ms, unit="ms")
    return pd.DataFrame({"timestamp": ts, "symbol": "SPY", "price": 470 + np.arange(n) / 100, "size": 100})


def test_csv_and_parquet_are_read_and_their_kind_detected(tmp_path):
    t = _trades(5)
    t.to_parquet(tmp_path / "t.parquet")
    t.rename(columns={"timestamp": "ts"}).drop(columns="symbol").to_csv(tmp_path / "t.csv.gz", index=False)
    kind, frame = read_market_file(tmp_path / "t.parquet")
    assert kind == "trades"
    assert len(frame) == 5
    kind, frame = read_market_file(tmp_path / "t.csv.gz", symbol="SPY")
    assert kind == "trades"
    assert list(frame["symbol"].unique()) == ["SPY"]


def test_file_without_symbol_and_without_a_given_symbol_is_refused_naming_it(tmp_path):
    _trades(3).drop(columns="symbol").to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(FileFormatError, match=r"x\.csv: no symbol column"):
        read_market_file(tmp_path / "x.csv")


def test_file_with_unknown_columns_is_refused_listing_them(tmp_path):
    pd.DataFrame({"timestamp": ["2024-01-01"], "foo": [1]}).to_csv(tmp_path / "y.csv", index=False)
    with pytest.raises(FileFormatError, match="foo"):
        read_market_file(tmp_path / "y.csv")


def test_bad_cells_reach_validation_with_their_spelling(tmp_path):
    (tmp_path / "z.csv").write_text(
        "timestamp,symbol,price,size\n2024-01-02T14:30:00Z,SPY,abc,1\n2024-01-02T14:30:01Z,SPY,nan,\n"
    )
    _, frame = read_market_file(tmp_path / "z.csv")
    assert frame["price"].tolist() == ["abc", "nan"]
    assert pd.isna(frame["size"].iloc[1])


def test_replay_as_fast_as_possible_yields_every_row_once_in_order():
    t = _trades(2500)
    batches = collect(FrameReplay(trades=t, speed=None, batch_rows=1000))
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert pd.concat([b.trades for b in batches]).equals(t)


def test_replay_interleaves_trades_and_quotes_on_one_clock():
    t = _trades(100, step_ms=100)
    q = pd.DataFrame(
        {
            "timestamp": t["timestamp"] + pd.Timedelta(50, "ms"),
            "symbol": "SPY",
            "bid": 1.0,
            "ask": 1.1,
            "bid_size": 1,
            "ask_size": 1,
        }
    )
    batches = collect(FrameReplay(trades=t, quotes=q, speed=None, batch_rows=10))
    for b in batches[:-1]:
        assert b.trades is not None
        assert b.quotes is not None
        assert b.quotes["timestamp"].max() <= b.trades["timestamp"].max() + pd.Timedelta(100, "ms")
    last = batches[-1]
    assert last.trades is None
    assert last.quotes is not None
    assert len(last.quotes) == 1
    assert sum(0 if b.quotes is None else len(b.quotes) for b in batches) == 100


def test_paced_replay_takes_market_time_over_speed():
    t = _trades(11, step_ms=100)  # one second of market time
    start = time.monotonic()
    batches = collect(FrameReplay(trades=t, speed=2.0))
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 2.0
    assert sum(len(b) for b in batches) == 11
    assert len(batches) > 1


def test_replay_of_a_directory_merges_files_of_one_kind_by_time(tmp_path):
    a, b = _trades(10, step_ms=200), _trades(10, start="2024-01-02T14:30:00.1Z", step_ms=200)
    a.to_parquet(tmp_path / "a.parquet")
    b.assign(symbol="QQQ").to_parquet(tmp_path / "b.parquet")
    batches = collect(FileReplay(tmp_path, speed=None))
    merged = pd.concat([x.trades for x in batches])
    assert len(merged) == 20
    assert merged["timestamp"].is_monotonic_increasing


def test_arch_daily_history_replays_real_sp500_and_nasdaq_bars():
    bars = arch_daily_bars(("SP500", "NASDAQ"))
    assert set(bars["symbol"]) == {"SP500", "NASDAQ"}
    sp = bars[bars["symbol"] == "SP500"]
    assert len(sp) == 5031
    assert sp["timestamp"].iloc[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert infer_bar_interval(bars) == NS_PER_DAY
    replay = ArchReplay(symbols=("SP500",), speed=None, batch_rows=2000)
    assert replay.bar_interval_ns == NS_PER_DAY
    got = collect(replay)
    assert sum(len(b) for b in got) == 5031


def test_bad_speed_is_refused_naming_it():
    with pytest.raises(ValueError, match="speed"):
        FrameReplay(trades=_trades(1), speed=-1)
