"""The embedded history store: one DuckDB file in the data directory, nothing to install.

Timestamps are stored as BIGINT nanoseconds UTC, exactly as the records carry them. DuckDB allows one process
to open a file for writing; other processes may open it read-only once the writer has closed it.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ingest.records import BarBatch, QuoteBatch, TickBatch
from ingest.store.base import ALERT_COLUMNS, ALL_TIME, SIGNAL_COLUMNS, TimeRange
from ingest.validation import QuarantineBatch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ticks (
    symbol VARCHAR NOT NULL, ts BIGINT NOT NULL, seq BIGINT NOT NULL,
    price DOUBLE NOT NULL, size DOUBLE NOT NULL, suspicious BOOLEAN NOT NULL,
    PRIMARY KEY (symbol, ts, seq));
CREATE TABLE IF NOT EXISTS quotes (
    symbol VARCHAR NOT NULL, ts BIGINT NOT NULL, seq BIGINT NOT NULL,
    bid DOUBLE NOT NULL, ask DOUBLE NOT NULL, bid_size DOUBLE NOT NULL, ask_size DOUBLE NOT NULL,
    PRIMARY KEY (symbol, ts, seq));
CREATE TABLE IF NOT EXISTS bars (
    symbol VARCHAR NOT NULL, interval_ns BIGINT NOT NULL, ts BIGINT NOT NULL,
    open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
    volume DOUBLE NOT NULL, vwap DOUBLE, trade_count BIGINT NOT NULL,
    bid DOUBLE, ask DOUBLE, bid_size DOUBLE, ask_size DOUBLE, spread DOUBLE,
    quote_count BIGINT NOT NULL, suspicious_count BIGINT NOT NULL,
    PRIMARY KEY (symbol, interval_ns, ts));
CREATE TABLE IF NOT EXISTS quarantine (
    id VARCHAR PRIMARY KEY, ts BIGINT, symbol VARCHAR, seq BIGINT, kind VARCHAR NOT NULL,
    reason VARCHAR NOT NULL, field VARCHAR NOT NULL, value VARCHAR, payload VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    ts BIGINT NOT NULL, symbol VARCHAR NOT NULL, kind VARCHAR NOT NULL, detector VARCHAR NOT NULL,
    score DOUBLE NOT NULL, severity VARCHAR NOT NULL, details VARCHAR,
    PRIMARY KEY (symbol, ts, detector, kind));
CREATE TABLE IF NOT EXISTS signals (
    ts BIGINT NOT NULL, symbol VARCHAR NOT NULL, model VARCHAR NOT NULL, action VARCHAR NOT NULL,
    confidence DOUBLE NOT NULL, horizon_ns BIGINT NOT NULL, explanation VARCHAR,
    PRIMARY KEY (symbol, ts, model));
"""

_TABLES = ("ticks", "quotes", "bars", "quarantine", "alerts", "signals")
_TICK_COLS = ("symbol", "ts", "seq", "price", "size", "suspicious")
_QUOTE_COLS = ("symbol", "ts", "seq", "bid", "ask", "bid_size", "ask_size")
_BAR_COLS = ("symbol", "interval_ns", "ts", *(c for c in BarBatch._DTYPES if c not in ("symbol", "interval_ns", "ts")))
_QUARANTINE_COLS = ("id", "ts", "symbol", "seq", "kind", "reason", "field", "value", "payload")
_NAT = np.iinfo(np.int64).min


