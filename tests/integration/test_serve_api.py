"""The API on Ray Serve over a running pipeline: replayed data goes through the actors (with the anomaly ensemble),
the writer and the hub; the alerts, bars, status and latest features served over HTTP on 127.0.0.1 are the ones
the pipeline stored and published, and every route wants a key."""

from __future__ import annotations

import socket
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import ray
from ray import serve

from actors.asset import get_or_create_asset_actor
from actors.hub import get_or_create_hub
from actors.router import Router
from actors.writer import get_or_create_writer
from ingest.asset import FileCheckpointStore
from ingest.records import NS_PER_MINUTE
from ingest.store.duckdb_store import DuckDBStore
from ingest.synthetic import SimulationConfig, simulate
from ingest.validation import ValidationConfig
from models.ensemble import Ensemble, members_by_name
from models.walkforward import WalkForward
from serve_apps.backend import alert_id
from serve_apps.deployment import APP_NAME, deploy_api
from serve_apps.keys import KeyStore
from tests.integration.test_stream import _clock, _frames, _kill_all, _stream, _windows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MEMBERS = ["price_jump", "garch", "volume_burst", "trade_burst", "spread_blowout", "stale_feed", "cusum"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_replayed_data_comes_out_of_the_api_as_the_pipeline_stored_it(ray_session, tmp_path: Path) -> None:
    market = simulate(SimulationConfig(seed=2, days=3, activity=0.3, assets=("SPY", "BTC-USD")))
    raws = _windows(*_frames(market.trades, market.quotes), window_ns=30 * NS_PER_MINUTE)
    config, clock = ValidationConfig(universe=frozenset({"SPY", "BTC-USD"})), _clock(raws)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    walk = WalkForward(Ensemble(members_by_name(MEMBERS)), warmup=1000)
    actor_for = partial(
        get_or_create_asset_actor,
        checkpoints=FileCheckpointStore(tmp_path / "checkpoints"),
        intervals_ns=(NS_PER_MINUTE,),
        namespace=namespace,
        detection=walk,
    )
    router = Router(actor_for, keep_outputs=True)
    writer: Any = get_or_create_writer(partial(DuckDBStore, tmp_path / "history.duckdb"), namespace=namespace)
    hub: Any = get_or_create_hub(namespace=namespace)
    keys = KeyStore(tmp_path / "api_keys.json")
    _, key = keys.create("e2e")
    try:
        _stream(raws, router, config, clock, writer=writer, hub=hub)
        ray.get(hub.set_latest.remote("status", {"running": True, "assets": {"SPY": {}, "BTC-USD": {}}}))
        stored: pd.DataFrame = ray.get(writer.read.remote("read_alerts", None))
        assert (stored["detector"] == "ensemble").sum() > 0
        base = deploy_api(tmp_path / "api_keys.json", namespace=namespace, port=_free_port())
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/api/v1/health").json() == {"status": "ok"}
            assert http.get("/api/v1/alerts").status_code == 401
            assert http.get("/api/v1/alerts", headers={"X-API-Key": key + "x"}).status_code == 401
            served, cursor = [], None
            while True:
                params: dict[str, Any] = {"limit": 50} | ({"cursor": cursor} if cursor else {})
                page = http.get("/api/v1/alerts", params=params, headers=auth).json()
                served.extend(page["alerts"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            expected = stored.sort_values(["ts", "symbol", "detector", "kind"], kind="stable")
            assert [a["id"] for a in served] == [
                alert_id(int(r.ts), r.symbol, r.detector, r.kind) for r in expected.itertuples()
            ]
            ensemble = [a for a in served if a["detector"] == "ensemble"]
            assert all(0 <= a["severity"] <= 1 and a["explanation"] for a in ensemble)
            bars = http.get("/api/v1/bars/SPY", params={"limit": 10_000}, headers=auth).json()["bars"]
            spy = ray.get(writer.read.remote("read_bars", "SPY", NS_PER_MINUTE))
            assert [b["ts"] for b in bars] == spy.ts.tolist()
            assert http.get("/api/v1/assets", headers=auth).json() == {"assets": ["BTC-USD", "SPY"]}
            assert http.get("/api/v1/status", headers=auth).json()["running"] is True
            features = http.get("/api/v1/features/BTC-USD", headers=auth).json()["features"]
            assert "1min" in features
            assert features["1min"]["values"]
            latest = http.get("/api/v1/signals/SPY", headers=auth).json()
            assert latest["alert"]["symbol"] == "SPY"
            assert "sentinel_http_requests_total" in http.get("/metrics", headers=auth).text
    finally:
        serve.delete(APP_NAME)
        _kill_all(router, namespace)
        ray.get(writer.close.remote())
