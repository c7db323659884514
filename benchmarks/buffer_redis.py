"""Ticks per second through the Redis Streams buffer, end to end, next to the raw Redis ceiling of the same run.

Real SPY trades of 2013-10-08 are cut into batches (2,000 prints per entry by default), appended with
:meth:`RedisStreamBuffer.append_many` (Arrow IPC encoding, the sequence-checking Lua script, ``XADD``) while a
consumer in the same event loop reads them with ``XREADGROUP``, decodes every entry back to a ``TickBatch`` and
acknowledges it with ``XACK``. The ceiling moves the same payload bytes through a plain client loop of pipelined
``XADD`` and ``XREADGROUP`` + ``XACK``, without encoding, decoding or the script. Encoding and decoding alone
are timed too, to show where the time goes. The script starts its own redis-server (no persistence) on a free
port and stops it at the end.

Run from the repository root: ``python benchmarks/buffer_redis.py [--quick]``; the last line is one JSON object.
Other benchmarks import :func:`run_redis_benchmark`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis.asyncio as aioredis

if __name__ == "__main__":
    # run as a script, this file's folder would come first on sys.path, and ingest.py in it shadows the ingest
    # package: put the repository root there instead
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks._common import DATA, cpu_model, median_seconds
from ingest.buffer.base import Outgoing, decode_batch, encode_batch
from ingest.buffer.redis_streams import RedisStreamBuffer
from ingest.records import TickBatch

TARGET_TICKS_PER_S = 1_000_000
SPY_TICKS = "spy_trade_ticks_20131008.parquet"
PIPELINE = 16  # entries per append_many / XREADGROUP count


def load_spy_ticks(rows: int | None = None) -> TickBatch:
    """The real SPY prints (all 451,545, or the first ``rows``) as a ``TickBatch``, ``seq`` = row number."""
    path = DATA / SPY_TICKS
    if not path.exists():
        raise FileNotFoundError(f"data={path}: the SPY tick file is missing (set SENTINEL_SHARED_DATA)")
    frame = pd.read_parquet(path, columns=["ts", "symbol", "price", "size", "suspicious"])
    if rows is not None:
        frame = frame.head(rows)
    return TickBatch(
        ts=frame["ts"].astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view(np.int64),
        symbol=frame["symbol"].to_numpy(dtype=object),
        price=frame["price"].to_numpy(dtype=np.float64),
        size=frame["size"].to_numpy(dtype=np.float64),
        seq=np.arange(len(frame), dtype=np.int64),
        suspicious=frame["suspicious"].to_numpy(dtype=bool),
    )


def split(ticks: TickBatch, rows_per_entry: int) -> list[TickBatch]:
    """``ticks`` cut into consecutive batches of ``rows_per_entry`` rows."""
    return [ticks.take(slice(s, s + rows_per_entry)) for s in range(0, len(ticks), rows_per_entry)]


async def _buffer_run(url: str, batches: list[TickBatch], namespace: str) -> float:
    """Seconds to append every batch and read, decode and acknowledge every entry (concurrently)."""
    rows = sum(len(b) for b in batches)
    async with RedisStreamBuffer.from_url(url, namespace=namespace) as producer_buf:
        consumer_buf = RedisStreamBuffer.from_url(url, namespace=namespace)
        await producer_buf.ensure_group("SPY", "bench")

        async def produce() -> None:
            for start in range(0, len(batches), PIPELINE):
                chunk = batches[start : start + PIPELINE]
                await producer_buf.append_many([Outgoing("SPY", b, "spy", start + i) for i, b in enumerate(chunk)])

        async def consume() -> int:
            got = 0
            while got < rows:
                entries = await consumer_buf.read("bench", "c1", ["SPY"], count=PIPELINE, block_ms=1_000)
                got += sum(len(e.decode()) for e in entries)
                await consumer_buf.ack("bench", entries)
            return got

        t0 = time.perf_counter()
        _, got = await asyncio.gather(produce(), consume())
        seconds = time.perf_counter() - t0
        await consumer_buf.close()
        if got != rows:
            raise RuntimeError(f"consumed={got}: expected {rows} ticks")
        await producer_buf.client.delete(producer_buf.stream_key("SPY"), f"{namespace}:seq")
    return seconds


async def _raw_run(url: str, payloads: list[bytes], key: str) -> float:
    """Seconds for the same payload bytes through plain pipelined XADD and XREADGROUP + XACK."""
    async with aioredis.Redis.from_url(url) as producer, aioredis.Redis.from_url(url) as consumer:
        await producer.xgroup_create(key, "bench", id="0", mkstream=True)

        async def produce() -> None:
            for start in range(0, len(payloads), PIPELINE):
                pipe = producer.pipeline(transaction=False)
                for i, payload in enumerate(payloads[start : start + PIPELINE]):
                    pipe.xadd(key, {"source": "spy", "seq": str(start + i), "kind": "tick", "payload": payload})
                await pipe.execute()

        async def consume() -> int:
            got = 0
            while got < len(payloads):
                reply: Any = await consumer.xreadgroup("bench", "c1", {key: ">"}, count=PIPELINE, block=1_000)
                ids = [entry_id for _, messages in reply or [] for entry_id, _ in messages]
                if ids:
                    await consumer.xack(key, "bench", *ids)
                got += len(ids)
            return got

        t0 = time.perf_counter()
        await asyncio.gather(produce(), consume())
        seconds = time.perf_counter() - t0
        await producer.delete(key)
    return seconds


def _median(repeats: int, fn: Callable[[int], Awaitable[float]]) -> float:
    async def main() -> list[float]:
        return [await fn(i) for i in range(repeats)]

    return statistics.median(asyncio.run(main()))


def _free_port(port: int | None) -> int:
    if port is None:
        raise RuntimeError("port=None: no free TCP port found for redis-server")
    return port


def _redis_server() -> tuple[Any, Path]:
    """A started redis-server on a free port, in a temporary folder, without persistence."""
    from port_for import get_port
    from pytest_redis.executor import RedisExecutor

    executable = shutil.which("redis-server")
    if executable is None:
        raise FileNotFoundError("redis-server: not installed (apt-get install redis-server)")
    datadir = Path(tempfile.mkdtemp(prefix="sentinel-bench-redis-"))
    executor = RedisExecutor(
        executable=executable,
        databases=1,
        redis_timeout=30,
        loglevel="warning",
        host="127.0.0.1",
        port=_free_port(get_port(None)),
        datadir=datadir,
    )
    executor.command_parts = [*executor.command_parts, "--save", ""]
    executor.command = " ".join(executor.command_parts)
    executor.start()
    return executor, datadir


def run_redis_benchmark(quick: bool, rows_per_entry: int = 2_000) -> dict[str, Any]:
    """Measure the buffer and the raw ceiling on a redis-server of its own; returns the figures.

    Parameters
    ----------
    quick : bool
        3 repeats instead of 11 (each repeat moves all 451,545 ticks; both well under a minute).
    rows_per_entry : int
        Ticks per stream entry.

    Returns
    -------
    dict
        ``redis_ticks_per_s`` (end to end through :class:`RedisStreamBuffer`, median of the repeats),
        ``redis_ceiling_ticks_per_s`` (same bytes, raw client, no codec), encode/decode-only rates, payload
        size, the machine and the Redis version.
    """
    ticks = load_spy_ticks()
    repeats = 3 if quick else 11
    batches = split(ticks, rows_per_entry)
    payloads = [encode_batch(b) for b in batches]
    decoded = [decode_batch(p) for p in payloads]
    encode_s = median_seconds(lambda: [encode_batch(b) for b in batches], repeats)
    decode_s = median_seconds(lambda: [decode_batch(p) for p in payloads], repeats)
    if not all(d.equals(b) for d, b in zip(decoded, batches, strict=True)):
        raise RuntimeError("decode(encode(batch)) differs from batch")

    server, datadir = _redis_server()
    try:
        url = f"redis://{server.host}:{server.port}/0"
        version = str(server.version)
        _median(1, lambda i: _buffer_run(url, batches, "warmup"))
        buffer_s = _median(repeats, lambda i: _buffer_run(url, batches, f"bench{i}"))
        raw_s = _median(repeats, lambda i: _raw_run(url, payloads, f"raw{i}"))
    finally:
        server.stop()
        shutil.rmtree(datadir, ignore_errors=True)

    n = len(ticks)
    return {
        "redis_ticks_per_s": round(n / buffer_s),
        "redis_ceiling_ticks_per_s": round(n / raw_s),
        "ratio_to_ceiling": round(raw_s / buffer_s, 3),
        "target_ticks_per_s": TARGET_TICKS_PER_S,
        "meets_target": n / buffer_s >= TARGET_TICKS_PER_S,
        "encode_only_ticks_per_s": round(n / encode_s),
        "decode_only_ticks_per_s": round(n / decode_s),
        "ticks": n,
        "entries": len(batches),
        "rows_per_entry": rows_per_entry,
        "payload_bytes_per_tick": round(sum(len(p) for p in payloads) / n, 2),
        "repeats": repeats,
        "redis_version": version,
        "redis_persistence": "none (no AOF, no RDB)",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }


def main() -> None:
    """Command line entry point: prints the figures, then them as one JSON object on the last line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 11")
    parser.add_argument("--rows-per-entry", type=int, default=2_000, help="ticks per stream entry")
    args = parser.parse_args()
    result = run_redis_benchmark(args.quick, rows_per_entry=args.rows_per_entry)
    print(f"machine: {result['machine']}; redis-server {result['redis_version']}, {result['redis_persistence']}")
    print(
        f"{result['ticks']:,} SPY ticks in {result['entries']:,} entries of {result['rows_per_entry']:,}, "
        f"{result['payload_bytes_per_tick']} bytes per tick"
    )
    print(
        f"buffer, end to end (encode, append script, XREADGROUP, decode, XACK): {result['redis_ticks_per_s']:,} ticks/s"
    )
    print(f"raw ceiling (same bytes, XADD, XREADGROUP, XACK): {result['redis_ceiling_ticks_per_s']:,} ticks/s")
    print(
        f"codec alone: encode {result['encode_only_ticks_per_s']:,} ticks/s, "
        f"decode {result['decode_only_ticks_per_s']:,} ticks/s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
