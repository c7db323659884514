"""Multivariate detectors on the feature vector of each bar: an isolation forest and a one-class SVM.

Each bar gives a vector of feature columns (:data:`DEFAULT_COLUMNS` unless the ``columns`` parameter says
otherwise: returns over three horizons, a range-based volatility, the volume and spread z-scores and the RSI, all
finite after a 20-bar warm-up on one-minute bars). :meth:`~models.base.Detector.fit` standardises them robustly,
``(x - median) / IQR`` over the history's complete rows (:class:`RobustScale`), and fits a scikit-learn model on
the standardised rows. The raw score of a row is the negated ``score_samples`` of the model (larger is more
anomalous), computed by numba kernels from the fitted model's arrays (:func:`forest_path_lengths`,
:func:`rbf_density`; equal to scikit-learn's to rounding); a row with a missing or infinite feature scores NaN
and is left out of the fit.

Scoring is row by row and carries no state, so streaming equals batch for any split: the score of a row depends on
that row only, never on the other rows of the same call. The forest routes each row through its trees on its own
and adds the trees' depths in tree order; the SVM sums the kernel over its support vectors for each row on its
own, in support-vector order. Raw scores are float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numba
import numpy as np
import numpy.typing as npt
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.svm import OneClassSVM

from ingest.records import F64, I64
from models.base import (
    Detector,
    NotFittedError,
    Observations,
    Scores,
    check_positive_float,
    check_positive_int,
    register,
)

#: Feature columns of the default feature set on one-minute bars a feature-vector detector reads by default:
#: log returns over 1, 5 and 15 minutes, the 20-bar Parkinson volatility, the 20-bar volume and spread z-scores
#: and the 14-bar RSI (0-100).
DEFAULT_COLUMNS: tuple[str, ...] = (
    "ret_1min",
    "ret_5min",
    "ret_15min",
    "vol_parkinson_20",
    "volume_z_20",
    "spread_z_20",
    "rsi_14",
)
#: Complete feature rows (every column finite) a fit needs at least.
MIN_ROWS = 30


@dataclass(frozen=True)
class RobustScale:
    """A per-column standardisation robust to outliers: ``(x - center) / scale``.

    Parameters
    ----------
    center : ndarray of float64, shape (d,)
        The median of each column over the fitted rows.
    scale : ndarray of float64, shape (d,)
        The interquartile range of each column; where it is 0 (a column that is mostly one value), the standard
        deviation; where that is 0 too, 1.

    Examples
    --------
    >>> s = RobustScale.fit(np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0], [5.0, 5.0]]))
    >>> s.center.tolist(), s.scale.tolist()
    ([3.0, 5.0], [2.0, 1.0])
    """

    center: F64
    scale: F64

    @classmethod
    def fit(cls, x: F64) -> RobustScale:
        """The scale of the rows ``x`` (shape (n, d), every value finite, n >= 1)."""
        center = np.median(x, axis=0)
        q25, q75 = np.percentile(x, [25.0, 75.0], axis=0)
        scale = q75 - q25
        std = x.std(axis=0)
        scale = np.where(scale > 0.0, scale, np.where(std > 0.0, std, 1.0))
        return cls(np.ascontiguousarray(center, dtype=np.float64), np.ascontiguousarray(scale, dtype=np.float64))

    def transform(self, x: F64) -> F64:
        """The standardised rows of ``x`` (NaN stays NaN)."""
        out: F64 = (x - self.center) / self.scale
        return out


def check_columns(columns: object) -> tuple[str, ...]:
    """``columns`` as a tuple of distinct, non-empty column names; otherwise a ValueError naming the value."""
    if (
        not isinstance(columns, tuple)
        or not columns
        or not all(isinstance(c, str) and c for c in columns)
        or len(set(columns)) != len(columns)
    ):
        raise ValueError(f"columns={columns!r}: must be a non-empty tuple of distinct column names")
    return columns


def feature_rows(batch: Observations, columns: Sequence[str]) -> F64:
    """The columns of ``batch`` side by side, shape (n, d), with every row holding a non-finite value set to NaN.

    Raises
    ------
    KeyError
        When a column is absent (naming it).
    """
    x = np.empty((len(batch), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        x[:, j] = batch.column(name)
    x[~np.isfinite(x).all(axis=1)] = np.nan
    return x


class FeatureVectorDetector(Detector):
    """A detector on the robustly standardised feature vector of each bar (see the module doc).

    Subclasses store ``columns`` (a tuple of column names) and implement :meth:`_fit_rows` (a model of single rows)
    or override :meth:`_fit` (a model of consecutive rows). :attr:`requires` names the default columns; the
    columns a detector reads are its ``columns``, which :meth:`_check` verifies.

    Attributes
    ----------
    scaler_ : RobustScale
        The standardisation fitted on the history's complete rows.
    """

    #: The default columns; a detector reads its ``columns`` parameter (checked by :meth:`_check`).
    requires: ClassVar[tuple[str, ...]] = DEFAULT_COLUMNS
    columns: tuple[str, ...]

    def _check(self, batch: Observations) -> None:
        for name in check_columns(self.columns):
            batch.column(name)

    def standardised(self, batch: Observations) -> F64:
        """The standardised feature rows of ``batch``, shape (n, len(columns)); incomplete rows are NaN.

        Raises
        ------
        KeyError
            When a column is absent (naming it).
        NotFittedError
            Before :meth:`fit`.
        """
        scaler: RobustScale | None = getattr(self, "scaler_", None)
        if scaler is None:
            raise NotFittedError(f"{type(self).__name__}: call fit(history) before standardised")
        return scaler.transform(feature_rows(batch, check_columns(self.columns)))

    def _fit(self, history: Observations) -> None:
        self._check_params()
        x = feature_rows(history, check_columns(self.columns))
        complete = x[np.isfinite(x).all(axis=1)]
        if len(complete) < MIN_ROWS:
            raise ValueError(
                f"history: {len(history)} rows, {len(complete)} with every column of {self.columns} finite; "
                f"at least {MIN_ROWS} needed"
            )
        self.scaler_ = RobustScale.fit(complete)
        self._fit_rows(self.scaler_.transform(complete))

    def _check_params(self) -> None:
        """Raise a ValueError naming the first invalid parameter."""

    def _fit_rows(self, x: F64) -> None:
        """Fit the model on the standardised complete rows ``x`` (shape (n, d), n >= :data:`MIN_ROWS`)."""
        raise NotImplementedError


def _check_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**32:
        raise ValueError(f"random_state={value!r}: must be an integer in [0, 2**32)")
    return int(value)


@numba.njit(cache=True, nogil=True)
def forest_path_lengths(
    x: npt.NDArray[np.float32], feature: I64, threshold: F64, left: I64, right: I64, value: F64
) -> F64:
    """Summed path lengths of each row over the trees, in tree order (scikit-learn's ``depths``).

    The trees are padded to one node count: ``feature``, ``threshold``, ``left``, ``right`` (-1 at a leaf) and
    ``value`` (at a leaf: its depth plus the average path length of its samples, minus one) have shape
    ``(trees, nodes)``. Rows are float32, compared with the float64 thresholds the way scikit-learn's trees do.
    """
    n, trees = x.shape[0], feature.shape[0]
    out = np.zeros(n)
    for t in range(trees):
        for i in range(n):
            node = 0
            while left[t, node] != -1:
                node = left[t, node] if x[i, feature[t, node]] <= threshold[t, node] else right[t, node]
            out[i] += value[t, node]
    return out


@numba.njit(cache=True, nogil=True)
def rbf_density(x: F64, support: F64, coef: F64, gamma: float) -> F64:
    """``sum_i coef_i exp(-gamma |x - s_i|^2)`` for each row of ``x``, summed in support-vector order."""
    n, m, d = x.shape[0], support.shape[0], support.shape[1]
    out = np.zeros(n)
    for i in range(n):
        total = 0.0
        for j in range(m):
            dist = 0.0
            for k in range(d):
                diff = x[i, k] - support[j, k]
                dist += diff * diff
            total += coef[j] * math.exp(-gamma * dist)
        out[i] = total
    return out


class _SklearnDetector(FeatureVectorDetector):
    """Raw score of a model fitted with scikit-learn, scored row by row by a numba kernel (see subclasses).

    scikit-learn fits; scoring one bar through its estimators costs milliseconds of call overhead (input checks,
    joblib), so the fitted model is kept as plain arrays and scored in numba: microseconds per bar.
    """

    model_: Any

    def _initial_state(self) -> Any:
        return None

    def _step(self, state: Any, batch: Observations) -> Scores:
        x = self.standardised(batch)
        raw = np.full(len(batch), np.nan)
        complete = np.isfinite(x).all(axis=1)
        if complete.any():
            raw[complete] = self._raw(np.ascontiguousarray(x[complete]))
        return Scores(batch.ts, raw, raw)

    def _raw(self, x: F64) -> F64:
        """Raw scores of complete standardised rows."""
        raise NotImplementedError


@register
class IsolationForestDetector(_SklearnDetector):
    """An isolation forest on the standardised feature vector: rows that few random splits isolate are anomalous.

    The raw score is scikit-learn's anomaly score ``2 ** (-E[h(x)] / c(n))``, in (0, 1]: the mean depth at which
    the trees isolate the row, relative to the mean depth of a random point (about 0.5 for an ordinary row,
    towards 1 for an outlier).

    Parameters
    ----------
    columns : tuple of str
        Feature columns of the vector (default :data:`DEFAULT_COLUMNS`).
    n_estimators : int
        Trees, >= 1.
    max_samples : int
        Rows drawn to grow each tree (at most the history's complete rows), >= 2.
    random_state : int
        Seed of the trees: the same seed and history give the same forest.
    """

    name: ClassVar[str] = "isolation_forest"

    def __init__(
        self,
        columns: tuple[str, ...] = DEFAULT_COLUMNS,
        n_estimators: int = 100,
        max_samples: int = 256,
        random_state: int = 0,
    ) -> None:
        self.columns = columns
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def _check_params(self) -> None:
        check_positive_int("n_estimators", self.n_estimators)
        check_positive_int("max_samples", self.max_samples, minimum=2)
        _check_seed(self.random_state)

    def _fit_rows(self, x: F64) -> None:
        model = IsolationForest(
            n_estimators=check_positive_int("n_estimators", self.n_estimators),
            max_samples=min(check_positive_int("max_samples", self.max_samples, minimum=2), len(x)),
            random_state=_check_seed(self.random_state),
        ).fit(x)
        self.model_ = model
        trees = [e.tree_ for e in model.estimators_]
        nodes = max(t.node_count for t in trees)
        shape = (len(trees), nodes)
        feature, left, right = (np.full(shape, -1, dtype=np.int64) for _ in range(3))
        threshold, value = np.zeros(shape), np.zeros(shape)
        for k, tree in enumerate(trees):
            c = tree.node_count
            feature[k, :c], threshold[k, :c] = tree.feature, tree.threshold
            left[k, :c], right[k, :c] = tree.children_left, tree.children_right
            # scikit-learn's per-leaf depth: decision-path length + average path length of its samples - 1
            value[k, :c] = model._decision_path_lengths[k] + model._average_path_length_per_tree[k] - 1.0
        self.trees_ = (feature, threshold, left, right, value)
        self.denominator_ = float(len(trees) * _average_path_length([model.max_samples_])[0])

    def _raw(self, x: F64) -> F64:
        depths = forest_path_lengths(x.astype(np.float32), *self.trees_)
        if self.denominator_ == 0:
            return np.ones(len(x))
        out: F64 = 2 ** (-(depths / self.denominator_))
        return out


@register
class OneClassSvmDetector(_SklearnDetector):
    """A one-class SVM with an RBF kernel on the standardised feature vector.

    The raw score is the negated kernel density of the support vectors at the row,
    ``-sum_i a_i exp(-gamma |x - s_i|^2)``: near its minimum inside the bulk of the history, rising to 0 far
    from every support vector.

    Parameters
    ----------
    columns : tuple of str
        Feature columns of the vector (default :data:`DEFAULT_COLUMNS`).
    nu : float
        Upper bound on the fraction of training rows outside the boundary (and lower bound on the fraction of
        support vectors), in (0, 1].
    gamma : {"scale", "auto"} or float
        RBF width: scikit-learn's ``1 / (d * var(x))`` ("scale"), ``1 / d`` ("auto") or a number > 0, in inverse
        squared standardised units.
    max_train : int
        Rows the model is fitted on at most: beyond it an even subsample of the history's complete rows (the
        fit's cost grows with the square of the rows), >= :data:`MIN_ROWS`. The fit draws nothing at random.
    """

    name: ClassVar[str] = "one_class_svm"

    def __init__(
        self,
        columns: tuple[str, ...] = DEFAULT_COLUMNS,
        nu: float = 0.05,
        gamma: str | float = "scale",
        max_train: int = 2000,
    ) -> None:
        self.columns = columns
        self.nu = nu
        self.gamma = gamma
        self.max_train = max_train

    def _gamma(self) -> str | float:
        if isinstance(self.gamma, str) and self.gamma in ("scale", "auto"):
            return self.gamma
        if isinstance(self.gamma, str):
            raise ValueError(f"gamma={self.gamma!r}: must be 'scale', 'auto' or a finite number > 0")
        return check_positive_float("gamma", self.gamma)

    def _check_params(self) -> None:
        nu = check_positive_float("nu", self.nu)
        if nu > 1.0:
            raise ValueError(f"nu={self.nu!r}: must be in (0, 1]")
        self._gamma()
        check_positive_int("max_train", self.max_train, minimum=MIN_ROWS)

    def _fit_rows(self, x: F64) -> None:
        limit = check_positive_int("max_train", self.max_train, minimum=MIN_ROWS)
        if len(x) > limit:
            x = x[np.linspace(0, len(x) - 1, limit).round().astype(np.int64)]
        model = OneClassSVM(kernel="rbf", nu=float(self.nu), gamma=self._gamma()).fit(x)
        self.model_ = model
        self.support_ = np.ascontiguousarray(model.support_vectors_, dtype=np.float64)
        self.coef_ = np.ascontiguousarray(model.dual_coef_[0], dtype=np.float64)
        self.gamma_ = float(model._gamma)  # "scale"/"auto" as resolved at the fit

    def _raw(self, x: F64) -> F64:
        out: F64 = -rbf_density(x, self.support_, self.coef_, self.gamma_)
        return out
