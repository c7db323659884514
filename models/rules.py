"""Fast rules on bars: price jumps, spread blow-outs, volume and trade bursts, stale feeds.

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
class TradeBurst(_EwRule):
    """The log count of trades in a bar far above its EW mean (one-sided).

    Trade arrivals are a cleaner measure of unusual activity than volume, whose print sizes are heavy-tailed: a
    surge in the arrival rate shows in the count at once. Bars without trades (quote-only instruments) score NaN.
    """

    name: ClassVar[str] = "trade_burst"
    requires: ClassVar[tuple[str, ...]] = ("trade_count",)

    def _series(self, state: _RuleState, batch: Observations) -> F64:
        count = batch.column("trade_count")
        return np.where(count > 0, np.log1p(count), np.nan)


#: Largest probability of a bar in a slot in the stale-feed surprise (a slot never missed is not certain).
MAX_SLOT_SHARE = 0.99
#: Nanoseconds per day and per week (the session profile's cycle for intraday and daily bars).
_NS_DAY = 86_400 * 10**9
_NS_WEEK = 7 * _NS_DAY


@register
class StaleFeed(Detector):
    """Bars missing before a row, weighed by how surely the instrument trades in their slots.

    A gap is a run of at least ``min_missing`` bars missing before a row (shorter runs score 0). Before a fit its
    raw score is the count of missing bars (the severity reaches 1 at ``max_missing``). :meth:`fit` learns the
    instrument's rhythm from the history: how often each slot had a bar, where a slot is the bar's place in the
    day (bars shorter than a day) or in the week (daily and longer bars), as a probability ``p`` by Laplace's
    rule, ``(cycles with a bar + 1) / (cycles + 2)``, at most :data:`MAX_SLOT_SHARE`. After it the raw score is
    the surprise of the gap, ``-sum log(1 - p)`` over its missing slots: the negative log probability that all
    of them stayed empty if each fills independently at its usual rate. Nights, weekends and closed markets
    cost nothing, quiet hours with sparse bars little, a feed that stops during the session a lot. The detail
    column ``missing`` keeps the plain count.

    Parameters
    ----------
    max_missing : int
        Missing bars at which the severity reaches 1 before any fit.
    min_missing : int
        Fewest missing bars in a row that make a gap (shorter runs score 0): a feed is stale when it stays silent
        for several bars, while one empty bar in a quiet hour is ordinary.
    """

    name: ClassVar[str] = "stale_feed"
    requires: ClassVar[tuple[str, ...]] = ()
    needs_fit: ClassVar[bool] = False

    def __init__(self, max_missing: int = 5, min_missing: int = 3) -> None:
        self.max_missing = max_missing
        self.min_missing = min_missing

    def _cycle(self, interval_ns: int) -> int:
        if interval_ns <= 0:
            raise ValueError(f"interval_ns={interval_ns!r}: the stale-feed rule needs the bar length")
        cycle = _NS_DAY if interval_ns < _NS_DAY else _NS_WEEK
        if cycle % interval_ns:
            return 0  # bars that do not tile the cycle: every missing bar counts
        return cycle // interval_ns

    def _fit(self, history: Observations) -> None:
        slots = self._cycle(history.interval_ns)
        self.interval_ns_ = history.interval_ns
        if slots == 0 or len(history) < 2:
            self.active_ = None
            return
        cycle_ns = slots * history.interval_ns
        cycles = np.unique(history.ts // cycle_ns)
        slot = (history.ts % cycle_ns) // history.interval_ns
        # Laplace's rule of succession: a slot filled in 2 of 2 days is likely, not certain
        share = np.minimum((np.bincount(slot, minlength=slots) + 1.0) / (len(cycles) + 2.0), MAX_SLOT_SHARE)
        surprise = -np.log1p(-share)
        # prefix sums over two cycles: the surprise of any run of missing slots in O(1)
        self.active_ = np.concatenate(([0.0], np.cumsum(np.concatenate((surprise, surprise)))))

    def _initial_state(self) -> Any:
        check_positive_int("max_missing", self.max_missing)
        check_positive_int("min_missing", self.min_missing)
        return _RuleState(np.zeros(0))

    def _step(self, state: Any, batch: Observations) -> Scores:
        slots = self._cycle(batch.interval_ns)
        prev = np.concatenate(([state.last_ts if state.last_ts is not None else -1], batch.ts[:-1]))
        missing = np.maximum((batch.ts - prev) // batch.interval_ns - 1, 0)
        active = getattr(self, "active_", None)
        if active is not None and slots and batch.interval_ns == self.interval_ns_:
            total = float(active[slots])
            first = (prev % (slots * batch.interval_ns)) // batch.interval_ns + 1  # slot of the first missing bar
            full, rest = np.divmod(missing, slots)
            start = first % slots
            counted = full * total + active[start + rest] - active[start]
        else:
            counted = missing
        counted = np.where(missing >= check_positive_int("min_missing", self.min_missing), counted, 0)
        raw = np.where(prev < 0, np.nan, counted.astype(np.float64))
        if len(batch):
            state.last_ts = int(batch.ts[-1])
        return Scores(batch.ts, raw, raw, {"missing": np.where(prev < 0, np.nan, missing.astype(np.float64))})

    def _uncalibrated(self, raw: F64) -> F64:
        out: F64 = np.minimum(raw / check_positive_int("max_missing", self.max_missing), 1.0)
        return out
