"""The detector ensemble: calibrated member scores, combined per alert kind with dynamic weights, as alerts.

Members are registered detectors (:data:`~models.base.REGISTRY`), each tied to the alert kinds it has evidence
for (:data:`DEFAULT_MEMBERS`): the GARCH family and the price-jump rule for flash crashes and volatility spikes,
the hidden Markov regimes and the change-point detectors for regime changes, the volume and trade-count rules and
the feature-vector models for unusual volume, the spread rule for spread blow-outs, the stale-feed rule for data
gaps.

:meth:`Ensemble.fit` splits the history in time: members learn from the first part (``train_fraction``) and
score the rest, the validation part, which they never saw. From the validation scores the ensemble learns, per
member, a calibration of its raw score to a severity (the empirical CDF of out-of-sample scores: a model that
fits its own training rows too tightly, like a one-class SVM, is not trusted on them), and per kind, a threshold
(the ``1 - alert_rate`` quantile of the combined validation evidence, kept within ``[min_threshold, 1]``).

Combination, row by row (:func:`combine`): the evidence of kind k is the weighted mean of its members' severities
(members still warming up are left out). A member's weight is its prior weight times its recent precision, a
Beta-posterior mean ``(a + 1) / (e + 2)`` over its last exceedances (rows where its severity reached
``exceed_at``): ``e`` counts them, ``a`` those where the ensemble alerted too, both decaying by ``weight_decay``
per exceedance. With labels given to :meth:`Ensemble.fit` the counts start from the member's precision on the
validation part (an exceedance inside a labelled window is a true one); without, from its agreement with the
ensemble there. The counts live in the stream state, so weights follow each model's recent record, causally.

A row alerts when the evidence of a kind reaches its threshold; the alert takes the kind whose evidence exceeds
its threshold by the largest share of the distance to 1 (ties go to the earlier kind in :data:`KINDS`). A
flash crash needs a falling bar: its evidence counts only rows whose close fell. Each alert carries its
severity (the evidence), a score (``-log10(1 - evidence)``, larger is more anomalous), the members and their
severities, and a one-line explanation.

The ensemble itself has the detector shape: ``fit`` / ``init_state`` / ``update`` / ``score``; the state after
the history (every member warm) is where a stream starts, and streaming equals batch for any split.
:class:`~models.walkforward.WalkForward` adds the schedule: fit after a warm-up, refit every so many rows on a
trailing window, all inside the stream state, so a file scored in one call and the same rows fed bar by bar to an
actor give the same alerts.
"""

from __future__ import annotations

import copy
import importlib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.records import F64, I64

# the detector modules register their detectors on import; the LSTM autoencoder (torch) loads when used
from models import changepoint, ml, regimes, rules, volatility  # noqa: F401
from models.base import REGISTRY, Detector, NotFittedError, Observations, Scores, check_positive_int
from models.calibration import EmpiricalCalibrator

#: Detectors whose module is imported only when a member uses them, by name.
LAZY_DETECTORS: Final[dict[str, str]] = {"lstm_autoencoder": "models.autoencoder"}

#: Alert kinds, in tie-break order.
KINDS: Final[tuple[str, ...]] = (
    "data_gap",
    "flash_crash",
    "spread_blowout",
    "volume_anomaly",
    "volatility_spike",
    "regime_change",
)
#: Columns of an alerts frame (and of ``sentinel detect``'s CSV, with ``ts`` written as ``timestamp``).
ALERT_FRAME_COLUMNS: Final[tuple[str, ...]] = (
    "ts",
    "symbol",
    "kind",
    "severity",
    "score",
    "models",
    "explanation",
)

_VOL = ("flash_crash", "volatility_spike")


