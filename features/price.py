"""Price features: returns, volatility, momentum, mean reversion, support/resistance and breakouts.

Units: returns are log returns; volatilities are per bar (not annualised: multiply by the square root of bars per
year to annualise); distances are relative (0.01 = 1 %). Windows count bars and include the current bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from features.base import (
    BarInput,
    Feature,
    check_tz,
    check_window,
    fmt_num,
    register,
    safe_div,
    session_ids,
)
from features.kernels import ewma, rolling_max, value_at_lookback
from features.windows import Extreme, Lag, RollingWindow
from ingest.records import F64, I64

_LN2 = math.log(2.0)


def _label(ns: int) -> str:
    for unit, size in (("d", 86_400 * 10**9), ("h", 3_600 * 10**9), ("min", 60 * 10**9), ("s", 10**9)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


# --------------------------------------------------------------------------------------------------------- returns
@dataclass
class _LookbackState:
    buf_ts: I64
    buf_x: F64
    ist: I64


@register
class LogReturn(Feature):
    """Log return of the close over a time horizon: ``log(close_t / close_s)``, ``s`` the last bar starting at or
    before ``t - horizon`` (over gaps the return spans the gap). Column ``ret_<horizon>``, e.g. ``ret_5min``.

    The horizon must be a whole number of bars (``5min`` on 1-minute bars, not on 2-minute bars). Warm-up: NaN
    until a bar at least ``horizon`` old exists.
    """

    kind = "log_return"
    inputs = ("ts", "close")

    def __init__(self, horizon: str) -> None:
        self.horizon = str(horizon)
        try:
            self._ns = int(pd.Timedelta(self.horizon).value)
        except ValueError as exc:
            raise ValueError(f"horizon={horizon!r}: not a duration (e.g. 1min, 5min, 1h, 1d)") from exc
        if self._ns <= 0:
            raise ValueError(f"horizon={horizon!r}: must be positive")
        self._col = f"ret_{_label(self._ns)}"

    def allowed(self, interval_ns: int) -> bool:
        """Whether the horizon is a whole number of bars of ``interval_ns``."""
        return self._ns >= interval_ns and self._ns % interval_ns == 0

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        if not self.allowed(interval_ns):
            raise ValueError(f"horizon={self.horizon!r}: not a whole number of {_label(interval_ns)} bars")
        return (self._col,)

    def init_state(self, interval_ns: int) -> _LookbackState:
        self.columns(interval_ns)
        return _LookbackState(np.zeros(16, np.int64), np.zeros(16), np.zeros(2, np.int64))

    def update(self, state: _LookbackState, bars: BarInput) -> dict[str, F64]:
        need = state.ist[1] + len(bars)
        if state.buf_ts.shape[0] < need + 1:
            cap = max(need + 1, 2 * state.buf_ts.shape[0])
            h, size = int(state.ist[0]), int(state.ist[1])
            ts_new, x_new = np.zeros(cap, np.int64), np.zeros(cap)
            ts_new[:size], x_new[:size] = state.buf_ts[h : h + size], state.buf_x[h : h + size]
            state.buf_ts, state.buf_x = ts_new, x_new
            state.ist[0] = 0
        past = np.empty(len(bars))
        value_at_lookback(bars.ts, bars.close, self._ns, state.buf_ts, state.buf_x, state.ist, past)
        return {self._col: np.log(bars.close / past)}


# ------------------------------------------------------------------------------------------------------ volatility
_ESTIMATORS = {"close_to_close": "cc", "parkinson": "parkinson", "garman_klass": "gk"}


@register
class Volatility(Feature):
    """Rolling volatility per bar over ``window`` bars, by estimator.

    - ``close_to_close``: sample standard deviation (ddof=1) of one-bar log returns;
    - ``parkinson``: ``sqrt(mean(ln(H/L)^2) / (4 ln 2))``;
    - ``garman_klass``: ``sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2))`` (0 if the mean is negative).

    Column ``vol_<cc|parkinson|gk>_<window>``. Warm-up: ``window`` bars (``window + 1`` for close-to-close).
    """

    kind = "volatility"
    inputs = ("open", "high", "low", "close", "logret")

    def __init__(self, window: int, estimator: str = "close_to_close") -> None:
        self.window = check_window("window", window, 2)
        if estimator not in _ESTIMATORS:
            raise ValueError(f"estimator={estimator!r}: one of {sorted(_ESTIMATORS)}")
        self.estimator = estimator
        self._col = f"vol_{_ESTIMATORS[estimator]}_{self.window}"

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (self._col,)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window)

    def warmup(self) -> int:
        return self.window if self.estimator == "close_to_close" else self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        if self.estimator == "close_to_close":
            _, std = state.mean_std(bars.logret)
            return {self._col: std}
        hl2 = bars.log_hl * bars.log_hl
        if self.estimator == "parkinson":
            term = hl2 / (4.0 * _LN2)
        else:
            term = 0.5 * hl2 - (2.0 * _LN2 - 1.0) * (bars.log_co * bars.log_co)
        s, _ = state.sum1(term)
        return {self._col: np.sqrt(np.maximum(s / self.window, 0.0))}


# -------------------------------------------------------------------------------------------------------- momentum
@register
class RateOfChange(Feature):
    """``close_t / close_{t - window} - 1`` (bars). Column ``roc_<window>``; warm-up ``window`` bars."""

    kind = "rate_of_change"
    inputs = ("close",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"roc_{self.window}",)

    def init_state(self, interval_ns: int) -> Lag:
        return Lag.new(self.window)

    def warmup(self) -> int:
        return self.window

    def update(self, state: Lag, bars: BarInput) -> dict[str, F64]:
        return {f"roc_{self.window}": safe_div(bars.close, state(bars.close)) - 1.0}


@register
class MovingAverageDistance(Feature):
    """Relative distance of the close to its simple moving average: ``close / SMA_window - 1``.

    Column ``ma_dist_<window>``; warm-up ``window - 1`` bars.
    """

    kind = "ma_distance"
    inputs = ("close",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"ma_dist_{self.window}",)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window)

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        s, _ = state.sum1(bars.close)
        return {f"ma_dist_{self.window}": safe_div(bars.close * self.window, s) - 1.0}


@register
class ZScore(Feature):
    """Z-score of the close to its rolling mean: ``(close - mean) / std`` (ddof=1); NaN on a flat window.

    Column ``zscore_<window>``; warm-up ``window - 1`` bars.
    """

    kind = "zscore"
    inputs = ("close",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window, 2)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"zscore_{self.window}",)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window)

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        mean, std = state.mean_std(bars.close)
        return {f"zscore_{self.window}": safe_div(bars.close - mean, std)}


@register
class Bollinger(Feature):
    """Position of the close in its Bollinger band: 0 at ``mean - k std``, 1 at ``mean + k std`` (can leave [0, 1]).

    Column ``bb_pos_<window>_<k>``; NaN on a flat window; warm-up ``window - 1`` bars.
    """

    kind = "bollinger"
    inputs = ("close",)

    def __init__(self, window: int = 20, k: float = 2.0) -> None:
        self.window = check_window("window", window, 2)
        if not isinstance(k, int | float) or not k > 0:
            raise ValueError(f"k={k!r}: must be a number > 0")
        self.k = float(k)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"bb_pos_{self.window}_{fmt_num(self.k)}",)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window)

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        mean, std = state.mean_std(bars.close)
        lower = mean - self.k * std
        return {self.columns(bars.interval_ns)[0]: safe_div(bars.close - lower, 2.0 * self.k * std)}


@dataclass
class _RsiState:
    gain: F64
    loss: F64
    seen: I64


@register
class RSI(Feature):
    """Relative strength index with Wilder's smoothing (``alpha = 1 / window``), in [0, 100].

    Average gains and losses are exponentially smoothed from the first return; the value is NaN for the first
    ``window`` bars. 100 when there were no losses, 50 when the price did not move. Column ``rsi_<window>``.
    """

    kind = "rsi"
    inputs = ("close", "logret")

    def __init__(self, window: int = 14) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"rsi_{self.window}",)

    def init_state(self, interval_ns: int) -> _RsiState:
        return _RsiState(np.zeros(2), np.zeros(2), np.zeros(1, np.int64))

    def warmup(self) -> int:
        return self.window

    def update(self, state: _RsiState, bars: BarInput) -> dict[str, F64]:
        out = np.empty(len(bars))
        _rsi(bars.close, bars.logret, self.window, state.gain, state.loss, state.seen, out)
        return {f"rsi_{self.window}": out}


@numba.njit(cache=True, nogil=True)
def _rsi(close: F64, logret: F64, window: int, gain: F64, loss: F64, seen: I64, out: F64) -> None:  # pragma: no cover
    n = close.shape[0]
    up, down = np.empty(n), np.empty(n)
    for i in range(n):
        change = close[i] * (1.0 - np.exp(-logret[i]))  # the change of the close, NaN for the first bar
        up[i] = np.nan if np.isnan(change) else max(change, 0.0)
        down[i] = np.nan if np.isnan(change) else max(-change, 0.0)
    avg_up, avg_down = np.empty(n), np.empty(n)
    ewma(up, 1.0 / window, gain, avg_up)
    ewma(down, 1.0 / window, loss, avg_down)
    for i in range(n):
        if np.isnan(avg_up[i]) or seen[0] < window:
            out[i] = np.nan  # warm-up: the first `window` bars of the stream
        elif avg_down[i] > 0.0:
            out[i] = 100.0 - 100.0 / (1.0 + avg_up[i] / avg_down[i])
        else:
            out[i] = 100.0 if avg_up[i] > 0.0 else 50.0
        seen[0] += 1


# ----------------------------------------------------------------------------------------- support and resistance
@dataclass
class ExtremesState:
    """Rolling high and low, and the previous bar's levels (for the breakout test)."""

    high: Extreme
    low: Extreme
    prev: F64


