"""Coinbase Exchange market data over its public WebSocket feed: trades from ``matches``, quotes from ``ticker``.

Protocol (``wss://ws-feed.exchange.coinbase.com``): the client sends
``{"type": "subscribe", "product_ids": [...], "channels": ["ticker", "matches", "heartbeat"]}``; the server
answers ``{"type": "subscriptions", "channels": [...]}`` listing what it subscribed, then streams messages.
A subscription the server refuses comes back as ``{"type": "error", "message": ..., "reason": ...}``.

Messages and what they become
-----------------------------
``match``, ``last_match``
    a trade row: ``timestamp`` = ``time`` (ISO-8601, microseconds), ``price``, ``size``, ``seq`` = ``trade_id``.
    ``last_match`` (the product's last trade before the subscription) is skipped when its trade id was already
    delivered on an earlier connection of the same source.
``ticker``
    a quote row: ``best_bid``, ``best_ask``, ``best_bid_size``, ``best_ask_size``, ``seq`` = ``sequence``,
    ``timestamp`` = ``time`` (the local receive time for a ticker without one).
``heartbeat``
    once a second per product: no row, but a sign of life for the stale-feed limit.
``error``
    about the subscription (or before its acknowledgement): :class:`~ingest.sources.live.FatalFeedError`;
    otherwise :class:`~ingest.sources.live.FeedError` (the connection is restarted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from ingest.sources.base import RawBatch
from ingest.sources.crypto.common import (
    RowBatcher,
    VenueMessageError,
    decimal_field,
    deliver,
    get_field,
    int_field,
    iso_ns,
    receive_batches,
)
from ingest.sources.crypto.symbols import SymbolMap, coinbase_symbols
from ingest.sources.live import Backoff, FatalFeedError, FeedError, LiveSource, RateLimiter

log = logging.getLogger(__name__)

VENUE = "coinbase"
COINBASE_WS_URL = "wss://ws-feed.exchange.coinbase.com"
_SUBSCRIPTION_WORDS = ("subscri", "product", "channel", "auth", "signature", "permission")


@dataclass(frozen=True, slots=True)
class CoinbaseMatch:
    """A ``match`` or ``last_match``: one trade. ``side`` is the maker's side; times in ns UTC."""

    product_id: str
    trade_id: int
    price: float
    size: float
    side: str
    time_ns: int
    last: bool


@dataclass(frozen=True, slots=True)
class CoinbaseTicker:
    """A ``ticker``: best bid and ask with sizes after the product's latest trade; ``time_ns`` may be absent."""

    product_id: str
    sequence: int
    best_bid: float
    best_ask: float
    best_bid_size: float
    best_ask_size: float
    time_ns: int | None


@dataclass(frozen=True, slots=True)
class CoinbaseSubscriptions:
    """The acknowledgement: channel name -> product ids subscribed."""

    channels: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class CoinbaseHeartbeat:
    """A heartbeat of one product."""

    product_id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class CoinbaseError:
    """An ``error`` message."""

    message: str
    reason: str

    @property
    def about_subscription(self) -> bool:
        """Whether it refuses the subscription (a product, a channel, authentication): no reconnect cures that."""
        text = f"{self.message} {self.reason}".lower()
        return any(word in text for word in _SUBSCRIPTION_WORDS)


@dataclass(frozen=True, slots=True)
class CoinbaseOther:
    """A message of a type this adapter does not use (counted, not converted)."""

    type: str


CoinbaseMessage = (
    CoinbaseMatch | CoinbaseTicker | CoinbaseSubscriptions | CoinbaseHeartbeat | CoinbaseError | CoinbaseOther
)


