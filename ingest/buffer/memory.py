"""The embedded buffer: an in-process queue with the semantics of Redis Streams consumer groups.

Nothing to install and nothing survives the process: it is the default for one machine, where producer and
consumers share an event loop. It keeps what the Redis implementation keeps, so code written against one runs
on the other: entries ids ``"<ms>-<n>"``, per group a last-delivered id and a pending list with delivery counts
and idle times, claims that count a delivery, dead letters after ``max_deliveries``, trimming to the oldest
entry some group still needs, and per-source sequence tracking. Entries hold the encoded batch
(:func:`~ingest.buffer.base.encode_batch`), so a consumer never shares arrays with the producer.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest.buffer.base import (
    DEFAULT_MAX_DELIVERIES,
    Appended,
    Batch,
    BufferMetrics,
    Claimed,
    DeadLetter,
    Entry,
    GapCallback,
    Outgoing,
    PendingEntry,
    SequenceGap,
    batch_kind,
    check_name,
    check_outgoing,
    check_positive,
    encode_batch,
    format_entry_id,
    parse_entry_id,
)

Key = tuple[int, int]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Stored:
    key: Key
    source: str
    seq: int
    kind: str
    payload: bytes


@dataclass(slots=True)
class _Pending:
    consumer: str
    deliveries: int
    delivered_ms: int


@dataclass(slots=True)
class _Group:
    last: Key
    pending: dict[Key, _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    keys: list[Key] = field(default_factory=list)
    entries: dict[Key, _Stored] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    last_key: Key = (0, 0)
    dead: list[DeadLetter] = field(default_factory=list)
    dead_last: Key = (0, 0)


class MemoryBuffer:
    """An in-process :class:`~ingest.buffer.base.Buffer`.

    Parameters
    ----------
    max_deliveries : int
        Deliveries after which an unacknowledged entry goes to the dead letters on its next claim.
    on_gap : callable, optional
        Called with each :class:`~ingest.buffer.base.SequenceGap` as it is detected.
    gap_history : int
        How many recent gaps :meth:`gaps` keeps.
    wall_clock_ms : callable returning int
        Milliseconds since the epoch, for entry ids.
    idle_clock_ms : callable returning int
        A monotonic clock in milliseconds, for the idle time of pending entries (inject one in tests).

    Examples
    --------
    >>> import asyncio
    >>> from ingest.records import Tick, TickBatch
    >>> async def demo() -> int:
    ...     buf = MemoryBuffer()
    ...     batch = TickBatch.from_ticks([Tick(ts=1, symbol="SPY", price=1.0, size=1.0)])
    ...     await buf.append("SPY", batch, source="replay", seq=0)
    ...     entries = await buf.read("actors", "worker-1", ["SPY"])
    ...     return await buf.ack("actors", entries)
    >>> asyncio.run(demo())
    1
    """

    def __init__(
        self,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        on_gap: GapCallback | None = None,
        gap_history: int = 1000,
        wall_clock_ms: Callable[[], int] = _wall_ms,
        idle_clock_ms: Callable[[], int] = _monotonic_ms,
    ) -> None:
        self.max_deliveries = check_positive("max_deliveries", max_deliveries)
        self.metrics = BufferMetrics()
        self._on_gap = on_gap
        self._wall_ms = wall_clock_ms
        self._idle_ms = idle_clock_ms
        self._streams: dict[str, _Stream] = {}
        self._last_seq: dict[str, int] = {}
        self._gaps: deque[SequenceGap] = deque(maxlen=check_positive("gap_history", gap_history))
        self._arrived = asyncio.Event()
        self._closed = False

    # ----------------------------------------------------------------------------------------------------
    def _stream(self, name: str) -> _Stream:
        if self._closed:
            raise RuntimeError("buffer is closed")
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    @staticmethod
    def _next_key(last: Key, now_ms: int) -> Key:
        return (now_ms, 0) if now_ms > last[0] else (last[0], last[1] + 1)

    def _track(self, item: Outgoing) -> tuple[SequenceGap | None, bool]:
        last = self._last_seq.get(item.source)
        if last is not None and item.seq <= last:
            return None, True
        self._last_seq[item.source] = item.seq
        if last is None or item.seq == last + 1:
            return None, False
        return SequenceGap(item.source, last + 1, item.seq, item.stream), False

    async def append(self, stream: str, batch: Batch, *, source: str, seq: int) -> Appended:
        """Append one batch; see :meth:`ingest.buffer.base.Buffer.append`."""
        return (await self.append_many([Outgoing(stream, batch, source, seq)]))[0]

    async def append_many(self, items: Sequence[Outgoing]) -> list[Appended]:
        """Append batches in order; see :meth:`ingest.buffer.base.Buffer.append_many`."""
        checked = [check_outgoing(item) for item in items]
        encoded = [(item, batch_kind(item.batch), encode_batch(item.batch)) for item in checked]
        out: list[Appended] = []
        for item, kind, payload in encoded:
            stream = self._stream(item.stream)
            key = self._next_key(stream.last_key, self._wall_ms())
            stream.last_key = key
            stream.keys.append(key)
            stream.entries[key] = _Stored(key, item.source, item.seq, kind, payload)
            gap, replayed = self._track(item)
            self.metrics.entries_appended += 1
            self.metrics.records_appended += len(item.batch)
            self.metrics.entries_replayed += replayed
            if gap is not None:
                self._gaps.append(gap)
                self.metrics.sequence_gaps += 1
                self.metrics.missing_sequences += gap.missing
                if self._on_gap is not None:
                    self._on_gap(gap)
            out.append(Appended(item.stream, format_entry_id(key), item.source, item.seq, gap, replayed))
        if out:
            self._arrived.set()
            self._arrived = asyncio.Event()
        return out

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create ``group`` on ``stream`` unless it exists; see :meth:`ingest.buffer.base.Buffer.ensure_group`."""
        s = self._stream(check_name("stream", stream))
        if check_name("group", group) in s.groups:
            return
        last = s.last_key if start_id == "$" else parse_entry_id("0-0" if start_id == "0" else start_id)
        s.groups[group] = _Group(last=last)

    def _entry(self, name: str, stored: _Stored, deliveries: int) -> Entry:
        return Entry(
            name, format_entry_id(stored.key), stored.source, stored.seq, stored.kind, stored.payload, deliveries
        )

    def _read_now(self, group: str, consumer: str, streams: Sequence[str], count: int) -> list[Entry]:
        now = self._idle_ms()
        out: list[Entry] = []
        for name in streams:
            s = self._stream(name)
            g = s.groups.get(group)
            if g is None:
                g = s.groups[group] = _Group(last=(0, 0))
            start = bisect_right(s.keys, g.last)
            for key in s.keys[start : start + count]:
                g.pending[key] = _Pending(consumer, 1, now)
                g.last = key
                out.append(self._entry(name, s.entries[key], 1))
        return out

    async def read(
        self, group: str, consumer: str, streams: Sequence[str], *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        """New entries for ``consumer`` of ``group``; see :meth:`ingest.buffer.base.Buffer.read`."""
        check_name("group", group)
        check_name("consumer", consumer)
        for name in streams:
            check_name("stream", name)
        check_positive("count", count)
        deadline = None if block_ms is None or block_ms == 0 else time.monotonic() + block_ms / 1000
        while True:
            out = self._read_now(group, consumer, streams, count)
            if out or block_ms is None:
                self.metrics.entries_read += len(out)
                return out
            arrived = self._arrived
            if deadline is None:
                await arrived.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(arrived.wait(), remaining)
            except TimeoutError:
                return []

    async def ack(self, group: str, entries: Sequence[Entry]) -> int:
        """Acknowledge ``entries`` for ``group``; see :meth:`ingest.buffer.base.Buffer.ack`."""
        done = 0
        for entry in entries:
            g = self._stream(entry.stream).groups.get(group)
            if g is not None and g.pending.pop(parse_entry_id(entry.id), None) is not None:
                done += 1
        self.metrics.entries_acked += done
        return done

    async def pending(self, stream: str, group: str, count: int = 1000) -> list[PendingEntry]:
        """Unacknowledged entries of ``group``; see :meth:`ingest.buffer.base.Buffer.pending`."""
        g = self._stream(stream).groups.get(group)
        if g is None:
            return []
        now = self._idle_ms()
        return [
            PendingEntry(format_entry_id(k), p.consumer, now - p.delivered_ms, p.deliveries)
            for k, p in sorted(g.pending.items())[:count]
        ]

    async def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> Claimed:
        """Take over idle pending entries; see :meth:`ingest.buffer.base.Buffer.claim`."""
        check_name("consumer", consumer)
        check_positive("count", count)
        s = self._stream(stream)
        g = s.groups.get(group)
        if g is None:
            return Claimed([], [])
        now = self._idle_ms()
        entries: list[Entry] = []
        dead: list[DeadLetter] = []
        for key, p in sorted(g.pending.items()):
            if len(entries) + len(dead) >= count:
                break
            if now - p.delivered_ms < min_idle_ms:
                continue
            p.consumer, p.deliveries, p.delivered_ms = consumer, p.deliveries + 1, now
            stored = s.entries[key]
            if p.deliveries > self.max_deliveries:
                dead.append(self._bury(stream, s, group, stored, p))
                del g.pending[key]
            else:
                entries.append(self._entry(stream, stored, p.deliveries))
        self.metrics.entries_claimed += len(entries)
        self.metrics.entries_dead_lettered += len(dead)
        return Claimed(entries, dead)

    def _bury(self, name: str, s: _Stream, group: str, stored: _Stored, p: _Pending) -> DeadLetter:
        s.dead_last = self._next_key(s.dead_last, self._wall_ms())
        letter = DeadLetter(
            id=format_entry_id(s.dead_last),
            stream=name,
            original_id=format_entry_id(stored.key),
            group=group,
            consumer=p.consumer,
            deliveries=p.deliveries,
            source=stored.source,
            seq=stored.seq,
            kind=stored.kind,
            payload=stored.payload,
        )
        s.dead.append(letter)
        return letter

    async def dead_letters(self, stream: str, count: int = 1000) -> list[DeadLetter]:
        """Dead letters of ``stream``; see :meth:`ingest.buffer.base.Buffer.dead_letters`."""
        return list(self._stream(stream).dead[:count])

    async def trim(self, stream: str) -> int:
        """Delete entries every group has acknowledged; see :meth:`ingest.buffer.base.Buffer.trim`."""
        s = self._stream(stream)
        if not s.groups:
            return 0
        floor = min(min(g.pending) if g.pending else (g.last[0], g.last[1] + 1) for g in s.groups.values())
        cut = bisect_left(s.keys, floor)
        for key in s.keys[:cut]:
            del s.entries[key]
        del s.keys[:cut]
        self.metrics.entries_trimmed += cut
        return cut

    async def length(self, stream: str) -> int:
        """Entries in ``stream``."""
        return len(self._stream(stream).keys)

    async def gaps(self, count: int = 1000) -> list[SequenceGap]:
        """Recent sequence gaps, oldest first."""
        return list(self._gaps)[-count:]

    async def close(self) -> None:
        """Drop every stream."""
        self._streams.clear()
        self._closed = True

    async def __aenter__(self) -> MemoryBuffer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
