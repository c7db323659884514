"""The router: validated micro-batches split per symbol, one call per symbol per batch, bounded in flight.

:class:`Router` runs in the driver. Each validated micro-batch (trades, quotes, bars of many symbols) is grouped
per symbol in one vectorised pass (``pd.factorize`` and a stable ``np.argsort`` of the symbol column) and each
symbol's part goes to its :class:`~actors.asset.AssetActor` as one call, numbered per symbol. At most
``max_in_flight`` calls are outstanding (``ray.wait``): a slow actor slows the feed, nothing queues without limit.

Recovery: the router keeps each symbol's batches until the actor reports a checkpoint past them and their
replies are in; each call tells the actor up to which batch every reply arrived (``acked``). When a call
fails because the actor died, is unreachable, or restarted behind the router (:class:`~actors.asset.SequenceGapError`),
the router waits for the actor to come back, asks where its restored state stands, and re-sends every kept batch
after it, in order. Replies are stored by batch number, so a batch answered twice is collected once.

Threads: :meth:`Router.submit` may run in one thread while :meth:`Router.collect` waits for replies in another
(the stream pipeline does so, to keep reading its buffer while replies arrive); state changes hold a lock, the
waiting does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    ObjectLostError,
    RayActorError,
    RayTaskError,
)

from actors.asset import AssetActor, AssetPosition, AssetReply, SequenceGapError
from ingest.asset import AssetOutput
from ingest.records import BarBatch, QuoteBatch, TickBatch

B = TypeVar("B", TickBatch, QuoteBatch, BarBatch)
Handle = ray.actor.ActorHandle[AssetActor]

#: Errors of a call that mean "the actor lost or may have lost state": recover and re-send. A reply stored on a
#: node that died is lost with it (calls are not retried, so Ray does not rebuild it): re-sent the same way.
_LOST = (RayActorError, ActorDiedError, ActorUnavailableError, ObjectLostError)


def split_by_symbol(rows: B | None) -> Iterator[tuple[str, B]]:
    """The rows of each symbol, in order of first appearance; arrival order is kept within a symbol.

    One factorize and one stable sort of the symbol codes, then contiguous slices: no per-row work in Python.
    """
    if rows is None or not len(rows):
        return
    symbols = rows.symbol
    first = symbols[0]
    if symbols[-1] == first and (symbols == first).all():
        yield str(first), rows
        return
    codes, uniques = pd.factorize(symbols)
    # a stable sort of 8- or 16-bit keys is a radix sort: several times faster than sorting int64 codes
    narrow = codes.astype(np.int8 if len(uniques) <= 127 else np.int16 if len(uniques) <= 32767 else np.int64)
    order = np.argsort(narrow, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(uniques)))
    sorted_rows = rows.take(order)
    start = 0
    for sym, end in zip(uniques, ends.tolist(), strict=True):
        yield str(sym), sorted_rows.take(slice(start, end))
        start = end


class _OneSymbol:
    """A batch of one symbol on its way to that symbol's actor.

    It pickles as the batch's numeric columns (sent out of band by Ray, without copies) and the symbol once,
    instead of an object column of one reference per row; the actor's process rebuilds the very same batch.
    """

    __slots__ = ("batch", "symbol")

    def __init__(self, batch: TickBatch | QuoteBatch | BarBatch, symbol: str) -> None:
        self.batch, self.symbol = batch, symbol

    def __reduce__(self) -> tuple[Any, ...]:
        b = self.batch
        columns = {name: getattr(b, name) for name in b._DTYPES if name != "symbol"}
        return _rebuild, (type(b), self.symbol, len(b), columns)


def _rebuild(kind: type[B], symbol: str, rows: int, columns: dict[str, Any]) -> B:
    return kind._trusted(symbol=np.full(rows, symbol, dtype=object), **columns)


def _one_symbol(batch: B | None, symbol: str) -> _OneSymbol | None:
    return None if batch is None else _OneSymbol(batch, symbol)


@dataclass
class _Pending:
    """A batch kept for re-sending: its rows, a bar close timer, or a flush."""

    ticks: TickBatch | None = None
    quotes: QuoteBatch | None = None
    bars: BarBatch | None = None
    flush: bool = False
    close_ts: int | None = None


@dataclass
class _Lane:
    """The router's view of one symbol."""

    # typed loosely: Ray's type hints do not follow async actor methods through ``.remote``
    handle: Any
    next_seq: int = 0
    kept: dict[int, _Pending] = field(default_factory=dict)
    # batch numbers answered above ``acked`` (every batch up to ``acked`` is answered)
    answered: set[int] = field(default_factory=set)
    outputs: dict[int, AssetOutput] = field(default_factory=dict)
    acked: int = -1
    epoch: int = 0
    recoveries: int = 0
    in_flight: int = 0

    def is_answered(self, seq: int) -> bool:
        return seq <= self.acked or seq in self.answered


