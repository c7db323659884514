"""Sequential kernels with carried state: the building blocks of every streaming feature.

Each kernel walks new rows in order and updates its state arrays in place, so a stream split into any batches
performs exactly the same floating-point operations as one call over the whole series: streaming and batch agree
bit for bit by construction, not by tolerance.

State lives in small numpy arrays (picklable, checkpointable). Running sums are recomputed from the window's
contents every time the window has turned over once (at absolute row counts that are multiples of the window), so
rounding error never accumulates beyond one window, and the recomputation happens at the same rows whatever the
batching.

Conventions: a window of ``w`` rows includes the current row; a window that is not yet full or holds a NaN gives
NaN (warm-up is ``w - 1`` rows, explicit). Pure references for tests live in ``tests/features``.
"""

from __future__ import annotations

import numba
import numpy as np

from ingest.records import F64, I64

# ---------------------------------------------------------------------------------------------------- rolling sums
# state: buf float64[w] (the window), ist int64[3] (next slot, rows seen, NaN rows in window),
#        fst float64[2] (sum and sum of squares of the window's finite rows)


@numba.njit(cache=True, nogil=True)
def rolling_sums_1(x: F64, buf: F64, ist: I64, fst: F64, out_sum: F64, out_sq: F64) -> None:  # pragma: no cover
    """Window sums and sums of squares of one series.

    ``out_sum``/``out_sq`` get NaN where the window is not yet full or holds a NaN. A fresh state is
    ``buf = np.full(w, nan)``, ``ist = zeros(3, int64)``, ``fst = zeros(2)``.
    """
    n = x.shape[0]
    w = buf.shape[0]
    slot, seen, nans = ist[0], ist[1], ist[2]
    s, q = fst[0], fst[1]
    until = w - seen % w
    for i in range(n):
        v = x[i]
        if seen >= w:
            old = buf[slot]
            if np.isnan(old):
                nans -= 1
            else:
                s -= old
                q -= old * old
        buf[slot] = v
        if np.isnan(v):
            nans += 1
        else:
            s += v
            q += v * v
        seen += 1
        slot += 1
        if slot == w:
            slot = 0
        until -= 1
        if until == 0:
            until = w
            s = 0.0
            q = 0.0
            for r in range(w):
                b = buf[r]
                if not np.isnan(b):
                    s += b
                    q += b * b
        if seen >= w and nans == 0:
            out_sum[i] = s
            out_sq[i] = q
        else:
            out_sum[i] = np.nan
            out_sq[i] = np.nan
    ist[0], ist[1], ist[2] = slot, seen, nans
    fst[0], fst[1] = s, q


@numba.njit(cache=True, nogil=True)
def rolling_sums_k(x: F64, buf: F64, ist: I64, fst: F64, out_sum: F64, out_sq: F64) -> None:  # pragma: no cover
    """:func:`rolling_sums_1` for ``k`` series in one call: ``x``, ``out_sum``, ``out_sq`` are ``(k, n)``;
    ``buf`` ``(k, w)``, ``ist`` ``(k, 3)``, ``fst`` ``(k, 2)``. Each series keeps its own window and NaN count."""
    for j in range(x.shape[0]):
        rolling_sums_1(x[j], buf[j], ist[j], fst[j], out_sum[j], out_sq[j])


@numba.njit(cache=True, nogil=True)
def moments_from_sums(s: F64, q: F64, w: int, mean: F64, std: F64) -> None:  # pragma: no cover
    """Mean and sample standard deviation (ddof=1) of windows from their sums; a flat window has std 0."""
    for i in range(s.shape[0]):
        m = s[i] / w
        mean[i] = m
        var = (q[i] - s[i] * m) / (w - 1) if w > 1 else np.nan
        # cancellation can leave a tiny residue (either sign) for a flat window
        if var < 1e-13 * (m * m + 1e-300):
            var = 0.0
        std[i] = np.sqrt(var)


# ------------------------------------------------------------------------------------------------ rolling extrema
# state: dq_idx int64[w] (absolute row numbers), dq_val float64[w], ist int64[3] (head, size, rows seen)


def extrema_state(window: int) -> tuple[I64, F64, I64]:
    """Fresh state of :func:`rolling_max`."""
    return np.zeros(window, np.int64), np.zeros(window), np.zeros(3, np.int64)


