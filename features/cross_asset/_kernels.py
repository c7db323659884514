"""Sequential numba kernels of the cross-asset engine: one pass over aligned rows with carried state.

Everything is expressed over a list of *pairs* ``(a, b, lag)``: the series ``x_t = r_a[t - lag]`` and
``y_t = r_b[t]`` of one-row log returns. Contemporaneous correlations are the pairs with ``lag = 0`` (and
``a < b``), a symbol's own variance is the pair ``(a, a, 0)``, and a lead-lag correlation is a pair with
``lag >= 1``. For every pair the state holds the window sums over the rows where both ``x`` and ``y`` are finite
(pairwise-complete observations): count, sums, sums of squares, sum of products, and the number of non-zero
values of each side (a window whose finite values are all zero is flat: its correlation is NaN, not the ratio of
two rounding residues).

The returns of the last ``window + max_lag + 1`` rows sit in a ring buffer indexed by the absolute row number,
so the row leaving the window is subtracted exactly as it was added. Every time the absolute row count is a
multiple of ``window`` the sums are recomputed from the buffer, so rounding error never builds up beyond one
window and the recomputation falls on the same rows whatever the batching: streaming equals batch bit for bit.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ingest.records import F64, I64

# pair window sums, per pair p: psum[p] = (sx, sy, qx, qy, sxy), pcnt[p] = (n, non-zero x, non-zero y)
# exponentially weighted moments, per lag-0 pair e: ew[e] = (mean x, mean y, var x, var y, cov), ewn[e] = count
# ist: (rows seen, last ts)


@numba.njit(cache=True, nogil=True, inline="always")
def _window_moments(psum: F64, pcnt: I64, p: int, minp: int) -> tuple[float, float, float]:  # pragma: no cover
    """Centred sums ``(cxy, mxx, myy)`` of pair ``p``; NaN when the window has fewer than ``minp`` rows.

    ``mxx`` (``myy``) is 0 when the window's finite ``x`` (``y``) values are all zero and NaN when rounding
    left it at or below zero otherwise (a constant non-zero series).
    """
    n = pcnt[p, 0]
    if n < minp or n < 2:
        return np.nan, np.nan, np.nan
    inv = 1.0 / n
    sx = psum[p, 0]
    sy = psum[p, 1]
    mxx = psum[p, 2] - sx * sx * inv
    myy = psum[p, 3] - sy * sy * inv
    cxy = psum[p, 4] - sx * sy * inv
    if pcnt[p, 1] == 0:
        mxx = 0.0
        cxy = 0.0
    elif not mxx > 0.0:
        mxx = np.nan
    if pcnt[p, 2] == 0:
        myy = 0.0
        cxy = 0.0
    elif not myy > 0.0:
        myy = np.nan
    return cxy, mxx, myy


@numba.njit(cache=True, nogil=True, inline="always")
def _corr(cxy: float, mxx: float, myy: float) -> float:  # pragma: no cover
    """``cxy / sqrt(mxx myy)`` clipped to [-1, 1]; NaN when either side has no variance."""
    if not (mxx > 0.0 and myy > 0.0):
        return np.nan
    c: float = cxy / math.sqrt(mxx * myy)
    if c > 1.0:
        return 1.0
    if c < -1.0:
        return -1.0
    return c


@numba.njit(cache=True, nogil=True, inline="always")
def _ew_corr(ew: F64, ewn: I64, e: int, minp: int) -> float:  # pragma: no cover
    if ewn[e] < minp or ewn[e] < 2:
        return np.nan
    return _corr(ew[e, 4], ew[e, 2], ew[e, 3])


@numba.njit(cache=True, nogil=True, inline="always")
def _pair_add(psum: F64, pcnt: I64, p: int, x: float, y: float, sign: float) -> None:  # pragma: no cover
    psum[p, 0] += sign * x
    psum[p, 1] += sign * y
    psum[p, 2] += sign * (x * x)
    psum[p, 3] += sign * (y * y)
    psum[p, 4] += sign * (x * y)
    step = 1 if sign > 0.0 else -1
    pcnt[p, 0] += step
    # branch-free: whether a return is exactly zero is not predictable
    pcnt[p, 1] += step * np.int64(x != 0.0)
    pcnt[p, 2] += step * np.int64(y != 0.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _ew_add(ew: F64, ewn: I64, e: int, x: float, y: float, alpha: float) -> None:  # pragma: no cover
    """One joint observation into pair ``e``'s EW moments: the recursion of pandas ``ewm(adjust=False)``."""
    if ewn[e] == 0:
        ew[e, 0] = x
        ew[e, 1] = y
        ew[e, 2] = 0.0
        ew[e, 3] = 0.0
        ew[e, 4] = 0.0
    else:
        keep = 1.0 - alpha
        mx0 = ew[e, 0]
        my0 = ew[e, 1]
        # an unchanged value leaves the mean exactly as it is, so a constant series keeps zero variance
        mx = mx0 if x == mx0 else keep * mx0 + alpha * x
        my = my0 if y == my0 else keep * my0 + alpha * y
        dx0 = mx0 - mx
        dy0 = my0 - my
        dx = x - mx
        dy = y - my
        ew[e, 2] = keep * (ew[e, 2] + dx0 * dx0) + alpha * (dx * dx)
        ew[e, 3] = keep * (ew[e, 3] + dy0 * dy0) + alpha * (dy * dy)
        ew[e, 4] = keep * (ew[e, 4] + dx0 * dy0) + alpha * (dx * dy)
        ew[e, 0] = mx
        ew[e, 1] = my
    ewn[e] += 1


