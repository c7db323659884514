"""Change points in the stream of one-bar log returns: Bayesian online change-point detection, and CUSUM.

:class:`Bocpd` is the run-length filter of Adams & MacKay (2007, "Bayesian online changepoint detection"): the
returns come in segments, each i.i.d. normal with its own unknown mean and variance under a Normal-Gamma prior;
a segment ends at each bar with the constant hazard ``1 / hazard_lambda``. After each bar the filter holds the
posterior of the run length (bars since the segment began), truncated to ``max_run`` so that a step costs
O(``max_run``): runs longer than ``max_run`` share the top bin, summarised by their last ``max_run`` bars.
Here run length 0 at bar t means that the return of bar t is the first of a new segment (so the posterior of a
change at t is informative, unlike the constant hazard a change *after* t gets).

The raw score is the posterior probability that the current segment began within the last ``window`` bars,
``P(run at t < window | returns <= t)``, in [0, 1]: near 0 while a long calm segment holds, near 1 from the bar
the evidence of a new segment arrives until the new segment is ``window`` bars old. It is the probability of a
change point at or shortly before t, and not of a change at exactly t, because a change in variance shows only
over a few bars: the probability of a change at exactly t (``p_change``) is one of the detail columns, with the
expected run length (``run_length``) and the most probable one (``map_run``), in bars.

:class:`Cusum` is a two-sided CUSUM (Page 1954) on returns standardised by an EW volatility of the returns
before them: alarms at a sustained shift of the mean, and restarts after each alarm.

Each detector is one numba kernel with carried state, beside a pure-Python reference it is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numba
import numpy as np

from ingest.records import F64
from models.base import Detector, Observations, Scores, check_positive_float, check_positive_int, register

#: Returns a fit needs at least.
MIN_HISTORY_RETURNS = 30
#: Normal-Gamma prior strengths: pseudo-observations of the mean (kappa0) and shape of the precision (alpha0).
#: alpha0 = 1 keeps the prior on the variance wide (its mean is infinite), so a few bars can move it.
KAPPA0 = 1.0
ALPHA0 = 1.0

# rows of the BOCPD state: log P(run), and the Normal-Gamma posterior of each run
_LOGP, _MU, _KAPPA, _ALPHA, _BETA = 0, 1, 2, 3, 4
# the scalars of the BOCPD state: last finite close, returns seen
_LAST, _SEEN = 0, 1


@numba.njit(cache=True, nogil=True)
def _student_logpdf(x: float, mu: float, kappa: float, alpha: float, beta: float) -> float:
    """Log density of ``x`` under the Normal-Gamma posterior predictive (a Student t with 2 alpha dof)."""
    scale2 = 2.0 * beta * (kappa + 1.0) / kappa  # dof * scale**2
    return (
        math.lgamma(alpha + 0.5)
        - math.lgamma(alpha)
        - 0.5 * math.log(math.pi * scale2)
        - (alpha + 0.5) * math.log1p((x - mu) * (x - mu) / scale2)
    )


@numba.njit(cache=True, nogil=True)
def bocpd_filter(close: F64, runs: F64, scalars: F64, hazard: float, prior: F64, window: int) -> F64:
    """The run-length filter over the returns of ``close``; advances the state ``(runs, scalars)``.

    Parameters
    ----------
    close : ndarray, shape (n,)
        Closes; a row whose close is not finite and positive is skipped (NaN outputs, state unchanged), and
        returns are taken from the last finite close.
    runs : ndarray, shape (5, max_run + 1)
        Per run length r: ``log P(run = r | returns so far)``, and the posterior ``mu, kappa, alpha, beta``
        of the segment's mean and precision given its returns (a fresh state: any values).
    scalars : ndarray, shape (2,)
        ``[last finite close, returns seen]`` (a fresh state: ``[nan, 0]``).
    hazard : float
        The probability that a segment ends at a bar, in (0, 1).
    prior : ndarray, shape (4,)
        The Normal-Gamma prior ``mu0, kappa0, alpha0, beta0`` of a new segment.
    window : int
        Bars of the raw score: ``P(run < window)``, NaN until ``window`` returns have been seen (before that every
        run is shorter).

    Returns
    -------
    ndarray, shape (n, 4)
        Per row: ``P(run < window)`` (the raw score), ``P(run = 0)``, the expected run length and the most
        probable run length (bars).
    """
    n = close.shape[0]
    top = runs.shape[1] - 1
    out = np.full((n, 4), np.nan)
    log_h = math.log(hazard)
    log_stay = math.log1p(-hazard)
    grown = np.empty(top + 1)
    for i in range(n):
        c = close[i]
        if not (np.isfinite(c) and c > 0.0):
            continue
        last = scalars[_LAST]
        scalars[_LAST] = c
        if not np.isfinite(last):
            continue
        x = math.log(c / last)
        seen = int(scalars[_SEEN])
        active = min(seen, top + 1)  # bins 0 .. active - 1 hold mass
        # joint log probabilities of the runs after the bar (the previous posterior sums to 1)
        new_active = min(active + 1, top + 1)
        for r in range(new_active):
            grown[r] = -np.inf
        grown[0] = log_h + _student_logpdf(x, prior[0], prior[1], prior[2], prior[3])
        for r in range(active):
            lp = (
                runs[_LOGP, r]
                + log_stay
                + _student_logpdf(x, runs[_MU, r], runs[_KAPPA, r], runs[_ALPHA, r], runs[_BETA, r])
            )
            dest = min(r + 1, top)
            a, b = grown[dest], lp
            if a < b:
                a, b = b, a
            grown[dest] = a if b == -np.inf else a + math.log1p(math.exp(b - a))
        m = -np.inf
        for r in range(new_active):
            m = max(m, grown[r])
        total = 0.0
        for r in range(new_active):
            total += math.exp(grown[r] - m)
        log_total = m + math.log(total)
        # the posterior of each run given the bar: the segment's statistics grow by the new return
        for r in range(new_active - 1, 0, -1):
            mu, kappa, alpha, beta = runs[_MU, r - 1], runs[_KAPPA, r - 1], runs[_ALPHA, r - 1], runs[_BETA, r - 1]
            runs[_BETA, r] = beta + kappa * (x - mu) * (x - mu) / (2.0 * (kappa + 1.0))
            runs[_MU, r] = (kappa * mu + x) / (kappa + 1.0)
            runs[_KAPPA, r] = kappa + 1.0
            runs[_ALPHA, r] = alpha + 0.5
        mu, kappa, alpha, beta = prior[0], prior[1], prior[2], prior[3]
        runs[_BETA, 0] = beta + kappa * (x - mu) * (x - mu) / (2.0 * (kappa + 1.0))
        runs[_MU, 0] = (kappa * mu + x) / (kappa + 1.0)
        runs[_KAPPA, 0] = kappa + 1.0
        runs[_ALPHA, 0] = alpha + 0.5
        expected = 0.0
        recent = 0.0
        best = 0
        for r in range(new_active):
            runs[_LOGP, r] = grown[r] - log_total
            p = math.exp(runs[_LOGP, r])
            expected += p * r
            if r < window:
                recent += p
            if runs[_LOGP, r] > runs[_LOGP, best]:
                best = r
        if seen + 1 > window:
            out[i, 0] = recent
        out[i, 1] = math.exp(runs[_LOGP, 0])
        out[i, 2] = expected
        out[i, 3] = best
        scalars[_SEEN] = seen + 1
    return out


def _student_logpdf_reference(x: float, mu: float, kappa: float, alpha: float, beta: float) -> float:
    scale2 = 2 * beta * (kappa + 1) / kappa
    return (
        math.lgamma(alpha + 0.5)
        - math.lgamma(alpha)
        - 0.5 * math.log(math.pi * scale2)
        - (alpha + 0.5) * math.log1p((x - mu) ** 2 / scale2)
    )


def _grow(stats: tuple[float, float, float, float], x: float) -> tuple[float, float, float, float]:
    mu, kappa, alpha, beta = stats
    return (kappa * mu + x) / (kappa + 1), kappa + 1, alpha + 0.5, beta + kappa * (x - mu) ** 2 / (2 * (kappa + 1))


def bocpd_reference(close: F64, max_run: int, hazard: float, prior: F64, window: int) -> F64:
    """Pure-Python :func:`bocpd_filter` from a fresh state (the reference the kernel is tested against).

    The run-length posterior is kept as probabilities (not logs) and renormalised at each bar.
    """
    prior_stats = (float(prior[0]), float(prior[1]), float(prior[2]), float(prior[3]))
    out = np.full((len(close), 4), np.nan)
    probs: list[float] = []
    stats: list[tuple[float, float, float, float]] = []
    last = math.nan
    seen = 0
    for i, c in enumerate(close.tolist()):
        if not (math.isfinite(c) and c > 0):
            continue
        prev, last = last, c
        if not math.isfinite(prev):
            continue
        x = math.log(c / prev)
        new = [hazard * math.exp(_student_logpdf_reference(x, *prior_stats))]
        for r, (p, s) in enumerate(zip(probs, stats, strict=True)):
            joint = p * (1 - hazard) * math.exp(_student_logpdf_reference(x, *s))
            if r + 1 <= max_run:
                new.append(joint)
            else:
                new[max_run] += joint
        total = sum(new)
        probs = [p / total for p in new]
        stats = [_grow(prior_stats, x), *[_grow(s, x) for s in stats][:max_run]]
        seen += 1
        recent = sum(probs[:window]) if seen > window else math.nan
        expected = sum(r * p for r, p in enumerate(probs))
        out[i] = [recent, probs[0], expected, probs.index(max(probs))]
    return out


@dataclass
class _BocpdState:
    runs: F64
    scalars: F64


@register
class Bocpd(Detector):
    """Bayesian online change-point detection on one-bar log returns (see the module doc).

    Parameters
    ----------
    hazard_lambda : float
        Expected segment length, in bars (> 1): a segment ends at each bar with probability ``1 / hazard_lambda``.
    max_run : int
        Run lengths kept, in bars (>= 1); a step costs O(``max_run``).
    window : int
        Bars of the raw score ``P(run < window)`` (1 to ``max_run``): a change is scored for ``window`` bars
        after it, and a change detected later than that is missed; the first ``window`` returns of a stream score
        NaN.

    The prior of a new segment is fitted on the history: its mean return is the history's median return and its
    expected variance (``beta0 / alpha0``) the history's mean square deviation, so the detector works on any price
    scale and bar length.
    """

    name: ClassVar[str] = "bocpd"
    requires: ClassVar[tuple[str, ...]] = ("close",)

    def __init__(self, hazard_lambda: float = 250.0, max_run: int = 500, window: int = 10) -> None:
        self.hazard_lambda = hazard_lambda
        self.max_run = max_run
        self.window = window

    def _hazard(self) -> float:
        lam = check_positive_float("hazard_lambda", self.hazard_lambda)
        if lam <= 1.0:
            raise ValueError(f"hazard_lambda={self.hazard_lambda!r}: must be a finite number > 1")
        return 1.0 / lam

    def _window(self) -> int:
        window = check_positive_int("window", self.window)
        if window > check_positive_int("max_run", self.max_run):
            raise ValueError(f"window={self.window!r}: must be at most max_run={self.max_run!r}")
        return window

    def _fit(self, history: Observations) -> None:
        self._hazard()
        self._window()
        returns = _history_returns(history)
        center = float(np.median(returns))
        variance = float(np.mean((returns - center) ** 2))
        if not variance > 0.0:
            raise ValueError(f"history: the {len(returns)} returns do not vary (a flat price)")
        self.prior_ = np.array([center, KAPPA0, ALPHA0, ALPHA0 * variance])

    def _initial_state(self) -> Any:
        size = check_positive_int("max_run", self.max_run) + 1
        return _BocpdState(np.zeros((5, size)), np.array([np.nan, 0.0]))

    def _step(self, state: Any, batch: Observations) -> Scores:
        out = bocpd_filter(
            batch.column("close"), state.runs, state.scalars, self._hazard(), self.prior_, self._window()
        )
        raw = out[:, 0].copy()
        detail = {"p_change": out[:, 1].copy(), "run_length": out[:, 2].copy(), "map_run": out[:, 3].copy()}
        return Scores(batch.ts, raw, raw, detail)


def _history_returns(history: Observations) -> F64:
    """The one-bar log returns between the finite, positive closes of ``history``.

    Raises
    ------
    ValueError
        When there are fewer than :data:`MIN_HISTORY_RETURNS` (naming the length).
    """
    close = history.column("close")
    good = close[np.isfinite(close) & (close > 0)]
    returns: F64 = np.diff(np.log(good)) if len(good) else np.zeros(0)
    if len(returns) < MIN_HISTORY_RETURNS:
        raise ValueError(
            f"history: {len(history)} rows with {len(returns)} returns; at least {MIN_HISTORY_RETURNS} needed"
        )
    return returns


@numba.njit(cache=True, nogil=True)
def cusum_filter(close: F64, state: F64, mean: float, var0: float, alpha: float, k: float, h: float) -> F64:
    """Two-sided CUSUM of standardised returns with restarts; advances ``state``.

    The return of each bar is standardised as ``z = (r - mean) / sqrt(v)``, ``v`` the EW mean square deviation
    of the returns before it (``var0`` until the first), then ``up = max(0, up + z - k)`` and
    ``down = max(0, down - z - k)``; an alarm is ``max(up, down) >= h``, after which both restart at 0.

    Parameters
    ----------
    close : ndarray, shape (n,)
        Closes; a row whose close is not finite and positive is skipped (NaN outputs, state unchanged).
    state : ndarray, shape (4,)
        ``[last finite close, v, up, down]`` (a fresh state: ``[nan, nan, 0, 0]``).

    Returns
    -------
    ndarray, shape (n, 5)
        Per row: ``max(up, down)`` before any restart (the raw score, in standard deviations), ``up``,
        ``down``, the alarm (1.0 or 0.0) and ``z``.
    """
    n = close.shape[0]
    out = np.full((n, 5), np.nan)
    for i in range(n):
        c = close[i]
        if not (np.isfinite(c) and c > 0.0):
            continue
        last = state[0]
        state[0] = c
        if not np.isfinite(last):
            continue
        d = math.log(c / last) - mean
        v = var0 if np.isnan(state[1]) else state[1]
        z = d / math.sqrt(v)
        up = max(0.0, state[2] + z - k)
        down = max(0.0, state[3] - z - k)
        stat = max(up, down)
        alarm = stat >= h
        out[i, 0] = stat
        out[i, 1] = up
        out[i, 2] = down
        out[i, 3] = 1.0 if alarm else 0.0
        out[i, 4] = z
        state[1] = (1.0 - alpha) * v + alpha * d * d
        state[2] = 0.0 if alarm else up
        state[3] = 0.0 if alarm else down
    return out


def cusum_reference(close: F64, mean: float, var0: float, alpha: float, k: float, h: float) -> F64:
    """Pure-Python :func:`cusum_filter` from a fresh state (the reference the kernel is tested against)."""
    out = np.full((len(close), 5), np.nan)
    last = math.nan
    v = var0
    up = down = 0.0
    for i, c in enumerate(close.tolist()):
        if not (math.isfinite(c) and c > 0):
            continue
        prev, last = last, c
        if not math.isfinite(prev):
            continue
        d = math.log(c / prev) - mean
        z = d / math.sqrt(v)
        up, down = max(0.0, up + z - k), max(0.0, down - z - k)
        alarm = max(up, down) >= h
        out[i] = [max(up, down), up, down, float(alarm), z]
        v = (1 - alpha) * v + alpha * d * d
        if alarm:
            up = down = 0.0
    return out


@register
class Cusum(Detector):
    """Two-sided CUSUM on one-bar log returns standardised by their EW volatility, restarting after each alarm.

    Parameters
    ----------
    k : float
        Drift (allowance), in standard deviations: half the mean shift to detect quickly (>= 0).
    h : float
        Alarm threshold, in standard deviations (> 0). With ``k = 0.5`` and ``h = 8`` the average run between
        false alarms on i.i.d. normal returns is about 9,500 bars per side; a one-sigma shift is found in about 16.
    halflife : float
        Half-life of the EW volatility that standardises the returns, in bars.

    The fit takes the in-control mean (the history's median return) and the starting volatility (the history's
    root mean square deviation) from the history. Raw score: ``max(up, down)``, in standard deviations; detail
    columns ``up``, ``down``, ``alarm`` (1.0 at an alarm) and ``z`` (the standardised return).
    """

    name: ClassVar[str] = "cusum"
    requires: ClassVar[tuple[str, ...]] = ("close",)

    def __init__(self, k: float = 0.5, h: float = 8.0, halflife: float = 100.0) -> None:
        self.k = k
        self.h = h
        self.halflife = halflife

    def _params(self) -> tuple[float, float, float]:
        if isinstance(self.k, bool) or not isinstance(self.k, int | float | np.floating) or not 0 <= self.k < np.inf:
            raise ValueError(f"k={self.k!r}: must be a finite number >= 0")
        h = check_positive_float("h", self.h)
        halflife = check_positive_float("halflife", self.halflife)
        return float(self.k), h, float(1.0 - 0.5 ** (1.0 / halflife))

    def _fit(self, history: Observations) -> None:
        self._params()
        returns = _history_returns(history)
        self.mean_ = float(np.median(returns))
        self.var0_ = float(np.mean((returns - self.mean_) ** 2))
        if not self.var0_ > 0.0:
            raise ValueError(f"history: the {len(returns)} returns do not vary (a flat price)")

    def _initial_state(self) -> Any:
        return np.array([np.nan, np.nan, 0.0, 0.0])

    def _step(self, state: Any, batch: Observations) -> Scores:
        k, h, alpha = self._params()
        out = cusum_filter(batch.column("close"), state, self.mean_, self.var0_, alpha, k, h)
        raw = out[:, 0].copy()
        detail = {"up": out[:, 1].copy(), "down": out[:, 2].copy(), "alarm": out[:, 3].copy(), "z": out[:, 4].copy()}
        return Scores(batch.ts, raw, raw, detail)
