"""Binance spot market data: the combined-stream parser, a replay of recorded captures and the live adapter.

Streams and what they become
----------------------------
``<symbol>@trade``
    a trade row: ``timestamp`` = trade time ``T`` (ms, to ns), ``price`` = ``p``, ``size`` = ``q``,
    ``seq`` = trade id ``t``.
``<symbol>@bookTicker``
    a quote row: best bid/ask and their quantities, ``seq`` = order-book update id ``u``. Spot bookTicker
    messages carry no event time, so ``timestamp`` is the **local receive time** (ns UTC). It is on the local
    clock, not the exchange's: in the reference capture the local clock ran about 1.3 s behind Binance's.
``<symbol>@depth@100ms``
    diff-depth events kept in a local order book (:mod:`ingest.sources.crypto.binance_book`), synchronised
    from REST snapshots by Binance's sequence rules and resynchronised after a gap.

Quotes come from one source per feed, chosen by ``quote_source``: ``"book_ticker"`` (default; every change
of the top of the book, stamped on receipt) or ``"depth_book"`` (the top of the local book after each applied
depth event, ``timestamp`` = event time ``E``, ``seq`` = the event's final update id ``u``, at most ten a second).
The two are never mixed in one stream: their clocks differ, and the validator would see them out of order.

Everything here but :class:`BinanceSource` is pure: :func:`parse_message`, :class:`BinanceDecoder` and
:func:`replay_capture` read a recorded capture with the exact code the live adapter runs.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import pandas as pd
from websockets.asyncio.client import connect

from ingest.sources.base import RawBatch
from ingest.sources.crypto.binance_book import DepthBook, DepthSnapshot, DepthUpdate, Levels, OrderBook
from ingest.sources.crypto.common import (
    NS_PER_MS,
    RowBatcher,
    VenueMessageError,
    decimal_field,
    deliver,
    get_field,
    int_field,
    receive_batches,
)
from ingest.sources.crypto.symbols import SymbolMap, binance_symbols
from ingest.sources.live import Backoff, FatalFeedError, FeedError, LiveSource, RateLimiter

log = logging.getLogger(__name__)

VENUE = "binance"
BINANCE_WS_URL = "wss://stream.binance.com:9443"
BINANCE_REST_URL = "https://api.binance.com"
#: Binance's "Invalid symbol." error code on REST.
INVALID_SYMBOL_CODE = -1121

QuoteSource = Literal["book_ticker", "depth_book"]


@dataclass(frozen=True, slots=True)
class BinanceTrade:
    """A ``trade`` event. Times in ns UTC; ``buyer_is_maker`` True means the seller was the aggressor."""

    symbol: str
    trade_id: int
    price: float
    quantity: float
    trade_ns: int
    event_ns: int
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True)
class BinanceBookTicker:
    """A ``bookTicker`` event: best bid and ask with their quantities, as of order-book update ``update_id``."""

    symbol: str
    update_id: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


BinanceMessage = BinanceTrade | BinanceBookTicker | DepthUpdate | DepthSnapshot


# ------------------------------------------------------------------------------------------------------------
# parsing: venue JSON -> typed messages


def _levels(obj: Mapping[str, Any], name: str) -> Levels:
    raw = get_field(obj, name, VENUE)
    if not isinstance(raw, list):
        raise VenueMessageError(VENUE, name, raw, "expected a list of [price, quantity] pairs")
    out = []
    for i, level in enumerate(raw):
        if not isinstance(level, list | tuple) or len(level) != 2:
            raise VenueMessageError(VENUE, f"{name}[{i}]", level, "expected a [price, quantity] pair")
        pair = {"price": level[0], "quantity": level[1]}
        out.append((decimal_field(pair, "price", VENUE), decimal_field(pair, "quantity", VENUE)))
    return tuple(out)


def parse_snapshot(obj: Any) -> DepthSnapshot:
    """A REST depth snapshot ``{"lastUpdateId", "bids", "asks"}``."""
    if not isinstance(obj, dict):
        raise VenueMessageError(VENUE, "snapshot", obj, "expected a JSON object")
    return DepthSnapshot(int_field(obj, "lastUpdateId", VENUE), _levels(obj, "bids"), _levels(obj, "asks"))


def parse_message(obj: Any) -> BinanceMessage:
    """One decoded JSON message: a combined-stream envelope ``{"stream", "data"}`` or a depth snapshot.

    Raises :class:`~ingest.sources.crypto.common.VenueMessageError` naming the field for anything else.

    Examples
    --------
    >>> parse_message({"stream": "btcusdt@bookTicker", "data": {"u": 7, "s": "BTCUSDT", "b": "1.0",
    ...                "B": "2", "a": "1.5", "A": "3"}})
    BinanceBookTicker(symbol='BTCUSDT', update_id=7, bid=1.0, bid_qty=2.0, ask=1.5, ask_qty=3.0)
    """
    if isinstance(obj, dict) and "lastUpdateId" in obj:
        return parse_snapshot(obj)
    if not isinstance(obj, dict):
        raise VenueMessageError(VENUE, "message", obj, "expected a JSON object")
    stream = get_field(obj, "stream", VENUE)
    data = get_field(obj, "data", VENUE)
    if not isinstance(stream, str) or "@" not in stream:
        raise VenueMessageError(VENUE, "stream", stream, "expected '<symbol>@<channel>'")
    if not isinstance(data, dict):
        raise VenueMessageError(VENUE, "data", data, "expected a JSON object")
    channel = stream.split("@", 1)[1]
    symbol = get_field(data, "s", VENUE)
    if channel == "trade":
        return BinanceTrade(
            symbol=symbol,
            trade_id=int_field(data, "t", VENUE),
            price=decimal_field(data, "p", VENUE),
            quantity=decimal_field(data, "q", VENUE),
            trade_ns=int_field(data, "T", VENUE) * NS_PER_MS,
            event_ns=int_field(data, "E", VENUE) * NS_PER_MS,
            buyer_is_maker=bool(data.get("m", False)),
        )
    if channel == "bookTicker":
        return BinanceBookTicker(
            symbol=symbol,
            update_id=int_field(data, "u", VENUE),
            bid=decimal_field(data, "b", VENUE),
            bid_qty=decimal_field(data, "B", VENUE),
            ask=decimal_field(data, "a", VENUE),
            ask_qty=decimal_field(data, "A", VENUE),
        )
    if channel.startswith("depth") and data.get("e") == "depthUpdate":
        return DepthUpdate(
            symbol=symbol,
            first_update_id=int_field(data, "U", VENUE),
            final_update_id=int_field(data, "u", VENUE),
            event_ns=int_field(data, "E", VENUE) * NS_PER_MS,
            bids=_levels(data, "b"),
            asks=_levels(data, "a"),
        )
    raise VenueMessageError(VENUE, "stream", stream, "not a trade, bookTicker or diff-depth stream")


def parse_capture_line(line: str | bytes) -> tuple[int, BinanceMessage]:
    """One line of a capture, ``<local_receive_ns> <JSON as the exchange sent it>``."""
    text = line.decode() if isinstance(line, bytes) else line
    head, sep, payload = text.strip().partition(" ")
    if not sep or not head.isdigit():
        raise VenueMessageError(VENUE, "local_receive_ns", head, "expected '<integer ns> <JSON>' on each line")
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise VenueMessageError(VENUE, "message", payload[:80], f"not JSON ({exc.msg})") from None
    return int(head), parse_message(obj)


# ------------------------------------------------------------------------------------------------------------
# decoding: typed messages -> rows and local books


class BinanceDecoder:
    """Turns parsed messages into rows of the input contract and keeps the local books.

    Parameters
    ----------
    symbols : SymbolMap
        The subscribed symbols (venue <-> project).
    batcher : RowBatcher
        Where rows go.
    quote_source : {"book_ticker", "depth_book"}
        Which messages make quotes (see the module notes).
    depth : bool
        Keep a local book per symbol from depth events (required by ``quote_source="depth_book"``).
    max_buffer : int
        Most depth events a book buffers while it waits for a snapshot.

    Attributes
    ----------
    counts : Counter
        Messages taken, by kind: ``trade``, ``bookTicker``, ``depthUpdate``, ``depthSnapshot``.
    books : dict of str to DepthBook
        The local book of each venue symbol (empty when ``depth`` is False).
    unused_snapshots : int
        Recorded snapshots that arrived while their book was in sync (not needed, not applied).
    """

    def __init__(
        self,
        symbols: SymbolMap,
        batcher: RowBatcher,
        quote_source: QuoteSource = "book_ticker",
        depth: bool = True,
        max_buffer: int = 10_000,
    ) -> None:
        if quote_source not in ("book_ticker", "depth_book"):
            raise ValueError(f"quote_source={quote_source!r}: must be 'book_ticker' or 'depth_book'")
        if quote_source == "depth_book" and not depth:
            raise ValueError("quote_source='depth_book' needs depth=True")
        self.symbols = symbols
        self.batcher = batcher
        self.quote_source: QuoteSource = quote_source
        self.depth = depth
        self.counts: Counter[str] = Counter()
        self.books = {s: DepthBook(s, max_buffer=max_buffer) for s in symbols.venue_symbols} if depth else {}
        self.unused_snapshots = 0
        self._on_applied = self._book_quote if quote_source == "depth_book" else None

    @property
    def resyncs(self) -> int:
        """Books discarded after a gap or a crossed book, all symbols."""
        return sum(b.resyncs for b in self.books.values())

    def reset_books(self) -> None:
        """A new connection: every book waits for a new snapshot."""
        for book in self.books.values():
            book.reset()

    def needing_snapshot(self) -> list[str]:
        """Venue symbols whose book waits for a snapshot."""
        return [s for s, b in self.books.items() if b.needs_snapshot]

    def feed(self, message: BinanceMessage, receive_ns: int) -> None:
        """Take one message received at ``receive_ns`` (ns UTC, local clock)."""
        if isinstance(message, BinanceTrade):
            self.counts["trade"] += 1
            self.batcher.add_trade(
                message.trade_ns,
                self.symbols.project(message.symbol),
                message.price,
                message.quantity,
                message.trade_id,
            )
        elif isinstance(message, BinanceBookTicker):
            self.counts["bookTicker"] += 1
            project = self.symbols.project(message.symbol)
            if self.quote_source == "book_ticker":
                self.batcher.add_quote(
                    receive_ns, project, message.bid, message.ask, message.bid_qty, message.ask_qty, message.update_id
                )
        elif isinstance(message, DepthUpdate):
            self.counts["depthUpdate"] += 1
            self.symbols.project(message.symbol)
            if self.depth:
                self.books[message.symbol].on_update(message, self._on_applied)
        else:
            self.counts["depthSnapshot"] += 1
            if len(self.books) != 1:
                raise VenueMessageError(
                    VENUE,
                    "lastUpdateId",
                    message.last_update_id,
                    f"a recorded snapshot names no symbol; cannot tell which of {sorted(self.books)} it is for",
                )
            venue_symbol = next(iter(self.books))
            if self.books[venue_symbol].needs_snapshot:
                self.snapshot(venue_symbol, message)
            else:
                self.unused_snapshots += 1

    def snapshot(self, venue_symbol: str, snapshot: DepthSnapshot) -> bool:
        """Give ``venue_symbol``'s book a snapshot; ``False`` when it was older than the buffered events."""
        return self.books[venue_symbol].on_snapshot(snapshot, self._on_applied)

    def _book_quote(self, update: DepthUpdate, book: OrderBook) -> None:
        bid, ask = book.best_bid(), book.best_ask()
        if bid is None or ask is None:
            return
        self.batcher.add_quote(
            update.event_ns, self.symbols.project(update.symbol), bid[0], ask[0], bid[1], ask[1], update.final_update_id
        )


