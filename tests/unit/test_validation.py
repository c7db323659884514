"""Validation: every bad-input kind is quarantined with its reason, every valid row is kept."""

from __future__ import annotations

import itertools
import json
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.pipeline import IngestPipeline
from ingest.records import NS_PER_SECOND
from ingest.sources.base import RawBatch
from ingest.store.duckdb_store import DuckDBStore
from ingest.validation import Reason, ValidationConfig, Validator

T0 = pd.Timestamp("2024-01-02T14:30:00Z").value
NOW = T0 + 3600 * NS_PER_SECOND
CONFIG = ValidationConfig(universe=frozenset({"SPY", "AAPL"}), out_of_order_tolerance_ns=NS_PER_SECOND)


def iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat()


def fixed_clock() -> int:
    return NOW


def mixed_trades() -> tuple[pd.DataFrame, dict[int, tuple[str, str]]]:
    """Valid trades interleaved with one row of each bad kind; returns the frame and the expected rejections
    (row -> (reason, field))."""
    s = NS_PER_SECOND
    rows: list[dict[str, object]] = []
    expected: dict[int, tuple[str, str]] = {}

    def add(ts: object, symbol: object, price: object, size: object, seq: object, bad: tuple[str, str] | None = None):
        if bad:
            expected[len(rows)] = bad
        rows.append({"timestamp": ts, "symbol": symbol, "price": price, "size": size, "seq": seq})

    add(iso(T0), "SPY", "470.10", "100", "1")
    add(iso(T0 + 1 * s), "AAPL", "190.00", "50", "2")
    add(iso(T0 + 2 * s), "SPY", "nan", "100", "3", ("not_finite", "price"))
    add(iso(T0 + 2 * s), "SPY", "470.20", "inf", "4", ("not_finite", "size"))
    add(iso(T0 + 3 * s), "SPY", "0", "100", "5", ("non_positive_price", "price"))
    add(iso(T0 + 3 * s), "SPY", "-470.2", "100", "6", ("non_positive_price", "price"))
    add(iso(T0 + 4 * s), "SPY", "470.25", "-5", "7", ("negative_size", "size"))
    add(iso(NOW + 3600 * s), "SPY", "470.30", "100", "8", ("future_timestamp", "timestamp"))
    add(iso(T0 + 10 * s), "SPY", "470.30", "100", "9")
    add(iso(T0 + 5 * s), "SPY", "470.31", "100", "10", ("out_of_order", "timestamp"))
    add(iso(T0 + int(9.5 * s)), "SPY", "470.29", "100", "11")  # late but within tolerance: kept
    add(iso(T0 + 10 * s), "SPY", "470.30", "100", "9", ("duplicate", "seq"))
    add(iso(T0 + 11 * s), "ZZZZ", "10.0", "100", "12", ("unknown_symbol", "symbol"))
    add(iso(T0 + 11 * s), None, "10.0", "100", "13", ("missing_field", "symbol"))
    add(iso(T0 + 11 * s), "SPY", "", "100", "14", ("missing_field", "price"))
    add(None, "SPY", "470.3", "100", "15", ("missing_field", "timestamp"))
    add(iso(T0 + 11 * s), "SPY", "abc", "100", "16", ("malformed", "price"))
    add("yesterday", "SPY", "470.3", "100", "17", ("malformed", "timestamp"))
    for k in range(5):  # enough history for the fat-finger reference
        add(iso(T0 + 12 * s + k), "SPY", f"{470.3 + k / 100:.2f}", "100", str(30 + k))
    add(iso(T0 + 12 * s + 10), "SPY", "4703.0", "100", "18")  # fat finger: kept, flagged suspicious
    add(iso(T0 + 13 * s), "AAPL", "190.10", "0", "19")  # zero size is allowed (a correction print)
    return pd.DataFrame(rows), expected


def test_every_bad_trade_kind_is_quarantined_with_its_reason_and_every_valid_one_is_stored():
    raw, expected = mixed_trades()
    with DuckDBStore(":memory:") as store:
        pipe = IngestPipeline(store, CONFIG, bar_intervals_ns=(NS_PER_SECOND * 60,), clock=fixed_clock, source="test")
        stats = pipe.process(RawBatch(trades=raw))
        pipe.flush()
        stored = store.read_ticks("SPY").to_frame()
        stored_aapl = store.read_ticks("AAPL")
        quarantine = store.read_quarantine().to_frame()

    valid_rows = [i for i in range(len(raw)) if i not in expected]
    assert stats.accepted["trades"] == len(valid_rows)
    assert stats.rejected == len(expected)
    assert stats.accepted["trades"] + stats.rejected == len(raw)
    assert len(stored) + len(stored_aapl) == len(valid_rows)
    assert sorted(quarantine["reason"]) == sorted(r for r, _ in expected.values())
    # every kind of bad input is covered by this test
    assert {r for r, _ in expected.values()} == {r.value for r in Reason} - {"crossed_quote", "inconsistent_bar"}
    for _, row in quarantine.iterrows():
        payload = json.loads(row["payload"])
        original = raw[(raw["seq"] == str(payload["seq"]))]
        assert len(original) >= 1
        idx = [i for i in original.index if i in expected and expected[i][0] == row["reason"]]
        assert idx, f"unexpected quarantine {row['reason']} for {row['payload']}"
        assert expected[idx[0]][1] == row["field"]
        assert payload["_source"] == "test"
    fat = stored[stored["price"] == 4703.0]
    assert len(fat) == 1
    assert bool(fat["suspicious"].iloc[0])
    assert int(stored["suspicious"].sum()) == 1


