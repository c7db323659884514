"""Cross-asset features over a universe of symbols: correlations, betas, the VIX and lead-lag spillover.

The input is a grid of closes, one row per time and one column per symbol, built from bars by
:func:`align_closes`. :class:`CrossAssetEngine` steps over rows of that grid with carried state (streaming) or
over a whole history at once (:meth:`CrossAssetEngine.batch`); both perform the same floating-point operations,
so any split of the rows into steps gives the same values bit for bit.

Returns are one-row log returns: ``r = log(close_t / close_s)`` with ``s`` the symbol's previous row with a
close (the return spans any rows where the symbol had no bar; the first close of a symbol gives NaN). A row
where a symbol has no bar gives that symbol a NaN return; nothing is forward-filled.

Windowed statistics of the pair ``(A, B)`` use the last ``window`` rows of the grid (current row included),
and of those only the rows where both returns are finite (pairwise-complete observations). They are NaN while
fewer than ``min_periods`` such rows are in the window, and a correlation is NaN when either side's finite
returns in the window are all equal (no variance). Correlations and betas are dimensionless; returns are per
row (not annualised).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from features.base import check_window, fmt_num
from features.cross_asset._kernels import cross_asset_rows, pair_matrices
from features.engine import FeatureFrame
from ingest.records import F64, I64, BarBatch

LeadLag = Literal["hubs", "all", "none"]
_LEADLAG: tuple[str, ...] = ("hubs", "all", "none")
_NO_TS = int(np.iinfo(np.int64).min)


def align_closes(bars: BarBatch, symbols: Sequence[str]) -> tuple[I64, F64]:
    """Closes of ``symbols`` on the union of their bar times, NaN where a symbol had no bar at a time.

    Parameters
    ----------
    bars : BarBatch
        Bars of one interval, any symbols, any order. Bars of symbols not in ``symbols`` are ignored.
    symbols : sequence of str
        The universe, in column order. A symbol without bars gets a column of NaN.

    Returns
    -------
    ts : int64 array, shape (T,)
        Every bar start (ns UTC) at which at least one of ``symbols`` has a bar, increasing.
    close : float64 array, shape (T, N)
        ``close[t, j]`` is the close of ``symbols[j]`` at ``ts[t]`` (quote currency), NaN when it had no bar.
        Missing bars are not forward-filled: a stale price would read as a zero return.

    Raises
    ------
    ValueError
        When the selected bars mix bar intervals, or a symbol has two bars at one time.

    Examples
    --------
    >>> bars = BarBatch.from_frame(pd.DataFrame({
    ...     "ts": [0, 60, 60], "symbol": ["A", "A", "B"], "interval_ns": 60, "open": 1.0, "high": 1.0,
    ...     "low": 1.0, "close": [1.0, 2.0, 3.0], "volume": 0.0, "vwap": np.nan, "trade_count": 0,
    ...     "bid": np.nan, "ask": np.nan, "bid_size": np.nan, "ask_size": np.nan, "spread": np.nan,
    ...     "quote_count": 0, "suspicious_count": 0}))
    >>> ts, close = align_closes(bars, ["A", "B"])
    >>> ts.tolist(), close.tolist()
    ([0, 60], [[1.0, nan], [2.0, 3.0]])
    """
    syms = _check_symbols(symbols)
    column = {s: j for j, s in enumerate(syms)}
    code = np.fromiter((column.get(s, -1) for s in bars.symbol), dtype=np.int64, count=len(bars))
    keep = code >= 0
    code, ts, close, interval = code[keep], bars.ts[keep], bars.close[keep], bars.interval_ns[keep]
    if len(interval) and (interval != interval[0]).any():
        other = int(interval[interval != interval[0]][0])
        raise ValueError(f"interval_ns={other!r}: bars of one interval only ({int(interval[0])} first)")
    grid = np.unique(ts)
    row = np.searchsorted(grid, ts)
    flat = row * len(syms) + code
    uniq, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        r, j = divmod(int(uniq[counts > 1][0]), len(syms))
        raise ValueError(f"ts={int(grid[r])!r}: symbol={syms[j]!r} has more than one bar at this time")
    out = np.full((len(grid), len(syms)), np.nan)
    out[row, code] = close
    return grid.astype(np.int64), out


def _check_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
    if isinstance(symbols, str):
        raise ValueError(f"symbols={symbols!r}: a sequence of symbols, not one string")
    syms = tuple(symbols)
    for s in syms:
        if not isinstance(s, str) or not s:
            raise ValueError(f"symbols: {s!r} is not a non-empty string")
    dup = sorted({s for s in syms if syms.count(s) > 1})
    if dup:
        raise ValueError(f"symbols: {dup[0]!r} appears more than once")
    return syms


@dataclass
class CrossAssetState:
    """Everything :class:`CrossAssetEngine` carries between steps (small numpy arrays; picklable).

    Attributes
    ----------
    symbols : tuple of str
        The universe the state belongs to.
    last_close : float64 array (N,)
        Each symbol's last close (NaN before its first).
    buf : float64 array (window + max lag + 1, N)
        Ring buffer of the last rows' log returns, slot ``row % len(buf)``.
    ist : int64 array (2,)
        Rows seen and the last row's ts (ns UTC).
    psum, pcnt : float64 (P, 5) and int64 (P, 3) arrays
        Window sums of every pair (see :mod:`features.cross_asset._kernels`).
    ew, ewn : float64 (E, 5) and int64 (E,) arrays
        Exponentially weighted means, variances and covariance of every lag-0 pair, and their counts.
    """

    symbols: tuple[str, ...]
    last_close: F64
    buf: F64
    ist: I64
    psum: F64
    pcnt: I64
    ew: F64
    ewn: I64

    @property
    def rows(self) -> int:
        """Rows seen."""
        return int(self.ist[0])


#: Cross-asset values of consecutive rows: ``ts`` (ns UTC) and one float64 array per column (the same container as
#: the per-asset features).
CrossAssetFrame = FeatureFrame


@dataclass(frozen=True)
class CorrelationMatrices:
    """The latest full correlation matrices of a universe (for the API and the dashboard).

    Attributes
    ----------
    symbols : tuple of str
        Row and column order.
    ts : int or None
        Time of the last row the state has seen (ns UTC); ``None`` before the first row.
    corr : float64 array (N, N)
        Windowed correlation over the last ``window`` rows; symmetric; diagonal 1 where the symbol has a window
        variance, NaN otherwise; NaN entries follow the column rules (too few rows, no variance).
    ewcorr : float64 array (N, N)
        Exponentially weighted correlation, the same conventions.
    """

    symbols: tuple[str, ...]
    ts: int | None
    corr: F64
    ewcorr: F64

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """``{"corr": ..., "ewcorr": ...}`` as DataFrames labelled by symbol."""
        labels = list(self.symbols)
        return {
            "corr": pd.DataFrame(self.corr, index=labels, columns=labels),
            "ewcorr": pd.DataFrame(self.ewcorr, index=labels, columns=labels),
        }


class CrossAssetEngine:
    """Cross-asset features of a fixed universe, stepped over aligned rows of closes.

    Parameters
    ----------
    symbols : sequence of str
        The universe, in column order (at least 2, distinct).
    window : int
        Rows of the rolling window (current row included), >= 2.
    halflife : float
        Half-life of the exponential weights, in rows (joint observations of the pair), > 0.
    market : str or None
        The market symbol betas are measured against; must be in ``symbols``. ``None``: no betas.
    vix : str or None
        The volatility-index symbol; its columns are produced only when it is in ``symbols``.
    lags : sequence of int
        Lags (rows, >= 1) of the lead-lag correlations; empty for none.
    leadlag : {"hubs", "all", "none"}
        Which ordered pairs get lead-lag columns: ``"hubs"`` the pairs with the market or the VIX symbol on
        either side (2 (N - 1) per hub, the pair of hubs counted once), ``"all"`` every ordered pair
        (N (N - 1) per lag), ``"none"`` no lead-lag columns.
    min_periods : int or None
        Pairwise-complete rows a window needs for a finite value, in [2, window]; ``None`` means ``window``
        (the pandas ``rolling(window)`` default: any missing row in the window gives NaN).
    ew_min_periods : int or None
        Joint observations a pair needs before its EW correlation is finite, >= 2; ``None`` means ``window``.
    vix_thresholds : sequence of float
        Increasing VIX levels (index points) separating the regimes; the default ``(15, 25, 35)`` gives
        0 calm (< 15), 1 normal ([15, 25)), 2 stressed ([25, 35)) and 3 crisis (>= 35).

    Notes
    -----
    Columns, in this order (``<w>`` the window, ``<h>`` the half-life, pairs in ``symbols`` order):

    - ``corr_<w>_<A>_<B>`` for each pair ``A`` before ``B``: correlation of the two symbols' returns over the
      window's pairwise-complete rows (sample moments; equals pandas ``rolling(w).corr`` on data without NaN);
    - ``ewcorr_<h>_<A>_<B>``: EW covariance over the square root of the EW variances, with the recursion of
      pandas ``ewm(halflife=h, adjust=False)`` updated only on rows where both returns are finite (pandas
      ``ignore_na=True``);
    - ``beta_<w>_<A>`` for each non-market ``A``: ``cov(r_A, r_market) / var(r_market)`` over the window's rows
      where both are finite;
    - when ``vix`` is in the universe: ``vix_level`` (its close at the row, NaN without a bar), ``vix_change``
      (its log change, the same convention as every return), ``vix_regime`` (0-3, see ``vix_thresholds``; NaN
      without a bar) and ``vixcorr_<w>_<A>`` for each other ``A``: the windowed correlation of ``A``'s returns
      with the VIX log changes (the same value as the ``corr`` column of that pair, named by the asset);
    - ``leadlag_<w>_<A>_<B>`` (lag 1) or ``leadlag<k>_<w>_<A>_<B>`` (lag ``k``): correlation of ``r_A[t - k]``
      with ``r_B[t]`` over the window's rows ``t`` where both are finite (``A`` leads ``B``).

    Warm-up: windowed columns are NaN until ``min_periods`` pairwise-complete rows are in the window (at least
    ``min_periods + 1`` rows, the first return being NaN; ``+ k`` more for lag ``k``); EW columns until
    ``ew_min_periods`` joint observations.

    Cost per row is O(P) with P the number of pairs (N (N - 1) / 2 + N + lead-lag pairs); the window sums are
    recomputed from the buffer every ``window`` rows (absolute row count), amortised O(P) per row.

    Examples
    --------
    >>> engine = CrossAssetEngine(["SPY", "QQQ", "VIX"], window=20, halflife=10)
    >>> engine.columns[:3]
    ('corr_20_SPY_QQQ', 'corr_20_SPY_VIX', 'corr_20_QQQ_VIX')
    >>> ts = np.arange(30, dtype=np.int64) * 60_000_000_000
    >>> close = np.exp(np.random.default_rng(0).normal(0, 0.01, (30, 3)).cumsum(axis=0)) * [400, 350, 15]
    >>> frame = engine.batch(ts, close)
    >>> float(frame.values["vix_regime"][-1]) in (0.0, 1.0)
    True
    """

    def __init__(
        self,
        symbols: Sequence[str],
        window: int = 50,
        halflife: float = 20.0,
        market: str | None = "SPY",
        vix: str | None = "VIX",
        lags: Sequence[int] = (1,),
        leadlag: LeadLag = "hubs",
        min_periods: int | None = None,
        ew_min_periods: int | None = None,
        vix_thresholds: Sequence[float] = (15.0, 25.0, 35.0),
    ) -> None:
        self.symbols = _check_symbols(symbols)
        if len(self.symbols) < 2:
            raise ValueError(f"symbols={self.symbols!r}: a universe needs at least 2 symbols")
        self.window = check_window("window", window, 2)
        if isinstance(halflife, bool) or not isinstance(halflife, int | float) or not 0 < halflife < math.inf:
            raise ValueError(f"halflife={halflife!r}: must be a finite number > 0 (rows)")
        self.halflife = float(halflife)
        if market is not None and market not in self.symbols:
            raise ValueError(f"market={market!r}: not in symbols {self.symbols!r} (None for no betas)")
        self.market = market
        self.vix = vix
        self.lags = tuple(check_window("lags", k, 1) for k in lags)
        if len(set(self.lags)) != len(self.lags):
            raise ValueError(f"lags={tuple(lags)!r}: a lag appears more than once")
        if leadlag not in _LEADLAG:
            raise ValueError(f"leadlag={leadlag!r}: one of {list(_LEADLAG)}")
        self.leadlag: LeadLag = leadlag
        self.min_periods = self.window if min_periods is None else check_window("min_periods", min_periods, 2)
        if self.min_periods > self.window:
            raise ValueError(f"min_periods={min_periods!r}: must be <= window ({self.window})")
        self.ew_min_periods = (
            self.window if ew_min_periods is None else check_window("ew_min_periods", ew_min_periods, 2)
        )
        th = tuple(vix_thresholds)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in th)
        if not numbers or any(b <= a for a, b in itertools.pairwise(th)):
            raise ValueError(f"vix_thresholds={th!r}: must be finite, strictly increasing numbers")
        self.vix_thresholds = tuple(float(v) for v in th)
        self._layout = _Layout.build(self)

    @property
    def columns(self) -> tuple[str, ...]:
        """Output column names, in order (stable: they name the statistic, its parameters and the symbols)."""
        return self._layout.columns

    def __repr__(self) -> str:
        return (
            f"CrossAssetEngine(symbols={self.symbols!r}, window={self.window}, halflife={self.halflife:g}, "
            f"market={self.market!r}, vix={self.vix!r}, lags={self.lags!r}, leadlag={self.leadlag!r}, "
            f"min_periods={self.min_periods}, ew_min_periods={self.ew_min_periods}, "
            f"vix_thresholds={self.vix_thresholds!r})"
        )

    def init_state(self) -> CrossAssetState:
        """A fresh state (no rows seen)."""
        lay = self._layout
        n = len(self.symbols)
        ist = np.zeros(2, np.int64)
        ist[1] = _NO_TS
        return CrossAssetState(
            symbols=self.symbols,
            last_close=np.full(n, np.nan),
            buf=np.full((self.window + max(self.lags, default=0) + 1, n), np.nan),
            ist=ist,
            psum=np.zeros((len(lay.pa), 5)),
            pcnt=np.zeros((len(lay.pa), 3), np.int64),
            ew=np.zeros((lay.n_ew, 5)),
            ewn=np.zeros(lay.n_ew, np.int64),
        )

    def step(self, state: CrossAssetState, ts: I64, close: F64) -> tuple[CrossAssetFrame, CrossAssetState]:
        """Feature values of new rows; ``state`` is advanced in place and returned.

        Parameters
        ----------
        state : CrossAssetState
            From :meth:`init_state` or a previous step of an engine with the same parameters.
        ts : int64 array (n,)
            Row times, ns UTC, strictly increasing and after the state's last row.
        close : float64 array (n, N)
            Closes in ``symbols`` order, > 0, NaN where a symbol had no bar (see :func:`align_closes`). A step
            takes whole rows: every symbol's bar at a time must arrive in the same step.

        Raises
        ------
        ValueError
            On shapes that do not fit, times out of order, or a close that is not NaN and not a positive
            finite number (naming the time, symbol and value).
        """
        if state.symbols != self.symbols or state.buf.shape[0] != self.window + max(self.lags, default=0) + 1:
            raise ValueError(f"state: made for symbols={state.symbols!r}, not by this engine ({self!r})")
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        close = np.ascontiguousarray(close, dtype=np.float64)
        n = len(ts)
        if ts.ndim != 1 or close.shape != (n, len(self.symbols)):
            raise ValueError(f"close.shape={close.shape!r}: expected ({n}, {len(self.symbols)}) for {n} ts")
        self._check_rows(state, ts, close)
        lay = self._layout
        out = np.empty((len(lay.columns), n))
        cross_asset_rows(
            ts, close, lay.pa, lay.pb, lay.plag, self.window, self.min_periods,
            -math.expm1(-math.log(2.0) / self.halflife), self.ew_min_periods,
            state.last_close, state.buf, state.ist, state.psum, state.pcnt, state.ew, state.ewn,
            lay.corr_pair, lay.corr_col, lay.ew_pair, lay.ew_col, lay.beta_pair, lay.beta_side, lay.beta_col,
            lay.vix, lay.vix_cols, np.asarray(self.vix_thresholds, dtype=np.float64), out,
        )  # fmt: skip
        return CrossAssetFrame(ts=ts.copy(), values=dict(zip(lay.columns, out, strict=True))), state

    def batch(self, ts: I64, close: F64) -> CrossAssetFrame:
        """All feature values of a history in one step from a fresh state (arguments as in :meth:`step`)."""
        frame, _ = self.step(self.init_state(), ts, close)
        return frame

    def batch_bars(self, bars: BarBatch) -> CrossAssetFrame:
        """:meth:`batch` over ``bars`` aligned by :func:`align_closes`."""
        return self.batch(*align_closes(bars, self.symbols))

    def matrices(self, state: CrossAssetState) -> CorrelationMatrices:
        """The windowed and EW correlation matrices after the last row ``state`` has seen.

        Off-diagonal entries equal that row's ``corr``/``ewcorr`` columns bit for bit.
        """
        lay = self._layout
        n = len(self.symbols)
        corr, ewcorr = np.empty((n, n)), np.empty((n, n))
        pair_matrices(
            lay.pa, lay.pb, lay.plag, self.min_periods, self.ew_min_periods,
            state.psum, state.pcnt, state.ew, state.ewn, corr, ewcorr,
        )  # fmt: skip
        ts = int(state.ist[1]) if state.rows else None
        return CorrelationMatrices(symbols=self.symbols, ts=ts, corr=corr, ewcorr=ewcorr)

    def _check_rows(self, state: CrossAssetState, ts: I64, close: F64) -> None:
        if len(ts) == 0:
            return
        if state.rows and ts[0] <= state.ist[1]:
            raise ValueError(f"ts={int(ts[0])!r}: rows must come after the last row seen ({int(state.ist[1])})")
        steps = np.diff(ts)
        if (steps <= 0).any():
            raise ValueError(f"ts={int(ts[1:][steps <= 0][0])!r}: rows must be strictly increasing in time")
        bad = ~np.isnan(close) & ~((close > 0) & (close < np.inf))
        if bad.any():
            r, j = np.argwhere(bad)[0]
            raise ValueError(
                f"close={float(close[r, j])!r}: at ts={int(ts[r])} symbol={self.symbols[j]!r} must be a positive "
                "finite price or NaN (no bar)"
            )


@dataclass(frozen=True)
class _Layout:
    """The pair list of an engine and where each pair's values go in the output (derived from parameters)."""

    columns: tuple[str, ...]
    pa: I64
    pb: I64
    plag: I64
    n_ew: int
    corr_pair: I64
    corr_col: I64
    ew_pair: I64
    ew_col: I64
    beta_pair: I64
    beta_side: I64
    beta_col: I64
    vix: int
    vix_cols: I64

    @classmethod
    def build(cls, e: CrossAssetEngine) -> _Layout:
        syms, w, n = e.symbols, e.window, len(e.symbols)
        pa: list[int] = []
        pb: list[int] = []
        plag: list[int] = []
        pair0: dict[tuple[int, int], int] = {}
        for i in range(n):
            for j in range(i + 1, n):
                pair0[i, j] = len(pa)
                pa.append(i)
                pb.append(j)
                plag.append(0)
        for i in range(n):
            pa.append(i)
            pb.append(i)
            plag.append(0)
        n_ew = len(pa)
        columns: list[str] = []
        corr_pair: list[int] = []
        corr_col: list[int] = []

        def corr_out(name: str, p: int) -> None:
            corr_pair.append(p)
            corr_col.append(len(columns))
            columns.append(name)

        for (i, j), p in pair0.items():
            corr_out(f"corr_{w}_{syms[i]}_{syms[j]}", p)
        ew_pair = list(pair0.values())
        ew_col = list(range(len(columns), len(columns) + len(ew_pair)))
        h = fmt_num(e.halflife)
        columns.extend(f"ewcorr_{h}_{syms[i]}_{syms[j]}" for i, j in pair0)
        beta_pair: list[int] = []
        beta_side: list[int] = []
        beta_col: list[int] = []
        m = -1 if e.market is None else syms.index(e.market)
        if m >= 0:
            for a in range(n):
                if a != m:
                    beta_pair.append(pair0[min(a, m), max(a, m)])
                    beta_side.append(0 if m < a else 1)
                    beta_col.append(len(columns))
                    columns.append(f"beta_{w}_{syms[a]}")
        v = syms.index(e.vix) if e.vix is not None and e.vix in syms else -1
        vix_cols: list[int] = []
        if v >= 0:
            vix_cols = [len(columns), len(columns) + 1, len(columns) + 2]
            columns.extend(("vix_level", "vix_change", "vix_regime"))
            for a in range(n):
                if a != v:
                    corr_out(f"vixcorr_{w}_{syms[a]}", pair0[min(a, v), max(a, v)])
        hubs = {x for x in (m, v) if x >= 0}
        if e.leadlag != "none":
            for k in e.lags:
                prefix = "leadlag" if k == 1 else f"leadlag{k}"
                for a in range(n):
                    for b in range(n):
                        if a != b and (e.leadlag == "all" or a in hubs or b in hubs):
                            pa.append(a)
                            pb.append(b)
                            plag.append(k)
                            corr_out(f"{prefix}_{w}_{syms[a]}_{syms[b]}", len(pa) - 1)
        dup = sorted({c for c in columns if columns.count(c) > 1})
        if dup:
            raise ValueError(f"symbols={syms!r}: column {dup[0]!r} is ambiguous (a symbol holds an underscore)")

        def arr(x: list[int]) -> I64:
            return np.asarray(x, dtype=np.int64)

        return cls(
            columns=tuple(columns),
            pa=arr(pa),
            pb=arr(pb),
            plag=arr(plag),
            n_ew=n_ew,
            corr_pair=arr(corr_pair),
            corr_col=arr(corr_col),
            ew_pair=arr(ew_pair),
            ew_col=arr(ew_col),
            beta_pair=arr(beta_pair),
            beta_side=arr(beta_side),
            beta_col=arr(beta_col),
            vix=v,
            vix_cols=arr(vix_cols if vix_cols else [0, 0, 0]),
        )
