"""Picklable window states with the kernel calls that advance them, shared by every feature family."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.kernels import extrema_state, lagged, moments_from_sums, rolling_sums_1, rolling_sums_k
from ingest.records import F64, I64


@dataclass
class RollingWindow:
    """The last ``w`` rows of ``k`` series with their running sums (the state of :func:`rolling_sums_1`, one per
    series): ``buf`` is ``(k, w)``, ``ist`` ``(k, 3)``, ``fst`` ``(k, 2)``.

    Each series keeps its own NaN count: a sum is NaN while its own window holds a NaN. Features that combine
    several sums (a VWAP, a covariance) are NaN whenever any of them is.
    """

    buf: F64
    ist: I64
    fst: F64

    @classmethod
    def new(cls, window: int, k: int = 1) -> RollingWindow:
        if window < 1 or k < 1:
            raise ValueError(f"window={window!r}, k={k!r}: both must be >= 1")
        return cls(np.full((k, window), np.nan), np.zeros((k, 3), np.int64), np.zeros((k, 2)))

    @property
    def window(self) -> int:
        """Rows in the window."""
        return int(self.buf.shape[1])

    def sum1(self, x: F64) -> tuple[F64, F64]:
        """Window sums and sums of squares of one series, ``(n,)`` each."""
        s, q = np.empty(len(x)), np.empty(len(x))
        rolling_sums_1(np.ascontiguousarray(x, dtype=np.float64), self.buf[0], self.ist[0], self.fst[0], s, q)
        return s, q

    def sums(self, *series: F64) -> tuple[F64, F64]:
        """Window sums and sums of squares of the ``k`` series, each result ``(k, n)``: row ``j`` is series ``j``."""
        k = self.buf.shape[0]
        if len(series) != k:
            raise ValueError(f"series: got {len(series)}, this window holds {k}")
        x = np.stack(series).astype(np.float64, copy=False)
        s, q = np.empty_like(x), np.empty_like(x)
        rolling_sums_k(x, self.buf, self.ist, self.fst, s, q)
        return s, q

    def mean_std(self, x: F64) -> tuple[F64, F64]:
        """Window mean and sample standard deviation (ddof=1) of one series."""
        s, q = self.sum1(x)
        mean, std = np.empty(len(x)), np.empty(len(x))
        moments_from_sums(s, q, self.window, mean, std)
        return mean, std


@dataclass
class Lag:
    """The value ``k`` rows back (state of :func:`lagged`)."""

    buf: F64
    ist: I64

    @classmethod
    def new(cls, k: int) -> Lag:
        return cls(np.full(k, np.nan), np.zeros(2, np.int64))

    def __call__(self, x: F64) -> F64:
        out = np.empty(len(x))
        lagged(x, self.buf, self.ist, out)
        return out


@dataclass
class Extreme:
    """Rolling maximum or minimum over ``w`` rows (state of :func:`rolling_max`)."""

    idx: I64
    val: F64
    ist: I64

    @classmethod
    def new(cls, window: int) -> Extreme:
        return cls(*extrema_state(window))
