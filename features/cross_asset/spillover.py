"""The Diebold-Yilmaz spillover index from a rolling VAR(1) with a generalised variance decomposition.

Over the last ``window`` rows of the universe's log returns (rows where every symbol has a return), fit a
VAR(1) with a constant by least squares, take its moving-average coefficients ``Psi_h = A^h`` and residual
covariance ``Sigma``, and decompose each symbol's ``horizon``-step forecast-error variance into the shares due
to shocks of every symbol (Pesaran and Shin's generalised decomposition, so the order of the symbols does not
matter; rows normalised to sum to 1, Diebold and Yilmaz 2012). From the shares ``theta[i, j]`` (of i's variance
due to j):

- ``spillover_<w>``: the total index, ``100 * sum_{i != j} theta[i, j] / N``, in [0, 100];
- ``spill_to_<w>_<A>``: what A transmits to the others, ``100 * sum_{i != A} theta[i, A] / N``;
- ``spill_from_<w>_<A>``: what A receives, ``100 * sum_{j != A} theta[A, j] / N``.

The fit is redone every ``every`` rows, at absolute row counts that are multiples of ``every``, and holds in
between, so a stream split into any batches gives the values of one call, bit for bit. NaN until the window
holds ``N + 10`` complete rows at a refit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.base import check_window
from features.cross_asset.engine import CrossAssetFrame
from ingest.records import F64, I64


@dataclass
class SpilloverState:
    """Last close per symbol, the last ``window`` return rows (ring), rows seen, and the current values."""

    last_close: F64
    returns: F64
    rows: int
    values: F64


def generalised_fevd(a: F64, sigma: F64, horizon: int) -> F64:
    """Row-normalised generalised forecast-error variance decomposition of a VAR(1) (Pesaran-Shin).

    Parameters
    ----------
    a : (N, N) array
        The VAR(1) coefficient matrix (``y_t = c + a y_{t-1} + e_t``).
    sigma : (N, N) array
        Covariance of the residuals ``e_t``.
    horizon : int
        Forecast horizon H (steps ``h = 0 .. H-1``).

    Returns
    -------
    (N, N) array
        ``theta[i, j]``: the share of i's H-step forecast-error variance due to shocks to j; rows sum to 1.
    """
    n = a.shape[0]
    psi = np.eye(n)
    num = np.zeros((n, n))
    den = np.zeros(n)
    diag = np.diag(sigma)
    for _ in range(horizon):
        p = psi @ sigma
        num += p * p / diag[None, :]
        den += np.einsum("ij,ij->i", p, psi)  # diag(psi sigma psi')
        psi = a @ psi
    theta = num / den[:, None]
    out: F64 = theta / theta.sum(axis=1, keepdims=True)
    return out


class SpilloverIndex:
    """Rolling Diebold-Yilmaz spillover (total, to and from each symbol) over a universe's aligned closes.

    Parameters
    ----------
    symbols : sequence of str
        The universe, in the column order of ``close``.
    window : int
        Rows of returns the VAR is fitted on.
    horizon : int
        Forecast horizon of the variance decomposition, in rows.
    every : int
        Refit every this many rows (absolute row counts).

    Examples
    --------
    >>> idx = SpilloverIndex(["A", "B"], window=60, every=10)
    >>> idx.columns[:3]
    ('spillover_60', 'spill_to_60_A', 'spill_to_60_B')
    """

    def __init__(self, symbols: Sequence[str], window: int = 200, horizon: int = 10, every: int = 10) -> None:
        self.symbols = tuple(symbols)
        if len(self.symbols) < 2 or len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols={self.symbols!r}: need at least two distinct symbols")
        self.window = check_window("window", window, len(self.symbols) + 10)
        self.horizon = check_window("horizon", horizon)
        self.every = check_window("every", every)
        w = self.window
        self.columns = (
            f"spillover_{w}",
            *(f"spill_to_{w}_{s}" for s in self.symbols),
            *(f"spill_from_{w}_{s}" for s in self.symbols),
        )

    def init_state(self) -> SpilloverState:
        """A fresh state."""
        n = len(self.symbols)
        return SpilloverState(np.full(n, np.nan), np.full((self.window, n), np.nan), 0, np.full(2 * n + 1, np.nan))

    def step(self, state: SpilloverState, ts: I64, close: F64) -> tuple[CrossAssetFrame, SpilloverState]:
        """Values for new rows of aligned closes (``(rows, N)``, NaN where a symbol had no bar)."""
        close = np.asarray(close, dtype=np.float64)
        if close.ndim != 2 or close.shape[1] != len(self.symbols) or close.shape[0] != len(ts):
            raise ValueError(f"close.shape={close.shape!r}: need ({len(ts)}, {len(self.symbols)})")
        out = np.empty((len(ts), len(self.columns)))
        for i in range(len(ts)):
            row = close[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                ret = np.log(row / state.last_close)
            state.last_close = np.where(np.isnan(row), state.last_close, row)
            state.returns[state.rows % self.window] = ret
            state.rows += 1
            if state.rows % self.every == 0:
                state.values = self._fit(state)
            out[i] = state.values
        return CrossAssetFrame(
            ts=np.asarray(ts, dtype=np.int64).copy(), values=dict(zip(self.columns, out.T, strict=True))
        ), state

    def batch(self, ts: I64, close: F64) -> CrossAssetFrame:
        """All rows in one step from a fresh state."""
        frame, _ = self.step(self.init_state(), ts, close)
        return frame

    def _fit(self, state: SpilloverState) -> F64:
        n = len(self.symbols)
        nan = np.full(2 * n + 1, np.nan)
        if state.rows < self.window:
            return nan
        start = state.rows % self.window
        window = np.concatenate([state.returns[start:], state.returns[:start]])  # oldest first
        y, x = window[1:], window[:-1]
        complete = np.isfinite(y).all(axis=1) & np.isfinite(x).all(axis=1)
        if complete.sum() < n + 10:
            return nan
        y, x = y[complete], x[complete]
        design = np.column_stack([np.ones(len(x)), x])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        sigma = resid.T @ resid / (len(y) - n - 1)
        if not (np.diag(sigma) > 0).all():
            return nan
        theta = generalised_fevd(coef[1:].T, sigma, self.horizon)
        off = theta - np.diag(np.diag(theta))
        total = 100.0 * off.sum() / n
        to = 100.0 * off.sum(axis=0) / n
        frm = 100.0 * off.sum(axis=1) / n
        return np.concatenate([[total], to, frm])

    def frame(self, ts: I64, close: F64) -> pd.DataFrame:
        """The batch values as a DataFrame indexed by UTC time."""
        return self.batch(ts, close).to_frame()
