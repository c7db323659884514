"""The signal API over a real DuckDB store: every route but health needs a valid key (the routes are taken from the
OpenAPI document), bars and alerts come back as stored, alert pages join up to the whole listing, errors name the
field, and the metrics count the requests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ingest.records import NS_PER_MINUTE, BarBatch
from ingest.store.base import ALERT_COLUMNS
from ingest.store.duckdb_store import DuckDBStore
from serve_apps.api import create_app
from serve_apps.backend import StoreBackend
from serve_apps.keys import KeyStore

T0 = 1_704_207_600_000_000_000  # 2024-01-02 15:00 UTC


def _bars(symbol: str, n: int) -> BarBatch:
    close = 100.0 + np.arange(n, dtype=np.float64)
    return BarBatch(
        ts=T0 + np.arange(n, dtype=np.int64) * NS_PER_MINUTE,
        symbol=np.full(n, symbol, dtype=object),
        interval_ns=np.full(n, NS_PER_MINUTE),
        open=close,
        high=close + 1,
        low=close - 1,
        close=close,
        volume=np.full(n, 10.0),
        vwap=close,
        trade_count=np.full(n, 3, dtype=np.int64),
        bid=close - 0.01,
        ask=close + 0.01,
        bid_size=np.ones(n),
        ask_size=np.ones(n),
        spread=np.full(n, 0.02),
        quote_count=np.ones(n, dtype=np.int64),
        suspicious_count=np.zeros(n, dtype=np.int64),
    )


def _alerts() -> pd.DataFrame:
    rows = []
    for k in range(25):
        severity = 0.9 + k / 250
        rows.append(
            {
                "ts": T0 + (k // 2) * NS_PER_MINUTE,
                "symbol": "SPY" if k % 2 else "BTC-USD",
                "kind": "flash_crash" if k % 3 == 0 else "volume_anomaly",
                "detector": "ensemble",
                "score": float(k),
                "severity": "critical" if severity >= 0.999 else "warning",
                "details": json.dumps({"severity": severity, "models": "garch=1.000", "explanation": f"alert {k}"}),
            }
        )
    return pd.DataFrame(rows, columns=list(ALERT_COLUMNS))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, str, KeyStore]:
    root = tmp_path_factory.mktemp("api")
    store = DuckDBStore(root / "history.duckdb")
    store.write_bars(BarBatch.concat([_bars("SPY", 30), _bars("BTC-USD", 30)]))
    store.write_alerts(_alerts())
    keys = KeyStore(root / "api_keys.json")
    _, key = keys.create("tests")
    client = TestClient(create_app(StoreBackend(store), keys), raise_server_exceptions=False)
    return client, key, keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    doc: dict[str, Any] = client.get("/openapi.json").json()
    out = []
    for path, methods in doc["paths"].items():
        for method in methods:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "SPY", path)))
    return out


def test_health_needs_no_key(api):
    client, _, _ = api
    assert client.get("/api/v1/health").json() == {"status": "ok"}


def test_every_route_but_health_refuses_a_missing_wrong_or_revoked_key(api, tmp_path: Path):
    client, key, keys = api
    routes = [r for r in _routes(client) if r[1] != "/api/v1/health"]
    assert {p for _, p in routes} >= {"/api/v1/status", "/api/v1/alerts", "/api/v1/bars/SPY", "/metrics"}
    _, doomed = keys.create("to revoke")
    keys.revoke(doomed.split("_")[1])
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for method, path in routes:
        for headers in ({}, _auth(wrong), {"X-API-Key": doomed}, {"Authorization": "Basic abc"}):
            res = client.request(method, path, headers=headers)
            assert res.status_code == 401, (method, path, headers, res.status_code)
            assert res.json()["error"] == "unauthorized"
        assert client.request(method, path, headers=_auth(key)).status_code != 401, (method, path)
        assert client.request(method, path, headers={"X-API-Key": key}).status_code != 401, (method, path)


def test_bars_come_back_as_stored_latest_first_limit_and_bad_interval_named(api):
    client, key, _ = api
    res = client.get("/api/v1/bars/SPY", params={"interval": "1min", "limit": 5}, headers=_auth(key))
    assert res.status_code == 200
    body = res.json()
    assert body["interval"] == "1min"
    assert len(body["bars"]) == 5
    assert [b["close"] for b in body["bars"]] == [125.0, 126.0, 127.0, 128.0, 129.0]
    ranged = client.get(
        "/api/v1/bars/SPY", params={"start": T0, "end": T0 + 3 * NS_PER_MINUTE}, headers=_auth(key)
    ).json()
    assert [b["ts"] for b in ranged["bars"]] == [T0, T0 + NS_PER_MINUTE, T0 + 2 * NS_PER_MINUTE]
    bad = client.get("/api/v1/bars/SPY", params={"interval": "soon"}, headers=_auth(key))
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "interval"
    assert bad.json()["detail"][0]["value"] == "soon"
    empty = client.get("/api/v1/bars/NOPE", headers=_auth(key)).json()
    assert empty["bars"] == []


def test_alert_pages_join_up_to_the_whole_listing_and_ids_resolve(api):
    client, key, _ = api
    whole = client.get("/api/v1/alerts", params={"limit": 1000}, headers=_auth(key)).json()
    assert len(whole["alerts"]) == 25
    assert whole["next_cursor"] is None
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/alerts", params=params, headers=_auth(key)).json()
        pages.extend(page["alerts"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [a["id"] for a in pages] == [a["id"] for a in whole["alerts"]]
    one = whole["alerts"][7]
    got = client.get(f"/api/v1/alerts/{one['id']}", headers=_auth(key))
    assert got.status_code == 200
    assert got.json() == one
    assert client.get("/api/v1/alerts/not-an-id", headers=_auth(key)).status_code == 404


def test_alert_filters_symbol_kind_severity_and_time(api):
    client, key, _ = api
    params = {"symbol": "SPY", "kind": "flash_crash", "min_severity": 0.95, "start": T0, "end": T0 + 11 * NS_PER_MINUTE}
    found = client.get("/api/v1/alerts", params=params, headers=_auth(key)).json()["alerts"]
    assert found
    assert all(a["symbol"] == "SPY" and a["kind"] == "flash_crash" and a["severity"] >= 0.95 for a in found)
    assert all(T0 <= a["ts"] < T0 + 11 * NS_PER_MINUTE for a in found)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"min_severity": 2}, "min_severity"), ({"limit": 0}, "limit"), ({"cursor": "zzz"}, "cursor")],
)
def test_bad_parameters_are_json_errors_naming_the_field(api, params, field):
    client, key, _ = api
    res = client.get("/api/v1/alerts", params=params, headers=_auth(key))
    assert res.status_code == 422
    body = res.json()
    assert body["error"] == "invalid_request"
    assert field in json.dumps(body["detail"])
    assert "Traceback" not in res.text


def test_latest_signals_carry_the_latest_alert(api):
    client, key, _ = api
    body = client.get("/api/v1/signals/SPY", headers=_auth(key)).json()
    assert body["alert"]["symbol"] == "SPY"
    assert body["alert"]["explanation"] == "alert 23"
    assert body["signals"] == []


def test_metrics_count_requests_per_route(api):
    client, key, _ = api
    client.get("/api/v1/assets", headers=_auth(key))
    text = client.get("/metrics", headers=_auth(key)).text
    assert 'sentinel_http_requests_total{method="GET",route="/api/v1/assets",status="200"}' in text
    assert "sentinel_http_request_seconds_bucket" in text


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(tmp_path: Path):
    keys = KeyStore(tmp_path / "keys.json")
    _, busy = keys.create("busy")
    _, calm = keys.create("calm")
    client = TestClient(create_app(StoreBackend(DuckDBStore(":memory:")), keys, rate_per_s=0.5, burst=3))
    codes = [client.get("/api/v1/assets", headers=_auth(busy)).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = client.get("/api/v1/assets", headers=_auth(busy))
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get("/api/v1/assets", headers=_auth(calm)).status_code == 200


def test_an_oversized_request_gets_413_without_reaching_a_route(api):
    client, key, _ = api
    res = client.request("GET", "/api/v1/assets", headers=_auth(key) | {"Content-Length": str(10**9)})
    assert res.status_code == 413
    assert res.json()["error"] == "too_large"
