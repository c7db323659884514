"""The simulated asset universe: instruments, their trading sessions and the target correlation between them.

Sessions use fixed UTC hours and ignore daylight-saving shifts and exchange holidays, so that a simulated
calendar depends on nothing but the start date.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.records import NS_PER_MINUTE

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

MINUTES_PER_DAY = 1440


class AssetClass(StrEnum):
    """Broad asset class; it selects session hours, spread levels and the intraday activity profile."""

    EQUITY = "equity"
    CRYPTO = "crypto"
    FX = "fx"
    COMMODITY = "commodity"
    BOND = "bond"


SessionKind = Literal["us_equity", "always", "fx"]


@dataclass(frozen=True)
class Session:
    """When an instrument trades, in fixed UTC hours.

    Parameters
    ----------
    kind : {"us_equity", "always", "fx"}
        ``us_equity``: weekdays 14:30-21:00 UTC. ``always``: 24/7. ``fx``: Sunday 22:00 UTC to Friday
        22:00 UTC without a break.
    minutes_per_year : float
        Open minutes in a year; converts an annualised volatility into a per-open-minute one.
    """

    kind: SessionKind
    minutes_per_year: float

    def is_open(self, minute_ts: I64) -> Bool:
        """Whether the minute starting at each ``minute_ts`` (ns UTC) lies inside the session."""
        minute_of_day = (minute_ts // NS_PER_MINUTE) % MINUTES_PER_DAY
        # 1970-01-01 was a Thursday; shifting by three days makes Monday weekday 0.
        weekday = (minute_ts // (NS_PER_MINUTE * MINUTES_PER_DAY) + 3) % 7
        if self.kind == "always":
            return np.ones(minute_ts.shape, dtype=np.bool_)
        if self.kind == "us_equity":
            in_hours = (minute_of_day >= 14 * 60 + 30) & (minute_of_day < 21 * 60)
            return np.asarray(in_hours & (weekday < 5), dtype=np.bool_)
        friday_close = (weekday == 4) & (minute_of_day >= 22 * 60)
        sunday_before_open = (weekday == 6) & (minute_of_day < 22 * 60)
        return np.asarray(~(friday_close | (weekday == 5) | sunday_before_open), dtype=np.bool_)

    def activity(self, minute_ts: I64, open_mask: Bool) -> F64:
        """Relative trading intensity per minute (mean 1 over a typical open day, 0 when closed).

        US-session instruments follow a U-shape: busy after the open, quiet at midday, busy into the close.
        Round-the-clock markets have a milder daily swell that peaks while Europe and New York overlap.
        """
        minute_of_day = ((minute_ts // NS_PER_MINUTE) % MINUTES_PER_DAY).astype(np.float64)
        if self.kind == "us_equity":
            frac = np.clip((minute_of_day - (14 * 60 + 30)) / 390.0, 0.0, 1.0)
            shape = 0.55 + 2.2 * np.exp(-frac / 0.07) + 1.5 * np.exp(-(1.0 - frac) / 0.06)
            mean = 0.55 + 2.2 * 0.07 * (1 - np.exp(-1 / 0.07)) + 1.5 * 0.06 * (1 - np.exp(-1 / 0.06))
        else:
            depth = 0.35 if self.kind == "always" else 0.6
            phase = 2.0 * np.pi * (minute_of_day - 15 * 60) / MINUTES_PER_DAY
            shape = 1.0 + depth * np.cos(phase)
            mean = 1.0
        return np.where(open_mask, shape / mean, 0.0)


US_SESSION = Session("us_equity", 252.0 * 390.0)
ALWAYS = Session("always", 365.0 * MINUTES_PER_DAY)
FX_SESSION = Session("fx", 260.0 * MINUTES_PER_DAY)


@dataclass(frozen=True)
class AssetSpec:
    """Static description of one simulated instrument.

    Parameters
    ----------
    symbol : str
        Instrument identifier as it appears in every record.
    asset_class : AssetClass
        Broad class of the instrument.
    start_price : float
        Price at the start of the simulation, in the quote currency.
    annual_vol : float
        Long-run annualised volatility of log returns (0.25 = 25 %).
    session : Session
        Trading hours.
    tick_size : float
        Price increment; bids round down and asks up to it.
    base_spread_bps : float
        Quoted spread at long-run volatility, basis points of the mid.
    trades_per_minute : float
        Mean trade arrivals per open minute at average activity; 0 for quote-only instruments.
    quotes_per_minute : float
        Mean quote updates per open minute at average activity.
    size_kind : {"shares", "coins", "fx"}
        How trade and quote sizes are drawn: share lots, fractional coins, or FX tickets in units of base
        currency.
    notional : float
        Typical trade value in the quote currency; sets coin amounts.
    size_decimals : int
        Decimals kept on coin sizes.
    regime_beta : float
        How strongly the market regime's drift moves this instrument (negative for safe havens).
    """

    symbol: str
    asset_class: AssetClass
    start_price: float
    annual_vol: float
    session: Session
    tick_size: float
    base_spread_bps: float
    trades_per_minute: float
    quotes_per_minute: float
    size_kind: Literal["shares", "coins", "fx"]
    notional: float = 0.0
    size_decimals: int = 0
    regime_beta: float = 1.0

    @property
    def price_decimals(self) -> int:
        """Decimal places of ``tick_size``."""
        return max(0, round(-math.log10(self.tick_size)))

    @property
    def has_trades(self) -> bool:
        """Whether the instrument prints trades (FX is quote-only here, as on an interbank feed)."""
        return self.trades_per_minute > 0


def _equity(
    symbol: str, price: float, vol: float, spread: float, rate: float, asset_class: AssetClass, beta: float
) -> AssetSpec:
    return AssetSpec(
        symbol, asset_class, price, vol, US_SESSION, 0.01, spread, rate, rate * 1.2, "shares", regime_beta=beta
    )


def _crypto(symbol: str, price: float, vol: float, spread: float, rate: float, tick: float, dec: int) -> AssetSpec:
    return AssetSpec(
        symbol, AssetClass.CRYPTO, price, vol, ALWAYS, tick, spread, rate, rate * 1.2, "coins", 2_000.0, dec, 1.5
    )


def _fx(symbol: str, price: float, vol: float, spread: float, tick: float) -> AssetSpec:
    return AssetSpec(symbol, AssetClass.FX, price, vol, FX_SESSION, tick, spread, 0.0, 15.0, "fx", regime_beta=0.0)


_EQ, _CO, _BO = AssetClass.EQUITY, AssetClass.COMMODITY, AssetClass.BOND

UNIVERSE: dict[str, AssetSpec] = {
    spec.symbol: spec
    for spec in (
        _equity("AAPL", 190.0, 0.25, 1.0, 40.0, _EQ, 1.0),
        _equity("GOOGL", 140.0, 0.30, 1.2, 30.0, _EQ, 1.0),
        _equity("MSFT", 375.0, 0.25, 0.8, 35.0, _EQ, 1.0),
        _equity("AMZN", 150.0, 0.32, 1.2, 35.0, _EQ, 1.0),
        _equity("TSLA", 240.0, 0.55, 1.5, 45.0, _EQ, 1.6),
        _equity("SPY", 470.0, 0.15, 0.3, 60.0, _EQ, 1.0),
        _equity("QQQ", 400.0, 0.20, 0.4, 45.0, _EQ, 1.2),
        _crypto("BTC-USD", 60_000.0, 0.60, 0.5, 20.0, 0.01, 8),
        _crypto("ETH-USD", 3_000.0, 0.75, 1.0, 16.0, 0.01, 8),
        # ADA trades near 0.45: a cent tick would be a 2 % spread, so it uses the venue's 0.0001 tick.
        _crypto("ADA-USD", 0.45, 0.95, 3.0, 6.0, 0.0001, 2),
        _fx("EURUSD", 1.08, 0.07, 0.4, 1e-5),
        _fx("GBPUSD", 1.27, 0.08, 0.6, 1e-5),
        _fx("USDJPY", 150.0, 0.09, 0.5, 1e-3),
        _equity("GLD", 190.0, 0.14, 1.0, 20.0, _CO, -0.3),
        _equity("SLV", 21.0, 0.28, 5.0, 18.0, _CO, 0.2),
        _equity("USO", 70.0, 0.35, 2.0, 15.0, _CO, 0.8),
        _equity("TLT", 95.0, 0.16, 1.1, 22.0, _BO, -0.5),
        _equity("IEF", 94.0, 0.07, 1.1, 15.0, _BO, -0.3),
        _equity("HYG", 77.0, 0.08, 1.3, 18.0, _BO, 0.5),
    )
}

FACTORS: tuple[str, ...] = ("market", "tech", "crypto", "rates", "metals", "oil", "dollar")

# Loadings on unit-variance common factors; each instrument's own noise fills the rest of its unit variance.
# Building the correlation as L L' plus a diagonal keeps it positive semi-definite by construction.
_LOADINGS: dict[str, dict[str, float]] = {
    "AAPL": {"market": 0.75, "tech": 0.30},
    "GOOGL": {"market": 0.75, "tech": 0.30},
    "MSFT": {"market": 0.75, "tech": 0.30},
    "AMZN": {"market": 0.75, "tech": 0.30},
    "TSLA": {"market": 0.62, "tech": 0.25},
    "SPY": {"market": 0.97, "tech": 0.10},
    "QQQ": {"market": 0.91, "tech": 0.38},
    "BTC-USD": {"market": 0.25, "crypto": 0.82},
    "ETH-USD": {"market": 0.25, "crypto": 0.82},
    "ADA-USD": {"market": 0.22, "crypto": 0.78},
    "EURUSD": {"dollar": -0.80},
    "GBPUSD": {"dollar": -0.72, "market": 0.05},
    "USDJPY": {"dollar": 0.60, "market": 0.15, "rates": -0.20},
    "GLD": {"metals": 0.90, "dollar": -0.20},
    "SLV": {"metals": 0.88, "market": 0.20},
    "USO": {"oil": 0.85, "market": 0.30},
    "TLT": {"market": -0.31, "rates": 0.90},
    "IEF": {"market": -0.22, "rates": 0.88},
    "HYG": {"market": 0.50, "rates": 0.35},
}


def factor_loadings(symbols: tuple[str, ...] | list[str]) -> F64:
    """Factor loadings, shape ``(len(symbols), len(FACTORS))``; each row's squared norm is below 1."""
    out = np.zeros((len(symbols), len(FACTORS)), dtype=np.float64)
    for i, symbol in enumerate(symbols):
        for factor, value in _LOADINGS[symbol].items():
            out[i, FACTORS.index(factor)] = value
    return out


def target_correlation(symbols: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Target correlation of one-minute return innovations between ``symbols``.

    Equities sit near 0.6 among themselves, SPY/QQQ near 0.9, crypto near 0.7 among itself and near 0.2 to
    equities, TLT near -0.3 to SPY, GLD/SLV near 0.8. The target holds for the minute-grid log returns.
    Returns between one-minute bar closes come out lower in magnitude (the Epps effect): the last print of a
    minute falls at a different instant for each instrument, and bid-ask bounce adds noise, most for
    instruments whose spread is large against their one-minute moves (SLV).

    Returns
    -------
    pandas.DataFrame
        Symmetric, unit diagonal, positive semi-definite; index and columns are ``symbols``.
    """
    loadings = factor_loadings(symbols)
    corr = loadings @ loadings.T
    np.fill_diagonal(corr, 1.0)
    return pd.DataFrame(corr, index=list(symbols), columns=list(symbols))
