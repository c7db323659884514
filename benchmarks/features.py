"""Feature rows per second for the default feature set, batch and streaming, one asset and the universe, one core.

Data: the synthetic market's one-minute bars (19 symbols; ``--quick`` simulates fewer days). Figures:

- batch: one step over each symbol's whole history from a fresh state;
- streaming: micro-batches of 100 and of 1,000 bars per symbol, state carried;
- cross-asset: the universe's correlation, beta and lead-lag engine over the aligned closes of all symbols
  (one row per bar time, 19 symbols), batch and in 100-row steps;
- baseline, measured in the same run: pandas' vectorised rolling computation of the close-to-close, Parkinson
  and Garman-Klass volatilities, moving-average distances, z-score and rolling extremes (a subset of the set,
  batch only) over the same bars.

Prints the machine and the figures, then one JSON object on the last line. Run from the repository root:
``python benchmarks/features.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, this file's folder would come first on sys.path, and its name shadows a package: put the
# repository root there instead (the packages, and benchmarks._common).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks._common import machine, median_seconds, pin_one_core  # noqa: E402 - after the sys.path fix
from features.cross_asset import CrossAssetEngine, SpilloverIndex, align_closes  # noqa: E402
from features.engine import FeatureEngine  # noqa: E402
from features.sets import default_feature_set  # noqa: E402
from ingest.records import NS_PER_MINUTE, BarBatch  # noqa: E402
from ingest.synthetic import SimulationConfig, simulate  # noqa: E402

TARGET_BATCH = 1_000_000
TARGET_STREAM_100 = 200_000


def _pandas_baseline(bars: BarBatch) -> None:
    df = pd.DataFrame({c: getattr(bars, c) for c in ("open", "high", "low", "close")})
    lr = pd.Series(np.log(df.close / df.close.shift()))
    hl2 = pd.Series(np.log(df.high / df.low) ** 2)
    gk = pd.Series(0.5 * hl2 - (2 * math.log(2) - 1) * np.log(df.close / df.open) ** 2)
    out = {}
    for w in (20, 50, 200):
        out[f"cc{w}"] = lr.rolling(w).std()
        out[f"pk{w}"] = np.sqrt(hl2.rolling(w).mean() / (4 * math.log(2)))
        out[f"gk{w}"] = np.sqrt(gk.rolling(w).mean().clip(lower=0))
        out[f"ma{w}"] = df.close / df.close.rolling(w).mean() - 1
    r = df.close.rolling(20)
    out["z20"] = (df.close - r.mean()) / r.std()
    for w in (20, 50):
        out[f"hi{w}"] = df.high.rolling(w).max()
        out[f"lo{w}"] = df.low.rolling(w).min()
    pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer days and repeats (well under a minute)")
    args = parser.parse_args()
    days, repeats = (2, 3) if args.quick else (10, 5)
    pin_one_core()

    sim = simulate(SimulationConfig(seed=7, days=days))
    bars = sim.bars
    symbols = list(pd.unique(bars.symbol))
    per_symbol = {s: bars.take(bars.symbol == s) for s in symbols}
    one = per_symbol["SPY"]
    engine = FeatureEngine(default_feature_set(NS_PER_MINUTE), NS_PER_MINUTE)
    engine.batch(one.take(slice(0, 500)))  # compile / load the kernels

    def batch(groups: list[BarBatch]) -> None:
        for g in groups:
            engine.batch(g)

    def stream(groups: list[BarBatch], size: int) -> None:
        for g in groups:
            state = engine.init_state()
            for i in range(0, len(g), size):
                engine.step(state, g.take(slice(i, i + size)))

    def batch_pandas(groups: list[BarBatch]) -> None:
        for g in groups:
            _pandas_baseline(g)

    universe = list(per_symbol.values())
    n_one, n_all = len(one), sum(len(g) for g in universe)
    t_batch_one = median_seconds(lambda: batch([one]), repeats)
    t_batch_all = median_seconds(lambda: batch(universe), repeats)
    t_s100_one = median_seconds(lambda: stream([one], 100), repeats)
    t_s100_all = median_seconds(lambda: stream(universe, 100), repeats)
    t_s1000_one = median_seconds(lambda: stream([one], 1000), repeats)
    t_s1000_all = median_seconds(lambda: stream(universe, 1000), repeats)
    t_pandas_all = median_seconds(lambda: batch_pandas(universe), repeats)

    cross = CrossAssetEngine(symbols, window=50, market="SPY")
    ts, close = align_closes(bars, symbols)
    cross.batch(ts[:200], close[:200])  # compile / load the kernels

    def cross_stream(size: int) -> None:
        state = cross.init_state()
        for i in range(0, len(ts), size):
            cross.step(state, ts[i : i + size], close[i : i + size])

    t_cross = median_seconds(lambda: cross.batch(ts, close), repeats)
    spill = SpilloverIndex(symbols, window=200, horizon=10, every=10)
    t_spill = median_seconds(lambda: spill.batch(ts, close), max(1, repeats // 2))
    t_cross_100 = median_seconds(lambda: cross_stream(100), repeats)

    figures: dict[str, object] = {
        "feature_columns": len(engine.columns),
        "bars_one_asset": n_one,
        "bars_universe": n_all,
        "symbols": len(symbols),
        "batch_rows_per_s": round(n_all / t_batch_all),
        "batch_rows_per_s_one_asset": round(n_one / t_batch_one),
        "stream_rows_per_s_100": round(n_all / t_s100_all),
        "stream_rows_per_s_100_one_asset": round(n_one / t_s100_one),
        "stream_rows_per_s_1000": round(n_all / t_s1000_all),
        "stream_rows_per_s_1000_one_asset": round(n_one / t_s1000_one),
        "pandas_subset_batch_rows_per_s": round(n_all / t_pandas_all),
        "cross_asset_columns": len(cross.columns),
        "cross_asset_rows": len(ts),
        "cross_asset_batch_rows_per_s": round(len(ts) / t_cross),
        "cross_asset_stream_rows_per_s_100": round(len(ts) / t_cross_100),
        "spillover_rows_per_s": round(len(ts) / t_spill),
        "target_batch_rows_per_s": TARGET_BATCH,
        "target_stream_rows_per_s_100": TARGET_STREAM_100,
        "repeats": repeats,
        "machine": f"{machine()}, one core used",
    }
    print(
        f"default feature set, {len(engine.columns)} columns; synthetic 1-min bars, {days} days, "
        f"{len(symbols)} symbols ({n_all:,} bars, SPY {n_one:,}); median of {repeats}"
    )
    print(f"  machine: {figures['machine']}")
    for key in (
        "batch_rows_per_s",
        "batch_rows_per_s_one_asset",
        "stream_rows_per_s_100",
        "stream_rows_per_s_100_one_asset",
        "stream_rows_per_s_1000",
        "stream_rows_per_s_1000_one_asset",
        "pandas_subset_batch_rows_per_s",
    ):
        print(f"  {key:<34} {figures[key]:>12,} bar-rows/s")
    print(
        f"  cross-asset, {figures['cross_asset_columns']} columns over {figures['cross_asset_rows']:,} aligned rows: "
        f"batch {figures['cross_asset_batch_rows_per_s']:,} rows/s, "
        f"100-row steps {figures['cross_asset_stream_rows_per_s_100']:,} rows/s"
    )
    print(f"  spillover (VAR(1) on 200 rows, refit every 10): {figures['spillover_rows_per_s']:,} rows/s")
    print(f"  targets: batch {TARGET_BATCH:,}, streaming (100-bar batches) {TARGET_STREAM_100:,} bar-rows/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
