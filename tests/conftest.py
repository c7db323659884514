"""Shared fixtures: the real market data beside the repository, and fixed clocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the Redis server fixtures (a redis-server per session on a free port) for the integration tests
pytest_plugins = ["tests.integration.redis_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SENTINEL_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """Path of a file in ../shared/data; skips the test when it is absent, fails instead under CI."""
    path = SHARED_DATA / name
    if not path.exists():
        message = f"real market data {path} is absent (set SENTINEL_SHARED_DATA to its folder)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def spy_ticks_path() -> Path:
    """The 451,545 real SPY trade prints of 2013-10-08."""
    return shared_data("spy_trade_ticks_20131008.parquet")


@pytest.fixture(scope="session")
def spy_bars_path() -> Path:
    """A vendor's one-minute SPY trade bars, 2013-10-07..11."""
    return shared_data("spy_trade_bars_1min.csv.gz")
