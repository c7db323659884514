"""The synthetic market: a minute-level multi-asset path, then trades, quotes and one-minute bars on top of it.

The minute grid carries everything that moves slowly: GARCH(1,1) variance per instrument, Student-t innovations
correlated through a factor model, a Markov chain of market regimes, the intraday activity profile, sessions and
the injected anomalies. :mod:`ingest.synthetic.ticks` then draws the events inside each minute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.bars import build_bars
from ingest.records import NS_PER_DAY, NS_PER_MINUTE, BarBatch, QuoteBatch, TickBatch
from ingest.synthetic.anomalies import Injection, Label, max_drawdown, minute_effects, plan_injections, to_label
from ingest.synthetic.ticks import Events, MinutePath, generate_events
from ingest.synthetic.universe import (
    FACTORS,
    MINUTES_PER_DAY,
    UNIVERSE,
    AssetSpec,
    factor_loadings,
    target_correlation,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

REGIMES: Final[tuple[str, ...]] = ("calm", "bull", "bear", "crisis")
# Annualised drift of a regime_beta=1 instrument, volatility multiplier and trading-activity multiplier.
_REGIME_DRIFT: Final = np.array([0.05, 0.40, -0.40, -1.50])
_REGIME_VOL: Final = np.array([0.85, 0.95, 1.30, 2.20])
_REGIME_VOLUME: Final = np.array([0.90, 1.00, 1.20, 1.80])
# Hourly transition probabilities, rows = from (calm, bull, bear, crisis).
_REGIME_TRANSITIONS: Final = np.array(
    [
        [0.950, 0.026, 0.023, 0.001],
        [0.030, 0.957, 0.012, 0.001],
        [0.030, 0.012, 0.953, 0.005],
        [0.040, 0.000, 0.080, 0.880],
    ]
)

_T_DOF: Final = 6.0
# Uncapped, a rare t draw of 30+ standard deviations compounds through GARCH into an unlabelled crash
# larger than the labelled ones; the cap keeps the fat tails and leaves the big moves to the labels.
_SHOCK_CAP: Final = 7.0
# (alpha, beta) of the market-wide variance and of each instrument's own-noise variance. The own part
# reacts less, so that a small idiosyncratic share cannot balloon and swamp an index's market exposure.
_MARKET_GARCH: Final = (0.08, 0.90)
_OWN_GARCH: Final = (0.04, 0.90)
# Closed minutes still move the price a little, so that a session opens with a modest overnight gap
# (a 1050-minute night carries the variance of about ten open minutes).
_CLOSED_VOL: Final = 0.1
_SPREAD_VOL_ELASTICITY: Final = 0.8


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate.

    Parameters
    ----------
    seed : int
        Seed of every random draw; the same configuration gives the same data, bit for bit.
    days : int
        Number of UTC calendar days simulated, >= 1.
    start : str
        First UTC date, ``YYYY-MM-DD``; the simulation starts at its midnight.
    assets : tuple of str
        Symbols from :data:`~ingest.synthetic.universe.UNIVERSE`, each at most once.
    anomalies : bool
        Whether to inject labelled anomalies.
    anomalies_per_day : int
        Anomalies of each kind per simulated day (when ``anomalies``), >= 0.
    activity : float
        Multiplier on every trade and quote arrival rate, > 0; below 1 gives smaller, faster runs.

    Raises
    ------
    ValueError
        Naming the field and the value that is out of bounds.
    """

    seed: int = 0
    days: int = 1
    start: str = "2024-01-02"
    assets: tuple[str, ...] = tuple(UNIVERSE)
    anomalies: bool = True
    anomalies_per_day: int = 1
    activity: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r}: must be a non-negative integer")
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise ValueError(f"days={self.days!r}: must be an integer >= 1")
        try:
            dt.date.fromisoformat(self.start)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"start={self.start!r}: must be a UTC date as YYYY-MM-DD") from exc
        if not isinstance(self.assets, tuple) or not self.assets:
            raise ValueError(f"assets={self.assets!r}: must be a non-empty tuple of symbols")
        for symbol in self.assets:
            if symbol not in UNIVERSE:
                raise ValueError(f"assets={symbol!r}: unknown asset (known: {', '.join(UNIVERSE)})")
        if len(set(self.assets)) != len(self.assets):
            raise ValueError(f"assets={self.assets!r}: a symbol appears more than once")
        if isinstance(self.anomalies_per_day, bool) or not isinstance(self.anomalies_per_day, int):
            raise ValueError(f"anomalies_per_day={self.anomalies_per_day!r}: must be an integer >= 0")
        if self.anomalies_per_day < 0:
            raise ValueError(f"anomalies_per_day={self.anomalies_per_day!r}: must be an integer >= 0")
        if not isinstance(self.activity, int | float) or not np.isfinite(self.activity) or self.activity <= 0:
            raise ValueError(f"activity={self.activity!r}: must be a finite number > 0")

    @property
    def start_ns(self) -> int:
        """Midnight UTC of ``start``, nanoseconds since the epoch."""
        day = dt.date.fromisoformat(self.start)
        return (day - dt.date(1970, 1, 1)).days * NS_PER_DAY


