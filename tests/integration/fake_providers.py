"""Local servers that speak the data providers' protocols, for the live-feed tests.

Each HTTP fake is a small FastAPI app served by uvicorn on 127.0.0.1 with a free port, in a thread; the Polygon
WebSocket fake is a ``websockets`` server in a thread. The fakes answer in the documented formats from scripted
bodies and record what they were asked, so a test can check both sides of the conversation.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from websockets.sync.server import ServerConnection, serve

# ---------------------------------------------------------------------------------------------------------
# serving


@contextmanager
def serve_http(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake HTTP server did not start within 10 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _scripted(bodies: list[Any], count: int) -> Any:
    """The ``count``-th scripted answer; the last one repeats."""
    return bodies[min(count, len(bodies) - 1)]


# ---------------------------------------------------------------------------------------------------------
# Yahoo Finance


def yahoo_chart(
    ticker: str, start_s: int, rows: Sequence[Sequence[float | None]], market_time_s: int | None
) -> dict[str, Any]:
    """A ``/v8/finance/chart`` body: one-minute rows ``(open, high, low, close, volume)`` from ``start_s``."""
    names = ("open", "high", "low", "close", "volume")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    meta: dict[str, Any] = {"currency": "USD", "symbol": ticker, "dataGranularity": "1m", "range": "1d"}
    if market_time_s is not None:
        meta["regularMarketTime"] = market_time_s
    return {
        "chart": {
            "result": [
                {
                    "meta": meta,
                    "timestamp": [start_s + 60 * i for i in range(len(rows))],
                    "indicators": {"quote": [columns]},
                }
            ],
            "error": None,
        }
    }


@dataclass
class FakeYahoo:
    """Yahoo's chart endpoint: ``charts[ticker]`` are the successive answers (the last repeats)."""

    charts: dict[str, list[dict[str, Any]]]
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v8/finance/chart/{ticker}")
        async def chart(ticker: str, request: Request) -> JSONResponse:
            served = sum(1 for t, _ in self.requests if t == ticker)
            self.requests.append((ticker, dict(request.query_params)))
            if ticker not in self.charts:
                body = {
                    "chart": {
                        "result": None,
                        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
                    }
                }
                return JSONResponse(body, status_code=404)
            return JSONResponse(_scripted(self.charts[ticker], served))

        return app


# ---------------------------------------------------------------------------------------------------------
# Alpha Vantage

AV_MINUTE_NOTE = (
    "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per "
    "day. Please visit https://www.alphavantage.co/premium/ if you would like to target a higher API call frequency."
)


def av_intraday(symbol: str, rows: dict[str, tuple[float, float, float, float, float]]) -> dict[str, Any]:
    """A ``TIME_SERIES_INTRADAY`` body (US/Eastern local times, newest first as Alpha Vantage sends them)."""
    series = {
        ts: {"1. open": f"{o}", "2. high": f"{h}", "3. low": f"{lo}", "4. close": f"{c}", "5. volume": f"{v:g}"}
        for ts, (o, h, lo, c, v) in sorted(rows.items(), reverse=True)
    }
    return {
        "Meta Data": {
            "1. Information": "Intraday (1min) open, high, low, close prices and volume",
            "2. Symbol": symbol,
            "3. Last Refreshed": max(rows),
            "4. Interval": "1min",
            "5. Output Size": "Compact",
            "6. Time Zone": "US/Eastern",
        },
        "Time Series (1min)": series,
    }


def av_fx_intraday(base: str, quote: str, rows: dict[str, tuple[float, float, float, float]]) -> dict[str, Any]:
    """An ``FX_INTRADAY`` body (UTC times, no volume)."""
    series = {
        ts: {"1. open": f"{o}", "2. high": f"{h}", "3. low": f"{lo}", "4. close": f"{c}"}
        for ts, (o, h, lo, c) in sorted(rows.items(), reverse=True)
    }
    return {
        "Meta Data": {
            "1. Information": "FX Intraday (1min) Time Series",
            "2. From Symbol": base,
            "3. To Symbol": quote,
            "4. Last Refreshed": max(rows),
            "5. Interval": "1min",
            "6. Output Size": "Compact",
            "7. Time Zone": "UTC",
        },
        "Time Series FX (1min)": series,
    }


@dataclass
class FakeAlphaVantage:
    """Alpha Vantage's ``/query``: ``answers[name]`` by symbol (equity), ``EURUSD`` (FX) or ``BTC-USD`` (crypto)."""

    api_key: str
    answers: dict[str, list[dict[str, Any]]]
    requests: list[dict[str, str]] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/query")
        async def query(request: Request) -> JSONResponse:
            params = dict(request.query_params)
            self.requests.append(params)
            if params.get("apikey") != self.api_key:
                return JSONResponse({"Error Message": "the parameter apikey is invalid or missing."})
            function = params.get("function")
            if function == "FX_INTRADAY":
                name = f"{params.get('from_symbol')}{params.get('to_symbol')}"
            elif function == "CRYPTO_INTRADAY":
                name = f"{params.get('symbol')}-{params.get('market')}"
            else:
                name = params.get("symbol", "")
            if name not in self.answers:
                message = f"Invalid API call. Please retry or visit the documentation for {function}."
                return JSONResponse({"Error Message": message})
            count = self.served.get(name, 0)
            self.served[name] = count + 1
            return JSONResponse(_scripted(self.answers[name], count))

        return app


