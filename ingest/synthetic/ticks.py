"""Trades and quotes of one instrument inside each minute, vectorised over all of its events.

Arrivals are Poisson within every minute. The midpoint at an event follows a Brownian bridge pinned to the
minute grid's log prices, so the minute path fixes where each minute starts and ends and the prints in between
wander consistently around it. Quotes straddle that midpoint by the minute's spread; trades print at the bid or
the ask the quote would show at that instant, now and then inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.records import NS_PER_MINUTE
from ingest.synthetic.universe import AssetSpec

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class MinutePath:
    """Minute-level state of one instrument that its events are drawn from (arrays of length ``minutes``).

    Parameters
    ----------
    minute_ts : numpy.ndarray
        Start of each minute, ns UTC.
    log_price : numpy.ndarray
        Log midpoint at each minute boundary, length ``minutes + 1``.
    sigma : numpy.ndarray
        Standard deviation of the minute's log return.
    spread_bps : numpy.ndarray
        Quoted spread, basis points of the midpoint.
    trade_rate : numpy.ndarray
        Expected trades in the minute (0 when closed).
    quote_rate : numpy.ndarray
        Expected quote updates in the minute (0 when closed).
    gap : numpy.ndarray
        Minutes whose events are withheld (a labelled data gap).
    """

    minute_ts: I64
    log_price: F64
    sigma: F64
    spread_bps: F64
    trade_rate: F64
    quote_rate: F64
    gap: Bool


@dataclass(frozen=True)
class Events:
    """Trades and quotes of one instrument, each in time order.

    ``trade_*`` arrays share one length and ``quote_*`` arrays another; sizes are in shares, coins or units
    of FX base currency, prices in the quote currency.
    """

    trade_ts: I64
    trade_price: F64
    trade_size: F64
    quote_ts: I64
    bid: F64
    ask: F64
    bid_size: F64
    ask_size: F64


def _round_to_tick(ticks: F64, spec: AssetSpec) -> F64:
    return np.round(ticks * spec.tick_size, spec.price_decimals)


def bridge_log_mid(rng: np.random.Generator, path: MinutePath, minute: I64, u: F64) -> F64:
    """Log midpoint at each event: a Brownian bridge between the minute grid's log prices.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws one normal per event, then one per minute holding events, in that order.
    path : MinutePath
        Grid log prices and per-minute standard deviations.
    minute : numpy.ndarray
        Minute index of each event, non-decreasing.
    u : numpy.ndarray
        Position of each event within its minute, in [0, 1), non-decreasing within a minute.

    Returns
    -------
    numpy.ndarray
        Log midpoints, one per event.
    """
    n = minute.size
    first = np.ones(n, dtype=np.bool_)
    first[1:] = minute[1:] != minute[:-1]
    last = np.ones(n, dtype=np.bool_)
    last[:-1] = first[1:]
    prev_u = np.where(first, 0.0, np.concatenate([[0.0], u[:-1]]))
    sig = path.sigma[minute]
    steps = np.sqrt(u - prev_u) * sig * rng.standard_normal(n)
    walk = np.cumsum(steps)
    # Subtracting the running sum before each minute's first event restarts the walk at zero every minute.
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    walk = walk - (walk - steps)[group_start]
    end_value = walk[last] + np.sqrt(1.0 - u[last]) * sig[last] * rng.standard_normal(int(last.sum()))
    group_id = np.cumsum(first) - 1
    bridge = walk - u * end_value[group_id]
    start, stop = path.log_price[minute], path.log_price[minute + 1]
    return np.asarray(start + u * (stop - start) + bridge, dtype=np.float64)


def _sizes(rng: np.random.Generator, spec: AssetSpec, price: F64, quote: bool) -> F64:
    n = price.size
    if spec.size_kind == "shares":
        if quote:
            return np.asarray(100.0 * rng.geometric(0.35, n), dtype=np.float64)
        odd = np.minimum(rng.geometric(0.07, n), 99)
        lots = 100 * rng.geometric(0.55, n) * np.where(rng.random(n) < 0.01, 10, 1)
        return np.asarray(np.where(rng.random(n) < 0.45, odd, lots), dtype=np.float64)
    if spec.size_kind == "fx":
        return np.asarray(1e6 * rng.integers(1, 11, n), dtype=np.float64)
    scale = 3.0 if quote else 1.0
    amount = np.round(spec.notional * scale / price * rng.lognormal(0.0, 1.0, n), spec.size_decimals)
    return np.maximum(amount, 10.0**-spec.size_decimals)


def _book(rng: np.random.Generator, spec: AssetSpec, mid: F64, spread_bps: F64) -> tuple[F64, F64]:
    """Tick-rounded bid and ask around ``mid``; never crossed or locked, bid at least one tick."""
    half = mid * spread_bps * 1e-4 / 2.0 * rng.lognormal(0.0, 0.15, mid.size)
    bid_ticks = np.maximum(np.floor((mid - half) / spec.tick_size), 1.0)
    ask_ticks = np.maximum(np.ceil((mid + half) / spec.tick_size), bid_ticks + 1.0)
    return bid_ticks, ask_ticks


def generate_events(rng: np.random.Generator, spec: AssetSpec, path: MinutePath) -> Events:
    """Draw every trade and quote of ``spec`` over ``path``; events in gap minutes are dropped.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness for this instrument.
    spec : AssetSpec
        The instrument.
    path : MinutePath
        Its minute-level state.

    Returns
    -------
    Events
        Trades (none when ``spec`` is quote-only) and quotes, each in non-decreasing time order.
    """
    n_trade = rng.poisson(path.trade_rate)
    n_quote = rng.poisson(path.quote_rate)
    per_minute = n_trade + n_quote
    minute = np.repeat(np.arange(per_minute.size, dtype=np.int64), per_minute)
    first_index = np.cumsum(per_minute) - per_minute
    is_trade = (np.arange(minute.size) - first_index[minute]) < n_trade[minute]
    u = rng.random(minute.size)
    order = np.lexsort((u, minute))
    minute, u, is_trade = minute[order], u[order], is_trade[order]

    mid = np.exp(bridge_log_mid(rng, path, minute, u))
    spread_bps = path.spread_bps[minute]
    bid_ticks, ask_ticks = _book(rng, spec, mid, spread_bps)
    ts = path.minute_ts[minute] + (u * NS_PER_MINUTE).astype(np.int64)
    keep = ~path.gap[minute]

    tmask = is_trade & keep
    t_bid, t_ask, t_mid = bid_ticks[tmask], ask_ticks[tmask], mid[tmask]
    side = rng.random(t_mid.size)
    # Most prints hit the bid or lift the offer; one in ten fills inside the spread (midpoint or hidden orders).
    inside = np.clip(np.round(t_mid / spec.tick_size), t_bid, t_ask)
    trade_ticks = np.where(side < 0.45, t_bid, np.where(side < 0.9, t_ask, inside))
    trade_price = _round_to_tick(trade_ticks, spec)

    qmask = ~is_trade & keep
    bid = _round_to_tick(bid_ticks[qmask], spec)
    ask = _round_to_tick(ask_ticks[qmask], spec)
    return Events(
        trade_ts=ts[tmask],
        trade_price=trade_price,
        trade_size=_sizes(rng, spec, trade_price, quote=False),
        quote_ts=ts[qmask],
        bid=bid,
        ask=ask,
        bid_size=_sizes(rng, spec, bid, quote=True),
        ask_size=_sizes(rng, spec, ask, quote=True),
    )
