"""Live feeds of data vendors: Yahoo Finance and Alpha Vantage (polled REST bars) and Polygon.io (REST bars,
WebSocket trades and quotes).

:data:`LIVE_SOURCES` names a builder per provider; each takes the project symbols, the API key (``None`` for
Yahoo, the ``SecretStr`` of the settings for the others) and keyword options passed to the source's
constructor::

    source = LIVE_SOURCES["polygon"](["SPY", "QQQ"], api_key=settings.polygon_api_key)
    async for batch in source.batches():
        ...

IEX Cloud closed in 2024, so there is no adapter for it. See ``docs/feeds.md`` for limits, keys and symbols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import SecretStr

from ingest.sources.live import LiveSource
from ingest.sources.rest.alphavantage import AlphaVantageBars
from ingest.sources.rest.polygon import PolygonBars, PolygonStream
from ingest.sources.rest.symbols import AssetClass, TickerMap, asset_class, polygon_ticker, yahoo_ticker
from ingest.sources.rest.yahoo import YahooBars


def build_yahoo(symbols: Iterable[str], api_key: str | SecretStr | None = None, **options: Any) -> YahooBars:
    """Yahoo Finance one-minute bars, polled. Yahoo takes no key: ``api_key`` must be ``None``.

    Raises
    ------
    ValueError
        When an API key is given (it would otherwise be silently ignored).
    """
    if api_key is not None:
        raise ValueError("api_key: Yahoo Finance takes no API key; pass None")
    return YahooBars(symbols, **options)


def build_alphavantage(
    symbols: Iterable[str], api_key: str | SecretStr | None = None, **options: Any
) -> AlphaVantageBars:
    """Alpha Vantage one-minute bars, polled within the plan's call limits.

    Raises
    ------
    ValueError
        When ``api_key`` is missing.
    """
    if api_key is None:
        raise ValueError("api_key=None: Alpha Vantage needs an API key (setting alpha_vantage_api_key)")
    return AlphaVantageBars(symbols, api_key, **options)


def build_polygon(
    symbols: Iterable[str],
    api_key: str | SecretStr | None = None,
    mode: Literal["stream", "bars"] = "stream",
    **options: Any,
) -> PolygonStream | PolygonBars:
    """Polygon.io: ``mode="stream"`` trades and quotes over WebSocket, ``mode="bars"`` polled one-minute aggregates.

    Raises
    ------
    ValueError
        When ``api_key`` is missing or ``mode`` is unknown.
    """
    if api_key is None:
        raise ValueError("api_key=None: Polygon needs an API key (setting polygon_api_key)")
    if mode == "stream":
        return PolygonStream(symbols, api_key, **options)
    if mode == "bars":
        return PolygonBars(symbols, api_key, **options)
    raise ValueError(f"mode={mode!r}: must be 'stream' or 'bars'")


#: Builders of the live feeds by provider name: ``builder(symbols, api_key=None, **options) -> LiveSource``.
LIVE_SOURCES: dict[str, Callable[..., LiveSource]] = {
    "yahoo": build_yahoo,
    "alphavantage": build_alphavantage,
    "polygon": build_polygon,
}

__all__ = [
    "LIVE_SOURCES",
    "AlphaVantageBars",
    "AssetClass",
    "PolygonBars",
    "PolygonStream",
    "TickerMap",
    "YahooBars",
    "asset_class",
    "build_alphavantage",
    "build_polygon",
    "build_yahoo",
    "polygon_ticker",
    "yahoo_ticker",
]
