"""Replays of recorded history: files in the input contract and the real daily history shipped with ``arch``.

A replay emits rows in their recorded order, paced by their timestamps: at ``speed=60`` a minute of market
time takes a second, at ``speed=None`` it goes as fast as the consumer takes batches. Trades, quotes and bars
of one replay share one clock, so they interleave as they did in the market.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.files import FileKind, infer_bar_interval, read_market_file
from ingest.records import NS_PER_DAY, NS_PER_SECOND, parse_timestamps, to_ns
from ingest.sources.base import RawBatch

_NAT = np.iinfo(np.int64).min
#: Longest single sleep while pacing, in seconds, so that a cancelled replay stops promptly.
_MAX_SLEEP_S = 0.25


class FrameReplay:
    """Replays raw frames (trades, quotes, bars) on one clock.

    Parameters
    ----------
    trades, quotes, bars : DataFrame, optional
        Frames in the input contract, each in arrival order.
    bar_interval_ns : int, optional
        Length of the bars; inferred from their timestamps when absent.
    speed : float or None
        Market time per wall time (60 = a minute per second); ``None`` for as fast as possible.
    batch_rows : int
        Most rows of each kind in one batch.
    name : str
        Shown in progress and written to quarantined rows.
    """

    def __init__(
        self,
        trades: pd.DataFrame | None = None,
        quotes: pd.DataFrame | None = None,
        bars: pd.DataFrame | None = None,
        bar_interval_ns: int | None = None,
        speed: float | None = None,
        batch_rows: int = 10_000,
        name: str = "replay",
    ) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed={speed!r}: must be > 0 (or None for as fast as possible)")
        if batch_rows < 1:
            raise ValueError(f"batch_rows={batch_rows!r}: must be >= 1")
        self.name = name
        self.speed = speed
        self.batch_rows = batch_rows
        given: tuple[tuple[FileKind, pd.DataFrame | None], ...] = (
            ("trades", trades),
            ("quotes", quotes),
            ("bars", bars),
        )
        self._frames: dict[FileKind, pd.DataFrame] = {
            k: f.reset_index(drop=True) for k, f in given if f is not None and len(f)
        }
        if bars is not None and len(bars) and bar_interval_ns is None:
            bar_interval_ns = infer_bar_interval(bars)
        self.bar_interval_ns = bar_interval_ns
        # pacing key: running max of the parsed timestamps, so that a late or unreadable row travels with its
        # neighbours (validation then judges it)
        self._keys: dict[FileKind, np.ndarray] = {}
        for kind, frame in self._frames.items():
            col = frame["timestamp"]
            ts = parse_timestamps(col) if col.dtype == object else to_ns(col)
            self._keys[kind] = np.maximum.accumulate(np.where(ts == _NAT, _NAT, ts))
        self.rows_total = sum(len(f) for f in self._frames.values())
        self.first_ts = min((int(k[k != _NAT][0]) for k in self._keys.values() if (k != _NAT).any()), default=None)
        self.last_ts = max((int(k[-1]) for k in self._keys.values() if len(k)), default=None)

    async def batches(self) -> AsyncGenerator[RawBatch, None]:
        """Yield the rows in batches, paced by their timestamps."""
        cursor = dict.fromkeys(self._frames, 0)
        if not self._frames:
            return
        t0 = self.first_ts if self.first_ts is not None else 0
        wall0 = time.monotonic()
        while any(cursor[k] < len(self._frames[k]) for k in self._frames):
            if self.speed is None:
                horizon = self._next_horizon(cursor)
            else:
                horizon = t0 + int((time.monotonic() - wall0) * self.speed * NS_PER_SECOND)
                due = min(int(self._keys[k][cursor[k]]) for k in self._frames if cursor[k] < len(self._frames[k]))
                if due > horizon:
                    wait = (due - horizon) / NS_PER_SECOND / self.speed
                    await asyncio.sleep(min(wait, _MAX_SLEEP_S))
                    continue
            parts: dict[FileKind, pd.DataFrame] = {}
            for kind, frame in self._frames.items():
                lo = cursor[kind]
                hi = min(int(np.searchsorted(self._keys[kind], horizon, side="right")), lo + self.batch_rows)
                if hi > lo:
                    parts[kind] = frame.iloc[lo:hi]
                    cursor[kind] = hi
            if parts:
                yield RawBatch(
                    trades=parts.get("trades"),
                    quotes=parts.get("quotes"),
                    bars=parts.get("bars"),
                    bar_interval_ns=self.bar_interval_ns if "bars" in parts else None,
                )
            else:
                await asyncio.sleep(0)

    def _next_horizon(self, cursor: dict[FileKind, int]) -> int:
        """As fast as possible: the timestamp up to which the earliest frame fills one batch."""
        best: int | None = None
        for kind, keys in self._keys.items():
            i = cursor[kind]
            if i < len(keys):
                h = int(keys[min(i + self.batch_rows, len(keys)) - 1])
                best = h if best is None else min(best, h)
        return best if best is not None else _NAT


class FileReplay(FrameReplay):
    """Replays CSV/Parquet files in the input contract, or a directory holding them.

    A directory replays every ``.csv``, ``.csv.gz`` and ``.parquet`` file in it (a simulator's output folder:
    trades, quotes and bars together). Files of the same kind are merged by timestamp.
    """

    def __init__(
        self,
        paths: Sequence[Path | str] | Path | str,
        speed: float | None = None,
        batch_rows: int = 10_000,
        symbol: str | None = None,
        kinds: Sequence[FileKind] = ("trades", "quotes", "bars"),
    ) -> None:
        files = _expand(paths)
        by_kind: dict[FileKind, list[pd.DataFrame]] = {}
        for f in files:
            kind, frame = read_market_file(f, symbol=symbol)
            if kind in kinds:
                by_kind.setdefault(kind, []).append(frame)
        merged = {k: _merge_by_time(v) for k, v in by_kind.items()}
        super().__init__(
            trades=merged.get("trades"),
            quotes=merged.get("quotes"),
            bars=merged.get("bars"),
            speed=speed,
            batch_rows=batch_rows,
            name=",".join(Path(f).name for f in files),
        )


def _expand(paths: Sequence[Path | str] | Path | str) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.name.lower().endswith((".csv", ".csv.gz", ".parquet"))
                and not f.name.lower().startswith(("labels", "regimes"))
            )
            if not found:
                raise FileNotFoundError(f"{p}: no .csv, .csv.gz or .parquet files in this directory")
            out.extend(found)
        else:
            out.append(p)
    return out


def _merge_by_time(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    merged = pd.concat(frames, ignore_index=True)
    col = merged["timestamp"]
    key = parse_timestamps(col) if col.dtype == object else to_ns(col)
    return merged.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)


#: The daily series shipped inside the ``arch`` package, by the symbol they replay under.
ARCH_SERIES: dict[str, str] = {"SP500": "sp500", "NASDAQ": "nasdaq", "VIX": "vix", "WTI": "wti"}


def arch_daily_bars(symbols: Sequence[str] = tuple(ARCH_SERIES), start: str | None = "1999-01-01") -> pd.DataFrame:
    """Real daily history from the ``arch`` package as one bars frame in the input contract.

    S&P 500 and NASDAQ Composite carry OHLCV (1999-2018); VIX (2014-2018) and WTI crude (1986-2018) are
    close-only series, replayed as bars with open = high = low = close and zero volume. Each bar is labelled by
    its trading date at 00:00 UTC and covers that day. Missing closes (holidays in the WTI series) stay NaN:
    validation quarantines them, as it would in a live feed.
    """
    import importlib

    frames = []
    for sym in symbols:
        if sym not in ARCH_SERIES:
            raise ValueError(f"symbols: {sym!r} is not an arch series (have {sorted(ARCH_SERIES)})")
        data = importlib.import_module(f"arch.data.{ARCH_SERIES[sym]}").load()
        if {"Open", "High", "Low", "Close", "Volume"} <= set(data.columns):
            f = pd.DataFrame(
                {
                    "open": data["Open"],
                    "high": data["High"],
                    "low": data["Low"],
                    "close": data["Close"],
                    "volume": data["Volume"].astype(float),
                }
            )
        else:
            close = data.iloc[:, 0].astype(float)
            f = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 0.0})
        f.insert(0, "symbol", sym)
        f.insert(0, "timestamp", pd.DatetimeIndex(data.index).tz_localize("UTC"))
        frames.append(f.reset_index(drop=True))
    bars = pd.concat(frames, ignore_index=True).sort_values(["timestamp", "symbol"], kind="stable")
    if start is not None:
        bars = bars[bars["timestamp"] >= pd.Timestamp(start, tz="UTC")]
    return bars.reset_index(drop=True)


class ArchReplay(FrameReplay):
    """Replays the real daily history shipped with ``arch`` (see :func:`arch_daily_bars`).

    ``speed`` is market time per wall time: 86,400 replays one trading day per second.
    """

    def __init__(
        self,
        symbols: Sequence[str] = tuple(ARCH_SERIES),
        speed: float | None = 86_400.0,
        start: str | None = "1999-01-01",
        batch_rows: int = 10_000,
    ) -> None:
        super().__init__(
            bars=arch_daily_bars(symbols, start),
            bar_interval_ns=NS_PER_DAY,
            speed=speed,
            batch_rows=batch_rows,
            name="arch-daily",
        )
