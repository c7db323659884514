"""Live crypto feeds: Binance spot and Coinbase Exchange over WebSocket, with the parsers they run on.

:data:`LIVE_SOURCES` maps a source name to a builder ``builder(symbols, **options) -> LiveSource``; the options
are the keyword parameters of :class:`~ingest.sources.crypto.binance.BinanceSource` and
:class:`~ingest.sources.crypto.coinbase.CoinbaseSource` (URLs, batching, stale limit, backoff). Symbols are the
project's ``BASE-QUOTE`` pairs; see :mod:`ingest.sources.crypto.symbols` for how each venue spells them (Binance
spot trades against USDT: ``BTC-USDT``).

Examples
--------
>>> source = LIVE_SOURCES["coinbase"](["BTC-USD", "ETH-USD"], batch_rows=500)
>>> source.name, source.subscribe_message()["channels"]
('coinbase', ['ticker', 'matches', 'heartbeat'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ingest.sources.crypto.binance import BinanceSource, replay_capture
from ingest.sources.crypto.coinbase import CoinbaseSource
from ingest.sources.crypto.common import VenueMessageError
from ingest.sources.crypto.symbols import SymbolMap, binance_symbols, coinbase_symbols
from ingest.sources.live import LiveSource


class LiveSourceBuilder(Protocol):
    """Builds a live source for some project symbols, with the source's keyword options."""

    def __call__(self, symbols: Sequence[str], /, **options: Any) -> LiveSource: ...


def build_binance(symbols: Sequence[str], /, **options: Any) -> BinanceSource:
    """A :class:`~ingest.sources.crypto.binance.BinanceSource` for ``symbols`` (``BTC-USDT``, ...)."""
    return BinanceSource(symbols, **options)


def build_coinbase(symbols: Sequence[str], /, **options: Any) -> CoinbaseSource:
    """A :class:`~ingest.sources.crypto.coinbase.CoinbaseSource` for ``symbols`` (``BTC-USD``, ...)."""
    return CoinbaseSource(symbols, **options)


LIVE_SOURCES: dict[str, LiveSourceBuilder] = {"binance": build_binance, "coinbase": build_coinbase}

__all__ = [
    "LIVE_SOURCES",
    "BinanceSource",
    "CoinbaseSource",
    "LiveSourceBuilder",
    "SymbolMap",
    "VenueMessageError",
    "binance_symbols",
    "build_binance",
    "build_coinbase",
    "coinbase_symbols",
    "replay_capture",
]
