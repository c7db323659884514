"""Volume features: VWAP (session-anchored and rolling), volume momentum, time-of-day relative volume and
order-flow imbalance.

Units: VWAPs are prices in the quote currency; distances are relative (0.01 = 1 %); ratios and z-scores are
dimensionless; order-flow imbalance is in [-1, 1]. Windows count bars and include the current bar.

A bar's price-times-volume is its own ``vwap`` times its ``volume``; a bar without a ``vwap`` (NaN: it saw no
trade) uses its close. Bars with zero volume (quote-only bars, FX without volume) add nothing to volume sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from features.base import BarInput, Feature, check_tz, check_window, register, safe_div, session_ids
from features.kernels import rolling_sums_k
from features.windows import RollingWindow
from ingest.records import F64, I64, NS_PER_DAY


def _bar_price(bars: BarInput) -> F64:
    """The price a bar's volume traded at: its VWAP, or its close when it has none."""
    return np.where(np.isnan(bars.vwap), bars.close, bars.vwap)


# ------------------------------------------------------------------------------------------------------------ VWAP
@numba.njit(cache=True, nogil=True)
def _session_vwap(session: I64, price: F64, volume: F64, st: F64, out: F64) -> None:  # pragma: no cover
    # st: [session, sum of price * volume, sum of volume, started]
    for i in range(session.shape[0]):
        if st[3] == 0.0 or session[i] != st[0]:
            st[0] = session[i]
            st[1] = 0.0
            st[2] = 0.0
            st[3] = 1.0
        v = volume[i]
        p = price[i]
        if v > 0.0 and not np.isnan(p):
            st[1] += p * v
            st[2] += v
        out[i] = st[1] / st[2] if st[2] > 0.0 else np.nan


@register
class SessionVwap(Feature):
    """Volume-weighted average price since the start of the session, and the close's distance to it.

    A session is a calendar day in ``session_tz`` (``UTC`` by default; ``America/New_York`` for US equities).
    Columns ``vwap_session`` (quote currency) and ``vwap_session_dist`` = ``close / vwap_session - 1``. Bars with
    zero volume do not move it; NaN until the session has seen volume.
    """

    kind = "vwap_session"

    def __init__(self, session_tz: str = "UTC") -> None:
        self.session_tz = check_tz(session_tz)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return ("vwap_session", "vwap_session_dist")

    def init_state(self, interval_ns: int) -> F64:
        return np.zeros(4)

    def update(self, state: F64, bars: BarInput) -> dict[str, F64]:
        vwap = np.empty(len(bars))
        _session_vwap(session_ids(bars.ts, self.session_tz), _bar_price(bars), bars.volume, state, vwap)
        return {"vwap_session": vwap, "vwap_session_dist": safe_div(bars.close, vwap) - 1.0}


@register
class RollingVwap(Feature):
    """Volume-weighted average price over the last ``window`` bars, and the close's distance to it.

    Columns ``vwap_<window>`` (quote currency) and ``vwap_dist_<window>`` = ``close / vwap_<window> - 1``; NaN
    when the window holds no volume. Warm-up ``window - 1`` bars.
    """

    kind = "vwap"

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"vwap_{self.window}", f"vwap_dist_{self.window}")

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window, 2)

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        out = np.empty((2, len(bars)))
        _rolling_vwap(bars.close, bars.vwap, bars.volume, state.buf, state.ist, state.fst, out)
        return dict(zip(self.columns(bars.interval_ns), out, strict=True))


@numba.njit(cache=True, nogil=True)
def _rolling_vwap(
    close: F64, vwap: F64, volume: F64, buf: F64, ist: I64, fst: F64, out: F64
) -> None:  # pragma: no cover
    # window sums of price * volume (the bar's VWAP, or its close without one) and of volume, in one pass
    n = close.shape[0]
    x = np.empty((2, n))
    for i in range(n):
        price = close[i] if np.isnan(vwap[i]) else vwap[i]
        x[0, i] = price * volume[i] if volume[i] > 0.0 else 0.0
        x[1, i] = volume[i]
    s, q = np.empty((2, n)), np.empty((2, n))
    rolling_sums_k(x, buf, ist, fst, s, q)
    for i in range(n):
        v = s[0, i] / s[1, i] if s[1, i] != 0.0 and np.isfinite(s[1, i]) else np.nan
        out[0, i] = v if np.isfinite(v) else np.nan
        d = close[i] / v - 1.0 if v != 0.0 else np.nan
        out[1, i] = d if np.isfinite(d) else np.nan