def parse_message(obj: Any) -> CoinbaseMessage:
    """One decoded JSON message of the feed.

    Examples
    --------
    >>> m = parse_message({"type": "match", "trade_id": 10, "sequence": 50, "time": "2014-11-07T08:19:27.028459Z",
    ...                    "product_id": "BTC-USD", "size": "5.23512", "price": "400.23", "side": "sell"})
    >>> m.trade_id, m.price, m.time_ns
    (10, 400.23, 1415348367028459000)
    """
    if not isinstance(obj, dict):
        raise VenueMessageError(VENUE, "message", obj, "expected a JSON object")
    kind = get_field(obj, "type", VENUE)
    if kind in ("match", "last_match"):
        return CoinbaseMatch(
            product_id=str(get_field(obj, "product_id", VENUE)),
            trade_id=int_field(obj, "trade_id", VENUE),
            price=decimal_field(obj, "price", VENUE),
            size=decimal_field(obj, "size", VENUE),
            side=str(obj.get("side", "")),
            time_ns=iso_ns(obj, "time", VENUE),
            last=kind == "last_match",
        )
    if kind == "ticker":
        return CoinbaseTicker(
            product_id=str(get_field(obj, "product_id", VENUE)),
            sequence=int_field(obj, "sequence", VENUE),
            best_bid=decimal_field(obj, "best_bid", VENUE),
            best_ask=decimal_field(obj, "best_ask", VENUE),
            best_bid_size=decimal_field(obj, "best_bid_size", VENUE),
            best_ask_size=decimal_field(obj, "best_ask_size", VENUE),
            time_ns=iso_ns(obj, "time", VENUE) if obj.get("time") is not None else None,
        )
    if kind == "subscriptions":
        channels = get_field(obj, "channels", VENUE)
        if not isinstance(channels, list):
            raise VenueMessageError(VENUE, "channels", channels, "expected a list")
        out: dict[str, tuple[str, ...]] = {}
        for ch in channels:
            if isinstance(ch, str):  # the short form lists names only
                out[ch] = ()
            elif isinstance(ch, dict):
                out[str(get_field(ch, "name", VENUE))] = tuple(ch.get("product_ids") or ())
            else:
                raise VenueMessageError(VENUE, "channels[]", ch, "expected a name or {name, product_ids}")
        return CoinbaseSubscriptions(out)
    if kind == "heartbeat":
        return CoinbaseHeartbeat(str(get_field(obj, "product_id", VENUE)), int_field(obj, "sequence", VENUE))
    if kind == "error":
        return CoinbaseError(str(obj.get("message", "")), str(obj.get("reason", "")))
    if not isinstance(kind, str):
        raise VenueMessageError(VENUE, "type", kind, "expected a string")
    return CoinbaseOther(kind)


class CoinbaseDecoder:
    """Turns parsed messages into trade and quote rows.

    Parameters
    ----------
    symbols : SymbolMap
        The subscribed products.
    batcher : RowBatcher
        Where rows go.

    Attributes
    ----------
    counts : Counter
        Messages taken, by type.
    last_trade_id : dict of str to int
        The highest trade id delivered per product (carried across connections).
    """

    def __init__(self, symbols: SymbolMap, batcher: RowBatcher) -> None:
        self.symbols = symbols
        self.batcher = batcher
        self.counts: Counter[str] = Counter()
        self.last_trade_id: dict[str, int] = {}

    def feed(self, message: CoinbaseMessage, receive_ns: int) -> None:
        """Take one message received at ``receive_ns`` (ns UTC); raises on an ``error`` message."""
        if isinstance(message, CoinbaseMatch):
            self.counts["last_match" if message.last else "match"] += 1
            project = self.symbols.project(message.product_id)
            seen = self.last_trade_id.get(message.product_id)
            if message.last and seen is not None and message.trade_id <= seen:
                self.counts["last_match_repeated"] += 1
                return
            self.last_trade_id[message.product_id] = max(message.trade_id, seen if seen is not None else -1)
            self.batcher.add_trade(message.time_ns, project, message.price, message.size, message.trade_id)
        elif isinstance(message, CoinbaseTicker):
            self.counts["ticker"] += 1
            self.batcher.add_quote(
                message.time_ns if message.time_ns is not None else receive_ns,
                self.symbols.project(message.product_id),
                message.best_bid,
                message.best_ask,
                message.best_bid_size,
                message.best_ask_size,
                message.sequence,
            )
        elif isinstance(message, CoinbaseHeartbeat):
            self.counts["heartbeat"] += 1
        elif isinstance(message, CoinbaseSubscriptions):
            self.counts["subscriptions"] += 1
        elif isinstance(message, CoinbaseError):
            self.counts["error"] += 1
            text = f"coinbase: error message={message.message!r} reason={message.reason!r}"
            raise FatalFeedError(text) if message.about_subscription else FeedError(text)
        else:
            self.counts[f"other:{message.type}"] += 1
            if self.counts[f"other:{message.type}"] == 1:
                log.info("coinbase: messages of type=%r are counted, not converted", message.type)


