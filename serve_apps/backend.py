"""Where the API reads from: the history store (bars, alerts, signals) and the hub (live status, latest features).

:class:`StoreBackend` reads a :class:`~ingest.store.base.Store` it is given (in-process: tests, tools) and,
optionally, a hub; :class:`RayBackend` reads through the running pipeline's writer actor (which owns the store:
a DuckDB file takes one writer) and hub actor. Both answer the same questions, as plain Python values, without
blocking the event loop (store reads run in a worker thread).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ingest.records import BarBatch
from ingest.store.base import ALERT_COLUMNS, ALL_TIME, Store, TimeRange

#: An alerts frame without rows.
_NO_ALERTS = pd.DataFrame({c: [] for c in ALERT_COLUMNS})


class BadAlertId(ValueError):
    """An alert id or cursor that this API did not issue."""


def alert_id(ts: int, symbol: str, detector: str, kind: str) -> str:
    """The id of an alert: its natural key ``(ts, symbol, detector, kind)``, URL-safe."""
    raw = json.dumps([int(ts), symbol, detector, kind], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_alert_id(text: str) -> tuple[int, str, str, str]:
    """The natural key in an alert id.

    Raises
    ------
    BadAlertId
        When ``text`` is not an id this API issued (naming it).
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        ts, symbol, detector, kind = json.loads(raw)
        if not (isinstance(ts, int) and all(isinstance(v, str) for v in (symbol, detector, kind))):
            raise TypeError
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadAlertId(f"id={text!r}: not an alert id") from exc
    return ts, symbol, detector, kind


def _clean(value: Any) -> Any:
    """JSON-safe scalars: numpy to Python, NaN to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def alert_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of the alerts table as API records (id, ts, symbol, kind, detector, score, level, severity, models,
    explanation, details)."""
    out = []
    for row in frame.to_dict("records"):
        details: dict[str, Any] = {}
        text = row.get("details")
        if isinstance(text, str) and text:
            try:
                parsed = json.loads(text)
                details = parsed if isinstance(parsed, dict) else {"value": parsed}
            except json.JSONDecodeError:
                details = {"text": text}
        severity = details.get("severity")
        ts, symbol, detector, kind = int(row["ts"]), str(row["symbol"]), str(row["detector"]), str(row["kind"])
        out.append(
            {
                "id": alert_id(ts, symbol, detector, kind),
                "ts": ts,
                "symbol": symbol,
                "kind": kind,
                "detector": detector,
                "score": _clean(float(row["score"])),
                "level": str(row["severity"]),
                "severity": _clean(float(severity)) if isinstance(severity, int | float) else None,
                "models": details.get("models"),
                "explanation": details.get("explanation"),
                "details": {k: _clean(v) for k, v in details.items()},
            }
        )
    return out


@dataclass(frozen=True)
class AlertQuery:
    """Filters of the alerts listing; ``after`` is the id of the last alert of the previous page."""

    symbol: str | None = None
    kind: str | None = None
    min_severity: float | None = None
    when: TimeRange = ALL_TIME
    after: str | None = None
    limit: int = 100


