"""``sentinel up``: bring the system up on Ray and stream the configured source through it.

The flow is :mod:`actors.stream`'s: the driver validates the source's batches and appends them to the buffer
(in-process, or Redis Streams with ``--buffer redis``); the router sends each round to the per-symbol
AssetActors (bars, features, alerts); results fan out through the hub; the writer stores trades, quotes, bars,
alerts and quarantined rows, and the buffer is acknowledged once they are stored. Progress is drawn live on the
terminal and written to ``<data_dir>/status.json`` (what ``sentinel status`` shows). Ctrl-C (SIGINT) or SIGTERM
stops the source, closes the open bars, stores everything in flight, closes the store and shuts Ray down.

Each run checkpoints its actors under a run id of its own (``<data_dir>/checkpoints/<run>``, or Redis keys with
``--buffer redis``), so a new run never restores an old run's state; a run that ends cleanly deletes its
checkpoints.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from rich.console import Console
from rich.live import Live
from rich.table import Table

from actors.asset import NAMESPACE, get_or_create_asset_actor
from actors.hub import get_or_create_hub
from actors.router import Router
from actors.stream import StreamConfig, StreamPipeline, StreamStatus
from actors.writer import WriteBatch, get_or_create_writer
from cluster.buffers import open_buffer
from cluster.config import Settings
from cluster.sources import LIVE_SOURCE_NAMES, make_source
from cluster.stores import open_store
from ingest.asset import CheckpointStore, FileCheckpointStore
from ingest.buffer.base import SequenceGap
from ingest.buffer.redis_checkpoints import RedisCheckpointStore
from ingest.pipeline import BatchValidation
from ingest.sources.base import Source

#: The buffer stream and the router's consumer group of ``sentinel up``.
BUFFER_STREAM = "market"
BUFFER_GROUP = "router"
#: Seconds without records after which a live feed's symbol has its bars closed on the wall clock.
LIVE_IDLE_CLOSE_S = 2.0
#: Share of the cluster's CPUs the per-symbol actors are given in all (Ray's accounting, for placement).
ASSET_CPU_SHARE = 0.5
#: Symbols shown on the live table (the busiest first).
SHOWN_ASSETS = 12


@dataclass
class UpReport:
    """What a run of ``sentinel up`` did: the pipeline's last status and the store's table counts."""

    source: str
    seconds: float
    status: dict[str, Any] = field(default_factory=dict)
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


def _market_time(status: StreamStatus) -> str:
    last = [a.last_ts for a in status.assets.values() if a.last_ts is not None]
    return pd.Timestamp(max(last), unit="ns", tz="UTC").isoformat() if last else "-"


def _bars(status: StreamStatus) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in status.assets.values():
        for label, n in a.bars.items():
            out[label] = out.get(label, 0) + n
    return out


def _progress(source: str, speed: str, status: StreamStatus, replay_done: bool) -> Table:
    elapsed = max(status.elapsed_s, 1e-9)
    outer = Table.grid(padding=(0, 2))
    t = Table(
        title=f"Market Sentinel - {source}" + (" (replay finished, Ctrl-C to stop)" if replay_done else ""),
        show_header=False,
        expand=False,
    )
    t.add_column(style="bold")
    t.add_column()
    t.add_row("speed", speed)
    t.add_row("market time", _market_time(status))
    t.add_row("rows received", f"{status.received:,} ({status.received / elapsed:,.0f}/s)")
    t.add_row("accepted", ", ".join(f"{k} {v:,}" for k, v in sorted(status.accepted.items()) if v) or "-")
    t.add_row("quarantined", ", ".join(f"{k} {v:,}" for k, v in sorted(status.quarantined.items())) or "0")
    t.add_row("bars", ", ".join(f"{k} {v:,}" for k, v in _bars(status).items()) or "-")
    t.add_row("alerts", f"{sum(a.alerts for a in status.assets.values()):,}")
    t.add_row("stored", ", ".join(f"{k} {v:,}" for k, v in status.stored.items() if v) or "-")
    t.add_row("buffer", f"{status.entries_appended - status.entries_acked:,} entries not yet stored")
    t.add_row("actor restarts", f"{status.recoveries:,}")
    t.add_row("running", f"{elapsed:,.0f} s")
    a = Table(title="assets", expand=False)
    for col in ("symbol", "records", "bars", "alerts", "last", "lag ms", "restarts"):
        a.add_column(col, justify="left" if col == "symbol" else "right")
    busiest = sorted(status.assets.values(), key=lambda x: -x.records)[:SHOWN_ASSETS]
    for asset in busiest:
        last = (
            "-"
            if asset.last_ts is None
            else pd.Timestamp(asset.last_ts, unit="ns", tz="UTC").strftime("%m-%d %H:%M:%S")
        )
        a.add_row(
            asset.symbol,
            f"{asset.records:,}",
            f"{sum(asset.bars.values()):,}",
            f"{asset.alerts:,}",
            last,
            f"{asset.lag_ms:,.1f}",
            f"{asset.restarts}",
        )
    outer.add_row(t, a)
    return outer


class _Reporter:
    """Live progress: a redrawn table on a terminal, a plain line every few seconds in a log; the status file."""

    def __init__(self, console: Console, source: Source, status_path: Path, hub: Any, every_s: float = 2.0) -> None:
        self.console, self.source, self.every_s = console, source.name, every_s
        self.speed = speed_text(getattr(source, "speed", None))
        self.status_path = status_path
        self.hub = hub
        self._last_line = 0.0
        self._live: Live | None = None
        self.last: StreamStatus | None = None

    def __enter__(self) -> _Reporter:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def __call__(self, status: StreamStatus, replay_done: bool = False) -> None:
        self.last = status
        doc = {"updated_ns": time.time_ns(), "pid": os.getpid(), **status.as_dict()}
        write_status(self.status_path, doc)
        # the API reads the latest status from the hub; a lost update is replaced by the next one
        self.hub.set_latest.remote("status", doc)
        if self._live is not None:
            self._live.update(_progress(self.source, self.speed, status, replay_done))
            return
        now = time.monotonic()
        if replay_done or status.finished or now - self._last_line >= self.every_s:
            self._last_line = now
            self.console.print(
                f"market time {_market_time(status)} | received {status.received:,} | "
                f"accepted {sum(status.accepted.values()):,} | "
                f"quarantined {sum(status.quarantined.values()):,} | "
                f"bars {sum(_bars(status).values()):,} | alerts {sum(a.alerts for a in status.assets.values()):,}"
                + (" | replay finished" if replay_done else "")
            )


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Replace the status file atomically (write, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def status_path(settings: Settings) -> Path:
    """Where ``sentinel up`` writes its live status."""
    return settings.data_dir / "status.json"


def _run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"


def _checkpoints(settings: Settings, run_id: str) -> tuple[CheckpointStore, Path | None]:
    """The run's checkpoint store, and its directory when it is one (deleted at a clean end)."""
    if settings.buffer == "redis" and settings.redis_url is not None:
        return RedisCheckpointStore(settings.redis_url.get_secret_value(), f"sentinel:checkpoints:{run_id}"), None
    directory = settings.data_dir.resolve() / "checkpoints" / run_id
    return FileCheckpointStore(directory), directory


