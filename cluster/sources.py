"""The sources ``sentinel up --source NAME`` can stream: replays, the simulator and the live feeds."""

from __future__ import annotations

from pathlib import Path

from cluster.config import SEED_UNIVERSE, Settings
from ingest.sources.base import Source
from ingest.sources.crypto import LIVE_SOURCES as CRYPTO_FEEDS
from ingest.sources.replay import ArchReplay, FileReplay
from ingest.sources.rest import LIVE_SOURCES as VENDOR_FEEDS
from ingest.sources.synthetic import SyntheticSource

#: Symbols each live feed streams unless ``live_symbols`` is set: the seed universe as the venue spells it.
LIVE_DEFAULT_SYMBOLS: dict[str, tuple[str, ...]] = {
    "binance": ("BTC-USDT", "ETH-USDT", "ADA-USDT"),
    "coinbase": ("BTC-USD", "ETH-USD", "ADA-USD"),
    "yahoo": SEED_UNIVERSE,
    "alphavantage": ("SPY",),  # five calls a minute on the free plan: one symbol polls every 12 s
    "polygon": ("SPY", "QQQ", "AAPL"),
}

#: Every source name, for help texts.
SOURCE_NAMES: tuple[str, ...] = ("arch", "synthetic", *sorted({*CRYPTO_FEEDS, *VENDOR_FEEDS}))
#: The sources that stream live (real time) rather than replay history.
LIVE_SOURCE_NAMES: frozenset[str] = frozenset({*CRYPTO_FEEDS, *VENDOR_FEEDS})


def make_source(settings: Settings, speed: float | None) -> Source:
    """The source ``settings.source`` names.

    ``speed`` (market time per wall time; ``0`` as fast as possible; ``None`` the source's default) applies to
    replays and the simulator; live feeds run in real time.
    """
    name = settings.source
    paced: float | None = None if speed == 0 else speed
    symbols = settings.live_symbols or LIVE_DEFAULT_SYMBOLS.get(name, ())
    if name == "arch":
        return ArchReplay(speed=86_400.0 if speed is None else paced, batch_rows=settings.batch_rows)
    if name == "synthetic":
        return SyntheticSource(
            seed=settings.seed,
            days=settings.sim_days,
            speed=60.0 if speed is None else paced,
            batch_rows=settings.batch_rows,
        )
    if name in CRYPTO_FEEDS:
        return CRYPTO_FEEDS[name](list(symbols))
    if name == "yahoo":
        return VENDOR_FEEDS[name](list(symbols))
    if name == "alphavantage":
        return VENDOR_FEEDS[name](list(symbols), api_key=settings.alpha_vantage_api_key)
    if name == "polygon":
        return VENDOR_FEEDS[name](list(symbols), api_key=settings.polygon_api_key)
    path = Path(name)
    if not path.exists():
        raise ValueError(f"source={name!r}: not one of {', '.join(SOURCE_NAMES)}, nor an existing file or directory")
    return FileReplay(path, speed=paced, batch_rows=settings.batch_rows)
