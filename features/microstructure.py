"""Market-microstructure features: quoted spread and depth, Amihud illiquidity and Roll's implied spread.

Quote features use the bar's last quote (``bid``, ``ask``, ``bid_size``, ``ask_size``) and are NaN for a bar
without one. Units: ``spread`` and ``roll_spread`` in the quote currency, ``spread_bps`` in basis points of the
midpoint, ``depth`` in the instrument's size unit (shares, coins, lots), Amihud per million of quote currency
traded. A crossed quote (bid above ask, which ingest validation normally quarantines) gives a negative spread;
it is passed through, not hidden. Windows count bars and include the current bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from features.base import BarInput, Feature, check_window, register, safe_div
from features.kernels import rolling_sums_k
from features.windows import RollingWindow
from ingest.records import F64, I64

#: Relative size of a covariance below which :class:`RollSpread` takes it as zero.
_COV_RTOL = 1e-9


def quoted_spread(bars: BarInput) -> tuple[F64, F64]:
    """``ask - bid`` (quote currency) and ``10_000 * (ask - bid) / mid`` (bps); NaN where the bar has no quote."""
    spread = bars.ask - bars.bid
    return spread, safe_div(1e4 * spread, 0.5 * (bars.bid + bars.ask))


@register
class Spread(Feature):
    """Quoted spread of the bar's last quote. Columns ``spread`` (quote currency) and ``spread_bps`` (basis
    points of the midpoint); NaN without a quote. No warm-up.
    """

    kind = "spread"

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return ("spread", "spread_bps")

    def init_state(self, interval_ns: int) -> None:
        return None

    def update(self, state: None, bars: BarInput) -> dict[str, F64]:
        spread, bps = quoted_spread(bars)
        return {"spread": spread, "spread_bps": bps}


@register
class SpreadZScore(Feature):
    """Z-score of ``spread_bps`` in its window: ``(bps - mean) / std`` (ddof=1, current bar included).

    NaN in a window containing a bar without a quote, and on a flat window. Column ``spread_z_<window>``;
    warm-up ``window - 1`` bars.
    """

    kind = "spread_zscore"

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window, 2)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"spread_z_{self.window}",)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window)

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        _, bps = quoted_spread(bars)
        mean, std = state.mean_std(bps)
        return {f"spread_z_{self.window}": safe_div(bps - mean, std)}


@register
class Depth(Feature):
    """Displayed depth at the top of the book. Columns ``depth`` = ``bid_size + ask_size`` and
    ``depth_imbalance`` = ``(bid_size - ask_size) / depth`` in [-1, 1] (positive: more on the bid); NaN without
    a quote, and the imbalance also when the depth is zero. No warm-up.
    """

    kind = "depth"

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return ("depth", "depth_imbalance")

    def init_state(self, interval_ns: int) -> None:
        return None

    def update(self, state: None, bars: BarInput) -> dict[str, F64]:
        depth = bars.bid_size + bars.ask_size
        return {"depth": depth, "depth_imbalance": safe_div(bars.bid_size - bars.ask_size, depth)}


@register
class Amihud(Feature):
    """Amihud illiquidity: the mean over the bars with volume in the last ``window`` bars of
    ``|logret| / (close * volume) * 1e6``, the absolute log return per million of quote currency traded.

    Bars with zero volume (quote-only bars) are skipped, not NaN: their return has no traded value to be divided
    by, and NaN would blank out every window around them. NaN when the window holds no bar with volume.
    Column ``amihud_<window>``; warm-up ``window`` bars (the first bar has no return).
    """

    kind = "amihud"

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"amihud_{self.window}",)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window, 2)

    def warmup(self) -> int:
        return self.window

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        out = np.empty(len(bars))
        _amihud(bars.close, bars.volume, bars.logret, state.buf, state.ist, state.fst, out)
        return {f"amihud_{self.window}": out}


@numba.njit(cache=True, nogil=True)
def _amihud(close: F64, volume: F64, logret: F64, buf: F64, ist: I64, fst: F64, out: F64) -> None:  # pragma: no cover
    # window sums of |r| / traded value (0 for a bar without volume) and of the count of bars with volume
    n = close.shape[0]
    x = np.empty((2, n))
    for i in range(n):
        r = abs(logret[i])
        if volume[i] > 0.0:
            x[0, i] = r / (close[i] * volume[i]) * 1e6
            x[1, i] = 1.0
        else:
            x[0, i] = np.nan if np.isnan(r) else 0.0
            x[1, i] = 0.0
    s, q = np.empty((2, n)), np.empty((2, n))
    rolling_sums_k(x, buf, ist, fst, s, q)
    for i in range(n):
        v = s[0, i] / s[1, i] if s[1, i] != 0.0 and np.isfinite(s[1, i]) else np.nan
        out[i] = v if np.isfinite(v) else np.nan


@dataclass
class _RollState:
    prev: F64  # the previous close and the previous change of the close
    sums: RollingWindow


@register
class RollSpread(Feature):
    """Roll's implied effective spread: ``2 * sqrt(-cov(dp_t, dp_{t-1}))`` over the last ``window`` pairs, with
    ``dp`` the change of the close (quote currency, not log).

    The covariance is the sample covariance (ddof=1) from the window sums of ``dp_t``, ``dp_{t-1}`` and their
    product; the value is NaN when it is >= 0 (the model does not apply), a covariance within ``1e-9`` of
    ``sqrt(sum dp_t^2 * sum dp_{t-1}^2) / (window - 1)`` counting as 0 (rounding residue).
    Column ``roll_spread_<window>``; warm-up ``window + 1`` bars.
    """

    kind = "roll_spread"

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window, 2)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"roll_spread_{self.window}",)

    def init_state(self, interval_ns: int) -> _RollState:
        return _RollState(np.full(2, np.nan), RollingWindow.new(self.window, 3))

    def warmup(self) -> int:
        return self.window + 1

    def update(self, state: _RollState, bars: BarInput) -> dict[str, F64]:
        out = np.empty(len(bars))
        w = state.sums
        _roll_spread(bars.close, state.prev, w.buf, w.ist, w.fst, _COV_RTOL, out)
        return {f"roll_spread_{self.window}": out}


@numba.njit(cache=True, nogil=True)
def _roll_spread(
    close: F64, prev: F64, buf: F64, ist: I64, fst: F64, rtol: float, out: F64
) -> None:  # pragma: no cover
    n, w = close.shape[0], buf.shape[1]
    x = np.empty((3, n))
    for i in range(n):
        dp = close[i] - prev[0]
        x[0, i], x[1, i], x[2, i] = dp, prev[1], dp * prev[1]
        prev[0], prev[1] = close[i], dp
    s, q = np.empty((3, n)), np.empty((3, n))
    rolling_sums_k(x, buf, ist, fst, s, q)
    for i in range(n):
        cov = (s[2, i] - s[0, i] * s[1, i] / w) / (w - 1)
        # the cancellation in the sums leaves a residue of either sign where the covariance is zero
        noise = rtol * np.sqrt(q[0, i] * q[1, i]) / (w - 1)
        out[i] = 2.0 * np.sqrt(-cov) if -cov > noise else np.nan


__all__ = ["Amihud", "Depth", "RollSpread", "Spread", "SpreadZScore", "quoted_spread"]

#: The microstructure features of the default feature set.
DEFAULT_SPECS: list[dict[str, object]] = [
    {"kind": "spread"},
    {"kind": "spread_zscore", "window": 20},
    {"kind": "spread_zscore", "window": 50},
    {"kind": "depth"},
    {"kind": "amihud", "window": 20},
    {"kind": "amihud", "window": 50},
    {"kind": "roll_spread", "window": 20},
    {"kind": "roll_spread", "window": 50},
]