@numba.njit(cache=True, nogil=True)
def rolling_max(x: F64, sign: float, dq_idx: I64, dq_val: F64, ist: I64, out: F64) -> None:  # pragma: no cover
    """Maximum of ``sign * x`` over the last ``w`` rows, times ``sign`` (``sign=-1`` gives the minimum).

    A monotonic deque: amortised O(1) per row. NaN rows are skipped; NaN until ``w`` rows have been seen.
    """
    w = dq_idx.shape[0]
    for i in range(x.shape[0]):
        t = ist[2]
        v = sign * x[i]
        # drop entries that left the window
        while ist[1] > 0 and dq_idx[ist[0]] <= t - w:
            ist[0] = ist[0] + 1 if ist[0] + 1 < w else 0
            ist[1] -= 1
        if not np.isnan(v):
            # drop smaller values from the back
            while ist[1] > 0:
                back = ist[0] + ist[1] - 1
                if back >= w:
                    back -= w
                if dq_val[back] <= v:
                    ist[1] -= 1
                else:
                    break
            slot = ist[0] + ist[1]
            if slot >= w:
                slot -= w
            dq_idx[slot] = t
            dq_val[slot] = v
            ist[1] += 1
        ist[2] = t + 1
        if t + 1 >= w and ist[1] > 0:
            out[i] = sign * dq_val[ist[0]]
        else:
            out[i] = np.nan


# ---------------------------------------------------------------------------------------------------------- lags
@numba.njit(cache=True, nogil=True)
def lagged(x: F64, buf: F64, ist: I64, out: F64) -> None:  # pragma: no cover
    """The value ``k = len(buf)`` rows back (NaN for the first ``k`` rows). State ``ist``: next slot, rows seen."""
    k = buf.shape[0]
    for i in range(x.shape[0]):
        slot = ist[0]
        out[i] = buf[slot] if ist[1] >= k else np.nan
        buf[slot] = x[i]
        ist[0] = slot + 1 if slot + 1 < k else 0
        ist[1] += 1


@numba.njit(cache=True, nogil=True)
def value_at_lookback(
    ts: I64, x: F64, horizon: int, buf_ts: I64, buf_x: F64, ist: I64, out: F64
) -> None:  # pragma: no cover
    """For each row, the last value with timestamp ``<= ts - horizon`` (NaN if none is held).

    A queue of (ts, value) pairs in ``buf_ts``/``buf_x`` from ``ist[0]`` (head) of length ``ist[1]``; entries that
    can no longer be the answer are dropped. The caller guarantees capacity for ``ist[1] + len(ts)`` entries.
    """
    cap = buf_ts.shape[0]
    for i in range(ts.shape[0]):
        # append the row first: with horizon 0 a row is its own lookback
        if ist[0] + ist[1] >= cap:
            # compact to the front
            for r in range(ist[1]):
                buf_ts[r] = buf_ts[ist[0] + r]
                buf_x[r] = buf_x[ist[0] + r]
            ist[0] = 0
        buf_ts[ist[0] + ist[1]] = ts[i]
        buf_x[ist[0] + ist[1]] = x[i]
        ist[1] += 1
        cutoff = ts[i] - horizon
        # keep only the newest entry at or before the cutoff, and everything after it
        while ist[1] >= 2 and buf_ts[ist[0] + 1] <= cutoff:
            ist[0] += 1
            ist[1] -= 1
        if buf_ts[ist[0]] <= cutoff:
            out[i] = buf_x[ist[0]]
        else:
            out[i] = np.nan


# ----------------------------------------------------------------------------------------------------- smoothing
@numba.njit(cache=True, nogil=True)
def ewma(x: F64, alpha: float, fst: F64, out: F64) -> None:  # pragma: no cover
    """Exponentially weighted mean ``m = alpha * x + (1 - alpha) * m`` started at the first finite value.

    ``fst``: (current mean, started flag). NaN inputs leave the mean unchanged and give the current mean (NaN
    before the start). Equals ``pandas.Series.ewm(alpha=alpha, adjust=False, ignore_na=True).mean()``.
    """
    for i in range(x.shape[0]):
        v = x[i]
        if not np.isnan(v):
            if fst[1] == 0.0:
                fst[0] = v
                fst[1] = 1.0
            else:
                fst[0] = alpha * v + (1.0 - alpha) * fst[0]
        out[i] = fst[0] if fst[1] != 0.0 else np.nan