@dataclass(frozen=True)
class SimulationResult:
    """Everything a simulation produced.

    Parameters
    ----------
    trades : TickBatch
        Trade prints sorted by ``(ts, symbol, seq)``; ``seq`` counts 0, 1, ... per symbol in time order.
    quotes : QuoteBatch
        Quote updates, sorted and numbered like the trades.
    bars : BarBatch
        One-minute bars sorted by ``(ts, symbol)``.
    labels : list of Label
        The injected anomalies, ordered by start time then symbol.
    regimes : pandas.DataFrame
        The market-regime path: ``start``, ``end`` (UTC timestamps, end exclusive), ``regime``,
        ``drift_annual`` (drift of a ``regime_beta=1`` instrument, per year), ``vol_multiplier``,
        ``volume_multiplier``; one row per run of equal regime.
    target_correlation : pandas.DataFrame
        Target correlation of the one-minute return innovations between the simulated symbols.
    """

    trades: TickBatch
    quotes: QuoteBatch
    bars: BarBatch
    labels: list[Label]
    regimes: pd.DataFrame
    target_correlation: pd.DataFrame


def _student_t(rng: np.random.Generator, shape: tuple[int, ...]) -> F64:
    """Student-t draws scaled to unit variance, capped at ``_SHOCK_CAP`` standard deviations."""
    draws = rng.standard_t(_T_DOF, shape) * np.sqrt((_T_DOF - 2.0) / _T_DOF)
    return np.asarray(np.clip(draws, -_SHOCK_CAP, _SHOCK_CAP), dtype=np.float64)


def _regime_path(rng: np.random.Generator, hours: int) -> I64:
    state = np.empty(hours, dtype=np.int64)
    current = 0
    cumulative = np.cumsum(_REGIME_TRANSITIONS, axis=1)
    draws = rng.random(hours)
    for h in range(hours):
        state[h] = current
        current = int(np.searchsorted(cumulative[current], draws[h], side="right"))
        current = min(current, len(REGIMES) - 1)
    return state


def _regime_frame(hourly: I64, start_ns: int) -> pd.DataFrame:
    change = np.flatnonzero(np.diff(hourly)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [hourly.size]])
    state = hourly[starts]
    hour_ns = 60 * NS_PER_MINUTE
    return pd.DataFrame(
        {
            "start": pd.to_datetime(start_ns + starts * hour_ns, utc=True),
            "end": pd.to_datetime(start_ns + ends * hour_ns, utc=True),
            "regime": [REGIMES[s] for s in state],
            "drift_annual": _REGIME_DRIFT[state],
            "vol_multiplier": _REGIME_VOL[state],
            "volume_multiplier": _REGIME_VOLUME[state],
        }
    )


def _garch_variance(z: F64, alpha: float, beta: float) -> F64:
    """GARCH(1,1) variance of ``sqrt(h) * z`` per column, unit long-run level; ``z`` unit-variance shocks."""
    omega = 1.0 - alpha - beta
    h = np.empty_like(z)
    h[0] = 1.0
    shocks = alpha * z**2 + beta
    # The recursion is sequential in time only; every step is vectorised over the instruments.
    for t in range(1, z.shape[0]):
        h[t] = omega + shocks[t - 1] * h[t - 1]
    return h


