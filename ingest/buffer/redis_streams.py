"""The production buffer: Redis Streams with consumer groups (at least once, acknowledged, replayable).

Layout under a namespace ``ns`` (``sentinel:buffer`` by default):

``ns:stream:<name>``
    the stream of a symbol or shard; one entry per batch with fields ``source``, ``seq``, ``kind``, ``rows`` and
    ``payload`` (the Arrow IPC bytes of :func:`~ingest.buffer.base.encode_batch`).
``ns:dead:<name>``
    its dead letters: the fields of the poison entry plus ``original_id``, ``group``, ``consumer`` and
    ``deliveries``.
``ns:seq``
    a hash, source name -> last sequence number appended, so that gap detection survives producer restarts.
``ns:gaps``
    a capped stream of the sequence gaps detected (``source``, ``expected``, ``got``, ``stream``).

An append is one Lua script (``XADD`` plus the sequence check and its ``HSET``), so the entry and the sequence
state change together. Streams are never capped by ``MAXLEN``: :meth:`RedisStreamBuffer.trim` runs
``XTRIM MINID`` to the oldest entry that some group still needs (its oldest pending entry, or the entry after
its last delivered one), so nothing unacknowledged is ever dropped. A claim is ``XAUTOCLAIM`` followed by
``XPENDING`` for the delivery counts; poison entries move to the dead-letter stream and are acknowledged in one
``MULTI``. All keys of a namespace must live on one Redis server (no Redis Cluster slot spreading).

What a Redis crash loses
------------------------
Redis acknowledges a write once it is in memory; what survives a crash (kill -9, power loss) of the server
depends on persistence:

``appendonly no`` (RDB snapshots only, or none)
    everything written since the last snapshot: appended entries, acknowledgements, group positions, dead
    letters and sequence state. Acknowledged-then-lost entries do not come back (they are lost); lost
    acknowledgements make consumers see entries again (duplicates, absorbed by the store's natural key).
``appendonly yes`` + ``appendfsync everysec`` (the Redis default for AOF)
    up to about one second of writes (two in the worst case, when a slow disk delays the fsync). A producer that
    saw its ``XADD`` succeed may still lose that entry; replaying the source from its last durably stored
    sequence number closes the hole.
``appendonly yes`` + ``appendfsync always``
    nothing that Redis acknowledged: each write is fsynced to the AOF before the reply. An entry whose append
    returned is on disk, and so is every ``XACK``. The price is a disk flush per command (pipelined commands
    share one flush per event-loop round).

A consumer crash loses nothing whatever the setting: its unacknowledged entries stay pending and are claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

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
    next_entry_id,
    parse_entry_id,
)

DEFAULT_NAMESPACE = "sentinel:buffer"

# KEYS: stream, sequence hash, gap stream. ARGV: source, seq, kind, rows, payload, gap cap, stream name.
# Returns {entry id, status (0 in order or first, 1 replay, 2 gap), expected seq as text}.
_APPEND_LUA = """
local seq = tonumber(ARGV[2])
local last = redis.call('HGET', KEYS[2], ARGV[1])
local status = 0
local expected = ''
if last then
  last = tonumber(last)
  if seq <= last then
    status = 1
  elseif seq > last + 1 then
    status = 2
    expected = string.format('%.0f', last + 1)
  end
end
if status ~= 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
if status == 2 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*',
    'source', ARGV[1], 'expected', expected, 'got', ARGV[2], 'stream', ARGV[7])
end
local id = redis.call('XADD', KEYS[1], '*',
  'source', ARGV[1], 'seq', ARGV[2], 'kind', ARGV[3], 'rows', ARGV[4], 'payload', ARGV[5])