class DuckDBStore:
    """History store in a DuckDB file (or in memory with ``":memory:"``).

    Parameters
    ----------
    path : Path or str
        The database file; its directory is created. ``":memory:"`` keeps everything in memory.
    read_only : bool
        Open an existing file without taking the write lock (for inspection while no writer runs).

    Examples
    --------
    >>> store = DuckDBStore(":memory:")
    >>> store.counts()["ticks"]
    0
    """

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path, read_only=read_only)
        self._lock = threading.Lock()
        if not read_only:
            self._con.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"DuckDBStore(path={self.path!r})"

    # ------------------------------------------------------------------------------------------------ writes
    def _insert(self, table: str, columns: tuple[str, ...], frame: pd.DataFrame) -> int:
        if frame.empty:
            return 0
        cols = ", ".join(columns)
        with self._lock:
            self._con.register("_incoming", frame[list(columns)])
            try:
                result = self._con.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM _incoming")  # noqa: S608 - table and columns are module constants
                row = result.fetchone()
            finally:
                self._con.unregister("_incoming")
        return int(row[0]) if row else 0

    def write_ticks(self, ticks: TickBatch) -> int:
        """Store trades; returns the rows newly stored."""
        return self._insert("ticks", _TICK_COLS, ticks.to_frame())

    def write_quotes(self, quotes: QuoteBatch) -> int:
        """Store quotes; returns the rows newly stored."""
        return self._insert("quotes", _QUOTE_COLS, quotes.to_frame())

    def write_bars(self, bars: BarBatch) -> int:
        """Store bars; returns the rows newly stored."""
        return self._insert("bars", _BAR_COLS, bars.to_frame())

    def write_quarantine(self, rejected: QuarantineBatch) -> int:
        """Store rejected rows with their reasons; returns the rows newly stored."""
        if not len(rejected):
            return 0
        frame = rejected.to_frame()
        frame["id"] = [
            hashlib.sha256(f"{k}|{r}|{p}".encode()).hexdigest()[:32]
            for k, r, p in zip(frame["kind"], frame["reason"], frame["payload"], strict=True)
        ]
        frame["ts"] = frame["ts"].astype("Int64").where(frame["ts"] != _NAT)
        return self._insert("quarantine", _QUARANTINE_COLS, frame)

    def write_alerts(self, alerts: pd.DataFrame) -> int:
        """Store alerts (columns :data:`~ingest.store.base.ALERT_COLUMNS`); returns the rows newly stored."""
        _require_columns("alerts", alerts, ALERT_COLUMNS)
        return self._insert("alerts", ALERT_COLUMNS, alerts)

    def write_signals(self, signals: pd.DataFrame) -> int:
        """Store signals (columns :data:`~ingest.store.base.SIGNAL_COLUMNS`); returns the rows newly stored."""
        _require_columns("signals", signals, SIGNAL_COLUMNS)
        return self._insert("signals", SIGNAL_COLUMNS, signals)

    # ------------------------------------------------------------------------------------------------- reads
    def _select(self, table: str, where: list[str], params: list[Any], order: str) -> pd.DataFrame:
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            return self._con.execute(f"SELECT * FROM {table} {clause} ORDER BY {order}", params).df()  # noqa: S608 - identifiers are module constants, values are bound parameters

    @staticmethod
    def _range(when: TimeRange, where: list[str], params: list[Any]) -> None:
        if when.start is not None:
            where.append("ts >= ?")
            params.append(int(when.start))
        if when.end is not None:
            where.append("ts < ?")
            params.append(int(when.end))

    def read_ticks(self, symbol: str, when: TimeRange = ALL_TIME) -> TickBatch:
        """Trades of ``symbol`` in the range, ordered by (ts, seq)."""
        where, params = ["symbol = ?"], [symbol]
        self._range(when, where, params)
        return TickBatch.from_frame(self._select("ticks", where, params, "ts, seq"))

    def read_quotes(self, symbol: str, when: TimeRange = ALL_TIME) -> QuoteBatch:
        """Quotes of ``symbol`` in the range, ordered by (ts, seq)."""
        where, params = ["symbol = ?"], [symbol]
        self._range(when, where, params)
        return QuoteBatch.from_frame(self._select("quotes", where, params, "ts, seq"))

    def read_bars(self, symbol: str, interval_ns: int, when: TimeRange = ALL_TIME) -> BarBatch:
        """Bars of ``symbol`` and interval in the range, ordered by ts."""
        where, params = ["symbol = ?", "interval_ns = ?"], [symbol, int(interval_ns)]
        self._range(when, where, params)
        frame = self._select("bars", where, params, "ts")
        for col in ("vwap", "bid", "ask", "bid_size", "ask_size", "spread"):
            frame[col] = frame[col].astype("float64")
        return BarBatch.from_frame(frame)

    def read_quarantine(self, when: TimeRange = ALL_TIME) -> QuarantineBatch:
        """Quarantined rows in the range (rows without a readable timestamp are included when unbounded)."""
        where: list[str] = []
        params: list[Any] = []
        self._range(when, where, params)
        frame = self._select("quarantine", where, params, "ts NULLS FIRST, kind, id")
        frame["ts"] = frame["ts"].astype("Int64").fillna(_NAT).astype(np.int64)
        frame["seq"] = frame["seq"].astype("Int64").fillna(0).astype(np.int64)
        frame["symbol"] = frame["symbol"].fillna("")
        return QuarantineBatch.from_frame(frame)

    def read_alerts(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """Alerts, optionally of one symbol, ordered by ts."""
        where, params = ([], []) if symbol is None else (["symbol = ?"], [symbol])
        self._range(when, where, params)
        return self._select("alerts", where, params, "ts, symbol, detector, kind")

    def read_signals(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """Signals, optionally of one symbol, ordered by ts."""
        where, params = ([], []) if symbol is None else (["symbol = ?"], [symbol])
        self._range(when, where, params)
        return self._select("signals", where, params, "ts, symbol, model")

    def counts(self) -> dict[str, int]:
        """Row count of every table."""
        union = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in _TABLES)  # noqa: S608 - constant names
        with self._lock:
            rows = self._con.execute(union).fetchall()
        return {name: int(n) for name, n in rows}

    def symbols(self) -> list[str]:
        """Symbols with stored trades, quotes or bars, sorted."""
        with self._lock:
            rows = self._con.execute(
                "SELECT DISTINCT symbol FROM ticks UNION SELECT DISTINCT symbol FROM quotes "
                "UNION SELECT DISTINCT symbol FROM bars ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        """Checkpoint and release the file."""
        with self._lock:
            self._con.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _require_columns(table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table}: missing column {missing[0]!r} (need {list(columns)}, have {list(frame.columns)})")
