"""The Redis Streams buffer against a real redis-server: the shared contract, then crashes and replays.

Reliability scenarios use real SPY trades: a consumer process killed with SIGKILL mid-stream and restarted, the
same feed appended twice, and a redis-server killed and restarted with ``appendfsync always``. Duplicates are
removed at the store, by the natural key ``(symbol, ts, seq)`` (``INSERT OR IGNORE`` in the consumer's SQLite
file); the buffer itself delivers at least once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from ingest.buffer import Outgoing
from ingest.buffer.redis_streams import RedisStreamBuffer
from ingest.records import TickBatch
from tests.integration.redis_fixtures import durable_redis
from tests.integration.redis_tick_consumer import consume, open_store, stored_rows
from tests.unit.test_buffer_memory import BufferContract, MakeBuffer, same_bits

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONSUMER = Path(__file__).with_name("redis_tick_consumer.py")


class TestRedisBufferContract(BufferContract):
    """The contract every buffer keeps, on Redis Streams."""

    @pytest.fixture
    def make_buffer(self, redis_url: str, redis_namespace: str) -> MakeBuffer:
        def make(**kwargs: Any) -> RedisStreamBuffer:
            return RedisStreamBuffer.from_url(redis_url, namespace=f"{redis_namespace}:{time.monotonic_ns()}", **kwargs)

        return make


# --------------------------------------------------------------------------------------------------------
# Real ticks
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spy_ticks(spy_ticks_path: Path) -> TickBatch:
    """The first 60,000 SPY trades of 2013-10-08, ``seq`` = row number."""
    frame = pd.read_parquet(spy_ticks_path, columns=["ts", "symbol", "price", "size", "suspicious"]).head(60_000)
    ts = frame["ts"].astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view(np.int64)
    return TickBatch(
        ts=ts,
        symbol=frame["symbol"].to_numpy(dtype=object),
        price=frame["price"].to_numpy(dtype=np.float64),
        size=frame["size"].to_numpy(dtype=np.float64),
        seq=np.arange(len(frame), dtype=np.int64),
        suspicious=frame["suspicious"].to_numpy(dtype=bool),
    )


def feed(ticks: TickBatch, rows_per_entry: int, shards: int = 2) -> list[Outgoing]:
    """The ticks as source ``replay``'s batches, numbered 0, 1, ..., spread round-robin over ``shards`` streams."""
    starts = range(0, len(ticks), rows_per_entry)
    return [
        Outgoing(f"shard-{i % shards}", ticks.take(slice(s, s + rows_per_entry)), "replay", i)
        for i, s in enumerate(starts)
    ]


def checksum(symbol: list[str], ts: Any, seq: Any, price: Any, size: Any) -> str:
    """SHA-256 over the rows sorted by ``seq``, each column as its raw bytes."""
    order = np.argsort(np.asarray(seq), kind="stable")
    h = hashlib.sha256()
    h.update("\x00".join(np.asarray(symbol, dtype=object)[order].tolist()).encode())
    for col, dtype in ((ts, np.int64), (seq, np.int64), (price, np.float64), (size, np.float64)):
        h.update(np.asarray(col, dtype=dtype)[order].tobytes())
    return h.hexdigest()


def input_checksum(ticks: TickBatch) -> str:
    return checksum(ticks.symbol.tolist(), ticks.ts, ticks.seq, ticks.price, ticks.size)


def store_checksum(db: Path) -> tuple[int, str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT symbol, ts, seq, price, size FROM ticks").fetchall()
    finally:
        conn.close()
    symbol, ts, seq, price, size = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [])
    return len(rows), checksum(symbol, ts, seq, price, size)


def append_all(url: str, namespace: str, items: list[Outgoing]) -> None:
    async def main() -> None:
        async with RedisStreamBuffer.from_url(url, namespace=namespace) as buf:
            for start in range(0, len(items), 20):
                await buf.append_many(items[start : start + 20])

    asyncio.run(main())


