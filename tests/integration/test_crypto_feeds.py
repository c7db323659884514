"""The Binance and Coinbase adapters against local servers speaking their protocols, on loopback.

The Binance server replays the real capture; every batch the adapter yields goes through validation.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pandas as pd
import pytest

from ingest.sources.crypto import LIVE_SOURCES, BinanceSource, CoinbaseSource
from ingest.sources.crypto.coinbase import CoinbaseDecoder, parse_message
from ingest.sources.crypto.common import RowBatcher
from ingest.sources.crypto.symbols import coinbase_symbols
from ingest.sources.live import Backoff, FatalFeedError, FeedError
from ingest.validation import ValidationConfig, Validator
from tests.conftest import shared_data
from tests.integration.fake_exchanges import FakeBinance, FakeCoinbase

CAPTURE = "binance_btcusdt_spot_ws_20240808.jsonl.gz"
TRADES, BOOK_TICKERS = 9_757, 28_040
#: Trade id of the capture's last trade.
LAST_TRADE_ID = 3_735_693_015


@pytest.fixture(scope="module")
def capture():
    return shared_data(CAPTURE)


class Collector:
    """Runs a source's batches through validation and keeps what was accepted."""

    def __init__(self, universe: set[str]) -> None:
        cfg = ValidationConfig(universe=frozenset(universe))
        self.validators = {"tick": Validator("tick", cfg), "quote": Validator("quote", cfg)}
        self.trades: list[pd.DataFrame] = []
        self.quotes: list[pd.DataFrame] = []
        self.rejected = 0
        self.batches = 0
        self.largest = 0

    def take(self, batch) -> None:
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        for kind, frame, out in (("tick", batch.trades, self.trades), ("quote", batch.quotes, self.quotes)):
            if frame is not None and len(frame):
                result = self.validators[kind].validate(frame)
                self.rejected += len(result.rejected)
                out.append(frame)

    @property
    def trade_ids(self) -> list[int]:
        return [int(s) for f in self.trades for s in f["seq"]]

    @property
    def n_quotes(self) -> int:
        return sum(len(f) for f in self.quotes)


async def consume(source, collector: Collector, until, timeout_s: float = 20.0) -> None:
    async def run() -> None:
        gen = source.batches()
        try:
            async for batch in gen:
                collector.take(batch)
                if until():
                    return
        finally:
            await gen.aclose()

    await asyncio.wait_for(run(), timeout_s)


def recording_sleep(waits: list[float]):
    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    return sleep


def binance(server: FakeBinance, waits: list[float] | None = None, **options) -> BinanceSource:
    options.setdefault("stale_after_s", 2.0)
    source = LIVE_SOURCES["binance"](
        ["BTC-USDT"],
        ws_url=server.ws_url,
        rest_url=server.rest_url,
        batch_rows=500,
        batch_ms=50.0,
        backoff=Backoff(0.01, 0.05, rng=random.Random(1)),  # noqa: S311 - jitter, not a secret
        sleep=recording_sleep(waits if waits is not None else []),
        **options,
    )
    assert isinstance(source, BinanceSource)
    return source


def test_binance_replayed_capture_arrives_in_batches_that_validation_accepts_whole(capture):
    async def main() -> tuple[Collector, BinanceSource, FakeBinance]:
        async with FakeBinance(capture) as server:
            source = binance(server)
            got = Collector({"BTC-USDT"})
            await consume(source, got, lambda: len(got.trade_ids) == TRADES and got.n_quotes == BOOK_TICKERS)
            return got, source, server

    got, source, server = asyncio.run(main())
    assert got.rejected == 0
    assert len(got.trade_ids) == TRADES
    assert got.trade_ids == sorted(set(got.trade_ids))
    assert got.n_quotes == BOOK_TICKERS
    assert got.largest <= 500
    assert got.batches < (TRADES + BOOK_TICKERS) / 20  # batched, not one batch per message
    book = source.books["BTCUSDT"]
    assert book.synced
    assert source.resyncs == 0
    assert list(book.gaps) == []
    assert book.book.best_bid() == (max(server.bids), float(server.bids[max(server.bids)]))
    assert book.book.best_ask() == (min(server.asks), float(server.asks[min(server.asks)]))
    assert (source.sessions, source.failures) == (1, 0)


def test_binance_dropped_connection_reconnects_with_backoff_resyncs_the_book_and_continues(capture):
    waits: list[float] = []

    async def main() -> tuple[Collector, BinanceSource, FakeBinance]:
        async with FakeBinance(capture, drop_at=15_000) as server:
            source = binance(server, waits)
            got = Collector({"BTC-USDT"})

            def done() -> bool:
                return bool(got.trades) and int(got.trades[-1]["seq"].iloc[-1]) >= LAST_TRADE_ID

            await consume(source, got, done)
            return got, source, server

    got, source, server = asyncio.run(main())
    assert server.connections == 2
    assert (source.sessions, source.failures) == (2, 1)
    assert len(waits) == 1
    assert 0 <= waits[0] <= 0.01  # the first backoff ceiling
    assert server.snapshot_requests == source.snapshot_requests == 2
    assert source.books["BTCUSDT"].synced
    assert got.rejected == 0
    ids = got.trade_ids
    assert ids == sorted(set(ids))
    assert len(ids) > TRADES - 100  # at most what sat in the aborted socket's buffers is lost