return {id, status, expected}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamBuffer:
    """A :class:`~ingest.buffer.base.Buffer` on Redis Streams.

    Parameters
    ----------
    client : redis.asyncio.Redis
        A client created with ``decode_responses=False`` (payloads are binary).
    namespace : str
        Prefix of every key this buffer uses.
    max_deliveries : int
        Deliveries after which an unacknowledged entry goes to the dead letters on its next claim.
    on_gap : callable, optional
        Called with each :class:`~ingest.buffer.base.SequenceGap` this client detects on append.
    gap_history : int
        Approximate number of gap events kept in ``<namespace>:gaps``.
    owns_client : bool
        Close ``client`` in :meth:`close`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str = DEFAULT_NAMESPACE,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        on_gap: GapCallback | None = None,
        gap_history: int = 10_000,
        owns_client: bool = False,
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("client.decode_responses=True: the buffer needs a client returning bytes")
        self.client = client
        self.namespace = check_name("namespace", namespace)
        self.max_deliveries = check_positive("max_deliveries", max_deliveries)
        self.metrics = BufferMetrics()
        self._on_gap = on_gap
        self._gap_history = check_positive("gap_history", gap_history)
        self._owns_client = owns_client
        self._append_script = client.register_script(_APPEND_LUA)
        self._groups: set[tuple[str, str]] = set()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStreamBuffer:
        """A buffer on its own connection pool to ``url`` (``redis://[:password@]host:port/db``)."""
        client = aioredis.Redis.from_url(url, decode_responses=False)
        return cls(client, owns_client=True, **kwargs)

    # ----------------------------------------------------------------------------------------------------
    def stream_key(self, stream: str) -> str:
        """The Redis key of ``stream``."""
        return f"{self.namespace}:stream:{stream}"

    def dead_key(self, stream: str) -> str:
        """The Redis key of the dead-letter stream of ``stream``."""
        return f"{self.namespace}:dead:{stream}"

    @property
    def _seq_key(self) -> str:
        return f"{self.namespace}:seq"

    @property
    def _gaps_key(self) -> str:
        return f"{self.namespace}:gaps"

    # ----------------------------------------------------------------------------------------------------
    async def append(self, stream: str, batch: Batch, *, source: str, seq: int) -> Appended:
        """Append one batch; see :meth:`ingest.buffer.base.Buffer.append`."""
        return (await self.append_many([Outgoing(stream, batch, source, seq)]))[0]

    async def append_many(self, items: Sequence[Outgoing]) -> list[Appended]:
        """Append batches in order, pipelined in one round trip; see :meth:`ingest.buffer.base.Buffer.append_many`."""
        checked = [check_outgoing(item) for item in items]
        if not checked:
            return []
        pipe = self.client.pipeline(transaction=False)
        for item in checked:
            keys = [self.stream_key(item.stream), self._seq_key, self._gaps_key]
            args: list[str | bytes] = [
                item.source,
                str(item.seq),
                batch_kind(item.batch),
                str(len(item.batch)),
                encode_batch(item.batch),
                str(self._gap_history),
                item.stream,
            ]
            await self._append_script(keys=keys, args=args, client=pipe)
        replies = await pipe.execute()
        out: list[Appended] = []
        for item, (entry_id, status, expected) in zip(checked, replies, strict=True):
            gap = SequenceGap(item.source, int(expected), item.seq, item.stream) if status == 2 else None
            replayed = status == 1
            self.metrics.entries_appended += 1
            self.metrics.records_appended += len(item.batch)
            self.metrics.entries_replayed += replayed
            if gap is not None:
                self.metrics.sequence_gaps += 1
                self.metrics.missing_sequences += gap.missing
                if self._on_gap is not None:
                    self._on_gap(gap)
            out.append(Appended(item.stream, _text(entry_id), item.source, item.seq, gap, replayed))
        return out

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create ``group`` on ``stream`` unless it exists; see :meth:`ingest.buffer.base.Buffer.ensure_group`."""
        check_name("stream", stream)
        check_name("group", group)
        try:
            await self.client.xgroup_create(self.stream_key(stream), group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((stream, group))

    def _entry(self, stream: str, entry_id: bytes, data: dict[bytes, bytes], deliveries: int) -> Entry:
        return Entry(
            stream=stream,
            id=_text(entry_id),
            source=data[b"source"].decode(),
            seq=int(data[b"seq"]),
            kind=data[b"kind"].decode(),
            payload=data[b"payload"],
            deliveries=deliveries,
        )

    async def read(
        self, group: str, consumer: str, streams: Sequence[str], *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        """New entries for ``consumer`` of ``group`` (``XREADGROUP``); see :meth:`ingest.buffer.base.Buffer.read`."""
        check_name("group", group)
        check_name("consumer", consumer)
        check_positive("count", count)
        for stream in streams:
            if (stream, group) not in self._groups:
                await self.ensure_group(stream, group)
        names = {self.stream_key(s): s for s in streams}
        reply: Any = await self.client.xreadgroup(
            group, consumer, dict.fromkeys(names, ">"), count=count, block=block_ms
        )
        out: list[Entry] = []
        for key, messages in reply or []:
            stream = names[_text(key)]
            out.extend(self._entry(stream, entry_id, data, 1) for entry_id, data in messages)
        self.metrics.entries_read += len(out)
        return out

    async def ack(self, group: str, entries: Sequence[Entry]) -> int:
        """Acknowledge ``entries`` (``XACK``, one per stream); see :meth:`ingest.buffer.base.Buffer.ack`."""
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        if not by_stream:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(self.stream_key(stream), group, *ids)
        done = sum(int(n) for n in await pipe.execute())
        self.metrics.entries_acked += done
        return done

    async def pending(self, stream: str, group: str, count: int = 1000) -> list[PendingEntry]:
        """Unacknowledged entries of ``group`` (``XPENDING``); see :meth:`ingest.buffer.base.Buffer.pending`."""
        try:
            rows: Any = await self.client.xpending_range(self.stream_key(stream), group, "-", "+", count)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        return [
            PendingEntry(
                _text(r["message_id"]), _text(r["consumer"]), int(r["time_since_delivered"]), int(r["times_delivered"])
            )
            for r in rows
        ]

    async def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> Claimed:
        """Take over idle pending entries (``XAUTOCLAIM``); see :meth:`ingest.buffer.base.Buffer.claim`."""
        check_name("consumer", consumer)
        check_positive("count", count)
        key = self.stream_key(stream)
        try:
            reply: Any = await self.client.xautoclaim(key, group, consumer, min_idle_ms, "0-0", count=count)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return Claimed([], [])
            raise
        messages = [(entry_id, data) for entry_id, data in reply[1] if data is not None]
        if not messages:
            return Claimed([], [])
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _ in messages:
            pipe.xpending_range(key, group, entry_id, entry_id, 1)
        counts = [rows[0]["times_delivered"] if rows else 1 for rows in await pipe.execute()]
        entries: list[Entry] = []
        poison: list[tuple[Entry, dict[bytes, bytes]]] = []
        for (entry_id, data), deliveries in zip(messages, counts, strict=True):
            entry = self._entry(stream, entry_id, data, int(deliveries))
            if entry.deliveries > self.max_deliveries:
                poison.append((entry, data))
            else:
                entries.append(entry)
        dead = [await self._bury(stream, group, consumer, entry, data) for entry, data in poison]
        self.metrics.entries_claimed += len(entries)
        self.metrics.entries_dead_lettered += len(dead)
        return Claimed(entries, dead)

    async def _bury(self, stream: str, group: str, consumer: str, entry: Entry, data: dict[bytes, bytes]) -> DeadLetter:
        fields: dict[Any, Any] = {
            **data,
            "original_id": entry.id,
            "group": group,
            "consumer": consumer,
            "deliveries": entry.deliveries,
            "stream": stream,
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_key(stream), fields)
        pipe.xack(self.stream_key(stream), group, entry.id)
        dead_id, _ = await pipe.execute()
        return DeadLetter(
            id=_text(dead_id),
            stream=stream,
            original_id=entry.id,
            group=group,
            consumer=consumer,
            deliveries=entry.deliveries,
            source=entry.source,
            seq=entry.seq,
            kind=entry.kind,
            payload=entry.payload,
        )

    async def dead_letters(self, stream: str, count: int = 1000) -> list[DeadLetter]:
        """Dead letters of ``stream`` (``XRANGE``); see :meth:`ingest.buffer.base.Buffer.dead_letters`."""
        rows: Any = await self.client.xrange(self.dead_key(stream), "-", "+", count=count)
        return [
            DeadLetter(
                id=_text(dead_id),
                stream=stream,
                original_id=d[b"original_id"].decode(),
                group=d[b"group"].decode(),
                consumer=d[b"consumer"].decode(),
                deliveries=int(d[b"deliveries"]),
                source=d[b"source"].decode(),
                seq=int(d[b"seq"]),
                kind=d[b"kind"].decode(),
                payload=d[b"payload"],
            )
            for dead_id, d in rows
        ]

    async def trim(self, stream: str) -> int:
        """``XTRIM MINID`` to the oldest entry a group still needs; see :meth:`ingest.buffer.base.Buffer.trim`.

        Reads the groups first, then trims: an acknowledgement or a delivery in between only moves the true
        floor forward, so the trim never removes an entry some group still needs.
        """
        key = self.stream_key(stream)
        try:
            groups: Any = await self.client.xinfo_groups(key)
        except ResponseError as exc:
            if "no such key" in str(exc):
                return 0
            raise
        if not groups:
            return 0
        floors: list[tuple[int, int]] = []
        for g in groups:
            if int(g["pending"]):
                summary: Any = await self.client.xpending(key, g["name"])
                floors.append(parse_entry_id(_text(summary["min"])))
            else:
                floors.append(parse_entry_id(next_entry_id(_text(g["last-delivered-id"]))))
        ms, n = min(floors)
        removed = int(await self.client.xtrim(key, minid=f"{ms}-{n}", approximate=False))
        self.metrics.entries_trimmed += removed
        return removed

    async def length(self, stream: str) -> int:
        """Entries in ``stream`` (``XLEN``)."""
        return int(await self.client.xlen(self.stream_key(stream)))

    async def gaps(self, count: int = 1000) -> list[SequenceGap]:
        """Recent sequence gaps recorded in ``<namespace>:gaps`` by any producer, oldest first."""
        rows: Any = await self.client.xrevrange(self._gaps_key, "+", "-", count=count)
        return [
            SequenceGap(d[b"source"].decode(), int(d[b"expected"]), int(d[b"got"]), d[b"stream"].decode())
            for _, d in reversed(rows)
        ]

    async def close(self) -> None:
        """Close the client if this buffer created it."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> RedisStreamBuffer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