# ------------------------------------------------------------------------------------------------ volume momentum
@register
class VolumeRatio(Feature):
    """Volume relative to its simple moving average: ``volume / SMA(volume, window) - 1``.

    The average includes the current bar (as every window here does), so the value lies in
    ``[-1, window - 1]``: 0 is an average bar, 1 a bar with twice the window's mean volume. NaN when the window
    holds no volume. Column ``volume_ratio_<window>``; warm-up ``window - 1`` bars.
    """

    kind = "volume_ratio"

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"volume_ratio_{self.window}",)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window)

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        s, _ = state.sum1(bars.volume)
        return {f"volume_ratio_{self.window}": safe_div(bars.volume * self.window, s) - 1.0}


@register
class VolumeZScore(Feature):
    """Z-score of volume in its window: ``(volume - mean) / std`` (ddof=1, current bar included).

    NaN on a flat window (every bar the same volume, e.g. all zero). Column ``volume_z_<window>``; warm-up
    ``window - 1`` bars.
    """

    kind = "volume_zscore"

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window, 2)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"volume_z_{self.window}",)

    def init_state(self, interval_ns: int) -> RollingWindow:
        return RollingWindow.new(self.window)

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: RollingWindow, bars: BarInput) -> dict[str, F64]:
        mean, std = state.mean_std(bars.volume)
        return {f"volume_z_{self.window}": safe_div(bars.volume - mean, std)}


# ------------------------------------------------------------------------------------ relative volume by time of day
@numba.njit(cache=True, nogil=True)
def _rvol_tod(slot: I64, volume: F64, buf: F64, ist: I64, out: F64) -> None:  # pragma: no cover
    # buf[s, :] is a ring of the volumes of the last bars in slot s; ist[s] = (next position, entries held)
    days = buf.shape[1]
    for i in range(slot.shape[0]):
        s = slot[i]
        k = ist[s, 1]
        if k > 0:
            # oldest first, so the sum is the same whatever the batching
            pos = ist[s, 0] - k
            if pos < 0:
                pos += days
            total = 0.0
            for _ in range(k):
                total += buf[s, pos]
                pos = pos + 1 if pos + 1 < days else 0
            mean = total / k
            out[i] = volume[i] / mean if mean > 0.0 else np.nan
        else:
            out[i] = np.nan
        buf[s, ist[s, 0]] = volume[i]
        ist[s, 0] = ist[s, 0] + 1 if ist[s, 0] + 1 < days else 0
        if k < days:
            ist[s, 1] = k + 1


@dataclass
class _RvolState:
    """Per time-of-day slot, a ring of the last ``days`` volumes seen in it."""

    buf: F64
    ist: I64


