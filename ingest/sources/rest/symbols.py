"""Project symbols and the tickers each data provider knows them by.

The project names an instrument once (``AAPL``, ``BTC-USD``, ``EURUSD``, ``GLD``); every adapter converts that
name to its provider's ticker when it asks for data and converts back when it emits rows, so the rows that enter
the pipeline always carry the project symbol.

=========  ==============  ============  ==============================================================
class      project symbol  Yahoo         Polygon       Alpha Vantage
=========  ==============  ============  ==============================================================
equity     ``AAPL``        ``AAPL``      ``AAPL``      ``TIME_SERIES_INTRADAY symbol=AAPL``
equity     ``BRK.B``       ``BRK-B``     ``BRK.B``     ``TIME_SERIES_INTRADAY symbol=BRK.B``
ETF        ``GLD``         ``GLD``       ``GLD``       ``TIME_SERIES_INTRADAY symbol=GLD``
crypto     ``BTC-USD``     ``BTC-USD``   ``X:BTCUSD``  ``CRYPTO_INTRADAY symbol=BTC market=USD``
FX         ``EURUSD``      ``EURUSD=X``  ``C:EURUSD``  ``FX_INTRADAY from_symbol=EUR to_symbol=USD``
=========  ==============  ============  ==============================================================

Rules: a symbol ``BASE-QUOTE`` whose quote is a fiat currency or a major coin (``USD``, ``USDT``, ``EUR``,
``BTC``, ...) is crypto; six letters made of two ISO 4217 codes of traded currencies is an FX pair; anything
else is an equity or ETF and passes through (so a provider's own ticker, such as ``GC=F`` on Yahoo, can be
used as a project symbol). Commodities are followed through their ETFs (``GLD``, ``SLV``, ``USO``). Every
adapter also takes ``tickers``, explicit overrides ``{project symbol: provider ticker}`` that win over the
rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class AssetClass(StrEnum):
    """How a provider files an instrument."""

    EQUITY = "equity"
    CRYPTO = "crypto"
    FX = "fx"


#: ISO 4217 codes of currencies with a liquid spot market against the dollar.
FX_CURRENCIES: frozenset[str] = frozenset(
    {"USD", "EUR", "JPY", "GBP", "CHF", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK", "HKD", "SGD"}
    | {"CNH", "CNY", "MXN", "ZAR", "TRY", "PLN", "CZK", "HUF", "INR", "KRW", "BRL", "ILS", "THB"}
)
#: Quote currencies that mark ``BASE-QUOTE`` as a crypto pair.
CRYPTO_QUOTES: frozenset[str] = frozenset({"USD", "USDT", "USDC", "EUR", "GBP", "JPY", "BTC", "ETH"})

_CRYPTO = re.compile(r"^([A-Z0-9]{2,10})-([A-Z]{3,4})$")
_FX = re.compile(r"^([A-Z]{3})([A-Z]{3})$")


def asset_class(symbol: str) -> AssetClass:
    """The asset class of a project symbol, by the rules of this module.

    Examples
    --------
    >>> [asset_class(s).value for s in ("SPY", "BTC-USD", "EURUSD", "GLD")]
    ['equity', 'crypto', 'fx', 'equity']
    """
    m = _CRYPTO.match(symbol)
    if m and m.group(2) in CRYPTO_QUOTES:
        return AssetClass.CRYPTO
    m = _FX.match(symbol)
    if m and m.group(1) in FX_CURRENCIES and m.group(2) in FX_CURRENCIES and m.group(1) != m.group(2):
        return AssetClass.FX
    return AssetClass.EQUITY


def split_pair(symbol: str) -> tuple[str, str]:
    """Base and quote currency of a crypto (``BTC-USD``) or FX (``EURUSD``) symbol.

    Raises
    ------
    ValueError
        When the symbol is an equity.
    """
    cls = asset_class(symbol)
    if cls is AssetClass.CRYPTO:
        base, quote = symbol.split("-")
        return base, quote
    if cls is AssetClass.FX:
        return symbol[:3], symbol[3:]
    raise ValueError(f"symbol={symbol!r}: not a currency pair (expected BASE-QUOTE crypto or six-letter FX)")


def yahoo_ticker(symbol: str) -> str:
    """Yahoo Finance ticker: ``BTC-USD`` as is, ``EURUSD`` -> ``EURUSD=X``, ``BRK.B`` -> ``BRK-B``.

    Examples
    --------
    >>> [yahoo_ticker(s) for s in ("AAPL", "BTC-USD", "EURUSD", "GLD", "BRK.B")]
    ['AAPL', 'BTC-USD', 'EURUSD=X', 'GLD', 'BRK-B']
    """
    cls = asset_class(symbol)
    if cls is AssetClass.FX:
        return f"{symbol}=X"
    if cls is AssetClass.CRYPTO:
        return symbol
    return symbol.replace(".", "-")


def polygon_ticker(symbol: str) -> str:
    """Polygon ticker: ``BTC-USD`` -> ``X:BTCUSD``, ``EURUSD`` -> ``C:EURUSD``, equities as is.

    Examples
    --------
    >>> [polygon_ticker(s) for s in ("AAPL", "BTC-USD", "EURUSD", "GLD")]
    ['AAPL', 'X:BTCUSD', 'C:EURUSD', 'GLD']
    """
    cls = asset_class(symbol)
    if cls is AssetClass.CRYPTO:
        base, quote = split_pair(symbol)
        return f"X:{base}{quote}"
    if cls is AssetClass.FX:
        return f"C:{symbol}"
    return symbol


@dataclass(frozen=True)
class TickerMap:
    """Both directions between the project symbols of one source and their provider tickers.

    Parameters
    ----------
    tickers : mapping of str to str
        Project symbol -> provider ticker, in the order the symbols were given.
    """

    tickers: Mapping[str, str]
    _symbols: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_symbols", {t: s for s, t in self.tickers.items()})

    @classmethod
    def build(
        cls,
        symbols: Iterable[str],
        to_ticker: Callable[[str], str],
        overrides: Mapping[str, str] | None = None,
    ) -> TickerMap:
        """Map ``symbols`` with the function ``to_ticker``, explicit ``overrides`` winning.

        Raises
        ------
        ValueError
            When no symbol is given, a symbol is empty, or two symbols map to one ticker.
        """
        overrides = dict(overrides or {})
        out: dict[str, str] = {}
        seen: dict[str, str] = {}
        for sym in symbols:
            if not isinstance(sym, str) or not sym.strip():
                raise ValueError(f"symbol={sym!r}: must be a non-empty string")
            ticker = overrides.get(sym) or to_ticker(sym)
            if ticker in seen and seen[ticker] != sym:
                raise ValueError(f"symbol={sym!r}: ticker {ticker!r} is already used by {seen[ticker]!r}")
            seen[ticker] = sym
            out[sym] = ticker
        if not out:
            raise ValueError("symbols=[]: a live source needs at least one symbol")
        return cls(tickers=out)

    @property
    def symbols(self) -> list[str]:
        """The project symbols, in order."""
        return list(self.tickers)

    def ticker(self, symbol: str) -> str:
        """The provider ticker of a project symbol."""
        return self.tickers[symbol]

    def symbol(self, ticker: str) -> str:
        """The project symbol of a provider ticker; an unknown ticker is returned unchanged (validation then
        quarantines it as an unknown symbol rather than the adapter dropping it)."""
        return self._symbols.get(ticker, ticker)
