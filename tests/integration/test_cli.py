"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from cluster.cli import app
from ingest.store import DuckDBStore

pytestmark = pytest.mark.integration
SENTINEL = str(Path(sys.executable).with_name("sentinel"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data_dir: Path, api_port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env["SENTINEL_DATA_DIR"] = str(data_dir)
    env["SENTINEL_API_PORT"] = str(api_port or _free_port())
    env["COLUMNS"] = "120"
    return env


def test_help_lists_the_commands():
    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0
    for cmd in ("up", "simulate", "ingest", "status"):
        assert cmd in out.output


def test_ingest_then_status_reports_rows_and_quarantine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.csv").write_text(
        "timestamp,symbol,price,size\n"
        "2024-01-02T14:30:00Z,SPY,470.1,100\n"
        "2024-01-02T14:30:01Z,SPY,-1,100\n"
        "2024-01-02T14:31:05Z,SPY,470.3,50\n"
        "2024-01-02T14:31:06Z,NOPE,1,1\n"
    )
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(tmp_path / "t.csv"), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "accepted trades" in res.output
    assert "non_positive_price" in res.output
    with DuckDBStore(tmp_path / "d" / "sentinel.duckdb", read_only=True) as store:
        counts = store.counts()
    assert counts["ticks"] == 2
    assert counts["quarantine"] == 2
    assert counts["bars"] == 4  # 1 s and 1 min bars of two minutes
    res = runner.invoke(app, ["status", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0
    assert "unknown_symbol" in res.output


def test_simulate_writes_the_market_and_labels_that_ingest_then_stores(tmp_path):
    runner = CliRunner()
    out = tmp_path / "sim"
    res = runner.invoke(app, ["simulate", "--seed", "3", "--days", "1", "--assets", "SPY,ETH-USD", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} >= {"trades.parquet", "quotes.parquet", "bars_1min.parquet", "labels.csv"}
    labels = pd.read_csv(out / "labels.csv")
    assert {"symbol", "start", "end", "kind", "magnitude"} <= set(labels.columns)
    assert "flash_crash" in set(labels["kind"])
    trades = pd.read_parquet(out / "trades.parquet")
    res = runner.invoke(app, ["ingest", str(out), "--data-dir", str(tmp_path / "d"), "--intervals", "1min"])
    assert res.exit_code == 0, res.output
    with DuckDBStore(tmp_path / "d" / "sentinel.duckdb", read_only=True) as store:
        counts = store.counts()
    assert counts["ticks"] == len(trades)
    assert counts["quarantine"] == 0


def test_simulate_with_an_unknown_asset_exits_2_naming_it(tmp_path):
    res = CliRunner().invoke(app, ["simulate", "--assets", "SPY,DOGE", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "DOGE" in res.output


def test_ingest_of_a_file_in_no_known_shape_exits_2_naming_it(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "bad.csv"), "--data-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "bad.csv" in res.output


def test_bad_setting_exits_2_naming_field_and_value(tmp_path):
    res = CliRunner().invoke(app, ["ingest", "x.csv", "--intervals", "1s,never", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "bar_intervals" in res.output
    assert "never" in res.output


def _wait_for(log: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def test_sentinel_up_streams_into_the_store_serves_the_api_and_stops_cleanly_on_ctrl_c(tmp_path):
    data, log, port = tmp_path / "d", tmp_path / "up.log", _free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [SENTINEL, "up", "--speed", "2592000"],  # a month of daily history per second
            cwd=tmp_path,
            env=_env(data, port),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            assert _wait_for(log, "market time", proc, 90), log.read_text()
            # a fresh install gets a key, printed once; the API answers with it, and only with it
            key = re.search(r"a new API key, shown once: (msk_\S+)", log.read_text(errors="replace"))
            assert key is not None, log.read_text()
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{base}/api/v1/health", timeout=10).json() == {"status": "ok"}
            assert httpx.get(f"{base}/api/v1/assets", timeout=10).status_code == 401
            auth = {"Authorization": f"Bearer {key.group(1)}"}
            assert httpx.get(f"{base}/api/v1/status", headers=auth, timeout=10).status_code == 200
            deadline, assets = time.monotonic() + 60, []
            while "SP500" not in assets and time.monotonic() < deadline:
                time.sleep(0.5)
                assets = httpx.get(f"{base}/api/v1/assets", headers=auth, timeout=10).json()["assets"]
            assert "SP500" in assets, log.read_text()
            time.sleep(2)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text
    assert "summary" in text
    assert "stopped" in text
    with DuckDBStore(data / "sentinel.duckdb", read_only=True) as store:
        counts = store.counts()
        bars = store.read_bars("SP500", 86_400 * 10**9).to_frame()
    assert counts["bars"] > 20, text
    assert len(bars) > 5
    first = pd.Timestamp(int(bars["ts"].iloc[0]), tz="UTC")
    assert first == pd.Timestamp("1999-01-04", tz="UTC")


def test_sentinel_up_replays_a_file_to_the_end_and_exits_when_told(tmp_path, spy_ticks_path):
    data = tmp_path / "d"
    proc = subprocess.run(
        [SENTINEL, "up", "--source", str(spy_ticks_path), "--speed", "max", "--exit-when-done"],
        cwd=tmp_path,
        env=_env(data),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with DuckDBStore(data / "sentinel.duckdb", read_only=True) as store:
        counts = store.counts()
    assert counts["ticks"] == 451_545
    assert counts["bars"] == 828 + 23_436  # one-minute and one-second bars of the day
    # the per-asset status of the run: records in, bars, alerts, last record, no restarts
    live = json.loads((data / "status.json").read_text())
    spy = live["assets"]["SPY"]
    assert spy["records"] == 451_545
    assert spy["bars"] == {"1s": 23_436, "1min": 828}
    assert spy["restarts"] == 0
    assert live["finished"]
    assert live["entries_acked"] == live["entries_appended"]
    assert not list((data / "checkpoints").glob("*")), "a clean end deletes the run's checkpoints"
    res = CliRunner().invoke(app, ["status", "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    for text in ("SPY", "451,545", "finished"):
        assert text in res.output


def test_sentinel_up_through_redis_into_postgres_stores_what_the_embedded_path_stores(
    tmp_path, spy_ticks_path, redis_url, postgres_url
):
    """The production path (validate -> Redis Streams -> consumer -> PostgreSQL) against the embedded one."""
    import redis as redis_client

    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own on the session's server
    with redis_client.Redis.from_url(url) as client:
        client.flushdb()
    env = _env(tmp_path / "d")
    env.update({"SENTINEL_REDIS_URL": url, "SENTINEL_DATABASE_URL": postgres_url})
    proc = subprocess.run(
        [
            SENTINEL,
            "up",
            "--source",
            str(spy_ticks_path),
            "--speed",
            "max",
            "--exit-when-done",
            "--buffer",
            "redis",
            "--store",
            "postgres",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    password = postgres_url.split("@")[0].rsplit(":", 1)[-1]
    assert password not in out
    from ingest.store.postgres import PostgresStore

    with PostgresStore(postgres_url) as store:
        counts = store.counts()
        bars = store.read_bars("SPY", 60 * 10**9).to_frame()
    assert counts["ticks"] == 451_545
    assert counts["bars"] == 828 + 23_436
    assert len(bars) == 828
    with redis_client.Redis.from_url(url) as client:
        pending = client.xpending("sentinel:buffer:stream:market", "router")
    assert pending["pending"] == 0


def test_ingest_and_status_against_postgres(tmp_path, monkeypatch, postgres_url):
    monkeypatch.setenv("SENTINEL_DATABASE_URL", postgres_url)
    (tmp_path / "t.csv").write_text(
        "timestamp,symbol,price,size\n2024-01-02T14:30:00Z,SPY,470.1,100\n2024-01-02T14:30:01Z,SPY,0,100\n"
    )
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(tmp_path / "t.csv"), "--store", "postgres"])
    assert res.exit_code == 0, res.output
    assert "PostgreSQL" in res.output
    res = runner.invoke(app, ["status", "--store", "postgres"])
    assert res.exit_code == 0, res.output
    assert "non_positive_price" in res.output
    password = postgres_url.split("@")[0].rsplit(":", 1)[-1]
    assert password not in res.output
