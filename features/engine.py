"""Feature sets (configuration) and the engine that steps a set over one asset's bars.

A :class:`FeatureSet` is data: a tuple of feature specifications, loadable from a list of dicts (TOML, JSON).
A :class:`FeatureEngine` computes a set over bars of one interval: :meth:`FeatureEngine.step` for streaming
(state in, state out), :meth:`FeatureEngine.batch` for a whole history, and :meth:`FeatureEngine.frame` for a
multi-symbol :class:`~ingest.records.BarBatch` (one independent state per symbol).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.base import BarInput, Feature, make_feature
from features.kernels import lagged
from ingest.records import F64, I64, BarBatch


@dataclass(frozen=True)
class FeatureSet:
    """An ordered, duplicate-free collection of features; a configuration, not code."""

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        seen: set[Feature] = set()
        for f in self.features:
            if f in seen:
                raise ValueError(f"features: {f!r} appears twice")
            seen.add(f)

    @classmethod
    def from_config(cls, specs: Iterable[Mapping[str, Any]]) -> FeatureSet:
        """From specifications like ``[{"kind": "log_return", "horizon": "5min"}, ...]``."""
        return cls(tuple(make_feature(s) for s in specs))

    def to_config(self) -> list[dict[str, Any]]:
        """The specifications this set was built from."""
        return [{"kind": f.kind, **f.params} for f in self.features]

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        """Every output column, in order; raises if two features would write the same column."""
        out: list[str] = []
        for f in self.features:
            out.extend(f.columns(interval_ns))
        dup = {c for c in out if out.count(c) > 1}
        if dup:
            raise ValueError(f"columns {sorted(dup)} are produced by more than one feature")
        return tuple(out)


@dataclass
class EngineState:
    """Everything an engine carries between steps for one asset (picklable)."""

    interval_ns: int
    last_ts: int
    prev_close_buf: F64
    prev_close_ist: I64
    features: list[Any] = field(default_factory=list)
    rows: int = 0


@dataclass(frozen=True)
class FeatureFrame:
    """Feature values of consecutive rows (bars of one symbol, or rows of a universe): ``ts`` (ns UTC) and one
    float64 array per column."""

    ts: I64
    values: dict[str, F64]

    def __len__(self) -> int:
        return len(self.ts)

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame indexed by row time (UTC)."""
        index = pd.DatetimeIndex(pd.to_datetime(self.ts, utc=True), name="ts")
        return pd.DataFrame(self.values, index=index, copy=False)

    @staticmethod
    def concat(frames: Sequence[FeatureFrame]) -> FeatureFrame:
        """Rows of all frames in order (they must share columns)."""
        if not frames:
            raise ValueError("frames: nothing to concatenate")
        cols = list(frames[0].values)
        return FeatureFrame(
            ts=np.concatenate([f.ts for f in frames]),
            values={c: np.concatenate([f.values[c] for f in frames]) for c in cols},
        )


class FeatureEngine:
    """Computes a :class:`FeatureSet` over the bars of one symbol and one bar interval.

    Examples
    --------
    >>> from features.price import LogReturn
    >>> engine = FeatureEngine(FeatureSet((LogReturn("1min"),)), interval_ns=60 * 10**9)
    >>> engine.columns
    ('ret_1min',)
    """

    def __init__(self, feature_set: FeatureSet, interval_ns: int) -> None:
        if interval_ns <= 0:
            raise ValueError(f"interval_ns={interval_ns!r}: must be > 0")
        self.feature_set = feature_set
        self.interval_ns = interval_ns
        self.columns = feature_set.columns(interval_ns)

    def init_state(self) -> EngineState:
        """A fresh state (empty history)."""
        return EngineState(
            interval_ns=self.interval_ns,
            last_ts=np.iinfo(np.int64).min,
            prev_close_buf=np.full(1, np.nan),
            prev_close_ist=np.zeros(2, np.int64),
            features=[f.init_state(self.interval_ns) for f in self.feature_set.features],
        )

    def step(self, state: EngineState, bars: BarBatch) -> tuple[FeatureFrame, EngineState]:
        """Feature values of new bars of one symbol; ``state`` is advanced (in place) and returned."""
        if state.interval_ns != self.interval_ns:
            raise ValueError(f"state.interval_ns={state.interval_ns!r}: engine computes {self.interval_ns}")
        n = len(bars)
        if n == 0:
            return FeatureFrame(np.empty(0, np.int64), {c: np.empty(0) for c in self.columns}), state
        ts = bars.ts
        if ts[0] <= state.last_ts or (n > 1 and not (np.diff(ts) > 0).all()):
            bad = ts[0] if ts[0] <= state.last_ts else ts[1:][np.diff(ts) <= 0][0]
            raise ValueError(f"ts={int(bad)!r}: bars must be strictly increasing in time for one symbol")
        if n > 1 and not (bars.symbol == bars.symbol[0]).all():
            other = bars.symbol[bars.symbol != bars.symbol[0]][0]
            raise ValueError(f"symbol={other!r}: a step takes bars of one symbol ({bars.symbol[0]!r} first)")
        prev = np.empty(n)
        lagged(bars.close, state.prev_close_buf, state.prev_close_ist, prev)
        with np.errstate(divide="ignore", invalid="ignore"):
            logret = np.log(bars.close / prev)
        data = BarInput(
            ts=ts,
            interval_ns=self.interval_ns,
            open=bars.open,
            high=bars.high,
            low=bars.low,
            close=bars.close,
            volume=bars.volume,
            vwap=bars.vwap,
            bid=bars.bid,
            ask=bars.ask,
            bid_size=bars.bid_size,
            ask_size=bars.ask_size,
            logret=logret,
        )
        values: dict[str, F64] = {}
        # NaN and division by zero are expected (warm-up, missing quotes): one error state for the whole step
        with np.errstate(divide="ignore", invalid="ignore"):
            for f, fs in zip(self.feature_set.features, state.features, strict=True):
                values.update(f.update(fs, data))
        state.last_ts = int(ts[-1])
        state.rows += n
        # features write their columns in set order, which is the order of self.columns
        return FeatureFrame(ts=ts.copy(), values=values), state

    def batch(self, bars: BarBatch) -> FeatureFrame:
        """All feature values of one symbol's history in one step from a fresh state."""
        frame, _ = self.step(self.init_state(), bars)
        return frame

    def frame(self, bars: BarBatch) -> pd.DataFrame:
        """Features of a multi-symbol bar batch: one fresh state per symbol, rows indexed by (symbol, ts)."""
        parts = []
        for sym in pd.unique(bars.symbol):
            one = bars.take(bars.symbol == sym)
            one = one.take(np.argsort(one.ts, kind="stable"))
            f = self.batch(one).to_frame()
            f.insert(0, "symbol", sym)
            parts.append(f.set_index("symbol", append=True).swaplevel())
        return pd.concat(parts) if parts else pd.DataFrame(columns=list(self.columns))
