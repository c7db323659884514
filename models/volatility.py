"""Conditional volatility detectors: GARCH, GJR-GARCH and EGARCH on the log returns of ``close``.

:meth:`~models.base.Detector.fit` estimates the model with the ``arch`` package (constant mean, the chosen
volatility process, normal or Student's t innovations) on the history's log returns, scaled by a power of ten
(:attr:`GarchFamily.scale_`) so that the optimiser works on numbers of order one. Scoring then runs the
variance recursion forward with the fitted parameters, one row at a time, in a numba kernel with carried state
(:func:`variance_filter`, beside the pure reference :func:`variance_filter_reference`):

* ``sigma_t``, the volatility of row t forecast from the rows before it (per bar, in log-return units, not
  annualised): the forecast never sees the return it scores;
* the raw score, the standardised surprise ``|r_t - mu| / sigma_t``;
* the detail columns ``z`` (the signed surprise), ``sigma`` and ``regime``, ``sigma_t`` over the model's
  long-run level (above 1: a high-volatility regime).

The recursions are arch's, term for term, with the mean ``mu`` and the residual ``e_t = r_t - mu`` in scaled units:

* GARCH(p, q): ``s2_t = omega + sum_i alpha_i e_{t-i}^2 + sum_k beta_k s2_{t-k}``;
* GJR-GARCH(p, o, q): the same plus ``sum_j gamma_j e_{t-j}^2 [e_{t-j} < 0]``;
* EGARCH(p, o, q): ``ln s2_t = omega + sum_i alpha_i (|z_{t-i}| - sqrt(2/pi)) + sum_j gamma_j z_{t-j}
  + sum_k beta_k ln s2_{t-k}`` with ``z_t = e_t / s_t``. arch centres ``|z|`` by ``sqrt(2/pi)``, the normal
  ``E|z|``, whatever the distribution (the difference to Student's t moves only ``omega``), so the filter
  does too; the long-run level uses the ``E|z|`` of the fitted distribution.

A stream starts where the history ended (the last close and the variance forecast for the next row), so the
first new row is scored. With ``refit_every`` set, the parameters are re-estimated on the trailing ``window``
returns each time ``refit_every`` more returns have been scored since the fit; the count lives in the state, so
a refit happens at the same row whatever the split of the stream into batches.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, cast

import numba
import numpy as np
from scipy.special import gammaln

from ingest.records import F64
from models.base import Detector, NotFittedError, Observations, Scores, check_positive_int, register

#: Finite log returns a fit needs at least (and the least ``window`` of a refit).
MIN_RETURNS = 100
#: Innovation distributions a fit may use (arch's names).
DISTRIBUTIONS: tuple[str, ...] = ("normal", "t")
#: ``E|z|`` of a standard normal, the centring of ``|z|`` in arch's EGARCH recursion.
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
#: Largest log variance (arch's cap, keeps ``exp`` finite).
LN_SIGMA2_MAX = math.log(np.finfo(np.float64).max)
#: Least ``1 - persistence`` of a stationary fit (GARCH / GJR) or ``1 - sum beta`` (EGARCH); below it the
#: variance is integrated and has no long-run level.
MIN_MEAN_REVERSION = 1e-6
#: Weight decay and length of arch's backcast (the variance before the first row): an EWMA of the first squares.
_BACKCAST_DECAY, _BACKCAST_LENGTH = 0.94, 75


# ---- the recursion ---------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, error_model="numpy")
def variance_filter(
    x: F64, params: F64, lags: F64, p: int, o: int, q: int, egarch: bool, floor: float
) -> tuple[F64, F64]:
    """Standardised residuals and volatilities of the returns ``x``, advancing the recursion state ``lags``.

    Parameters
    ----------
    x : ndarray of float64
        Returns, scaled (NaN: no return, the row scores NaN and leaves ``lags`` unchanged).
    params : ndarray of float64
        ``[mu, omega, alpha_1..p, gamma_1..o, beta_1..q]`` in arch's parameterisation, scaled units.
    lags : ndarray of float64, length ``p + o + q``
        The lagged terms, most recent first: ``p`` symmetric terms (``e^2``; EGARCH ``|z| - sqrt(2/pi)``),
        ``o`` asymmetric terms (``e^2 [e < 0]``; EGARCH ``z``) and ``q`` variances (EGARCH log variances).
        See :func:`initial_lags`; updated in place.
    p, o, q : int
        Orders of the symmetric, asymmetric and variance terms.
    egarch : bool
        EGARCH (the recursion in log variance) rather than GARCH / GJR-GARCH.
    floor : float
        Least variance, > 0 (arch's lower bound, the sample variance / 1e8): a degenerate fit (an EGARCH with
        a negative ``alpha`` feeds its own surprises) cannot drive the volatility to zero.

    Returns
    -------
    z : ndarray of float64
        ``(x_t - mu) / sigma_t`` (NaN where ``x`` is NaN).
    sigma : ndarray of float64
        The volatility of each row forecast from the rows before it, scaled units.
    """
    n = x.shape[0]
    z = np.empty(n)
    sigma = np.empty(n)
    mu = params[0]
    for i in range(n):
        h = params[1]
        for j in range(p):
            h += params[2 + j] * lags[j]
        for j in range(o):
            h += params[2 + p + j] * lags[p + j]
        for j in range(q):
            h += params[2 + p + o + j] * lags[p + o + j]
        if egarch:
            h = min(h, LN_SIGMA2_MAX)
            s2 = math.exp(h)
            if s2 < floor:
                s2 = floor
                h = math.log(floor)
        else:
            h = max(h, floor)
            s2 = h
        s = math.sqrt(s2)
        sigma[i] = s
        v = x[i]
        if not np.isfinite(v):
            z[i] = np.nan
            continue
        e = v - mu
        zt = e / s
        z[i] = zt
        if egarch:
            a, g = abs(zt) - SQRT_2_OVER_PI, zt
        else:
            a = e * e
            g = a if e < 0.0 else 0.0
        for j in range(p - 1, 0, -1):
            lags[j] = lags[j - 1]
        for j in range(o - 1, 0, -1):
            lags[p + j] = lags[p + j - 1]
        for j in range(q - 1, 0, -1):
            lags[p + o + j] = lags[p + o + j - 1]
        if p:
            lags[0] = a
        if o:
            lags[p] = g
        if q:
            lags[p + o] = h
    return z, sigma


def initial_lags(backcast: float, p: int, o: int, q: int, egarch: bool) -> F64:
    """The recursion state before the first row, as arch starts it from its ``backcast``.

    ``backcast`` approximates the variance before the sample (EGARCH: its log, see :func:`backcast`). arch
    replaces the terms of rows before the sample by ``backcast`` (the asymmetric GARCH terms by half of it, the
    mass below zero); EGARCH drops them, which a zero term reproduces.
    """
    if egarch:
        return np.concatenate((np.zeros(p + o), np.full(q, backcast)))
    return np.concatenate((np.full(p, backcast), np.full(o, 0.5 * backcast), np.full(q, backcast)))


def backcast(resids: F64, egarch: bool) -> float:
    """arch's backcast: the exponentially weighted (0.94) mean square of the first 75 residuals (EGARCH: its log)."""
    tau = min(_BACKCAST_LENGTH, resids.shape[0])
    w = _BACKCAST_DECAY ** np.arange(tau)
    value = float(np.sum(resids[:tau] ** 2 * (w / w.sum())))
    return math.log(value) if egarch else value


