"""Ticks per second and tick-to-output latency of the whole stream on Ray, embedded and through Redis Streams.

The real SPY prints of 2013-10-08 (451,545) are replicated over the 19 symbols of the seed universe, each copy's
prices scaled by its own factor (0.5, 0.6, ... 2.3), and merged in time order (every symbol interleaved): raw
pandas frames in the input contract (``timestamp, symbol, price, size``), built before any timing. They go end
to end: validation in the driver -> the buffer (the embedded in-process queue, or Redis Streams on a
redis-server the script starts on a free port) -> the router -> one AssetActor per symbol (1 s and 1 min bars,
their features, alerts) -> the hub. Ticks travel as columns (numpy arrays; Arrow IPC inside the buffer).

Figures:

- **sustained ticks/s**, per buffer: ticks offered / (first offer to ``finish()`` returning, which includes
  closing every open bar), median of repeated runs;
- **tick-to-output latency** at offered loads of 1k, 10k and 100k ticks/s (embedded buffer; the full run adds
  Redis): a paced producer offers a batch every 5 ms (load x 5 ms ticks) while a thread polls the hub's
  ``prices`` topic; a tick's latency is the time its price update reached the subscriber minus the time its
  batch was due (the scheduled time: an offer that falls behind schedule counts its delay), weighted by ticks;
  p50 and p99 in ms;
- **baseline** of the same run: the same raw batches through validation and one ``AssetProcessor`` per symbol
  in this process, without Ray (one core), so the cost of the distribution shows as a ratio.

Ray runs locally with the machine's 2 CPUs. Starting the 19 actor processes costs seconds of CPU each; it is done
once, before any timing, by streaming a short prefix through them. Every timed run then streams the market of a
later day (timestamps shifted by whole days) through the same actors, the way a long-running deployment sees
one day after the other; each run has its own buffer, validation and pipeline.

Sizes: the full run streams the whole day (8,579,355 ticks) 5 times per buffer and offers each load for 10 s,
through both buffers; ``--quick`` (under a minute, most of it the actors' start-up) streams the first 40,000
prints (760,000 ticks) 3 times per buffer and offers each load for 1.5 s, embedded only. The per-process CPU time
per tick is reported too: on a shared machine it moves far less than the wall-clock rates.

Run from the repository root: ``python benchmarks/stream.py [--quick]``; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import redis.asyncio as aioredis

# Run as a script, this file's folder would come first on sys.path, and ingest.py in it shadows the ingest
# package: put the repository root there instead (the packages, and benchmarks._common).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from actors.asset import get_or_create_asset_actor  # noqa: E402 - after the sys.path fix above
from actors.hub import get_or_create_hub  # noqa: E402
from actors.router import Router, split_by_symbol  # noqa: E402
from actors.stream import StreamConfig, StreamPipeline, StreamStatus  # noqa: E402
from benchmarks._common import DATA, machine  # noqa: E402
from benchmarks.buffer_redis import _redis_server  # noqa: E402
from cluster.config import SEED_UNIVERSE  # noqa: E402
from ingest.asset import AssetProcessor, FileCheckpointStore  # noqa: E402
from ingest.buffer.base import Buffer  # noqa: E402
from ingest.buffer.memory import MemoryBuffer  # noqa: E402
from ingest.buffer.redis_streams import RedisStreamBuffer  # noqa: E402
from ingest.pipeline import BatchValidation  # noqa: E402
from ingest.records import NS_PER_DAY  # noqa: E402
from ingest.sources.base import RawBatch  # noqa: E402
from ingest.validation import ValidationConfig  # noqa: E402

TARGET_EMBEDDED_TICKS_PER_S = 1_000_000
TARGET_REDIS_TICKS_PER_S = 500_000
TARGET_P99_MS_AT_10K = 20.0
LOADS = (1_000, 10_000, 100_000)
SPY_TICKS = "spy_trade_ticks_20131008.parquet"
#: A paced producer offers one batch this often.
PERIOD_S = 0.005
#: Prints of the SPY day (per symbol) streamed once through the actors before anything is timed.
WARMUP_PRINTS = 1_000
#: Seconds a subscriber waits in one poll of the hub.
POLL_TIMEOUT_S = 0.05


# ------------------------------------------------------------------------------------------------ the market
@dataclass(frozen=True)
class Market:
    """The SPY day replicated over the universe, symbols interleaved in time order, as columns.

    Row ``i * len(symbols) + k`` is print ``i`` of the SPY day for symbol ``k``, at price ``price * (0.5 +
    0.1 k)``. ``ts`` is in ns UTC on the first day; :meth:`frame` shifts it by whole days.
    """

    ts: np.ndarray[Any, np.dtype[np.int64]]
    symbol: np.ndarray[Any, np.dtype[np.object_]]
    price: np.ndarray[Any, np.dtype[np.float64]]
    size: np.ndarray[Any, np.dtype[np.float64]]
    symbols: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ts)

    def frame(self, day: int, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start:stop`` as a raw frame in the input contract, ``day`` days after the first."""
        rows = slice(start, stop)
        return pd.DataFrame(
            {
                "timestamp": pd.to_datetime(self.ts[rows] + day * NS_PER_DAY, utc=True),
                "symbol": self.symbol[rows],
                "price": self.price[rows],
                "size": self.size[rows],
            }
        )

    def batches(self, day: int, rows_per_batch: int, start: int = 0, stop: int | None = None) -> list[RawBatch]:
        """Rows ``start:stop`` of day ``day`` cut into raw batches of ``rows_per_batch`` rows."""
        frame = self.frame(day, start, stop)
        return [RawBatch(trades=frame.iloc[k : k + rows_per_batch]) for k in range(0, len(frame), rows_per_batch)]

    def clock(self) -> Callable[[], int]:
        """A fixed validation clock ten years after the first day: every shifted day is in its past."""
        now = int(self.ts[-1]) + 3_650 * NS_PER_DAY
        return lambda: now


