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
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, this file's folder comes first on sys.path and its name would shadow the ingest package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from ingest.bars import BarBuilder, build_bars  # noqa: E402 - after the sys.path fix above
from ingest.records import NS_PER_MINUTE  # noqa: E402
from ingest.validation import ValidationConfig, Validator  # noqa: E402

TARGET_TICKS_PER_S = 2_000_000
DATA = Path(os.environ.get("SENTINEL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (well under a minute)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    except (AttributeError, OSError):
        print("could not pin to one core; figures are for the whole machine", file=sys.stderr)

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
    t_batch = _median_seconds(batch, repeats)
    t_stream = _median_seconds(stream(10_000), repeats)
    t_stream_small = _median_seconds(stream(1_000), repeats)
    t_pandas = _median_seconds(pandas_baseline, repeats)

    figures = {
        "ticks": n,
        "ticks_per_s_batch": round(n / t_batch),
        "ticks_per_s_stream": round(n / t_stream),
        "ticks_per_s_stream_1000": round(n / t_stream_small),
        "pandas_resample_ticks_per_s": round(n / t_pandas),
        "target_ticks_per_s": TARGET_TICKS_PER_S,
        "repeats": repeats,
        "cores": 1,
        "machine": f"{_cpu_model()}, {os.cpu_count()} cpus, {platform.system()} {platform.machine()}",
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
