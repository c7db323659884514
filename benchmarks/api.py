"""Latency of the signal API on Ray Serve, next to a no-op Serve endpoint measured in the same run.

Ray starts locally (2 CPUs) with the pipeline's writer (a DuckDB store holding synthetic bars and alerts of 19
symbols) and hub; the API is deployed as `sentinel up` deploys it (one replica, a tenth of a CPU), and beside it
a no-op FastAPI endpoint on the same Serve proxy: the platform's floor (proxy, routing, one replica call).

A separate process (an asyncio httpx client, open loop) sends ``GET /api/v1/signals/{symbol}`` (symbols in turn)
at a fixed rate for a fixed time; a request's latency is its completion time minus its scheduled time (a client
falling behind schedule counts its delay). p50 and p99 in ms at 50, 200 and 500 requests/s, for the API and the
floor. The WebSocket broadcast figures of the issue are not measured yet (the stream endpoint is not built):
``ws_p99_ms_1000_subscribers`` is ``null``.

``--quick``: 3 s per rate instead of 10. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import machine

RATES = (50, 200, 500)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(url_for: list[str], headers: dict[str, str], rate: int, seconds: float, out: Any) -> None:
    """Open-loop load: one request every 1/rate s for ``seconds``; puts the latencies (s) on ``out``."""
    import httpx

    async def main() -> list[float]:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def one(url: str, due: float) -> None:
                nonlocal errors
                res = await client.get(url, headers=headers)
                if res.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - due)

            for url in url_for[:20]:  # warm the connections
                await client.get(url, headers=headers)
            start = time.perf_counter()
            n = int(rate * seconds)
            tasks = []
            for k in range(n):
                due = start + k / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(url_for[k % len(url_for)], due)))
            await asyncio.gather(*tasks)
        if errors:
            print(f"  {errors} non-200 responses", file=sys.stderr)
        return latencies

    out.put(asyncio.run(main()))


def _measure(urls: list[str], headers: dict[str, str], rate: int, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load, args=(urls, headers, rate, seconds, queue))
    proc.start()
    latencies = np.asarray(queue.get(timeout=seconds * 10 + 60)) * 1000.0
    proc.join()
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99))}


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per rate")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 10.0
    print(f"machine: {machine()}")

    import ray
    from fastapi import FastAPI
    from ray import serve

    from actors.hub import get_or_create_hub
    from actors.writer import WriteBatch, get_or_create_writer
    from ingest.asset import store_alerts
    from ingest.store.duckdb_store import DuckDBStore
    from ingest.synthetic import SimulationConfig, simulate
    from models.ensemble import Ensemble
    from models.evaluation import bar_observations
    from serve_apps.deployment import APP_NAME, api_application
    from serve_apps.keys import KeyStore

    root = Path(tempfile.mkdtemp(prefix="sentinel-api-bench-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="sentinel-bench")
    try:
        writer: Any = get_or_create_writer(partial(DuckDBStore, root / "history.duckdb"), namespace="bench")
        hub: Any = get_or_create_hub(namespace="bench")
        market = simulate(SimulationConfig(seed=1, days=2, activity=0.2))
        alerts = []
        for obs in bar_observations(market.bars).values():
            model = Ensemble().fit(obs.take(slice(0, len(obs) // 2)))
            found = model.score(obs.take(slice(len(obs) // 2, None))).alerts
            if len(found):
                alerts.append(store_alerts(found))
        ray.get(writer.write.remote(WriteBatch(bars=[market.bars], alerts=alerts)))
        # what the pipeline publishes as it goes: a price per symbol and its alerts
        published = [a.to_dict("records") for a in alerts]
        prices = [{"symbol": s} for s in sorted(set(market.bars.symbol.tolist()))]
        ray.get(hub.publish_topics.remote({"prices": prices, "alerts": [r for rows in published for r in rows]}))
        symbols = sorted(set(market.bars.symbol.tolist()))
        keys = KeyStore(root / "api_keys.json")
        _, key = keys.create("bench")
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(api_application(keys.path, "bench"), name=APP_NAME, route_prefix="/")

        noop_app = FastAPI()

        @noop_app.get("/noop")
        async def noop_route() -> dict[str, bool]:
            return {"ok": True}

        floor_deployment: Any = serve.deployment(
            serve.ingress(noop_app)(), name="noop", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256
        )
        serve.run(floor_deployment.bind(), name="noop", route_prefix="/floor")
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        api_urls = [f"{base}/api/v1/signals/{s}" for s in symbols]
        floor_urls = [f"{base}/floor/noop"]
        figures: dict[str, Any] = {}
        head = f"{'rate':>6} {'api p50':>9} {'api p99':>9} {'floor p50':>10} {'floor p99':>10}"
        print(f"\n{head}   (ms, {seconds:.0f} s each)")
        for rate in RATES:
            api = _measure(api_urls, headers, rate, seconds)
            floor = _measure(floor_urls, {}, rate, seconds)
            print(
                f"{rate:6d} {api['p50_ms']:9.2f} {api['p99_ms']:9.2f} {floor['p50_ms']:10.2f} {floor['p99_ms']:10.2f}"
            )
            figures[f"p50_ms_at_{rate}rps"] = round(api["p50_ms"], 2)
            figures[f"p99_ms_at_{rate}rps"] = round(api["p99_ms"], 2)
            figures[f"floor_p50_ms_at_{rate}rps"] = round(floor["p50_ms"], 2)
            figures[f"floor_p99_ms_at_{rate}rps"] = round(floor["p99_ms"], 2)
        figures["ws_p99_ms_100_subscribers"] = None
        figures["ws_p99_ms_1000_subscribers"] = None
        figures["alerts_stored"] = int(sum(len(a) for a in alerts))
        figures["machine"] = machine()
        print(json.dumps(figures))
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    main()
