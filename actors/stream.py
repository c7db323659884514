"""The stream pipeline: source -> validation -> buffer -> router -> AssetActors -> hub, with the writer behind.

:class:`StreamPipeline` runs in the driver on one asyncio loop:

- **produce** (:meth:`StreamPipeline.offer`): each raw batch is validated (vectorised); rejected rows go to the
  writer's quarantine; the accepted trades, quotes and bars are appended to the buffer (the embedded
  :class:`~ingest.buffer.memory.MemoryBuffer` or Redis Streams) as entries of one stream;
- **consume**: the router's consumer reads entries as a member of a consumer group (after claiming what an
  earlier consumer left pending), decodes them, and sends one *round*: the entries read together, one actor call
  per symbol they carry. Rounds in flight are bounded (``max_rounds_in_flight``): while the actors are busy,
  entries pile up in the buffer and the next round takes them all (up to ``max_round_rows``), so batches grow
  with the load and shrink again when it falls - large batches for throughput, small ones for latency;
- **collect**: a thread waits for actor replies (:meth:`~actors.router.Router.collect`); the bars, latest
  features, alerts and last price of the replies collected together go to the hub in one call, and while a hub
  call is outstanding (``hub_max_in_flight``) new updates wait, merged, for the next one - the hub is never
  waited for, and only when far behind (``hub_max_pending``) are updates dropped and counted; a round whose
  every call is answered goes to the write queue;
- **write**: the rows of several finished rounds (trades, quotes, the bars they closed, alerts) go to the writer
  actor as one call; only when it has stored them are the rounds' buffer entries acknowledged. Without a writer
  (a benchmark, a dashboard-only run) a finished round is acknowledged at once. Every ``trim_every_s`` the
  buffer's stream is trimmed to what every consumer group has acknowledged.

Exactness: the per-symbol order of records is the buffer's order, and a round takes whole raw batches (a raw
batch's trades and quotes are separate entries, but bars close over both, so they are processed in one call).
An actor's output does not depend on how whole raw batches are grouped into calls, so the bars, features and
alerts equal the batch path's on the same input. An actor that dies is restored from its checkpoint and re-fed
by the router (see :mod:`actors.router`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray

from actors.asset import AssetReply
from actors.router import Router
from actors.writer import WriteBatch
from ingest.asset import AssetOutput
from ingest.buffer.base import Batch, Buffer, Entry, Outgoing
from ingest.pipeline import BatchValidation, interval_label
from ingest.records import BarBatch, QuoteBatch, TickBatch
from ingest.sources.base import RawBatch, Source
from ingest.validation import QuarantineBatch

_NO_TS = -1


@dataclass(frozen=True)
class StreamConfig:
    """How the stream pipeline batches, bounds and reports.

    Parameters
    ----------
    stream, group, consumer : str
        The buffer stream, the router's consumer group and its consumer name.
    read_count : int
        Entries read at most per buffer read.
    max_round_rows : int
        Rows at which a round stops taking more entries.
    max_wait_ms : float
        How long a round waits for more entries once it has some (0: send what is there at once).
    max_rounds_in_flight : int
        Rounds sent and not fully answered before the consumer waits (backpressure). One by default: each call
        costs a fixed share of CPU (Ray's part alone measured 1-2 ms, driver and actor together, on a 2-core
        machine), so fewer, larger rounds give both more ticks per second and lower latency there; more rounds
        in flight pay off only where cores are to spare.
    max_lag_entries : int
        Entries appended and not yet acknowledged before the producer waits (backpressure).
    write_rows, write_every_s : int, float
        A write call is sent once finished rounds hold this many rows, or this long after the oldest.
    max_writes_in_flight : int
        Write calls outstanding before finished rounds wait.
    hub_max_in_flight : int
        Hub calls outstanding at most. Updates collected while that many are outstanding wait, merged, for the
        next call (one call carries them all, in order), so the number of hub calls adapts to the hub's pace.
    hub_max_pending : int
        Items (price updates, bars, feature rows, alerts) waiting for the hub beyond which they are dropped and
        counted instead (the hub is far behind): publishing never waits for the hub.
    publish_features : bool
        Publish each reply's last feature row per bar length to the hub (topic ``features``).
    trim_every_s : float
        Seconds between trims of the buffer's stream to what every group has acknowledged (0: never); without
        them a long-running stream keeps every entry it ever appended.
    idle_close_s : float, optional
        For live feeds: a symbol with no records for this many seconds has its bars closed up to now minus the
        lateness (a wall-clock timer); ``None`` for replays, whose bars close on market time.
    lateness_ns : int
        The validator's out-of-order tolerance, used by the idle timer.
    status_every_s : float
        Seconds between status reports to ``on_status``.
    """

    stream: str = "market"
    group: str = "router"
    consumer: str = "router-1"
    read_count: int = 64
    max_round_rows: int = 500_000
    max_wait_ms: float = 0.0
    max_rounds_in_flight: int = 1
    max_lag_entries: int = 256
    write_rows: int = 200_000
    write_every_s: float = 0.5
    max_writes_in_flight: int = 2
    hub_max_in_flight: int = 1
    hub_max_pending: int = 100_000
    publish_features: bool = True
    trim_every_s: float = 1.0
    idle_close_s: float | None = None
    lateness_ns: int = 1_000_000_000
    status_every_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("read_count", "max_round_rows", "max_rounds_in_flight", "max_lag_entries", "write_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        for name in ("max_writes_in_flight", "hub_max_in_flight", "hub_max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        for name in ("max_wait_ms", "write_every_s", "status_every_s", "trim_every_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}={value!r}: must be a finite number >= 0")
        if self.idle_close_s is not None and not self.idle_close_s > 0:
            raise ValueError(f"idle_close_s={self.idle_close_s!r}: must be > 0 (or None)")


@dataclass
class AssetStatus:
    """One symbol's progress through the pipeline.

    ``lag_ms`` is the time from the driver receiving the oldest record of the symbol's last answered batch to
    that batch's reply (processing lag); ``restarts`` counts recoveries of its actor.
    """

    symbol: str
    records: int = 0
    bars: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    last_ts: int | None = None
    last_price: float | None = None
    lag_ms: float = 0.0
    restarts: int = 0
    in_flight: int = 0


@dataclass
class StreamStatus:
    """The pipeline's progress: totals, and one :class:`AssetStatus` per symbol."""

    source: str
    started_ns: int
    elapsed_s: float
    received: int
    accepted: dict[str, int]
    quarantined: dict[str, int]
    entries_appended: int
    entries_acked: int
    rounds: int
    stored: dict[str, int]
    hub_dropped: int
    recoveries: int
    finished: bool
    assets: dict[str, AssetStatus]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