def start_consumer(
    url: str, namespace: str, db: Path, expected: int, name: str, pause_s: float
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(CONSUMER), url, namespace, str(db), "--streams", "shard-0", "shard-1"]
    cmd += ["--expected-rows", str(expected), "--consumer", name, "--count", "1", "--pause-s", str(pause_s)]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def wait_for_rows(db: Path, at_least: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.exists():
            try:
                conn = sqlite3.connect(db)
                try:
                    n = stored_rows(conn)
                finally:
                    conn.close()
            except sqlite3.OperationalError:
                n = 0
            if n >= at_least:
                return n
        time.sleep(0.02)
    raise AssertionError(f"store {db} did not reach {at_least} rows in {timeout_s} s")


# --------------------------------------------------------------------------------------------------------
# Reliability
# --------------------------------------------------------------------------------------------------------


def test_consumer_killed_mid_stream_and_restarted_stores_every_tick_exactly_once(
    redis_url: str, redis_namespace: str, spy_ticks: TickBatch, tmp_path: Path
) -> None:
    items = feed(spy_ticks, rows_per_entry=500)
    append_all(redis_url, redis_namespace, items)
    db = tmp_path / "ticks.sqlite"
    total = len(spy_ticks)

    first = start_consumer(redis_url, redis_namespace, db, total, "consumer-1", pause_s=0.03)
    try:
        seen = wait_for_rows(db, 5_000, timeout_s=30)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    at_kill = wait_for_rows(db, seen, timeout_s=1)
    assert at_kill < total, "the consumer finished before it was killed: nothing was tested"

    second = start_consumer(redis_url, redis_namespace, db, total, "consumer-2", pause_s=0.0)
    try:
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()

    assert store_checksum(db) == (total, input_checksum(spy_ticks))

    async def leftovers() -> list[int]:
        async with RedisStreamBuffer.from_url(redis_url, namespace=redis_namespace) as buf:
            return [len(await buf.pending(s, "store")) for s in ("shard-0", "shard-1")]

    assert asyncio.run(leftovers()) == [0, 0]


def test_same_feed_appended_twice_is_stored_once(
    redis_url: str, redis_namespace: str, spy_ticks: TickBatch, tmp_path: Path
) -> None:
    ticks = spy_ticks.take(slice(0, 20_000))
    items = feed(ticks, rows_per_entry=1_000)
    db = tmp_path / "ticks.sqlite"

    async def main() -> tuple[list[bool], list[bool]]:
        async with RedisStreamBuffer.from_url(redis_url, namespace=redis_namespace) as buf:
            once = [a.replayed for a in await buf.append_many(items)]
            twice = [a.replayed for a in await buf.append_many(items)]
            assert buf.metrics.sequence_gaps == 0
            conn = open_store(db)
            try:
                await consume(buf, conn, ["shard-0", "shard-1"], "store", "c1", expected_rows=len(ticks), count=8)
            finally:
                conn.close()
            assert buf.metrics.entries_acked == 2 * len(items)  # both copies delivered; the store kept one
            return once, twice

    once, twice = asyncio.run(main())
    assert not any(once)
    assert all(twice)
    assert store_checksum(db) == (len(ticks), input_checksum(ticks))


def test_redis_restart_with_appendfsync_always_loses_no_acknowledged_write(
    spy_ticks: TickBatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    items = feed(spy_ticks.take(slice(0, 30_000)), rows_per_entry=1_000, shards=1)
    namespace = "durable"

    with durable_redis(tmp_path_factory.mktemp("aof")) as server:
        url = f"redis://{server.host}:{server.port}/0"

        async def before_crash() -> tuple[list[str], list[str]]:
            async with RedisStreamBuffer.from_url(url, namespace=namespace) as buf:
                appended = await buf.append_many(items)
                read = await buf.read("store", "c1", ["shard-0"], count=20)
                await buf.ack("store", read[:10])
                return [a.id for a in appended], [e.id for e in read[10:]]

        ids, unacked = asyncio.run(before_crash())
        server.kill(sig=signal.SIGKILL)  # a crash: no shutdown save, only the fsynced AOF remains
        server.start()

        async def after_restart() -> None:
            async with RedisStreamBuffer.from_url(url, namespace=namespace) as buf:
                assert await buf.length("shard-0") == len(items)
                assert [p.id for p in await buf.pending("shard-0", "store")] == unacked
                claimed = (await buf.claim("shard-0", "store", "c2", min_idle_ms=0)).entries
                assert [e.id for e in claimed] == unacked
                fresh = await buf.read("store", "c2", ["shard-0"], count=100)
                assert [e.id for e in fresh] == ids[20:]  # acknowledged and delivered entries stay so
                every = await buf.read("check", "c", ["shard-0"], count=100)
                assert [e.id for e in every] == ids
                for entry, item in zip(every, items, strict=True):
                    assert (entry.source, entry.seq) == (item.source, item.seq)
                    assert same_bits(entry.decode(), item.batch)
                gap = await buf.append("shard-0", items[0].batch, source="replay", seq=len(items) + 1)
                assert gap.gap is not None
                assert gap.gap.expected == len(items)  # the sequence state survived too

        asyncio.run(after_restart())


def test_open_buffer_with_redis_settings_talks_to_redis(redis_url: str, redis_namespace: str) -> None:
    from cluster.buffers import open_buffer
    from cluster.config import Settings

    settings = Settings(buffer="redis", redis_url=SecretStr(redis_url))
    assert redis_url not in repr(settings)

    async def main() -> None:
        buffer = open_buffer(settings)
        assert isinstance(buffer, RedisStreamBuffer)
        try:
            stream = f"{redis_namespace}-SPY"
            await buffer.append(stream, TickBatch.empty(), source="open-buffer-test", seq=0)
            assert await buffer.length(stream) == 1
            await buffer.client.delete(buffer.stream_key(stream))
            await buffer.client.hdel(f"{buffer.namespace}:seq", "open-buffer-test")
        finally:
            await buffer.close()

    asyncio.run(main())
