"""The PostgreSQL layout of the history store: tables, versioned migrations and time partitions.

The tables, columns and natural keys are those of the DuckDB store (:mod:`ingest.store.duckdb_store`);
timestamps are BIGINT nanoseconds UTC. The layout comes in two modes, chosen when the schema is first created
and recorded in ``schema_migrations``:

``timescaledb``
    When ``CREATE EXTENSION IF NOT EXISTS timescaledb`` succeeds. The time-series tables are hypertables on
    ``ts`` (chunks of :data:`PARTITION_UNIT` each) with native compression of chunks older than
    :data:`COMPRESS_AFTER_NS`.
``partitioned``
    Plain PostgreSQL: the time-series tables are ``PARTITION BY RANGE (ts)``, one partition per UTC day for
    ticks and quotes (hundreds of thousands of rows per liquid symbol and day) and one per UTC calendar month
    for bars, alerts and signals (a few thousand rows per symbol and day at most, and long daily histories
    that day partitions would split into tens of thousands of tables). Each has a ``DEFAULT`` partition that
    catches rows no partition covers, so nothing is ever lost, and a BRIN index on ``ts`` (rows arrive in
    time order, so block ranges of ``ts`` are narrow). The writer creates the partitions a batch needs before
    inserting it (:func:`partition_spans`).

The quarantine table is not partitioned in either mode: its timestamp may be missing (the row was rejected
for that) and its key is a hash of the row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Mode = Literal["timescaledb", "partitioned"]

#: Tables of the store, in a fixed order.
TABLES: tuple[str, ...] = ("ticks", "quotes", "bars", "quarantine", "alerts", "signals")
#: Time-partitioned tables and the numpy calendar unit of one partition (``D`` = UTC day, ``M`` = UTC month).
PARTITION_UNIT: dict[str, Literal["D", "M"]] = {
    "ticks": "D",
    "quotes": "D",
    "bars": "M",
    "alerts": "M",
    "signals": "M",
}
#: Rows older than this (ns) are compressed by the TimescaleDB policy: 7 days.
COMPRESS_AFTER_NS = 7 * 86_400 * 1_000_000_000
#: Partitions are created for timestamps in [1900-01-01, 2200-01-01); rows outside go to the default partition.
PARTITION_MIN_NS = int(np.datetime64("1900-01-01", "ns").astype(np.int64))
PARTITION_MAX_NS = int(np.datetime64("2200-01-01", "ns").astype(np.int64))

_NS_PER_UNIT = {"D": 86_400 * 1_000_000_000}

#: Column definitions of every table, shared by both modes. Text key columns compare bytewise (``COLLATE "C"``):
#: the keys are identifiers, and a locale's collation would make every primary-key insertion and lookup slower.
COLUMNS: dict[str, str] = {
    "ticks": (
        'symbol TEXT COLLATE "C" NOT NULL, ts BIGINT NOT NULL, seq BIGINT NOT NULL, price DOUBLE PRECISION NOT NULL, '
        "size DOUBLE PRECISION NOT NULL, suspicious BOOLEAN NOT NULL, PRIMARY KEY (symbol, ts, seq)"
    ),
    "quotes": (
        'symbol TEXT COLLATE "C" NOT NULL, ts BIGINT NOT NULL, seq BIGINT NOT NULL, bid DOUBLE PRECISION NOT NULL, '
        "ask DOUBLE PRECISION NOT NULL, bid_size DOUBLE PRECISION NOT NULL, ask_size DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (symbol, ts, seq)"
    ),
    "bars": (
        'symbol TEXT COLLATE "C" NOT NULL, interval_ns BIGINT NOT NULL, ts BIGINT NOT NULL, '
        "open DOUBLE PRECISION NOT NULL, "
        "high DOUBLE PRECISION NOT NULL, low DOUBLE PRECISION NOT NULL, close DOUBLE PRECISION NOT NULL, "
        "volume DOUBLE PRECISION NOT NULL, vwap DOUBLE PRECISION, trade_count BIGINT NOT NULL, "
        "bid DOUBLE PRECISION, ask DOUBLE PRECISION, bid_size DOUBLE PRECISION, ask_size DOUBLE PRECISION, "
        "spread DOUBLE PRECISION, quote_count BIGINT NOT NULL, suspicious_count BIGINT NOT NULL, "
        "PRIMARY KEY (symbol, interval_ns, ts)"
    ),
    "quarantine": (
        'id TEXT COLLATE "C" PRIMARY KEY, ts BIGINT, symbol TEXT, seq BIGINT, kind TEXT NOT NULL, '
        "reason TEXT NOT NULL, "
        "field TEXT NOT NULL, value TEXT, payload TEXT NOT NULL"
    ),
    "alerts": (
        'ts BIGINT NOT NULL, symbol TEXT COLLATE "C" NOT NULL, kind TEXT COLLATE "C" NOT NULL, '
        'detector TEXT COLLATE "C" NOT NULL, '
        "score DOUBLE PRECISION NOT NULL, severity TEXT NOT NULL, details TEXT, "
        "PRIMARY KEY (symbol, ts, detector, kind)"
    ),
    "signals": (
        'ts BIGINT NOT NULL, symbol TEXT COLLATE "C" NOT NULL, model TEXT COLLATE "C" NOT NULL, action TEXT NOT NULL, '
        "confidence DOUBLE PRECISION NOT NULL, horizon_ns BIGINT NOT NULL, explanation TEXT, "
        "PRIMARY KEY (symbol, ts, model)"
    ),
}
#: Segment-by and order-by columns of TimescaleDB compression, per hypertable.
_COMPRESSION: dict[str, tuple[str, str]] = {
    "ticks": ("symbol", "ts, seq"),
    "quotes": ("symbol", "ts, seq"),
    "bars": ("symbol, interval_ns", "ts"),
    "alerts": ("symbol", "ts"),
    "signals": ("symbol", "ts"),
}

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, mode TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
"""
#: Key of the session advisory lock held while migrating (one migrator at a time across processes).
MIGRATION_LOCK_KEY = 0x53454E54494E454C  # "SENTINEL"


