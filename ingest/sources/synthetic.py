"""The simulated market as a live source: simulate the days up front, then replay them on the clock."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import pandas as pd

from ingest.records import QuoteBatch, TickBatch
from ingest.sources.base import RawBatch
from ingest.sources.replay import FrameReplay


def _frame(batch: TickBatch | QuoteBatch) -> pd.DataFrame:
    frame = batch.to_frame().rename(columns={"ts": "timestamp"})
    return frame.drop(columns=["suspicious"], errors="ignore")


class SyntheticSource:
    """Streams the synthetic market (trades and quotes of the seed universe with labelled anomalies).

    Parameters
    ----------
    seed, days : int
        Passed to the simulator; the same seed streams the same rows.
    assets : sequence of str, optional
        Symbols to simulate (default: the whole universe).
    speed : float or None
        Market time per wall time; ``None`` for as fast as possible.
    batch_rows : int
        Most rows of each kind per batch.
    """

    def __init__(
        self,
        seed: int = 0,
        days: int = 1,
        assets: Sequence[str] | None = None,
        speed: float | None = 60.0,
        batch_rows: int = 10_000,
        start: str = "2024-01-02",
    ) -> None:
        from ingest.synthetic import UNIVERSE, SimulationConfig, simulate

        config = SimulationConfig(seed=seed, days=days, start=start, assets=tuple(assets or UNIVERSE))
        self.result = simulate(config)
        self.name = f"synthetic(seed={seed}, days={days})"
        self._replay = FrameReplay(
            trades=_frame(self.result.trades),
            quotes=_frame(self.result.quotes),
            speed=speed,
            batch_rows=batch_rows,
            name=self.name,
        )
        self.rows_total = self._replay.rows_total
        self.speed = speed

    def batches(self) -> AsyncGenerator[RawBatch, None]:
        """Trades and quotes in market-time order, paced by ``speed``."""
        return self._replay.batches()
