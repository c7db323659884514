"""Polygon.io: one-minute aggregates over REST (backfill, then polling) and trades and quotes over WebSocket.

REST: ``GET {base_url}/v2/aggs/ticker/{ticker}/range/1/minute/{from}/{to}?adjusted=true&sort=asc&limit=50000``
answers ``{"status": "OK", "results": [{"t": ms, "o", "h", "l", "c", "v", "vw", "n"}, ...], "next_url": ...}``;
``t`` is the bar start in ms (UTC), ``vw`` the volume-weighted price and ``n`` the number of trades, kept as the
optional ``vwap`` and ``trade_count`` columns. A long range comes in pages: each ``next_url`` is followed (its path
and query re-based on ``base_url``, so a proxy or a test server stays in the loop), each page through the rate
limiter. Equities, ``X:`` crypto and ``C:`` FX tickers share the endpoint.

WebSocket (``wss://socket.polygon.io/stocks``; ``wss://delayed.polygon.io/stocks`` on delayed plans): the server
greets with ``[{"ev": "status", "status": "connected"}]``; the client sends ``{"action": "auth", "params": KEY}``
and gets ``auth_success`` (or ``auth_failed``: :class:`~ingest.sources.live.FatalFeedError`), then sends
``{"action": "subscribe", "params": "T.SPY,Q.SPY"}``. Events arrive as JSON arrays of many events: ``T`` trades
(``sym``, price ``p``, size ``s``, ``t`` ms, trade id ``i``, sequence ``q``) and ``Q`` quotes (``bp``, ``bs``,
``ap``, ``as``, ``t``, ``q``). Events received within ``batch_window_s`` (or up to ``batch_rows``) become one
:class:`~ingest.sources.base.RawBatch`; ``seq`` is Polygon's sequence number ``q``, increasing and unique per
ticker, so the natural key ``(symbol, ts, seq)`` tells apart two prints in the same millisecond. Sizes are
passed on in Polygon's units.

Keys: sent in an ``Authorization: Bearer`` header on REST (Polygon accepts it in place of ``apiKey=``), which
keeps it out of every URL and request log; on WebSocket in the auth message only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import websockets
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect

from ingest.records import NS_PER_MINUTE
from ingest.sources.base import RawBatch
from ingest.sources.live import Backoff, FatalFeedError, FeedError, LiveSource, RateLimiter
from ingest.sources.rest.polling import (
    BAR_COLUMNS,
    Fetched,
    PollingSource,
    Request,
    as_secret,
    bars_frame,
    header_clock_ns,
)
from ingest.sources.rest.symbols import TickerMap, polygon_ticker

log = logging.getLogger(__name__)

POLYGON_BASE_URL = "https://api.polygon.io"
POLYGON_STOCKS_WS_URL = "wss://socket.polygon.io/stocks"
NS_PER_MS = 1_000_000
TRADE_COLUMNS = ["timestamp", "symbol", "price", "size", "seq"]
QUOTE_COLUMNS = ["timestamp", "symbol", "bid", "ask", "bid_size", "ask_size", "seq"]


def _need_key(api_key: str | SecretStr | None) -> SecretStr:
    key = as_secret(api_key)
    if key is None:
        raise ValueError("api_key=None: Polygon needs an API key (setting polygon_api_key)")
    return key


def parse_aggregates(body: Any, symbol: str) -> tuple[pd.DataFrame, str | None]:
    """Convert one page of aggregates to bars in the input contract; also return the page's ``next_url``.

    Raises
    ------
    FatalFeedError
        ``status`` of ``ERROR`` or ``NOT_AUTHORIZED`` (bad key, plan without access, bad ticker).
    FeedError
        A body without the aggregates shape.

    Examples
    --------
    >>> page = {"status": "OK", "results": [{"t": 1704205800000, "o": 1, "h": 2, "l": 1, "c": 2, "v": 10,
    ...                                      "vw": 1.5, "n": 3}]}
    >>> bars, next_url = parse_aggregates(page, "SPY")
    >>> str(bars["timestamp"][0]), float(bars["vwap"][0]), next_url
    ('2024-01-02 14:30:00+00:00', 1.5, None)
    """
    if not isinstance(body, dict):
        raise FeedError(f"polygon: symbol={symbol!r}: response is not a JSON object: {str(body)[:200]!r}")
    status = body.get("status")
    if status in ("ERROR", "NOT_AUTHORIZED"):
        detail = body.get("error") or body.get("message")
        raise FatalFeedError(f"polygon: symbol={symbol!r}: status={status!r}: {detail!r}")
    results = body.get("results") or []
    if not isinstance(results, list):
        raise FeedError(f"polygon: symbol={symbol!r}: results={str(results)[:200]!r}: expected a list")
    next_url = body.get("next_url") or None
    if not results:
        return pd.DataFrame(columns=[*BAR_COLUMNS, "vwap", "trade_count"]), next_url
    try:
        ts = np.array([r["t"] for r in results], dtype=np.int64) * NS_PER_MS
        cols = {
            name: np.array([r.get(key) if r.get(key) is not None else np.nan for r in results], dtype=np.float64)
            for name, key in (
                ("open", "o"),
                ("high", "h"),
                ("low", "l"),
                ("close", "c"),
                ("volume", "v"),
                ("vwap", "vw"),
                ("trade_count", "n"),
            )
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise FeedError(f"polygon: symbol={symbol!r}: aggregate result is malformed: {exc!r}") from exc
    return bars_frame(ts, symbol, cols), next_url


class PolygonBars(PollingSource):
    """Backfills, then polls, Polygon's one-minute aggregates of every symbol.

    Parameters
    ----------
    symbols : iterable of str
        Project symbols (``SPY``, ``BTC-USD`` -> ``X:BTCUSD``, ``EURUSD`` -> ``C:EURUSD``).
    api_key : str or SecretStr
        The Polygon key (settings ``polygon_api_key``); never logged or shown in a repr.
    base_url : str
        Root of the REST API, ``https://api.polygon.io`` by default.
    backfill_s : float
        How far back the first round reaches, seconds; later rounds start after the last bar emitted.
    calls_per_minute : int
        The plan's limit (free plan: 5).
    poll_interval_s : float
        Pause between rounds, seconds.
    tickers : mapping, optional
        Overrides ``{project symbol: Polygon ticker}``.
    limiter : RateLimiter, optional
        Replaces the limiter built from ``calls_per_minute``.
    stale_after_s, backoff, max_failures, sleep, clock, timeout_s
        As in :class:`~ingest.sources.rest.polling.PollingSource`.
    """

    def __init__(
        self,
        symbols: Iterable[str],
        api_key: str | SecretStr,
        base_url: str = POLYGON_BASE_URL,
        backfill_s: float = 3600.0,
        calls_per_minute: int = 5,
        poll_interval_s: float = 60.0,
        tickers: Mapping[str, str] | None = None,
        limiter: RateLimiter | None = None,
        stale_after_s: float = 150.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], int] = time.time_ns,
        timeout_s: float = 15.0,
        name: str = "polygon-bars",
    ) -> None:
        key = _need_key(api_key)
        if not backfill_s > 0:
            raise ValueError(f"backfill_s={backfill_s!r}: must be > 0")
        super().__init__(
            name,
            TickerMap.build(symbols, polygon_ticker, tickers),
            base_url,
            limiter or RateLimiter([(calls_per_minute, 60.0)]),
            poll_interval_s,
            timeout_s=timeout_s,
            headers={"Authorization": f"Bearer {key.get_secret_value()}", "Accept": "application/json"},
            clock=clock,
            stale_after_s=stale_after_s,
            backoff=backoff,
            max_failures=max_failures,
            sleep=sleep,
        )
        self._api_key = key
        self.backfill_s = backfill_s
        self._next_from_ms: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, api_key={self._api_key!r})"

    def first_request(self, symbol: str) -> Request:
        """Aggregates from after the last emitted bar (the backfill start in the first round) to now."""
        now_ms = self.clock() // NS_PER_MS
        start_ms = self._next_from_ms.get(symbol, now_ms - int(self.backfill_s * 1000))
        return Request(
            f"/v2/aggs/ticker/{self.tickers.ticker(symbol)}/range/1/minute/{start_ms}/{now_ms}",
            {"adjusted": "true", "sort": "asc", "limit": "50000"},
        )

    def parse(self, symbol: str, body: Any, response: httpx.Response) -> tuple[Fetched, Request | None]:
        """One page of aggregates; its ``next_url`` (re-based on ``base_url``) is the next request."""
        bars, next_url = parse_aggregates(body, symbol)
        following = Request(self._rebase(next_url)) if next_url else None
        return Fetched(bars, header_clock_ns(response)), following

    def new_complete_bars(self, symbol: str, fetched: Fetched) -> pd.DataFrame:
        """As in the base class; also moves the next round's start past the newest bar emitted."""
        new = super().new_complete_bars(symbol, fetched)
        if len(new):
            last_ns = int(new["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64).max())
            self._next_from_ms[symbol] = (last_ns + NS_PER_MINUTE) // NS_PER_MS
        return new

    @staticmethod
    def _rebase(next_url: str) -> str:
        """The path and query of a ``next_url``, to be resolved against the client's base URL."""
        parts = urlsplit(next_url)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path


def parse_events(events: Any, tickers: TickerMap) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Split one WebSocket message (a JSON array of events) into trade rows, quote rows and status events.

    Rows are in the input contract (``timestamp`` as ns since the epoch UTC, project symbol, ``seq`` = ``q``).
    Events of other kinds are ignored.

    Examples
    --------
    >>> tm = TickerMap.build(["SPY"], lambda s: s)
    >>> trades, quotes, _ = parse_events([{"ev": "T", "sym": "SPY", "p": 470.1, "s": 100, "t": 1, "q": 7}], tm)
    >>> trades[0]["timestamp"], trades[0]["seq"]
    (1000000, 7)
    """
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        raise FeedError(f"polygon-ws: message={str(events)[:200]!r}: expected a JSON array of events")
    trades: list[dict[str, Any]] = []
    quotes: list[dict[str, Any]] = []
    statuses: list[Any] = []
    for ev in events:
        kind = ev.get("ev") if isinstance(ev, dict) else None
        if kind == "T":
            trades.append(
                {
                    "timestamp": _ms_to_ns(ev.get("t")),
                    "symbol": tickers.symbol(str(ev.get("sym"))),
                    "price": ev.get("p"),
                    "size": ev.get("s"),
                    "seq": ev.get("q"),
                }
            )
        elif kind == "Q":
            quotes.append(
                {
                    "timestamp": _ms_to_ns(ev.get("t")),
                    "symbol": tickers.symbol(str(ev.get("sym"))),
                    "bid": ev.get("bp"),
                    "ask": ev.get("ap"),
                    "bid_size": ev.get("bs"),
                    "ask_size": ev.get("as"),
                    "seq": ev.get("q"),
                }
            )
        elif kind == "status":
            statuses.append(ev)
    return trades, quotes, statuses


def _ms_to_ns(value: Any) -> Any:
    """Milliseconds to nanoseconds; anything else passes through for validation to judge."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value * NS_PER_MS
    return value


class PolygonStream(LiveSource):
    """Polygon's real-time trades and quotes of US equities over WebSocket.

    Parameters
    ----------
    symbols : iterable of str
        Project symbols of US equities and ETFs.
    api_key : str or SecretStr
        The Polygon key (settings ``polygon_api_key``); never logged or shown in a repr.
    url : str
        The cluster's WebSocket URL, ``wss://socket.polygon.io/stocks`` by default.
    trades, quotes : bool
        Which channels to subscribe (``T.`` and ``Q.``).
    batch_window_s : float
        Events arriving within this many seconds of a batch's first message join that batch.
    batch_rows : int
        Most rows in one batch.
    tickers : mapping, optional
        Overrides ``{project symbol: Polygon ticker}``.
    stale_after_s, backoff, max_failures, sleep
        As in :class:`~ingest.sources.live.LiveSource`.
    """

    def __init__(
        self,
        symbols: Iterable[str],
        api_key: str | SecretStr,
        url: str = POLYGON_STOCKS_WS_URL,
        trades: bool = True,
        quotes: bool = True,
        batch_window_s: float = 0.05,
        batch_rows: int = 10_000,
        tickers: Mapping[str, str] | None = None,
        stale_after_s: float = 30.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        name: str = "polygon",
    ) -> None:
        super().__init__(name, stale_after_s=stale_after_s, backoff=backoff, max_failures=max_failures, sleep=sleep)
        if not (trades or quotes):
            raise ValueError("trades=False, quotes=False: subscribe to at least one channel")
        if not 0 <= batch_window_s < stale_after_s:
            raise ValueError(f"batch_window_s={batch_window_s!r}: must be >= 0 and below stale_after_s")
        if batch_rows < 1:
            raise ValueError(f"batch_rows={batch_rows!r}: must be >= 1")
        self._api_key = _need_key(api_key)
        self.tickers = TickerMap.build(symbols, polygon_ticker, tickers)
        self.url = url
        self.channels = [p for p, on in (("T", trades), ("Q", quotes)) if on]
        self.batch_window_s = batch_window_s
        self.batch_rows = batch_rows
        self.messages = 0

    @property
    def symbols(self) -> list[str]:
        """The project symbols subscribed."""
        return self.tickers.symbols

    def __repr__(self) -> str:
        return (
            f"PolygonStream(name={self.name!r}, symbols={self.symbols!r}, url={self.url!r}, "
            f"channels={self.channels!r}, api_key={self._api_key!r})"
        )

    def subscription(self) -> str:
        """The subscribe ``params``: ``T.SPY,Q.SPY,...``."""
        return ",".join(f"{ch}.{self.tickers.ticker(s)}" for s in self.symbols for ch in self.channels)

    async def session(self) -> AsyncGenerator[RawBatch, None]:
        """Connect, authenticate, subscribe, then yield batches of trades and quotes until the socket closes."""
        try:
            async with connect(self.url, open_timeout=self.stale_after_s, max_size=2**24) as ws:
                await self._handshake(ws)
                while True:
                    batch, closed = await self._next_batch(ws)
                    if batch is not None:
                        yield batch
                    if closed is not None:
                        # rows gathered before the close were yielded above; now end or fail the session
                        raise closed
        except websockets.ConnectionClosedOK:
            return
        except websockets.ConnectionClosed as exc:
            raise FeedError(f"{self.name}: connection dropped: {exc}") from exc
        except websockets.InvalidURI as exc:
            raise FatalFeedError(f"{self.name}: url={self.url!r}: not a WebSocket URL") from exc
        except (websockets.InvalidHandshake, OSError, TimeoutError) as exc:
            raise FeedError(f"{self.name}: cannot connect to url={self.url!r}: {type(exc).__name__}: {exc}") from exc

    async def _recv_events(self, ws: ClientConnection, within_s: float | None = None) -> Any:
        """The next message, decoded; ``TimeoutError`` when none comes within ``within_s`` seconds."""
        async with asyncio.timeout(within_s):
            raw = await ws.recv()
        self.messages += 1
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise FeedError(f"{self.name}: message={str(raw)[:200]!r}: not JSON") from exc

    async def _expect_status(self, ws: ClientConnection, wanted: str) -> None:
        """Read messages until a status event; fail unless it is ``wanted``."""
        while True:
            _, _, statuses = parse_events(await self._recv_events(ws), self.tickers)
            for st in statuses:
                status, message = st.get("status"), st.get("message")
                if status == wanted:
                    return
                if status == "auth_failed":
                    raise FatalFeedError(f"{self.name}: status='auth_failed': {message!r} (check polygon_api_key)")
                if status in ("auth_timeout", "max_connections", "error"):
                    raise FeedError(f"{self.name}: status={status!r}: {message!r}")
                log.info("%s: status %r: %s", self.name, status, message)

    async def _handshake(self, ws: ClientConnection) -> None:
        await self._expect_status(ws, "connected")
        await ws.send(json.dumps({"action": "auth", "params": self._api_key.get_secret_value()}))
        await self._expect_status(ws, "auth_success")
        await ws.send(json.dumps({"action": "subscribe", "params": self.subscription()}))
        log.info("%s: subscribed to %d channels", self.name, len(self.symbols) * len(self.channels))

    async def _next_batch(self, ws: ClientConnection) -> tuple[RawBatch | None, websockets.ConnectionClosed | None]:
        """Wait for one message, then gather the messages of the next ``batch_window_s`` into one batch.

        Returns the batch (``None`` when the socket closed before any message) and the close, if one ended it.
        """
        trades: list[dict[str, Any]] = []
        quotes: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        closed: websockets.ConnectionClosed | None = None
        while True:
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                break
            try:
                events = await self._recv_events(ws, timeout)
            except TimeoutError:
                break
            except websockets.ConnectionClosed as exc:
                if deadline is None:
                    return None, exc
                closed = exc
                break
            t, q, statuses = parse_events(events, self.tickers)
            trades += t
            quotes += q
            for st in statuses:
                log.info("%s: status %r: %s", self.name, st.get("status"), st.get("message"))
            if deadline is None:
                deadline = loop.time() + self.batch_window_s
            if len(trades) + len(quotes) >= self.batch_rows:
                break
        batch = RawBatch(
            trades=_rows_frame(trades, TRADE_COLUMNS) if trades else None,
            quotes=_rows_frame(quotes, QUOTE_COLUMNS) if quotes else None,
        )
        return batch, closed


def _rows_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A trade or quote frame; integer-ns timestamps become UTC datetimes (anything else is left to validation)."""
    frame = pd.DataFrame.from_records(rows, columns=columns)
    ts = frame["timestamp"]
    if ts.dtype.kind in "iu":
        frame["timestamp"] = pd.to_datetime(ts.to_numpy(dtype=np.int64), unit="ns", utc=True)
    return frame
