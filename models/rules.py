"""Fast rules on bars: price jumps, spread blow-outs, volume bursts, stale feeds.

Each rule is a z-score of the new row against exponentially weighted statistics of the rows before it (the row
itself is not in its own reference, so a jump cannot hide itself), computed by one numba kernel with carried
state, beside a pure-Python reference it is tested against. Before :meth:`~models.base.Detector.fit` the
severity of a z-score is its two-sided normal mass, ``erf(|z| / sqrt(2))`` (z = 3 gives 0.997); after a fit,
the empirical CDF of the history's scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numba
import numpy as np

from ingest.records import F64
from models.base import Detector, Observations, Scores, check_positive_float, check_positive_int, register


@numba.njit(cache=True, nogil=True)
def ew_zscore(x: F64, state: F64, alpha: float, min_periods: int, center: bool) -> F64:
    """Z-score of each value against the EW mean and variance of the values before it; advances ``state``.

    ``state`` holds ``[mean, variance, count]``; NaN values score NaN and leave the state as it is. With
    ``center`` false the mean is taken as 0 (returns), so the variance is the EW mean square.
    """
    out = np.empty(x.shape[0])
    mean, var, n = state[0], state[1], state[2]
    for i in range(x.shape[0]):
        v = x[i]
        if not np.isfinite(v):
            out[i] = np.nan
            continue
        m = mean if center else 0.0
        if n >= min_periods and var > 0.0:
            out[i] = (v - m) / math.sqrt(var)
        else:
            out[i] = np.nan
        if n == 0:
            mean = v if center else 0.0
            var = 0.0 if center else v * v
        else:
            d = v - (mean if center else 0.0)
            mean = mean + alpha * d if center else 0.0
            var = (1.0 - alpha) * (var + alpha * d * d)
        n += 1
    state[0], state[1], state[2] = mean, var, n
    return out


def ew_zscore_reference(x: F64, alpha: float, min_periods: int, center: bool) -> F64:
    """Pure-Python :func:`ew_zscore` from an empty state (the reference the kernel is tested against)."""
    out = []
    mean = var = 0.0
    n = 0
    for v in x.tolist():
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        m = mean if center else 0.0
        out.append((v - m) / math.sqrt(var) if n >= min_periods and var > 0 else math.nan)
        if n == 0:
            mean, var = (v, 0.0) if center else (0.0, v * v)
        else:
            d = v - (mean if center else 0.0)
            mean = mean + alpha * d if center else 0.0
            var = (1 - alpha) * (var + alpha * d * d)
        n += 1
    return np.array(out, dtype=np.float64)


@dataclass
class _RuleState:
    stats: F64
    last_close: float = math.nan
    last_ts: int | None = None


class _EwRule(Detector):
    """A z-score of one derived series against its EW statistics (see the module doc)."""

    needs_fit: ClassVar[bool] = False
    center: ClassVar[bool] = True
    two_sided: ClassVar[bool] = False

    def __init__(self, halflife: float = 100.0, min_periods: int = 30) -> None:
        self.halflife = halflife
        self.min_periods = min_periods

    def _alpha(self) -> float:
        h = check_positive_float("halflife", self.halflife)
        return float(1.0 - 0.5 ** (1.0 / h))

    def _initial_state(self) -> Any:
        check_positive_int("min_periods", self.min_periods)
        return _RuleState(np.zeros(3))

    def _series(self, state: _RuleState, batch: Observations) -> F64:
        raise NotImplementedError

    def _step(self, state: Any, batch: Observations) -> Scores:
        x = self._series(state, batch)
        z = ew_zscore(x, state.stats, self._alpha(), check_positive_int("min_periods", self.min_periods), self.center)
        raw = np.abs(z) if self.two_sided else np.where(np.isnan(z), np.nan, np.maximum(z, 0.0))
        return Scores(batch.ts, raw, raw, {"z": z})

    def _uncalibrated(self, raw: F64) -> F64:
        from scipy.special import erf

        out: F64 = erf(raw / math.sqrt(2.0))
        return out


@register
class PriceJump(_EwRule):
    """A one-bar log return far from the EW root mean square of the returns before it (two-sided).

    Parameters
    ----------
    halflife : float
        Half-life of the EW statistics, in bars.
    min_periods : int
        Returns seen before the first score.
    """

    name: ClassVar[str] = "price_jump"
    requires: ClassVar[tuple[str, ...]] = ("close",)
    center: ClassVar[bool] = False
    two_sided: ClassVar[bool] = True

    def _series(self, state: _RuleState, batch: Observations) -> F64:
        close = batch.column("close")
        prev = np.concatenate(([state.last_close], close[:-1]))
        if len(close):
            # the previous row's close, NaN included: a return across a missing close is NaN in any split
            state.last_close = float(close[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(close / prev)


@register
class SpreadBlowout(_EwRule):
    """A relative quoted spread (spread over mid) far above its EW mean (one-sided)."""

    name: ClassVar[str] = "spread_blowout"
    requires: ClassVar[tuple[str, ...]] = ("bid", "ask")

    def _series(self, state: _RuleState, batch: Observations) -> F64:
        bid, ask = batch.column("bid"), batch.column("ask")
        with np.errstate(divide="ignore", invalid="ignore"):
            return (ask - bid) / ((ask + bid) / 2.0)


@register
class VolumeBurst(_EwRule):
    """The log volume of a bar far above its EW mean (one-sided)."""

    name: ClassVar[str] = "volume_burst"
    requires: ClassVar[tuple[str, ...]] = ("volume",)

    def _series(self, state: _RuleState, batch: Observations) -> F64:
        return np.log1p(batch.column("volume"))


@register
class StaleFeed(Detector):
    """Bars missing before a row: the gap to the previous row in bar lengths, minus one (0 when none missed).

    Parameters
    ----------
    max_missing : int
        Missing bars at which the severity reaches 1 before any fit.

    Session breaks (nights, weekends) are gaps too: fit on history to calibrate them away, or read the raw count.
    """

    name: ClassVar[str] = "stale_feed"
    requires: ClassVar[tuple[str, ...]] = ()
    needs_fit: ClassVar[bool] = False

    def __init__(self, max_missing: int = 5) -> None:
        self.max_missing = max_missing

    def _initial_state(self) -> Any:
        check_positive_int("max_missing", self.max_missing)
        return _RuleState(np.zeros(0))

    def _step(self, state: Any, batch: Observations) -> Scores:
        if batch.interval_ns <= 0:
            raise ValueError(f"interval_ns={batch.interval_ns!r}: the stale-feed rule needs the bar length")
        prev = np.concatenate(([state.last_ts if state.last_ts is not None else -1], batch.ts[:-1]))
        gap = (batch.ts - prev) / batch.interval_ns - 1.0
        raw = np.where(prev < 0, np.nan, np.maximum(gap, 0.0))
        if len(batch):
            state.last_ts = int(batch.ts[-1])
        return Scores(batch.ts, raw, raw, {})

    def _uncalibrated(self, raw: F64) -> F64:
        out: F64 = np.minimum(raw / check_positive_int("max_missing", self.max_missing), 1.0)
        return out
