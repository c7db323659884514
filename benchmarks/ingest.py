"""Ticks per second through validation and one-minute bar building, on the real SPY day, on one core.

Measures the batch path (one call over all 451,545 prints) and the streaming path (micro-batches of the
pipeline's default size, 10,000 rows, and of 1,000 rows), and, as a baseline in the same run, a plain pandas
one-minute OHLCV resample of the same prints with no validation. Prints medians of repeated runs and the
machine, then one JSON object on the last line.

Run from the repository root: ``python benchmarks/ingest.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, this file's folder would come first on sys.path, and its name shadows a package: put the
# repository root there instead (the packages, and benchmarks._common).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks._common import DATA, machine, median_seconds, pin_one_core  # noqa: E402 - after the sys.path fix
from ingest.bars import BarBuilder, build_bars  # noqa: E402
from ingest.records import NS_PER_MINUTE  # noqa: E402
from ingest.validation import ValidationConfig, Validator  # noqa: E402

TARGET_TICKS_PER_S = 2_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (well under a minute)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    pin_one_core()

    path = DATA / "spy_trade_ticks_20131008.parquet"
    if not path.exists():
        sys.exit(f"{path} not found: set SENTINEL_SHARED_DATA to the folder of the shared market data")
    raw = pd.read_parquet(path).rename(columns={"ts": "timestamp"})
    n = len(raw)
    config = ValidationConfig(universe=frozenset({"SPY"}))

    def batch() -> object:
        res = Validator("tick", config).validate(raw)
        return build_bars(res.accepted, interval_ns=NS_PER_MINUTE)

    def stream(rows: int) -> Callable[[], object]:
        chunks = [raw.iloc[i : i + rows] for i in range(0, n, rows)]

        def run() -> object:
            v = Validator("tick", config)
            b = BarBuilder(NS_PER_MINUTE, lateness_ns=config.out_of_order_tolerance_ns)
            out = [b.update(v.validate(c).accepted) for c in chunks]
            out.append(b.flush())
            return out

        return run

    def pandas_baseline() -> object:
        s = raw.set_index("timestamp")
        ohlc = s["price"].resample("1min").ohlc()
        ohlc["volume"] = s["size"].resample("1min").sum()
        return ohlc.dropna()

    batch()  # compile the kernels and warm the caches
    t_batch = median_seconds(batch, repeats)
    t_stream = median_seconds(stream(10_000), repeats)
    t_stream_small = median_seconds(stream(1_000), repeats)
    t_pandas = median_seconds(pandas_baseline, repeats)

    figures = {
        "ticks": n,
        "ticks_per_s_batch": round(n / t_batch),
        "ticks_per_s_stream": round(n / t_stream),
        "ticks_per_s_stream_1000": round(n / t_stream_small),
        "pandas_resample_ticks_per_s": round(n / t_pandas),
        "target_ticks_per_s": TARGET_TICKS_PER_S,
        "repeats": repeats,
        "cores": 1,
        "machine": machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(f"real SPY prints, 2013-10-08: {n:,} ticks, validation + 1-min bars, one core, median of {repeats}")
    print(f"  machine: {figures['machine']}")
    print(f"  batch (one call)            {figures['ticks_per_s_batch']:>12,} ticks/s")
    print(f"  stream (10,000-row batches) {figures['ticks_per_s_stream']:>12,} ticks/s")
    print(f"  stream (1,000-row batches)  {figures['ticks_per_s_stream_1000']:>12,} ticks/s")
    print(f"  baseline: pandas resample   {figures['pandas_resample_ticks_per_s']:>12,} ticks/s (no validation)")
    print(f"  target                      {TARGET_TICKS_PER_S:>12,} ticks/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