@register
class RollingExtremes(Feature):
    """Support and resistance as the rolling lowest low and highest high, and breakouts through them.

    Columns: ``high_<w>``, ``low_<w>`` (over the last ``w`` bars, current included); ``breakout_up_<w>`` = 1 when
    the close is above the highest high of the previous ``w`` bars, else 0; ``breakout_down_<w>`` likewise below
    the lowest low. Warm-up ``w - 1`` bars for the levels, ``w`` for the breakouts.
    """

    kind = "extremes"
    inputs = ("high", "low", "close")

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        w = self.window
        return (f"high_{w}", f"low_{w}", f"breakout_up_{w}", f"breakout_down_{w}")

    def init_state(self, interval_ns: int) -> ExtremesState:
        w = self.window
        return ExtremesState(Extreme.new(w), Extreme.new(w), np.full(2, np.nan))

    def warmup(self) -> int:
        return self.window

    def update(self, state: ExtremesState, bars: BarInput) -> dict[str, F64]:
        out = np.empty((4, len(bars)))
        hi_, lo_ = state.high, state.low
        _extremes(
            bars.high, bars.low, bars.close, hi_.idx, hi_.val, hi_.ist, lo_.idx, lo_.val, lo_.ist, state.prev, out
        )
        return dict(zip(self.columns(bars.interval_ns), out, strict=True))