class CoinbaseSource(LiveSource):
    """Coinbase Exchange trades (``matches``) and quotes (``ticker``) over the public WebSocket feed.

    Parameters
    ----------
    symbols : sequence of str
        Products, in the project's spelling (the same as Coinbase's: ``"BTC-USD"``).
    ws_url : str
        The feed's URL (the real endpoint by default).
    heartbeat : bool
        Also subscribe to ``heartbeat`` (a message a second per product keeps a quiet product's feed alive).
    batch_rows : int
        Most rows in one batch.
    batch_ms : float
        Longest wait of a row in the batcher, milliseconds.
    stale_after_s : float
        A connection with no message for this long is restarted, seconds.
    backoff, max_failures, sleep
        Reconnection policy (see :class:`~ingest.sources.live.LiveSource`).
    clock_ns : callable returning int
        The local clock, ns UTC (the timestamp of a ticker without ``time``).
    connect_limiter : RateLimiter, optional
        Limit on connections and subscribe messages (default: 8 a second, Coinbase's limit per IP).
    open_timeout_s : float
        Timeout of the handshake and of the subscription's acknowledgement, seconds.
    name : str
        Name of the source.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        ws_url: str = COINBASE_WS_URL,
        heartbeat: bool = True,
        batch_rows: int = 1000,
        batch_ms: float = 100.0,
        stale_after_s: float = 10.0,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock_ns: Callable[[], int] = time.time_ns,
        connect_limiter: RateLimiter | None = None,
        open_timeout_s: float = 10.0,
        name: str = "coinbase",
    ) -> None:
        super().__init__(name, stale_after_s=stale_after_s, backoff=backoff, max_failures=max_failures, sleep=sleep)
        if batch_ms <= 0:
            raise ValueError(f"batch_ms={batch_ms!r}: must be > 0")
        self.symbol_map: SymbolMap = coinbase_symbols(symbols)
        self.ws_url = ws_url
        self.channels = ["ticker", "matches", *(["heartbeat"] if heartbeat else [])]
        self.batch_rows = batch_rows
        self.batch_ms = batch_ms
        self._clock_ns = clock_ns
        self._connect_limiter = connect_limiter or RateLimiter([(8, 1.0)])
        self.open_timeout_s = open_timeout_s
        self.decoder = CoinbaseDecoder(self.symbol_map, RowBatcher(batch_rows, batch_ms / 1000.0))

    def subscribe_message(self) -> dict[str, Any]:
        """The ``subscribe`` request for every product and channel."""
        return {"type": "subscribe", "product_ids": self.symbol_map.venue_symbols, "channels": self.channels}

    def session(self) -> AsyncGenerator[RawBatch, None]:
        """One connection: subscribe, await the acknowledgement, yield batches until the connection ends."""
        batcher = RowBatcher(self.batch_rows, self.batch_ms / 1000.0)
        self.decoder.batcher = batcher
        return deliver(self._connection(batcher), batcher, VENUE)

    async def _connection(self, batcher: RowBatcher) -> AsyncGenerator[RawBatch, None]:
        await self._connect_limiter.acquire()
        async with connect(self.ws_url, open_timeout=self.open_timeout_s, max_size=2**22) as ws:
            await ws.send(json.dumps(self.subscribe_message()))
            await self._await_subscriptions(ws)

            def handle(raw: str | bytes, receive_ns: int) -> None:
                self.decoder.feed(parse_message(_loads(raw)), receive_ns)

            async for batch in receive_batches(ws.recv, handle, batcher, self.stale_after_s, clock_ns=self._clock_ns):
                yield batch

    async def _await_subscriptions(self, ws: ClientConnection) -> None:
        """Read until the acknowledgement; an error before it is about the subscription, hence fatal."""
        wanted = set(self.symbol_map.venue_symbols)
        deadline = time.monotonic() + self.open_timeout_s
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                wait = f"{self.open_timeout_s:.1f} s"
                raise FeedError(f"coinbase: no subscriptions acknowledgement within {wait}") from exc
            message = parse_message(_loads(raw))
            if isinstance(message, CoinbaseError):
                self.decoder.counts["error"] += 1
                raise FatalFeedError(
                    f"coinbase: subscribe refused: message={message.message!r} reason={message.reason!r}"
                )
            if isinstance(message, CoinbaseSubscriptions):
                self.decoder.counts["subscriptions"] += 1
                for channel in self.channels:
                    got = set(message.channels.get(channel, ()))
                    if channel not in message.channels or (got and not wanted <= got):
                        raise FatalFeedError(
                            f"coinbase: channel={channel!r}: subscribed products={sorted(got)}, "
                            f"requested {sorted(wanted)}"
                        )
                return
            self.decoder.feed(message, self._clock_ns())


def _loads(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise VenueMessageError(VENUE, "message", raw[:80], f"not JSON ({exc.msg})") from None