def _sort_and_number(ts: I64, rank: I64, counts: list[int]) -> tuple[npt.NDArray[np.intp], I64]:
    """Order by ``(ts, symbol, seq)`` and per-symbol sequence numbers of per-symbol, time-ordered blocks."""
    seq = np.concatenate([np.arange(c, dtype=np.int64) for c in counts])
    return np.lexsort((seq, rank, ts)), seq


def simulate(config: SimulationConfig) -> SimulationResult:
    """Simulate trades, quotes, one-minute bars and labelled anomalies for ``config``.

    Parameters
    ----------
    config : SimulationConfig
        What to simulate.

    Returns
    -------
    SimulationResult
        Batches sorted by ``(ts, symbol, seq)`` with integer-nanosecond UTC timestamps.

    Examples
    --------
    >>> result = simulate(SimulationConfig(seed=1, assets=("SPY", "TLT")))
    >>> sorted(set(result.trades.symbol))
    ['SPY', 'TLT']
    """
    specs: list[AssetSpec] = [UNIVERSE[s] for s in config.assets]
    n_assets, n_minutes = len(specs), config.days * MINUTES_PER_DAY
    start_ns = config.start_ns
    minute_ts = start_ns + np.arange(n_minutes, dtype=np.int64) * NS_PER_MINUTE
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    rng_regime, rng_path, rng_anomaly = (np.random.default_rng(s) for s in seeds[:3])
    event_seeds = seeds[3].spawn(n_assets)

    open_mask = np.stack([s.session.is_open(minute_ts) for s in specs], axis=1)
    activity = np.stack([s.session.activity(minute_ts, open_mask[:, i]) for i, s in enumerate(specs)], axis=1)

    hourly = _regime_path(rng_regime, config.days * 24)
    regime = np.repeat(hourly, 60)

    injections: list[Injection] = []
    if config.anomalies and config.anomalies_per_day > 0:
        injections = plan_injections(rng_anomaly, specs, open_mask, config.days, config.anomalies_per_day)
    effects = minute_effects(injections, (n_minutes, n_assets))

    # One market-wide GARCH(1,1) variance, driven by the market factor's shocks, scales everything; each
    # instrument's own noise adds a GARCH of its own. Both have unit long-run variance and independent
    # drivers, so the unconditional correlation is the target exactly, and the correlation between two
    # factor-driven instruments stays near it at every moment instead of swinging with unrelated variances.
    loadings = factor_loadings(config.assets)
    own = np.sqrt(np.clip(1.0 - np.sum(loadings**2, axis=1), 0.0, None))
    factor_shocks = _student_t(rng_path, (n_minutes, loadings.shape[1]))
    own_shocks = _student_t(rng_path, (n_minutes, n_assets))
    market = FACTORS.index("market")
    market_var = _garch_variance(factor_shocks[:, market : market + 1], *_MARKET_GARCH)
    own_var = _garch_variance(own_shocks, *_OWN_GARCH)
    z = np.sqrt(market_var) * (factor_shocks @ loadings.T + np.sqrt(own_var) * own_shocks * own)
    h = market_var * (np.sum(loadings**2, axis=1) + own_var * own**2)

    minutes_per_year = np.array([s.session.minutes_per_year for s in specs])
    sigma_long = np.array([s.annual_vol for s in specs]) / np.sqrt(minutes_per_year)
    beta = np.array([s.regime_beta for s in specs])
    # Conditional volatility relative to long-run (``z`` already carries the GARCH part): what spreads and
    # trading activity respond to.
    vol_state = np.sqrt(h) * _REGIME_VOL[regime][:, None] * effects.vol
    seasonal = np.where(open_mask, np.sqrt(np.maximum(activity, 1e-12)), _CLOSED_VOL)
    sigma = sigma_long * vol_state * seasonal
    drift = _REGIME_DRIFT[regime][:, None] * beta / minutes_per_year + effects.drift_sigma * sigma_long
    returns = drift + sigma_long * _REGIME_VOL[regime][:, None] * effects.vol * seasonal * z + effects.log_shift
    log_price = np.vstack([np.zeros((1, n_assets)), np.cumsum(returns, axis=0)]) + np.log(
        [s.start_price for s in specs]
    )

    vol_ratio = np.clip(vol_state * seasonal, 0.3, 30.0)
    spread_bps = np.array([s.base_spread_bps for s in specs]) * vol_ratio**_SPREAD_VOL_ELASTICITY * effects.spread
    busy = activity * np.sqrt(np.clip(vol_state, 0.3, 10.0)) * _REGIME_VOLUME[regime][:, None] * config.activity
    trade_rate = busy * np.array([s.trades_per_minute for s in specs]) * effects.volume
    quote_rate = busy * np.array([s.quotes_per_minute for s in specs]) * np.sqrt(effects.volume)

    events: list[Events] = []
    for i, spec in enumerate(specs):
        path = MinutePath(
            minute_ts=minute_ts,
            log_price=log_price[:, i],
            sigma=sigma[:, i],
            spread_bps=spread_bps[:, i],
            trade_rate=trade_rate[:, i],
            quote_rate=quote_rate[:, i],
            gap=effects.gap[:, i],
        )
        events.append(generate_events(np.random.default_rng(event_seeds[i]), spec, path))

    labels = [_label(inj, specs[inj.asset], events[inj.asset], start_ns) for inj in injections]
    labels.sort(key=lambda lab: (lab.start, lab.symbol, lab.kind))

    order_names = sorted(config.assets)
    rank_of = np.array([order_names.index(s) for s in config.assets], dtype=np.int64)
    trades = _trade_batch(events, config.assets, rank_of)
    quotes = _quote_batch(events, config.assets, rank_of)
    bars = build_bars(trades, quotes, interval_ns=NS_PER_MINUTE)
    return SimulationResult(
        trades=trades,
        quotes=quotes,
        bars=bars,
        labels=labels,
        regimes=_regime_frame(hourly, start_ns),
        target_correlation=target_correlation(config.assets),
    )


