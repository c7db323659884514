"""Router, per-symbol actors and hub on a real local Ray: streaming equals batch, a killed actor loses nothing."""

from __future__ import annotations

import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from actors.asset import AssetPosition, asset_actor_name, get_or_create_asset_actor
from actors.hub import SubscriberStats, get_or_create_hub
from actors.router import Router, split_by_symbol
from ingest.asset import AssetOutput, AssetProcessor, FileCheckpointStore
from ingest.records import NS_PER_MINUTE, QuoteBatch, TickBatch
from ingest.synthetic import SimulationConfig, SimulationResult, simulate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYMBOLS = ("SPY", "BTC-USD", "EURUSD")
WINDOW_NS = 5 * NS_PER_MINUTE


@pytest.fixture
def ray_local(ray_session: None) -> None:
    """The session's Ray."""


@pytest.fixture(scope="module")
def market() -> SimulationResult:
    return simulate(SimulationConfig(seed=5, assets=SYMBOLS, activity=0.5))


@pytest.fixture(scope="module")
def expected(market: SimulationResult) -> dict[str, AssetOutput]:
    out = {}
    for sym in SYMBOLS:
        proc = AssetProcessor(sym)
        ticks, quotes = market.trades.take(market.trades.symbol == sym), market.quotes.take(market.quotes.symbol == sym)
        out[sym] = AssetOutput.concat([proc.process(ticks, quotes), proc.flush()])
    return out


def _micro_batches(market: SimulationResult) -> list[tuple[TickBatch, QuoteBatch]]:
    """The whole market in five-minute windows, every symbol mixed in each, in time order."""
    t, q = market.trades, market.quotes
    lo = min(int(t.ts.min()), int(q.ts.min())) // WINDOW_NS * WINDOW_NS
    hi = max(int(t.ts.max()), int(q.ts.max())) + 1
    edges = np.arange(lo, hi + WINDOW_NS, WINDOW_NS)
    ti, qi = np.searchsorted(t.ts, edges), np.searchsorted(q.ts, edges)
    return [
        (t.take(slice(ti[k], ti[k + 1])), q.take(slice(qi[k], qi[k + 1])))
        for k in range(len(edges) - 1)
        if ti[k + 1] > ti[k] or qi[k + 1] > qi[k]
    ]


def _router(tmp_path: Path, namespace: str, **kwargs: Any) -> tuple[Router, FileCheckpointStore]:
    store = FileCheckpointStore(tmp_path / "checkpoints")
    actor_for = partial(
        get_or_create_asset_actor,
        checkpoints=store,
        checkpoint_every=8,
        checkpoint_every_s=60.0,
        gap_timeout_s=1.0,
        namespace=namespace,
    )
    return Router(actor_for, max_in_flight=8, **kwargs), store


def _kill_all(namespace: str) -> None:
    for sym in SYMBOLS:
        ray.kill(ray.get_actor(asset_actor_name(sym), namespace=namespace), no_restart=True)


def test_split_by_symbol_keeps_arrival_order_within_each_symbol(market):
    ticks = market.trades.take(slice(0, 5000))
    parts = dict(split_by_symbol(ticks))
    assert sorted(parts) == sorted(set(ticks.symbol.tolist()))
    for sym, part in parts.items():
        assert part.equals(ticks.take(ticks.symbol == sym))


def test_streamed_market_through_router_and_actors_equals_batch_per_symbol(ray_local, market, expected, tmp_path):
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    hub: Any = get_or_create_hub(namespace=namespace)
    sub = ray.get(hub.subscribe.remote("bars", max_queue=100_000))
    router, _ = _router(
        tmp_path,
        namespace,
        on_reply=lambda r: hub.publish.remote("bars", {"symbol": r.symbol, "bars": r.output.bar_count}),
    )
    batches = _micro_batches(market)
    for ticks, quotes in batches:
        router.submit(ticks, quotes)
    router.flush()
    try:
        for sym in SYMBOLS:
            assert router.outputs(sym).equals(expected[sym]), sym
            actor: Any = ray.get_actor(asset_actor_name(sym), namespace=namespace)
            counters = ray.get(actor.counters.remote())
            assert counters["ticks"] + counters["quotes"] == expected[sym].records
        assert router.stats.recoveries == 0
        assert router.stats.duplicates == 0
        published = ray.get(hub.poll.remote(sub, max_items=100_000, timeout_s=5.0))
        # every call answered once is published once; the hub keeps publication order
        assert len(published) == router.stats.replies
        for sym in SYMBOLS:
            assert sum(p["bars"] for p in published if p["symbol"] == sym) == expected[sym].bar_count
    finally:
        _kill_all(namespace)


