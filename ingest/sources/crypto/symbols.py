"""Project symbols and the symbols each crypto venue uses for them.

The project names a currency pair ``BASE-QUOTE`` with the quote currency the venue really trades:

- Coinbase Exchange lists ``BTC-USD``: the project symbol is the venue symbol.
- Binance spot lists ``BTCUSDT`` (Bitcoin against the USDT stablecoin, not against US dollars): its project
  symbol is ``BTC-USDT``. USDT trades close to one dollar but not at it (a few bps day to day, 5 % in May 2022),
  and a Binance print and a Coinbase print under one symbol would interleave two venues' prices, clocks and
  trade ids in one stream. A caller who wants Binance's USDT books as a dollar proxy says so with
  ``usdt_as_usd=True``: ``BTC-USD`` is then read from ``BTCUSDT`` and emitted as ``BTC-USD``.

A :class:`SymbolMap` is built from the symbols a feed subscribes to, so mapping back from a venue symbol is a
lookup, never a guess at where the base currency ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ingest.sources.live import FeedError

#: ``BASE-QUOTE``, upper case letters and digits (``BTC-USD``, ``ETH-USDT``, ``1INCH-USD``).
PAIR_PATTERN = re.compile(r"^[A-Z0-9]{2,12}-[A-Z0-9]{2,8}$")
#: The crypto pairs of the project's seed universe.
PROJECT_CRYPTO: tuple[str, ...] = ("BTC-USD", "ETH-USD", "ADA-USD")


class UnmappedSymbolError(FeedError):
    """A venue message about a symbol the feed did not subscribe to."""


@dataclass(frozen=True)
class SymbolMap:
    """Project symbol <-> venue symbol for the symbols one feed subscribes to.

    Parameters
    ----------
    venue : str
        Name of the venue, used in error messages.
    to_venue : mapping of str to str
        Project symbol -> venue symbol (the venue's spelling, e.g. ``"BTCUSDT"``).
    """

    venue: str
    to_venue: Mapping[str, str]
    to_project: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.to_venue:
            raise ValueError(f"{self.venue}: symbols=[]: subscribe to at least one symbol")
        reverse: dict[str, str] = {}
        for project, venue_symbol in self.to_venue.items():
            if venue_symbol in reverse:
                raise ValueError(
                    f"{self.venue}: symbols {reverse[venue_symbol]!r} and {project!r} both map to {venue_symbol!r}"
                )
            reverse[venue_symbol] = project
        object.__setattr__(self, "to_venue", dict(self.to_venue))
        object.__setattr__(self, "to_project", reverse)

    @property
    def venue_symbols(self) -> list[str]:
        """The venue symbols, in subscription order."""
        return list(self.to_venue.values())

    def project(self, venue_symbol: str) -> str:
        """The project symbol of ``venue_symbol``; :class:`UnmappedSymbolError` for one not subscribed to."""
        project = self.to_project.get(venue_symbol)
        if project is not None:
            return project
        raise UnmappedSymbolError(
            f"{self.venue}: symbol={venue_symbol!r}: not among the subscribed symbols {self.venue_symbols}"
        )


def _check_pair(symbol: str) -> tuple[str, str]:
    if not isinstance(symbol, str) or not PAIR_PATTERN.match(symbol):
        raise ValueError(f"symbol={symbol!r}: expected a pair BASE-QUOTE in upper case, e.g. 'BTC-USD'")
    base, quote = symbol.split("-")
    return base, quote


def binance_symbols(symbols: Iterable[str], usdt_as_usd: bool = False) -> SymbolMap:
    """Map project symbols to Binance spot symbols.

    Parameters
    ----------
    symbols : iterable of str
        Project symbols, ``BASE-QUOTE`` (``"BTC-USDT"`` -> ``"BTCUSDT"``).
    usdt_as_usd : bool
        Read ``X-USD`` from Binance's ``XUSDT`` book and emit it as ``X-USD``. Binance spot has no USD books;
        without this flag ``X-USD`` is refused, naming the USDT symbol to use instead.

    Examples
    --------
    >>> binance_symbols(["BTC-USDT"]).to_venue
    {'BTC-USDT': 'BTCUSDT'}
    >>> binance_symbols(["BTC-USD"], usdt_as_usd=True).project("BTCUSDT")
    'BTC-USD'
    """
    out: dict[str, str] = {}
    for symbol in symbols:
        base, quote = _check_pair(symbol)
        if quote == "USD":
            if not usdt_as_usd:
                raise ValueError(
                    f"symbol={symbol!r}: Binance spot trades {base} against USDT, not USD; subscribe to "
                    f"'{base}-USDT', or pass usdt_as_usd=True to read {base}USDT as {symbol!r}"
                )
            quote = "USDT"
        out[symbol] = f"{base}{quote}"
    return SymbolMap("binance", out)


def coinbase_symbols(symbols: Iterable[str]) -> SymbolMap:
    """Map project symbols to Coinbase Exchange products: the same ``BASE-QUOTE`` spelling.

    Examples
    --------
    >>> coinbase_symbols(["BTC-USD", "ETH-USD"]).venue_symbols
    ['BTC-USD', 'ETH-USD']
    """
    out: dict[str, str] = {}
    for symbol in symbols:
        _check_pair(symbol)
        out[symbol] = symbol
    return SymbolMap("coinbase", out)