@dataclass
class _Round:
    """Entries routed together, and what their calls answered."""

    entries: list[Entry]
    received_ns: int
    ticks: TickBatch | None = None
    quotes: QuoteBatch | None = None
    waiting: set[tuple[str, int]] = field(default_factory=set)
    outputs: list[AssetOutput] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return (
            (0 if self.ticks is None else len(self.ticks))
            + (0 if self.quotes is None else len(self.quotes))
            + sum(o.bar_count + o.alert_count for o in self.outputs)
        )


def _concat(parts: list[Batch], kind: type[Any]) -> Any:
    found = [p for p in parts if isinstance(p, kind) and len(p)]
    if not found:
        return None
    return found[0] if len(found) == 1 else kind.concat(found)


class StreamPipeline:
    """Validated records through the buffer to the per-symbol actors, the hub and the writer.

    Parameters
    ----------
    buffer : Buffer
        Where validated batches wait (its entries are acknowledged once stored).
    router : Router
        Sends rounds to the actors; built with ``keep_outputs=False`` for a long-running stream. The pipeline
        installs itself as the router's ``on_reply``.
    validation : BatchValidation
        Validates raw batches in :meth:`offer` (its statistics are the status's received/accepted/quarantined).
    writer : actor handle, optional
        A :class:`~actors.writer.WriterActor`; ``None`` acknowledges rounds without storing them.
    hub : actor handle, optional
        A :class:`~actors.hub.Hub`; ``None`` publishes nothing.
    config : StreamConfig
        Batching, bounds and reporting.
    source : str
        The source's name (buffer entries are tagged with it).
    on_status : callable, optional
        Called with a :class:`StreamStatus` every ``status_every_s`` seconds and when the stream ends.
    """

    def __init__(
        self,
        buffer: Buffer,
        router: Router,
        validation: BatchValidation,
        writer: Any = None,
        hub: Any = None,
        config: StreamConfig | None = None,
        source: str = "stream",
        on_status: Callable[[StreamStatus], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.router = router
        self.validation = validation
        self.writer = writer
        self.hub = hub
        self.config = config or StreamConfig()
        self.source = source
        self._on_status = on_status
        router.on_reply = self._on_reply  # replies arrive on the collector thread
        self._replies: collections.deque[AssetReply] = collections.deque()
        self._seq = 0
        self._received: dict[str, int] = {}
        # the last entry id of each entry's raw batch: a round never splits one (trades and quotes of a batch
        # close bars together)
        self._group_last: dict[str, str] = {}
        # sequence numbers of the entries being appended (their ids are not known yet)
        self._appending: set[int] = set()
        self._rounds: dict[tuple[str, int], _Round] = {}
        self._open_rounds = 0
        self._finished_rounds: list[_Round] = []
        self._finished_since = 0.0
        self._quarantine: list[QuarantineBatch] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._hub_refs: list[Any] = []
        # updates waiting for an outstanding hub call to finish, by topic, and how many items they hold
        self._hub_pending: dict[str, list[Any]] = {}
        self._hub_pending_items = 0
        self._hub_waiter: asyncio.Task[None] | None = None
        self._assets: dict[str, AssetStatus] = {}
        self._last_seen: dict[str, float] = {}
        self._closed_until: dict[str, int] = {}
        self._stored = dict.fromkeys(("ticks", "quotes", "bars", "alerts", "quarantine"), 0)
        self._appended = 0
        self._acked = 0
        self._trimmed_at = time.monotonic()
        self._ack_lock = asyncio.Lock()
        self._routed_entries = 0
        self._round_count = 0
        self._hub_dropped = 0
        self._started_ns = time.time_ns()
        self._started = time.monotonic()
        self._progress = asyncio.Event()
        self._producing = True
        self._stopping = False
        self._finished = False
        self._failure: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the consumer group and start the consumer, the reply collector and the status timer."""
        cfg = self.config
        await self.buffer.ensure_group(cfg.stream, cfg.group)
        loop = asyncio.get_running_loop()
        for coro in (self._consume(), self._collect(), self._report()):
            task = loop.create_task(coro)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    async def run(self, source: Source, stop: asyncio.Event | None = None) -> StreamStatus:
        """Start, feed every batch of ``source`` (until it ends or ``stop`` is set), finish; returns the status."""
        await self.start()
        try:
            feeding = asyncio.ensure_future(self._feed(source))
            waits: set[asyncio.Future[Any]] = {feeding}
            stopping = None if stop is None else asyncio.ensure_future(stop.wait())
            if stopping is not None:
                waits.add(stopping)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not feeding.done():
                feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
            if stopping is not None:
                stopping.cancel()
            failure = None if feeding.cancelled() else feeding.exception()
            if failure is not None:
                raise failure
            return await self.finish()
        finally:
            await self.stop()

    async def offer(self, raw: RawBatch) -> int:
        """Validate one raw batch and append its accepted rows to the buffer; returns the rows accepted.

        Waits while more than ``max_lag_entries`` entries are appended and not yet acknowledged.
        """
        self._raise_failure()
        received = time.time_ns()
        v = self.validation.validate(raw)
        if len(v.rejected):
            self._queue_write()
            self._quarantine.append(v.rejected)
        items = [
            Outgoing(self.config.stream, part, self.source, self._next_seq())
            for part in (v.ticks, v.quotes, v.bars)
            if part is not None and len(part)
        ]
        if items:
            # until the append returns, the entries' ids (and so their raw batch's last one) are unknown: a
            # consumer reading them meanwhile (Redis) must not end a round on one of them
            self._appending.update(i.seq for i in items)
            try:
                appended = await self.buffer.append_many(items)
            finally:
                self._appending.difference_update(i.seq for i in items)
            last = appended[-1].id
            for a in appended:
                self._received[a.id] = received
                self._group_last[a.id] = last
            self._appended += len(items)
            self._progress.set()
        # an in-process buffer appends without suspending: give the consumer its turn, so that routing (and the
        # actors) overlap with validating the next batch instead of waiting for the producer to stop
        await asyncio.sleep(0)
        while self._appended - self._acked > self.config.max_lag_entries:
            await self._wait_progress()
        return sum(len(i.batch) for i in items)

    async def finish(self) -> StreamStatus:
        """End of input: route what is buffered, close every open bar, store and acknowledge everything."""
        self._producing = False
        self._progress.set()
        while self._routed_entries < self._appended or self._rounds_open():
            await self._wait_progress()
        seqs = self.router.flush(wait=False)
        if seqs:
            self._open_round([], time.time_ns(), None, None, seqs)
        while self._rounds_open():
            await self._wait_progress()
        await self._write_finished(force=True)
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        self._raise_failure()
        await self._flush_hub(wait=True)
        self._finished = True
        status = self.status()
        if self._on_status is not None:
            self._on_status(status)
        return status

    async def stop(self) -> None:
        """Stop the background tasks (after :meth:`finish`, or to abandon the stream)."""
        self._producing = False
        self._stopping = True
        if self._hub_waiter is not None:
            self._hub_waiter.cancel()
            self._hub_waiter = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def status(self) -> StreamStatus:
        """The progress so far (a snapshot)."""
        st = self.validation.stats
        for sym, a in self._assets.items():
            a.restarts = self.router.recoveries(sym)
            a.in_flight = self.router.lane_in_flight(sym)
        return StreamStatus(
            source=self.source,
            started_ns=self._started_ns,
            elapsed_s=time.monotonic() - self._started,
            received=st.received,
            accepted=dict(st.accepted),
            quarantined=dict(st.quarantined),
            entries_appended=self._appended,
            entries_acked=self._acked,
            rounds=self._round_count,
            stored=dict(self._stored),
            hub_dropped=self._hub_dropped,
            recoveries=self.router.stats.recoveries,
            finished=self._finished,
            assets={k: AssetStatus(**asdict(v)) for k, v in self._assets.items()},
        )

    # ------------------------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    async def _feed(self, source: Source) -> None:
        async for raw in source.batches():
            await self.offer(raw)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._progress.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"stream pipeline failed: {self._failure!r}") from self._failure

    async def _wait_progress(self) -> None:
        self._raise_failure()
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), 0.05)
        self._raise_failure()

    def _rounds_open(self) -> bool:
        return self._open_rounds > 0

    def _notify(self) -> None:
        self._progress.set()

    # ---- consume ---------------------------------------------------------------------------------------------
    async def _consume(self) -> None:
        cfg = self.config
        claimed = (await self.buffer.claim(cfg.stream, cfg.group, cfg.consumer, min_idle_ms=0)).entries
        # entries read and decoded, not routed yet (a round stops at ``max_round_rows``: the rest waits here)
        waiting = [(e, e.decode()) for e in claimed]
        # the loops check the flag: asyncio.wait_for (in _wait_progress) may swallow a cancellation that arrives
        # just as the event it waits for is set, and stop() would then wait for this task forever
        while True:
            while self._open_rounds >= cfg.max_rounds_in_flight and not self._stopping:
                await self._wait_progress()
            if self._stopping:
                return
            if _rows(waiting) < cfg.max_round_rows:
                # what is there now; wait (up to 50 ms) only when nothing is
                waiting += await self._read(cfg.read_count, None if waiting else 50)
                if waiting and cfg.max_wait_ms > 0:
                    deadline = time.monotonic() + cfg.max_wait_ms / 1000
                    while (left := deadline - time.monotonic()) > 0 and _rows(waiting) < cfg.max_round_rows:
                        more = await self._read(cfg.read_count, max(1, int(left * 1000)))
                        if not more:
                            break
                        waiting += more
            cut = 0 if self._stopping else self._round_cut(waiting)
            if cut:
                self._route(waiting[:cut])
                waiting = waiting[cut:]
                # let the producer and the reply collector run between rounds
                await asyncio.sleep(0)
            elif waiting:
                # every entry waiting belongs to a raw batch whose append has not returned yet
                await self._wait_progress()
            self._idle_timers()

    async def _read(self, count: int, block_ms: int | None) -> list[tuple[Entry, Batch]]:
        cfg = self.config
        entries = await self.buffer.read(cfg.group, cfg.consumer, [cfg.stream], count=count, block_ms=block_ms)
        return [(e, e.decode()) for e in entries]

    def _ends_group(self, entry: Entry) -> bool:
        if entry.source == self.source and entry.seq in self._appending:
            return False  # its raw batch is still being appended: its last entry is not known yet
        return self._group_last.get(entry.id, entry.id) == entry.id

    def _round_cut(self, waiting: list[tuple[Entry, Batch]]) -> int:
        """How many of the waiting entries make the next round: whole raw batches, up to ``max_round_rows``.

        The rest of a raw batch is appended with its first entry, but with Redis a read may see the first
        before the append has returned: such a batch waits for the next round.
        """
        rows = 0
        cut = 0
        for k, (entry, batch) in enumerate(waiting):
            rows += len(batch)
            if self._ends_group(entry):
                cut = k + 1
                if rows >= self.config.max_round_rows:
                    break
        return cut

    def _route(self, decoded: list[tuple[Entry, Batch]]) -> None:
        entries = [e for e, _ in decoded]
        parts = [b for _, b in decoded]
        received = min(self._received.pop(e.id, 0) or _entry_ns(e.id) for e in entries)
        for e in entries:
            self._group_last.pop(e.id, None)
        ticks: TickBatch | None = _concat(parts, TickBatch)
        quotes: QuoteBatch | None = _concat(parts, QuoteBatch)
        bars: BarBatch | None = _concat(parts, BarBatch)
        seqs = self.router.submit(ticks, quotes, bars, block=False)
        now = time.monotonic()
        for sym in seqs:
            self._last_seen[sym] = now
        self._routed_entries += len(entries)
        self._open_round(entries, received, ticks, quotes, seqs)
        self._notify()

    def _open_round(
        self,
        entries: list[Entry],
        received_ns: int,
        ticks: TickBatch | None,
        quotes: QuoteBatch | None,
        seqs: dict[str, int],
    ) -> None:
        rnd = _Round(entries, received_ns, ticks, quotes, waiting=set(seqs.items()))
        self._round_count += 1
        if not rnd.waiting:
            self._finish_round(rnd)
            return
        self._open_rounds += 1
        for key in rnd.waiting:
            self._rounds[key] = rnd
        # a reply may have arrived before the round was registered
        self._drain_replies()

    def _idle_timers(self) -> None:
        cfg = self.config
        if cfg.idle_close_s is None:
            return
        now = time.monotonic()
        until = time.time_ns() - cfg.lateness_ns
        for sym, seen in list(self._last_seen.items()):
            if now - seen >= cfg.idle_close_s and until > self._closed_until.get(sym, _NO_TS):
                self._closed_until[sym] = until
                self._last_seen[sym] = now
                seq = self.router.close_until(sym, until)
                self._open_round([], time.time_ns(), None, None, {sym: seq})

    # ---- collect ---------------------------------------------------------------------------------------------
    def _on_reply(self, reply: AssetReply) -> None:
        self._replies.append(reply)

    async def _collect(self) -> None:
        while not self._stopping:
            if self.router.in_flight:
                await asyncio.to_thread(self.router.collect, 0.01)
            else:
                await self._wait_progress()
            self._drain_replies()
            await self._write_finished()

    def _drain_replies(self) -> None:
        if not self._replies:
            return
        now_ns = time.time_ns()
        topics: dict[str, list[Any]] = {"prices": [], "bars": [], "features": [], "alerts": []}
        while self._replies:
            # rounds are registered on this thread right after their calls are sent: every reply finds its own
            reply = self._replies.popleft()
            rnd = self._rounds.pop((reply.symbol, reply.seq), None)
            if rnd is None:
                continue
            out = reply.output
            rnd.outputs.append(out)
            rnd.waiting.discard((reply.symbol, reply.seq))
            self._account(out, rnd.received_ns, now_ns)
            self._publishable(out, rnd.received_ns, now_ns, topics)
            if not rnd.waiting:
                self._open_rounds -= 1
                self._finish_round(rnd)
        self._publish(topics)
        self._notify()

    def _account(self, out: AssetOutput, received_ns: int, now_ns: int) -> None:
        a = self._assets.get(out.symbol)
        if a is None:
            a = self._assets[out.symbol] = AssetStatus(out.symbol)
        a.records += out.records
        for iv, bars in out.bars.items():
            label = interval_label(iv)
            a.bars[label] = a.bars.get(label, 0) + len(bars)
        a.alerts += out.alert_count
        if out.last_ts is not None:
            a.last_ts = out.last_ts
        if out.last_price == out.last_price:
            a.last_price = out.last_price
        a.lag_ms = (now_ns - received_ns) / 1e6

    def _publishable(self, out: AssetOutput, received_ns: int, now_ns: int, topics: dict[str, list[Any]]) -> None:
        if self.hub is None:
            return
        if out.records:
            topics["prices"].append(
                {
                    "symbol": out.symbol,
                    "ts": out.last_ts,
                    "price": out.last_price,
                    "records": out.records,
                    "received_ns": received_ns,
                    "processed_ns": now_ns,
                }
            )
        for iv, bars in out.bars.items():
            topics["bars"].append(
                {
                    "symbol": out.symbol,
                    "interval": interval_label(iv),
                    "ts": bars.ts.tolist(),
                    "open": bars.open.tolist(),
                    "high": bars.high.tolist(),
                    "low": bars.low.tolist(),
                    "close": bars.close.tolist(),
                    "volume": bars.volume.tolist(),
                }
            )
            frame = out.features.get(iv)
            if self.config.publish_features and frame is not None and len(frame.ts):
                values = {name: _json_float(col[-1]) for name, col in frame.values.items()}
                topics["features"].append(
                    {"symbol": out.symbol, "interval": interval_label(iv), "ts": int(frame.ts[-1]), "values": values}
                )
        if out.alerts is not None and len(out.alerts):
            topics["alerts"].extend(out.alerts.to_dict("records"))

    def _publish(self, topics: dict[str, list[Any]]) -> None:
        items = {k: v for k, v in topics.items() if v}
        if self.hub is None or not items:
            return
        count = sum(len(v) for v in items.values())
        if self._hub_pending_items + count > self.config.hub_max_pending:
            # the hub is far behind: drop what waits rather than slow the pipeline
            self._hub_dropped += self._hub_pending_items
            self._hub_pending, self._hub_pending_items = {}, 0
        for topic, values in items.items():
            self._hub_pending.setdefault(topic, []).extend(values)
        self._hub_pending_items += count
        self._send_hub()

    def _send_hub(self) -> None:
        """Send the waiting updates in one call, or leave them for when an outstanding call finishes."""
        if not self._hub_pending or self.hub is None:
            return
        if self._hub_refs:
            _, self._hub_refs = ray.wait(self._hub_refs, num_returns=len(self._hub_refs), timeout=0)
        if len(self._hub_refs) >= self.config.hub_max_in_flight:
            if self._hub_waiter is None:
                self._hub_waiter = asyncio.get_running_loop().create_task(self._send_hub_later())
            return
        self._hub_refs.append(self.hub.publish_topics.remote(self._hub_pending))
        self._hub_pending, self._hub_pending_items = {}, 0

    async def _send_hub_later(self) -> None:
        try:
            outstanding = [asyncio.wrap_future(ref.future()) for ref in self._hub_refs]
            await asyncio.wait(outstanding, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._hub_waiter = None
        self._send_hub()

    async def _flush_hub(self, wait: bool) -> None:
        while wait and (self._hub_refs or self._hub_pending):
            if self._hub_waiter is not None:
                self._hub_waiter.cancel()
                self._hub_waiter = None
            await asyncio.gather(*self._hub_refs, return_exceptions=True)
            self._hub_refs = []
            self._send_hub()

    # ---- write and acknowledge ---------------------------------------------------------------------------
    def _queue_write(self) -> None:
        if not self._finished_rounds and not self._quarantine:
            self._finished_since = time.monotonic()

    def _finish_round(self, rnd: _Round) -> None:
        self._queue_write()
        self._finished_rounds.append(rnd)

    async def _write_finished(self, force: bool = False) -> None:
        cfg = self.config
        while self._finished_rounds or self._quarantine:
            rows = sum(r.rows for r in self._finished_rounds)
            due = force or rows >= cfg.write_rows or time.monotonic() - self._finished_since >= cfg.write_every_s
            if self.writer is None:
                due = True
            if not due:
                return
            if self.writer is not None and len(self._writes) >= cfg.max_writes_in_flight:
                if not force:
                    return
                await asyncio.wait(self._writes, return_when=asyncio.FIRST_COMPLETED)
                continue
            rounds, self._finished_rounds = self._finished_rounds, []
            quarantine, self._quarantine = self._quarantine, []
            task = asyncio.get_running_loop().create_task(self._write(rounds, quarantine))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
            task.add_done_callback(self._task_done)
            if not force:
                return

    async def _write(self, rounds: list[_Round], quarantine: list[QuarantineBatch]) -> None:
        if self.writer is not None:
            batch = WriteBatch(quarantine=quarantine)
            for rnd in rounds:
                if rnd.ticks is not None:
                    batch.ticks.append(rnd.ticks)
                if rnd.quotes is not None:
                    batch.quotes.append(rnd.quotes)
                for out in rnd.outputs:
                    batch.bars.extend(out.bars.values())
                    if out.alerts is not None and len(out.alerts):
                        batch.alerts.append(out.alerts)
            if batch:
                stored: dict[str, int] = await self.writer.write.remote(batch)
                for table, n in stored.items():
                    self._stored[table] = self._stored.get(table, 0) + n
        entries = [e for rnd in rounds for e in rnd.entries]
        if entries:
            # write tasks run concurrently: a trim reads the group's pending entries in steps, and an
            # acknowledgement between those steps would mislead it
            async with self._ack_lock:
                await self.buffer.ack(self.config.group, entries)
                self._acked += len(entries)
                await self._trim()
        self._notify()

    async def _trim(self) -> None:
        every = self.config.trim_every_s
        now = time.monotonic()
        if every > 0 and now - self._trimmed_at >= every:
            self._trimmed_at = now
            await self.buffer.trim(self.config.stream)

    # ---- status ------------------------------------------------------------------------------------------
    async def _report(self) -> None:
        every = self.config.status_every_s
        if self._on_status is None or every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            self._on_status(self.status())


def _rows(decoded: list[tuple[Entry, Batch]]) -> int:
    return sum(len(b) for _, b in decoded)


def _entry_ns(entry_id: str) -> int:
    """The append time an entry id carries (milliseconds since the epoch), in ns."""
    return int(entry_id.split("-", 1)[0]) * 1_000_000


def _json_float(value: Any) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None
