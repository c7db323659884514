"""The ingest step: a stream fed batch by batch stores what one call stores; counts add up."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd

from ingest.pipeline import IngestPipeline, interval_label, parse_interval
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND
from ingest.sources import FrameReplay, RawBatch
from ingest.store import DuckDBStore
from ingest.validation import ValidationConfig

T0 = pd.Timestamp("2024-01-02T14:30:00Z")


def _market(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ts = T0 + pd.to_timedelta(np.cumsum(rng.integers(0, 500, n)), unit="ms")
    price = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    price[rng.random(n) < 0.01] = -1
    trades = pd.DataFrame(
        {"timestamp": ts, "symbol": rng.choice(["SPY", "QQQ"], n), "price": price, "size": rng.integers(1, 500, n)}
    )
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    bid = mid - 0.01
    ask = np.where(rng.random(n) < 0.01, bid - 0.02, mid + 0.01)  # some crossed quotes
    quotes = pd.DataFrame(
        {
            "timestamp": ts + pd.Timedelta(1, "ms"),
            "symbol": rng.choice(["SPY", "QQQ"], n),
            "bid": bid,
            "ask": ask,
            "bid_size": 100,
            "ask_size": 100,
        }
    )
    return trades, quotes


def _run(batches: list[RawBatch]) -> tuple[dict[str, int], pd.DataFrame, dict[str, object]]:
    with DuckDBStore(":memory:") as store:
        pipe = IngestPipeline(store, ValidationConfig(), (NS_PER_SECOND, NS_PER_MINUTE))
        for b in batches:
            pipe.process(b)
        stats = pipe.flush()
        bars = pd.concat([store.read_bars(s, NS_PER_SECOND).to_frame() for s in ("SPY", "QQQ")])
        return store.counts(), bars, stats.as_dict()


def test_streamed_replay_stores_exactly_what_one_batch_stores():
    trades, quotes = _market(5000, 1)
    one = _run([RawBatch(trades=trades, quotes=quotes)])

    async def collect() -> list[RawBatch]:
        return [b async for b in FrameReplay(trades=trades, quotes=quotes, speed=None, batch_rows=333).batches()]

    many = _run(asyncio.run(collect()))
    assert one[0] == many[0]
    pd.testing.assert_frame_equal(one[1].reset_index(drop=True), many[1].reset_index(drop=True))
    counts, _, stats = one
    assert counts["ticks"] + counts["quotes"] + counts["quarantine"] == 10_000
    assert stats["received"] == 10_000
    quarantined = stats["quarantined"]
    assert isinstance(quarantined, dict)
    assert set(quarantined) == {"non_positive_price", "crossed_quote"}


def test_interval_labels_and_parsing_agree():
    for text in ("1s", "1min", "5min", "1h", "1d"):
        assert interval_label(parse_interval(text)) == text
