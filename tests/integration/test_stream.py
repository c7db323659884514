"""The whole stream on a real local Ray: source -> validation -> buffer -> router -> AssetActors -> hub + writer.

Every test compares the stream with the batch path on the same input: the raw batches validated in order, each
symbol's accepted rows given to one :class:`~ingest.asset.AssetProcessor` in one call, then flushed.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ray
import redis.asyncio as aioredis

from actors.asset import asset_actor_name, get_or_create_asset_actor
from actors.hub import get_or_create_hub
from actors.router import Router
from actors.stream import AssetStatus as AssetStatusType
from actors.stream import StreamConfig, StreamPipeline, StreamStatus
from actors.writer import get_or_create_writer
from ingest.asset import AssetOutput, AssetProcessor, CheckpointStore, FileCheckpointStore
from ingest.buffer.base import Buffer
from ingest.buffer.memory import MemoryBuffer
from ingest.buffer.redis_checkpoints import RedisCheckpointStore
from ingest.buffer.redis_streams import RedisStreamBuffer
from ingest.pipeline import BatchValidation
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND, QuoteBatch, TickBatch
from ingest.sources.base import RawBatch
from ingest.store.duckdb_store import DuckDBStore
from ingest.synthetic import SimulationConfig, SimulationResult, simulate
from ingest.validation import Reason, ValidationConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WINDOW_NS = 10 * NS_PER_MINUTE


@pytest.fixture(scope="module")
def market() -> SimulationResult:
    """A synthetic day of the whole seed universe, with its labelled anomalies (fat fingers among them)."""
    return simulate(SimulationConfig(seed=3, activity=0.2))


@pytest.fixture(scope="module")
def small_market() -> SimulationResult:
    """Five symbols of the synthetic market (each actor is a process: fewer symbols, a faster test)."""
    return simulate(SimulationConfig(seed=4, assets=("SPY", "AAPL", "BTC-USD", "ETH-USD", "EURUSD"), activity=0.3))


def _clock(raws: Sequence[RawBatch]) -> Callable[[], int]:
    """A fixed 'now' an hour after the last record, for the future-timestamp rule."""
    last = max(
        int(pd.to_datetime(f["timestamp"], utc=True, errors="coerce").max().value)
        for raw in raws
        for f in (raw.trades, raw.quotes)
        if f is not None and len(f)
    )
    return lambda: last + 3600 * NS_PER_SECOND


def _frames(trades: TickBatch, quotes: QuoteBatch) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(trades.ts, utc=True),
            "symbol": trades.symbol,
            "price": trades.price,
            "size": trades.size,
            "seq": trades.seq,
        }
    )
    q = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(quotes.ts, utc=True),
            "symbol": quotes.symbol,
            "bid": quotes.bid,
            "ask": quotes.ask,
            "bid_size": quotes.bid_size,
            "ask_size": quotes.ask_size,
            "seq": quotes.seq,
        }
    )
    return t, q


def _windows(trades: pd.DataFrame, quotes: pd.DataFrame, window_ns: int = WINDOW_NS) -> list[RawBatch]:
    """The market cut into time windows, every symbol and both kinds mixed in each."""
    tt, qt = trades["timestamp"].array.asi8, quotes["timestamp"].array.asi8
    lo = min(tt.min(), qt.min()) // window_ns * window_ns
    edges = np.arange(lo, max(tt.max(), qt.max()) + 2 * window_ns, window_ns)
    ti, qi = np.searchsorted(tt, edges), np.searchsorted(qt, edges)
    return [
        RawBatch(trades=trades.iloc[ti[k] : ti[k + 1]], quotes=quotes.iloc[qi[k] : qi[k + 1]])
        for k in range(len(edges) - 1)
        if ti[k + 1] > ti[k] or qi[k + 1] > qi[k]
    ]


def _market_batches(market: SimulationResult) -> list[RawBatch]:
    return _windows(*_frames(market.trades, market.quotes))


def _batch_path(raws: Sequence[RawBatch], config: ValidationConfig, clock: Callable[[], int]) -> dict[str, Any]:
    """The reference: validate in order, then one processor call per symbol over all its rows, then flush."""
    validation = BatchValidation(config, clock=clock)
    done = [validation.validate(raw) for raw in raws]
    ticks = TickBatch.concat([v.ticks for v in done if v.ticks is not None])
    quotes_found = [v.quotes for v in done if v.quotes is not None]
    quotes = QuoteBatch.concat(quotes_found) if quotes_found else QuoteBatch.empty()
    out: dict[str, Any] = {}
    for sym in sorted(set(ticks.symbol.tolist()) | set(quotes.symbol.tolist())):
        proc = AssetProcessor(sym)
        out[sym] = AssetOutput.concat(
            [proc.process(ticks.take(ticks.symbol == sym), quotes.take(quotes.symbol == sym)), proc.flush()]
        )
    out["_stats"] = validation.stats
    return out


def _router(tmp_path: Path, namespace: str, checkpoint_every: int = 4, store: CheckpointStore | None = None) -> Router:
    store = store or FileCheckpointStore(tmp_path / f"checkpoints-{namespace}")
    actor_for = partial(
        get_or_create_asset_actor,
        checkpoints=store,
        checkpoint_every=checkpoint_every,
        checkpoint_every_s=60.0,
        gap_timeout_s=1.0,
        namespace=namespace,
    )
    return Router(actor_for, keep_outputs=True)


def _stream(
    raws: Sequence[RawBatch],
    router: Router,
    config: ValidationConfig,
    clock: Callable[[], int],
    buffer: Buffer | Callable[[], Buffer] | None = None,
    writer: Any = None,
    hub: Any = None,
    before_offer: Callable[[int], None] | None = None,
    stream_config: StreamConfig | None = None,
) -> StreamStatus:
    async def main() -> StreamStatus:
        buf = buffer() if callable(buffer) else buffer
        pipe = StreamPipeline(
            buf or MemoryBuffer(),
            router,
            BatchValidation(config, clock=clock, source="test"),
            writer=writer,
            hub=hub,
            config=stream_config or StreamConfig(max_lag_entries=32),
            source="test",
        )
        await pipe.start()
        try:
            for k, raw in enumerate(raws):
                if before_offer is not None:
                    before_offer(k)
                await pipe.offer(raw)
            return await pipe.finish()
        finally:
            await pipe.stop()
            await pipe.buffer.close()

    return asyncio.run(main())


def _assert_equal_outputs(router: Router, expected: dict[str, Any]) -> None:
    symbols = [s for s in expected if not s.startswith("_")]
    assert sorted(router.symbols) == symbols
    for sym in symbols:
        got = router.outputs(sym)
        assert got.equals(expected[sym]), sym


def _kill_all(router: Router, namespace: str) -> None:
    for sym in router.symbols:
        ray.kill(ray.get_actor(asset_actor_name(sym), namespace=namespace), no_restart=True)


# ------------------------------------------------------------------------------------------------------------
def test_synthetic_universe_streamed_equals_batch_and_is_stored_and_published(ray_session, market, tmp_path):
    raws = _market_batches(market)
    universe = frozenset(market.trades.symbol.tolist()) | frozenset(market.quotes.symbol.tolist())
    config, clock = ValidationConfig(universe=universe), _clock(raws)
    expected = _batch_path(raws, config, clock)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    router = _router(tmp_path, namespace)
    writer: Any = get_or_create_writer(partial(DuckDBStore, tmp_path / "history.duckdb"), namespace=namespace)
    hub: Any = get_or_create_hub(max_queue=1_000_000, namespace=namespace)
    subs = {topic: ray.get(hub.subscribe.remote(topic)) for topic in ("prices", "bars", "features", "alerts")}
    try:
        status = _stream(raws, router, config, clock, writer=writer, hub=hub)
        _assert_equal_outputs(router, expected)
        symbols = [s for s in expected if not s.startswith("_")]
        bars = sum(expected[s].bar_count for s in symbols)
        alerts = sum(expected[s].alert_count for s in symbols)
        assert alerts > 0, "the synthetic fat fingers should raise alerts"
        # everything stored, once, and every buffer entry acknowledged
        counts = ray.get(writer.counts.remote())
        assert counts["ticks"] == expected["_stats"].accepted["trades"] == status.accepted["trades"]
        assert counts["quotes"] == expected["_stats"].accepted["quotes"]
        assert counts["bars"] == bars
        assert counts["alerts"] == alerts
        assert status.entries_acked == status.entries_appended > 0
        assert status.stored["bars"] == bars
        # per-asset status: records in, bars, alerts, last time, no restarts
        for sym in symbols:
            a = status.assets[sym]
            assert a.records == expected[sym].records
            assert sum(a.bars.values()) == expected[sym].bar_count
            assert a.alerts == expected[sym].alert_count
            assert a.last_ts == max(
                int(expected[sym].bars[NS_PER_SECOND].ts.max()) if NS_PER_SECOND in expected[sym].bars else 0,
                a.last_ts or 0,
            )
            assert a.restarts == 0
        # the hub got every bar and alert, and a price update per answered batch
        published = {t: ray.get(hub.poll.remote(s, max_items=1_000_000)) for t, s in subs.items()}
        assert sum(len(b["ts"]) for b in published["bars"]) == bars
        assert len(published["alerts"]) == alerts
        assert {p["symbol"] for p in published["prices"]} == set(symbols)
        assert all(p["processed_ns"] >= p["received_ns"] for p in published["prices"])
        assert status.hub_dropped == 0
    finally:
        _kill_all(router, namespace)
        ray.get(writer.close.remote())


@pytest.mark.data
def test_real_spy_ticks_streamed_equal_the_batch_path(ray_session, spy_ticks_path, tmp_path):
    raw = pd.read_parquet(spy_ticks_path).rename(columns={"ts": "timestamp"})
    raw = raw[["timestamp", "symbol", "price", "size"]]
    raws = [RawBatch(trades=raw.iloc[k : k + 25_000]) for k in range(0, len(raw), 25_000)]
    config, clock = ValidationConfig(universe=frozenset({"SPY"})), _clock(raws)
    expected = _batch_path(raws, config, clock)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    router = _router(tmp_path, namespace, checkpoint_every=8)
    try:
        status = _stream(raws, router, config, clock)
        _assert_equal_outputs(router, expected)
        assert status.assets["SPY"].records == expected["_stats"].accepted["trades"] > 400_000
        assert expected["SPY"].bars[NS_PER_MINUTE].ts.size > 800
    finally:
        _kill_all(router, namespace)


def test_actors_killed_and_worker_processes_sigkilled_mid_stream_lose_and_double_nothing(
    ray_session, small_market, tmp_path
):
    raws = _windows(*_frames(small_market.trades, small_market.quotes), window_ns=2 * NS_PER_MINUTE)
    universe = frozenset(small_market.trades.symbol.tolist()) | frozenset(small_market.quotes.symbol.tolist())
    config, clock = ValidationConfig(universe=universe), _clock(raws)
    expected = _batch_path(raws, config, clock)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    router = _router(tmp_path, namespace, checkpoint_every=3)
    writer: Any = get_or_create_writer(partial(DuckDBStore, tmp_path / "history.duckdb"), namespace=namespace)
    n = len(raws)
    # BTC-USD and ETH-USD trade all day; SPY from the US open, before two thirds of the day
    plan = {n // 4: ("kill", "BTC-USD"), n // 2: ("sigkill", "ETH-USD"), (3 * n) // 4: ("sigkill", "SPY")}
    victims_pids: dict[str, int] = {}

    def strike(k: int) -> None:
        if k not in plan:
            return
        how, sym = plan[k]
        assert sym in router.symbols, sym
        handle: Any = ray.get_actor(asset_actor_name(sym), namespace=namespace)
        if how == "kill":
            ray.kill(handle, no_restart=False)
        else:
            pid = int(ray.get(handle.where.remote())["pid"])
            victims_pids[sym] = pid
            os.kill(pid, signal.SIGKILL)

    try:
        status = _stream(raws, router, config, clock, writer=writer, before_offer=strike)
        _assert_equal_outputs(router, expected)
        symbols = [s for s in expected if not s.startswith("_")]
        for sym in symbols:
            handle: Any = ray.get_actor(asset_actor_name(sym), namespace=namespace)
            counters = ray.get(handle.counters.remote())
            # restored counts plus replayed batches: nothing lost, nothing counted twice
            assert counters["ticks"] + counters["quotes"] == expected[sym].records, sym
            where = ray.get(handle.where.remote())
            if sym in victims_pids:
                assert where["pid"] != victims_pids[sym], sym
            victim = sym in {s for _, s in plan.values()}
            assert (status.assets[sym].restarts >= 1) == victim, sym
            assert ray.get(handle.position.remote()).restarted == victim, sym
        assert status.recoveries >= 3
        assert router.stats.resent > 0
        counts = ray.get(writer.counts.remote())
        assert counts["ticks"] == expected["_stats"].accepted["trades"]
        assert counts["bars"] == sum(expected[s].bar_count for s in symbols)
        assert status.entries_acked == status.entries_appended
    finally:
        _kill_all(router, namespace)
        ray.get(writer.close.remote())


def _poison(t: int, now: int) -> RawBatch:
    """Rows of every bad kind around time ``t`` (ns), among valid ones, on symbols the market trades then."""
    s = NS_PER_SECOND

    def iso(ns: int) -> str:
        return pd.Timestamp(ns, tz="UTC").isoformat()

    rows = [
        (iso(t + 1000), "BTC-USD", "45000.5", "0.1", "900000001"),  # valid
        (iso(t + 2000), "BTC-USD", "nan", "0.1", "900000002"),  # not_finite
        (iso(t + 3000), "BTC-USD", "45000.5", "inf", "900000003"),  # not_finite
        (iso(t + 4000), "BTC-USD", "0", "0.1", "900000004"),  # non_positive_price
        (iso(t + 5000), "BTC-USD", "45000.5", "-1", "900000005"),  # negative_size
        (iso(now + 3600 * s), "BTC-USD", "45000.5", "0.1", "900000006"),  # future_timestamp
        (iso(t - 600 * s), "BTC-USD", "45000.5", "0.1", "900000007"),  # out_of_order
        (iso(t + 1000), "BTC-USD", "45000.5", "0.1", "900000001"),  # duplicate
        (iso(t + 8000), "ZZZZ", "10.0", "1", "900000008"),  # unknown_symbol
        (iso(t + 9000), None, "10.0", "1", "900000009"),  # missing_field
        (iso(t + 10000), "BTC-USD", "abc", "0.1", "900000010"),  # malformed
    ]
    trades = pd.DataFrame(rows, columns=["timestamp", "symbol", "price", "size", "seq"])
    quotes = pd.DataFrame(
        {
            "timestamp": [iso(t + 11000)],
            "symbol": ["ETH-USD"],
            "bid": [2400.2],
            "ask": [2400.1],  # crossed_quote
            "bid_size": [1.0],
            "ask_size": [1.0],
        }
    )
    bars = pd.DataFrame(
        {
            "timestamp": [iso(t // NS_PER_MINUTE * NS_PER_MINUTE)],
            "symbol": ["EURUSD"],
            "open": [0.5],
            "high": [0.4],  # inconsistent_bar
            "low": [0.3],
            "close": [0.45],
            "volume": [100.0],
        }
    )
    return RawBatch(trades=trades, quotes=quotes, bars=bars, bar_interval_ns=NS_PER_MINUTE)


def test_every_kind_of_bad_input_mid_stream_is_quarantined_and_no_actor_fails(ray_session, small_market, tmp_path):
    raws = _market_batches(small_market)
    universe = frozenset(small_market.trades.symbol.tolist()) | frozenset(small_market.quotes.symbol.tolist())
    config, clock = ValidationConfig(universe=universe), _clock(raws)
    middle = len(raws) // 2
    before = raws[middle - 1].trades
    assert before is not None
    t_mid = int(pd.to_datetime(before["timestamp"], utc=True).max().value)
    poisoned = [*raws[:middle], _poison(t_mid, clock()), *raws[middle:]]
    expected = _batch_path(poisoned, config, clock)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    router = _router(tmp_path, namespace)
    writer: Any = get_or_create_writer(partial(DuckDBStore, tmp_path / "history.duckdb"), namespace=namespace)
    try:
        status = _stream(poisoned, router, config, clock, writer=writer)
        assert set(status.quarantined) == {r.value for r in Reason}, status.quarantined
        assert status.quarantined == dict(expected["_stats"].quarantined)
        stored = ray.get(writer.counts.remote())
        assert stored["quarantine"] == sum(status.quarantined.values())
        assert stored["ticks"] == expected["_stats"].accepted["trades"]
        assert status.recoveries == 0
        _assert_equal_outputs(router, expected)
    finally:
        _kill_all(router, namespace)
        ray.get(writer.close.remote())


def test_stream_through_redis_streams_with_redis_checkpoints_survives_a_kill_and_leaves_nothing_pending(
    ray_session, small_market, redis_url, redis_namespace, tmp_path
):
    raws = _market_batches(small_market)
    universe = frozenset(small_market.trades.symbol.tolist()) | frozenset(small_market.quotes.symbol.tolist())
    config, clock = ValidationConfig(universe=universe), _clock(raws)
    expected = _batch_path(raws, config, clock)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    checkpoints = RedisCheckpointStore(redis_url, prefix=f"{redis_namespace}:checkpoints")
    router = _router(tmp_path, namespace, checkpoint_every=3, store=checkpoints)

    def strike(k: int) -> None:
        if k == len(raws) // 2:
            ray.kill(ray.get_actor(asset_actor_name("BTC-USD"), namespace=namespace), no_restart=False)

    def buffer() -> Buffer:
        return RedisStreamBuffer(aioredis.Redis.from_url(redis_url), namespace=redis_namespace, owns_client=True)

    async def pending() -> int:
        buf = buffer()
        try:
            return len(await buf.pending("market", "router"))
        finally:
            await buf.close()

    try:
        started = time.monotonic()
        status = _stream(raws, router, config, clock, buffer=buffer, before_offer=strike)
        assert time.monotonic() - started < 120
        _assert_equal_outputs(router, expected)
        assert status.entries_acked == status.entries_appended > 0
        assert asyncio.run(pending()) == 0
        assert status.assets["BTC-USD"].restarts >= 1
        assert checkpoints.load("BTC-USD") is not None
    finally:
        _kill_all(router, namespace)


def test_redis_checkpoint_store_keeps_its_password_out_of_its_repr_and_pickles_without_a_connection():
    store = RedisCheckpointStore("redis://:s3cret@127.0.0.1:6390/0", prefix="run-1")
    assert "s3cret" not in repr(store)
    assert "127.0.0.1:6390" in repr(store)
    store._redis()  # a client (no connection is made until a command runs)
    assert pickle.loads(pickle.dumps(store))._client is None
    with pytest.raises(ValueError, match="prefix=''"):
        RedisCheckpointStore("redis://127.0.0.1/0", prefix="")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"read_count": 0}, "read_count=0"),
        ({"max_rounds_in_flight": -1}, "max_rounds_in_flight=-1"),
        ({"max_wait_ms": float("nan")}, "max_wait_ms=nan"),
        ({"idle_close_s": 0}, "idle_close_s=0"),
        ({"hub_max_in_flight": True}, "hub_max_in_flight=True"),
    ],
)
def test_stream_config_refuses_bad_values_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        StreamConfig(**kwargs)


def test_a_live_symbol_gone_quiet_has_its_bars_closed_by_the_wall_clock_timer(ray_session, tmp_path):
    now = time.time_ns()
    ts = now - 3 * NS_PER_SECOND + np.arange(30, dtype=np.int64) * (NS_PER_SECOND // 20)  # 1.5 s of trades
    trades = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(ts, utc=True),
            "symbol": "BTC-USD",
            "price": 45_000.0 + np.arange(30.0),
            "size": 0.1,
        }
    )
    seconds = len(np.unique(ts // NS_PER_SECOND))
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    router = _router(tmp_path, namespace)
    config = StreamConfig(idle_close_s=0.3, lateness_ns=NS_PER_SECOND, status_every_s=0)

    async def main() -> tuple[int, StreamStatus]:
        pipe = StreamPipeline(
            MemoryBuffer(), router, BatchValidation(ValidationConfig(universe=frozenset({"BTC-USD"}))), config=config
        )
        await pipe.start()
        try:
            await pipe.offer(RawBatch(trades=trades))
            deadline = time.monotonic() + 20
            closed = 0
            # every second bar closes without another trade and before the end of the stream
            while closed < seconds and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                closed = pipe.status().assets.get("BTC-USD", AssetStatusType("BTC-USD")).bars.get("1s", 0)
            return closed, await pipe.finish()
        finally:
            await pipe.stop()

    try:
        closed, status = asyncio.run(main())
        assert closed == seconds
        assert status.assets["BTC-USD"].bars["1s"] == seconds  # nothing left open for the flush
        assert status.assets["BTC-USD"].records == 30
    finally:
        _kill_all(router, namespace)
