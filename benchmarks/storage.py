"""Ticks per second into the history stores' servers, next to each server's own ceiling measured in the same run.

PostgreSQL part: the real SPY prints of 2013-10-08 (451,545; the full run replicates them on the following days
with shifted timestamps) written with ``PostgresStore.write_ticks`` (COPY into a staging table, then an insert
of the rows whose key is not stored yet into the day-partitioned table) in 100,000-row and 10,000-row batches;
the same batches delivered a second time (all duplicates, nothing stored); and the ceiling: a raw asyncpg
``copy_records_to_table`` of the same rows into a plain table with no index. Every figure includes turning
the columns into rows on the client. A breakdown of one idempotent pass shows where the time goes.

The server is started for the run (initdb + pg_ctl on a free port in a temporary directory, through
pytest-postgresql's executor, as the integration tests do) and removed afterwards.

Redis part (``benchmarks/buffer_redis.py``): the same prints through Redis Streams end to end — batches of
2,000 ticks appended as Arrow IPC entries, read by a consumer group, decoded and acknowledged — next to a raw
client loop of the same commands on the same bytes, on a redis-server of its own.

Each part is a function returning its figures; ``main`` merges them into one JSON object on the last line.
Run from the repository root: ``python benchmarks/storage.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Run as a script, this file's folder would come first on sys.path, and its name shadows a package: put the
# repository root there instead (the packages, and benchmarks._common).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks._common import DATA, machine  # noqa: E402 - after the sys.path fix above
from benchmarks.buffer_redis import run_redis_benchmark  # noqa: E402
from ingest.records import NS_PER_DAY, TickBatch  # noqa: E402

TARGET_POSTGRES_TICKS_PER_S = 200_000
BATCH_ROWS = 100_000
SMALL_BATCH_ROWS = 10_000
_TICK_COLUMNS = ["symbol", "ts", "seq", "price", "size", "suspicious"]


def spy_ticks(copies: int) -> TickBatch:
    """The real SPY prints, ``copies`` times, each copy shifted one more day later (distinct keys)."""
    path = DATA / "spy_trade_ticks_20131008.parquet"
    if not path.exists():
        sys.exit(f"{path} not found: set SENTINEL_SHARED_DATA to the folder of the shared market data")
    raw = pd.read_parquet(path)
    ts = raw["ts"].astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view(np.int64)
    n = len(raw)
    one = TickBatch(
        ts=ts,
        symbol=raw["symbol"].to_numpy(dtype=object),
        price=raw["price"].to_numpy(dtype=np.float64),
        size=raw["size"].to_numpy(dtype=np.float64),
        seq=np.arange(n, dtype=np.int64),
        suspicious=raw["suspicious"].to_numpy(dtype=np.bool_),
    )
    return TickBatch.concat(
        [
            TickBatch._trusted(**{**{c: getattr(one, c) for c in TickBatch._DTYPES}, "ts": one.ts + k * NS_PER_DAY})
            for k in range(copies)
        ]
    )


def _chunks(ticks: TickBatch, rows: int) -> list[TickBatch]:
    return [ticks.take(slice(i, i + rows)) for i in range(0, len(ticks), rows)]


def _rows(batch: TickBatch) -> list[tuple[Any, ...]]:
    """Rows as the store sends them (same conversion cost on the client)."""
    return list(
        zip(
            batch.symbol.tolist(),
            batch.ts.tolist(),
            batch.seq.tolist(),
            batch.price.tolist(),
            batch.size.tolist(),
            batch.suspicious.tolist(),
            strict=True,
        )
    )


# ------------------------------------------------------------------------------------------------ PostgreSQL
@contextlib.contextmanager
def local_postgres() -> Iterator[tuple[str, str]]:
    """Start a PostgreSQL server in a temporary directory on a free port; yields (admin URL, server version)."""
    import port_for
    from pytest_postgresql.executors import PostgreSQLExecutor

    from ingest.store.postgres.local import pg_ctl_executable

    pg_ctl = pg_ctl_executable()
    if pg_ctl is None:
        sys.exit("PostgreSQL server binaries (pg_ctl) not found: install PostgreSQL 15 (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="sentinel-bench-pg-"))
    port = port_for.select_random()
    executor = PostgreSQLExecutor(
        executable=pg_ctl,
        host="127.0.0.1",
        port=port,
        datadir=str(folder / "data"),
        unixsocketdir=tempfile.gettempdir(),
        logfile=str(folder / "postgresql.log"),
        startparams="-w",
        dbname="bench",
    )
    executor.start()
    try:
        executor.wait_for_postgres()
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", str(executor.version)
    finally:
        executor.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def _create_database(admin_url: str, name: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def _ceiling(url: str, chunks: list[TickBatch]) -> float:
    """Seconds for a raw COPY of ``chunks`` into a plain table without any index."""
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        await con.execute(
            "CREATE TABLE IF NOT EXISTS raw_ticks (symbol TEXT NOT NULL, ts BIGINT NOT NULL, seq BIGINT NOT NULL, "
            "price DOUBLE PRECISION NOT NULL, size DOUBLE PRECISION NOT NULL, suspicious BOOLEAN NOT NULL)"
        )
        await con.execute("TRUNCATE raw_ticks")
        await con.execute("CHECKPOINT")
        t0 = time.perf_counter()
        for chunk in chunks:
            await con.copy_records_to_table("raw_ticks", records=_rows(chunk), columns=_TICK_COLUMNS)
        return time.perf_counter() - t0
    finally:
        await con.close()


async def _breakdown(url: str, chunks: list[TickBatch]) -> dict[str, float]:
    """Seconds spent per step of the store's write path, over one idempotent pass into empty tables."""
    import asyncpg

    con = await asyncpg.connect(url)
    out = {"rows_to_tuples_s": 0.0, "copy_to_staging_s": 0.0, "insert_new_rows_s": 0.0, "commit_s": 0.0}
    names = ", ".join(_TICK_COLUMNS)
    try:
        await con.execute("CREATE TEMP TABLE stage (LIKE ticks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        await con.execute("CHECKPOINT")
        for chunk in chunks:
            t0 = time.perf_counter()
            rows = _rows(chunk)
            t1 = time.perf_counter()
            tr = con.transaction()
            await tr.start()
            await con.copy_records_to_table("stage", records=rows, columns=_TICK_COLUMNS)
            t2 = time.perf_counter()
            await con.execute(  # the store's statement: the staged rows whose key is not stored yet
                f"INSERT INTO ticks ({names}) SELECT {names} FROM stage s WHERE NOT EXISTS (SELECT 1 FROM ticks x "  # noqa: S608 - constant names
                "WHERE x.symbol = s.symbol AND x.ts = s.ts AND x.seq = s.seq "
                f"AND x.ts >= {int(chunk.ts.min())} AND x.ts <= {int(chunk.ts.max())})"
            )
            t3 = time.perf_counter()
            await tr.commit()
            t4 = time.perf_counter()
            for key, dt in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                out[key] += dt
    finally:
        await con.close()
    return {k: round(v, 3) for k, v in out.items()}


def postgres_part(quick: bool) -> dict[str, Any]:
    """Figures of the PostgreSQL store (see the module notes); prints them as it goes."""
    from ingest.store.postgres import PostgresStore

    copies = 1 if quick else 3
    repeats = 1 if quick else 3
    ticks = spy_ticks(copies)
    n = len(ticks)
    big, small = _chunks(ticks, BATCH_ROWS), _chunks(ticks, SMALL_BATCH_ROWS)
    print(f"PostgreSQL: real SPY prints x{copies} = {n:,} ticks, median of {repeats}")

    def timed_store_pass(url: str, chunks: list[TickBatch]) -> tuple[float, float, int]:
        with PostgresStore(url, timescaledb=False) as store:
            store.write_ticks(chunks[0].take(slice(0, 1)))  # warm the connection and the prepared statements
            t0 = time.perf_counter()
            stored = sum(store.write_ticks(c) for c in chunks)
            t1 = time.perf_counter()
            again = sum(store.write_ticks(c) for c in chunks)
            t2 = time.perf_counter()
            if again != 0 or stored != n - 1:
                raise RuntimeError(f"stored={stored}, stored again={again}: expected {n - 1} then 0")
            return t1 - t0, t2 - t1, stored

    with local_postgres() as (admin, version):
        t_big, t_again, t_small, t_ceiling = [], [], [], []
        for r in range(repeats):
            url = asyncio.run(_create_database(admin, f"bench_{r}"))
            first, again, _ = timed_store_pass(url, big)
            t_big.append(first)
            t_again.append(again)
            t_ceiling.append(asyncio.run(_ceiling(url, big)))
            url = asyncio.run(_create_database(admin, f"bench_small_{r}"))
            t_small.append(timed_store_pass(url, small)[0])
        url = asyncio.run(_create_database(admin, "bench_breakdown"))
        PostgresStore(url, timescaledb=False).close()  # the schema
        breakdown = asyncio.run(_breakdown(url, big))

    rate = round(n / statistics.median(t_big))
    figures: dict[str, Any] = {
        "postgres_ticks": n,
        "postgres_ticks_per_s": rate,
        "postgres_ticks_per_s_10k_batches": round(n / statistics.median(t_small)),
        "postgres_redelivered_ticks_per_s": round(n / statistics.median(t_again)),
        "postgres_ceiling_ticks_per_s": round(n / statistics.median(t_ceiling)),
        "postgres_target_ticks_per_s": TARGET_POSTGRES_TICKS_PER_S,
        "postgres_batch_rows": BATCH_ROWS,
        "postgres_breakdown_s": breakdown,
        "postgres_server": version,
        "postgres_repeats": repeats,
    }
    print(f"  server: PostgreSQL {version}, default settings, started for this run")
    target = TARGET_POSTGRES_TICKS_PER_S
    print(f"  PostgresStore.write_ticks, 100k-row batches   {rate:>10,} ticks/s (target {target:,})")
    print(f"  PostgresStore.write_ticks, 10k-row batches    {figures['postgres_ticks_per_s_10k_batches']:>10,} ticks/s")
    print(f"  the same batches again (all duplicates)       {figures['postgres_redelivered_ticks_per_s']:>10,} ticks/s")
    print(f"  ceiling: raw COPY, plain table, no index      {figures['postgres_ceiling_ticks_per_s']:>10,} ticks/s")
    print(f"  where one idempotent pass spends its time (s): {breakdown}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one copy of the day, one repeat (under a minute)")
    args = parser.parse_args()
    figures: dict[str, Any] = {"machine": machine(), "python": platform.python_version()}
    print(f"machine: {figures['machine']}")
    figures.update(postgres_part(args.quick))
    figures.update(_redis_part(args.quick))
    print(json.dumps(figures))


def _redis_part(quick: bool) -> dict[str, Any]:
    figures = run_redis_benchmark(quick)
    return {k if k.startswith("redis_") else f"redis_{k}": v for k, v in figures.items()}


if __name__ == "__main__":
    main()