def _gap_alert(gap: SequenceGap) -> pd.DataFrame:
    return pd.DataFrame(
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


def _serve_api(settings: Settings, console: Console) -> None:
    """Serve the API on Ray Serve; on a fresh install, create a key and print it once with the docs link."""
    from serve_apps.deployment import deploy_api
    from serve_apps.keys import KeyStore

    keys = KeyStore.default(settings.data_dir.resolve())
    fresh = None
    if not any(record.active for record in keys.list()):
        _, fresh = keys.create("local")
    url = deploy_api(keys.path, NAMESPACE, settings.api_host, settings.api_port)
    console.print(f"API {url}/api/v1 (OpenAPI {url}/docs); keys: sentinel keys list")
    if fresh is not None:
        console.print(f"a new API key, shown once: {fresh}")
        console.print(f"  curl -H 'Authorization: Bearer {fresh}' {url}/api/v1/alerts")


def run_up(
    settings: Settings, speed: float | None = None, console: Console | None = None, exit_when_done: bool = False
) -> UpReport:
    """Start Ray, stream the source through the actors into the store until it ends (or forever) or a stop signal."""
    console = console or Console()
    source = make_source(settings, speed)
    report = UpReport(source=source.name, seconds=0.0)
    started = time.monotonic()
    where = settings.store_path if settings.store == "duckdb" else "PostgreSQL"
    console.print(f"[bold]Market Sentinel[/] starting Ray; store {where}, buffer {settings.buffer}")
    ray.init(
        address=settings.ray_address,
        namespace=NAMESPACE,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    run_id = _run_id()
    checkpoints, checkpoint_dir = _checkpoints(settings, run_id)
    clean = False
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
        per_asset = min(0.05, ASSET_CPU_SHARE * cpus / max(1, len(settings.universe)))
        validation = settings.validation()
        actor_for = partial(
            get_or_create_asset_actor,
            checkpoints=checkpoints,
            intervals_ns=settings.bar_intervals_ns,
            lateness_ns=validation.out_of_order_tolerance_ns,
            num_cpus=per_asset,
            spread=len(ray.nodes()) > 1,  # type: ignore[no-untyped-call]
            detection=settings.walk_forward(),
            detect_interval_ns=settings.detect_interval_ns,
        )
        # the writer opens the store itself: the factory travels, the connection does not
        store_settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
        writer: Any = get_or_create_writer(partial(open_store, store_settings))
        hub: Any = get_or_create_hub()
        if settings.api:
            _serve_api(settings, console)
        live = source.name in LIVE_SOURCE_NAMES
        config = StreamConfig(
            stream=BUFFER_STREAM,
            group=BUFFER_GROUP,
            consumer=f"router-{os.getpid()}",
            idle_close_s=LIVE_IDLE_CLOSE_S if live else None,
            lateness_ns=validation.out_of_order_tolerance_ns,
            status_every_s=0.5,
        )
        gap_writes: list[Any] = []

        def on_gap(gap: SequenceGap) -> None:
            gap_writes.append(writer.write.remote(WriteBatch(alerts=[_gap_alert(gap)])))

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            with _Reporter(console, source, status_path(settings), hub) as reporter:
                pipeline = StreamPipeline(
                    open_buffer(settings, on_gap=on_gap),
                    Router(actor_for, keep_outputs=False),
                    BatchValidation(validation, source=source.name),
                    writer=writer,
                    hub=hub,
                    config=config,
                    source=source.name,
                    on_status=reporter,
                )
                try:
                    status = await pipeline.run(source, stop)
                finally:
                    await pipeline.buffer.close()
                report.finished = not stop.is_set()
                reporter(status, replay_done=report.finished)
                report.status = status.as_dict()
                if report.finished and not exit_when_done:
                    await stop.wait()

        asyncio.run(main())
        ray.get(gap_writes)
        report.counts = ray.get(writer.close.remote())
        clean = True
    finally:
        ray.shutdown()
        if clean:
            if checkpoint_dir is not None:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
            elif isinstance(checkpoints, RedisCheckpointStore):
                checkpoints.delete_all()
    report.seconds = time.monotonic() - started
    return report
