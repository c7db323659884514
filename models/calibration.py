"""Calibration of raw anomaly scores to a severity in [0, 1].

Raw scores of different models live on different scales (a log-likelihood, a z-score, a reconstruction error).
:class:`EmpiricalCalibrator` maps a raw score to the fraction of the training scores at or below it: the
empirical CDF of what the model saw as normal. A severity of 0.99 then means "higher than 99 % of the training
rows", whatever the model (ties count half); the ensemble can combine severities directly.
"""

from __future__ import annotations

from typing import Self

import numpy as np

from ingest.records import F64


class EmpiricalCalibrator:
    """Severity = the empirical CDF of the training scores at mid-rank (NaN in, NaN out).

    A score equal to training scores counts half of them: a score the model gives every row (a rule with
    nothing to report) sits at 0.5, not at 1, and only a score above every training score reaches 1.

    Parameters
    ----------
    max_points : int
        Training scores kept at most (an even subsample of the sorted scores beyond it), >= 2.

    Examples
    --------
    >>> cal = EmpiricalCalibrator().fit(np.arange(100.0))
    >>> cal.severity(np.array([-1.0, 49.0, 99.0, 500.0, np.nan])).tolist()
    [0.0, 0.495, 0.995, 1.0, nan]
    """

    def __init__(self, max_points: int = 10_000) -> None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"max_points={max_points!r}: must be an integer >= 2")
        self.max_points = max_points

    def fit(self, raw: F64) -> Self:
        """Keep the sorted finite training scores (none: every severity is NaN until a fit with some)."""
        finite = np.sort(np.asarray(raw, dtype=np.float64)[np.isfinite(raw)])
        if len(finite) > self.max_points:
            finite = finite[np.linspace(0, len(finite) - 1, self.max_points).round().astype(np.int64)]
        self.sorted_ = finite
        return self

    def severity(self, raw: F64) -> F64:
        """The fraction of training scores at or below each raw score, in [0, 1]."""
        raw = np.asarray(raw, dtype=np.float64)
        if len(self.sorted_) == 0:
            return np.full(raw.shape, np.nan)
        below = np.searchsorted(self.sorted_, raw, side="left")
        at_or_below = np.searchsorted(self.sorted_, raw, side="right")
        out = (below + at_or_below) / (2.0 * len(self.sorted_))
        out[np.isnan(raw)] = np.nan
        return out
