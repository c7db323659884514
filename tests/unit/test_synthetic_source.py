"""The simulated market as a source: every row replays, validation accepts it, the bars agree."""

from __future__ import annotations

import asyncio

from ingest.pipeline import IngestPipeline
from ingest.records import NS_PER_MINUTE
from ingest.sources.synthetic import SyntheticSource
from ingest.store import DuckDBStore
from ingest.validation import ValidationConfig


def test_synthetic_stream_is_fully_valid_and_rebuilds_the_simulators_bars():
    source = SyntheticSource(seed=5, days=1, assets=("SPY", "BTC-USD", "EURUSD"), speed=None, batch_rows=4000)
    sim = source.result
    with DuckDBStore(":memory:") as store:
        pipe = IngestPipeline(
            store, ValidationConfig(universe=frozenset({"SPY", "BTC-USD", "EURUSD"})), bar_intervals_ns=(NS_PER_MINUTE,)
        )

        async def run() -> None:
            async for batch in source.batches():
                pipe.process(batch)

        asyncio.run(run())
        stats = pipe.flush()
        assert stats.rejected == 0
        assert stats.accepted["trades"] == len(sim.trades)
        assert stats.accepted["quotes"] == len(sim.quotes)
        for symbol in ("SPY", "BTC-USD", "EURUSD"):
            stored = store.read_bars(symbol, NS_PER_MINUTE)
            assert stored.equals(sim.bars.take(sim.bars.symbol == symbol)), symbol