def variance_filter_reference(
    x: F64, params: F64, p: int, o: int, q: int, egarch: bool, floor: float, start: float
) -> tuple[F64, F64]:
    """Pure-Python :func:`variance_filter` from :func:`initial_lags` of ``start`` (the tested reference).

    Written as arch writes the recursion, over the whole series: the returns that are there (NaN dropped), each
    variance from the residuals and variances ``1..p``, ``1..o``, ``1..q`` rows back, rows before the series
    standing in as ``start``.
    """
    keep = [i for i, v in enumerate(x.tolist()) if math.isfinite(v)]
    e = [float(x[i]) - float(params[0]) for i in keep]
    omega = float(params[1])
    alpha = params[2 : 2 + p].tolist()
    gamma = params[2 + p : 2 + p + o].tolist()
    beta = params[2 + p + o : 2 + p + o + q].tolist()
    h: list[float] = []
    zs: list[float] = []
    for t in range(len(e) + 1):
        ht = omega
        for j in range(p):
            if t - 1 - j < 0:
                ht += 0.0 if egarch else alpha[j] * start
            else:
                ht += alpha[j] * (abs(zs[t - 1 - j]) - SQRT_2_OVER_PI if egarch else e[t - 1 - j] ** 2)
        for j in range(o):
            if t - 1 - j < 0:
                ht += 0.0 if egarch else gamma[j] * 0.5 * start
            elif egarch:
                ht += gamma[j] * zs[t - 1 - j]
            else:
                ht += gamma[j] * e[t - 1 - j] ** 2 * (e[t - 1 - j] < 0)
        for j in range(q):
            ht += beta[j] * (start if t - 1 - j < 0 else h[t - 1 - j])
        if egarch:
            ht = min(ht, LN_SIGMA2_MAX)
            ht = math.log(floor) if math.exp(ht) < floor else ht
        else:
            ht = max(ht, floor)
        h.append(ht)
        if t < len(e):
            zs.append(e[t] / math.sqrt(math.exp(ht) if egarch else ht))
    # a NaN row is scored with the forecast of the next return that is there
    z = np.full(x.shape[0], np.nan)
    sigma = np.empty(x.shape[0])
    k = 0
    for i in range(x.shape[0]):
        sigma[i] = math.sqrt(math.exp(h[k]) if egarch else h[k])
        if k < len(keep) and keep[k] == i:
            z[i] = zs[k]
            k += 1
    return z, sigma