def test_binance_silent_server_raises_stale_feed_and_the_source_reconnects(capture, caplog):
    caplog.set_level(logging.WARNING, logger="ingest.sources.live")

    async def main() -> tuple[Collector, BinanceSource, FakeBinance]:
        async with FakeBinance(capture, silent_at=5_000) as server:
            source = binance(server, stale_after_s=0.5)
            got = Collector({"BTC-USDT"})
            await consume(source, got, lambda: len(got.trade_ids) >= TRADES - 10)
            return got, source, server

    got, source, server = asyncio.run(main())
    assert server.connections == 2
    assert source.failures == 1
    assert any("no message for 0.5 s" in r.getMessage() for r in caplog.records)
    assert got.rejected == 0


def test_binance_unknown_symbol_is_fatal(capture):
    async def main() -> None:
        async with FakeBinance(capture) as server:
            source = LIVE_SOURCES["binance"](["ETH-USDT"], ws_url=server.ws_url, rest_url=server.rest_url)
            await consume(source, Collector({"ETH-USDT"}), lambda: True, timeout_s=5.0)

    with pytest.raises(FatalFeedError, match=r"symbol='ETHUSDT': unknown to Binance"):
        asyncio.run(main())


def test_coinbase_subscribes_and_converts_matches_and_tickers_with_their_fields():
    async def main() -> tuple[Collector, CoinbaseSource, FakeCoinbase]:
        async with FakeCoinbase(matches=200) as server:
            source = LIVE_SOURCES["coinbase"](
                ["BTC-USD", "ETH-USD"], ws_url=server.ws_url, batch_rows=100, batch_ms=20.0, stale_after_s=2.0
            )
            assert isinstance(source, CoinbaseSource)
            got = Collector({"BTC-USD", "ETH-USD"})
            await consume(source, got, lambda: len(got.trade_ids) == 402 and got.n_quotes == 400)
            return got, source, server

    got, source, server = asyncio.run(main())
    assert server.subscribe_requests == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["ticker", "matches", "heartbeat"]}
    ]
    assert got.rejected == 0
    assert source.decoder.counts["subscriptions"] == 1
    assert source.decoder.counts["heartbeat"] > 0
    assert got.largest <= 100
    sent_match = next(m for m in server.sent if m["type"] == "match" and m["product_id"] == "ETH-USD")
    sent_ticker = next(m for m in server.sent if m["type"] == "ticker" and m["product_id"] == "ETH-USD")
    trades = {(r.symbol, r.seq): r for f in got.trades for r in f.itertuples()}
    quotes = {(r.symbol, r.seq): r for f in got.quotes for r in f.itertuples()}
    t = trades[("ETH-USD", sent_match["trade_id"])]
    assert (t.price, t.size) == (float(sent_match["price"]), float(sent_match["size"]))
    assert t.timestamp == _ns(sent_match["time"])
    q = quotes[("ETH-USD", sent_ticker["sequence"])]
    assert (q.bid, q.ask) == (float(sent_ticker["best_bid"]), float(sent_ticker["best_ask"]))
    assert (q.bid_size, q.ask_size) == (float(sent_ticker["best_bid_size"]), float(sent_ticker["best_ask_size"]))
    assert q.timestamp == _ns(sent_ticker["time"])


def _ns(iso: str) -> int:
    return int(pd.Timestamp(iso).value)


def test_coinbase_error_on_subscribe_is_fatal():
    async def main() -> None:
        async with FakeCoinbase() as server:
            source = CoinbaseSource(["BTC-USD", "DOGE-USD"], ws_url=server.ws_url)
            await consume(source, Collector({"BTC-USD"}), lambda: True, timeout_s=5.0)

    with pytest.raises(FatalFeedError, match=r"subscribe refused.*DOGE-USD is not a valid product"):
        asyncio.run(main())


def test_coinbase_error_after_subscription_that_is_not_about_it_restarts_the_connection():
    decoder = CoinbaseDecoder(coinbase_symbols(["BTC-USD"]), RowBatcher())
    with pytest.raises(FeedError, match="slow consumer") as info:
        decoder.feed(parse_message({"type": "error", "message": "slow consumer", "reason": "buffer full"}), 0)
    assert not isinstance(info.value, FatalFeedError)
    with pytest.raises(FatalFeedError):
        decoder.feed(parse_message({"type": "error", "message": "Failed to subscribe", "reason": "x"}), 0)
