"""Offline change points of a history's one-bar log returns, with ruptures (PELT or binary segmentation).

:func:`offline_change_points` splits the returns of one column into segments that each look homogeneous under a
cost model, by minimising the sum of the segments' costs plus a penalty per change point:

``"l2"``
    A change of the mean (the squared deviations from the segment's mean).
``"normal"``
    A change of the mean or the variance (the segment's Gaussian -2 log-likelihood, ``rows * log(variance)``);
    the one for volatility regimes.
``"rbf"``
    A change of the distribution (a mean shift of the returns mapped through a Gaussian kernel whose bandwidth is
    the median heuristic); the default, robust to heavy tails.

The costs are taken on the returns standardised over the whole history (demeaned, divided by their standard
deviation), so a penalty is dimensionless and carries across symbols and bar lengths. The default penalty is
BIC-like, see :func:`default_penalty`.

**Not causal, by design.** The segmentation sees the whole history: whether and where a change at row t is found
depends on the rows after t, and on the length of the history (through the penalty). It is for analysing history
(labelling regimes, splitting a backtest, reports), never for the live stream, where the causal detectors
:class:`models.changepoint.Bocpd` and :class:`models.changepoint.Cusum` run.

Speed: PELT runs ruptures' C implementation for ``"l2"`` and ``"rbf"`` (``KernelCPD``, milliseconds to a second
for 5,000 rows) and ruptures' pure-Python PELT for ``"normal"``, which is O(rows²) when there are few changes
(about 1 s for 1,000 rows, 13 s for 4,000). Binary segmentation runs ruptures' ``Binseg`` on the O(1) costs of
this module (cumulative sums; for ``"rbf"``, of the full kernel matrix: rows² float64, 200 MB for 5,000 rows).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import ruptures as rpt  # type: ignore[import-untyped]  # ruptures ships no type information
from ruptures.base import BaseCost  # type: ignore[import-untyped]
from ruptures.exceptions import NotEnoughPoints  # type: ignore[import-untyped]
from scipy.spatial.distance import pdist

from ingest.records import F64, I64
from models.base import Observations, check_positive_float, check_positive_int

#: The cost models :func:`offline_change_points` takes.
MODELS: tuple[str, ...] = ("rbf", "l2", "normal")
#: The search methods :func:`offline_change_points` takes.
METHODS: tuple[str, ...] = ("pelt", "binseg")
#: Returns a segmentation takes at most by default (the searches are O(rows²) in time at worst).
DEFAULT_MAX_ROWS = 10_000
#: Parameters a change point adds, per model: its position and the new segment's mean (and variance).
PARAMETERS_PER_CHANGE: dict[str, int] = {"l2": 2, "normal": 3, "rbf": 2}
#: Returns (evenly spaced) the rbf bandwidth and cost scale are estimated from: the pairs grow as its square.
RBF_SAMPLE = 2_000
#: Added to a segment's variance in the ``"normal"`` cost, as ruptures' ``CostNormal`` does, so that a segment of
#: equal returns costs a finite amount (the returns are standardised, so it is 1e-6 of the history's variance).
NORMAL_VARIANCE_FLOOR = 1e-6
#: A standard deviation of the log returns at or below which they are taken as equal (rounding: a price that
#: grows by the same factor every bar has returns that differ by ~1e-16), and the history as one segment.
FLAT_RETURNS_STD = 1e-12


@dataclass(frozen=True)
class ChangePoints:
    """The change points of a history and the segments between them.

    Parameters
    ----------
    ts : ndarray of int64, shape (k,)
        Time of each change point, ns UTC: the row whose return is the first of the new segment.
    index : ndarray of int64, shape (k,)
        Position of each change point's row in the observations.
    segment_start, segment_end : ndarray of int64, shape (k + 1,)
        Times of each segment's first and last row (inclusive), ns UTC. A row's return is the log return from the
        row before it, so the first segment starts at the second row.
    segment_rows : ndarray of int64, shape (k + 1,)
        Finite returns in each segment.
    segment_mean, segment_std : ndarray of float64, shape (k + 1,)
        Mean and standard deviation (ddof=1) of each segment's log returns, per bar (not annualised).
    penalty : float
        The penalty per change point used (on the standardised returns).
    model, method, column, symbol : str
        What was segmented and how.
    """

    ts: I64
    index: I64
    segment_start: I64
    segment_end: I64
    segment_rows: I64
    segment_mean: F64
    segment_std: F64
    penalty: float
    model: str
    method: str
    column: str
    symbol: str = ""

    def __len__(self) -> int:
        """The number of change points (one less than the segments)."""
        return len(self.ts)


def offline_change_points(
    obs: Observations,
    *,
    column: str = "close",
    model: Literal["rbf", "l2", "normal"] = "rbf",
    penalty: float | None = None,
    min_size: int = 20,
    method: Literal["pelt", "binseg"] = "pelt",
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ChangePoints:
    """The change points of the log returns of ``column`` over the whole history ``obs`` (not causal).

    Parameters
    ----------
    obs : Observations
        The history. Returns are taken between consecutive rows; a return that is not finite (a missing, zero or
        negative close at either end) is dropped, and positions are mapped back to the rows of ``obs``.
    column : str
        The price column.
    model : {"rbf", "l2", "normal"}
        The segment cost: a change of the distribution, of the mean, or of the mean and variance (see the
        module's docstring).
    penalty : float, optional
        Cost of a change point, > 0, on the returns standardised over the history; larger gives fewer changes.
        Default: :func:`default_penalty`.
    min_size : int
        Fewest returns in a segment, >= 2.
    method : {"pelt", "binseg"}
        ``"pelt"``: the exact minimum of the penalised cost. ``"binseg"``: binary segmentation, greedy and faster,
        splitting while a split lowers the cost by more than the penalty.
    max_rows : int
        Most finite returns accepted (the searches are O(rows²) in time at worst, and ``"rbf"`` with ``"binseg"``
        in memory too).

    Returns
    -------
    ChangePoints
        Change points in time order, and the statistics of the segments between them.

    Raises
    ------
    KeyError
        When ``column`` is not in ``obs`` (naming it).
    ValueError
        When ``model``, ``method``, ``penalty``, ``min_size`` or ``max_rows`` is invalid, or the finite returns
        are fewer than ``2 * min_size`` or more than ``max_rows`` (naming the parameter and the value).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> returns = np.concatenate([rng.normal(0, 0.01, 300), rng.normal(0, 0.03, 300)])
    >>> close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    >>> obs = Observations(np.arange(601, dtype=np.int64), {"close": close})
    >>> cp = offline_change_points(obs, model="normal")
    >>> len(cp), abs(int(cp.index[0]) - 301) < 10
    (1, True)
    """
    if model not in MODELS:
        raise ValueError(f"model={model!r}: must be one of {MODELS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: must be one of {METHODS}")
    min_size = check_positive_int("min_size", min_size, minimum=2)
    max_rows = check_positive_int("max_rows", max_rows)
    if penalty is not None:
        penalty = check_positive_float("penalty", penalty)
    close = obs.column(column)

    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.diff(np.log(close))
    finite = np.isfinite(returns)
    rows = np.flatnonzero(finite) + 1  # the row of each finite return
    x = returns[finite]
    n = len(x)
    if n < 2 * min_size:
        raise ValueError(
            f"obs: {n} finite log returns of column {column!r}, fewer than 2 * min_size = {2 * min_size} "
            f"(min_size={min_size})"
        )
    if n > max_rows:
        raise ValueError(
            f"max_rows={max_rows}: obs has {n} finite log returns of column {column!r}; analyse a shorter window "
            "or longer bars, or raise max_rows"
        )

    std = float(x.std())
    if std <= FLAT_RETURNS_STD:  # equal returns throughout: one segment, whatever the model
        bkps = [n]
        used = penalty if penalty is not None else default_penalty(model, n, 1.0)
    else:
        z = (x - x.mean()) / std
        gamma, scale = _rbf_bandwidth_and_scale(z) if model == "rbf" else (math.nan, 1.0)
        used = penalty if penalty is not None else default_penalty(model, n, scale)
        bkps = _segment(z, model, method, used, min_size, gamma)

    bounds = [0, *bkps]
    segments = list(itertools.pairwise(bounds))
    change_rows = rows[np.asarray(bounds[1:-1], dtype=np.int64)]
    return ChangePoints(
        ts=obs.ts[change_rows],
        index=change_rows.astype(np.int64),
        segment_start=obs.ts[rows[[a for a, _ in segments]]],
        segment_end=obs.ts[rows[[b - 1 for _, b in segments]]],
        segment_rows=np.array([b - a for a, b in segments], dtype=np.int64),
        segment_mean=np.array([x[a:b].mean() for a, b in segments]),
        segment_std=np.array([x[a:b].std(ddof=1) for a, b in segments]),
        penalty=float(used),
        model=model,
        method=method,
        column=column,
        symbol=obs.symbol,
    )


def default_penalty(model: str, n: int, scale: float = 1.0) -> float:
    """The BIC-like penalty per change point: ``p * log(n) * scale``.

    ``p`` is the number of free parameters a change point adds (:data:`PARAMETERS_PER_CHANGE`): its position, and
    the new segment's ``d`` means (``"l2"``, ``"rbf"``) or ``d`` means and ``d (d + 1) / 2`` covariances
    (``"normal"``), with ``d = 1`` for one column of returns. ``scale`` is the cost of a row under the model's
    noise, the ``var`` of the BIC: the variance of the standardised returns (1) for ``"l2"``, 1 for
    ``"normal"`` (whose cost is already a -2 log-likelihood), and the per-row cost of the whole history as one
    segment for ``"rbf"`` (its variance in the kernel's feature space). With ``p = d`` this is the
    ``log(n) * d * var`` of ruptures' examples; counting the position too makes white noise free of false changes.

    Raises
    ------
    ValueError
        When ``model`` is unknown or ``n`` < 2 (naming the value).

    Examples
    --------
    >>> round(default_penalty("normal", 1000), 2)
    20.72
    """
    if model not in PARAMETERS_PER_CHANGE:
        raise ValueError(f"model={model!r}: must be one of {MODELS}")
    check_positive_int("n", n, minimum=2)
    return PARAMETERS_PER_CHANGE[model] * math.log(n) * scale


def change_points_frame(cp: ChangePoints) -> pd.DataFrame:
    """The segments of ``cp`` as a table, one row per segment in time order.

    Columns: ``timestamp`` (the segment's first row: a change point for every segment but the first, UTC),
    ``end`` (its last row, UTC), ``change`` (whether it starts at a change point), ``rows``, ``mean_log_return``
    and ``std_log_return`` (per bar).
    """
    k = len(cp)
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(cp.segment_start, unit="ns", utc=True),
            "end": pd.to_datetime(cp.segment_end, unit="ns", utc=True),
            "change": np.arange(k + 1) > 0,
            "rows": cp.segment_rows,
            "mean_log_return": cp.segment_mean,
            "std_log_return": cp.segment_std,
        }
    )


# ---- the search ----------------------------------------------------------------------------------------
def _segment(z: F64, model: str, method: str, penalty: float, min_size: int, gamma: float) -> list[int]:
    """Ends of the segments of ``z`` (the last is ``len(z)``), as ruptures gives them."""
    if method == "pelt" and model in ("l2", "rbf"):
        kernel = "linear" if model == "l2" else "rbf"
        params = {"gamma": gamma} if model == "rbf" else None
        algo = rpt.KernelCPD(kernel=kernel, min_size=min_size, jump=1, params=params).fit(z)
    else:
        cost = {"l2": CumsumL2Cost, "normal": CumsumNormalCost}.get(model)
        custom = RbfGramCost(gamma) if cost is None else cost()
        search = rpt.Pelt if method == "pelt" else rpt.Binseg
        algo = search(custom_cost=custom, min_size=min_size, jump=1).fit(z)
    return [int(b) for b in algo.predict(pen=penalty)]


def _rbf_bandwidth_and_scale(z: F64) -> tuple[float, float]:
    """The rbf kernel's ``gamma`` (1 / the median squared distance between returns, as ruptures' ``CostRbf``
    takes it) and the per-row cost of ``z`` as one segment, ``1 - mean(K)``, both from at most
    :data:`RBF_SAMPLE` evenly spaced returns."""
    m = len(z)
    sample = z[np.linspace(0, m - 1, min(m, RBF_SAMPLE)).astype(np.int64)] if m > RBF_SAMPLE else z
    d2 = pdist(sample.reshape(-1, 1), metric="sqeuclidean")
    median = float(np.median(d2))
    gamma = 1.0 / median if median > 0 else 1.0
    k = len(sample)
    mean_kernel = (k + 2.0 * float(np.exp(-gamma * d2).sum())) / (k * k)
    return gamma, max(1.0 - mean_kernel, 0.0)


# ---- costs: O(1) a segment, for ruptures' Python searches --------------------------------------------------
def _prefix(values: F64) -> list[float]:
    # a list: ruptures asks for one segment at a time, and Python floats index faster than numpy scalars
    out: list[float] = np.concatenate([[0.0], np.cumsum(values)]).tolist()
    return out


class CumsumL2Cost(BaseCost):  # type: ignore[misc]  # ruptures' base class is untyped
    """ruptures' ``CostL2`` (squared deviations from the segment's mean) from cumulative sums: O(1) a segment."""

    model = "sentinel_l2"
    min_size = 1

    def fit(self, signal: F64) -> CumsumL2Cost:
        """Take the signal, shape (n,) or (n, 1)."""
        x = np.asarray(signal, dtype=np.float64).reshape(-1)
        self.signal = x.reshape(-1, 1)
        self._s1 = _prefix(x)
        self._s2 = _prefix(x * x)
        return self

    def error(self, start: int, end: int) -> float:
        """The cost of the rows ``start:end``."""
        m = end - start
        if m < self.min_size:
            raise NotEnoughPoints
        s1 = self._s1[end] - self._s1[start]
        return max(self._s2[end] - self._s2[start] - s1 * s1 / m, 0.0)


class CumsumNormalCost(CumsumL2Cost):
    """ruptures' ``CostNormal`` of one column (``rows * log(variance + 1e-6)``) from the same cumulative sums."""

    model = "sentinel_normal"
    min_size = 2

    def error(self, start: int, end: int) -> float:
        """The cost of the rows ``start:end``."""
        m = end - start
        if m < self.min_size:
            raise NotEnoughPoints
        mean = (self._s1[end] - self._s1[start]) / m
        var = max((self._s2[end] - self._s2[start]) / m - mean * mean, 0.0)
        return m * math.log(var + NORMAL_VARIANCE_FLOOR)


class RbfGramCost(BaseCost):  # type: ignore[misc]  # ruptures' base class is untyped
    """The rbf kernel cost of ruptures' ``KernelCPD`` (``rows - sum(K) / rows`` over the segment, ``K`` unclipped)
    from 2-D cumulative sums of the kernel matrix: O(1) a segment, O(n²) memory."""

    model = "sentinel_rbf"
    min_size = 1

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def fit(self, signal: F64) -> RbfGramCost:
        """Take the signal, shape (n,) or (n, 1)."""
        x = np.asarray(signal, dtype=np.float64).reshape(-1)
        self.signal = x.reshape(-1, 1)
        gram = np.subtract.outer(x, x)  # one n x n array, transformed in place
        np.square(gram, out=gram)
        gram *= -self.gamma
        np.exp(gram, out=gram)
        gram.cumsum(axis=0, out=gram)
        gram.cumsum(axis=1, out=gram)
        self._prefix = gram
        return self

    def _block(self, i: int, j: int) -> float:
        """Sum of the kernel over rows and columns ``< i`` and ``< j``."""
        return float(self._prefix[i - 1, j - 1]) if i > 0 and j > 0 else 0.0

    def error(self, start: int, end: int) -> float:
        """The cost of the rows ``start:end``."""
        m = end - start
        if m < self.min_size:
            raise NotEnoughPoints
        inside = self._block(end, end) - self._block(start, end) - self._block(end, start) + self._block(start, start)
        return max(m - inside / m, 0.0)