# ------------------------------------------------------------------------------------------------------------
# replay of a recorded capture


class ReplaySnapshots(Protocol):
    """Snapshots for a replay's resyncs: one as new as update id ``newer_than`` or newer, or ``None``."""

    def __call__(self, venue_symbol: str, newer_than: int) -> DepthSnapshot | None: ...


@dataclass
class CaptureReplay:
    """What a capture held.

    Attributes
    ----------
    lines : int
        Lines read (every line is parsed; an unreadable one raises).
    counts : Counter
        Messages by kind (``trade``, ``bookTicker``, ``depthUpdate``, ``depthSnapshot``).
    trades, quotes : DataFrame
        Rows in the input contract (``timestamp`` int ns UTC, project symbols, ``seq``).
    decoder : BinanceDecoder
        The decoder after the last line: its books, resync counts and gaps.
    """

    lines: int
    counts: Counter[str]
    trades: pd.DataFrame
    quotes: pd.DataFrame
    decoder: BinanceDecoder

    @property
    def books(self) -> dict[str, DepthBook]:
        """The local book of each venue symbol."""
        return self.decoder.books


def read_capture(path: str | Path) -> Iterator[tuple[int, BinanceMessage]]:
    """``(local_receive_ns, message)`` for every line of a capture (``.gz`` or plain text)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                yield parse_capture_line(line)
            except VenueMessageError as exc:
                raise VenueMessageError(VENUE, f"{path.name}:{number} {exc.field}", exc.value, exc.rule) from exc


def replay_capture(
    path: str | Path,
    symbols: Sequence[str] = ("BTC-USDT",),
    quote_source: QuoteSource = "book_ticker",
    snapshots: ReplaySnapshots | None = None,
    usdt_as_usd: bool = False,
) -> CaptureReplay:
    """Read a recorded Binance capture with the live adapter's parser and books.

    Recorded snapshot lines are applied when their book needs one. ``snapshots`` stands in for the REST
    endpoint: after a depth event is buffered by a book that needs a snapshot, it is asked for one at least as
    new as that event, as the live adapter would ask Binance.

    Parameters
    ----------
    path : str or Path
        The capture, one ``<local_receive_ns> <JSON>`` per line, gzip or plain.
    symbols : sequence of str
        Project symbols of the capture (``BTC-USDT`` for ``BTCUSDT``).
    quote_source : {"book_ticker", "depth_book"}
        Which messages make quotes.
    snapshots : callable, optional
        Snapshots for resyncs (see :class:`ReplaySnapshots`).
    usdt_as_usd : bool
        Read ``X-USD`` symbols from ``XUSDT`` books (see :func:`~ingest.sources.crypto.symbols.binance_symbols`).
    """
    batcher = RowBatcher(max_rows=2**62, max_delay_s=None)
    decoder = BinanceDecoder(binance_symbols(symbols, usdt_as_usd), batcher, quote_source=quote_source)
    lines = 0
    for receive_ns, message in read_capture(path):
        lines += 1
        decoder.feed(message, receive_ns)
        if snapshots is not None and isinstance(message, DepthUpdate) and decoder.books[message.symbol].needs_snapshot:
            snap = snapshots(message.symbol, message.final_update_id)
            if snap is not None:
                decoder.snapshot(message.symbol, snap)
    batch = batcher.take()
    empty_trades = pd.DataFrame(columns=list(RowBatcher._TRADE_COLS))
    empty_quotes = pd.DataFrame(columns=list(RowBatcher._QUOTE_COLS))
    return CaptureReplay(
        lines=lines,
        counts=decoder.counts,
        trades=batch.trades if batch.trades is not None else empty_trades,
        quotes=batch.quotes if batch.quotes is not None else empty_quotes,
        decoder=decoder,
    )


# ------------------------------------------------------------------------------------------------------------
# the live adapter


class BinanceSource(LiveSource):
    """Binance spot trades, quotes and local books over the combined WebSocket stream.

    Parameters
    ----------
    symbols : sequence of str
        Project symbols (``"BTC-USDT"``; ``"BTC-USD"`` with ``usdt_as_usd=True``).
    ws_url, rest_url : str
        Base URLs of the WebSocket streams and of the REST API (the real endpoints by default).
    usdt_as_usd : bool
        Read ``X-USD`` from the ``XUSDT`` book (see :mod:`ingest.sources.crypto.symbols`).
    quote_source : {"book_ticker", "depth_book"}
        Which messages make quotes (see the module notes).
    depth : bool
        Subscribe to diff-depth and keep local books (REST snapshots are requested only then).
    snapshot_limit : int
        Levels per side requested in a snapshot (Binance allows up to 5000; 1000 costs 50 weight).
    batch_rows : int
        Most rows in one batch.
    batch_ms : float
        Longest wait of a row in the batcher, milliseconds.
    stale_after_s : float
        A connection with no message for this long is restarted, seconds.
    backoff, max_failures, sleep
        Reconnection policy (see :class:`~ingest.sources.live.LiveSource`).
    clock_ns : callable returning int
        The local clock, ns UTC: the timestamp of bookTicker quotes.
    rest_limiter, connect_limiter : RateLimiter, optional
        Limits on snapshot requests (default: 5 a second, 100 a minute, well inside Binance's 6000 weight a
        minute) and on connections (default: 300 per 5 minutes, Binance's limit per IP).
    open_timeout_s, rest_timeout_s : float
        Timeouts of the WebSocket handshake and of a snapshot request, seconds.
    name : str
        Name of the source.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        ws_url: str = BINANCE_WS_URL,
        rest_url: str = BINANCE_REST_URL,
        usdt_as_usd: bool = False,
        quote_source: QuoteSource = "book_ticker",
        depth: bool = True,
        snapshot_limit: int = 1000,
        batch_rows: int = 1000,
        batch_ms: float = 100.0,
        stale_after_s: float = 10.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock_ns: Callable[[], int] = time.time_ns,
        rest_limiter: RateLimiter | None = None,
        connect_limiter: RateLimiter | None = None,
        open_timeout_s: float = 10.0,
        rest_timeout_s: float = 10.0,
        name: str = "binance",
    ) -> None:
        super().__init__(name, stale_after_s=stale_after_s, backoff=backoff, max_failures=max_failures, sleep=sleep)
        if not 1 <= snapshot_limit <= 5000:
            raise ValueError(f"snapshot_limit={snapshot_limit!r}: Binance serves 1..5000 levels")
        if batch_ms <= 0:
            raise ValueError(f"batch_ms={batch_ms!r}: must be > 0")
        self.symbol_map = binance_symbols(symbols, usdt_as_usd)
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.snapshot_limit = snapshot_limit
        self.batch_rows = batch_rows
        self.batch_ms = batch_ms
        self._clock_ns = clock_ns
        self._rest_limiter = rest_limiter or RateLimiter([(5, 1.0), (100, 60.0)])
        self._connect_limiter = connect_limiter or RateLimiter([(300, 300.0)])
        self.open_timeout_s = open_timeout_s
        self.rest_timeout_s = rest_timeout_s
        self.decoder = BinanceDecoder(
            self.symbol_map, RowBatcher(batch_rows, batch_ms / 1000.0), quote_source=quote_source, depth=depth
        )
        self.snapshot_requests = 0

    @property
    def books(self) -> dict[str, DepthBook]:
        """The local book of each venue symbol."""
        return self.decoder.books

    @property
    def resyncs(self) -> int:
        """Books discarded after a sequence gap or a crossed book, since the source was made."""
        return self.decoder.resyncs

    def stream_url(self) -> str:
        """The combined-stream URL of every subscribed symbol's streams."""
        streams = []
        for symbol in self.symbol_map.venue_symbols:
            low = symbol.lower()
            streams += [f"{low}@trade", f"{low}@bookTicker"]
            if self.decoder.depth:
                streams.append(f"{low}@depth@100ms")
        return f"{self.ws_url}/stream?streams={'/'.join(streams)}"

    async def fetch_snapshot(self, http: httpx.AsyncClient, venue_symbol: str) -> DepthSnapshot:
        """GET ``/api/v3/depth`` for one symbol, within the REST rate limit."""
        await self._rest_limiter.acquire()
        self.snapshot_requests += 1
        url = f"{self.rest_url}/api/v3/depth"
        try:
            response = await http.get(url, params={"symbol": venue_symbol, "limit": self.snapshot_limit})
        except httpx.HTTPError as exc:
            raise FeedError(f"binance: GET {url} symbol={venue_symbol!r}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise VenueMessageError(VENUE, "snapshot", response.text[:80], "not JSON") from None
            return parse_snapshot(body)
        text = response.text[:200]
        if status in (418, 429) or status >= 500:
            retry = response.headers.get("Retry-After")
            raise FeedError(f"binance: GET {url} symbol={venue_symbol!r}: status={status} retry_after={retry} {text}")
        code = None
        try:
            code = response.json().get("code")
        except (ValueError, AttributeError):
            code = None
        if code == INVALID_SYMBOL_CODE:
            raise FatalFeedError(f"binance: symbol={venue_symbol!r}: unknown to Binance ({text})")
        raise FatalFeedError(f"binance: GET {url} symbol={venue_symbol!r}: status={status} {text}")

    def session(self) -> AsyncGenerator[RawBatch, None]:
        """One connection: subscribe, request snapshots, yield batches until the connection ends."""
        batcher = RowBatcher(self.batch_rows, self.batch_ms / 1000.0)
        self.decoder.batcher = batcher
        return deliver(self._connection(batcher), batcher, VENUE)

    async def _connection(self, batcher: RowBatcher) -> AsyncGenerator[RawBatch, None]:
        await self._connect_limiter.acquire()
        decoder = self.decoder
        async with (
            connect(self.stream_url(), open_timeout=self.open_timeout_s, max_size=2**22) as ws,
            httpx.AsyncClient(timeout=self.rest_timeout_s) as http,
        ):
            decoder.reset_books()
            fetches: dict[str, asyncio.Task[DepthSnapshot]] = {}

            def poll() -> None:
                for symbol in decoder.needing_snapshot():
                    task = fetches.get(symbol)
                    if task is None:
                        fetches[symbol] = asyncio.create_task(self.fetch_snapshot(http, symbol))
                    elif task.done():
                        del fetches[symbol]
                        if not decoder.snapshot(symbol, task.result()):
                            fetches[symbol] = asyncio.create_task(self.fetch_snapshot(http, symbol))

            def handle(raw: str | bytes, receive_ns: int) -> None:
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise VenueMessageError(VENUE, "message", raw[:80], f"not JSON ({exc.msg})") from None
                decoder.feed(parse_message(obj), receive_ns)

            poll()
            try:
                async for batch in receive_batches(
                    ws.recv, handle, batcher, self.stale_after_s, clock_ns=self._clock_ns, poll=poll, poll_every_s=0.05
                ):
                    yield batch
            finally:
                for task in fetches.values():
                    task.cancel()
