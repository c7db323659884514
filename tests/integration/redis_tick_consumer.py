"""A consumer process for the reliability tests: ticks from the Redis buffer into a SQLite file, each once.

Every tick is written with ``INSERT OR IGNORE`` under the primary key ``(symbol, ts, seq)`` (the natural key of
a trade), the transaction is committed, and only then are the entries acknowledged. A crash between the commit
and the acknowledgement makes the entries come back (claimed by the next consumer); the key makes the second
write a no-op. On start the consumer claims what a dead consumer left pending.

Run: ``python tests/integration/redis_tick_consumer.py URL NAMESPACE DB --streams s1 s2 --expected-rows N``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingest.buffer.base import Buffer, Entry
from ingest.buffer.redis_streams import RedisStreamBuffer
from ingest.records import TickBatch

SCHEMA = """
CREATE TABLE IF NOT EXISTS ticks (
    symbol TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL, price REAL NOT NULL, size REAL NOT NULL,
    PRIMARY KEY (symbol, ts, seq)
) WITHOUT ROWID
"""


def open_store(path: Path) -> sqlite3.Connection:
    """The SQLite tick store at ``path``, durable at each commit."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    conn.commit()
    return conn


def store_entries(conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
    """Write every tick of ``entries`` in one transaction; a tick already stored is left as it is."""
    with conn:
        for entry in entries:
            batch = entry.decode()
            if not isinstance(batch, TickBatch):
                raise TypeError(f"kind={entry.kind!r}: this consumer stores trades only")
            rows = zip(
                batch.symbol.tolist(),
                batch.ts.tolist(),
                batch.seq.tolist(),
                batch.price.tolist(),
                batch.size.tolist(),
                strict=True,
            )
            conn.executemany("INSERT OR IGNORE INTO ticks VALUES (?, ?, ?, ?, ?)", rows)


def stored_rows(conn: sqlite3.Connection) -> int:
    """Ticks in the store."""
    return int(conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0])


async def consume(
    buffer: Buffer,
    conn: sqlite3.Connection,
    streams: Sequence[str],
    group: str,
    consumer: str,
    expected_rows: int,
    count: int = 4,
    pause_s: float = 0.0,
    claim_idle_ms: int = 0,
) -> None:
    """Store and acknowledge entries until ``expected_rows`` ticks are stored and no entry is left to read."""
    for stream in streams:
        while claimed := (await buffer.claim(stream, group, consumer, min_idle_ms=claim_idle_ms)).entries:
            store_entries(conn, claimed)
            await buffer.ack(group, claimed)
    while True:
        entries = await buffer.read(group, consumer, streams, count=count, block_ms=100)
        if entries:
            store_entries(conn, entries)
            await buffer.ack(group, entries)
        elif stored_rows(conn) >= expected_rows:
            return
        if pause_s:
            await asyncio.sleep(pause_s)


async def _main(args: argparse.Namespace) -> None:
    conn = open_store(args.db)
    buffer = RedisStreamBuffer.from_url(args.url, namespace=args.namespace)
    try:
        await consume(
            buffer, conn, args.streams, args.group, args.consumer, args.expected_rows, args.count, args.pause_s
        )
    finally:
        await buffer.close()
        conn.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url")
    parser.add_argument("namespace")
    parser.add_argument("db", type=Path)
    parser.add_argument("--streams", nargs="+", required=True)
    parser.add_argument("--expected-rows", type=int, required=True)
    parser.add_argument("--group", default="store")
    parser.add_argument("--consumer", default="consumer-1")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--pause-s", type=float, default=0.0)
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
