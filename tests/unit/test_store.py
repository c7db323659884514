"""The DuckDB store: idempotent writes, range queries, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ingest.bars import build_bars
from ingest.records import NS_PER_SECOND, QuoteBatch, TickBatch
from ingest.store import DuckDBStore, Store, TimeRange
from ingest.validation import QuarantineBatch

S = NS_PER_SECOND


def _ticks(n: int = 100, symbol: str = "SPY") -> TickBatch:
    return TickBatch(
        ts=np.arange(n) * S,
        symbol=np.array([symbol] * n),
        price=100 + np.arange(n) / 100,
        size=np.full(n, 10.0),
        seq=np.arange(n),
        suspicious=np.arange(n) % 10 == 0,
    )


def test_duckdb_store_implements_the_store_interface():
    with DuckDBStore(":memory:") as store:
        assert isinstance(store, Store)


def test_writing_the_same_ticks_twice_stores_them_once():
    with DuckDBStore(":memory:") as store:
        t = _ticks()
        assert store.write_ticks(t) == 100
        assert store.write_ticks(t) == 0
        assert store.write_ticks(TickBatch.concat([t.take(slice(50, 100)), _ticks(120).take(slice(100, 120))])) == 20
        assert store.counts()["ticks"] == 120


def test_range_query_is_half_open_and_ordered_by_symbol_and_time():
    with DuckDBStore(":memory:") as store:
        store.write_ticks(TickBatch.concat([_ticks(50, "B"), _ticks(50, "A")]))
        got = store.read_ticks("A", TimeRange(10 * S, 20 * S))
        assert got.ts.tolist() == [i * S for i in range(10, 20)]
        assert set(got.symbol) == {"A"}
        assert got.equals(_ticks(50, "A").take(slice(10, 20)))
        assert store.symbols() == ["A", "B"]


def test_bars_quotes_quarantine_alerts_and_signals_round_trip(tmp_path):
    path = tmp_path / "data" / "s.duckdb"
    q = QuoteBatch(
        ts=np.array([1, 2]),
        symbol=np.array(["X", "X"]),
        bid=np.array([1.0, 1.1]),
        ask=np.array([1.2, 1.3]),
        bid_size=np.array([1.0, 2.0]),
        ask_size=np.array([3.0, 4.0]),
        seq=np.array([0, 1]),
    )
    bars = build_bars(_ticks(300), q)
    rejected = QuarantineBatch(
        ts=np.array([np.iinfo(np.int64).min, 5]),
        symbol=np.array(["", "X"]),
        seq=np.array([0, 1]),
        kind=np.array(["tick", "quote"]),
        reason=np.array(["missing_field", "crossed_quote"]),
        field=np.array(["timestamp", "bid"]),
        value=np.array(["None", "1.5"]),
        payload=np.array(['{"a": 1}', '{"b": 2}']),
    )
    alerts = pd.DataFrame(
        {
            "ts": [5],
            "symbol": ["X"],
            "kind": ["flash_crash"],
            "detector": ["jump"],
            "score": [0.9],
            "severity": ["critical"],
            "details": ['{"drop": 0.05}'],
        }
    )
    signals = pd.DataFrame(
        {
            "ts": [6],
            "symbol": ["X"],
            "model": ["lgbm"],
            "action": ["buy"],
            "confidence": [0.7],
            "horizon_ns": [60 * S],
            "explanation": ["{}"],
        }
    )
    with DuckDBStore(path) as store:
        assert store.write_quotes(q) == 2
        assert store.write_bars(bars) == len(bars)
        assert store.write_bars(bars) == 0
        assert store.write_quarantine(rejected) == 2
        assert store.write_quarantine(rejected) == 0
        assert store.write_alerts(alerts) == 1
        assert store.write_alerts(alerts) == 0
        assert store.write_signals(signals) == 1
    with DuckDBStore(path, read_only=True) as store:  # persisted in the file
        assert store.read_quotes("X").equals(q)
        assert store.read_bars("SPY", bars.interval_ns[0]).equals(bars.take(bars.symbol == "SPY"))
        assert sorted(store.read_quarantine().reason) == ["crossed_quote", "missing_field"]
        assert store.read_alerts("X")["kind"].tolist() == ["flash_crash"]
        assert store.read_signals()["action"].tolist() == ["buy"]


def test_alerts_without_a_required_column_are_refused_naming_it():
    with DuckDBStore(":memory:") as store, pytest.raises(ValueError, match="'score'"):
        store.write_alerts(
            pd.DataFrame(
                {"ts": [1], "symbol": ["X"], "kind": ["k"], "detector": ["d"], "severity": ["info"], "details": [""]}
            )
        )