def load_market(prints: int | None, symbols: tuple[str, ...] = SEED_UNIVERSE) -> Market:
    """The first ``prints`` SPY prints (all when ``None``) replicated over ``symbols`` with shifted prices."""
    path = DATA / SPY_TICKS
    if not path.exists():
        sys.exit(f"{path} not found: set SENTINEL_SHARED_DATA to the folder of the shared market data")
    spy = pd.read_parquet(path, columns=["ts", "price", "size"])
    if prints is not None:
        spy = spy.head(prints)
    ts = spy["ts"].astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view(np.int64)
    n, k = len(spy), len(symbols)
    factor = 0.5 + 0.1 * np.arange(k)
    return Market(
        ts=np.repeat(ts, k),
        symbol=np.tile(np.array(symbols, dtype=object), n),
        price=(spy["price"].to_numpy(dtype=np.float64)[:, None] * factor[None, :]).ravel(),
        size=np.repeat(spy["size"].to_numpy(dtype=np.float64), k),
        symbols=symbols,
    )


def validation_config(market: Market) -> ValidationConfig:
    """Validation of the benchmark: the default rules over the market's universe."""
    return ValidationConfig(universe=frozenset(market.symbols))


# ------------------------------------------------------------------------------------------------ baseline
def in_process_seconds(raws: list[RawBatch], market: Market) -> float:
    """Seconds to validate ``raws`` and feed one ``AssetProcessor`` per symbol in this process (no Ray)."""
    validation = BatchValidation(validation_config(market), clock=market.clock())
    processors = {sym: AssetProcessor(sym) for sym in market.symbols}
    t0 = time.perf_counter()
    for raw in raws:
        ticks = validation.validate(raw).ticks
        for sym, part in split_by_symbol(ticks):
            processors[sym].process(part)
    for proc in processors.values():
        proc.flush()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ Ray session
