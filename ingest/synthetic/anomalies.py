"""Labelled anomalies: where they go, what they do to the minute-level market, and the labels they leave.

Placement is drawn from the simulation's seed. Each anomaly lies inside one instrument's session with quiet
margins around it (no other anomaly on that instrument, session open), so that the effect can be measured
against the instrument's own normal behaviour just before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from ingest.records import NS_PER_MINUTE
from ingest.synthetic.universe import MINUTES_PER_DAY, AssetSpec

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

KINDS: Final[tuple[str, ...]] = (
    "flash_crash",
    "volatility_spike",
    "volume_surge",
    "spread_blowout",
    "regime_change",
    "data_gap",
)


@dataclass(frozen=True)
class Label:
    """One injected anomaly, the ground truth a detector is scored against.

    Parameters
    ----------
    symbol : str
        Instrument the anomaly was injected into.
    start : int
        First nanosecond of the window, UTC (a minute boundary).
    end : int
        End of the window, nanoseconds UTC, exclusive (a minute boundary).
    kind : str
        One of :data:`KINDS`.
    magnitude : float
        Size of the anomaly; its unit depends on ``kind``:

        - ``flash_crash``: largest peak-to-trough drawdown inside the window, as a fraction of the peak
          price (0.05 = 5 %), measured on the emitted trade prints (quote midpoints for quote-only
          instruments) and rounded down to 1e-4, so the data always shows at least this drop.
        - ``volatility_spike``: multiplier applied to the instrument's volatility in the window.
        - ``volume_surge``: multiplier applied to the trade arrival rate, hence to volume, in the window.
        - ``spread_blowout``: multiplier applied to the quoted spread in the window.
        - ``regime_change``: new/old volatility ratio from ``start``; the drift also shifts (by 0.05
          per-minute standard deviations per minute, up or down) for the length of the window.
        - ``data_gap``: length of the window in minutes; no trade or quote is emitted inside it.
    """

    symbol: str
    start: int
    end: int
    kind: str
    magnitude: float


@dataclass(frozen=True)
class Injection:
    """An anomaly placed on the minute grid, before its label is measured.

    Parameters
    ----------
    asset : int
        Column of the instrument in the simulation's asset order.
    kind : str
        One of :data:`KINDS`.
    first_minute : int
        Index of the first minute of the window on the simulation grid.
    minutes : int
        Window length in minutes.
    magnitude : float
        Intended size (for ``flash_crash`` the intended drop fraction; the label carries the realised one).
    fall_minutes : int
        ``flash_crash`` only: minutes taken by the fall; the rest of the window is the partial recovery.
    recovery : float
        ``flash_crash`` only: fraction of the drop recovered by the end of the window.
    drift_sign : float
        ``regime_change`` only: direction of the drift shift, +1 or -1.
    """

    asset: int
    kind: str
    first_minute: int
    minutes: int
    magnitude: float
    fall_minutes: int = 0
    recovery: float = 0.0
    drift_sign: float = 0.0


@dataclass(frozen=True)
class MinuteEffects:
    """What the injections do to the minute grid; every array has shape ``(minutes, assets)``.

    Parameters
    ----------
    vol : numpy.ndarray
        Volatility multiplier.
    volume : numpy.ndarray
        Trade arrival-rate multiplier.
    spread : numpy.ndarray
        Quoted-spread multiplier.
    log_shift : numpy.ndarray
        Extra log return added to the minute (the flash-crash path).
    drift_sigma : numpy.ndarray
        Extra drift per minute, in units of the instrument's long-run per-minute standard deviation.
    gap : numpy.ndarray
        Minutes that emit no trade and no quote.
    """

    vol: F64
    volume: F64
    spread: F64
    log_shift: F64
    drift_sigma: F64
    gap: Bool


# Minutes of quiet, open market required before and after each window (before, after).
_MARGINS: Final[dict[str, tuple[int, int]]] = {
    "flash_crash": (60, 60),
    "volatility_spike": (60, 60),
    "volume_surge": (60, 60),
    "spread_blowout": (60, 60),
    # The comparison window before a regime change must itself stay clear of the opening hour's bustle.
    "regime_change": (120, 15),
    "data_gap": (30, 30),
}

_DURATIONS: Final[dict[str, tuple[int, int]]] = {
    "flash_crash": (8, 13),
    "volatility_spike": (20, 41),
    "volume_surge": (10, 21),
    "spread_blowout": (5, 16),
    "regime_change": (60, 121),
    "data_gap": (5, 16),
}


def _draw(rng: np.random.Generator, kind: str, spec: AssetSpec, asset: int, first: int) -> Injection:
    low, high = _DURATIONS[kind]
    minutes = int(rng.integers(low, high))
    if kind == "flash_crash":
        daily_vol = spec.annual_vol / np.sqrt(252.0)
        drop = float(np.clip(rng.uniform(3.0, 6.0) * daily_vol, 0.01, 0.2))
        fall = int(rng.integers(2, 5))
        return Injection(asset, kind, first, minutes, drop, fall_minutes=fall, recovery=float(rng.uniform(0.4, 0.7)))
    if kind == "volatility_spike":
        return Injection(asset, kind, first, minutes, float(rng.uniform(4.0, 8.0)))
    if kind == "volume_surge":
        return Injection(asset, kind, first, minutes, float(rng.uniform(5.0, 10.0)))
    if kind == "spread_blowout":
        return Injection(asset, kind, first, minutes, float(rng.uniform(6.0, 12.0)))
    if kind == "regime_change":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return Injection(asset, kind, first, minutes, float(rng.uniform(2.5, 4.0)), drift_sign=sign)
    return Injection(asset, kind, first, minutes, float(minutes))


def _candidates(open_col: Bool, blocked_col: Bool, day: int, span_before: int, span_after: int, length: int) -> I64:
    """First minutes in ``day`` whose window plus margins is open, unblocked and inside the day."""
    lo, hi = day * MINUTES_PER_DAY, (day + 1) * MINUTES_PER_DAY
    usable = open_col[lo:hi] & ~blocked_col[lo:hi]
    total = span_before + length + span_after
    if total > usable.size:
        return np.empty(0, dtype=np.int64)
    run = np.concatenate([[0], np.cumsum(usable, dtype=np.int64)])
    ok = (run[total:] - run[:-total]) == total
    return np.asarray(np.flatnonzero(ok) + lo + span_before, dtype=np.int64)


def plan_injections(
    rng: np.random.Generator, specs: list[AssetSpec], open_mask: Bool, days: int, per_day: int
) -> list[Injection]:
    """Place ``per_day`` anomalies of every kind on each simulated day.

    An instrument is eligible when its session leaves room for the window and its margins; volume surges
    need trade prints, so quote-only instruments never get one. A kind is skipped on a day where no
    instrument is eligible (e.g. a weekend with only US-session instruments).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness, derived from the simulation seed.
    specs : list of AssetSpec
        Instruments, in simulation column order.
    open_mask : numpy.ndarray
        Session mask, shape ``(minutes, assets)``.
    days : int
        Number of simulated days.
    per_day : int
        Anomalies of each kind per day.

    Returns
    -------
    list of Injection
        Ordered by day, then kind, then draw.
    """
    blocked = np.zeros(open_mask.shape, dtype=np.bool_)
    out: list[Injection] = []
    for day in range(days):
        for kind in KINDS:
            for _ in range(per_day):
                before, after = _MARGINS[kind]
                for asset in rng.permutation(len(specs)):
                    spec = specs[int(asset)]
                    if kind == "volume_surge" and not spec.has_trades:
                        continue
                    probe = _draw(rng, kind, spec, int(asset), 0)
                    starts = _candidates(open_mask[:, asset], blocked[:, asset], day, before, after, probe.minutes)
                    if starts.size == 0:
                        continue
                    first = int(starts[rng.integers(starts.size)])
                    out.append(replace(probe, first_minute=first))
                    blocked[max(0, first - before) : first + probe.minutes + after, asset] = True
                    break
    return out


def minute_effects(injections: list[Injection], shape: tuple[int, int]) -> MinuteEffects:
    """The combined effect of ``injections`` on a grid of ``shape`` = ``(minutes, assets)``."""
    vol = np.ones(shape)
    volume = np.ones(shape)
    spread = np.ones(shape)
    log_shift = np.zeros(shape)
    drift_sigma = np.zeros(shape)
    gap = np.zeros(shape, dtype=np.bool_)
    for inj in injections:
        window = slice(inj.first_minute, inj.first_minute + inj.minutes)
        a = inj.asset
        if inj.kind == "flash_crash":
            fall, rest = inj.fall_minutes, inj.minutes - inj.fall_minutes
            trough = np.log1p(-inj.magnitude)
            final = np.log1p(-inj.magnitude * (1.0 - inj.recovery))
            start = inj.first_minute
            log_shift[start : start + fall, a] += trough / fall
            log_shift[start + fall : start + inj.minutes, a] += (final - trough) / rest
            # Liquidity leaves during a crash: prices jump around more and the book thins out.
            vol[window, a] *= 2.0
            spread[window, a] *= 3.0
        elif inj.kind == "volatility_spike":
            vol[window, a] *= inj.magnitude
        elif inj.kind == "volume_surge":
            volume[window, a] *= inj.magnitude
        elif inj.kind == "spread_blowout":
            spread[window, a] *= inj.magnitude
        elif inj.kind == "regime_change":
            vol[window, a] *= inj.magnitude
            drift_sigma[window, a] += 0.05 * inj.drift_sign
        else:
            gap[window, a] = True
    return MinuteEffects(vol, volume, spread, log_shift, drift_sigma, gap)


def max_drawdown(prices: F64) -> float:
    """Largest fall from a running peak to a later price, as a fraction of the peak (0 when never falling)."""
    if prices.size == 0:
        return 0.0
    peak = np.maximum.accumulate(prices)
    return float(np.max(1.0 - prices / peak))


def to_label(injection: Injection, spec: AssetSpec, grid_start_ns: int, realised_drawdown: float) -> Label:
    """The label of ``injection``; ``realised_drawdown`` is used for flash crashes only."""
    start = grid_start_ns + injection.first_minute * NS_PER_MINUTE
    end = start + injection.minutes * NS_PER_MINUTE
    magnitude = injection.magnitude
    if injection.kind == "flash_crash":
        magnitude = float(np.floor(realised_drawdown * 1e4) / 1e4)
    return Label(spec.symbol, int(start), int(end), injection.kind, float(magnitude))