@dataclass(frozen=True)
class Member:
    """One detector of the ensemble: its registered name, the kinds it has evidence for, its parameters.

    Parameters
    ----------
    detector : str
        A name in :data:`~models.base.REGISTRY`.
    kinds : tuple of str
        Kinds of :data:`KINDS` the member's severity counts for.
    params : mapping
        Keyword arguments of the detector's ``__init__``.
    weight : float
        Prior weight, > 0. A member of weight >= 1 is primary for its kinds: a row has evidence for a kind only
        when a primary member scores it (the feature-vector models support the volatility evidence of the GARCH
        family and the price-jump rule, they cannot make it alone).
    """

    detector: str
    kinds: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.detector not in REGISTRY and self.detector not in LAZY_DETECTORS:
            raise ValueError(f"detector={self.detector!r}: not a registered detector (have {sorted(REGISTRY)})")
        if not self.kinds:
            raise ValueError(f"kinds={self.kinds!r}: a member needs at least one kind")
        for kind in self.kinds:
            if kind not in KINDS:
                raise ValueError(f"kinds={kind!r}: not an alert kind (have {KINDS})")
        if not (isinstance(self.weight, int | float) and 0 < float(self.weight) < math.inf):
            raise ValueError(f"weight={self.weight!r}: must be a finite number > 0")

    def build(self) -> Detector:
        """A fresh, unfitted detector."""
        if self.detector not in REGISTRY:
            importlib.import_module(LAZY_DETECTORS[self.detector])
        return REGISTRY[self.detector](**dict(self.params))


#: The default members: every detector of the suite but the LSTM autoencoder (slow to train; add it by name).
DEFAULT_MEMBERS: Final[tuple[Member, ...]] = (
    Member("price_jump", _VOL),
    Member("garch", _VOL),
    Member("gjr_garch", _VOL),
    Member("egarch", _VOL),
    Member("hmm_regime", ("regime_change",)),
    Member("bocpd", ("regime_change",)),
    Member("cusum", ("regime_change",)),
    Member("volume_burst", ("volume_anomaly",)),
    Member("trade_burst", ("volume_anomaly",)),
    Member("isolation_forest", ("volatility_spike",), weight=0.5),
    Member("one_class_svm", ("volatility_spike",), weight=0.5),
    Member("spread_blowout", ("spread_blowout",)),
    Member("stale_feed", ("data_gap",)),
)
#: Default smoothing span of each kind's evidence, in rows (see :class:`Ensemble`): none. Smoothing lets
#: sustained anomalies build evidence over bars, but delays them and, on the synthetic benchmark, lost more
#: recall at a given false-alert rate than it gained.
DEFAULT_PERSISTENCE: Final[dict[str, int]] = {}
#: Every member the ensemble knows by name: the defaults and the LSTM autoencoder (a supporting member).
KNOWN_MEMBERS: Final[dict[str, Member]] = {m.detector: m for m in DEFAULT_MEMBERS} | {
    "lstm_autoencoder": Member("lstm_autoencoder", ("volatility_spike",), weight=0.5),
}


def members_by_name(names: Sequence[str]) -> tuple[Member, ...]:
    """Members for detector names, with their default kinds and parameters.

    Raises
    ------
    ValueError
        When a name is not a detector the ensemble knows (naming it).
    """
    out = []
    for name in names:
        if name not in KNOWN_MEMBERS:
            raise ValueError(f"models={name!r}: not an ensemble member (have {sorted(KNOWN_MEMBERS)})")
        out.append(KNOWN_MEMBERS[name])
    return tuple(out)


# --------------------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def combine(
    severity: F64,
    member_kind: F64,
    falling: F64,
    crash_kind: int,
    thresholds: F64,
    exceed_at: float,
    decay: float,
    alpha: F64,
    counts: F64,
    smooth: F64,
) -> tuple[F64, F64]:
    """Evidence per kind and alert flags, row by row; advances the precision ``counts`` in place.

    Parameters
    ----------
    severity : (n, m) array
        Member severities (NaN: no evidence on the row).
    member_kind : (m, K) array
        Prior weight of member i for kind k (0 when it has no say). Members of weight >= 1 are the kind's
        primary members: a row has evidence for the kind only when one of them has a score.
    falling : (n,) array
        1.0 where the close fell on the row (flash crashes need it).
    crash_kind : int
        Column of ``flash_crash`` in the kinds (-1 when absent).
    thresholds : (K,) array
        Evidence at which each kind alerts.
    exceed_at : float
        Severity at which a member's row counts as an exceedance.
    decay : float
        Factor on the counts at each exceedance, in (0, 1].
    alpha : (K,) array
        Smoothing factor of each kind's evidence over rows, in (0, 1] (1: none).
    counts : (m, 2) array
        Per member: decayed exceedances and decayed exceedances the ensemble confirmed.
    smooth : (K,) array
        Each kind's smoothed evidence after the previous row (NaN before any).

    Returns
    -------
    evidence : (n, K) array
        Weighted mean severity per kind, exponentially smoothed over rows (NaN without evidence).
    fired : (n, K) array
        1.0 where the kind's evidence reached its threshold.
    """
    n, m = severity.shape
    k_count = member_kind.shape[1]
    evidence = np.full((n, k_count), np.nan)
    fired = np.zeros((n, k_count))
    weight = np.empty(m)
    for t in range(n):
        for i in range(m):
            weight[i] = (counts[i, 1] + 1.0) / (counts[i, 0] + 2.0)
        for k in range(k_count):
            num = 0.0
            den = 0.0
            primary = False
            for i in range(m):
                w = member_kind[i, k]
                s = severity[t, i]
                if w > 0.0 and s == s:
                    num += w * weight[i] * s
                    den += w * weight[i]
                    primary = primary or w >= 1.0
            if primary:
                e = num / den
                if k == crash_kind and falling[t] < 0.5:
                    e = 0.0
                if smooth[k] == smooth[k]:
                    e = smooth[k] + alpha[k] * (e - smooth[k])
                smooth[k] = e
                evidence[t, k] = e
                if e >= thresholds[k]:
                    fired[t, k] = 1.0
        for i in range(m):
            s = severity[t, i]
            if s == s and s >= exceed_at:
                confirmed = 0.0
                for k in range(k_count):
                    if member_kind[i, k] > 0.0 and fired[t, k] > 0.0:
                        confirmed = 1.0
                counts[i, 0] = decay * counts[i, 0] + 1.0
                counts[i, 1] = decay * counts[i, 1] + confirmed
    return evidence, fired