def mean_abs_innovation(dist: str, nu: float) -> float:
    """``E|z|`` of the unit-variance innovation: ``sqrt(2/pi)`` (normal), or of Student's t with ``nu`` > 2."""
    if dist == "normal":
        return SQRT_2_OVER_PI
    return float(math.sqrt(nu - 2.0) * math.exp(gammaln((nu - 1.0) / 2.0) - gammaln(nu / 2.0)) / math.sqrt(math.pi))


# ---- the estimate ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Estimate:
    """One fit of the model: its parameters, where the recursion starts, its variance floor and long-run
    volatility (scaled units)."""

    params: F64
    nu: float
    backcast: float
    floor: float
    level: float
    converged: bool


@dataclass
class _VolState:
    """A stream's state: the parameters in use, the recursion's lags and the trailing returns for refits."""

    params: F64
    lags: F64
    floor: float
    level: float
    last_close: float = math.nan
    until_refit: int = -1  # returns left to score before the next refit; -1: never
    ring: F64 = field(default_factory=lambda: np.zeros(0))
    head: int = 0  # next slot of ``ring`` to write
    filled: int = 0
    refits: int = 0

    def push(self, values: F64) -> None:
        """Keep ``values`` (finite scaled returns) among the trailing ``len(ring)``."""
        size = self.ring.shape[0]
        if size == 0 or len(values) == 0:
            return
        values = values[-size:]
        slots = (self.head + np.arange(len(values))) % size
        self.ring[slots] = values
        self.head = int((self.head + len(values)) % size)
        self.filled = min(self.filled + len(values), size)

    def trailing(self) -> F64:
        """The kept returns, oldest first."""
        if self.filled < self.ring.shape[0]:
            return self.ring[: self.filled].copy()
        return np.concatenate((self.ring[self.head :], self.ring[: self.head]))


