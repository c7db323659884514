"""The ingest actor: bar building and storage inside Ray, fed directly or from a buffer.

A thin adapter over :class:`ingest.pipeline.IngestPipeline`; it owns the store's connection (so one process
writes the embedded DuckDB file). Two ways in:

- :meth:`IngestActor.process`: the driver sends one call per raw micro-batch (the embedded default: the
  in-process "buffer" is the bounded set of calls in flight);
- :meth:`IngestActor.start_consumer`: the actor reads validated batches from a shared buffer (Redis Streams) as
  a member of a consumer group, stores them, and acknowledges each entry only after it is stored; entries a
  previous consumer left pending are claimed first, so a restart loses nothing and the store's natural keys
  absorb what is delivered twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import ray

from ingest.buffer.base import Buffer, Entry
from ingest.pipeline import IngestPipeline
from ingest.records import BarBatch, QuoteBatch, TickBatch
from ingest.sources.base import RawBatch
from ingest.store.base import Store
from ingest.validation import QuarantineBatch, ValidationConfig

log = logging.getLogger(__name__)

#: Name of the ingest actor in the ``sentinel`` namespace.
INGEST_ACTOR_NAME = "ingest"


class IngestActor:
    """Builds bars from and stores the batches it is sent or reads; returns running statistics."""

    def __init__(
        self,
        store_factory: Callable[[], Store],
        validation: ValidationConfig,
        bar_intervals_ns: tuple[int, ...],
        source: str,
    ) -> None:
        self._store = store_factory()
        self._pipeline = IngestPipeline(self._store, validation, bar_intervals_ns, source=source)
        self._consumer: asyncio.Task[None] | None = None
        self._stopping = False
        self.entries_stored = 0
        self._next_seq = 0
        self._turn = asyncio.Condition()

    async def process(self, seq: int, batch: RawBatch) -> dict[str, Any]:
        """Raw micro-batch number ``seq`` (0, 1, 2, ...): validate, build bars, store; returns the statistics.

        Calls run strictly in ``seq`` order: an async actor may start a call whose large argument arrived
        first, and validation (out-of-order rule) and bar building depend on the order of the stream.
        """
        async with self._turn:
            await self._turn.wait_for(lambda: self._next_seq == seq)
            try:
                return self._pipeline.process(batch).as_dict()
            finally:
                self._next_seq += 1
                self._turn.notify_all()

    async def store_rejected(self, rejected: QuarantineBatch) -> int:
        """Store rows another process quarantined; returns the rows newly stored."""
        before = self._pipeline.stats.stored["quarantine"]
        self._pipeline.store_rejected(rejected)
        return self._pipeline.stats.stored["quarantine"] - before

    async def store_alerts(self, alerts: pd.DataFrame) -> int:
        """Store alerts (e.g. ``data_gap`` from the buffer); returns the rows newly stored."""
        return self._store.write_alerts(alerts)

    async def start_consumer(
        self, buffer_factory: Callable[[], Buffer], stream: str, group: str, consumer: str
    ) -> None:
        """Start reading ``stream`` as ``consumer`` of ``group`` in the background."""
        if self._consumer is not None and not self._consumer.done():
            raise RuntimeError(f"consumer={consumer!r}: this actor already consumes")
        self._consumer = asyncio.get_running_loop().create_task(self._consume(buffer_factory, stream, group, consumer))

    async def entries_done(self) -> int:
        """Buffer entries stored and acknowledged so far; raises if the consumer failed."""
        if self._consumer is not None and self._consumer.done() and not self._consumer.cancelled():
            failure = self._consumer.exception()
            if failure is not None:
                raise failure
        return self.entries_stored

    async def stats(self) -> dict[str, Any]:
        """The running statistics."""
        return self._pipeline.stats.as_dict()

    async def close_until(self, ts_ns: int) -> dict[str, Any]:
        """Close bars ending at or before ``ts_ns``."""
        return self._pipeline.close_until(ts_ns).as_dict()

    async def flush(self) -> dict[str, Any]:
        """Close every open bar (end of stream) and store it."""
        return self._pipeline.flush().as_dict()

    async def counts(self) -> dict[str, int]:
        """Rows in each table of the store."""
        return self._store.counts()

    async def close(self) -> dict[str, int]:
        """Stop consuming, flush open bars, close the store; returns the final table counts."""
        self._stopping = True
        if self._consumer is not None:
            await asyncio.gather(self._consumer, return_exceptions=True)
        self._pipeline.flush()
        counts = self._store.counts()
        self._store.close()
        return counts

    # ------------------------------------------------------------------------------------------------------
    async def _consume(self, buffer_factory: Callable[[], Buffer], stream: str, group: str, consumer: str) -> None:
        buffer = buffer_factory()
        try:
            await buffer.ensure_group(stream, group)
            # what a consumer before this one read but did not acknowledge comes first
            backlog = (await buffer.claim(stream, group, consumer, min_idle_ms=0)).entries
            while not self._stopping:
                entries = backlog or await buffer.read(group, consumer, [stream], count=16, block_ms=200)
                backlog = []
                if not entries:
                    continue
                for entry in entries:
                    self._absorb(entry)
                await buffer.ack(group, entries)
                self.entries_stored += len(entries)
        finally:
            await buffer.close()

    def _absorb(self, entry: Entry) -> None:
        batch = entry.decode()
        if isinstance(batch, TickBatch):
            self._pipeline.absorb(ticks=batch)
        elif isinstance(batch, QuoteBatch):
            self._pipeline.absorb(quotes=batch)
        elif isinstance(batch, BarBatch):
            self._pipeline.absorb(bars=batch)


def start_ingest_actor(
    store_factory: Callable[[], Store],
    validation: ValidationConfig,
    bar_intervals_ns: tuple[int, ...],
    source: str,
) -> ray.actor.ActorHandle[IngestActor]:
    """Create the named ingest actor in the current Ray namespace.

    ``store_factory`` (picklable, e.g. a ``functools.partial``) opens the store inside the actor. Half a CPU: it
    alternates with the driver that feeds it. Task events are off: one call per micro-batch, their events are
    not needed.
    """
    remote = ray.remote(IngestActor)
    handle = remote.options(name=INGEST_ACTOR_NAME, num_cpus=0.5, max_restarts=0, enable_task_events=False).remote(
        store_factory, validation, bar_intervals_ns, source
    )
    if not isinstance(handle, ray.actor.ActorHandle):
        raise TypeError(f"ray.remote(IngestActor).remote returned {type(handle).__name__}, not an actor handle")
    return handle