@numba.njit(cache=True, nogil=True)
def calibrate(raw: F64, sorted_scores: F64, counts: I64) -> F64:
    """Severities of a ``(n, m)`` matrix of raw member scores at once: member j's empirical CDF at mid-rank over
    its ``counts[j]`` sorted training scores ``sorted_scores[j, :counts[j]]`` (what
    :meth:`~models.calibration.EmpiricalCalibrator.severity` gives, number for number; NaN in, NaN out, NaN for a
    member without training scores)."""
    n, m = raw.shape
    out = np.empty((n, m))
    for j in range(m):
        c = counts[j]
        row = sorted_scores[j, :c]
        for i in range(n):
            x = raw[i, j]
            if x != x or c == 0:
                out[i, j] = np.nan
                continue
            below = np.searchsorted(row, x, side="left")
            at_or_below = np.searchsorted(row, x, side="right")
            out[i, j] = (below + at_or_below) / (2.0 * c)
    return out


def calibration_table(calibrators: Sequence[EmpiricalCalibrator]) -> tuple[F64, I64]:
    """The calibrators' sorted training scores as one padded ``(m, longest)`` array and their counts."""
    counts = np.array([len(c.sorted_) for c in calibrators], dtype=np.int64)
    table = np.full((len(calibrators), max(1, int(counts.max(initial=0)))), np.inf)
    for j, c in enumerate(calibrators):
        table[j, : counts[j]] = c.sorted_
    return table, counts


# --------------------------------------------------------------------------------------------------------
@dataclass
class EnsembleState:
    """Where a stream stands: each member's state, the precision counts, the smoothed evidence, the last close."""

    members: list[Any]
    counts: F64
    smooth: F64
    last_close: float = math.nan


@dataclass(frozen=True)
class EnsembleScores:
    """The ensemble's output for a batch of rows.

    Parameters
    ----------
    ts : ndarray of int64
        Row times, ns UTC.
    members : dict of str to Scores
        Each member's scores, severities recalibrated by the ensemble.
    evidence : dict of str to ndarray
        Combined evidence per kind, in [0, 1] (NaN without evidence).
    alerts : pandas.DataFrame
        One row per alerting bar (columns :data:`ALERT_FRAME_COLUMNS`).
    member_flags : dict of str to ndarray of bool
        Where each member alone would alert (its severity at or above its own validation threshold): the single
        models the ensemble is compared with.
    """

    ts: I64
    members: dict[str, Scores]
    evidence: dict[str, F64]
    alerts: pd.DataFrame
    member_flags: dict[str, npt.NDArray[np.bool_]]

    def __len__(self) -> int:
        return len(self.ts)


