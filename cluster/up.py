"""``sentinel up``: bring the system up on Ray and stream the configured source into the store.

The driver reads the source and sends one call per micro-batch to the ingest actor, with a bounded number of
calls in flight (backpressure: a slow store slows the replay, nothing queues without limit). Progress is drawn
live on the terminal. Ctrl-C (SIGINT) or SIGTERM stops the source, waits for the calls in flight, closes the
open bars, closes the store and shuts Ray down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd
import ray
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cluster.buffers import open_buffer
from cluster.config import Settings
from cluster.sources import make_source
from cluster.stores import open_store
from ingest.buffer.base import Buffer, SequenceGap
from ingest.pipeline import BatchValidation
from ingest.sources.base import RawBatch, Source

#: Calls to the ingest actor allowed in flight before the driver waits.
MAX_IN_FLIGHT = 4
#: Buffer entries the consumer may lag behind before the driver waits.
MAX_BUFFER_LAG = 64
#: The buffer stream and consumer group of ``sentinel up``.
BUFFER_STREAM = "market"
BUFFER_GROUP = "ingest"


@dataclass
class UpReport:
    """What a run of ``sentinel up`` did."""

    source: str
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    finished: bool = False


def speed_text(speed: float | None) -> str:
    """A replay speed for people: ``86,400x (1 day per second)``, ``as fast as possible``."""
    if speed is None:
        return "as fast as possible"
    for unit, seconds in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if speed >= seconds:
            return f"{speed:,.0f}x ({speed / seconds:,.3g} {unit}{'s' if speed / seconds != 1 else ''} per second)"
    return f"{speed:,.3g}x"


def _progress(source: str, speed: str, stats: dict[str, Any], started: float, finished: bool) -> Table:
    elapsed = max(time.monotonic() - started, 1e-9)
    received = int(stats.get("received", 0))
    last = stats.get("last_ts") or {}
    market = pd.Timestamp(max(last.values()), unit="ns", tz="UTC").isoformat() if last else "-"
    t = Table(
        title=f"Market Sentinel - {source}" + (" (replay finished, Ctrl-C to stop)" if finished else ""),
        show_header=False,
        expand=False,
    )
    t.add_column(style="bold")
    t.add_column()
    t.add_row("speed", speed)
    t.add_row("market time", market)
    t.add_row("rows received", f"{received:,} ({received / elapsed:,.0f}/s)")
    acc = stats.get("accepted", {})
    t.add_row("accepted", ", ".join(f"{k} {v:,}" for k, v in sorted(acc.items())) or "-")
    q = stats.get("quarantined", {})
    t.add_row("quarantined", ", ".join(f"{k} {v:,}" for k, v in sorted(q.items())) or "0")
    t.add_row("suspicious trades", f"{int(stats.get('suspicious', 0)):,}")
    built = stats.get("bars_built", {})
    t.add_row("bars built", ", ".join(f"{k} {v:,}" for k, v in built.items()) or "-")
    t.add_row("symbols", ", ".join(sorted(last)) or "-")
    t.add_row("running", f"{elapsed:,.0f} s")
    return t


class _Reporter:
    """Live progress: a redrawn table on a terminal, a plain line every few seconds in a log."""

    def __init__(self, console: Console, source: Source, every_s: float = 2.0) -> None:
        self.console, self.source, self.every_s = console, source.name, every_s
        self.speed = speed_text(getattr(source, "speed", None))
        self.started = time.monotonic()
        self._last_line = 0.0
        self._live: Live | None = None

    def __enter__(self) -> _Reporter:
        if self.console.is_terminal:
            self._live = Live(
                _progress(self.source, self.speed, {}, self.started, False), console=self.console, refresh_per_second=4
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, stats: dict[str, Any], finished: bool = False) -> None:
        if self._live is not None:
            self._live.update(_progress(self.source, self.speed, stats, self.started, finished))
            return
        now = time.monotonic()
        if finished or now - self._last_line >= self.every_s:
            self._last_line = now
            last = stats.get("last_ts") or {}
            market = pd.Timestamp(max(last.values()), unit="ns", tz="UTC").isoformat() if last else "-"
            self.console.print(
                f"market time {market} | received {int(stats.get('received', 0)):,} | "
                f"accepted {sum(stats.get('accepted', {}).values()):,} | "
                f"quarantined {sum(stats.get('quarantined', {}).values()):,} | "
                f"bars built {sum(stats.get('bars_built', {}).values()):,}" + (" | replay finished" if finished else "")
            )


async def _ray_get(refs: Any) -> Any:
    """``ray.get`` off the event loop (Ray's typing of results is loose; callers know what they asked for)."""
    return await asyncio.to_thread(ray.get, refs)


class _DirectFeed:
    """The embedded path: one actor call per raw micro-batch, a bounded number in flight."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.in_flight: list[Any] = []
        self.stats: dict[str, Any] = {}
        self.seq = 0

    async def start(self) -> None:
        return None

    async def send(self, batch: RawBatch) -> bool:
        """Send a batch; True when newer statistics arrived."""
        self.in_flight.append(self.actor.process.remote(self.seq, batch))
        self.seq += 1
        # collect what has finished; block only when too many calls are in flight (backpressure)
        done, self.in_flight = ray.wait(self.in_flight, num_returns=len(self.in_flight), timeout=0)
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            more, self.in_flight = await asyncio.to_thread(ray.wait, self.in_flight, num_returns=1)
            done += more
        if done:
            self.stats = await _ray_get(done[-1])
        return bool(done)

    async def drain(self) -> None:
        if self.in_flight:
            self.stats = (await _ray_get(self.in_flight))[-1]
            self.in_flight = []

    async def close(self) -> None:
        return None


class _BufferedFeed:
    """The production path: validate here, append to the buffer, the actor consumes and acknowledges.

    Rejected rows go to the actor directly (they are stored, not processed); a sequence gap in the buffer
    becomes an alert of kind ``data_gap``.
    """

    def __init__(self, actor: Any, settings: Settings, source: Source) -> None:
        self.actor = actor
        self.settings = settings
        self.source = source.name
        self.validation = BatchValidation(settings.validation(), source=source.name)
        self.buffer: Buffer = open_buffer(settings, on_gap=self._on_gap)
        self.appended = 0
        self.done = 0
        self.seq = 0
        self.side_calls: list[Any] = []
        self.stats: dict[str, Any] = {}

    def _on_gap(self, gap: SequenceGap) -> None:
        alert = pd.DataFrame(
            {
                "ts": [time.time_ns()],
                "symbol": [gap.stream],
                "kind": ["data_gap"],
                "detector": ["buffer_sequence"],
                "score": [float(gap.got - gap.expected)],
                "severity": ["warning"],
                "details": [json.dumps({"source": gap.source, "expected": gap.expected, "got": gap.got})],
            }
        )
        self.side_calls.append(self.actor.store_alerts.remote(alert))

    async def start(self) -> None:
        consumer = f"ingest-{os.getpid()}"
        await asyncio.to_thread(
            ray.get,
            self.actor.start_consumer.remote(
                partial(open_buffer, self.settings), BUFFER_STREAM, BUFFER_GROUP, consumer
            ),
        )

    async def send(self, batch: RawBatch) -> bool:
        v = self.validation.validate(batch)
        if len(v.rejected):
            self.side_calls.append(self.actor.store_rejected.remote(v.rejected))
        for part in (v.ticks, v.quotes, v.bars):
            if part is not None and len(part):
                await self.buffer.append(BUFFER_STREAM, part, source=self.source, seq=self.seq)
                self.seq += 1
                self.appended += 1
        # backpressure: the buffer is durable, but a consumer far behind means growing memory in Redis
        while self.appended - self.done > MAX_BUFFER_LAG:
            await asyncio.sleep(0.05)
            await self._refresh()
        await self._refresh()
        return True

    async def _refresh(self) -> None:
        self.done = await _ray_get(self.actor.entries_done.remote())
        stored = await _ray_get(self.actor.stats.remote())
        own = self.validation.stats.as_dict()
        self.stats = {**stored, **{k: own[k] for k in ("batches", "received", "accepted", "quarantined", "suspicious")}}

    async def drain(self) -> None:
        """Wait until the consumer has stored everything appended (and the side calls are done)."""
        while self.done < self.appended:
            await asyncio.sleep(0.05)
            await self._refresh()
        await _ray_get(self.side_calls)
        self.side_calls = []
        await self._refresh()

    async def close(self) -> None:
        await self.buffer.close()


async def _stream(
    source: Source,
    feed: _DirectFeed | _BufferedFeed,
    actor: Any,
    stop: asyncio.Event,
    console: Console,
    report: UpReport,
    exit_when_done: bool,
) -> None:
    async def consume(progress: _Reporter) -> None:
        async for batch in source.batches():
            if await feed.send(batch):
                progress.update(feed.stats)
        report.finished = True

    await feed.start()
    with _Reporter(console, source) as progress:
        feeding = asyncio.create_task(consume(progress))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({feeding, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not feeding.done():
            feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        failure = None if feeding.cancelled() else feeding.exception()
        if failure is not None:
            stopping.cancel()
            await feed.close()
            raise failure
        await feed.drain()
        stats = await _ray_get(actor.flush.remote())
        if isinstance(feed, _BufferedFeed):
            stats = {**stats, **{k: v for k, v in feed.stats.items() if k not in ("stored", "bars_built", "last_ts")}}
        progress.update(stats, finished=report.finished)
        await feed.close()
        if report.finished and not exit_when_done:
            await stopping
        stopping.cancel()
    report.stats = stats


def run_up(
    settings: Settings, speed: float | None = None, console: Console | None = None, exit_when_done: bool = False
) -> UpReport:
    """Start Ray, stream the source into the store until it ends (or forever) or a stop signal arrives."""
    console = console or Console()
    source = make_source(settings, speed)
    report = UpReport(source=source.name, seconds=0.0)
    started = time.monotonic()
    where = settings.store_path if settings.store == "duckdb" else "PostgreSQL"
    console.print(f"[bold]Market Sentinel[/] starting Ray; store {where}, buffer {settings.buffer}")
    ray.init(
        address=settings.ray_address,
        namespace="sentinel",
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        from actors.ingest import start_ingest_actor

        # the actor opens the store itself: the factory travels, the connection does not
        store_settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
        # method calls on a handle are typed loosely by Ray; the results are checked where used
        actor: Any = start_ingest_actor(
            partial(open_store, store_settings), settings.validation(), settings.bar_intervals_ns, source.name
        )

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            feed = _BufferedFeed(actor, settings, source) if settings.buffer == "redis" else _DirectFeed(actor)
            await _stream(source, feed, actor, stop, console, report, exit_when_done)

        asyncio.run(main())
        counts: dict[str, int] = ray.get(actor.close.remote())
        report.counts = counts
    finally:
        ray.shutdown()
    report.seconds = time.monotonic() - started
    return report