@dataclass
class Session:
    """The actors of the benchmark: one router (and its AssetActors) and one hub, in a namespace of their own."""

    namespace: str
    router: Router
    hub: Any
    actors: list[Any]
    checkpoints: Path
    started: float = field(default_factory=time.perf_counter)
    startup_s: float = 0.0
    #: process ids of the AssetActors, for their CPU time
    pids: list[int] = field(default_factory=list)

    def actors_cpu_s(self) -> float:
        """CPU seconds used so far by the AssetActors' processes."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    def close(self) -> None:
        """Kill the actors and remove the checkpoints."""
        for actor in [*self.actors, self.hub]:
            with contextlib.suppress(ValueError):
                ray.kill(actor, no_restart=True)
        shutil.rmtree(self.checkpoints, ignore_errors=True)


def open_session(symbols: tuple[str, ...]) -> Session:
    """Create the hub and an AssetActor per symbol; their processes start in the background."""
    namespace = f"bench-stream-{uuid.uuid4().hex[:8]}"
    checkpoints = Path(tempfile.mkdtemp(prefix="sentinel-bench-stream-"))
    actor_for = partial(get_or_create_asset_actor, checkpoints=FileCheckpointStore(checkpoints), namespace=namespace)
    # the router finds these (named) actors when it first routes to a symbol; the handles keep them alive
    actors = [actor_for(sym) for sym in symbols]
    hub = get_or_create_hub(namespace=namespace)
    return Session(namespace, Router(actor_for, keep_outputs=False), hub, actors, checkpoints)


def warm_session(session: Session, market: Market, config: StreamConfig) -> None:
    """Stream a short prefix through every actor (their first calls load the compiled kernels): not timed."""
    rows = WARMUP_PRINTS * len(market.symbols)
    asyncio.run(_stream(session, MemoryBuffer, market.batches(0, rows, 0, rows), market, config))
    session.startup_s = time.perf_counter() - session.started
    session.pids = [int(w["pid"]) for w in ray.get([a.where.remote() for a in session.actors])]


def cpu_seconds(pid: int | None = None) -> float:
    """User and system CPU seconds of a process (this one by default), from Linux's /proc; NaN elsewhere."""
    try:
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
        # the fields after the command name: state is the first, utime the 12th, stime the 13th
        after = stat.rsplit(")", 1)[1].split()
        return (int(after[11]) + int(after[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


BufferFactory = Callable[[], Buffer]


def _pipeline(session: Session, buffer: Buffer, market: Market, config: StreamConfig) -> StreamPipeline:
    validation = BatchValidation(validation_config(market), clock=market.clock(), source="bench")
    return StreamPipeline(buffer, session.router, validation, hub=session.hub, config=config, source="bench")


async def _stream(
    session: Session, make_buffer: BufferFactory, raws: list[RawBatch], market: Market, config: StreamConfig
) -> tuple[float, StreamStatus]:
    """Seconds from the first offer to ``finish()`` returning, and the final status."""
    pipe = _pipeline(session, make_buffer(), market, config)
    await pipe.start()
    try:
        t0 = time.perf_counter()
        for raw in raws:
            await pipe.offer(raw)
        status = await pipe.finish()
        return time.perf_counter() - t0, status
    finally:
        await pipe.stop()
        await pipe.buffer.close()


@dataclass
class ThroughputRun:
    """One timed pass of a day through the pipeline.

    Attributes
    ----------
    seconds : float
        First offer to ``finish()`` returning.
    ticks, rounds, hub_dropped : int
        Ticks offered, rounds routed, hub updates dropped.
    driver_cpu_s, actors_cpu_s : float
        CPU seconds used meanwhile by this process (validation, buffer, router, every thread) and by the
        AssetActors' processes: unlike the wall time, hardly changed by other work on the machine.
    """

    seconds: float
    ticks: int
    rounds: int
    hub_dropped: int
    driver_cpu_s: float
    actors_cpu_s: float

    @property
    def ticks_per_s(self) -> float:
        """Ticks offered per second, first offer to ``finish()``."""
        return self.ticks / self.seconds


def throughput(
    session: Session,
    make_buffer: BufferFactory,
    market: Market,
    days: Iterator[int],
    repeats: int,
    rows_per_batch: int,
    config: StreamConfig,
    after: Callable[[], None] | None = None,
) -> list[ThroughputRun]:
    """``repeats`` timed runs, each over the whole market of the next day; the raw batches are built first."""
    runs = []
    for _ in range(repeats):
        raws = market.batches(next(days), rows_per_batch)
        driver, actors = cpu_seconds(), session.actors_cpu_s()
        seconds, status = asyncio.run(_stream(session, make_buffer, raws, market, config))
        driver, actors = cpu_seconds() - driver, session.actors_cpu_s() - actors
        accepted = status.accepted.get("trades", 0)
        if accepted != len(market) or sum(a.records for a in status.assets.values()) != len(market):
            raise RuntimeError(f"accepted={accepted}: expected every one of the {len(market):,} ticks processed")
        runs.append(ThroughputRun(seconds, len(market), status.rounds, status.hub_dropped, driver, actors))
        if after is not None:
            after()
    return runs


# ------------------------------------------------------------------------------------------------ latency
@dataclass
class LatencyRun:
    """Tick-to-output latency at one offered load.

    Attributes
    ----------
    load : int
        Ticks per second offered.
    seconds : float
        How long the paced producer ran.
    offered, delivered : int
        Ticks offered, and ticks covered by the price updates the subscriber received.
    p50_ms, p99_ms, max_ms : float
        Latency quantiles over ticks, ms.
    behind_ms : float
        The most an offer started after its scheduled time, ms.
    achieved_ticks_per_s : float
        Ticks offered over the producer's running time.
    rounds, hub_dropped, subscriber_dropped : int
        Rounds routed; updates the pipeline dropped (hub far behind) or the subscriber's queue dropped.
    buffer : str
        ``memory`` or ``redis``.
    breakdown : dict
        p50 and p99 of the parts of the latency, ms: behind schedule (due to offered), offered to the reply
        handled in the driver (buffer, round, actors), and on to the subscriber (hub).
    """

    load: int
    seconds: float
    offered: int
    delivered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    behind_ms: float
    achieved_ticks_per_s: float
    rounds: int
    hub_dropped: int
    subscriber_dropped: int
    buffer: str = "memory"
    breakdown: dict[str, float] = field(default_factory=dict)


def weighted_quantile(values: np.ndarray[Any, Any], weights: np.ndarray[Any, Any], q: float) -> float:
    """The smallest value whose weighted cumulative share reaches ``q`` (NaN when there is no weight)."""
    if not len(values) or weights.sum() <= 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][min(int(np.searchsorted(cum, q * cum[-1])), len(cum) - 1)])


class _Subscriber:
    """A thread polling the hub's ``prices`` topic, noting when each update arrived."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.sub = ray.get(hub.subscribe.remote("prices", max_queue=1_000_000))
        # (arrival ns, received_ns and processed_ns of the update, ticks it covers)
        self.got: list[tuple[int, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prices-subscriber", daemon=True)

    def __enter__(self) -> _Subscriber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take(0.0)  # whatever arrived after the last poll, at the time it is seen
        stats = ray.get(self.hub.stats.remote(self.sub))
        self.dropped = int(stats.dropped)
        ray.get(self.hub.unsubscribe.remote(self.sub))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take(POLL_TIMEOUT_S)

    def _take(self, timeout_s: float) -> None:
        items = ray.get(self.hub.poll.remote(self.sub, max_items=10_000, timeout_s=timeout_s))
        now = time.time_ns()
        self.got.extend(
            (now, int(p["received_ns"]), int(p["processed_ns"]), int(p["records"])) for p in items if p["records"]
        )


async def _paced(
    session: Session, make_buffer: BufferFactory, raws: list[RawBatch], market: Market, config: StreamConfig
) -> tuple[list[int], list[int], float, StreamStatus]:
    """Offer ``raws`` one every ``PERIOD_S``; returns when each was due and offered (ns), the seconds, the status."""
    pipe = _pipeline(session, make_buffer(), market, config)
    await pipe.start()
    due: list[int] = []
    offered: list[int] = []
    period_ns = int(PERIOD_S * 1e9)
    try:
        t0 = time.time_ns() + period_ns
        for k, raw in enumerate(raws):
            at = t0 + k * period_ns
            wait_ns = at - time.time_ns()
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            due.append(at)
            offered.append(time.time_ns())
            await pipe.offer(raw)
        seconds = (time.time_ns() - t0) / 1e9
        status = await pipe.finish()
        return due, offered, seconds, status
    finally:
        await pipe.stop()
        await pipe.buffer.close()


def latency(
    session: Session,
    make_buffer: BufferFactory,
    market: Market,
    day: int,
    load: int,
    duration_s: float,
    config: StreamConfig,
    buffer_name: str,
) -> LatencyRun:
    """Offer ``load`` ticks/s for ``duration_s`` seconds (a batch every ``PERIOD_S``) and measure the latency.

    A price update covers the ticks of one symbol in one round; its ``received_ns`` is when the driver received
    the oldest batch of that round. Its origin is that batch's scheduled time (never later than the offer), so
    a producer held up by the pipeline counts its delay; every tick of the update is charged the latency of
    the oldest.
    """
    per_batch = max(1, round(load * PERIOD_S))
    batches = int(duration_s / PERIOD_S)
    raws = market.batches(day, per_batch, 0, min(len(market), per_batch * batches))
    with _Subscriber(session.hub) as subscriber:
        due, offered, seconds, status = asyncio.run(_paced(session, make_buffer, raws, market, config))
    got = np.array(subscriber.got, dtype=np.int64).reshape(-1, 4)
    # the batch each update's received_ns belongs to: the last one offered at or before it
    index = np.array([max(0, bisect.bisect_right(offered, r) - 1) for r in got[:, 1].tolist()], dtype=np.int64)
    origin = np.minimum(got[:, 1], np.asarray(due, dtype=np.int64)[index]) if len(got) else got[:, 1]
    lat_ms = (got[:, 0] - origin) / 1e6
    weights = got[:, 3].astype(np.float64)
    # where the time goes: due -> offered (producer behind), offered -> reply handled in the driver, -> subscriber
    parts = {
        "behind_schedule": (got[:, 1] - origin) / 1e6,
        "to_reply": (got[:, 2] - got[:, 1]) / 1e6,
        "hub_to_subscriber": (got[:, 0] - got[:, 2]) / 1e6,
    }
    breakdown = {
        f"{name}_{q}_ms": round(weighted_quantile(values, weights, quantile), 3)
        for name, values in parts.items()
        for q, quantile in (("p50", 0.5), ("p99", 0.99))
    }
    ticks = sum(len(r) for r in raws)
    behind = np.asarray(offered, dtype=np.int64) - np.asarray(due, dtype=np.int64)
    return LatencyRun(
        load=load,
        seconds=round(seconds, 3),
        offered=ticks,
        delivered=int(weights.sum()),
        p50_ms=round(weighted_quantile(lat_ms, weights, 0.50), 3),
        p99_ms=round(weighted_quantile(lat_ms, weights, 0.99), 3),
        max_ms=round(float(lat_ms.max()) if len(lat_ms) else float("nan"), 3),
        behind_ms=round(float(behind.max()) / 1e6 if len(behind) else 0.0, 3),
        achieved_ticks_per_s=round(ticks / seconds),
        rounds=status.rounds,
        hub_dropped=status.hub_dropped,
        subscriber_dropped=subscriber.dropped,
        buffer=buffer_name,
        breakdown=breakdown,
    )


# ------------------------------------------------------------------------------------------------ main
def _redis_buffers(url: str) -> tuple[BufferFactory, Callable[[], None]]:
    """A factory of Redis buffers (a key namespace per run) and a cleanup that empties the server after a run."""
    count = iter(range(1_000_000))

    def make() -> Buffer:
        client = aioredis.Redis.from_url(url)
        return RedisStreamBuffer(client, namespace=f"bench-stream-{next(count)}", owns_client=True)

    def flush() -> None:
        async def run() -> None:
            async with aioredis.Redis.from_url(url) as client:
                await client.flushdb()

        asyncio.run(run())

    return make, flush


def run_benchmark(quick: bool, rows_per_batch: int, config: StreamConfig) -> dict[str, Any]:
    """Measure everything; returns the figures (see the module docstring).

    Parameters
    ----------
    quick : bool
        The smaller run (under a minute).
    rows_per_batch : int
        Ticks per raw batch in the unpaced (throughput) runs.
    config : StreamConfig
        The pipeline's configuration (the defaults unless tuning).

    Returns
    -------
    dict
        ``embedded_ticks_per_s``, ``redis_ticks_per_s``, ``p50_ms_at_10k``, ``p99_ms_at_10k`` (embedded buffer),
        the baseline and ratios, every run's rate, CPU time per tick, the latency runs with their breakdown,
        the sizes, the start-up times, the machine and its load.
    """
    prints = 40_000 if quick else None
    repeats = 3 if quick else 5
    duration_s = 1.5 if quick else 10.0
    days = iter(range(1, 1_000))
    # the machine is shared: its load says how far the wall-clock figures can be trusted
    load_start = round(os.getloadavg()[0], 2)

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, namespace="bench-stream", log_to_driver=False)
    ray_init_s = time.perf_counter() - t0
    session = open_session(SEED_UNIVERSE)
    server, datadir = _redis_server()
    try:
        # the actor processes start while the market is read and the first raw batches are built
        market = load_market(prints, SEED_UNIVERSE)
        baseline_raws = market.batches(next(days), rows_per_batch)
        warm_session(session, market, config)
        # the baseline runs in this process while the actors are idle
        in_process_seconds(baseline_raws[:1], market)  # load the compiled kernels, warm the caches
        in_process_s = statistics.median(in_process_seconds(baseline_raws, market) for _ in range(1 if quick else 3))
        del baseline_raws

        url = f"redis://{server.host}:{server.port}/0"
        redis_version = str(server.version)
        make_redis, flush_redis = _redis_buffers(url)
        embedded = throughput(session, MemoryBuffer, market, days, repeats, rows_per_batch, config)
        redis_runs = throughput(session, make_redis, market, days, repeats, rows_per_batch, config, flush_redis)
        lat = [latency(session, MemoryBuffer, market, next(days), load, duration_s, config, "memory") for load in LOADS]
        if not quick:
            for load in LOADS:
                lat.append(latency(session, make_redis, market, next(days), load, duration_s, config, "redis"))
                flush_redis()
    finally:
        server.stop()
        shutil.rmtree(datadir, ignore_errors=True)
        session.close()
        ray.shutdown()

    def median_rate(runs: list[ThroughputRun]) -> int:
        return round(statistics.median(r.ticks_per_s for r in runs))

    def cpu_per_tick(runs: list[ThroughputRun]) -> dict[str, float]:
        return {
            "driver": round(statistics.median(r.driver_cpu_s / r.ticks * 1e6 for r in runs), 3),
            "actors": round(statistics.median(r.actors_cpu_s / r.ticks * 1e6 for r in runs), 3),
        }

    at_10k = next(r for r in lat if r.load == 10_000 and r.buffer == "memory")
    embedded_rate = median_rate(embedded)
    redis_rate = median_rate(redis_runs)
    in_process_rate = round(len(market) / in_process_s)
    return {
        "embedded_ticks_per_s": embedded_rate,
        "redis_ticks_per_s": redis_rate,
        "p50_ms_at_10k": at_10k.p50_ms,
        "p99_ms_at_10k": at_10k.p99_ms,
        "in_process_ticks_per_s": in_process_rate,
        "embedded_to_in_process": round(embedded_rate / in_process_rate, 3),
        "redis_to_embedded": round(redis_rate / embedded_rate, 3),
        "embedded_runs_ticks_per_s": [round(r.ticks_per_s) for r in embedded],
        "redis_runs_ticks_per_s": [round(r.ticks_per_s) for r in redis_runs],
        "embedded_rounds": [r.rounds for r in embedded],
        "redis_rounds": [r.rounds for r in redis_runs],
        "cpu_us_per_tick": {"embedded": cpu_per_tick(embedded), "redis": cpu_per_tick(redis_runs)},
        "in_process_us_per_tick": round(in_process_s / len(market) * 1e6, 3),
        "latency": [asdict(r) for r in lat],
        "targets": {
            "embedded_ticks_per_s": TARGET_EMBEDDED_TICKS_PER_S,
            "redis_ticks_per_s": TARGET_REDIS_TICKS_PER_S,
            "p99_ms_at_10k": TARGET_P99_MS_AT_10K,
        },
        "meets_targets": {
            "embedded": embedded_rate >= TARGET_EMBEDDED_TICKS_PER_S,
            "redis": redis_rate >= TARGET_REDIS_TICKS_PER_S,
            "p99_at_10k": at_10k.p99_ms <= TARGET_P99_MS_AT_10K,
        },
        "ticks_per_run": len(market),
        "symbols": len(market.symbols),
        "rows_per_batch": rows_per_batch,
        "repeats": repeats,
        "latency_seconds_per_load": duration_s,
        "latency_period_ms": PERIOD_S * 1e3,
        "startup_s": {"ray_init": round(ray_init_s, 1), "actors_warm": round(session.startup_s, 1)},
        "stream_config": asdict(config),
        "quick": quick,
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "redis_version": redis_version,
        "redis_persistence": "none (no AOF, no RDB)",
        "machine": machine(),
        "python": platform.python_version(),
        "ray": ray.__version__,
    }


def main() -> None:
    """Command line entry point: prints the figures, then them as one JSON object on the last line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller market, fewer repeats (under a minute)")
    parser.add_argument("--rows-per-batch", type=int, default=100_000, help="ticks per raw batch when unpaced")
    args = parser.parse_args()
    started = time.perf_counter()
    r = run_benchmark(args.quick, args.rows_per_batch, StreamConfig())
    print(f"machine: {r['machine']}; Python {r['python']}, Ray {r['ray']}, redis-server {r['redis_version']}")
    print(
        f"{r['ticks_per_run']:,} ticks per run ({r['symbols']} symbols, SPY 2013-10-08 replicated), raw batches of "
        f"{r['rows_per_batch']:,}; median of {r['repeats']} runs; start-up not timed: "
        f"Ray {r['startup_s']['ray_init']} s, actors {r['startup_s']['actors_warm']} s"
    )
    print(f"  in process, no Ray (one core)   {r['in_process_ticks_per_s']:>12,} ticks/s  (baseline)")
    print(
        f"  Ray, embedded buffer            {r['embedded_ticks_per_s']:>12,} ticks/s  "
        f"({r['embedded_to_in_process']}x baseline; target {TARGET_EMBEDDED_TICKS_PER_S:,})"
    )
    print(
        f"  Ray, Redis Streams              {r['redis_ticks_per_s']:>12,} ticks/s  "
        f"({r['redis_to_embedded']}x embedded; target {TARGET_REDIS_TICKS_PER_S:,})"
    )
    print(f"  latency, tick to hub subscriber (batch every {PERIOD_S * 1e3:g} ms, {r['latency_seconds_per_load']} s):")
    for lat in r["latency"]:
        print(
            f"    {lat['buffer']:<6} {lat['load']:>7,} ticks/s offered: p50 {lat['p50_ms']:>8.2f} ms, "
            f"p99 {lat['p99_ms']:>8.2f} ms, max {lat['max_ms']:>8.2f} ms; {lat['rounds']:,} rounds, "
            f"{lat['delivered']:,}/{lat['offered']:,} ticks seen, producer behind by {lat['behind_ms']:.1f} ms at most"
        )
    print(f"  target p99 at 10k ticks/s: {TARGET_P99_MS_AT_10K} ms")
    cpu = r["cpu_us_per_tick"]
    embedded_cpu = cpu["embedded"]["driver"] + cpu["embedded"]["actors"]
    print(
        f"  CPU per tick (us): embedded driver {cpu['embedded']['driver']} + actors {cpu['embedded']['actors']} "
        f"(at that cost 2 cores of our own carry {2e6 / embedded_cpu:,.0f} ticks/s), "
        f"Redis driver {cpu['redis']['driver']} + actors {cpu['redis']['actors']}; "
        f"in process {r['in_process_us_per_tick']}"
    )
    load = r["load_average_1min"]
    print(f"  load average (1 min) at start {load['start']}, at end {load['end']} (2 cpus: above 2, others share them)")
    print(f"  wall time {time.perf_counter() - started:.1f} s")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
