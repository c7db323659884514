"""The writer: batched writes of trades, quotes, bars, alerts and quarantined rows to the history store.

One :class:`WriterActor` owns the store's connection (the embedded DuckDB file takes one writing process). The
stream pipeline gathers the rows of many micro-batches into one :class:`WriteBatch` and sends it as one call;
the call returns once everything in it is stored, and only then does the pipeline acknowledge the buffer entries
the batch came from. Every table's natural key makes a write idempotent, so a call repeated after a crash (Ray
retries it on the restarted actor) stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import ray

from actors.asset import NAMESPACE
from ingest.records import BarBatch, QuoteBatch, TickBatch
from ingest.store.base import Store
from ingest.validation import QuarantineBatch

#: Name of the writer actor in the ``sentinel`` namespace.
WRITER_ACTOR_NAME = "writer"
#: The tables a writer fills, in the order it writes them.
TABLES: tuple[str, ...] = ("ticks", "quotes", "bars", "alerts", "quarantine")


@dataclass
class WriteBatch:
    """Rows of several micro-batches to store in one call; each list is concatenated before writing."""

    ticks: list[TickBatch] = field(default_factory=list)
    quotes: list[QuoteBatch] = field(default_factory=list)
    bars: list[BarBatch] = field(default_factory=list)
    alerts: list[pd.DataFrame] = field(default_factory=list)
    quarantine: list[QuarantineBatch] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows of every kind held."""
        return (
            sum(len(t) for t in self.ticks)
            + sum(len(q) for q in self.quotes)
            + sum(len(b) for b in self.bars)
            + sum(len(a) for a in self.alerts)
            + sum(len(q) for q in self.quarantine)
        )

    def __bool__(self) -> bool:
        return bool(self.ticks or self.quotes or self.bars or self.alerts or self.quarantine)


#: Store methods :meth:`WriterActor.read` serves.
READS: tuple[str, ...] = ("read_bars", "read_alerts", "read_signals", "symbols", "counts")


class WriterActor:
    """Stores :class:`WriteBatch` calls in a store opened inside the actor.

    Parameters
    ----------
    store_factory : callable
        Opens the store (picklable, e.g. a ``functools.partial``): the factory travels, the connection does not.
    """

    def __init__(self, store_factory: Callable[[], Store]) -> None:
        self._store = store_factory()
        self.stored = dict.fromkeys(TABLES, 0)
        self.written = dict.fromkeys(TABLES, 0)

    def write(self, batch: WriteBatch) -> dict[str, int]:
        """Store everything in ``batch``; returns the rows newly stored per table (repeats are not counted)."""
        new = dict.fromkeys(TABLES, 0)
        if batch.ticks:
            ticks = TickBatch.concat(batch.ticks)
            new["ticks"] = self._store.write_ticks(ticks)
            self.written["ticks"] += len(ticks)
        if batch.quotes:
            quotes = QuoteBatch.concat(batch.quotes)
            new["quotes"] = self._store.write_quotes(quotes)
            self.written["quotes"] += len(quotes)
        if batch.bars:
            bars = BarBatch.concat(batch.bars)
            new["bars"] = self._store.write_bars(bars)
            self.written["bars"] += len(bars)
        if batch.alerts:
            alerts = pd.concat(batch.alerts, ignore_index=True)
            new["alerts"] = self._store.write_alerts(alerts)
            self.written["alerts"] += len(alerts)
        if batch.quarantine:
            rejected = QuarantineBatch.concat(batch.quarantine)
            new["quarantine"] = self._store.write_quarantine(rejected)
            self.written["quarantine"] += len(rejected)
        for table, n in new.items():
            self.stored[table] += n
        return new

    def stats(self) -> dict[str, dict[str, int]]:
        """Rows written (``written``) and newly stored (``stored``) per table since the actor started."""
        return {"written": dict(self.written), "stored": dict(self.stored)}

    def counts(self) -> dict[str, int]:
        """Rows in each table of the store."""
        return self._store.counts()

    def read(self, method: str, *args: Any) -> Any:
        """A read of the store this actor owns (one of :data:`READS`), for readers in other processes: a DuckDB
        file takes one writer, so the API reads through it.

        Raises
        ------
        ValueError
            When ``method`` is not a read (naming it).
        """
        if method not in READS:
            raise ValueError(f"method={method!r}: not a store read (one of {', '.join(READS)})")
        return getattr(self._store, method)(*args)

    def close(self) -> dict[str, int]:
        """Close the store; returns the final table counts."""
        counts = self._store.counts()
        self._store.close()
        return counts


def get_or_create_writer(
    store_factory: Callable[[], Store], num_cpus: float = 0.25, namespace: str = NAMESPACE
) -> ray.actor.ActorHandle[WriterActor]:
    """The writer actor of ``namespace`` (``sentinel``), created when it does not exist yet.

    A quarter of a CPU (it waits on the store most of the time). Restarted after a crash and its calls retried:
    every write is idempotent by natural key. Calls from one caller run in the order sent (a sync actor).
    """
    remote = ray.remote(WriterActor)
    handle = remote.options(
        name=WRITER_ACTOR_NAME,
        namespace=namespace,
        get_if_exists=True,
        num_cpus=num_cpus,
        max_restarts=-1,
        max_task_retries=-1,
        enable_task_events=False,
    ).remote(store_factory)
    if not isinstance(handle, ray.actor.ActorHandle):
        raise TypeError(f"ray.remote(WriterActor).remote returned {type(handle).__name__}, not an actor handle")
    return handle