@numba.njit(cache=True, nogil=True)
def cross_asset_rows(  # pragma: no cover
    ts: I64,
    close: F64,
    pa: I64,
    pb: I64,
    plag: I64,
    window: int,
    minp: int,
    alpha: float,
    ew_minp: int,
    last_close: F64,
    buf: F64,
    ist: I64,
    psum: F64,
    pcnt: I64,
    ew: F64,
    ewn: I64,
    corr_pair: I64,
    corr_col: I64,
    ew_pair: I64,
    ew_col: I64,
    beta_pair: I64,
    beta_side: I64,
    beta_col: I64,
    vix: int,
    vix_cols: I64,
    vix_thresholds: F64,
    out: F64,
) -> None:
    """Advance the state over the rows of ``close`` (``(n, N)``, NaN = no bar) and write ``out`` (``(C, n)``).

    Output columns: ``out[corr_col[k]]`` is the windowed correlation of pair ``corr_pair[k]``;
    ``out[ew_col[k]]`` the exponentially weighted correlation of lag-0 pair ``ew_pair[k]``; ``out[beta_col[k]]``
    ``cov / var(market)`` of pair ``beta_pair[k]`` whose market side is ``x`` (``beta_side = 0``) or ``y`` (1);
    when ``vix >= 0``, ``out[vix_cols]`` are the VIX close, its log change and its regime (the number of
    ``vix_thresholds`` at or below the close).
    """
    n_rows, n_sym = close.shape
    n_pairs = pa.shape[0]
    n_ew = ew.shape[0]
    cap = buf.shape[0]
    w = window
    ret = np.empty(n_sym)
    pc = np.empty(n_pairs)
    pcov = np.empty(n_pairs)
    pvx = np.empty(n_pairs)
    pvy = np.empty(n_pairs)
    pe = np.empty(n_ew)
    # values of every pair from the state; below, a pair's values are recomputed only on rows that change its
    # sums (rows where a symbol has no bar leave most pairs as they were)
    for p in range(n_pairs):
        cxy, mxx, myy = _window_moments(psum, pcnt, p, minp)
        pcov[p] = cxy
        pvx[p] = mxx
        pvy[p] = myy
        pc[p] = _corr(cxy, mxx, myy)
    for e in range(n_ew):
        pe[e] = _ew_corr(ew, ewn, e, ew_minp)
    for i in range(n_rows):
        t = ist[0]
        slot = t % cap
        # one-row log returns against each symbol's last available close
        for j in range(n_sym):
            c = close[i, j]
            if np.isnan(c):
                ret[j] = np.nan
            else:
                prev = last_close[j]
                ret[j] = math.log(c / prev) if not np.isnan(prev) else np.nan
                last_close[j] = c
            buf[slot, j] = ret[j]
        ist[0] = t + 1
        ist[1] = ts[i]
        # once the window has turned over (absolute row count a multiple of it), every pair's sums are recomputed
        # from the buffer; otherwise the row leaving the window is removed and the new one added
        recompute = (t + 1) % w == 0
        out_slot = (t - w + cap) % cap
        for p in range(n_pairs):
            a = pa[p]
            b = pb[p]
            lag = plag[p]
            changed = recompute
            if recompute:
                psum[p, :] = 0.0
                pcnt[p, :] = 0
                for s in range(t - w + 1, t + 1):
                    s_slot = s % cap
                    x_slot = s_slot - lag
                    if x_slot < 0:
                        x_slot += cap
                    x = buf[x_slot, a]
                    y = buf[s_slot, b]
                    if not (np.isnan(x) or np.isnan(y)):
                        _pair_add(psum, pcnt, p, x, y, 1.0)
            else:
                if t >= w:
                    x_slot = out_slot - lag
                    if x_slot < 0:
                        x_slot += cap
                    x = buf[x_slot, a]
                    y = buf[out_slot, b]
                    if not (np.isnan(x) or np.isnan(y)):
                        _pair_add(psum, pcnt, p, x, y, -1.0)
                        changed = True
                x_slot = slot - lag
                if x_slot < 0:
                    x_slot += cap
                x = buf[x_slot, a]
                y = ret[b]
                if not (np.isnan(x) or np.isnan(y)):
                    _pair_add(psum, pcnt, p, x, y, 1.0)
                    changed = True
            if changed:
                cxy, mxx, myy = _window_moments(psum, pcnt, p, minp)
                pcov[p] = cxy
                pvx[p] = mxx
                pvy[p] = myy
                pc[p] = _corr(cxy, mxx, myy)
            if p < n_ew:
                # exponentially weighted moments (adjust=False), updated only when both returns are finite
                x = ret[a]
                y = ret[b]
                if not (np.isnan(x) or np.isnan(y)):
                    _ew_add(ew, ewn, p, x, y, alpha)
                    pe[p] = _ew_corr(ew, ewn, p, ew_minp)
        # outputs
        for k in range(corr_pair.shape[0]):
            out[corr_col[k], i] = pc[corr_pair[k]]
        for k in range(ew_pair.shape[0]):
            out[ew_col[k], i] = pe[ew_pair[k]]
        for k in range(beta_pair.shape[0]):
            p = beta_pair[k]
            m = pvx[p] if beta_side[k] == 0 else pvy[p]
            out[beta_col[k], i] = pcov[p] / m if m > 0.0 else np.nan
        if vix >= 0:
            level = close[i, vix]
            out[vix_cols[0], i] = level
            out[vix_cols[1], i] = ret[vix]
            if np.isnan(level):
                out[vix_cols[2], i] = np.nan
            else:
                regime = 0
                for q in range(vix_thresholds.shape[0]):
                    if level >= vix_thresholds[q]:
                        regime += 1
                out[vix_cols[2], i] = regime