@numba.njit(cache=True, nogil=True)
def _extremes(
    high: F64,
    low: F64,
    close: F64,
    hi_idx: I64,
    hi_val: F64,
    hi_ist: I64,
    lo_idx: I64,
    lo_val: F64,
    lo_ist: I64,
    prev: F64,
    out: F64,
) -> None:  # pragma: no cover
    # rows of out: rolling high, rolling low, breakout up, breakout down
    rolling_max(high, 1.0, hi_idx, hi_val, hi_ist, out[0])
    rolling_max(low, -1.0, lo_idx, lo_val, lo_ist, out[1])
    for i in range(close.shape[0]):
        out[2, i] = np.nan if np.isnan(prev[0]) else (1.0 if close[i] > prev[0] else 0.0)
        out[3, i] = np.nan if np.isnan(prev[1]) else (1.0 if close[i] < prev[1] else 0.0)
        prev[0], prev[1] = out[0, i], out[1, i]


@numba.njit(cache=True, nogil=True)
def _pivots(session: I64, high: F64, low: F64, close: F64, st: F64, out: F64) -> None:  # pragma: no cover
    # st: [session, high, low, close, pivot, r1, s1, r2, s2, started]
    for i in range(session.shape[0]):
        if st[9] == 0.0:
            st[0] = session[i]
            st[1], st[2], st[3] = high[i], low[i], close[i]
            st[4] = st[5] = st[6] = st[7] = st[8] = np.nan
            st[9] = 1.0
        elif session[i] != st[0]:
            h, lo, c = st[1], st[2], st[3]
            p = (h + lo + c) / 3.0
            st[4], st[5], st[6], st[7], st[8] = p, 2.0 * p - lo, 2.0 * p - h, p + (h - lo), p - (h - lo)
            st[0] = session[i]
            st[1], st[2], st[3] = high[i], low[i], close[i]
        else:
            if not high[i] <= st[1]:
                st[1] = high[i]
            if not low[i] >= st[2]:
                st[2] = low[i]
            st[3] = close[i]
        for j in range(5):
            out[i, j] = st[4 + j]


