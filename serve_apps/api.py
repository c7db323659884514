"""The signal API: FastAPI routes under ``/api/v1`` over a :class:`~serve_apps.backend.Backend`.

:func:`create_app` builds the application; the Ray Serve deployment wraps it as its ingress. Every route but
``/api/v1/health`` needs an API key (``Authorization: Bearer <key>`` or ``X-API-Key``), checked against the
hashed keys of a :class:`~serve_apps.keys.KeyStore`. Errors are JSON: ``{"error": ..., "detail": ...}``, with
the field named for a validation error, never a stack trace. ``/metrics`` serves Prometheus text (request counts
and latency histograms per route, and the pipeline's counters from its status).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from ingest.pipeline import interval_label, parse_interval
from ingest.records import BarBatch
from ingest.store.base import TimeRange
from serve_apps.backend import AlertQuery, Backend, BadAlertId, alert_records, filter_alerts, parse_alert_id
from serve_apps.keys import KeyRecord, KeyStore

API_PREFIX = "/api/v1"
#: Most bars one request returns.
MAX_BARS = 10_000
#: Most alerts or signals one page holds.
MAX_PAGE = 1_000

#: The two ways to present a key, declared as OpenAPI security schemes.
_BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <key>")

#: Bar lengths the API accepts: a whole number of seconds, minutes, hours or days.
INTERVAL_PATTERN = r"^[1-9][0-9]{0,4}(s|min|h|d)$"

SYMBOL = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._\-^=]+$", examples=["SPY"])]


# ---- response models (the OpenAPI document's schemas) ----------------------------------------------------
class Health(BaseModel):
    """Liveness."""

    status: str = Field(examples=["ok"])


class Assets(BaseModel):
    """Symbols with stored data."""

    assets: list[str] = Field(examples=[["BTC-USD", "SPY"]])


class BarRow(BaseModel):
    """One bar: start time (ns UTC), OHLC, volume, VWAP, trades, last quote, spread."""

    ts: int = Field(examples=[1704207600000000000])
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None = None
    trade_count: int
    bid: float | None = None
    ask: float | None = None
    spread: float | None = None


class Bars(BaseModel):
    """Bars of one symbol and length, oldest first."""

    symbol: str = Field(examples=["SPY"])
    interval: str = Field(examples=["1min"])
    bars: list[BarRow]


class FeatureVector(BaseModel):
    """The latest feature values of one bar length."""

    ts: int
    values: dict[str, float | None]


class Features(BaseModel):
    """The latest feature vector of a symbol per bar length label."""

    symbol: str
    features: dict[str, FeatureVector]


class Alert(BaseModel):
    """An alert: what, when, how severe, which models, why."""

    id: str = Field(examples=["WzE3MDQyMDc2MDAwMDAwMDAwMDAsIlNQWSIsImVuc2VtYmxlIiwiZmxhc2hfY3Jhc2giXQ"])
    ts: int = Field(examples=[1704207600000000000])
    symbol: str = Field(examples=["SPY"])
    kind: str = Field(examples=["flash_crash"])
    detector: str = Field(examples=["ensemble"])
    score: float | None = Field(examples=[4.2])
    level: str = Field(examples=["critical"])
    severity: float | None = Field(default=None, ge=0, le=1, examples=[0.9993])
    models: str | None = Field(default=None, examples=["garch=1.000;price_jump=0.999"])
    explanation: str | None = Field(default=None, examples=["flash crash: close -3.10% in one bar (-14.2 sd)"])
    details: dict[str, Any] = Field(default_factory=dict)


class AlertPage(BaseModel):
    """A page of alerts in time order; ``next_cursor`` fetches the next (``null`` on the last)."""

    alerts: list[Alert]
    next_cursor: str | None = None


class SignalRow(BaseModel):
    """A buy/sell/hold signal of a model."""

    ts: int
    symbol: str
    model: str
    action: str = Field(examples=["hold"])
    confidence: float = Field(ge=0, le=1)
    horizon_ns: int
    explanation: str | None = None


class LatestSignals(BaseModel):
    """What the pipeline says about a symbol now: its latest alert and its models' latest signals."""

    symbol: str
    alert: Alert | None = None
    signals: list[SignalRow]


class Signals(BaseModel):
    """Signal history, oldest first."""

    signals: list[SignalRow]


class Error(BaseModel):
    """An error: a code and what went wrong (the field and the value for bad input)."""

    error: str = Field(examples=["not_found"])
    detail: Any = Field(examples=["symbol='XYZ': no bars"])


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "Missing, unknown or revoked API key"},
    413: {"model": Error, "description": "Request too large"},
    422: {"model": Error, "description": "Invalid parameter (the field is named)"},
    429: {"model": Error, "description": "Rate limit of the key exceeded (see Retry-After)"},
}


# ---- the application ------------------------------------------------------------------------------------
class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sentinel_http_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sentinel_http_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self.pipeline = Gauge(
            "sentinel_pipeline", "Pipeline counters from its status", ["name"], registry=self.registry
        )