def test_crossed_quote_is_quarantined_and_locked_quote_kept():
    raw = pd.DataFrame(
        {
            "timestamp": [iso(T0), iso(T0 + 1), iso(T0 + 2)],
            "symbol": ["SPY"] * 3,
            "bid": [470.0, 470.2, 470.1],
            "ask": [470.1, 470.1, 470.1],
            "bid_size": [100, 100, 100],
            "ask_size": [200, 200, 200],
        }
    )
    res = Validator("quote", CONFIG, clock=fixed_clock).validate(raw)
    assert len(res.accepted) == 2
    assert list(res.rejected.reason) == ["crossed_quote"]
    assert list(res.rejected.field) == ["bid"]
    assert "470.2" in res.rejected.value[0]


def test_inconsistent_bar_is_quarantined_naming_the_field():
    raw = pd.DataFrame(
        {
            "timestamp": [iso(T0), iso(T0 + 60 * NS_PER_SECOND)],
            "symbol": ["SPY", "SPY"],
            "open": [10.0, 10.0],
            "high": [11.0, 9.0],
            "low": [9.0, 8.0],
            "close": [10.5, 10.0],
            "volume": [5, 5],
        }
    )
    res = Validator("bar", CONFIG, clock=fixed_clock).validate(raw, interval_ns=60 * NS_PER_SECOND)
    assert len(res.accepted) == 1
    assert list(res.rejected.reason) == ["inconsistent_bar"]
    assert list(res.rejected.field) == ["high"]


def test_missing_column_quarantines_every_row_naming_the_column():
    raw = pd.DataFrame({"timestamp": [iso(T0)], "symbol": ["SPY"], "price": [1.0]})
    res = Validator("tick", CONFIG, clock=fixed_clock).validate(raw)
    assert len(res.accepted) == 0
    assert list(res.rejected.reason) == ["missing_field"]
    assert list(res.rejected.field) == ["size"]
    assert res.rejected.value[0] == "<absent>"


def _random_trades(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.integers(0, 400_000_000, n))
    ts = ts - rng.integers(0, 3 * NS_PER_SECOND, n) * (rng.random(n) < 0.1)  # some late rows
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    price[rng.random(n) < 0.02] *= 3  # fat fingers
    price[rng.random(n) < 0.02] = -1.0
    seq = np.arange(n)
    dup = rng.random(n) < 0.05
    seq[dup] = np.maximum(seq[dup] - 1, 0)
    ts[dup] = np.roll(ts, 1)[dup]
    return pd.DataFrame(
        {
            "timestamp": ts,
            "symbol": rng.choice(["SPY", "AAPL", "ZZZ"], n, p=[0.6, 0.35, 0.05]),
            "price": price,
            "size": rng.integers(-1, 500, n).astype(float),
            "seq": seq,
        }
    )


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_validating_in_batches_equals_validating_in_one_call(seed: int, cuts: list[int]):
    raw = _random_trades(seed, 400)
    whole = Validator("tick", CONFIG, clock=fixed_clock).validate(raw)
    v = Validator("tick", CONFIG, clock=fixed_clock)
    bounds = [0, *sorted(set(cuts)), len(raw)]
    parts = [v.validate(raw.iloc[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    accepted = type(whole.accepted).concat([p.accepted for p in parts])
    assert accepted.equals(whole.accepted)
    reasons = np.concatenate([p.rejected.reason for p in parts]) if parts else np.empty(0)
    assert list(reasons) == list(whole.rejected.reason)
    assert len(accepted) + len(reasons) == len(raw)


def test_validator_pickled_mid_stream_continues_identically():
    raw = _random_trades(7, 600)
    a = Validator("tick", CONFIG, clock=fixed_clock)
    a.validate(raw.iloc[:300])
    b = pickle.loads(pickle.dumps(a))
    ra, rb = a.validate(raw.iloc[300:]), b.validate(raw.iloc[300:])
    assert ra.accepted.equals(rb.accepted)
    assert list(ra.rejected.reason) == list(rb.rejected.reason)


def test_out_of_order_tolerance_is_configurable():
    raw = pd.DataFrame(
        {
            "timestamp": [T0 + 10 * NS_PER_SECOND, T0 + 7 * NS_PER_SECOND],
            "symbol": ["SPY"] * 2,
            "price": [1.0, 1.0],
            "size": [1.0, 1.0],
        }
    )
    strict = Validator("tick", CONFIG, clock=fixed_clock).validate(raw)
    lax = Validator("tick", ValidationConfig(out_of_order_tolerance_ns=5 * NS_PER_SECOND), clock=fixed_clock)
    assert list(strict.rejected.reason) == ["out_of_order"]
    assert len(lax.validate(raw).accepted) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("out_of_order_tolerance_ns", -1),
        ("future_tolerance_ns", -5),
        ("suspicious_window", 0),
        ("suspicious_threshold", 0.0),
    ],
)
def test_validation_config_rejects_bad_values_naming_them(field: str, value: Any):
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        ValidationConfig(**kwargs)