class Ensemble:
    """Calibrated member scores combined per kind into alerts (see the module doc).

    Parameters
    ----------
    members : sequence of Member
        The detectors and the kinds they speak for; :data:`DEFAULT_MEMBERS` by default.
    train_fraction : float
        Share of the history members are fitted on; the rest validates, in (0, 1).
    alert_rate : float
        Share of validation rows at which each kind's threshold is set (the ``1 - alert_rate`` quantile), in (0, 1).
    min_threshold : float
        Lowest threshold of any kind, in (0, 1].
    exceed_at : float
        Member severity counted as an exceedance for the dynamic weights, in (0, 1].
    weight_decay : float
        Factor on a member's precision counts at each exceedance, in (0, 1]: about ``1 / (1 - decay)`` recent
        exceedances count.
    min_feature_coverage : float
        A feature column is given to feature-vector members only when at least this share of the training rows
        has it finite (FX has no volume), in (0, 1].
    persistence : mapping of str to int
        Span, in rows, of the exponential smoothing of each kind's evidence (:data:`DEFAULT_PERSISTENCE`; kinds
        not named get 1, no smoothing): sustained anomalies (a volume surge, a volatility regime) build up
        evidence over a few bars that a single noisy bar does not reach.
    """

    def __init__(
        self,
        members: Sequence[Member] = DEFAULT_MEMBERS,
        train_fraction: float = 0.6,
        alert_rate: float = 0.003,
        min_threshold: float = 0.97,
        exceed_at: float = 0.99,
        weight_decay: float = 0.98,
        min_feature_coverage: float = 0.9,
        persistence: Mapping[str, int] | None = None,
    ) -> None:
        self.members = tuple(members)
        self.train_fraction = train_fraction
        self.alert_rate = alert_rate
        self.min_threshold = min_threshold
        self.exceed_at = exceed_at
        self.weight_decay = weight_decay
        self.min_feature_coverage = min_feature_coverage
        self.persistence = dict(DEFAULT_PERSISTENCE if persistence is None else persistence)

    # ---- parameters ------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not self.members:
            raise ValueError("members=(): the ensemble needs at least one member")
        names = [m.detector for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"members={names!r}: a detector appears more than once")
        for name, value in (("train_fraction", self.train_fraction), ("alert_rate", self.alert_rate)):
            if not (isinstance(value, int | float) and 0 < float(value) < 1):
                raise ValueError(f"{name}={value!r}: must be a number in (0, 1)")
        for name, value in (
            ("min_threshold", self.min_threshold),
            ("exceed_at", self.exceed_at),
            ("weight_decay", self.weight_decay),
            ("min_feature_coverage", self.min_feature_coverage),
        ):
            if not (isinstance(value, int | float) and 0 < float(value) <= 1):
                raise ValueError(f"{name}={value!r}: must be a number in (0, 1]")

    def _alpha(self, kinds: tuple[str, ...]) -> F64:
        spans = [self.persistence.get(k, 1) for k in kinds]
        for kind, span in zip(kinds, spans, strict=True):
            check_positive_int(f"persistence[{kind!r}]", span)
        return 2.0 / (np.asarray(spans, dtype=np.float64) + 1.0)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds some member speaks for, in :data:`KINDS` order."""
        have = {k for m in self.members for k in m.kinds}
        return tuple(k for k in KINDS if k in have)

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return hasattr(self, "thresholds_")

    # ---- fitting ---------------------------------------------------------------------------------------
    def fit(self, history: Observations, labels: Sequence[tuple[int, int]] | None = None) -> Self:
        """Fit the members on the history's first part, calibrate and weigh them on the rest; returns self.

        Parameters
        ----------
        history : Observations
            Rows of one symbol and bar length, oldest first.
        labels : sequence of (start, end), optional
            Known anomaly windows (ns UTC, end exclusive): member precision on the validation part starts from
            them instead of from agreement.

        Raises
        ------
        ValueError
            When the history is too short for any member, or a parameter is invalid (naming it).
        """
        self._check_params()
        n = len(history)
        cut = int(n * float(self.train_fraction))
        if cut < 2 or n - cut < 2:
            raise ValueError(f"history: {n} rows, too few to split into training and validation rows")
        train, valid = history.take(slice(0, cut)), history.take(slice(cut, n))
        fitted: list[tuple[Member, Detector]] = []
        skipped: dict[str, str] = {}
        for member in self.members:
            detector = self._member_detector(member, train)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    detector.fit(train)  # rules too: their calibration (and a session profile) come from it
            except (ValueError, KeyError, np.linalg.LinAlgError) as exc:
                skipped[member.detector] = str(exc)
                continue
            fitted.append((member, detector))
        if not fitted:
            raise ValueError(f"history: no member could be fitted ({skipped})")
        self.detectors_ = [d for _, d in fitted]
        self.member_names_ = tuple(m.detector for m, _ in fitted)
        self.skipped_ = skipped
        kinds = self.kinds
        self.kind_names_ = kinds
        self.member_kind_ = np.zeros((len(fitted), len(kinds)))
        for i, (member, _) in enumerate(fitted):
            for kind in member.kinds:
                self.member_kind_[i, kinds.index(kind)] = float(member.weight)
        # out-of-sample raw scores of the validation part, from the states at the end of training
        states = [d.init_state() for d in self.detectors_]
        raw = []
        for d, st in zip(self.detectors_, states, strict=True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw.append(d.update_raw(st, valid).raw)
        self.calibrators_ = [EmpiricalCalibrator().fit(r) for r in raw]
        self.calibration_table_ = calibration_table(self.calibrators_)
        severity = np.column_stack([c.severity(r) for c, r in zip(self.calibrators_, raw, strict=True)])
        falling = _falling(float(train.column("close")[-1]), valid.column("close"))
        counts = self._prior_counts(severity, valid.ts, labels)
        crash, alpha = _index(kinds, "flash_crash"), self._alpha(kinds)
        # evidence with the prior counts (equal weights without labels); thresholds from its upper quantile
        no_alert = np.full(len(kinds), np.inf)
        evidence, _ = combine(
            severity, self.member_kind_, falling, crash, no_alert, 2.0, 1.0, alpha, counts.copy(), _no_smooth(kinds)
        )
        thresholds = np.array(
            [
                alert_threshold(evidence[:, k], float(self.alert_rate), float(self.min_threshold))
                for k in range(len(kinds))
            ]
        )
        self.thresholds_ = thresholds
        self.member_thresholds_ = np.array(
            [
                alert_threshold(severity[:, i], float(self.alert_rate), float(self.min_threshold))
                for i in range(len(fitted))
            ]
        )
        # replay the validation rows with the thresholds: the smoothing state at their end and, without labels,
        # the members' agreement with the ensemble's decisions as their precision counts
        replayed, smooth = np.zeros((len(fitted), 2)), _no_smooth(kinds)
        combine(
            severity,
            self.member_kind_,
            falling,
            crash,
            thresholds,
            float(self.exceed_at),
            float(self.weight_decay),
            alpha,
            replayed,
            smooth,
        )
        if labels is None:
            counts = replayed
        self.start_state_ = EnsembleState(states, counts, smooth, float(valid.column("close")[-1]))
        self.trained_until_ = int(history.ts[-1])
        return self

    def _member_detector(self, member: Member, train: Observations) -> Detector:
        detector = member.build()
        columns = getattr(detector, "columns", None)
        if isinstance(columns, tuple) and columns and "columns" not in member.params:
            keep = []
            for name in columns:
                values = train.columns.get(name)
                if values is not None and np.isfinite(values).mean() >= float(self.min_feature_coverage):
                    keep.append(name)
            if keep and len(keep) < len(columns):
                detector = type(detector)(**(dict(member.params) | {"columns": tuple(keep)}))
        return detector

    def _prior_counts(self, severity: F64, ts: I64, labels: Sequence[tuple[int, int]] | None) -> F64:
        counts = np.zeros((severity.shape[1], 2))
        if labels is None:
            return counts
        inside = np.zeros(len(ts), dtype=np.bool_)
        for start, end in labels:
            inside |= (ts >= start) & (ts < end)
        decay = float(self.weight_decay)
        for i in range(severity.shape[1]):
            hits = np.flatnonzero(np.nan_to_num(severity[:, i]) >= float(self.exceed_at))
            for h in hits.tolist():
                counts[i, 0] = decay * counts[i, 0] + 1.0
                counts[i, 1] = decay * counts[i, 1] + float(inside[h])
        return counts

    # ---- scoring ---------------------------------------------------------------------------------------
    def init_state(self) -> EnsembleState:
        """The state at the end of the history (every member warm): where a stream after it starts.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if not self.is_fitted:
            raise NotFittedError("Ensemble: call fit(history) before scoring")
        return copy.deepcopy(self.start_state_)

    def update(self, state: EnsembleState, batch: Observations) -> EnsembleScores:
        """Score the new rows ``batch`` after those ``state`` has seen; advances ``state`` in place.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        KeyError
            When a column a member reads is absent (naming it).
        """
        if not self.is_fitted:
            raise NotFittedError("Ensemble: call fit(history) before scoring")
        n = len(batch)
        raw = np.empty((n, len(self.detectors_)))
        outs = []
        with warnings.catch_warnings():  # once per batch: entering it costs as much as a member's step
            warnings.simplefilter("ignore")
            for i, (d, st) in enumerate(zip(self.detectors_, state.members, strict=True)):
                out = d.update_raw(st, batch)
                raw[:, i] = out.raw
                outs.append(out)
        sorted_scores, counts = self.calibration_table_
        severity = calibrate(raw, sorted_scores, counts)
        members = {
            name: Scores(out.ts, out.raw, severity[:, i], out.detail)
            for i, (name, out) in enumerate(zip(self.member_names_, outs, strict=True))
        }
        close = batch.column("close")
        previous = np.concatenate(([state.last_close], close[:-1]))
        falling = _falling(state.last_close, close)
        if n:
            state.last_close = float(close[-1])
        evidence, fired = combine(
            severity,
            self.member_kind_,
            falling,
            _index(self.kind_names_, "flash_crash"),
            self.thresholds_,
            float(self.exceed_at),
            float(self.weight_decay),
            self._alpha(self.kind_names_),
            state.counts,
            state.smooth,
        )
        alerts = self._alerts(batch, previous, severity, evidence, fired, members)
        flags = {name: severity[:, i] >= self.member_thresholds_[i] for i, name in enumerate(self.member_names_)}
        return EnsembleScores(
            batch.ts, members, {k: evidence[:, j] for j, k in enumerate(self.kind_names_)}, alerts, flags
        )

    def score(self, batch: Observations) -> EnsembleScores:
        """Score ``batch`` from the state at the end of the history: the batch form of :meth:`update`."""
        return self.update(self.init_state(), batch)

    # ---- alerts ----------------------------------------------------------------------------------------
    def _alerts(
        self,
        batch: Observations,
        previous: F64,
        severity: F64,
        evidence: F64,
        fired: F64,
        members: Mapping[str, Scores],
    ) -> pd.DataFrame:
        rows = np.flatnonzero(fired.any(axis=1))
        if not len(rows):
            return empty_alerts()
        kinds = self.kind_names_
        margin = np.where(
            fired[rows] > 0,
            (evidence[rows] - self.thresholds_) / np.maximum(1.0 - self.thresholds_, 1e-12),
            -np.inf,
        )
        out: dict[str, list[Any]] = {c: [] for c in ALERT_FRAME_COLUMNS}
        for r, row in enumerate(rows.tolist()):
            # the largest margin; among equal margins the first kind in KINDS order
            k = int(np.argmax(margin[r]))
            kind = kinds[k]
            e = float(evidence[row, k])
            speakers = [
                (name, float(severity[row, i]))
                for i, name in enumerate(self.member_names_)
                if self.member_kind_[i, k] > 0 and np.isfinite(severity[row, i])
            ]
            speakers.sort(key=lambda p: -p[1])
            also = [kinds[j] for j in np.flatnonzero(fired[row]).tolist() if j != k]
            out["ts"].append(int(batch.ts[row]))
            out["symbol"].append(batch.symbol)
            out["kind"].append(kind)
            out["severity"].append(e)
            out["score"].append(-math.log10(max(1.0 - e, 1e-6)))
            out["models"].append(";".join(f"{name}={s:.3f}" for name, s in speakers))
            out["explanation"].append(explain(kind, batch, previous, row, speakers, members, also))
        return pd.DataFrame(out, columns=list(ALERT_FRAME_COLUMNS))

    def __repr__(self) -> str:
        names = ", ".join(m.detector for m in self.members)
        return f"Ensemble(members=[{names}], train_fraction={self.train_fraction!r}, alert_rate={self.alert_rate!r})"


