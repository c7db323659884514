"""What every benchmark script shares: the machine's description, medians of repeated runs, one-core pinning,
and where the real market data lives."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: The real market data beside the repository (``SENTINEL_SHARED_DATA`` overrides).
DATA = Path(os.environ.get("SENTINEL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def cpu_model() -> str:
    """The processor's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine in one line: processor, CPUs, system."""
    return f"{cpu_model()}, {os.cpu_count()} cpus, {platform.system()} {platform.machine()}"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pin_one_core() -> bool:
    """Run this process on one core (figures "on one core"); False, with a word on stderr, where it cannot."""
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        print("could not pin to one core; figures are for the whole machine", file=sys.stderr)
        return False
    return True