def tod_slots(ts: I64, interval_ns: int, tz: str = "UTC") -> I64:
    """Time-of-day slot of each bar: local time since midnight in ``tz``, in whole bars of ``interval_ns``.

    Examples
    --------
    >>> tod_slots(np.array([0, 90 * 60 * 10**9], dtype=np.int64), 60 * 10**9)
    array([ 0, 90])
    """
    if tz == "UTC":
        local = ts
    else:
        index = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).tz_convert(tz).tz_localize(None)
        local = np.asarray(index.asi8, dtype=np.int64)
    return np.asarray((local % NS_PER_DAY) // interval_ns, dtype=np.int64)


@register
class RelativeVolumeTimeOfDay(Feature):
    """Volume relative to the same time of day: the bar's volume divided by the mean volume of the bars in the
    same time-of-day slot over the previous ``days`` sessions that had a bar in that slot.

    A slot is the bar start's time since local midnight in ``session_tz`` (``UTC`` by default), in whole bars:
    1440 slots for one-minute bars, one for daily bars. The current bar is excluded from the mean; 1 is a
    usual bar for that time, 3 three times the usual volume. NaN until the slot has been seen on a previous day,
    and when its past volume is zero. Column ``rvol_tod_<days>``.

    The state holds ``slots x days`` volumes (1440 x 20 float64 = 230 kB for one-minute bars).
    """

    kind = "rvol_tod"

    def __init__(self, days: int = 20, session_tz: str = "UTC") -> None:
        self.days = check_window("days", days)
        self.session_tz = check_tz(session_tz)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"rvol_tod_{self.days}",)

    def init_state(self, interval_ns: int) -> _RvolState:
        slots = max(1, -(-NS_PER_DAY // interval_ns))
        return _RvolState(np.full((slots, self.days), np.nan), np.zeros((slots, 2), np.int64))

    def update(self, state: _RvolState, bars: BarInput) -> dict[str, F64]:
        out = np.empty(len(bars))
        _rvol_tod(tod_slots(bars.ts, bars.interval_ns, self.session_tz), bars.volume, state.buf, state.ist, out)
        return {f"rvol_tod_{self.days}": out}


# ----------------------------------------------------------------------------------------------- order-flow imbalance
@numba.njit(cache=True, nogil=True)
def _bar_signs(close: F64, volume: F64, bid: F64, ask: F64, st: F64, out: F64) -> None:  # pragma: no cover
    # st: [close of the last bar with volume (NaN before one), direction of the last non-zero change of that close]
    for i in range(close.shape[0]):
        c = close[i]
        traded = volume[i] > 0.0
        tick = st[1]
        if traded and not np.isnan(st[0]):
            if c > st[0]:
                tick = 1.0
            elif c < st[0]:
                tick = -1.0
        sign = tick
        if not (np.isnan(bid[i]) or np.isnan(ask[i])):
            mid = 0.5 * (bid[i] + ask[i])
            if c > mid:
                sign = 1.0
            elif c < mid:
                sign = -1.0
        out[i] = sign
        if traded:
            st[0] = c
            st[1] = tick


def bar_signs(close: F64, volume: F64, bid: F64, ask: F64, state: F64) -> F64:
    """Trade direction of each bar (+1 buy, -1 sell, 0 unknown) by the quote rule, falling back on the tick rule.

    A bar with a bid and an ask is a buy when its close is above the midpoint, a sell when below; at the midpoint,
    or without quotes, the tick rule decides: up from the previous bar with volume is +1, down -1, unchanged
    keeps the direction of the last change (0 before any). ``state`` (float64[2], start ``[nan, 0]``) carries the
    last traded close and the last direction; it is advanced in place.
    """
    out = np.empty(len(close))
    _bar_signs(close, volume, bid, ask, state, out)
    return out


@dataclass
class _OfiState:
    signs: F64
    sums: RollingWindow


@register
class OrderFlowImbalance(Feature):
    """Order-flow imbalance: ``sum(sign * volume) / sum(volume)`` over the last ``window`` bars, in [-1, 1].

    The sign is a bar-level classification (:func:`bar_signs`, a Lee-Ready rule applied to the bar's close and
    last quote, not to individual trades): all of a bar's volume counts as bought or as sold. NaN when the window
    holds no volume. Column ``ofi_<window>``; warm-up ``window - 1`` bars.
    """

    kind = "ofi"

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)

    def columns(self, interval_ns: int) -> tuple[str, ...]:
        return (f"ofi_{self.window}",)

    def init_state(self, interval_ns: int) -> _OfiState:
        return _OfiState(np.array([np.nan, 0.0]), RollingWindow.new(self.window, 2))

    def warmup(self) -> int:
        return self.window - 1

    def update(self, state: _OfiState, bars: BarInput) -> dict[str, F64]:
        out = np.empty(len(bars))
        w = state.sums
        _ofi(bars.close, bars.volume, bars.bid, bars.ask, state.signs, w.buf, w.ist, w.fst, out)
        return {f"ofi_{self.window}": out}


@numba.njit(cache=True, nogil=True)
def _ofi(
    close: F64, volume: F64, bid: F64, ask: F64, signs: F64, buf: F64, ist: I64, fst: F64, out: F64
) -> None:  # pragma: no cover
    n = close.shape[0]
    sign = np.empty(n)
    _bar_signs(close, volume, bid, ask, signs, sign)
    x = np.empty((2, n))
    for i in range(n):
        x[0, i] = sign[i] * volume[i]
        x[1, i] = volume[i]
    s, q = np.empty((2, n)), np.empty((2, n))
    rolling_sums_k(x, buf, ist, fst, s, q)
    for i in range(n):
        r = s[0, i] / s[1, i] if s[1, i] != 0.0 and np.isfinite(s[1, i]) else np.nan
        out[i] = min(1.0, max(-1.0, r)) if np.isfinite(r) else np.nan


__all__ = [
    "OrderFlowImbalance",
    "RelativeVolumeTimeOfDay",
    "RollingVwap",
    "SessionVwap",
    "VolumeRatio",
    "VolumeZScore",
    "bar_signs",
    "tod_slots",
]

#: The volume features of the default feature set.
DEFAULT_SPECS: list[dict[str, object]] = [
    {"kind": "vwap_session", "session_tz": "UTC"},
    {"kind": "vwap", "window": 20},
    {"kind": "vwap", "window": 50},
    {"kind": "volume_ratio", "window": 20},
    {"kind": "volume_ratio", "window": 50},
    {"kind": "volume_zscore", "window": 20},
    {"kind": "rvol_tod", "days": 20, "session_tz": "UTC"},
    {"kind": "ofi", "window": 5},
    {"kind": "ofi", "window": 20},
]
