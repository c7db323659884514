"""The PostgreSQL history store: asyncpg behind the synchronous :class:`~ingest.store.base.Store` interface.

Writes go through COPY: a batch is copied (binary protocol) into a per-connection temporary staging table, then
an insert of the staged rows whose key is not stored yet moves it into the real table in the same transaction
(``ON CONFLICT DO NOTHING`` when the batch repeats a key within itself), so a write is idempotent and returns the
number of rows newly stored, as the DuckDB store does. Large batches go in as parts on parallel connections. In the
``partitioned`` mode the partitions a batch needs are created before it is inserted (see
:mod:`ingest.store.postgres.schema`).

The interface is synchronous (the ingest pipeline is), asyncpg is not: the store runs its own event loop on a
daemon thread, owns an asyncpg pool there, and every synchronous method submits a coroutine to that loop and
waits for it. The ``a``-prefixed methods (``awrite_ticks``, ``aread_bars``, ...) are the same operations for
asynchronous callers, awaitable from any event loop.

The connection URL is a secret: it is kept as a ``SecretStr`` and shown, in the repr, logs and errors, only
with its password masked (:func:`mask_url`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import SecretStr

from ingest.records import BarBatch, QuoteBatch, TickBatch
from ingest.store.base import ALL_TIME, TimeRange
from ingest.store.postgres.migrate import MigrationResult, apply_migrations
from ingest.store.postgres.rows import COLUMN_KINDS as _COLUMNS
from ingest.store.postgres.rows import NAT as _NAT
from ingest.store.postgres.rows import records as _records
from ingest.store.postgres.rows import require_columns as _require_columns
from ingest.store.postgres.rows import to_column as _column
from ingest.store.postgres.schema import PARTITION_UNIT, TABLES, Mode, parse_bound, partition_spans
from ingest.validation import QuarantineBatch

logger = logging.getLogger(__name__)

T = TypeVar("T")


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` query parameter) replaced by ``***``.

    Examples
    --------
    >>> mask_url("postgresql://sentinel:hunter2@db:5432/market")
    'postgresql://sentinel:***@db:5432/market'
    >>> mask_url("postgresql://db/market?user=u&password=hunter2")
    'postgresql://db/market?user=u&password=%2A%2A%2A'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostinfo}"
        query = parts.query
        if "password" in query.lower():
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query)])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable URL>"


def _password(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    found = [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    return parts.password or (found[0] if found else None)


class _LoopThread:
    """An asyncio event loop running on its own daemon thread, for a synchronous facade over asyncpg."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from any thread but the loop's own)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a synchronous PostgresStore method was called on the store's own event loop")
        return self.submit(coro).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the loop, from any event loop."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


