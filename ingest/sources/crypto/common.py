"""What the crypto adapters share: typed reads of venue JSON, row batching and the receive loop.

Venue messages become rows of the input contract here, at the boundary: integer-nanosecond UTC timestamps,
project symbols, float prices and sizes, the venue's own id as ``seq``. Value rules (a crossed quote, a zero
price) are left to :class:`~ingest.validation.Validator`, which quarantines such rows instead of losing them;
a message whose *shape* is wrong (a missing field, a price that is not a number) raises
:class:`VenueMessageError` naming the field and the value.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import numpy as np
import pandas as pd
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidStatus, InvalidURI

from ingest.sources.base import RawBatch
from ingest.sources.live import FatalFeedError, FeedError, StaleFeedError

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NS_PER_MS = 1_000_000


class VenueMessageError(FeedError):
    """A venue message that cannot be read: names the venue, the field, the value and what was expected."""

    def __init__(self, venue: str, field: str, value: object, rule: str) -> None:
        self.venue, self.field, self.value, self.rule = venue, field, value, rule
        super().__init__(f"{venue}: {field}={value!r}: {rule}")


def get_field(obj: Mapping[str, Any], name: str, venue: str) -> Any:
    """``obj[name]``; :class:`VenueMessageError` when the message has no such field."""
    try:
        return obj[name]
    except (KeyError, TypeError):
        raise VenueMessageError(venue, name, None, f"missing from message {_short(obj)}") from None


def decimal_field(obj: Mapping[str, Any], name: str, venue: str) -> float:
    """A decimal string (or number) field as a finite float."""
    raw = get_field(obj, name, venue)
    if isinstance(raw, bool):
        raise VenueMessageError(venue, name, raw, "expected a decimal number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise VenueMessageError(venue, name, raw, "expected a decimal number") from None
    if not math.isfinite(value):
        raise VenueMessageError(venue, name, raw, "expected a finite number")
    return value


def int_field(obj: Mapping[str, Any], name: str, venue: str) -> int:
    """An integer field (ids, millisecond times)."""
    raw = get_field(obj, name, venue)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    raise VenueMessageError(venue, name, raw, "expected an integer")


def iso_ns(obj: Mapping[str, Any], name: str, venue: str) -> int:
    """An ISO-8601 time with a zone (``2024-08-08T23:54:15.123456Z``) as integer nanoseconds UTC.

    Exact to the microsecond, the precision venues send; a time without a zone is refused rather than guessed.
    """
    raw = get_field(obj, name, venue)
    try:
        stamp = datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise VenueMessageError(venue, name, raw, "expected an ISO-8601 time") from None
    if stamp.tzinfo is None:
        raise VenueMessageError(venue, name, raw, "expected a time with a zone (Z or +00:00)")
    delta = stamp - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _short(obj: object, limit: int = 160) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RowBatcher:
    """Accumulates trade and quote rows and cuts them into :class:`RawBatch` es.

    A batch is due when it holds ``max_rows`` rows, or ``max_delay_s`` after its first row arrived, whichever
    comes first: a fast feed gives full batches, a slow one gives small batches without waiting long.

    Parameters
    ----------
    max_rows : int
        Most rows (trades plus quotes) in one batch.
    max_delay_s : float or None
        Longest time a row waits in the batcher, seconds; ``None`` for no limit (a replay cut by size only).
    clock : callable returning float
        Monotonic time in seconds (injectable for tests).
    """

    _TRADE_COLS = ("timestamp", "symbol", "price", "size", "seq")
    _QUOTE_COLS = ("timestamp", "symbol", "bid", "ask", "bid_size", "ask_size", "seq")

    def __init__(
        self, max_rows: int = 1000, max_delay_s: float | None = 0.1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows={max_rows!r}: must be >= 1")
        if max_delay_s is not None and not max_delay_s > 0:
            raise ValueError(f"max_delay_s={max_delay_s!r}: must be > 0 or None")
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._trades: list[tuple[int, str, float, float, int]] = []
        self._quotes: list[tuple[int, str, float, float, float, float, int]] = []
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._trades) + len(self._quotes)

    def add_trade(self, ts: int, symbol: str, price: float, size: float, seq: int) -> None:
        """One trade row (timestamp in ns UTC)."""
        self._note_first()
        self._trades.append((ts, symbol, price, size, seq))

    def add_quote(
        self, ts: int, symbol: str, bid: float, ask: float, bid_size: float, ask_size: float, seq: int
    ) -> None:
        """One quote row (timestamp in ns UTC)."""
        self._note_first()
        self._quotes.append((ts, symbol, bid, ask, bid_size, ask_size, seq))

    def _note_first(self) -> None:
        if self._first_at is None:
            self._first_at = self._clock()

    def due_in(self) -> float | None:
        """Seconds until the pending rows are due by age (0 when overdue); ``None`` with nothing pending."""
        if self._first_at is None or self.max_delay_s is None:
            return None
        return max(0.0, self._first_at + self.max_delay_s - self._clock())

    def due(self) -> bool:
        """Whether a batch should be cut now."""
        if len(self) >= self.max_rows:
            return True
        wait = self.due_in()
        return wait is not None and wait <= 0.0

    def take(self) -> RawBatch:
        """Everything pending as one batch (frames are ``None`` for a kind with no rows), and start afresh."""
        trades = self._frame(self._trades, self._TRADE_COLS, ("price", "size")) if self._trades else None
        quotes = (
            self._frame(self._quotes, self._QUOTE_COLS, ("bid", "ask", "bid_size", "ask_size"))
            if self._quotes
            else None
        )
        self._trades, self._quotes, self._first_at = [], [], None
        return RawBatch(trades=trades, quotes=quotes)

    @staticmethod
    def _frame(rows: list[Any], columns: tuple[str, ...], floats: tuple[str, ...]) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(rows, columns=list(columns))
        frame["timestamp"] = frame["timestamp"].astype(np.int64)
        frame["seq"] = frame["seq"].astype(np.int64)
        for name in floats:
            frame[name] = frame[name].astype(np.float64)
        return frame


async def receive_batches(
    recv: Callable[[], Awaitable[T]],
    handle: Callable[[T, int], None],
    batcher: RowBatcher,
    stale_after_s: float,
    clock_ns: Callable[[], int] = time.time_ns,
    poll: Callable[[], None] | None = None,
    poll_every_s: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[RawBatch, None]:
    """The receive loop of one connection: messages in, batches out.

    Each message is passed to ``handle`` with its local receive time (ns UTC), which adds rows to ``batcher``;
    a batch is yielded when the batcher says it is due, also while the socket is quiet. When messages arrive
    but none makes a row (depth updates only, heartbeats) an empty batch is yielded every
    ``stale_after_s / 2`` as a sign of life, so that the consumer's stale limit measures the socket and not
    the market. No message for ``stale_after_s`` raises :class:`~ingest.sources.live.StaleFeedError`.
    ``poll`` runs after every wake-up, and at least every ``poll_every_s`` seconds when given (to collect
    finished side tasks such as snapshot requests while the socket is quiet).
    """
    last_message = last_yield = monotonic()
    messages_since_yield = 0
    heartbeat_s = stale_after_s / 2.0
    while True:
        now = monotonic()
        wait = last_message + stale_after_s - now
        due = batcher.due_in()
        if due is not None:
            wait = min(wait, due)
        if messages_since_yield and not len(batcher):
            wait = min(wait, last_yield + heartbeat_s - now)
        if poll_every_s is not None:
            wait = min(wait, poll_every_s)
        received = False
        try:
            message = await asyncio.wait_for(recv(), timeout=max(wait, 0.0))
        except TimeoutError:
            pass
        else:
            received = True
            last_message = monotonic()
            messages_since_yield += 1
            handle(message, clock_ns())
        now = monotonic()
        if poll is not None:
            poll()
        if len(batcher) and batcher.due():
            yield batcher.take()
            last_yield, messages_since_yield = monotonic(), 0
        elif messages_since_yield and not len(batcher) and now - last_yield >= heartbeat_s:
            yield RawBatch()
            last_yield, messages_since_yield = monotonic(), 0
        elif not received and now - last_message >= stale_after_s:
            raise StaleFeedError(f"no message for {stale_after_s:.1f} s")


def translate_transport_error(venue: str, exc: Exception) -> Exception | None:
    """The feed error a transport failure stands for; ``None`` for a clean close by the server.

    A closed connection, a refused or timed-out connect, a server error or a rate limit (HTTP 429/418) may be
    cured by reconnecting: :class:`~ingest.sources.live.FeedError`. A handshake refused with 401/403/404/451
    (bad credentials, a blocked region, a wrong path) or an invalid URL will not:
    :class:`~ingest.sources.live.FatalFeedError`. Anything else (a bug) is returned unchanged.
    """
    if isinstance(exc, FeedError | FatalFeedError):
        return exc
    if isinstance(exc, ConnectionClosedOK):
        return None
    if isinstance(exc, ConnectionClosed):
        return FeedError(f"{venue}: connection closed: {exc}")
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403, 404, 451):
            return FatalFeedError(f"{venue}: handshake refused: status={status!r} ({exc})")
        return FeedError(f"{venue}: handshake refused: status={status!r} ({exc})")
    if isinstance(exc, InvalidURI):
        return FatalFeedError(f"{venue}: url={exc.uri!r}: not a WebSocket URL ({exc.msg})")
    if isinstance(exc, InvalidHandshake | OSError | httpx.TransportError):
        return FeedError(f"{venue}: {type(exc).__name__}: {exc}")
    return exc


async def deliver(batches: AsyncIterator[RawBatch], batcher: RowBatcher, venue: str) -> AsyncGenerator[RawBatch, None]:
    """Pass a session's batches through; when it fails, hand over the rows already received, then raise.

    Rows received before a dropped connection are valid data: they are yielded as a last batch before the
    translated error (:func:`translate_transport_error`) ends the session.
    """
    failure: Exception | None = None
    cause: Exception | None = None
    try:
        async for batch in batches:
            yield batch
    except Exception as exc:
        failure, cause = translate_transport_error(venue, exc), exc
    if len(batcher):
        yield batcher.take()
    if failure is not None:
        if failure is cause:
            raise failure
        raise failure from cause