@numba.njit(cache=True, nogil=True)
def pair_matrices(
    pa: I64,
    pb: I64,
    plag: I64,
    minp: int,
    ew_minp: int,
    psum: F64,
    pcnt: I64,
    ew: F64,
    ewn: I64,
    corr: F64,
    ewcorr: F64,
) -> None:  # pragma: no cover
    """Fill the ``(N, N)`` windowed and EW correlation matrices from the state's lag-0 pairs.

    The same arithmetic as :func:`cross_asset_rows`, so the matrices equal the last row's columns bit for bit.
    A diagonal entry is 1 where the symbol has a window (EW) variance, NaN otherwise.
    """
    corr[:, :] = np.nan
    ewcorr[:, :] = np.nan
    n_ew = ew.shape[0]
    for p in range(pa.shape[0]):
        if plag[p] != 0:
            continue
        a = pa[p]
        b = pb[p]
        cxy, mxx, myy = _window_moments(psum, pcnt, p, minp)
        c = _corr(cxy, mxx, myy)
        e = _ew_corr(ew, ewn, p, ew_minp) if p < n_ew else np.nan
        if a == b:
            corr[a, a] = 1.0 if c == c else np.nan
            ewcorr[a, a] = 1.0 if e == e else np.nan
        else:
            corr[a, b] = c
            corr[b, a] = c
            ewcorr[a, b] = e
            ewcorr[b, a] = e