class PostgresStore:
    """History store in PostgreSQL (TimescaleDB hypertables when available, native time partitions otherwise).

    Opening the store applies the schema migrations (a no-op when current) and logs the mode chosen.

    Parameters
    ----------
    url : str or SecretStr
        Connection URL, ``postgresql://user:password@host:5432/dbname``.
    timescaledb : bool or None
        Layout of a new schema: ``None`` uses TimescaleDB when ``CREATE EXTENSION timescaledb`` succeeds,
        ``False`` always uses native partitions, ``True`` requires TimescaleDB. An existing schema keeps its
        layout.
    pool_size : int
        Most connections open at once (concurrent asynchronous callers).
    parallel_writes : int
        A batch of at least ``2 * 25,000`` rows is written as up to this many parts on separate connections at
        once (each part an idempotent transaction of its own).
    connect_timeout : float
        Seconds to wait for a connection.

    Attributes
    ----------
    mode : {"timescaledb", "partitioned"}
        The layout in use.
    migrations : MigrationResult
        The mode, why it was chosen, and the versions applied at start-up.
    """

    def __init__(
        self,
        url: str | SecretStr,
        *,
        timescaledb: bool | None = None,
        pool_size: int = 4,
        parallel_writes: int = 2,
        connect_timeout: float = 30.0,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size={pool_size!r}: must be >= 1")
        if not 1 <= parallel_writes <= pool_size:
            raise ValueError(f"parallel_writes={parallel_writes!r}: must be between 1 and pool_size ({pool_size})")
        self._parallel = parallel_writes
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.url = mask_url(self._url.get_secret_value())
        self._pool: asyncpg.Pool | None = None
        self._known: dict[str, set[int]] = {t: set() for t in PARTITION_UNIT}
        self._partition_lock: asyncio.Lock | None = None
        self._closed = False
        self._loop = _LoopThread(name="sentinel-postgres-store")
        try:
            self.migrations: MigrationResult = self._loop.run(self._start(timescaledb, pool_size, connect_timeout))
        except BaseException:
            self._loop.stop()
            raise
        self.mode: Mode = self.migrations.mode
        applied = ", ".join(map(str, self.migrations.applied)) or "none (schema current)"
        logger.info(
            "PostgreSQL store %s: mode=%s (%s); schema version %d; migrations applied: %s",
            self.url,
            self.mode,
            self.migrations.reason,
            self.migrations.version,
            applied,
        )

    def __repr__(self) -> str:
        return f"PostgresStore(url={self.url!r}, mode={getattr(self, 'mode', None)!r})"

    # ------------------------------------------------------------------------------------------- start-up
    def _scrub(self, text: str) -> str:
        secret = self._url.get_secret_value()
        password = _password(secret)
        text = text.replace(secret, self.url)
        return text.replace(password, "***") if password else text

    async def _start(self, timescaledb: bool | None, pool_size: int, connect_timeout: float) -> MigrationResult:
        self._partition_lock = asyncio.Lock()
        dsn = self._url.get_secret_value()
        try:
            con = await asyncpg.connect(dsn, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            raise ConnectionError(f"database_url={self.url}: cannot connect ({detail})") from None
        try:
            result = await apply_migrations(con, timescaledb)
            if result.mode == "partitioned":
                for table in PARTITION_UNIT:
                    self._known[table] = {lo for lo, _ in await _bounds(con, table)}
        finally:
            await con.close()
        self._pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=pool_size, timeout=connect_timeout, init=_create_staging_tables
        )
        return result

    # ------------------------------------------------------------------------------------------- writes
    async def _copy_insert(self, table: str, records: list[tuple[Any, ...]], ts: npt.NDArray[np.int64] | None) -> int:
        if not records:
            return 0
        if self._pool is None:
            raise RuntimeError("PostgresStore is closed")
        if ts is not None and self.mode == "partitioned":
            async with self._pool.acquire() as con:
                await self._ensure_partitions(con, table, ts)
        # A large batch goes in as parts on separate connections at once: the server's per-row work (index
        # insertion, partition routing) is the bound, and the parts use its other cores. Each part is its own
        # idempotent transaction, so the batch as a whole stays idempotent.
        parts = max(1, min(self._parallel, len(records) // _MIN_PART_ROWS))
        if parts == 1:
            return await self._copy_insert_part(table, records, ts)
        size = -(-len(records) // parts)
        counts = await asyncio.gather(
            *(
                self._copy_insert_part(table, records[i : i + size], None if ts is None else ts[i : i + size])
                for i in range(0, len(records), size)
            )
        )
        return sum(counts)

    async def _copy_insert_part(
        self, table: str, records: list[tuple[Any, ...]], ts: npt.NDArray[np.int64] | None
    ) -> int:
        if self._pool is None:
            raise RuntimeError("PostgresStore is closed")
        columns = list(_COLUMNS[table])
        names = ", ".join(columns)
        async with self._pool.acquire() as con, con.transaction():
            await con.copy_records_to_table(f"_stage_{table}", records=records, columns=columns)
            # Fast path: a plain INSERT of the staged rows whose key is not stored yet (an anti-join on the
            # primary key). It skips ON CONFLICT's speculative insertion, which costs about a third more per
            # row. It fails only if the batch repeats a key within itself or a concurrent writer stored one of
            # its keys meanwhile; the savepoint then falls back to ON CONFLICT DO NOTHING, which handles both.
            insert_new = _INSERT_NEW[table]
            if ts is not None and len(ts):  # literal bounds, so the planner probes only the batch's partitions
                insert_new += f" AND x.ts >= {int(ts.min())} AND x.ts <= {int(ts.max())}"
            insert_new += ")"
            try:
                async with con.transaction():
                    status = await con.execute(insert_new)
            except asyncpg.UniqueViolationError:
                status = await con.execute(
                    f"INSERT INTO {table} ({names}) SELECT {names} FROM _stage_{table} ON CONFLICT DO NOTHING"  # noqa: S608 - identifiers are module constants
                )
        return int(status.rsplit(" ", 1)[-1])

    async def _ensure_partitions(self, con: asyncpg.Connection, table: str, ts: npt.NDArray[np.int64]) -> None:
        """Create the partitions that rows with timestamps ``ts`` need, moving any rows the default holds for them."""
        known = self._known[table]
        missing = [s for s in partition_spans(table, ts) if s.lo not in known]
        if not missing:
            return
        if self._partition_lock is None:
            raise RuntimeError("PostgresStore is not started")
        async with self._partition_lock, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"sentinel partitions {table}")
            bounds = await _bounds(con, table)
            for span in missing:
                if any(lo < span.hi and span.lo < hi for lo, hi in bounds):
                    continue  # created meanwhile by another writer, or a hand-made partition covers it
                await con.execute(f"CREATE TABLE {span.name} (LIKE {table} INCLUDING DEFAULTS)")
                moved = await con.execute(
                    f"WITH moved AS (DELETE FROM {table}_default WHERE ts >= $1 AND ts < $2 RETURNING *) "  # noqa: S608 - identifiers are module constants
                    f"INSERT INTO {span.name} SELECT * FROM moved",
                    span.lo,
                    span.hi,
                )
                await con.execute(
                    f"ALTER TABLE {table} ATTACH PARTITION {span.name} FOR VALUES FROM ({span.lo}) TO ({span.hi})"
                )
                n_moved = int(moved.rsplit(" ", 1)[-1])
                logger.info(
                    "created partition %s [%d, %d)%s",
                    span.name,
                    span.lo,
                    span.hi,
                    f", moved {n_moved} rows from {table}_default" if n_moved else "",
                )
                bounds.append((span.lo, span.hi))
        known.update(lo for lo, _ in bounds)

    async def _write_ticks(self, ticks: TickBatch) -> int:
        return await self._copy_insert("ticks", _records("ticks", ticks.to_frame()), ticks.ts)

    async def _write_quotes(self, quotes: QuoteBatch) -> int:
        return await self._copy_insert("quotes", _records("quotes", quotes.to_frame()), quotes.ts)

    async def _write_bars(self, bars: BarBatch) -> int:
        return await self._copy_insert("bars", _records("bars", bars.to_frame()), bars.ts)

    async def _write_quarantine(self, rejected: QuarantineBatch) -> int:
        if not len(rejected):
            return 0
        frame = rejected.to_frame()
        frame["id"] = [
            hashlib.sha256(f"{k}|{r}|{p}".encode()).hexdigest()[:32]
            for k, r, p in zip(frame["kind"], frame["reason"], frame["payload"], strict=True)
        ]
        records = _records("quarantine", frame)
        ts_at = list(_COLUMNS["quarantine"]).index("ts")
        records = [(*r[:ts_at], None if r[ts_at] == _NAT else r[ts_at], *r[ts_at + 1 :]) for r in records]
        return await self._copy_insert("quarantine", records, None)

    async def _write_frame(self, table: str, frame: pd.DataFrame) -> int:
        _require_columns(table, frame, tuple(_COLUMNS[table]))
        if frame.empty:
            return 0
        return await self._copy_insert(table, _records(table, frame), frame["ts"].to_numpy(dtype=np.int64))

    # ------------------------------------------------------------------------------------------- reads
    async def _select(self, table: str, where: list[str], params: list[Any], order: str) -> pd.DataFrame:
        if self._pool is None:
            raise RuntimeError("PostgresStore is closed")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        columns = list(_COLUMNS[table])
        sql = f"SELECT {', '.join(columns)} FROM {table} {clause} ORDER BY {order}"  # noqa: S608 - identifiers are module constants, values are bound parameters
        async with self._pool.acquire() as con:
            rows = await con.fetch(sql, *params)
        values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
        return pd.DataFrame({c: _column(values[i], _COLUMNS[table][c]) for i, c in enumerate(columns)})

    @staticmethod
    def _range(when: TimeRange, where: list[str], params: list[Any]) -> None:
        if when.start is not None:
            params.append(int(when.start))
            where.append(f"ts >= ${len(params)}")
        if when.end is not None:
            params.append(int(when.end))
            where.append(f"ts < ${len(params)}")

    async def _read_market(self, table: str, symbol: str, when: TimeRange, order: str) -> pd.DataFrame:
        where, params = ["symbol = $1"], [symbol]
        self._range(when, where, params)
        return await self._select(table, where, params, order)

    async def _read_bars(self, symbol: str, interval_ns: int, when: TimeRange) -> BarBatch:
        where, params = ["symbol = $1", "interval_ns = $2"], [symbol, int(interval_ns)]
        self._range(when, where, params)
        return BarBatch.from_frame(await self._select("bars", where, params, "ts"))

    async def _read_quarantine(self, when: TimeRange) -> QuarantineBatch:
        where: list[str] = []
        params: list[Any] = []
        self._range(when, where, params)
        frame = await self._select("quarantine", where, params, 'ts NULLS FIRST, kind COLLATE "C", id COLLATE "C"')
        frame["symbol"] = frame["symbol"].fillna("")
        return QuarantineBatch.from_frame(frame)

    async def _read_events(self, table: str, symbol: str | None, when: TimeRange, order: str) -> pd.DataFrame:
        where, params = ([], []) if symbol is None else (["symbol = $1"], [symbol])
        self._range(when, where, params)
        return await self._select(table, where, params, order)

    async def _counts(self) -> dict[str, int]:
        if self._pool is None:
            raise RuntimeError("PostgresStore is closed")
        union = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)  # noqa: S608 - constant names
        async with self._pool.acquire() as con:
            rows = await con.fetch(union)
        return {str(name): int(n) for name, n in rows}

    async def _symbols(self) -> list[str]:
        if self._pool is None:
            raise RuntimeError("PostgresStore is closed")
        async with self._pool.acquire() as con:
            rows = await con.fetch(
                "SELECT symbol FROM (SELECT DISTINCT symbol FROM ticks UNION SELECT DISTINCT symbol FROM quotes "
                'UNION SELECT DISTINCT symbol FROM bars) AS s ORDER BY symbol COLLATE "C"'
            )
        return [str(r[0]) for r in rows]

    async def _partitions(self, table: str) -> list[str]:
        if self._pool is None:
            raise RuntimeError("PostgresStore is closed")
        async with self._pool.acquire() as con:
            rows = await con.fetch(_PARTITIONS_SQL, table)
        return [str(r["name"]) for r in rows]

    async def _close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # ------------------------------------------------------------------------------ the Store interface
    def write_ticks(self, ticks: TickBatch) -> int:
        """Store trades; returns the rows newly stored."""
        return self._loop.run(self._write_ticks(ticks))

    def write_quotes(self, quotes: QuoteBatch) -> int:
        """Store quotes; returns the rows newly stored."""
        return self._loop.run(self._write_quotes(quotes))

    def write_bars(self, bars: BarBatch) -> int:
        """Store bars; returns the rows newly stored."""
        return self._loop.run(self._write_bars(bars))

    def write_quarantine(self, rejected: QuarantineBatch) -> int:
        """Store rejected rows with their reasons; returns the rows newly stored."""
        return self._loop.run(self._write_quarantine(rejected))

    def write_alerts(self, alerts: pd.DataFrame) -> int:
        """Store alerts (columns :data:`~ingest.store.base.ALERT_COLUMNS`); returns the rows newly stored."""
        return self._loop.run(self._write_frame("alerts", alerts))

    def write_signals(self, signals: pd.DataFrame) -> int:
        """Store signals (columns :data:`~ingest.store.base.SIGNAL_COLUMNS`); returns the rows newly stored."""
        return self._loop.run(self._write_frame("signals", signals))

    def read_ticks(self, symbol: str, when: TimeRange = ALL_TIME) -> TickBatch:
        """Trades of ``symbol`` in the range, ordered by (ts, seq)."""
        return TickBatch.from_frame(self._loop.run(self._read_market("ticks", symbol, when, "ts, seq")))

    def read_quotes(self, symbol: str, when: TimeRange = ALL_TIME) -> QuoteBatch:
        """Quotes of ``symbol`` in the range, ordered by (ts, seq)."""
        return QuoteBatch.from_frame(self._loop.run(self._read_market("quotes", symbol, when, "ts, seq")))

    def read_bars(self, symbol: str, interval_ns: int, when: TimeRange = ALL_TIME) -> BarBatch:
        """Bars of ``symbol`` and interval in the range, ordered by ts."""
        return self._loop.run(self._read_bars(symbol, interval_ns, when))

    def read_quarantine(self, when: TimeRange = ALL_TIME) -> QuarantineBatch:
        """Quarantined rows in the range (rows without a readable timestamp are included when unbounded)."""
        return self._loop.run(self._read_quarantine(when))

    def read_alerts(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """Alerts, optionally of one symbol, ordered by ts."""
        return self._loop.run(self._read_events("alerts", symbol, when, _EVENT_ORDER["alerts"]))

    def read_signals(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """Signals, optionally of one symbol, ordered by ts."""
        return self._loop.run(self._read_events("signals", symbol, when, _EVENT_ORDER["signals"]))

    def counts(self) -> dict[str, int]:
        """Row count of every table."""
        return self._loop.run(self._counts())

    def symbols(self) -> list[str]:
        """Symbols with stored trades, quotes or bars, sorted (bytewise)."""
        return self._loop.run(self._symbols())

    def partitions(self, table: str) -> list[str]:
        """Names of the partitions of ``table`` (the default one included), sorted; not TimescaleDB chunks."""
        if table not in PARTITION_UNIT:
            raise ValueError(f"table={table!r}: not a time-partitioned table (one of {sorted(PARTITION_UNIT)})")
        return self._loop.run(self._partitions(table))

    def close(self) -> None:
        """Close the connections and stop the store's event loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._close())
        finally:
            self._loop.stop()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------- the same, for async callers
    async def awrite_ticks(self, ticks: TickBatch) -> int:
        """:meth:`write_ticks` for asynchronous callers."""
        return await self._loop.arun(self._write_ticks(ticks))

    async def awrite_quotes(self, quotes: QuoteBatch) -> int:
        """:meth:`write_quotes` for asynchronous callers."""
        return await self._loop.arun(self._write_quotes(quotes))

    async def awrite_bars(self, bars: BarBatch) -> int:
        """:meth:`write_bars` for asynchronous callers."""
        return await self._loop.arun(self._write_bars(bars))

    async def awrite_quarantine(self, rejected: QuarantineBatch) -> int:
        """:meth:`write_quarantine` for asynchronous callers."""
        return await self._loop.arun(self._write_quarantine(rejected))

    async def awrite_alerts(self, alerts: pd.DataFrame) -> int:
        """:meth:`write_alerts` for asynchronous callers."""
        return await self._loop.arun(self._write_frame("alerts", alerts))

    async def awrite_signals(self, signals: pd.DataFrame) -> int:
        """:meth:`write_signals` for asynchronous callers."""
        return await self._loop.arun(self._write_frame("signals", signals))

    async def aread_ticks(self, symbol: str, when: TimeRange = ALL_TIME) -> TickBatch:
        """:meth:`read_ticks` for asynchronous callers."""
        return TickBatch.from_frame(await self._loop.arun(self._read_market("ticks", symbol, when, "ts, seq")))

    async def aread_quotes(self, symbol: str, when: TimeRange = ALL_TIME) -> QuoteBatch:
        """:meth:`read_quotes` for asynchronous callers."""
        return QuoteBatch.from_frame(await self._loop.arun(self._read_market("quotes", symbol, when, "ts, seq")))

    async def aread_bars(self, symbol: str, interval_ns: int, when: TimeRange = ALL_TIME) -> BarBatch:
        """:meth:`read_bars` for asynchronous callers."""
        return await self._loop.arun(self._read_bars(symbol, interval_ns, when))

    async def aread_quarantine(self, when: TimeRange = ALL_TIME) -> QuarantineBatch:
        """:meth:`read_quarantine` for asynchronous callers."""
        return await self._loop.arun(self._read_quarantine(when))

    async def aread_alerts(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """:meth:`read_alerts` for asynchronous callers."""
        return await self._loop.arun(self._read_events("alerts", symbol, when, _EVENT_ORDER["alerts"]))

    async def aread_signals(self, symbol: str | None = None, when: TimeRange = ALL_TIME) -> pd.DataFrame:
        """:meth:`read_signals` for asynchronous callers."""
        return await self._loop.arun(self._read_events("signals", symbol, when, _EVENT_ORDER["signals"]))

    async def acounts(self) -> dict[str, int]:
        """:meth:`counts` for asynchronous callers."""
        return await self._loop.arun(self._counts())

    async def asymbols(self) -> list[str]:
        """:meth:`symbols` for asynchronous callers."""
        return await self._loop.arun(self._symbols())


#: Fewest rows in one part of a batch written in parallel.
_MIN_PART_ROWS = 25_000

#: Natural key of every table (its primary key).
_KEYS: dict[str, tuple[str, ...]] = {
    "ticks": ("symbol", "ts", "seq"),
    "quotes": ("symbol", "ts", "seq"),
    "bars": ("symbol", "interval_ns", "ts"),
    "quarantine": ("id",),
    "alerts": ("symbol", "ts", "detector", "kind"),
    "signals": ("symbol", "ts", "model"),
}
#: Insert the staged rows whose key is not stored yet (an anti-join on the primary key; see _copy_insert); the
#: subquery is left open for optional time bounds.
_INSERT_NEW = {
    t: (
        f"INSERT INTO {t} ({', '.join(_COLUMNS[t])}) SELECT {', '.join(_COLUMNS[t])} FROM _stage_{t} s "  # noqa: S608 - constant names
        f"WHERE NOT EXISTS (SELECT 1 FROM {t} x WHERE {' AND '.join(f'x.{k} = s.{k}' for k in _KEYS[t])}"
    )
    for t in TABLES
}
_EVENT_ORDER = {
    "alerts": 'ts, symbol COLLATE "C", detector COLLATE "C", kind COLLATE "C"',
    "signals": 'ts, symbol COLLATE "C", model COLLATE "C"',
}
_PARTITIONS_SQL = """
SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.oid = to_regclass($1) ORDER BY c.relname
"""


async def _bounds(con: asyncpg.Connection, table: str) -> list[tuple[int, int]]:
    """``(lo, hi)`` of every range partition of ``table`` (the default partition left out)."""
    rows = await con.fetch(_PARTITIONS_SQL, table)
    return [b for b in (parse_bound(r["bound"] or "") for r in rows) if b is not None]


async def _create_staging_tables(con: asyncpg.Connection) -> None:
    """Give a new pooled connection its staging tables: unindexed copies emptied at every commit."""
    for table in TABLES:
        await con.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS _stage_{table} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