def _label(injection: Injection, spec: AssetSpec, events: Events, start_ns: int) -> Label:
    drawdown = 0.0
    if injection.kind == "flash_crash":
        lo = start_ns + injection.first_minute * NS_PER_MINUTE
        hi = lo + injection.minutes * NS_PER_MINUTE
        if spec.has_trades:
            inside = (events.trade_ts >= lo) & (events.trade_ts < hi)
            drawdown = max_drawdown(events.trade_price[inside])
        else:
            inside = (events.quote_ts >= lo) & (events.quote_ts < hi)
            drawdown = max_drawdown((events.bid[inside] + events.ask[inside]) / 2.0)
    return to_label(injection, spec, start_ns, drawdown)


def _trade_batch(events: list[Events], symbols: tuple[str, ...], rank_of: I64) -> TickBatch:
    counts = [e.trade_ts.size for e in events]
    ts = np.concatenate([e.trade_ts for e in events])
    rank = np.repeat(rank_of, counts)
    sym = np.repeat(np.asarray(symbols, dtype=object), counts)
    order, seq = _sort_and_number(ts, rank, counts)
    return TickBatch(
        ts=ts[order],
        symbol=sym[order],
        price=np.concatenate([e.trade_price for e in events])[order],
        size=np.concatenate([e.trade_size for e in events])[order],
        seq=seq[order],
        suspicious=np.zeros(ts.size, dtype=np.bool_),
    )


def _quote_batch(events: list[Events], symbols: tuple[str, ...], rank_of: I64) -> QuoteBatch:
    counts = [e.quote_ts.size for e in events]
    ts = np.concatenate([e.quote_ts for e in events])
    rank = np.repeat(rank_of, counts)
    sym = np.repeat(np.asarray(symbols, dtype=object), counts)
    order, seq = _sort_and_number(ts, rank, counts)
    return QuoteBatch(
        ts=ts[order],
        symbol=sym[order],
        bid=np.concatenate([e.bid for e in events])[order],
        ask=np.concatenate([e.ask for e in events])[order],
        bid_size=np.concatenate([e.bid_size for e in events])[order],
        ask_size=np.concatenate([e.ask_size for e in events])[order],
        seq=seq[order],
    )
