"""A local copy of a Binance spot order book, kept from diff-depth events by Binance's sequence rules.

Binance's documented procedure (spot "How to manage a local order book correctly"):

1. open the ``<symbol>@depth`` stream and buffer its events;
2. get a REST snapshot ``/api/v3/depth?symbol=...&limit=1000``, which carries ``lastUpdateId``;
3. drop buffered events with ``u <= lastUpdateId``;
4. the first event applied must satisfy ``U <= lastUpdateId + 1 <= u``; if its ``U`` is above
   ``lastUpdateId + 1`` the snapshot is older than the buffer: get another one;
5. every later event's ``U`` must equal the previous event's ``u + 1``;
6. a level's quantity is the absolute quantity at that price; quantity 0 removes the level (removing a level
   the local book does not hold is normal).

:class:`DepthBook` is that procedure as a state machine without I/O: it says when it needs a snapshot
(:attr:`DepthBook.needs_snapshot`) and the caller fetches one, from the REST endpoint in the live adapter or
from a recorded file or a test double in a replay. A gap in the sequence, or a book left crossed
(best bid >= best ask) by an update, discards the book, is counted in :attr:`DepthBook.resyncs`, is recorded in
:attr:`DepthBook.gaps`, and starts a resync from a new snapshot.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ingest.sources.live import FeedError

log = logging.getLogger(__name__)

Levels = tuple[tuple[float, float], ...]


class BufferOverflowError(FeedError):
    """Too many depth events waited for a snapshot."""


@dataclass(frozen=True, slots=True)
class DepthUpdate:
    """One ``depthUpdate`` event: the absolute quantity at each changed price.

    Attributes
    ----------
    symbol : str
        Venue symbol (``"BTCUSDT"``).
    first_update_id, final_update_id : int
        ``U`` and ``u``: the first and last order-book update ids the event covers.
    event_ns : int
        Event time ``E``, ns UTC (Binance sends milliseconds).
    bids, asks : tuple of (price, quantity)
        Changed levels; quantity 0 removes the level.
    """

    symbol: str
    first_update_id: int
    final_update_id: int
    event_ns: int
    bids: Levels
    asks: Levels


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A REST depth snapshot: the book as of update id ``last_update_id``."""

    last_update_id: int
    bids: Levels
    asks: Levels


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Why a synchronised book was discarded.

    Attributes
    ----------
    symbol : str
        Venue symbol.
    kind : {"gap", "crossed"}
        ``gap``: the event's ``U`` was not ``expected``; ``crossed``: the event left best bid >= best ask.
    expected : int
        The update id the event should have started at (``previous u + 1``, or ``lastUpdateId + 1``).
    first_update_id, final_update_id : int
        ``U`` and ``u`` of the offending event.
    event_ns : int
        Its event time, ns UTC.
    """

    symbol: str
    kind: Literal["gap", "crossed"]
    expected: int
    first_update_id: int
    final_update_id: int
    event_ns: int


class OrderBook:
    """Price levels of one side each, with the best prices kept up to date incrementally."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._best_bid: float | None = None
        self._best_ask: float | None = None

    def clear(self) -> None:
        """Remove every level."""
        self.bids.clear()
        self.asks.clear()
        self._best_bid = self._best_ask = None

    def load(self, bids: Levels, asks: Levels) -> None:
        """Replace the book with a snapshot's levels (levels of quantity 0 are skipped)."""
        self.clear()
        self.bids.update((p, q) for p, q in bids if q > 0)
        self.asks.update((p, q) for p, q in asks if q > 0)
        self._best_bid = max(self.bids) if self.bids else None
        self._best_ask = min(self.asks) if self.asks else None

    def apply(self, bids: Levels, asks: Levels) -> None:
        """Set the quantity of each level; quantity 0 removes it."""
        for price, qty in bids:
            if qty > 0:
                self.bids[price] = qty
                if self._best_bid is None or price > self._best_bid:
                    self._best_bid = price
            elif self.bids.pop(price, None) is not None and price == self._best_bid:
                self._best_bid = max(self.bids) if self.bids else None
        for price, qty in asks:
            if qty > 0:
                self.asks[price] = qty
                if self._best_ask is None or price < self._best_ask:
                    self._best_ask = price
            elif self.asks.pop(price, None) is not None and price == self._best_ask:
                self._best_ask = min(self.asks) if self.asks else None

    def best_bid(self) -> tuple[float, float] | None:
        """Highest bid price and its quantity, or ``None`` for an empty side."""
        return None if self._best_bid is None else (self._best_bid, self.bids[self._best_bid])

    def best_ask(self) -> tuple[float, float] | None:
        """Lowest ask price and its quantity, or ``None`` for an empty side."""
        return None if self._best_ask is None else (self._best_ask, self.asks[self._best_ask])

    @property
    def crossed(self) -> bool:
        """Whether best bid >= best ask (a book kept correctly never is; a locked book is not either)."""
        return self._best_bid is not None and self._best_ask is not None and self._best_bid >= self._best_ask


