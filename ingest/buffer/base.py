"""The buffer between ingestion and processing: its interface, its entry types and the columnar codec.

One entry carries one whole validated batch (:class:`~ingest.records.TickBatch`,
:class:`~ingest.records.QuoteBatch` or :class:`~ingest.records.BarBatch`), encoded as an Arrow IPC stream, on a
named stream (a symbol or a shard), tagged with the name of the source that produced it and that source's
sequence number. Consumers read entries as members of a consumer group; an entry stays *pending* for its group
until the consumer acknowledges it, which it does only after it has durably processed the entry (at least once
delivery). An entry left pending by a consumer that died is claimed by another after it has been idle long
enough; an entry delivered more than ``max_deliveries`` times without an acknowledgement is a poison entry and
goes to the stream's dead-letter stream instead. Trimming removes only entries that every group has
acknowledged.

Sequence numbers
----------------
Each source numbers its batches 0, 1, 2, ... (any start; consecutive after that). On append the buffer compares
a source's number with the last one it accepted from that source:

- ``seq == last + 1``: in order;
- ``seq > last + 1``: a gap, reported as a :class:`SequenceGap` (``expected=last + 1``, ``got=seq``) on the
  returned :class:`Appended`, to the ``on_gap`` callback, in :meth:`Buffer.gaps` and in the
  ``sequence_gaps``/``missing_sequences`` counters of :class:`BufferMetrics`;
- ``seq <= last``: a replay (a restarted source sending again, or a late batch filling a gap). The entry is still
  appended, nothing is dropped, and :attr:`Appended.replayed` says so. Records delivered twice are made harmless
  by the store, which keeps each record once by its natural key (``(symbol, ts, seq)`` for trades and quotes,
  ``(symbol, interval, ts)`` for bars).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa

from ingest.records import BarBatch, InvalidRecordError, QuoteBatch, TickBatch

Batch = TickBatch | QuoteBatch | BarBatch
"""A validated batch of records, the unit the buffer carries."""

BATCH_KINDS: dict[str, type[TickBatch] | type[QuoteBatch] | type[BarBatch]] = {
    "tick": TickBatch,
    "quote": QuoteBatch,
    "bar": BarBatch,
}
_KIND_OF: dict[type, str] = {cls: kind for kind, cls in BATCH_KINDS.items()}

#: Deliveries after which an unacknowledged entry is moved to the dead-letter stream.
DEFAULT_MAX_DELIVERIES = 5

CODEC_VERSION = b"1"


# --------------------------------------------------------------------------------------------------------
# Entry identifiers
# --------------------------------------------------------------------------------------------------------


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """The ``(milliseconds, counter)`` pair of an entry id written ``"<ms>-<n>"`` (the Redis Streams form).

    >>> parse_entry_id("1700000000000-3")
    (1700000000000, 3)
    """
    ms, sep, n = entry_id.partition("-")
    if not sep or not ms.isdigit() or not n.isdigit():
        raise ValueError(f"entry_id={entry_id!r}: not an entry id of the form '<ms>-<n>'")
    return int(ms), int(n)


def format_entry_id(key: tuple[int, int]) -> str:
    """The text form ``"<ms>-<n>"`` of an ``(ms, n)`` pair."""
    return f"{key[0]}-{key[1]}"


def next_entry_id(entry_id: str) -> str:
    """The smallest id after ``entry_id``: trimming to it removes ``entry_id`` and everything before.

    >>> next_entry_id("5-2")
    '5-3'
    """
    ms, n = parse_entry_id(entry_id)
    return format_entry_id((ms, n + 1))


# --------------------------------------------------------------------------------------------------------
# Entries, events and counters
# --------------------------------------------------------------------------------------------------------


class Outgoing(NamedTuple):
    """One batch to append: where it goes and who sent it."""

    stream: str
    batch: Batch
    source: str
    seq: int


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Source sequence numbers that never arrived: ``expected`` up to ``got - 1``.

    Parameters
    ----------
    source : str
        The source whose numbering skipped.
    expected : int
        The number that should have come next.
    got : int
        The number that came.
    stream : str
        The stream the batch numbered ``got`` went to.
    """

    source: str
    expected: int
    got: int
    stream: str = ""

    @property
    def missing(self) -> int:
        """How many sequence numbers are missing (``got - expected``)."""
        return self.got - self.expected


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append did: the entry's id, and whether its sequence number left a gap or was a replay."""

    stream: str
    id: str
    source: str
    seq: int
    gap: SequenceGap | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    """One buffered batch as a consumer sees it.

    Parameters
    ----------
    stream : str
        The stream it was read from.
    id : str
        Its id in the stream, ``"<ms>-<n>"``; acknowledge with it.
    source : str
        The source that appended it.
    seq : int
        The source's sequence number.
    kind : str
        ``"tick"``, ``"quote"`` or ``"bar"``.
    payload : bytes
        The batch, Arrow IPC encoded (see :func:`encode_batch`).
    deliveries : int
        How many times it has been delivered to this group, this delivery included.
    """

    stream: str
    id: str
    source: str
    seq: int
    kind: str
    payload: bytes
    deliveries: int = 1

    def decode(self) -> Batch:
        """The batch this entry carries; raises :class:`~ingest.records.InvalidRecordError` on a corrupt payload."""
        return decode_batch(self.payload)


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An entry delivered to a consumer of a group and not yet acknowledged."""

    id: str
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A poison entry moved out of its stream after too many deliveries, with everything needed to replay it."""

    id: str
    stream: str
    original_id: str
    group: str
    consumer: str
    deliveries: int
    source: str
    seq: int
    kind: str
    payload: bytes


