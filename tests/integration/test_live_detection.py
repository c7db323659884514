"""The live pipeline runs the anomaly ensemble in the per-asset actors and raises the alerts ``sentinel detect``
raises over the same data, also when an actor is killed mid-stream (its walk-forward state is checkpointed)."""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray

from actors.asset import asset_actor_name, get_or_create_asset_actor
from actors.router import Router
from cluster.detect import run_detect
from ingest.asset import FileCheckpointStore, store_alerts
from ingest.records import NS_PER_MINUTE
from ingest.synthetic import SimulationConfig, simulate, write_simulation
from ingest.validation import ValidationConfig
from models.ensemble import Ensemble, members_by_name
from models.walkforward import WalkForward
from tests.integration.test_stream import _clock, _frames, _kill_all, _stream, _windows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MEMBERS = ["price_jump", "garch", "volume_burst", "trade_burst", "spread_blowout", "stale_feed", "cusum"]


def test_actors_raise_the_alerts_of_sentinel_detect_even_after_a_kill(ray_session, tmp_path: Path) -> None:
    market = simulate(SimulationConfig(seed=2, days=3, activity=0.3, assets=("SPY", "BTC-USD")))
    files = write_simulation(market, tmp_path / "sim")
    walk = WalkForward(Ensemble(members_by_name(MEMBERS)), warmup=1000)
    expected = store_alerts(run_detect([files["trades"], files["quotes"]], walk).alerts)
    assert len(expected) > 0

    raws = _windows(*_frames(market.trades, market.quotes), window_ns=30 * NS_PER_MINUTE)
    config, clock = ValidationConfig(universe=frozenset({"SPY", "BTC-USD"})), _clock(raws)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    actor_for = partial(
        get_or_create_asset_actor,
        checkpoints=FileCheckpointStore(tmp_path / "checkpoints"),
        intervals_ns=(NS_PER_MINUTE,),
        checkpoint_every=3,
        checkpoint_every_s=60.0,
        gap_timeout_s=1.0,
        namespace=namespace,
        detection=walk,
        detect_interval_ns=NS_PER_MINUTE,
    )
    router = Router(actor_for, keep_outputs=True)
    kill_at = (2 * len(raws)) // 3  # after the first fit of BTC-USD (1,000 one-minute bars)

    def strike(k: int) -> None:
        if k == kill_at:
            handle: Any = ray.get_actor(asset_actor_name("BTC-USD"), namespace=namespace)
            ray.kill(handle, no_restart=False)

    try:
        status = _stream(raws, router, config, clock, before_offer=strike)
        assert status.recoveries >= 1
        found = [router.outputs(s).alerts for s in router.symbols]
        live = pd.concat([a for a in found if a is not None], ignore_index=True)
        live = live[live["detector"] == "ensemble"].sort_values(["ts", "symbol"], kind="stable", ignore_index=True)
        pd.testing.assert_frame_equal(live, expected.reset_index(drop=True))
    finally:
        _kill_all(router, namespace)