@dataclass
class RouterStats:
    """Counts of a router: calls sent (first sends and re-sends), replies, duplicates, recoveries."""

    calls: int = 0
    resent: int = 0
    replies: int = 0
    duplicates: int = 0
    recoveries: int = 0


class Router:
    """Sends validated micro-batches to per-symbol actors and collects their replies.

    Parameters
    ----------
    actor_for : callable
        ``actor_for(symbol)`` returns the symbol's actor handle (e.g. a ``functools.partial`` of
        :func:`actors.asset.get_or_create_asset_actor`); called once per new symbol.
    max_in_flight : int
        Calls outstanding before a blocking :meth:`submit` waits, >= 1.
    on_reply : callable, optional
        Called with each reply the first time its batch is answered (never twice for a batch), in reply order
        (batch order within a symbol).
    recover_timeout_s : float
        How long to wait for a dead actor to come back before giving up, in seconds.
    keep_outputs : bool
        Keep every output for :meth:`outputs` (tests and batch runs); a long-running stream passes ``False``
        and takes outputs from ``on_reply``.
    """

    def __init__(
        self,
        actor_for: Callable[[str], Handle],
        max_in_flight: int = 16,
        on_reply: Callable[[AssetReply], None] | None = None,
        recover_timeout_s: float = 60.0,
        keep_outputs: bool = True,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight={max_in_flight!r}: must be >= 1")
        self._actor_for = actor_for
        self.max_in_flight = max_in_flight
        #: called with each fresh reply (on the thread that collected it); the stream pipeline sets it
        self.on_reply = on_reply
        self._recover_timeout_s = recover_timeout_s
        self._keep_outputs = keep_outputs
        self._lanes: dict[str, _Lane] = {}
        self._in_flight: dict[ray.ObjectRef[Any], tuple[str, int, int]] = {}
        self._lock = threading.RLock()
        self.stats = RouterStats()

    # ---------------------------------------------------------------------------------------------------
    def submit(
        self,
        ticks: TickBatch | None = None,
        quotes: QuoteBatch | None = None,
        bars: BarBatch | None = None,
        block: bool = True,
    ) -> dict[str, int]:
        """Send one validated micro-batch: one call per symbol it carries; returns each symbol's batch number.

        With ``block`` (the default) it first waits while ``max_in_flight`` calls are outstanding; without, the
        caller bounds the calls itself (see :attr:`in_flight`).
        """
        parts: dict[str, _Pending] = {}
        for sym, t in split_by_symbol(ticks):
            parts.setdefault(sym, _Pending()).ticks = t
        for sym, q in split_by_symbol(quotes):
            parts.setdefault(sym, _Pending()).quotes = q
        for sym, b in split_by_symbol(bars):
            parts.setdefault(sym, _Pending()).bars = b
        if block:
            while len(self._in_flight) >= self.max_in_flight:
                self._wait_one()
        with self._lock:
            return {sym: self._send_new(sym, pending) for sym, pending in parts.items()}

    def close_until(self, symbol: str, ts_ns: int) -> int:
        """Ask ``symbol``'s actor to close the bars ending at or before ``ts_ns``; returns the batch number."""
        with self._lock:
            return self._send_new(symbol, _Pending(close_ts=int(ts_ns)))

    def flush(self, wait: bool = True) -> dict[str, int]:
        """Close every open bar of every symbol (end of stream); returns each symbol's batch number.

        With ``wait`` (the default) it also waits for every reply (:meth:`drain`).
        """
        with self._lock:
            seqs = {sym: self._send_new(sym, _Pending(flush=True)) for sym in list(self._lanes)}
        if wait:
            self.drain()
        return seqs

    def drain(self) -> None:
        """Wait until every call sent has been answered (re-sending after failures)."""
        while self._in_flight:
            self._wait_one()

    def collect(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` seconds for the first reply, take every reply ready; returns how many.

        Safe to call from another thread than :meth:`submit`.
        """
        refs = list(self._in_flight)
        if not refs:
            time.sleep(timeout_s)
            return 0
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if not ready:
            return 0
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        self._take(ready)
        return len(ready)

    @property
    def in_flight(self) -> int:
        """Calls sent and not answered yet."""
        return len(self._in_flight)

    @property
    def symbols(self) -> list[str]:
        """Symbols seen, in order of first appearance."""
        return list(self._lanes)

    def outputs(self, symbol: str) -> AssetOutput:
        """Everything a symbol's actor answered so far, in batch order, as one output (``keep_outputs``).

        Raises
        ------
        KeyError
            When ``symbol`` was never routed (naming it).
        """
        lane = self._lanes.get(symbol)
        if lane is None:
            raise KeyError(f"symbol={symbol!r}: never routed")
        done = [lane.outputs[s] for s in sorted(lane.outputs)]
        return AssetOutput.concat(done) if done else AssetOutput(symbol)

    def kept(self, symbol: str) -> int:
        """Batches of ``symbol`` held for re-sending (not yet covered by a checkpoint)."""
        return len(self._lanes[symbol].kept)

    def recoveries(self, symbol: str) -> int:
        """Times the router re-sent ``symbol``'s batches after a failure."""
        return self._lanes[symbol].recoveries

    def lane_in_flight(self, symbol: str) -> int:
        """Calls of ``symbol`` outstanding."""
        return self._lanes[symbol].in_flight

    # ---------------------------------------------------------------------------------------------------
    def _lane(self, symbol: str) -> _Lane:
        lane = self._lanes.get(symbol)
        if lane is None:
            lane = self._lanes[symbol] = _Lane(self._actor_for(symbol))
        return lane

    def _send_new(self, symbol: str, pending: _Pending) -> int:
        lane = self._lane(symbol)
        seq = lane.next_seq
        lane.next_seq += 1
        lane.kept[seq] = pending
        self._send(symbol, lane, seq, pending)
        return seq

    def _send(self, symbol: str, lane: _Lane, seq: int, pending: _Pending) -> None:
        ref: ray.ObjectRef[Any]
        if pending.flush:
            ref = lane.handle.flush.remote(seq, lane.acked)
        elif pending.close_ts is not None:
            ref = lane.handle.close_until.remote(seq, pending.close_ts, lane.acked)
        else:
            # each part holds the lane's symbol only (split_by_symbol): it travels without its symbol column
            ref = lane.handle.process.remote(
                seq,
                _one_symbol(pending.ticks, symbol),
                _one_symbol(pending.quotes, symbol),
                _one_symbol(pending.bars, symbol),
                lane.acked,
            )
        self._in_flight[ref] = (symbol, seq, lane.epoch)
        lane.in_flight += 1
        self.stats.calls += 1

    def _wait_one(self) -> None:
        ready, _ = ray.wait(list(self._in_flight), num_returns=1)
        self._take(ready)

    def _take(self, ready: list[ray.ObjectRef[Any]]) -> None:
        claimed: list[tuple[ray.ObjectRef[Any], str, _Lane, int]] = []
        with self._lock:
            for ref in ready:
                sent = self._in_flight.pop(ref, None)
                if sent is None:
                    continue  # taken by another thread's wait
                symbol, _, epoch = sent
                lane = self._lanes[symbol]
                lane.in_flight -= 1
                claimed.append((ref, symbol, lane, epoch))
        if not claimed:
            return
        replies: list[AssetReply] | None
        try:
            # one get for every ready reply; a failed call among them is handled one by one below
            replies = ray.get([ref for ref, *_ in claimed])
        except Exception:  # each failure is classified (recovered or raised) below
            replies = None
        for k, (ref, symbol, lane, epoch) in enumerate(claimed):
            if replies is not None:
                reply = replies[k]
            else:
                try:
                    reply = ray.get(ref)
                except _LOST:
                    self._recover(symbol, lane, epoch)
                    continue
                except RayTaskError as exc:
                    if isinstance(exc.cause, SequenceGapError):
                        self._recover(symbol, lane, epoch)
                        continue
                    raise
            with self._lock:
                fresh = self._accept(lane, reply)
            if fresh and self.on_reply is not None:
                self.on_reply(reply)

    def _accept(self, lane: _Lane, reply: AssetReply) -> bool:
        self.stats.replies += 1
        self.stats.duplicates += int(reply.duplicate)
        fresh = not lane.is_answered(reply.seq)
        if fresh:
            lane.answered.add(reply.seq)
            if self._keep_outputs:
                lane.outputs[reply.seq] = reply.output
            while lane.acked + 1 in lane.answered:
                lane.acked += 1
                lane.answered.discard(lane.acked)
        for s in [s for s in lane.kept if s <= reply.checkpointed and lane.is_answered(s)]:
            del lane.kept[s]
        return fresh

    def _recover(self, symbol: str, lane: _Lane, epoch: int) -> None:
        with self._lock:
            if epoch != lane.epoch:
                # a call of an earlier round: the batch has been re-sent already
                return
            lane.epoch += 1
            lane.recoveries += 1
            self.stats.recoveries += 1
        position = self._position(symbol, lane)
        # calls of the old round still in flight are superseded by the re-sends below; a batch applied but never
        # answered is re-sent too: the actor answers it from its kept (or checkpointed) replies
        with self._lock:
            for s in sorted(lane.kept):
                if s > position.applied or not lane.is_answered(s):
                    self._send(symbol, lane, s, lane.kept[s])
                    self.stats.resent += 1

    def _position(self, symbol: str, lane: _Lane) -> AssetPosition:
        deadline = time.monotonic() + self._recover_timeout_s
        while True:
            try:
                pos: AssetPosition = ray.get(lane.handle.position.remote(), timeout=5.0)
                return pos
            except (*_LOST, GetTimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"symbol={symbol!r}: actor did not come back within {self._recover_timeout_s} s"
                    ) from exc
                time.sleep(0.1)
