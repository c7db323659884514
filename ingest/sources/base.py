"""The source interface: asynchronous iteration of raw (not yet validated) batches."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pandas as pd


@dataclass(frozen=True)
class RawBatch:
    """Rows as they arrived, in the input contract, before validation.

    Any of the frames may be ``None``. ``bar_interval_ns`` gives the length of the bars in ``bars``.
    """

    trades: pd.DataFrame | None = None
    quotes: pd.DataFrame | None = None
    bars: pd.DataFrame | None = None
    bar_interval_ns: int | None = None

    def __post_init__(self) -> None:
        if self.bars is not None and len(self.bars) and not self.bar_interval_ns:
            raise ValueError(f"bar_interval_ns={self.bar_interval_ns!r}: a batch with bars needs their interval")

    def __len__(self) -> int:
        return sum(len(f) for f in (self.trades, self.quotes, self.bars) if f is not None)


@runtime_checkable
class Source(Protocol):
    """A stream of raw batches: a replay, a simulator or a live feed."""

    name: str

    def batches(self) -> AsyncGenerator[RawBatch, None]:
        """Yield batches until the source is exhausted (a live feed: until cancelled)."""
        ...
