"""Tick-level features of one symbol's trades: time between trades and trade bursts.

:class:`TickFeatureEngine` follows the bar engine's contract on a :class:`~ingest.records.TickBatch`: a state
made by :meth:`TickFeatureEngine.init_state`, one :meth:`TickFeatureEngine.step` over new trades that advances
it, and :meth:`TickFeatureEngine.batch` as one step over a whole history. Streaming in any split equals the
batch result bit for bit: the window counts are integers kept by a sequential kernel with a carried queue.

Trades arrive time-ordered (``ts`` non-decreasing: prints sharing a timestamp are common on real tapes). Each
value depends only on the trades up to and including that row, in arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.records import F64, I64, NS_PER_SECOND, TickBatch

_UNITS = (
    ("d", 86_400 * NS_PER_SECOND),
    ("h", 3_600 * NS_PER_SECOND),
    ("min", 60 * NS_PER_SECOND),
    ("s", NS_PER_SECOND),
    ("ms", 1_000_000),
    ("us", 1_000),
)


def duration_label(ns: int) -> str:
    """A duration as it appears in a column name, in its largest whole unit: ``1_000_000_000 -> "1s"``."""
    for unit, size in _UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


@numba.njit(cache=True, nogil=True)
def window_counts(ts: I64, window_ns: int, buf: I64, ist: I64, out: I64) -> None:  # pragma: no cover
    """Trades with timestamp in ``(t - window_ns, t]`` for each trade, itself included, earlier ones only.

    A queue of the timestamps still in the window lives in ``buf`` from ``ist[0]`` (head) with ``ist[1]``
    entries; the caller guarantees room for ``ist[1] + len(ts)`` entries. Trades after the current row that
    share its timestamp are not counted yet (they have not arrived).
    """
    cap = buf.shape[0]
    for i in range(ts.shape[0]):
        if ist[0] + ist[1] >= cap:
            for r in range(ist[1]):
                buf[r] = buf[ist[0] + r]
            ist[0] = 0
        buf[ist[0] + ist[1]] = ts[i]
        ist[1] += 1
        cutoff = ts[i] - window_ns
        while ist[1] > 0 and buf[ist[0]] <= cutoff:
            ist[0] += 1
            ist[1] -= 1
        out[i] = ist[1]


@dataclass
class _Queue:
    """The timestamps of one time window (see :func:`window_counts`)."""

    buf: I64
    ist: I64

    def counts(self, ts: I64, window_ns: int) -> I64:
        need = int(self.ist[1]) + len(ts)
        if self.buf.shape[0] < need:
            h, size = int(self.ist[0]), int(self.ist[1])
            grown = np.zeros(max(need, 2 * self.buf.shape[0]), np.int64)
            grown[:size] = self.buf[h : h + size]
            self.buf = grown
            self.ist[0] = 0
        out = np.empty(len(ts), np.int64)
        window_counts(ts, window_ns, self.buf, self.ist, out)
        return out


@dataclass
class TickState:
    """What a :class:`TickFeatureEngine` carries between steps for one symbol (picklable)."""

    last_ts: int
    symbol: str | None = None
    rows: int = 0
    queues: list[_Queue] = field(default_factory=list)


class TickFeatureEngine:
    """Features of each trade of one symbol.

    Columns: ``ts`` (the trade time, int64 ns UTC); ``inter_trade_s``, seconds since the previous trade (0 for
    prints sharing a timestamp, NaN for the first trade); and for each window, ``burst_rate_<window>``, the trades
    in ``(t - window, t]`` (the current one included) per second of window, e.g. ``burst_rate_1s``.

    Parameters
    ----------
    windows : sequence of str
        Burst windows as durations (``"1s"``, ``"100ms"``, ``"1min"``), each > 0 and distinct.

    Examples
    --------
    >>> from ingest.records import Tick, TickBatch
    >>> ticks = TickBatch.from_ticks([Tick(t * 250_000_000, "SPY", 100.0, 1.0) for t in range(6)])
    >>> out = TickFeatureEngine(("1s",)).batch(ticks)
    >>> out["inter_trade_s"].tolist()
    [nan, 0.25, 0.25, 0.25, 0.25, 0.25]
    >>> out["burst_rate_1s"].tolist()
    [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]
    """

    def __init__(self, windows: Sequence[str] = ("1s",)) -> None:
        if isinstance(windows, str):
            windows = (windows,)
        ns: list[int] = []
        for w in windows:
            try:
                value = int(pd.Timedelta(str(w)).value)
            except ValueError as exc:
                raise ValueError(f"windows={w!r}: not a duration (e.g. 100ms, 1s, 1min)") from exc
            if value <= 0:
                raise ValueError(f"windows={w!r}: must be positive")
            if value in ns:
                raise ValueError(f"windows={w!r}: appears twice")
            ns.append(value)
        if not ns:
            raise ValueError(f"windows={windows!r}: give at least one window")
        self.windows = tuple(str(w) for w in windows)
        self._window_ns = tuple(ns)
        self.columns = ("ts", "inter_trade_s", *(f"burst_rate_{duration_label(v)}" for v in ns))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(windows={self.windows!r})"

    def init_state(self) -> TickState:
        """A fresh state (no trade seen)."""
        return TickState(
            last_ts=int(np.iinfo(np.int64).min),
            queues=[_Queue(np.zeros(64, np.int64), np.zeros(2, np.int64)) for _ in self._window_ns],
        )

    def _check(self, state: TickState, ticks: TickBatch) -> None:
        ts = ticks.ts
        if ts[0] < state.last_ts:
            raise ValueError(f"ts={int(ts[0])!r}: before the last trade seen ({state.last_ts})")
        steps = np.diff(ts)
        if (steps < 0).any():
            raise ValueError(f"ts={int(ts[1:][steps < 0][0])!r}: trades must be in time order")
        symbol = state.symbol if state.symbol is not None else ticks.symbol[0]
        other = ticks.symbol != symbol
        if other.any():
            raise ValueError(f"symbol={ticks.symbol[other][0]!r}: the engine follows one symbol ({symbol!r})")

    def step(self, state: TickState, ticks: TickBatch) -> tuple[dict[str, npt.NDArray[Any]], TickState]:
        """Features of new trades; ``state`` is advanced (in place) and returned.

        Raises
        ------
        ValueError
            Naming the ``ts`` of a trade out of time order, or the ``symbol`` of a trade of another symbol.
        """
        n = len(ticks)
        if n == 0:
            empty: dict[str, npt.NDArray[Any]] = {c: np.empty(0) for c in self.columns}
            empty["ts"] = np.empty(0, np.int64)
            return empty, state
        self._check(state, ticks)
        ts = ticks.ts
        prev = np.empty(n, np.int64)
        prev[0] = state.last_ts if state.rows else ts[0]
        prev[1:] = ts[:-1]
        gap: F64 = (ts - prev).astype(np.float64) / NS_PER_SECOND
        if state.rows == 0:
            gap[0] = np.nan
        out: dict[str, npt.NDArray[Any]] = {"ts": ts.copy(), "inter_trade_s": gap}
        for col, window_ns, queue in zip(self.columns[2:], self._window_ns, state.queues, strict=True):
            out[col] = queue.counts(ts, window_ns).astype(np.float64) / (window_ns / NS_PER_SECOND)
        state.last_ts = int(ts[-1])
        state.symbol = str(ticks.symbol[0]) if state.symbol is None else state.symbol
        state.rows += n
        return out, state

    def batch(self, ticks: TickBatch) -> dict[str, npt.NDArray[Any]]:
        """Features of a whole history of trades, one step from a fresh state."""
        out, _ = self.step(self.init_state(), ticks)
        return out


def per_bar(values: dict[str, npt.NDArray[Any]], interval_ns: int) -> pd.DataFrame:
    """Tick features summarised per time bar ``[start, start + interval_ns)``, indexed by bar start (UTC).

    Columns: ``trades`` (count), ``inter_trade_s_mean`` and ``inter_trade_s_max`` (seconds), and
    ``<burst column>_max`` (trades per second) for each burst window. Bars without trades are absent. Give it
    values of whole bars: a bar split between two steps' outputs gives two partial rows.
    """
    if interval_ns <= 0:
        raise ValueError(f"interval_ns={interval_ns!r}: must be > 0")
    ts = np.asarray(values["ts"], dtype=np.int64)
    frame = pd.DataFrame({k: v for k, v in values.items() if k != "ts"})
    start = pd.to_datetime(ts - ts % interval_ns, utc=True)
    groups = frame.groupby(pd.DatetimeIndex(start, name="ts"), sort=True)
    out = pd.DataFrame({"trades": groups.size().astype(np.int64)})
    out["inter_trade_s_mean"] = groups["inter_trade_s"].mean()
    out["inter_trade_s_max"] = groups["inter_trade_s"].max()
    for col in frame.columns:
        if col.startswith("burst_rate_"):
            out[f"{col}_max"] = groups[col].max()
    return out


__all__ = ["TickFeatureEngine", "TickState", "duration_label", "per_bar", "window_counts"]
