"""The Binance parser and local book on a real capture: every line read, the book in sequence, rows valid."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ingest.sources.crypto.binance import (
    BinanceBookTicker,
    BinanceDecoder,
    BinanceMessage,
    BinanceTrade,
    parse_capture_line,
    parse_message,
    read_capture,
    replay_capture,
)
from ingest.sources.crypto.binance_book import DepthBook, DepthSnapshot, DepthUpdate
from ingest.sources.crypto.common import RowBatcher, VenueMessageError
from ingest.sources.crypto.symbols import UnmappedSymbolError, binance_symbols
from ingest.validation import Kind, ValidationConfig, ValidationResult, Validator
from tests.conftest import shared_data

CAPTURE = "binance_btcusdt_spot_ws_20240808.jsonl.gz"
LINES = 41_249
KINDS = {"bookTicker": 28_040, "trade": 9_757, "depthUpdate": 3_451, "depthSnapshot": 1}
#: After the capture's last message (2024-08-09 00:00 UTC): the clock of the future-timestamp rule.
AFTER_CAPTURE_NS = 1_723_161_700 * 1_000_000_000

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def capture():
    return shared_data(CAPTURE)


@pytest.fixture(scope="module")
def messages(capture) -> list[tuple[int, BinanceMessage]]:
    return list(read_capture(capture))


@pytest.fixture(scope="module")
def replay(capture):
    return replay_capture(capture)


@pytest.fixture(scope="module")
def book_replay(capture):
    return replay_capture(capture, quote_source="depth_book")


def _validate(kind: Kind, frame: pd.DataFrame, symbol: str = "BTC-USDT") -> ValidationResult[Any]:
    cfg = ValidationConfig(universe=frozenset({symbol}))
    return Validator(kind, cfg, clock=lambda: AFTER_CAPTURE_NS).validate(frame)


def test_real_capture_every_line_is_parsed_and_counted_by_stream_kind(replay):
    assert replay.lines == LINES
    assert dict(replay.counts) == KINDS
    assert sum(replay.counts.values()) == LINES
    assert len(replay.trades) == KINDS["trade"]
    assert len(replay.quotes) == KINDS["bookTicker"]


def test_real_capture_book_follows_the_sequence_rules_without_a_gap_or_a_crossed_state(replay):
    book = replay.books["BTCUSDT"]
    assert book.synced
    assert book.resyncs == 0
    assert list(book.gaps) == []
    assert book.stale_snapshots == 0
    # the two events before the recorded snapshot are contained in it; all others are applied
    assert (book.applied, book.dropped) == (KINDS["depthUpdate"] - 2, 2)
    assert not book.book.crossed
    assert replay.decoder.unused_snapshots == 0


def test_book_top_equals_book_ticker_at_every_shared_update_id(replay, book_replay):
    ticker = replay.quotes
    top = book_replay.quotes
    assert (top["bid"] < top["ask"]).all()
    both = ticker.merge(top, on="seq", suffixes=("_ticker", "_book"))
    assert len(both) > 500  # the same order-book update id seen by both streams
    for col in ("bid", "ask", "bid_size", "ask_size"):
        assert (both[f"{col}_ticker"] == both[f"{col}_book"]).all(), col


def test_trades_and_both_quote_sources_pass_validation_with_zero_rejections(replay, book_replay):
    cases: list[tuple[Kind, pd.DataFrame]] = [
        ("tick", replay.trades),
        ("quote", replay.quotes),
        ("quote", book_replay.quotes),
    ]
    for kind, frame in cases:
        result = _validate(kind, frame)
        assert len(result.rejected) == 0, (kind, list(result.rejected.reason[:5]))
        assert len(result.accepted) == len(frame)


def test_trade_rows_carry_trade_time_in_ns_and_trade_id_as_seq(messages, replay):
    receive_ns, first = next((t, m) for t, m in messages if isinstance(m, BinanceTrade))
    row = replay.trades.iloc[0]
    assert row["timestamp"] == first.trade_ns == 1_723_161_255_342_000_000
    assert row["seq"] == first.trade_id == 3_735_683_259
    assert (row["symbol"], row["price"], row["size"]) == ("BTC-USDT", 61837.63, 0.02)
    assert receive_ns == 1_723_161_254_087_896_568
    assert replay.trades["seq"].is_monotonic_increasing


def test_book_ticker_rows_are_stamped_with_the_local_receive_time(messages, replay):
    receive = [t for t, m in messages if isinstance(m, BinanceBookTicker)]
    assert replay.quotes["timestamp"].tolist() == receive


def test_usdt_book_read_as_usd_only_when_asked(capture):
    with pytest.raises(ValueError, match=r"symbol='BTC-USD'.*'BTC-USDT'"):
        replay_capture(capture, symbols=["BTC-USD"])
    as_usd = replay_capture(capture, symbols=["BTC-USD"], usdt_as_usd=True)
    assert set(as_usd.trades["symbol"]) == {"BTC-USD"}
    assert len(_validate("tick", as_usd.trades, symbol="BTC-USD").rejected) == 0


class ExchangeSnapshots:
    """Stands in for ``/api/v3/depth``: a book kept from the unspliced capture, answered ``lag`` events late."""

    def __init__(self, messages: list[tuple[int, BinanceMessage]], lag: int = 3) -> None:
        self._events = [m for _, m in messages if isinstance(m, DepthUpdate | DepthSnapshot)]
        self._book = DepthBook("BTCUSDT")
        self._pos = 0
        self.lag = lag
        self.calls: list[int] = []

    def _advance(self) -> None:
        msg = self._events[self._pos]
        self._pos += 1
        if isinstance(msg, DepthSnapshot):
            self._book.on_snapshot(msg)
        else:
            self._book.on_update(msg)

    def __call__(self, venue_symbol: str, newer_than: int) -> DepthSnapshot | None:
        self.calls.append(newer_than)
        while self._book.last_update_id is None or self._book.last_update_id < newer_than:
            self._advance()
        for _ in range(self.lag):
            self._advance()
        book = self._book.book
        return DepthSnapshot(
            self._book.last_update_id or 0,
            tuple(sorted(book.bids.items(), reverse=True)),
            tuple(sorted(book.asks.items())),
        )


def test_gap_spliced_into_the_capture_is_detected_and_resynced_from_a_snapshot(
    capture: Path, messages, book_replay, tmp_path: Path
) -> None:
    spliced = tmp_path / "spliced.jsonl.gz"
    depth_seen, dropped = 0, []
    with gzip.open(capture, "rt") as src, gzip.open(spliced, "wt") as dst:
        for line in src:
            if '"depthUpdate"' in line:
                depth_seen += 1
                if 1500 <= depth_seen < 1505:
                    dropped.append(json.loads(line.split(" ", 1)[1])["data"])
                    continue
            dst.write(line)
    snapshots = ExchangeSnapshots(messages, lag=3)
    result = replay_capture(spliced, quote_source="depth_book", snapshots=snapshots)

    book = result.books["BTCUSDT"]
    assert book.resyncs == 1
    (gap,) = book.gaps
    assert gap.kind == "gap"
    assert gap.expected == dropped[0]["U"]
    assert gap.first_update_id == dropped[-1]["u"] + 1
    assert book.synced
    # the first request is the start of the stream; the second is the resync, as new as the event after the gap
    assert snapshots.calls[-1] == gap.final_update_id
    # after the resync the book is the uninterrupted book again, update for update
    reference = book_replay.books["BTCUSDT"].book
    assert book.book.bids == reference.bids
    assert book.book.asks == reference.asks
    ref_top = book_replay.quotes.set_index("seq")
    top = result.quotes.set_index("seq")
    after = top[top.index > gap.final_update_id]
    assert len(after) > 1000
    assert after.equals(ref_top.loc[after.index])
    assert len(_validate("quote", result.quotes).rejected) == 0


def test_snapshot_older_than_the_buffer_is_refused_and_another_requested():
    book = DepthBook("BTCUSDT")
    update = DepthUpdate("BTCUSDT", 101, 105, 0, ((10.0, 1.0),), ((11.0, 1.0),))
    book.on_update(update)
    assert not book.on_snapshot(DepthSnapshot(90, ((9.0, 1.0),), ((12.0, 1.0),)))
    assert (book.needs_snapshot, book.stale_snapshots) == (True, 1)
    assert book.on_snapshot(DepthSnapshot(102, ((9.0, 1.0),), ((12.0, 1.0),)))
    assert book.last_update_id == 105
    assert book.book.best_bid() == (10.0, 1.0)
    assert book.book.best_ask() == (11.0, 1.0)


def test_zero_quantity_removes_a_level_and_moves_the_best_price():
    book = DepthBook("BTCUSDT")
    book.on_snapshot(DepthSnapshot(1, ((10.0, 1.0), (9.0, 2.0)), ((11.0, 1.0), (12.0, 3.0))))
    book.on_update(DepthUpdate("BTCUSDT", 2, 2, 0, ((10.0, 0.0), (8.5, 0.0)), ((11.0, 0.0),)))
    assert book.book.best_bid() == (9.0, 2.0)
    assert book.book.best_ask() == (12.0, 3.0)
    assert book.resyncs == 0


def test_update_that_crosses_the_book_discards_it_and_starts_a_resync():
    book = DepthBook("BTCUSDT")
    book.on_snapshot(DepthSnapshot(1, ((10.0, 1.0),), ((11.0, 1.0),)))
    book.on_update(DepthUpdate("BTCUSDT", 2, 3, 0, ((11.5, 1.0),), ()))
    assert book.needs_snapshot
    assert [g.kind for g in book.gaps] == ["crossed"]
    assert book.resyncs == 1


def test_malformed_messages_raise_naming_the_field_and_the_value():
    trade = {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 1, "p": "abc", "q": "1", "T": 1}
    with pytest.raises(VenueMessageError, match=r"binance: p='abc': expected a decimal number"):
        parse_message({"stream": "btcusdt@trade", "data": trade})
    with pytest.raises(VenueMessageError, match=r"stream='btcusdt@kline_1m'"):
        parse_message({"stream": "btcusdt@kline_1m", "data": {"s": "BTCUSDT"}})
    with pytest.raises(VenueMessageError, match=r"local_receive_ns='abc'"):
        parse_capture_line('abc {"stream": "x"}')
    decoder = BinanceDecoder(binance_symbols(["ETH-USDT"]), RowBatcher())
    with pytest.raises(UnmappedSymbolError, match=r"symbol='BTCUSDT'"):
        decoder.feed(parse_message({"stream": "btcusdt@trade", "data": {**trade, "p": "1"}}), 0)


def test_row_batcher_cuts_by_rows_or_by_age_whichever_first():
    now = [0.0]
    batcher = RowBatcher(max_rows=3, max_delay_s=0.1, clock=lambda: now[0])
    batcher.add_trade(1, "BTC-USDT", 1.0, 1.0, 1)
    assert not batcher.due()
    now[0] = 0.1
    assert batcher.due()
    batcher.take()
    for i in range(3):
        batcher.add_quote(i, "BTC-USDT", 1.0, 2.0, 1.0, 1.0, i)
    assert batcher.due()
    batch = batcher.take()
    assert batch.trades is None
    assert batch.quotes is not None
    assert list(batch.quotes.columns) == ["timestamp", "symbol", "bid", "ask", "bid_size", "ask_size", "seq"]
    assert len(batcher) == 0