def _make_empty_alerts() -> pd.DataFrame:
    types = {"ts": np.int64, "severity": np.float64, "score": np.float64}
    return pd.DataFrame({c: pd.Series([], dtype=types.get(c, object)) for c in ALERT_FRAME_COLUMNS})


#: The alerts of a batch without any; shared (building a frame costs more than scoring a bar): never modify it.
_EMPTY_ALERTS: Final[pd.DataFrame] = _make_empty_alerts()


def empty_alerts() -> pd.DataFrame:
    """An alerts frame without rows (shared: never modify it)."""
    return _EMPTY_ALERTS


def alert_threshold(evidence: F64, rate: float, floor: float) -> float:
    """The lowest evidence value at which at most ``rate`` of the rows alert, kept within ``[floor, 1]``.

    Ties matter: a discrete score (missing bars, a saturated calibration) puts many rows on one value, and a
    plain quantile there would let all of them alert. When even the top value holds more than ``rate`` of the
    rows, the threshold is 1: only evidence at the very top alerts (validation severities stay below 1, so in
    a fit that means beyond every validation row).
    """
    e = np.sort(evidence[np.isfinite(evidence)])
    if not len(e):
        return 1.0
    values = np.unique(e)
    share = (len(e) - np.searchsorted(e, values, side="left")) / len(e)  # share of rows >= each value
    ok = values[share <= rate]
    threshold = float(ok[0]) if len(ok) else 1.0
    return min(max(threshold, floor), 1.0)