@register
class Pivots(Feature):
    """Classic floor-trader pivot points of the previous session: ``P = (H + L + C) / 3``, ``R1 = 2P - L``,
    ``S1 = 2P - H``, ``R2 = P + (H - L)``, ``S2 = P - (H - L)``.

    A session is a calendar day in ``session_tz`` (``UTC`` by default; ``America/New_York`` for US equities).
    Columns ``pivot, pivot_r1, pivot_s1, pivot_r2, pivot_s2``; NaN during the first session.
    """

    kind = "pivots"
    inputs = ("ts", "high", "low", "close")

    def __init__(self, session_tz: str = "UTC") -> None:
        self.session_tz = check_tz(session_tz)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return ("pivot", "pivot_r1", "pivot_s1", "pivot_r2", "pivot_s2")

    def init_state(self, interval_ns: int) -> F64:
        return np.zeros(10)

    def update(self, state: F64, bars: BarInput) -> dict[str, F64]:
        out = np.empty((len(bars), 5))
        _pivots(session_ids(bars.ts, self.session_tz), bars.high, bars.low, bars.close, state, out)
        return {c: out[:, j].copy() for j, c in enumerate(self.columns(bars.interval_ns))}


__all__ = [
    "RSI",
    "Bollinger",
    "LogReturn",
    "MovingAverageDistance",
    "Pivots",
    "RateOfChange",
    "RollingExtremes",
    "Volatility",
    "ZScore",
]


#: The price features of the default feature set (horizons that do not fit the bar size are left out by
#: :func:`features.sets.default_feature_set`).
_Spec = dict[str, object]
DEFAULT_SPECS: list[_Spec] = (
    [_Spec(kind="log_return", horizon=h) for h in ("1min", "5min", "15min", "1h", "1d")]
    + [
        _Spec(kind="volatility", window=w, estimator=e)
        for w in (20, 50, 200)
        for e in ("close_to_close", "parkinson", "garman_klass")
    ]
    + [_Spec(kind="rate_of_change", window=w) for w in (5, 20)]
    + [_Spec(kind="ma_distance", window=w) for w in (20, 50, 200)]
    + [
        _Spec(kind="zscore", window=20),
        _Spec(kind="rsi", window=14),
        _Spec(kind="bollinger", window=20, k=2.0),
    ]
    + [_Spec(kind="extremes", window=w) for w in (20, 50)]
    + [_Spec(kind="pivots", session_tz="UTC")]
)
