"""Market regimes: a Gaussian hidden Markov model over returns and volatility, filtered forward bar by bar.

Each bar with a finite close gives a feature vector: the one-bar log return of ``close`` and the log of an
exponentially weighted root mean square of the returns up to and including the bar (a causal volatility), both
standardised over the history: the volatility by its mean and standard deviation, the return by its median and
MAD and then softly limited to 6 (``6 tanh(z / 6)``), so that a lone jump cannot claim a hidden state of its own
(the volatility feature still carries its size). An hmmlearn ``GaussianHMM`` (full covariances) is fitted on the
history's features by EM, started from states that split the history at quantiles of the volatility feature (so
that the states are volatility regimes, not a split of the return distribution by sign), from ``n_init``
starting points, keeping the fit of highest likelihood. Its states are then ordered by their mean volatility
feature, so state 0 is the calmest and state ``n_states - 1`` the most volatile.

Scoring never looks ahead: the regime probabilities at a bar are the forward-filtered ones,
``P(state at t | bars <= t)``, from a log-space forward recursion with the fitted parameters (one numba kernel
with carried state, beside a pure-Python reference it is tested against). A stream starts from the stationary
distribution of the fitted transition matrix, since it may start at any time.

The raw score is the probability that the market has moved to a regime more volatile than the one that was most
likely at the previous bar: ``sum(P(state = j | bars <= t) for j > argmax P(state | bars <= t - 1))``, in
[0, 1]. It is near 0 while the regime holds, rises when the evidence for a calmer-to-stormier switch arrives,
and is 0 once the most volatile regime is already the most likely (the switch has been scored). A move to a
calmer regime is not an anomaly and scores near 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numba
import numpy as np

from ingest.records import F64
from models.base import (
    Detector,
    NotFittedError,
    Observations,
    Scores,
    check_positive_float,
    check_positive_int,
    register,
)

#: The soft limit of the standardised return, in robust standard deviations (``limit * tanh(z / limit)``: linear
#: near 0, never beyond the limit), so that a lone jump cannot claim a hidden state of its own.
RETURN_LIMIT = 6.0
#: Usable (feature) rows a fit needs per hidden state.
MIN_ROWS_PER_STATE = 50
#: The volatility floor, as a fraction of the history's root mean square return (keeps the log finite on flat
#: prices).
VOL_FLOOR = 1e-3


@numba.njit(cache=True, nogil=True)
def hmm_features(
    close: F64, state: F64, alpha: float, min_periods: int, var_floor: float, center: F64, scale: F64, limit: float
) -> F64:
    """Standardised ``[log return, log EW volatility]`` of each close; advances ``state``.

    ``state`` holds ``[last finite close, EW mean square return, returns seen]`` (a fresh state is
    ``[nan, 0, 0]``). A row whose close is not finite and positive gets NaN features and leaves the state as it
    is; so does the first close, and the returns before ``min_periods`` of them have been seen. The EW mean
    square is ``v = (1 - alpha) * v + alpha * r**2`` (the first return starts it at ``r**2``); the volatility
    feature is ``log(sqrt(max(v, var_floor)))``. Features are returned as ``(feature - center) / scale``, the
    return then softly limited to ``limit * tanh(z / limit)``.
    """
    n = close.shape[0]
    out = np.full((n, 2), np.nan)
    last, var, count = state[0], state[1], state[2]
    for i in range(n):
        c = close[i]
        if not (np.isfinite(c) and c > 0.0):
            continue
        if not np.isfinite(last):
            last = c
            continue
        r = math.log(c / last)
        last = c
        var = r * r if count == 0 else (1.0 - alpha) * var + alpha * r * r
        count += 1
        if count >= min_periods:
            out[i, 0] = limit * math.tanh((r - center[0]) / scale[0] / limit)
            out[i, 1] = (0.5 * math.log(max(var, var_floor)) - center[1]) / scale[1]
    state[0], state[1], state[2] = last, var, count
    return out


def hmm_features_reference(
    close: F64, alpha: float, min_periods: int, var_floor: float, center: F64, scale: F64, limit: float
) -> F64:
    """Pure-Python :func:`hmm_features` from a fresh state (the reference the kernel is tested against)."""
    rows = []
    last = math.nan
    var = 0.0
    count = 0
    for c in close.tolist():
        if not (math.isfinite(c) and c > 0):
            rows.append((math.nan, math.nan))
            continue
        if not math.isfinite(last):
            last = c
            rows.append((math.nan, math.nan))
            continue
        r = math.log(c / last)
        last = c
        var = r * r if count == 0 else (1 - alpha) * var + alpha * r * r
        count += 1
        if count >= min_periods:
            vol = 0.5 * math.log(max(var, var_floor))
            z = limit * math.tanh((r - center[0]) / scale[0] / limit)
            rows.append((z, (vol - center[1]) / scale[1]))
        else:
            rows.append((math.nan, math.nan))
    return np.array(rows, dtype=np.float64).reshape(len(rows), 2)


@numba.njit(cache=True, nogil=True)
def _logsumexp(v: F64) -> float:
    m = -np.inf
    for j in range(v.shape[0]):
        m = max(m, v[j])
    if not np.isfinite(m):
        return m
    acc = 0.0
    for j in range(v.shape[0]):
        acc += math.exp(v[j] - m)
    return m + math.log(acc)


@numba.njit(cache=True, nogil=True)
def forward_filter(
    x: F64, state: F64, log_start: F64, log_trans: F64, means: F64, precisions: F64, log_norm: F64
) -> tuple[F64, F64]:
    """Forward-filtered state probabilities of each feature row, and the regime-change score; advances ``state``.

    Parameters
    ----------
    x : ndarray, shape (n, d)
        Feature rows; a row with a non-finite value gets NaN outputs and leaves the state as it is.
    state : ndarray, shape (k + 1,)
        ``[rows filtered, log P(state 0 | rows so far), ..., log P(state k-1 | rows so far)]``; a fresh state is
        all zeros.
    log_start : ndarray, shape (k,)
        Log probabilities of the states before the first row.
    log_trans : ndarray, shape (k, k)
        Log transition probabilities, from row state to column state.
    means, precisions, log_norm : ndarray, shapes (k, d), (k, d, d), (k,)
        Gaussian emissions: means, inverse covariances and ``-(d log(2 pi) + log det(cov)) / 2``.

    Returns
    -------
    probs : ndarray, shape (n, k)
        ``P(state | rows <= t)``.
    raw : ndarray, shape (n,)
        The probability of the states above the previous row's most likely one (NaN on the first row filtered).
    """
    n, d = x.shape
    k = log_start.shape[0]
    probs = np.full((n, k), np.nan)
    raw = np.full(n, np.nan)
    pred = np.empty(k)
    new = np.empty(k)
    terms = np.empty(k)
    for i in range(n):
        finite = True
        for a in range(d):
            if not np.isfinite(x[i, a]):
                finite = False
        if not finite:
            continue
        seen = state[0] > 0
        for s in range(k):
            if seen:
                for q in range(k):
                    terms[q] = state[1 + q] + log_trans[q, s]
                pred[s] = _logsumexp(terms)
            else:
                pred[s] = log_start[s]
            quad = 0.0
            for a in range(d):
                da = x[i, a] - means[s, a]
                for b in range(d):
                    quad += da * precisions[s, a, b] * (x[i, b] - means[s, b])
            new[s] = pred[s] + log_norm[s] - 0.5 * quad
        total = _logsumexp(new)
        if not np.isfinite(total):
            continue
        prev = 0
        for s in range(1, k):
            if state[1 + s] > state[1 + prev]:
                prev = s
        moved = 0.0
        for s in range(k):
            state[1 + s] = new[s] - total
            probs[i, s] = math.exp(state[1 + s])
            if s > prev:
                moved += probs[i, s]
        if seen:
            raw[i] = moved
        state[0] += 1.0
    return probs, raw


def _logsumexp_reference(values: list[float]) -> float:
    m = max(values)
    if not math.isfinite(m):
        return m
    return m + math.log(sum(math.exp(v - m) for v in values))


def forward_filter_reference(
    x: F64, log_start: F64, log_trans: F64, means: F64, precisions: F64, log_norm: F64
) -> tuple[F64, F64]:
    """Pure-Python :func:`forward_filter` from a fresh state (the reference the kernel is tested against)."""
    k = len(log_start)
    probs = np.full((len(x), k), np.nan)
    raw = np.full(len(x), np.nan)
    log_f: list[float] | None = None
    for i, row in enumerate(x.tolist()):
        if not all(math.isfinite(v) for v in row):
            continue
        new = []
        for s in range(k):
            if log_f is None:
                pred = float(log_start[s])
            else:
                pred = _logsumexp_reference([log_f[q] + float(log_trans[q, s]) for q in range(k)])
            dev = [row[a] - float(means[s, a]) for a in range(len(row))]
            quad = sum(dev[a] * float(precisions[s, a, b]) * dev[b] for a in range(len(row)) for b in range(len(row)))
            new.append(pred + float(log_norm[s]) - 0.5 * quad)
        total = _logsumexp_reference(new)
        if not math.isfinite(total):
            continue
        prev = None if log_f is None else max(range(k), key=log_f.__getitem__)  # the first of equal maxima
        log_f = [v - total for v in new]
        probs[i] = [math.exp(v) for v in log_f]
        if prev is not None:
            raw[i] = sum(probs[i, s] for s in range(prev + 1, k))
    return probs, raw


def gaussian_terms(covars: F64) -> tuple[F64, F64]:
    """Inverse covariances and log normalising constants ``-(d log(2 pi) + log det(cov)) / 2`` of Gaussians.

    Parameters
    ----------
    covars : ndarray, shape (k, d, d)
        Covariance matrices (symmetric positive definite).
    """
    d = covars.shape[-1]
    precisions = np.linalg.inv(covars)
    _, logdet = np.linalg.slogdet(covars)
    log_norm = -0.5 * (d * math.log(2.0 * math.pi) + logdet)
    return np.ascontiguousarray(precisions), np.ascontiguousarray(log_norm)


def stationary_distribution(transmat: F64) -> F64:
    """The distribution ``pi`` with ``pi @ transmat == pi`` (least squares, clipped to >= 0 and normalised)."""
    k = transmat.shape[0]
    a = np.vstack([transmat.T - np.eye(k), np.ones((1, k))])
    b = np.concatenate([np.zeros(k), [1.0]])
    pi = np.clip(np.linalg.lstsq(a, b, rcond=None)[0], 0.0, None)
    out: F64 = pi / pi.sum()
    return out


def _initial_model(x: F64, k: int, rng: np.random.Generator | None) -> Any:
    """A ``GaussianHMM`` started from ``k`` states split at quantiles of the volatility feature ``x[:, 1]``.

    The split is at equal-mass quantiles, or with ``rng`` at quantiles moved by up to a quarter of a bucket (each
    bucket keeps at least half its equal share of rows). Transitions start sticky (0.95 to stay).
    """
    from hmmlearn.hmm import GaussianHMM

    n = len(x)
    q = np.arange(1, k) / k
    if rng is not None:
        q = q + rng.uniform(-0.25 / k, 0.25 / k, size=k - 1)
    # by rank, so that ties cannot empty a bucket
    label = np.empty(n, dtype=np.int64)
    label[np.argsort(x[:, 1], kind="stable")] = np.searchsorted(np.round(q * n), np.arange(n), side="right")
    stay = 0.95
    model = GaussianHMM(n_components=k, covariance_type="full", n_iter=200, tol=1e-4, init_params="")
    model.startprob_ = np.full(k, 1.0 / k)
    model.transmat_ = np.full((k, k), (1.0 - stay) / (k - 1)) + np.eye(k) * (stay - (1.0 - stay) / (k - 1))
    model.means_ = np.array([x[label == s].mean(axis=0) for s in range(k)])
    model.covars_ = np.array([np.cov(x[label == s].T) + 1e-3 * np.eye(x.shape[1]) for s in range(k)])
    return model


@dataclass
class _HmmState:
    features: F64
    filter: F64


@register
class HmmRegime(Detector):
    """Regimes of a Gaussian hidden Markov model over returns and volatility, filtered forward (see the module doc).

    Parameters
    ----------
    n_states : int
        Hidden states, 2 to 4; ordered by mean volatility after the fit (state 0 = calmest).
    vol_halflife : float
        Half-life of the EW volatility feature, in bars.
    min_periods : int
        Returns seen before the first feature row (the volatility warms up); rows before it score NaN.
    n_init : int
        EM runs: the first from equal-mass volatility quantiles, the others from quantiles moved at random
        (``random_state``); the run of highest likelihood is kept.
    random_state : int
        Seed of the moved starting points: the same seed and history give the same model.

    Detail columns: ``p_state_0`` .. ``p_state_{n_states-1}`` (filtered probabilities) and ``regime`` (the most
    likely state, NaN where the probabilities are).
    """

    name: ClassVar[str] = "hmm_regime"
    requires: ClassVar[tuple[str, ...]] = ("close",)

    def __init__(
        self,
        n_states: int = 3,
        vol_halflife: float = 10.0,
        min_periods: int = 10,
        n_init: int = 3,
        random_state: int = 0,
    ) -> None:
        self.n_states = n_states
        self.vol_halflife = vol_halflife
        self.min_periods = min_periods
        self.n_init = n_init
        self.random_state = random_state

    # ---- parameters ----------------------------------------------------------------------------------
    def _k(self) -> int:
        k = check_positive_int("n_states", self.n_states, minimum=2)
        if k > 4:
            raise ValueError(f"n_states={self.n_states!r}: must be an integer in [2, 4]")
        return k

    def _alpha(self) -> float:
        h = check_positive_float("vol_halflife", self.vol_halflife)
        return float(1.0 - 0.5 ** (1.0 / h))

    # ---- fit -----------------------------------------------------------------------------------------
    def _fit(self, history: Observations) -> None:
        k = self._k()
        alpha = self._alpha()
        min_periods = check_positive_int("min_periods", self.min_periods)
        n_init = check_positive_int("n_init", self.n_init)
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, int | np.integer):
            raise ValueError(f"random_state={self.random_state!r}: must be an integer")
        need = MIN_ROWS_PER_STATE * k
        close = history.column("close")
        good = close[np.isfinite(close) & (close > 0)]
        returns = np.diff(np.log(good))
        if len(returns) < need + min_periods:
            raise ValueError(
                f"history: {len(history)} rows with {len(returns)} returns; the {k}-state model needs at least "
                f"{need + min_periods}"
            )
        mean_square = float(np.mean(returns**2))
        if not mean_square > 0.0:
            raise ValueError(f"history: the {len(returns)} returns are all 0 (a flat price)")
        self.var_floor_ = VOL_FLOOR**2 * mean_square
        raw = hmm_features(
            close, np.array([np.nan, 0.0, 0.0]), alpha, min_periods, self.var_floor_, np.zeros(2), np.ones(2), 1.0
        )
        raw = raw[np.isfinite(raw).all(axis=1)]
        # the return by its median and MAD (robust to jumps), the volatility by its mean and standard deviation
        median = float(np.median(returns))
        mad = 1.4826 * float(np.median(np.abs(returns - median)))
        self.center_ = np.array([median, raw[:, 1].mean()])
        self.scale_ = np.array([mad if mad > 0 else float(returns.std()), raw[:, 1].std()])
        if not (self.scale_ > 0).all():
            raise ValueError(f"history: a feature does not vary (scales {self.scale_.tolist()})")
        x = self._features(np.array([np.nan, 0.0, 0.0]), close)
        x = x[np.isfinite(x).all(axis=1)]

        rng = np.random.default_rng(int(self.random_state))
        best: Any = None
        best_score = -np.inf
        for i in range(n_init):
            model = _initial_model(x, k, rng if i else None)
            model.fit(x)
            score = float(model.score(x))
            if np.isfinite(score) and score > best_score:
                best, best_score = model, score
        if best is None:
            raise ValueError(f"history: no fit of the {k}-state model has a finite likelihood")

        # calmest first: by the mean of the volatility feature
        order = np.argsort(best.means_[:, 1], kind="stable")
        self.startprob_ = np.ascontiguousarray(best.startprob_[order])
        self.transmat_ = np.ascontiguousarray(best.transmat_[np.ix_(order, order)])
        self.means_ = np.ascontiguousarray(best.means_[order])
        self.covars_ = np.ascontiguousarray(best.covars_[order])
        self.stationary_ = stationary_distribution(self.transmat_)
        self.precisions_, self.log_norm_ = gaussian_terms(self.covars_)
        self.log_likelihood_ = best_score

    def features(self, batch: Observations) -> F64:
        """The standardised feature rows ``[return, log volatility]`` of ``batch`` from a fresh state, shape (n, 2).

        Rows warming up, and rows without a finite positive close, are NaN.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        """
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__}: call fit(history) before features")
        return self._features(np.array([np.nan, 0.0, 0.0]), batch.column("close"))

    # ---- scoring -------------------------------------------------------------------------------------
    def _initial_state(self) -> Any:
        return _HmmState(np.array([np.nan, 0.0, 0.0]), np.zeros(self._k() + 1))

    def _features(self, state: F64, close: F64) -> F64:
        return hmm_features(
            close,
            state,
            self._alpha(),
            check_positive_int("min_periods", self.min_periods),
            self.var_floor_,
            self.center_,
            self.scale_,
            RETURN_LIMIT,
        )

    def _step(self, state: Any, batch: Observations) -> Scores:
        k = self._k()
        x = self._features(state.features, batch.column("close"))
        with np.errstate(divide="ignore"):
            log_start = np.log(self.stationary_)
            log_trans = np.log(self.transmat_)
        probs, raw = forward_filter(
            x, state.filter, log_start, log_trans, self.means_, self.precisions_, self.log_norm_
        )
        detail = {f"p_state_{s}": probs[:, s].copy() for s in range(k)}
        regime = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1).astype(np.float64)
        regime[np.isnan(probs[:, 0])] = np.nan  # rows are NaN whole or not at all
        detail["regime"] = regime
        return Scores(batch.ts, raw, raw, detail)