def filter_alerts(frame: pd.DataFrame, query: AlertQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of alerts in key order (ts, symbol, detector, kind) and the cursor of the next (``None``: last).

    Raises
    ------
    BadAlertId
        When ``query.after`` is not an alert id.
    """
    if query.kind is not None:
        frame = frame[frame["kind"] == query.kind]
    frame = frame.sort_values(["ts", "symbol", "detector", "kind"], kind="stable")
    if query.after is not None:
        ts, symbol, detector, kind = parse_alert_id(query.after)
        key = list(zip(frame["ts"], frame["symbol"], frame["detector"], frame["kind"], strict=True))
        after = np.array([k > (ts, symbol, detector, kind) for k in key], dtype=np.bool_)
        frame = frame[after] if len(frame) else frame
    records = alert_records(frame)
    if query.min_severity is not None:
        # alerts without a severity in [0, 1] (rules with a level only) do not pass a severity filter
        records = [r for r in records if r["severity"] is not None and r["severity"] >= query.min_severity]
    page = records[: query.limit]
    cursor = page[-1]["id"] if len(records) > query.limit and page else None
    return page, cursor


class Backend(Protocol):
    """What the API needs from the running system."""

    async def status(self) -> dict[str, Any] | None:
        """The pipeline's latest status document (per-asset progress), ``None`` before any."""
        ...

    async def assets(self) -> list[str]:
        """Symbols with stored data, sorted."""
        ...

    async def bars(self, symbol: str, interval_ns: int, when: TimeRange) -> BarBatch:
        """Bars of one symbol and length in a time range."""
        ...

    async def latest_features(self, symbol: str) -> dict[str, Any]:
        """The latest feature vector of ``symbol`` per bar length (label -> {ts, values}); empty when none."""
        ...

    async def alerts(self, symbol: str | None, when: TimeRange) -> pd.DataFrame:
        """Rows of the alerts table, optionally of one symbol, in a time range."""
        ...

    async def latest_alert(self, symbol: str) -> pd.DataFrame:
        """The latest row of the alerts table of ``symbol`` (none: an empty frame)."""
        ...

    async def signals(self, symbol: str | None, when: TimeRange) -> pd.DataFrame:
        """Rows of the signals table, optionally of one symbol, in a time range."""
        ...


class StoreBackend:
    """Reads a store in this process (and a hub handle, when given, for status and features).

    Parameters
    ----------
    store : Store
        The history store.
    hub : Ray actor handle, optional
        The hub of the streaming core.
    """

    def __init__(self, store: Store, hub: Any = None) -> None:
        self.store = store
        self.hub = hub

    async def status(self) -> dict[str, Any] | None:
        """The hub's status document, or ``None``."""
        if self.hub is None:
            return None
        value: dict[str, Any] | None = await self.hub.latest.remote("status")
        return value

    async def assets(self) -> list[str]:
        """Symbols with stored data."""
        return await asyncio.to_thread(self.store.symbols)

    async def bars(self, symbol: str, interval_ns: int, when: TimeRange) -> BarBatch:
        """Stored bars."""
        return await asyncio.to_thread(self.store.read_bars, symbol, interval_ns, when)

    async def latest_features(self, symbol: str) -> dict[str, Any]:
        """Latest features from the hub (empty without one)."""
        if self.hub is None:
            return {}
        value: dict[str, Any] = await self.hub.latest_features.remote(symbol)
        return value

    async def alerts(self, symbol: str | None, when: TimeRange) -> pd.DataFrame:
        """Stored alerts."""
        return await asyncio.to_thread(self.store.read_alerts, symbol, when)

    async def latest_alert(self, symbol: str) -> pd.DataFrame:
        """The hub's latest alert of ``symbol`` when the hub knows the symbol, else the store's."""
        if self.hub is not None:
            known, alert = await self.hub.latest_alert.remote(symbol)
            if known:
                return pd.DataFrame([alert], columns=list(ALERT_COLUMNS)) if alert else _NO_ALERTS
        found = await self.alerts(symbol, ALL_TIME)
        return found.tail(1)

    async def signals(self, symbol: str | None, when: TimeRange) -> pd.DataFrame:
        """Stored signals."""
        return await asyncio.to_thread(self.store.read_signals, symbol, when)


class RayBackend(StoreBackend):
    """Reads through the pipeline's writer actor (the store's owner) and its hub.

    Parameters
    ----------
    writer, hub : Ray actor handles
        :class:`~actors.writer.WriterActor` and :class:`~actors.hub.Hub` of the running pipeline.
    """

    def __init__(self, writer: Any, hub: Any, signals_ttl_s: float = 1.0) -> None:
        self.writer = writer
        self.hub = hub
        self.signals_ttl_s = signals_ttl_s
        self._signals: dict[str, tuple[float, pd.DataFrame]] = {}

    async def assets(self) -> list[str]:
        """Symbols with stored data."""
        value: list[str] = await self.writer.read.remote("symbols")
        return value

    async def bars(self, symbol: str, interval_ns: int, when: TimeRange) -> BarBatch:
        """Stored bars."""
        value: BarBatch = await self.writer.read.remote("read_bars", symbol, interval_ns, when)
        return value

    async def alerts(self, symbol: str | None, when: TimeRange) -> pd.DataFrame:
        """Stored alerts."""
        value: pd.DataFrame = await self.writer.read.remote("read_alerts", symbol, when)
        return value

    async def signals(self, symbol: str | None, when: TimeRange) -> pd.DataFrame:
        """Stored signals; a symbol's whole history is cached for ``signals_ttl_s`` (the latest-signals route asks
        for it on every request, and the store has one reader: the writer actor)."""
        whole = symbol is not None and when == ALL_TIME
        now = time.monotonic()
        if whole:
            cached = self._signals.get(str(symbol))
            if cached is not None and now - cached[0] < self.signals_ttl_s:
                return cached[1]
        value: pd.DataFrame = await self.writer.read.remote("read_signals", symbol, when)
        if whole:
            self._signals[str(symbol)] = (now, value)
        return value
