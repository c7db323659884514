"""The detector contract: one estimator interface for every anomaly model.

A :class:`Detector` is a specification: ``__init__`` only stores parameters. :meth:`Detector.fit` learns from a
history (fitted attributes end in ``_``) and returns the detector; scoring is defined once, as a streaming step
:meth:`Detector.update` over a batch of new rows with carried state, and batch scoring
(:meth:`Detector.score`) is one step from a fresh state. So streaming equals batch by construction, for any split
of the rows, and a state pickled mid-stream continues exactly.

Rows are :class:`Observations`: times and named float64 columns of one symbol at one bar length (the bars and
their features, see :meth:`Observations.from_bars`). Scores are :class:`Scores`: a raw score (larger is more
anomalous, NaN while the model warms up) and a severity in [0, 1] from a calibrator fitted on the training
scores (:class:`~models.calibration.EmpiricalCalibrator`).

Causality: a step at row t reads rows <= t only, and a detector fitted on a window scores only rows after it
(:meth:`Detector.check_after_training` refuses the rest).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

from features.engine import FeatureFrame
from ingest.records import F64, I64, BarBatch

#: Bar columns an :class:`Observations` built from bars carries.
BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "trade_count", "spread", "bid", "ask")


class NotFittedError(RuntimeError):
    """A detector that needs :meth:`Detector.fit` was used before it."""


@dataclass(frozen=True)
class Observations:
    """Consecutive rows of one symbol at one bar length: times (ns UTC, increasing) and float64 columns.

    Raises
    ------
    ValueError
        When a column's length differs from ``ts`` or the times do not increase (naming the column or row).
    """

    ts: I64
    columns: dict[str, F64]
    symbol: str = ""
    interval_ns: int = 0

    def __post_init__(self) -> None:
        ts = np.ascontiguousarray(self.ts, dtype=np.int64)
        object.__setattr__(self, "ts", ts)
        cols = {}
        for name, values in self.columns.items():
            arr = np.ascontiguousarray(values, dtype=np.float64)
            if arr.shape != ts.shape:
                raise ValueError(f"columns[{name!r}]: {arr.shape[0]} rows, ts has {ts.shape[0]}")
            cols[name] = arr
        object.__setattr__(self, "columns", cols)
        if len(ts) > 1:
            bad = np.flatnonzero(np.diff(ts) <= 0)
            if len(bad):
                k = int(bad[0]) + 1
                raise ValueError(f"ts[{k}]={int(ts[k])!r}: times must increase (previous {int(ts[k - 1])!r})")

    def __len__(self) -> int:
        return len(self.ts)

    def column(self, name: str) -> F64:
        """One column.

        Raises
        ------
        KeyError
            When the column is absent (naming it and the columns there are).
        """
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"column={name!r}: not in the observations (have {sorted(self.columns)})") from None

    def take(self, index: slice | np.ndarray) -> Observations:
        """The rows ``index`` selects (a slice or a boolean mask), in order."""
        return Observations(
            self.ts[index], {k: v[index] for k, v in self.columns.items()}, self.symbol, self.interval_ns
        )

    @classmethod
    def concat(cls, parts: Sequence[Observations]) -> Observations:
        """Consecutive parts of one stream as one (columns of the first part).

        Raises
        ------
        ValueError
            When ``parts`` is empty.
        """
        if not parts:
            raise ValueError("parts: nothing to concatenate")
        first = parts[0]
        return cls(
            np.concatenate([p.ts for p in parts]),
            {k: np.concatenate([p.column(k) for p in parts]) for k in first.columns},
            first.symbol,
            first.interval_ns,
        )

    @classmethod
    def from_bars(cls, bars: BarBatch, features: FeatureFrame | None = None) -> Observations:
        """The bars of one symbol and length (:data:`BAR_COLUMNS`) with their feature values, row for row.

        Raises
        ------
        ValueError
            When the bars mix symbols or lengths, or the features are not the bars' rows (naming the value).
        """
        symbols = np.unique(bars.symbol) if len(bars) else np.array([""], dtype=object)
        if len(symbols) > 1:
            raise ValueError(f"bars.symbol={symbols[1]!r}: bars of one symbol expected ({symbols[0]!r})")
        lengths = np.unique(bars.interval_ns) if len(bars) else np.array([0])
        if len(lengths) > 1:
            raise ValueError(f"bars.interval_ns={int(lengths[1])!r}: bars of one length expected")
        columns = {name: getattr(bars, name) for name in BAR_COLUMNS}
        if features is not None:
            if not np.array_equal(features.ts, bars.ts):
                raise ValueError("features.ts: feature rows are not the bars' rows")
            columns.update(features.values)
        return cls(bars.ts, columns, str(symbols[0]), int(lengths[0]))


@dataclass(frozen=True)
class Scores:
    """A detector's output, row for row with its input.

    Parameters
    ----------
    ts : ndarray of int64
        Row times, ns UTC.
    raw : ndarray of float64
        The model's score, larger is more anomalous; NaN while it warms up.
    severity : ndarray of float64
        The raw score calibrated to [0, 1] (NaN where ``raw`` is NaN).
    detail : dict of str to ndarray
        Model outputs worth showing (a conditional volatility, regime probabilities, ...), row for row.
    """

    ts: I64
    raw: F64
    severity: F64
    detail: dict[str, F64] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def concat(cls, parts: Sequence[Scores]) -> Scores:
        """Consecutive scores as one (detail columns of the first part)."""
        if not parts:
            raise ValueError("parts: nothing to concatenate")
        return cls(
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.raw for p in parts]),
            np.concatenate([p.severity for p in parts]),
            {k: np.concatenate([p.detail[k] for p in parts]) for k in parts[0].detail},
        )

    def equals(self, other: Scores) -> bool:
        """Exact equality (NaN equals NaN)."""
        return (
            np.array_equal(self.ts, other.ts)
            and np.array_equal(self.raw, other.raw, equal_nan=True)
            and np.array_equal(self.severity, other.severity, equal_nan=True)
            and sorted(self.detail) == sorted(other.detail)
            and all(np.array_equal(v, other.detail[k], equal_nan=True) for k, v in self.detail.items())
        )


class Detector(ABC):
    """An anomaly model: a specification, fitted on history, scoring new rows as a streaming step.

    Subclasses set :attr:`name` and :attr:`requires`, store their parameters in ``__init__`` (nothing else),
    and implement :meth:`_fit` (learn from the history; set fitted attributes ending in ``_``), :meth:`init_state`
    and :meth:`_step` (score new rows, advancing the state). The base class calibrates raw scores to severities.
    """

    #: Short name, used in alerts and the registry.
    name: ClassVar[str] = ""
    #: Columns of :class:`Observations` the detector reads.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`fit` is needed before scoring (rules with fixed thresholds need none).
    needs_fit: ClassVar[bool] = True

    # ---- the contract ----------------------------------------------------------------------------------
    def fit(self, history: Observations) -> Self:
        """Learn from ``history`` (model parameters and the severity calibration); returns the detector.

        Raises
        ------
        KeyError
            When a required column is absent (naming it).
        ValueError
            When the history is too short or unusable (naming the value).
        """
        self._check(history)
        self._fit(history)
        from models.calibration import EmpiricalCalibrator

        train = self._step(self.init_state(), history)
        self.calibrator_ = EmpiricalCalibrator().fit(train.raw)
        self.trained_until_ = int(history.ts[-1]) if len(history) else None
        return self

    def init_state(self) -> Any:
        """The state before any row is scored (copied: states never share arrays)."""
        return copy.deepcopy(self._initial_state())

    def update(self, state: Any, batch: Observations) -> Scores:
        """Score the new rows ``batch`` after the rows ``state`` has seen; advances ``state`` in place.

        Raises
        ------
        NotFittedError
            When the detector needs fitting and was not fitted.
        KeyError
            When a required column is absent (naming it).
        """
        raw = self.update_raw(state, batch)
        calibrator = getattr(self, "calibrator_", None)
        severity = self._uncalibrated(raw.raw) if calibrator is None else calibrator.severity(raw.raw)
        return Scores(raw.ts, raw.raw, severity, raw.detail)

    def update_raw(self, state: Any, batch: Observations) -> Scores:
        """:meth:`update` without the calibration (``severity`` is ``raw``): for callers with a calibration of their
        own, like the ensemble.

        Raises
        ------
        NotFittedError, KeyError
            As :meth:`update`.
        """
        self._check(batch)
        if self.needs_fit and not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__}: call fit(history) before scoring")
        return self._step(state, batch)

    def score(self, batch: Observations) -> Scores:
        """Score ``batch`` in one call from a fresh state: the batch form of :meth:`update`."""
        return self.update(self.init_state(), batch)

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return hasattr(self, "calibrator_")

    def check_after_training(self, batch: Observations) -> None:
        """Refuse rows at or before the end of the training window (a model never scores its own training data).

        Raises
        ------
        ValueError
            Naming the first offending row time.
        """
        until = getattr(self, "trained_until_", None)
        if until is not None and len(batch) and int(batch.ts[0]) <= until:
            raise ValueError(f"ts={int(batch.ts[0])!r}: at or before the end of the training window ({until})")

    def get_params(self) -> dict[str, Any]:
        """The parameters given to ``__init__`` (fitted attributes excluded)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ---- for subclasses --------------------------------------------------------------------------------
    def _fit(self, history: Observations) -> None:  # noqa: B027 - a rule needs no fitting
        """Learn model parameters from ``history`` (set attributes ending in ``_``)."""

    @abstractmethod
    def _initial_state(self) -> Any:
        """The state before any row."""

    @abstractmethod
    def _step(self, state: Any, batch: Observations) -> Scores:
        """Raw scores of ``batch`` (``severity`` ignored), advancing ``state`` in place."""

    def _uncalibrated(self, raw: F64) -> F64:
        """Severity before any fit (rules override it with their fixed scale); NaN by default."""
        return np.full(raw.shape, np.nan)

    def _check(self, batch: Observations) -> None:
        for name in self.requires:
            batch.column(name)


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; otherwise a ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def check_positive_float(name: str, value: object) -> float:
    """``value`` as a finite float > 0; otherwise a ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not 0 < float(value) < np.inf:
        raise ValueError(f"{name}={value!r}: must be a finite number > 0")
    return float(value)


def detail_columns(scores: Mapping[str, F64], n: int) -> dict[str, F64]:
    """Detail columns checked to ``n`` rows each."""
    out = {}
    for k, v in scores.items():
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(f"detail[{k!r}]: {arr.shape} rows, expected ({n},)")
        out[k] = arr
    return out


#: Every registered detector class by name (see :func:`register`); the shared contract tests run over it.
REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: add a detector to :data:`REGISTRY` under its :attr:`Detector.name`.

    Raises
    ------
    ValueError
        When the name is empty or taken by another class (naming it).
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__}.name={cls.name!r}: a registered detector needs a name")
    other = REGISTRY.get(cls.name)
    if other is not None and other is not cls:
        raise ValueError(f"name={cls.name!r}: already registered by {other.__name__}")
    REGISTRY[cls.name] = cls
    return cls