class Claimed(NamedTuple):
    """The result of a claim: entries now owned by the claiming consumer, and those sent to the dead letters."""

    entries: list[Entry]
    dead: list[DeadLetter]


@dataclass
class BufferMetrics:
    """Counters of one buffer client (entries unless said; ``records_*`` count rows)."""

    entries_appended: int = 0
    records_appended: int = 0
    entries_replayed: int = 0
    sequence_gaps: int = 0
    missing_sequences: int = 0
    entries_read: int = 0
    entries_acked: int = 0
    entries_claimed: int = 0
    entries_dead_lettered: int = 0
    entries_trimmed: int = 0

    def as_dict(self) -> dict[str, int]:
        """A JSON-friendly copy."""
        return asdict(self)


GapCallback = Callable[[SequenceGap], None]


# --------------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------------


@runtime_checkable
class Buffer(Protocol):
    """A replayable, acknowledged queue of batches, partitioned into named streams.

    Every method is a coroutine. ``block_ms`` follows Redis: ``None`` does not wait, ``0`` waits until an entry
    arrives, ``n`` waits up to ``n`` ms.
    """

    metrics: BufferMetrics
    max_deliveries: int

    async def append(self, stream: str, batch: Batch, *, source: str, seq: int) -> Appended:
        """Append one batch to ``stream`` as entry number ``seq`` of ``source``."""
        ...

    async def append_many(self, items: Sequence[Outgoing]) -> list[Appended]:
        """Append several batches in one round trip, in order."""
        ...

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create consumer group ``group`` on ``stream`` (and the stream) unless it exists.

        ``start_id="0"`` delivers the stream from its first entry, ``"$"`` only entries appended from now on.
        """
        ...

    async def read(
        self, group: str, consumer: str, streams: Sequence[str], *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        """Up to ``count`` entries per stream never delivered to ``group``, now pending for ``consumer``.

        Creates the group (from the start of the stream) on a stream that has none.
        """
        ...

    async def ack(self, group: str, entries: Sequence[Entry]) -> int:
        """Acknowledge entries processed by ``group``; returns how many were pending."""
        ...

    async def pending(self, stream: str, group: str, count: int = 1000) -> list[PendingEntry]:
        """Entries of ``stream`` delivered to ``group`` and not acknowledged, oldest first."""
        ...

    async def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> Claimed:
        """Take over pending entries idle for at least ``min_idle_ms`` (their consumer died or stalled).

        Each claimed entry counts one more delivery; one whose deliveries now exceed :attr:`max_deliveries` is
        appended to the dead-letter stream and acknowledged instead of being returned.
        """
        ...

    async def dead_letters(self, stream: str, count: int = 1000) -> list[DeadLetter]:
        """The dead-letter entries of ``stream``, oldest first."""
        ...

    async def trim(self, stream: str) -> int:
        """Delete the entries of ``stream`` that every group has acknowledged; returns how many went.

        A stream without groups is not trimmed: nobody has acknowledged anything.
        """
        ...

    async def length(self, stream: str) -> int:
        """Number of entries in ``stream``."""
        ...

    async def gaps(self, count: int = 1000) -> list[SequenceGap]:
        """The most recent sequence gaps seen on append, oldest first."""
        ...

    async def close(self) -> None:
        """Release connections; the buffer is unusable afterwards."""
        ...


# --------------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------------


def check_name(field: str, value: object) -> str:
    """``value`` if it is a usable stream, group, consumer or source name, else a ``ValueError`` naming it."""
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{field}={value!r}: must be a non-empty string without whitespace")
    return value


def check_seq(seq: object) -> int:
    """``seq`` as an int if it is a sequence number >= 0 and exact as a double (< 2**53)."""
    if isinstance(seq, bool) or not isinstance(seq, int | np.integer) or not 0 <= int(seq) < 2**53:
        raise ValueError(f"seq={seq!r}: must be an integer in [0, 2**53)")
    return int(seq)


def check_outgoing(item: Outgoing) -> Outgoing:
    """``item`` with its names and sequence number checked and its batch kind known."""
    if type(item.batch) not in _KIND_OF:
        raise ValueError(f"batch={type(item.batch).__name__}: must be a TickBatch, QuoteBatch or BarBatch")
    return Outgoing(
        check_name("stream", item.stream), item.batch, check_name("source", item.source), check_seq(item.seq)
    )


def check_positive(field: str, value: object) -> int:
    """``value`` if it is an int >= 1, else a ``ValueError`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}={value!r}: must be an integer >= 1")
    return value


# --------------------------------------------------------------------------------------------------------
# Codec: one batch <-> one Arrow IPC stream
# --------------------------------------------------------------------------------------------------------

_SYMBOL_TYPE = pa.dictionary(pa.int32(), pa.string())


def _arrow_type(dtype: Any) -> pa.DataType:
    if dtype is object:
        return _SYMBOL_TYPE
    return pa.from_numpy_dtype(np.dtype(dtype))


_SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema(
        [pa.field(name, _arrow_type(dt), nullable=False) for name, dt in cls._DTYPES.items()],
        metadata={b"kind": kind.encode(), b"codec": CODEC_VERSION},
    )
    for kind, cls in BATCH_KINDS.items()
}


def batch_kind(batch: Batch) -> str:
    """``"tick"``, ``"quote"`` or ``"bar"``."""
    try:
        return _KIND_OF[type(batch)]
    except KeyError:
        raise ValueError(f"batch={type(batch).__name__}: must be a TickBatch, QuoteBatch or BarBatch") from None


def _encode_symbols(col: np.ndarray[Any, Any]) -> pa.Array:
    n = len(col)
    if n and bool((col == col[0]).all()):
        # the usual case: a stream per symbol, one symbol per batch
        indices = np.zeros(n, dtype=np.int32)
        uniques = np.array([col[0]], dtype=object)
    else:
        codes, uniques = pd.factorize(col)
        if n and codes.min() < 0:
            raise InvalidRecordError("symbol", col[int(np.argmin(codes))], "must be a string to be buffered")
        indices = codes.astype(np.int32)
    try:
        dictionary = pa.array(uniques, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidRecordError("symbol", next(iter(uniques), None), "must be a string to be buffered") from exc
    return pa.DictionaryArray.from_arrays(pa.array(indices, type=pa.int32()), dictionary)


def encode_batch(batch: Batch) -> bytes:
    """The Arrow IPC stream bytes of ``batch``: one record batch, columns as in the batch class.

    Numbers travel as their raw little-endian bytes, so decoding gives the same values bit for bit (NaN payloads,
    ``-0.0``); the symbol column is dictionary encoded, so a batch of one symbol carries it once.

    Examples
    --------
    >>> from ingest.records import Tick, TickBatch
    >>> b = TickBatch.from_ticks([Tick(ts=1, symbol="SPY", price=168.5, size=100.0, seq=7)])
    >>> decode_batch(encode_batch(b)).equals(b)
    True
    """
    kind = batch_kind(batch)
    schema = _SCHEMAS[kind]
    arrays: list[pa.Array] = []
    for f in schema:
        col = getattr(batch, f.name)
        arrays.append(_encode_symbols(col) if f.type == _SYMBOL_TYPE else pa.array(col, type=f.type))
    record_batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(record_batch)
    return bytes(sink.getvalue().to_pybytes())


def decode_batch(payload: bytes) -> Batch:
    """The batch encoded by :func:`encode_batch`.

    Numeric columns are read-only views of ``payload`` (no copy): batches are values, not workspaces.
    Raises :class:`~ingest.records.InvalidRecordError` naming the field when the payload is not such a batch.
    """
    try:
        reader = pa.ipc.open_stream(payload)
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidRecordError("payload", f"<{len(payload)} bytes>", f"not an Arrow IPC stream ({exc})") from exc
    metadata = table.schema.metadata or {}
    kind = metadata.get(b"kind", b"").decode(errors="replace")
    if kind not in BATCH_KINDS:
        raise InvalidRecordError("kind", kind, f"unknown batch kind (expected one of {sorted(BATCH_KINDS)})")
    if metadata.get(b"codec") != CODEC_VERSION:
        raise InvalidRecordError(
            "codec", metadata.get(b"codec"), f"unsupported codec version (expected {CODEC_VERSION!r})"
        )
    expected = _SCHEMAS[kind]
    if table.schema.names != expected.names:
        raise InvalidRecordError("columns", table.schema.names, f"expected {expected.names} for kind {kind!r}")
    cls = BATCH_KINDS[kind]
    columns: dict[str, Any] = {}
    for f in expected:
        chunked = table.column(f.name)
        if chunked.type != f.type:
            raise InvalidRecordError(f.name, str(chunked.type), f"expected Arrow type {f.type}")
        arr = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
        if arr.null_count:
            raise InvalidRecordError(f.name, None, "null values in a buffered batch")
        if f.type == _SYMBOL_TYPE:
            dictionary = arr.dictionary.to_numpy(zero_copy_only=False)
            columns[f.name] = dictionary.astype(object)[arr.indices.to_numpy()]
        else:
            columns[f.name] = arr.to_numpy(zero_copy_only=False)
    return cls(**columns)
