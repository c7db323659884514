"""The ingest actor: runs the validation -> bar building -> store step inside Ray.

A thin adapter over :class:`ingest.pipeline.IngestPipeline`; it owns the store's connection, so exactly one
process writes the embedded DuckDB file. The driver sends one call per micro-batch and bounds the calls in
flight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from ingest.pipeline import IngestPipeline
from ingest.sources.base import RawBatch
from ingest.store.duckdb_store import DuckDBStore
from ingest.validation import ValidationConfig

#: Name of the ingest actor in the ``sentinel`` namespace.
INGEST_ACTOR_NAME = "ingest"


class IngestActor:
    """Validates, builds bars and stores the batches it is sent; returns running statistics."""

    def __init__(
        self,
        store_path: str,
        validation: ValidationConfig,
        bar_intervals_ns: tuple[int, ...],
        source: str,
    ) -> None:
        self._store = DuckDBStore(Path(store_path))
        self._pipeline = IngestPipeline(self._store, validation, bar_intervals_ns, source=source)

    def process(self, batch: RawBatch) -> dict[str, Any]:
        """One micro-batch; returns the running statistics."""
        return self._pipeline.process(batch).as_dict()

    def close_until(self, ts_ns: int) -> dict[str, Any]:
        """Close bars ending at or before ``ts_ns``."""
        return self._pipeline.close_until(ts_ns).as_dict()

    def flush(self) -> dict[str, Any]:
        """Close every open bar (end of stream) and store it."""
        return self._pipeline.flush().as_dict()

    def counts(self) -> dict[str, int]:
        """Rows in each table of the store."""
        return self._store.counts()

    def close(self) -> dict[str, int]:
        """Flush open bars, close the store and return the final table counts."""
        self._pipeline.flush()
        counts = self._store.counts()
        self._store.close()
        return counts


def start_ingest_actor(
    store_path: str, validation: ValidationConfig, bar_intervals_ns: tuple[int, ...], source: str
) -> ray.actor.ActorHandle[IngestActor]:
    """Create the named ingest actor in the current Ray namespace.

    Half a CPU: it alternates with the driver that feeds it. Task events are off: one call per micro-batch,
    and their events are not needed.
    """
    remote = ray.remote(IngestActor)
    handle = remote.options(name=INGEST_ACTOR_NAME, num_cpus=0.5, max_restarts=0, enable_task_events=False).remote(
        store_path, validation, bar_intervals_ns, source
    )
    if not isinstance(handle, ray.actor.ActorHandle):
        raise TypeError(f"ray.remote(IngestActor).remote returned {type(handle).__name__}, not an actor handle")
    return handle