class GarchFamily(Detector):
    """A GARCH-type volatility model of the log returns of ``close``, scoring the standardised surprise.

    See the module doc for the recursions and the columns. Subclasses set :attr:`vol` (arch's ``vol``) and
    the asymmetric order :meth:`_o`.

    Parameters
    ----------
    p : int
        Order of the symmetric shock terms, >= 1.
    q : int
        Order of the lagged variance terms, >= 1.
    dist : {"normal", "t"}
        Innovation distribution of the fit (Student's t: unit variance, degrees of freedom estimated).
    refit_every : int or None
        Re-estimate the parameters each time this many more returns have been scored since the fit (bars);
        None never does.
    window : int
        Trailing returns (bars) a refit estimates on, >= :data:`MIN_RETURNS`.

    Attributes
    ----------
    scale_ : float
        The power of ten the log returns are multiplied by before the fit (the parameters are in those units).
    params_ : ndarray of float64
        ``[mu, omega, alpha_1..p, gamma_1..o, beta_1..q]`` of the fit, scaled units.
    nu_ : float
        Student's t degrees of freedom (NaN for the normal).
    backcast_ : float
        arch's starting variance of the history (EGARCH: log variance), scaled units.
    level_ : float
        Long-run volatility per bar, in log-return units (NaN when the fit is not stationary).
    converged_ : bool
        Whether the optimiser reported convergence.
    """

    requires: ClassVar[tuple[str, ...]] = ("close",)
    #: arch's name of the volatility process.
    vol: ClassVar[Literal["GARCH", "EGARCH"]] = "GARCH"

    def __init__(
        self, p: int = 1, q: int = 1, dist: str = "t", refit_every: int | None = None, window: int = 1000
    ) -> None:
        self.p = p
        self.q = q
        self.dist = dist
        self.refit_every = refit_every
        self.window = window

    # ---- the parameters --------------------------------------------------------------------------------
    def _o(self) -> int:
        return 0

    @property
    def _egarch(self) -> bool:
        return self.vol == "EGARCH"

    def _orders(self) -> tuple[int, int, int]:
        return check_positive_int("p", self.p), self._o(), check_positive_int("q", self.q)

    def _check_params(self) -> None:
        self._orders()
        if not isinstance(self.dist, str) or self.dist not in DISTRIBUTIONS:
            raise ValueError(f"dist={self.dist!r}: must be one of {DISTRIBUTIONS}")
        if self.refit_every is not None:
            check_positive_int("refit_every", self.refit_every)
        check_positive_int("window", self.window, MIN_RETURNS)

    # ---- fitting ---------------------------------------------------------------------------------------
    def fit(self, history: Observations) -> Self:
        """Estimate the model on ``history`` and calibrate the surprise on it; the stream continues after it.

        Raises
        ------
        KeyError
            When ``close`` is absent.
        ValueError
            When a parameter is invalid or the history has fewer than :data:`MIN_RETURNS` finite log returns
            (naming the value).
        """
        super().fit(history)  # parameters, then the calibration over the history from arch's backcast start
        state = self.init_state()
        self._step(state, history)
        state.until_refit = -1 if self.refit_every is None else check_positive_int("refit_every", self.refit_every)
        self.start_ = state
        return self

    def _fit(self, history: Observations) -> None:
        self._check_params()
        close = history.column("close")
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.diff(np.log(close))
        r = r[np.isfinite(r)]
        if len(r) < MIN_RETURNS:
            raise ValueError(
                f"len(history)={len(history)}: {len(r)} finite log returns of close, at least {MIN_RETURNS} needed"
            )
        std = float(np.std(r))
        if not std > 0.0:
            raise ValueError(f"close: the {len(r)} log returns of the history are all {r[0]!r}")
        self.scale_ = float(10.0 ** round(-math.log10(std)))
        est = self._estimate(r * self.scale_)
        p, o, q = self._orders()
        self.params_, self.nu_, self.backcast_ = est.params, est.nu, est.backcast
        self.level_ = est.level / self.scale_
        self.converged_ = est.converged
        ring = np.zeros(int(self.window) if self.refit_every is not None else 0)
        # the state before the history, from which the base class scores it for the calibration
        lags = initial_lags(est.backcast, p, o, q, self._egarch)
        self.start_ = _VolState(est.params.copy(), lags, est.floor, est.level, ring=ring)

    def _estimate(self, y: F64) -> _Estimate:
        """Fit arch's model to the scaled returns ``y`` (deterministic, silent)."""
        from arch import arch_model

        p, o, q = self._orders()
        model = arch_model(
            y, mean="Constant", vol=self.vol, p=p, o=o, q=q, dist=cast(Literal["normal", "t"], self.dist), rescale=False
        )
        with warnings.catch_warnings():
            # arch sets a process-wide warning filter when asked to be quiet; keep it inside this block
            res = model.fit(disp="off", show_warning=False)
        values = np.asarray(res.params, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"params={values.tolist()!r}: the {self.vol} fit did not give finite parameters")
        k = 2 + p + o + q
        params = np.ascontiguousarray(values[:k])
        nu = float(values[k]) if self.dist == "t" else math.nan
        resids = y - y.mean()
        floor = float(np.var(resids)) / 1e8
        start = backcast(resids, self._egarch)
        return _Estimate(params, nu, start, floor, self._long_run(params, nu), res.convergence_flag == 0)

    def _long_run(self, params: F64, nu: float) -> float:
        """The unconditional volatility of the fitted recursion, scaled units (NaN when not stationary).

        GARCH / GJR: ``sqrt(omega / (1 - sum alpha - sum gamma / 2 - sum beta))`` (a symmetric innovation is
        below zero half the time); EGARCH: ``exp`` of half the mean log variance,
        ``(omega + sum alpha (E|z| - sqrt(2/pi))) / (1 - sum beta)``.
        """
        p, o, _ = self._orders()
        alpha, gamma, beta = params[2 : 2 + p], params[2 + p : 2 + p + o], params[2 + p + o :]
        if self._egarch:
            rest = 1.0 - float(beta.sum())
            if not rest > MIN_MEAN_REVERSION:
                return math.nan
            shift = float(alpha.sum()) * (mean_abs_innovation(self.dist, nu) - SQRT_2_OVER_PI)
            return math.exp(0.5 * (float(params[1]) + shift) / rest)
        rest = 1.0 - float(alpha.sum()) - 0.5 * float(gamma.sum()) - float(beta.sum())
        return math.sqrt(float(params[1]) / rest) if rest > MIN_MEAN_REVERSION else math.nan

    def _refit(self, state: _VolState) -> None:
        """Re-estimate on the trailing returns and restart the recursion on them.

        The state keeps its parameters when the fit fails or is not stationary (no long-run level).
        """
        y = state.trailing()
        if len(y) < MIN_RETURNS:
            return
        try:
            est = self._estimate(y)
        except (ValueError, np.linalg.LinAlgError):
            return
        if not math.isfinite(est.level):
            return
        p, o, q = self._orders()
        lags = initial_lags(est.backcast, p, o, q, self._egarch)
        variance_filter(y, est.params, lags, p, o, q, self._egarch, est.floor)
        state.params, state.lags, state.floor, state.level = est.params, lags, est.floor, est.level
        state.refits += 1

    # ---- scoring ---------------------------------------------------------------------------------------
    def _initial_state(self) -> Any:
        start = getattr(self, "start_", None)
        if start is None:
            raise NotFittedError(f"{type(self).__name__}: call fit(history) before scoring")
        return start

    def _step(self, state: Any, batch: Observations) -> Scores:
        close = batch.column("close")
        n = len(close)
        prev = np.concatenate(([state.last_close], close[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log(close / prev) * self.scale_
        x[~np.isfinite(x)] = np.nan
        if n:
            state.last_close = float(close[-1])
        p, o, q = self._orders()
        z, sigma, regime = np.empty(n), np.empty(n), np.empty(n)
        start = 0
        while start < n:
            stop = n
            if state.until_refit > 0:
                finite = np.flatnonzero(np.isfinite(x[start:]))
                if len(finite) >= state.until_refit:
                    stop = start + int(finite[state.until_refit - 1]) + 1
            seg = x[start:stop]
            z[start:stop], sigma[start:stop] = variance_filter(
                seg, state.params, state.lags, p, o, q, self._egarch, state.floor
            )
            regime[start:stop] = sigma[start:stop] / state.level
            seen = seg[np.isfinite(seg)]
            state.push(seen)
            if state.until_refit > 0:
                state.until_refit -= len(seen)
                if state.until_refit == 0:
                    self._refit(state)
                    state.until_refit = check_positive_int("refit_every", self.refit_every)
            start = stop
        raw = np.abs(z)
        return Scores(batch.ts, raw, raw, {"z": z, "sigma": sigma / self.scale_, "regime": regime})


@register
class Garch(GarchFamily):
    """GARCH(p, q) volatility surprise of the close (see :class:`GarchFamily` for the parameters)."""

    name: ClassVar[str] = "garch"
    vol: ClassVar[Literal["GARCH", "EGARCH"]] = "GARCH"


class _Asymmetric(GarchFamily):
    """A GARCH-family model with ``o`` asymmetric terms (at least :attr:`min_o`)."""

    #: The fewest asymmetric terms the model takes.
    min_o: ClassVar[int] = 0

    def __init__(
        self,
        p: int = 1,
        o: int = 1,
        q: int = 1,
        dist: str = "t",
        refit_every: int | None = None,
        window: int = 1000,
    ) -> None:
        super().__init__(p=p, q=q, dist=dist, refit_every=refit_every, window=window)
        self.o = o

    def _o(self) -> int:
        return check_positive_int("o", self.o, minimum=self.min_o)


@register
class GjrGarch(_Asymmetric):
    """GJR-GARCH(p, o, q): GARCH with a larger response to falls (``o`` asymmetric terms, >= 1).

    See :class:`GarchFamily` for the other parameters.
    """

    name: ClassVar[str] = "gjr_garch"
    vol: ClassVar[Literal["GARCH", "EGARCH"]] = "GARCH"
    min_o: ClassVar[int] = 1


@register
class Egarch(_Asymmetric):
    """EGARCH(p, o, q): the log variance responds to the size and (``o`` terms, >= 0) the sign of the shocks.

    See :class:`GarchFamily` for the other parameters.
    """

    name: ClassVar[str] = "egarch"
    vol: ClassVar[Literal["GARCH", "EGARCH"]] = "EGARCH"
    min_o: ClassVar[int] = 0