def _range(start: int | None, end: int | None) -> TimeRange:
    """``[start, end)``; an end at or before the start is an empty range (no rows), not an error."""
    if start is not None and end is not None and end < start:
        end = start
    return TimeRange(start, end)


def _bar_rows(bars: BarBatch) -> list[dict[str, Any]]:
    frame = pd.DataFrame(
        {
            "ts": bars.ts,
            "open": bars.open,
            "high": bars.high,
            "low": bars.low,
            "close": bars.close,
            "volume": bars.volume,
            "vwap": bars.vwap,
            "trade_count": bars.trade_count,
            "bid": bars.bid,
            "ask": bars.ask,
            "spread": bars.spread,
        }
    )
    frame = frame.astype(object).where(pd.notna(frame), None)
    return frame.to_dict("records")  # type: ignore[return-value]


def _signal_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if not len(frame):
        return []
    frame = frame.astype(object).where(pd.notna(frame), None)
    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


class RateLimiter:
    """Token buckets per API key: ``rate`` requests a second on average, bursts of ``burst``.

    Each replica keeps its own buckets (a key's limit is per replica).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError(f"rate={rate!r}: must be > 0")
        if burst < 1:
            raise ValueError(f"burst={burst!r}: must be >= 1")
        self.rate, self.burst, self._clock = float(rate), int(burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str) -> float:
        """Take a token for ``key_id``: 0 when granted, else the seconds until one is free."""
        now = self._clock()
        tokens, last = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.rate


def create_app(
    backend: Backend,
    keys: KeyStore,
    title: str = "Market Sentinel",
    rate_per_s: float = 1000.0,
    burst: int = 2000,
    max_request_bytes: int = 64 * 1024,
) -> FastAPI:
    """The API over ``backend``, with ``keys`` guarding every route but health.

    Parameters
    ----------
    backend : Backend
        Where the data comes from (:class:`~serve_apps.backend.StoreBackend`, :class:`~serve_apps.backend.RayBackend`).
    keys : KeyStore
        The hashed API keys.
    title : str
        The OpenAPI title.
    rate_per_s, burst : float, int
        Requests a key may make per second on average, and in a burst (per replica); beyond, 429 with
        ``Retry-After``.
    max_request_bytes : int
        Largest request (URL and body) accepted; beyond, 413 (URL: 414).
    """
    metrics = _Metrics()
    limiter = RateLimiter(rate_per_s, burst)
    app = FastAPI(
        title=title,
        version="1",
        description="Anomaly alerts, signals, bars and features of the Market Sentinel pipeline.",
        openapi_url="/openapi.json",
    )

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > max_request_bytes:
            response: Response = JSONResponse(
                {"error": "too_large", "detail": f"content-length={length!r}: at most {max_request_bytes} bytes"},
                status_code=413,
            )
        elif len(str(request.url)) > max_request_bytes:
            response = JSONResponse(
                {"error": "too_large", "detail": f"URL of {len(str(request.url))} characters: too long"},
                status_code=414,
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.latency.labels(path, request.method).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header")),
                "message": err.get("msg", ""),
                "value": err.get("input") if isinstance(err.get("input"), str | int | float | None) else None,
            }
            for err in exc.errors()
        ]
        return JSONResponse({"error": "invalid_request", "detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 422: "invalid_request", 429: "rate_limited"}.get(
            exc.status_code, "error"
        )
        return JSONResponse({"error": code, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "internal", "detail": "internal error"}, status_code=500)

    async def api_key(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
        header: Annotated[str | None, Security(_HEADER)],
    ) -> KeyRecord:
        presented = header if header else (bearer.credentials if bearer is not None else None)
        record = keys.verify(presented) if presented else None
        if record is None:
            raise HTTPException(
                401,
                detail="a valid API key is needed (Authorization: Bearer <key> or X-API-Key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        wait = limiter.take(record.id)
        if wait > 0:
            raise HTTPException(
                429,
                detail=f"key {record.id}: more than {rate_per_s:g} requests/s (bursts of {burst})",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return record

    @app.get(f"{API_PREFIX}/health", response_model=Health, tags=["system"])
    async def health() -> dict[str, str]:
        """Liveness (no key needed)."""
        return {"status": "ok"}

    secured = APIRouter(prefix=API_PREFIX, dependencies=[Depends(api_key)], responses=ERRORS)

    @secured.get("/status", tags=["system"])
    async def status() -> dict[str, Any]:
        """Per-asset progress of the pipeline (records, bars, alerts, last record, lag, restarts)."""
        doc = await backend.status()
        return doc if doc is not None else {"running": False, "assets": {}}

    @secured.get("/assets", response_model=Assets, tags=["market"])
    async def assets() -> dict[str, list[str]]:
        """Symbols with stored data."""
        return {"assets": await backend.assets()}

    @secured.get("/bars/{symbol}", response_model=Bars, tags=["market"])
    async def bars(
        symbol: SYMBOL,
        interval: Annotated[
            str,
            Query(
                pattern=INTERVAL_PATTERN,
                max_length=12,
                description="Bar length: 1s, 1min, 1h, 1d ...",
                examples=["1min"],
            ),
        ] = "1min",
        start: Annotated[int | None, Query(ge=0, description="From this time, ns UTC (inclusive)")] = None,
        end: Annotated[int | None, Query(ge=0, description="Before this time, ns UTC")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_BARS, description="The latest bars at most")] = 1000,
    ) -> dict[str, Any]:
        """Bars of a symbol and length in a time range (the latest ``limit``), oldest first."""
        try:
            interval_ns = parse_interval(interval)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        found = await backend.bars(symbol, interval_ns, _range(start, end))
        if len(found) > limit:
            found = found.take(slice(len(found) - limit, None))
        return {"symbol": symbol, "interval": interval_label(interval_ns), "bars": _bar_rows(found)}

    @secured.get("/features/{symbol}", response_model=Features, tags=["market"], responses={404: {"model": Error}})
    async def features(symbol: SYMBOL) -> dict[str, Any]:
        """The latest feature vector of a symbol, per bar length."""
        found = await backend.latest_features(symbol)
        if not found:
            raise HTTPException(404, detail=f"symbol={symbol!r}: no features yet")
        return {
            "symbol": symbol,
            "features": {label: {"ts": p["ts"], "values": p["values"]} for label, p in found.items()},
        }

    @secured.get("/alerts", response_model=AlertPage, tags=["alerts"])
    async def alerts(
        symbol: Annotated[str | None, Query(max_length=32, examples=["SPY"])] = None,
        kind: Annotated[str | None, Query(max_length=32, examples=["flash_crash"])] = None,
        min_severity: Annotated[float | None, Query(ge=0, le=1, examples=[0.99])] = None,
        start: Annotated[int | None, Query(ge=0, description="From this time, ns UTC (inclusive)")] = None,
        end: Annotated[int | None, Query(ge=0, description="Before this time, ns UTC")] = None,
        cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """Alerts by symbol, kind, minimum severity and time range, in time order, a page at a time."""
        frame = await backend.alerts(symbol, _range(start, end))
        query = AlertQuery(symbol, kind, min_severity, _range(start, end), cursor, limit)
        try:
            page, next_cursor = filter_alerts(frame, query)
        except BadAlertId as exc:
            raise HTTPException(422, detail=f"cursor={cursor!r}: not a cursor this API issued") from exc
        return {"alerts": page, "next_cursor": next_cursor}

    @secured.get("/alerts/{alert_id}", response_model=Alert, tags=["alerts"], responses={404: {"model": Error}})
    async def alert(alert_id: Annotated[str, Path(min_length=1, max_length=512)]) -> dict[str, Any]:
        """One alert by its id."""
        try:
            ts, symbol, detector, kind = parse_alert_id(alert_id)
        except BadAlertId as exc:
            raise HTTPException(404, detail=f"id={alert_id!r}: no such alert") from exc
        frame = await backend.alerts(symbol, TimeRange(ts, ts + 1))
        frame = frame[(frame["detector"] == detector) & (frame["kind"] == kind)]
        if not len(frame):
            raise HTTPException(404, detail=f"id={alert_id!r}: no such alert")
        return alert_records(frame)[0]

    @secured.get("/signals/{symbol}", response_model=LatestSignals, tags=["signals"])
    async def latest_signals(symbol: SYMBOL) -> dict[str, Any]:
        """What the pipeline says about a symbol now: its latest alert and each model's latest signal."""
        found = await backend.latest_alert(symbol)
        latest = alert_records(found) if len(found) else []
        signals = await backend.signals(symbol, TimeRange())
        if len(signals):
            signals = signals.sort_values("ts", kind="stable").groupby("model", sort=True).tail(1)
        return {"symbol": symbol, "alert": latest[0] if latest else None, "signals": _signal_rows(signals)}

    @secured.get("/signals", response_model=Signals, tags=["signals"])
    async def signal_history(
        symbol: Annotated[str | None, Query(max_length=32)] = None,
        start: Annotated[int | None, Query(ge=0)] = None,
        end: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """Signal history (the latest ``limit``), oldest first."""
        frame = await backend.signals(symbol, _range(start, end))
        return {"signals": _signal_rows(frame.tail(limit))}

    app.include_router(secured)

    @app.get(
        "/metrics",
        tags=["system"],
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
            401: {"model": Error},
            429: {"model": Error},
        },
        dependencies=[Depends(api_key)],
    )
    async def prometheus() -> Response:
        """Prometheus metrics: request counts and latency per route, the pipeline's counters."""
        doc = await backend.status()
        if doc:
            for name in ("received", "entries_acked", "recoveries", "hub_dropped"):
                value = doc.get(name)
                if isinstance(value, int | float):
                    metrics.pipeline.labels(name).set(value)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