@dataclass(frozen=True)
class Migration:
    """One schema version: its statements in each mode, applied in one transaction."""

    version: int
    name: str
    partitioned: tuple[str, ...]
    timescaledb: tuple[str, ...]

    def statements(self, mode: Mode) -> tuple[str, ...]:
        """The statements of this version in ``mode``."""
        return self.timescaledb if mode == "timescaledb" else self.partitioned


def _v1_partitioned() -> tuple[str, ...]:
    out: list[str] = []
    for table in TABLES:
        if table in PARTITION_UNIT:
            out.append(f"CREATE TABLE {table} ({COLUMNS[table]}) PARTITION BY RANGE (ts)")
            out.append(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        else:
            out.append(f"CREATE TABLE {table} ({COLUMNS[table]})")
    return tuple(out)


def _v1_timescaledb() -> tuple[str, ...]:
    out = [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        "CREATE OR REPLACE FUNCTION sentinel_now_ns() RETURNS BIGINT LANGUAGE SQL STABLE AS "
        "$$ SELECT (extract(epoch FROM now()) * 1000000000)::BIGINT $$",
    ]
    for table in TABLES:
        out.append(f"CREATE TABLE {table} ({COLUMNS[table]})")
        if table in PARTITION_UNIT:
            chunk = _NS_PER_UNIT["D"] if PARTITION_UNIT[table] == "D" else 30 * _NS_PER_UNIT["D"]
            out.append(f"SELECT create_hypertable('{table}', 'ts', chunk_time_interval => {chunk}::BIGINT)")
            out.append(f"SELECT set_integer_now_func('{table}', 'sentinel_now_ns')")
    return tuple(out)


def _v2_partitioned() -> tuple[str, ...]:
    return (
        *(f"CREATE INDEX {t}_ts_brin ON {t} USING brin (ts)" for t in PARTITION_UNIT),
        "CREATE INDEX quarantine_ts ON quarantine (ts)",
    )


def _v2_timescaledb() -> tuple[str, ...]:
    out: list[str] = []
    for table, (segment, order) in _COMPRESSION.items():
        out.append(
            f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segment}', "
            f"timescaledb.compress_orderby = '{order}')"
        )
        out.append(f"SELECT add_compression_policy('{table}', compress_after => {COMPRESS_AFTER_NS}::BIGINT)")
    out.append("CREATE INDEX quarantine_ts ON quarantine (ts)")
    return tuple(out)


#: Every schema version, in order. Append new versions; never edit an applied one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "history tables", _v1_partitioned(), _v1_timescaledb()),
    Migration(2, "time indexes and compression", _v2_partitioned(), _v2_timescaledb()),
)


# ------------------------------------------------------------------------------------------------ partitions
@dataclass(frozen=True)
class PartitionSpan:
    """One range partition ``[lo, hi)`` in ns UTC of ``table``, named after its first day or month."""

    table: str
    name: str
    lo: int
    hi: int


def partition_spans(table: str, ts: npt.NDArray[np.int64]) -> list[PartitionSpan]:
    """The partitions of ``table`` that rows with timestamps ``ts`` (ns UTC) fall in, in time order.

    Timestamps outside [1900, 2200) get no partition: such rows land in the default partition.

    Parameters
    ----------
    table : str
        A time-partitioned table (a key of :data:`PARTITION_UNIT`).
    ts : ndarray of int64
        Timestamps in nanoseconds since the epoch, UTC.

    Returns
    -------
    list of PartitionSpan

    Examples
    --------
    >>> import numpy as np
    >>> day = 86_400 * 10**9
    >>> [s.name for s in partition_spans("ticks", np.array([0, day + 5, day + 7], dtype=np.int64))]
    ['ticks_p19700101', 'ticks_p19700102']
    >>> partition_spans("bars", np.array([day], dtype=np.int64))[0].hi // day
    31
    """
    if table not in PARTITION_UNIT:
        raise ValueError(f"table={table!r}: not a time-partitioned table (one of {sorted(PARTITION_UNIT)})")
    unit = PARTITION_UNIT[table]
    ts = np.asarray(ts, dtype=np.int64)
    ts = ts[(ts >= PARTITION_MIN_NS) & (ts < PARTITION_MAX_NS)]
    if not len(ts):
        return []
    starts = np.unique(ts.view("datetime64[ns]").astype(f"datetime64[{unit}]"))
    ends = starts + np.timedelta64(1, unit)
    fmt = "%Y%m%d" if unit == "D" else "%Y%m"
    return [
        PartitionSpan(
            table=table,
            name=f"{table}_p{s.astype('datetime64[D]').item().strftime(fmt)}",
            lo=int(s.astype("datetime64[ns]").astype(np.int64)),
            hi=int(e.astype("datetime64[ns]").astype(np.int64)),
        )
        for s, e in zip(starts, ends, strict=True)
    ]


_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


def parse_bound(expr: str) -> tuple[int, int] | None:
    """``(lo, hi)`` of a range partition bound as ``pg_get_expr`` prints it; ``None`` for ``DEFAULT``.

    Examples
    --------
    >>> parse_bound("FOR VALUES FROM ('0') TO ('86400000000000')")
    (0, 86400000000000)
    >>> parse_bound("DEFAULT") is None
    True
    """
    match = _BOUND.search(expr)
    return (int(match.group(1)), int(match.group(2))) if match else None