def _no_smooth(kinds: tuple[str, ...]) -> F64:
    return np.full(len(kinds), np.nan)


def _index(kinds: tuple[str, ...], kind: str) -> int:
    return kinds.index(kind) if kind in kinds else -1


def _falling(last_close: float, close: F64) -> F64:
    prev = np.concatenate(([last_close], close[:-1]))
    with np.errstate(invalid="ignore"):
        return (close < prev).astype(np.float64)


def _detail(members: Mapping[str, Scores], name: str, column: str, row: int) -> float:
    scores = members.get(name)
    if scores is None or column not in scores.detail:
        return math.nan
    return float(scores.detail[column][row])


def _phrase(head: str, items: Sequence[tuple[str, float]], fallback: str) -> str:
    """``head`` and the formatted values that are not NaN, or ``fallback`` when all are."""
    parts = [fmt.format(value) for fmt, value in items if value == value]
    return head + ", ".join(parts) if parts else fallback


def explain(
    kind: str,
    batch: Observations,
    previous: F64,
    row: int,
    speakers: Sequence[tuple[str, float]],
    members: Mapping[str, Scores],
    also: Sequence[str] = (),
) -> str:
    """A one-line explanation of an alert: what moved, by how much, and which models say so.

    ``previous`` holds each row's previous close (the stream's, across batches).
    """
    close = batch.column("close")
    prev = float(previous[row])
    top = ", ".join(f"{name} {s:.3f}" for name, s in speakers[:3])
    if kind in ("flash_crash", "volatility_spike"):
        z = _detail(members, "price_jump", "z", row)
        level = _detail(members, "garch", "regime", row)
        move = f"close {100.0 * (close[row] / prev - 1.0):+.2f}% in one bar" if prev == prev else "close moved"
        what = move + (f" ({z:+.1f} sd)" if z == z else "")
        if level == level:
            what += f", volatility {level:.1f}x its long-run level"
    elif kind == "volume_anomaly":
        what = _phrase(
            "activity far above normal: ",
            [
                ("volume {:+.1f} sd", _detail(members, "volume_burst", "z", row)),
                ("trade count {:+.1f} sd", _detail(members, "trade_burst", "z", row)),
            ],
            "activity far from normal",
        )
    elif kind == "spread_blowout":
        z = _detail(members, "spread_blowout", "z", row)
        bid, ask = batch.columns.get("bid"), batch.columns.get("ask")
        bps = (
            10_000.0 * (ask[row] - bid[row]) / ((ask[row] + bid[row]) / 2.0)
            if bid is not None and ask is not None
            else math.nan
        )
        what = f"spread {bps:.1f} bps" + (f" ({z:+.1f} sd above its mean)" if z == z else "")
    elif kind == "regime_change":
        what = _phrase(
            "behaviour changed: ",
            [
                ("HMM state {:.0f}", _detail(members, "hmm_regime", "regime", row)),
                ("change probability {:.2f}", _detail(members, "bocpd", "p_change", row)),
            ],
            "behaviour changed",
        )
    else:
        gap = _detail(members, "stale_feed", "missing", row)
        surprise = members["stale_feed"].raw[row] if "stale_feed" in members else math.nan
        what = f"{gap:.0f} bars missing before this one" if gap == gap else "bars missing"
        if surprise == surprise:
            what += f" (probability {math.exp(-surprise):.2g} at this time of day)"
    text = f"{kind.replace('_', ' ')}: {what}; {top}"
    if also:
        text += f" (also {', '.join(also)})"
    return text
