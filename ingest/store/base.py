"""The history-store interface that every backend (DuckDB here, PostgreSQL later) implements.

Writes are idempotent: each table has a natural key and a row whose key is already stored is skipped, so a
batch delivered twice (at-least-once buffers, a restarted replay) stores nothing twice. Every write returns the
number of rows it newly stored.

Natural keys: ticks and quotes ``(symbol, ts, seq)``; bars ``(symbol, interval_ns, ts)``; quarantine ``id`` (a
hash of the kind, reason and raw payload); alerts ``(symbol, ts, detector, kind)``; signals
``(symbol, ts, model)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pandas as pd

from ingest.records import BarBatch, QuoteBatch, TickBatch
from ingest.validation import QuarantineBatch

#: Columns of the alerts table: time (ns UTC), symbol, kind (e.g. ``flash_crash``), detector name, score,
#: severity (``info``/``warning``/``critical``) and details (JSON text).
ALERT_COLUMNS: tuple[str, ...] = ("ts", "symbol", "kind", "detector", "score", "severity", "details")
#: Columns of the signals table: time (ns UTC), symbol, model, action (``buy``/``sell``/``hold``),
#: confidence in [0, 1], horizon (ns) and explanation (JSON text).
SIGNAL_COLUMNS: tuple[str, ...] = ("ts", "symbol", "model", "action", "confidence", "horizon_ns", "explanation")


@dataclass(frozen=True)
class TimeRange:
    """A half-open time range ``[start, end)`` in ns UTC; ``None`` leaves a side open."""

    start: int | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"end={self.end!r}: must not be before start={self.start!r}")


#: The unbounded range: every row.
ALL_TIME = TimeRange()


@runtime_checkable
class Store(Protocol):
    """Where market data, quarantined rows, alerts and signals are kept."""

    def write_ticks(self, ticks: TickBatch) -> int:
        """Store trades; returns the rows newly stored."""
        ...

    def write_quotes(self, quotes: QuoteBatch) -> int:
        """Store quotes; returns the rows newly stored."""
        ...

    def write_bars(self, bars: BarBatch) -> int:
        """Store bars; returns the rows newly stored."""
        ...

    def write_quarantine(self, rejected: QuarantineBatch) -> int:
        """Store rejected rows with their reasons; returns the rows newly stored."""
        ...

    def write_alerts(self, alerts: pd.DataFrame) -> int:
        """Store alerts (columns :data:`ALERT_COLUMNS`); returns the rows newly stored."""
        ...

    def write_signals(self, signals: pd.DataFrame) -> int:
        """Store signals (columns :data:`SIGNAL_COLUMNS`); returns the rows newly stored."""
        ...

    def read_ticks(self, symbol: str, when: TimeRange = ALL_TIME) -> TickBatch:
        """Trades of ``symbol`` in the range, ordered by (ts, seq)."""
        ...

    def read_quotes(self, symbol: str, when: TimeRange = ALL_TIME) -> QuoteBatch:
        """Quotes of ``symbol`` in the range, ordered by (ts, seq)."""
        ...

    def read_bars(self, symbol: str, interval_ns: int, when: TimeRange = ALL_TIME) -> BarBatch:
        """Bars of ``symbol`` and interval in the range, ordered by ts."""
        ...

    def read_quarantine(self, when: TimeRange = ALL_TIME) -> QuarantineBatch:
        """Quarantined rows in the range (by their timestamp, when they had one)."""
        ...

    def read_alerts(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """Alerts, optionally of one symbol, ordered by ts."""
        ...

    def read_signals(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """Signals, optionally of one symbol, ordered by ts."""
        ...

    def counts(self) -> dict[str, int]:
        """Row count of every table."""
        ...

    def symbols(self) -> list[str]:
        """Symbols with stored trades, quotes or bars."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
