"""``sentinel detect``: the anomaly ensemble over market-data files, as a stream, into an alerts CSV.

The files are read in batches (:class:`~ingest.sources.replay.FileReplay`), validated the way the live pipeline
validates (:class:`~ingest.pipeline.BatchValidation`), split per symbol, turned into bars and features by one
:class:`~ingest.asset.AssetProcessor` per symbol (trades and quotes build bars of ``interval_ns``; input bars
are used as they are), and each symbol's bars and features go through its own walk-forward ensemble
(:class:`~models.ensemble.WalkForward`) batch by batch: the same steps, in the same order, that the
per-asset actors run live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from ingest.asset import AssetOutput, AssetProcessor
from ingest.pipeline import BatchValidation, PipelineStats
from ingest.records import NS_PER_MINUTE, BarBatch, QuoteBatch, TickBatch
from ingest.sources.replay import FileReplay
from ingest.validation import ValidationConfig
from models.base import Observations
from models.ensemble import ALERT_FRAME_COLUMNS
from models.walkforward import WalkForward, WalkState

#: Columns of the alerts CSV.
CSV_COLUMNS: tuple[str, ...] = ("timestamp", "symbol", "kind", "severity", "score", "models", "explanation")


@dataclass
class DetectRun:
    """What a detection run read and found."""

    alerts: pd.DataFrame
    stats: PipelineStats
    bars: dict[str, int] = field(default_factory=dict)
    scored: dict[str, int] = field(default_factory=dict)
    fits: dict[str, int] = field(default_factory=dict)


class Detection:
    """Per-symbol bars, features and walk-forward ensembles over a stream of validated batches.

    Parameters
    ----------
    walk : WalkForward
        The schedule and ensemble each symbol gets a state of.
    interval_ns : int
        Length of the bars built from trades and quotes (input bars keep theirs).
    lateness_ns : int
        How long a bar waits for late rows.
    """

    def __init__(self, walk: WalkForward, interval_ns: int = NS_PER_MINUTE, lateness_ns: int = 10**9) -> None:
        self.walk = walk
        self.interval_ns = interval_ns
        self.lateness_ns = lateness_ns
        self._procs: dict[str, AssetProcessor] = {}
        self._states: dict[str, WalkState] = {}
        self._alerts: list[pd.DataFrame] = []
        self.bars: dict[str, int] = {}
        self.scored: dict[str, int] = {}

    def feed(self, ticks: TickBatch | None, quotes: QuoteBatch | None, bars: BarBatch | None) -> None:
        """Fold one validated batch (any symbols)."""
        symbols: set[str] = set()
        for rows in (ticks, quotes, bars):
            if rows is not None and len(rows):
                symbols.update(str(s) for s in np.unique(rows.symbol))
        for symbol in sorted(symbols):
            proc = self._proc(symbol)
            out = proc.process(_one(ticks, symbol), _one(quotes, symbol), _one(bars, symbol))
            self._score(out)

    def finish(self) -> pd.DataFrame:
        """Close every open bar, score it, and return all alerts (time order, then symbol)."""
        for proc in self._procs.values():
            self._score(proc.flush())
        found = [a for a in self._alerts if len(a)]
        if not found:
            return pd.DataFrame({c: [] for c in ALERT_FRAME_COLUMNS})
        return pd.concat(found, ignore_index=True).sort_values(["ts", "symbol"], kind="stable", ignore_index=True)

    @property
    def fits(self) -> dict[str, int]:
        """Ensemble fits per symbol."""
        return {s: st.fits for s, st in self._states.items()}

    def _proc(self, symbol: str) -> AssetProcessor:
        proc = self._procs.get(symbol)
        if proc is None:
            proc = self._procs[symbol] = AssetProcessor(symbol, (self.interval_ns,), self.lateness_ns)
            self._states[symbol] = self.walk.init_state()
        return proc

    def _score(self, out: AssetOutput) -> None:
        # one bar length per symbol: built from its trades and quotes, or the length of its input bars
        for interval, bars in out.bars.items():
            obs = Observations.from_bars(bars, out.features.get(interval))
            scores = self.walk.update(self._states[out.symbol], obs)
            self.bars[out.symbol] = self.bars.get(out.symbol, 0) + len(obs)
            self.scored[out.symbol] = self.scored.get(out.symbol, 0) + int(
                np.isfinite(np.column_stack(list(scores.evidence.values()))).any(axis=1).sum()
            )
            if len(scores.alerts):
                self._alerts.append(scores.alerts)


_R = TypeVar("_R", TickBatch, QuoteBatch, BarBatch)


def _one(rows: _R | None, symbol: str) -> _R | None:
    if rows is None or not len(rows):
        return None
    mask = rows.symbol == symbol
    return rows if mask.all() else (rows.take(mask) if mask.any() else None)


def run_detect(
    files: Sequence[Path],
    walk: WalkForward,
    interval_ns: int = NS_PER_MINUTE,
    symbol: str | None = None,
    validation: ValidationConfig | None = None,
    batch_rows: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> DetectRun:
    """Detect anomalies in ``files`` (see the module doc).

    Raises
    ------
    FileFormatError, FileNotFoundError, ValueError
        When a file is not in the input contract (naming it and what is wrong).
    """
    replay = FileReplay(files, speed=None, batch_rows=batch_rows, symbol=symbol)
    # the files are history: no row is "in the future" of the wall clock that reads them
    check = BatchValidation(validation or ValidationConfig(), clock=lambda: np.iinfo(np.int64).max, source=replay.name)
    detection = Detection(walk, interval_ns)

    async def feed() -> None:
        async for batch in replay.batches():
            v = check.validate(batch)
            detection.feed(v.ticks, v.quotes, v.bars)
            if progress is not None:
                progress(len(batch))

    asyncio.run(feed())
    alerts = detection.finish()
    return DetectRun(alerts, check.stats, detection.bars, detection.scored, detection.fits)


def alerts_csv(alerts: pd.DataFrame) -> pd.DataFrame:
    """Alerts in the CSV layout: ``timestamp`` as ISO-8601 UTC, then the alert columns."""
    out = alerts.rename(columns={"ts": "timestamp"}).copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"].astype("int64"), utc=True)
    return out.loc[:, list(CSV_COLUMNS)]