def test_actor_killed_mid_stream_restores_its_checkpoint_and_the_router_replays_exactly(
    ray_local, market, expected, tmp_path
):
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    router, store = _router(tmp_path, namespace)
    batches = _micro_batches(market)
    # BTC-USD trades all day; SPY from the US open, before two thirds of the day
    kill_at = {len(batches) // 3: "BTC-USD", (2 * len(batches)) // 3: "SPY"}
    for k, (ticks, quotes) in enumerate(batches):
        if k in kill_at:
            assert kill_at[k] in router.symbols
            victim = ray.get_actor(asset_actor_name(kill_at[k]), namespace=namespace)
            ray.kill(victim, no_restart=False)
        router.submit(ticks, quotes)
    router.flush()
    try:
        for sym in SYMBOLS:
            assert router.outputs(sym).equals(expected[sym]), sym
            handle: Any = ray.get_actor(asset_actor_name(sym), namespace=namespace)
            counters = ray.get(handle.counters.remote())
            # restored counts plus replayed batches: nothing lost, nothing counted twice
            assert counters["ticks"] + counters["quotes"] == expected[sym].records, sym
            pos: AssetPosition = ray.get(handle.position.remote())
            assert pos.restarted == (sym in kill_at.values()), sym
            assert pos.checkpointed == pos.applied  # the flush checkpoints
            assert store.load(sym) is not None
        for sym in kill_at.values():
            assert router.recoveries(sym) >= 1, sym
            victim_after: Any = ray.get_actor(asset_actor_name(sym), namespace=namespace)
            assert ray.get(victim_after.position.remote()).restored >= 0, sym
        assert router.recoveries("EURUSD") == 0
        assert router.stats.resent > 0
    finally:
        _kill_all(namespace)


def test_hub_delivers_in_order_and_drops_oldest_for_a_slow_subscriber(ray_local):
    hub: Any = get_or_create_hub(namespace=f"t-{uuid.uuid4().hex[:8]}")
    fast = ray.get(hub.subscribe.remote("alerts"))
    slow = ray.get(hub.subscribe.remote("alerts", max_queue=3))
    other = ray.get(hub.subscribe.remote("bars"))
    assert ray.get(hub.publish_many.remote("alerts", list(range(8)))) == 2
    assert ray.get(hub.publish.remote("alerts", 8)) == 2
    assert ray.get(hub.publish.remote("alerts", 9)) == 2
    assert ray.get(hub.poll.remote(fast, max_items=100)) == list(range(10))
    assert ray.get(hub.poll.remote(slow, max_items=100)) == [7, 8, 9]
    stats: SubscriberStats = ray.get(hub.stats.remote(slow))
    assert (stats.delivered, stats.dropped, stats.queued) == (3, 7, 0)
    # separate calls in flight together may be applied in any order: every item arrives, none twice
    assert ray.get([hub.publish.remote("alerts", i) for i in range(20)]) == [2] * 20
    assert sorted(ray.get(hub.poll.remote(fast, max_items=100))) == list(range(20))
    assert len(ray.get(hub.poll.remote(slow, max_items=100))) == 3
    assert ray.get(hub.poll.remote(other, max_items=10)) == []

    started = time.monotonic()
    assert ray.get(hub.poll.remote(fast, max_items=10, timeout_s=0.3)) == []
    assert time.monotonic() - started >= 0.25
    waiting = hub.poll.remote(fast, max_items=10, timeout_s=10.0)
    time.sleep(0.2)
    ray.get(hub.publish.remote("alerts", "late"))
    assert ray.get(waiting) == ["late"]
    with pytest.raises(ray.exceptions.RayTaskError, match="subscriber=999"):
        ray.get(hub.poll.remote(999))


def test_asset_actor_applies_calls_in_seq_order_and_answers_a_repeated_seq_from_its_cache(ray_local, market, tmp_path):
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    store = FileCheckpointStore(tmp_path / "checkpoints")
    actor: Any = get_or_create_asset_actor("EURUSD", store, checkpoint_every=2, gap_timeout_s=0.5, namespace=namespace)
    quotes = market.quotes.take(market.quotes.symbol == "EURUSD")
    parts = [quotes.take(slice(k, k + 2000)) for k in range(0, 6000, 2000)]
    # batch 1 sent before batch 0: it waits for its predecessor
    second = actor.process.remote(1, None, parts[1], None)
    first = actor.process.remote(0, None, parts[0], None)
    replies = ray.get([first, second])
    assert [r.seq for r in replies] == [0, 1]
    assert not any(r.duplicate for r in replies)
    again = ray.get(actor.process.remote(1, None, parts[1], None))
    assert again.duplicate
    assert again.output.equals(replies[1].output)
    assert again.checkpointed == 1
    # batch 3 without batch 2: the call fails after the gap timeout, naming what is missing
    with pytest.raises(ray.exceptions.RayTaskError, match=r"seq=3: symbol 'EURUSD' has applied up to 1"):
        ray.get(actor.process.remote(3, None, parts[2], None))
    counters = ray.get(actor.counters.remote())
    assert counters["quotes"] == len(parts[0]) + len(parts[1])
    with pytest.raises(ray.exceptions.RayTaskError, match="seq=-1"):
        ray.get(actor.process.remote(-1, None, parts[2], None))

    # a reply the router never acknowledged survives a restart in the checkpoint
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 30
    while True:
        # ray.kill returns at once: the old process may still answer before it goes
        try:
            pos: AssetPosition = ray.get(actor.position.remote(), timeout=5)
            if pos.restarted:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (pos.restarted, pos.restored, pos.applied) == (True, 1, 1)
    after_restart = ray.get(actor.process.remote(1, None, parts[1], None))
    assert after_restart.duplicate
    assert after_restart.output.equals(replies[1].output)
    # once acknowledged, a repeat is answered with an empty output
    ray.get(actor.process.remote(2, None, parts[2], None, 1))
    assert ray.get(actor.process.remote(1, None, parts[1], None)).output.bar_count == 0
    ray.kill(actor, no_restart=True)