@dataclass
class DepthBook:
    """One symbol's local book, synchronised from a snapshot and diff-depth events.

    Parameters
    ----------
    symbol : str
        Venue symbol.
    max_buffer : int
        Most events buffered while waiting for a snapshot; more raises :class:`BufferOverflowError`.

    Attributes
    ----------
    book : OrderBook
        The levels (meaningful while :attr:`synced`).
    last_update_id : int or None
        ``u`` of the last applied event (or the snapshot's ``lastUpdateId``); ``None`` without a book.
    resyncs : int
        Books discarded after a gap or a crossed book (the first synchronisation is not counted).
    stale_snapshots : int
        Snapshots refused because they were older than the buffered events.
    gaps : deque of SequenceGap
        The latest discarded books (up to 1,000), with the offending event.
    applied, dropped : int
        Events applied to the book, and events dropped as already contained in a snapshot.
    """

    symbol: str
    max_buffer: int = 10_000
    book: OrderBook = field(default_factory=OrderBook)
    last_update_id: int | None = None
    resyncs: int = 0
    stale_snapshots: int = 0
    gaps: deque[SequenceGap] = field(default_factory=lambda: deque(maxlen=1000))
    applied: int = 0
    dropped: int = 0
    _buffer: list[DepthUpdate] = field(default_factory=list)
    _first_pending: bool = False

    @property
    def needs_snapshot(self) -> bool:
        """Whether the book waits for a snapshot (at the start and after every discarded book)."""
        return self.last_update_id is None

    @property
    def synced(self) -> bool:
        """Whether the book holds a consistent state (a snapshot plus a continuous run of events)."""
        return self.last_update_id is not None

    def reset(self) -> None:
        """Forget the book and the buffer (a new connection): the next snapshot starts afresh."""
        self.book.clear()
        self.last_update_id = None
        self._buffer.clear()
        self._first_pending = False

    def on_update(
        self, update: DepthUpdate, on_applied: Callable[[DepthUpdate, OrderBook], None] | None = None
    ) -> None:
        """Take one event: buffer it, drop it, apply it, or detect a gap and start a resync.

        ``on_applied(update, book)`` is called after each event applied to a consistent book.
        """
        if update.symbol != self.symbol:
            raise ValueError(f"symbol={update.symbol!r}: this book keeps {self.symbol!r}")
        if update.final_update_id < update.first_update_id:
            raise ValueError(f"{self.symbol}: U={update.first_update_id!r}, u={update.final_update_id!r}: need U <= u")
        if self.last_update_id is None:
            if len(self._buffer) >= self.max_buffer:
                raise BufferOverflowError(
                    f"{self.symbol}: {len(self._buffer)} depth events buffered with no snapshot (max_buffer="
                    f"{self.max_buffer}); the snapshot request is not being answered"
                )
            self._buffer.append(update)
            return
        self._step(update, self.last_update_id, on_applied)

    def on_snapshot(
        self, snapshot: DepthSnapshot, on_applied: Callable[[DepthUpdate, OrderBook], None] | None = None
    ) -> bool:
        """Install a snapshot and apply the buffered events after it.

        Returns ``False`` (and keeps waiting, buffer intact) when the snapshot is older than the first
        buffered event that it does not contain: the caller fetches another one.
        """
        last = snapshot.last_update_id
        pending = [u for u in self._buffer if u.final_update_id > last]
        if pending and pending[0].first_update_id > last + 1:
            self.stale_snapshots += 1
            log.info(
                "%s: snapshot lastUpdateId=%d older than buffered event U=%d; requesting another",
                self.symbol,
                last,
                pending[0].first_update_id,
            )
            return False
        self.dropped += len(self._buffer) - len(pending)
        self._buffer.clear()
        self.book.load(snapshot.bids, snapshot.asks)
        self.last_update_id = last
        self._first_pending = True
        for update in pending:
            if self.needs_snapshot:  # after a gap inside the buffer, the rest waits for a snapshot
                self._buffer.append(update)
            else:
                self._step(update, self.last_update_id, on_applied)
        return True

    def _step(
        self, update: DepthUpdate, last: int, on_applied: Callable[[DepthUpdate, OrderBook], None] | None
    ) -> None:
        if update.final_update_id <= last:
            self.dropped += 1
            return
        if self._first_pending:
            ok = update.first_update_id <= last + 1 <= update.final_update_id
        else:
            ok = update.first_update_id == last + 1
        if not ok:
            self._discard(update, "gap", last + 1)
            return
        self.book.apply(update.bids, update.asks)
        self.last_update_id = update.final_update_id
        self._first_pending = False
        if self.book.crossed:
            self._discard(update, "crossed", last + 1)
            return
        self.applied += 1
        if on_applied is not None:
            on_applied(update, self.book)

    def _discard(self, update: DepthUpdate, kind: Literal["gap", "crossed"], expected: int) -> None:
        gap = SequenceGap(self.symbol, kind, expected, update.first_update_id, update.final_update_id, update.event_ns)
        self.gaps.append(gap)
        self.resyncs += 1
        log.warning(
            "%s: depth %s: expected U=%d, got U=%d u=%d; resyncing from a new snapshot",
            self.symbol,
            kind,
            expected,
            update.first_update_id,
            update.final_update_id,
        )
        self.reset()
        if kind == "gap":  # the event after a gap belongs to the next synchronisation
            self._buffer.append(update)