# ---------------------------------------------------------------------------------------------------------
# Polygon REST


@dataclass
class FakePolygonRest:
    """Polygon's aggregates: ``pages[ticker]`` are the pages of every range asked (linked by ``next_url``)."""

    api_key: str
    pages: dict[str, list[list[dict[str, Any]]]]
    requests: list[tuple[str, dict[str, str], str]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v2/aggs/ticker/{ticker}/range/1/minute/{start}/{end}")
        async def aggs(ticker: str, start: str, end: str, request: Request) -> JSONResponse:
            params = dict(request.query_params)
            auth = request.headers.get("authorization", "")
            self.requests.append((request.url.path, params, auth))
            key = auth.removeprefix("Bearer ") if auth else params.get("apiKey")
            if key != self.api_key:
                return JSONResponse({"status": "ERROR", "request_id": "r1", "error": "Unknown API Key"}, 401)
            pages = self.pages.get(ticker, [[]])
            page = int(params.get("cursor", "0"))
            results = pages[page]
            body: dict[str, Any] = {
                "ticker": ticker,
                "queryCount": len(results),
                "resultsCount": len(results),
                "adjusted": True,
                "results": results,
                "status": "OK",
                "request_id": f"r{len(self.requests)}",
                "count": len(results),
            }
            if page + 1 < len(pages):
                # the real server names its own host; the client must keep to its configured base URL
                body["next_url"] = (
                    f"https://api.polygon.io/v2/aggs/ticker/{ticker}/range/1/minute/{start}/{end}?cursor={page + 1}"
                )
            return JSONResponse(body)

        return app


def polygon_agg(t_ms: int, o: float, h: float, lo: float, c: float, v: float) -> dict[str, Any]:
    """One aggregate result."""
    return {"t": t_ms, "o": o, "h": h, "l": lo, "c": c, "v": v, "vw": round((o + h + lo + c) / 4, 4), "n": 12}


# ---------------------------------------------------------------------------------------------------------
# Polygon WebSocket

#: A step of a connection's script: a list of events to send as one message, ``"drop"`` (cut the TCP
#: connection without a close frame) or ``"silence"`` (send nothing more, keep the connection open).
Step = list[dict[str, Any]] | str


@dataclass
class FakePolygonSocket:
    """Polygon's ``/stocks`` cluster: the auth handshake, then each connection plays ``scripts[n]``."""

    api_key: str
    scripts: list[list[Step]]
    received: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        ws.send(json.dumps([{"ev": "status", "status": "connected", "message": "Connected Successfully"}]))
        auth = json.loads(ws.recv(timeout=5))
        self.received.append(auth)
        if auth.get("action") != "auth" or auth.get("params") != self.api_key:
            ws.send(json.dumps([{"ev": "status", "status": "auth_failed", "message": "authentication failed"}]))
            return
        ws.send(json.dumps([{"ev": "status", "status": "auth_success", "message": "authenticated"}]))
        sub = json.loads(ws.recv(timeout=5))
        self.received.append(sub)
        ws.send(json.dumps([{"ev": "status", "status": "success", "message": f"subscribed to: {sub.get('params')}"}]))
        for step in self.scripts[min(index, len(self.scripts) - 1)]:
            if step == "drop":
                ws.socket.shutdown(socket.SHUT_RDWR)
                return
            if step == "silence":
                break
            ws.send(json.dumps(step))
        self._stop.wait()

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1 (a free port) in a thread; yields the ``ws://`` URL of the stocks cluster."""
        server = serve(self._handler, "127.0.0.1", 0)
        port = server.socket.getsockname()[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{port}/stocks"
        finally:
            self._stop.set()
            server.shutdown()
            thread.join(timeout=10)


def trade(sym: str, p: float, s: float, t_ms: int, q: int) -> dict[str, Any]:
    """A ``T`` event."""
    return {"ev": "T", "sym": sym, "x": 4, "i": str(q * 10), "z": 3, "p": p, "s": s, "c": [12], "t": t_ms, "q": q}


def quote(sym: str, bp: float, bs: float, ap: float, as_: float, t_ms: int, q: int) -> dict[str, Any]:
    """A ``Q`` event."""
    return {"ev": "Q", "sym": sym, "bx": 4, "bp": bp, "bs": bs, "ax": 7, "ap": ap, "as": as_, "c": 0, "t": t_ms, "q": q}
