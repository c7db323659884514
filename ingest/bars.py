"""Time bars from trades and quotes: one step over batches, the same bars in streaming and in batch.

A :class:`BarBuilder` folds batches of validated trades and quotes into per-symbol time bars labelled by their
start (a bar covers ``[ts, ts + interval)``). A bar stays open until the symbol's watermark — its latest
timestamp minus ``lateness_ns`` — passes its end, so rows arriving up to ``lateness_ns`` late (the validator's
out-of-order tolerance) still land in their bar.

Why the builder keeps the rows of open bars rather than running sums: floating-point sums depend on how the
rows are grouped, so a bar summed from partial sums (streaming) and the same bar summed in one pass (batch)
can differ in the last bit of volume or VWAP. Here a bar is always aggregated once, when it closes, from all
its rows sorted by ``(ts, seq)``: any split of the stream into batches gives exactly the bars of one call
(:func:`build_bars`). Only the rows of open bars are held, a bar or two per symbol.

Within a bar the open is the row with the smallest ``(ts, seq)`` and the close the largest, whatever the
arrival order.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.records import F64, I64, NS_PER_MINUTE, NS_PER_SECOND, BarBatch, QuoteBatch, TickBatch

_NAT = np.iinfo(np.int64).min
_MAX = np.iinfo(np.int64).max
IntArr = npt.NDArray[np.intp]
R = TypeVar("R", TickBatch, QuoteBatch)
G = TypeVar("G", bound=np.generic)


class _Groups:
    """Rows sorted by (symbol code, bar start, ts, seq) and the index ranges of each bar."""

    def __init__(self, code: I64, start: I64, ts: I64, seq: I64) -> None:
        n = len(ts)
        order: IntArr | None = None
        if n > 1:
            dc, dt = np.diff(code), np.diff(ts)
            # start is monotone in ts, so (code, ts, seq) order implies (code, start, ts, seq) order
            if not ((dc > 0) | ((dc == 0) & ((dt > 0) | ((dt == 0) & (np.diff(seq) > 0))))).all():
                order = np.lexsort((seq, ts, start, code))
        self.order = order
        code_s = code if order is None else code[order]
        start_s = start if order is None else start[order]
        change = np.ones(n, dtype=bool)
        if n > 1:
            change[1:] = (code_s[1:] != code_s[:-1]) | (start_s[1:] != start_s[:-1])
        self.first: IntArr = np.flatnonzero(change)
        self.last: IntArr = np.empty_like(self.first)
        if len(self.first):
            self.last[:-1] = self.first[1:] - 1
            self.last[-1] = n - 1
        self.code = code_s[self.first]
        self.start = start_s[self.first]

    def sort(self, a: npt.NDArray[G]) -> npt.NDArray[G]:
        return a if self.order is None else a[self.order]


class BarBuilder:
    """Builds time bars per symbol from batches of validated trades and quotes.

    Parameters
    ----------
    interval_ns : int
        Bar length in nanoseconds (``NS_PER_SECOND``, ``NS_PER_MINUTE``, ...).
    lateness_ns : int
        How long after its end a bar waits for late rows, in nanoseconds; set it to the validator's
        out-of-order tolerance so that every accepted row lands in an open bar.

    Notes
    -----
    Bars carry trades' OHLC, volume, VWAP and count; the last quote's bid, ask, sizes and spread; and the
    number of trades flagged suspicious. A bar that saw quotes but no trades takes its OHLC from the quote
    midpoint, with zero volume.

    The watermark of a symbol is the smallest, over the streams (trades, quotes) that have carried it, of that
    stream's latest timestamp, minus ``lateness_ns``. A row whose bar has already closed (possible only when
    one stream of a symbol starts more than ``lateness_ns`` behind the other) is not added to a bar and is
    counted in :attr:`late_rows`; the row itself is still stored by the caller.

    Examples
    --------
    >>> from ingest.records import TickBatch
    >>> ticks = TickBatch(ts=[0, 30 * 10**9, 61 * 10**9], symbol=["X"] * 3, price=[10.0, 11.0, 9.0],
    ...                   size=[1.0, 1.0, 2.0], seq=[0, 1, 2], suspicious=[False] * 3)
    >>> bars = build_bars(ticks, interval_ns=NS_PER_MINUTE)
    >>> bars.open.tolist(), bars.close.tolist(), bars.volume.tolist()
    ([10.0, 9.0], [11.0, 9.0], [2.0, 2.0])
    """

    def __init__(self, interval_ns: int = NS_PER_MINUTE, lateness_ns: int = NS_PER_SECOND) -> None:
        if interval_ns <= 0:
            raise ValueError(f"interval_ns={interval_ns!r}: must be > 0")
        if lateness_ns < 0:
            raise ValueError(f"lateness_ns={lateness_ns!r}: must be >= 0")
        self.interval_ns = interval_ns
        self.lateness_ns = lateness_ns
        self._symbols: list[str] = []
        self._code_of: dict[str, int] = {}
        self._ticks = TickBatch.empty()
        self._tick_codes = np.empty(0, np.int64)
        self._quotes = QuoteBatch.empty()
        self._quote_codes = np.empty(0, np.int64)
        # per symbol code: latest timestamp of each stream (_NAT until the stream carries the symbol) and the
        # end of the last closed bar
        self._max_trade = np.empty(0, np.int64)
        self._max_quote = np.empty(0, np.int64)
        self._closed_through = np.empty(0, np.int64)
        self.late_rows = 0

    # ---------------------------------------------------------------------------------------------------
    def update(self, ticks: TickBatch | None = None, quotes: QuoteBatch | None = None) -> BarBatch:
        """Add a batch of trades and/or quotes; return the bars it closed, sorted by (ts, symbol)."""
        if ticks is not None and len(ticks):
            code = self._encode(ticks.symbol)
            np.maximum.at(self._max_trade, code, ticks.ts)
            ticks, code = self._drop_late(ticks, code)
            self._ticks = TickBatch.concat([self._ticks, ticks])
            self._tick_codes = np.concatenate([self._tick_codes, code])
        if quotes is not None and len(quotes):
            code = self._encode(quotes.symbol)
            np.maximum.at(self._max_quote, code, quotes.ts)
            quotes, code = self._drop_late(quotes, code)
            self._quotes = QuoteBatch.concat([self._quotes, quotes])
            self._quote_codes = np.concatenate([self._quote_codes, code])
        return self._close(self._watermarks())

    def close_until(self, ts_ns: int) -> BarBatch:
        """Close every bar that ends at or before ``ts_ns`` (a timer, for symbols that went quiet)."""
        return self._close(np.full(len(self._symbols), ts_ns, dtype=np.int64))

    def flush(self) -> BarBatch:
        """Close and return every open bar (end of stream)."""
        return self._close(np.full(len(self._symbols), _MAX, dtype=np.int64))

    @property
    def pending_rows(self) -> int:
        """Rows held for bars that are still open."""
        return len(self._ticks) + len(self._quotes)

    # ---------------------------------------------------------------------------------------------------
    def _encode(self, symbols: npt.NDArray[np.object_]) -> I64:
        first = symbols[0]
        if (symbols == first).all():
            return np.full(len(symbols), self._code(first), dtype=np.int64)
        codes, uniques = pd.factorize(symbols)
        lut = np.array([self._code(u) for u in uniques], dtype=np.int64)
        return lut[codes]

    def _code(self, symbol: str) -> int:
        c = self._code_of.get(symbol)
        if c is None:
            c = self._code_of[symbol] = len(self._symbols)
            self._symbols.append(symbol)
            grow = np.array([_NAT], dtype=np.int64)
            self._max_trade = np.concatenate([self._max_trade, grow])
            self._max_quote = np.concatenate([self._max_quote, grow])
            self._closed_through = np.concatenate([self._closed_through, grow])
        return c

    def _drop_late(self, rows: R, code: I64) -> tuple[R, I64]:
        keep = rows.ts >= self._closed_through[code]
        if keep.all():
            return rows, code
        self.late_rows += int(len(keep) - keep.sum())
        return rows.take(keep), code[keep]

    def _watermarks(self) -> I64:
        t, q = self._max_trade, self._max_quote
        latest = np.where((t != _NAT) & (q != _NAT), np.minimum(t, q), np.maximum(t, q))
        return np.where(latest == _NAT, _NAT, latest - self.lateness_ns)

    def _close(self, watermark: I64) -> BarBatch:
        if not len(self._symbols):
            return BarBatch.empty()
        iv = self.interval_ns
        # the start of the latest bar whose end is at or before the watermark, per symbol; a bar closes when
        # its start is at or before it
        limit = np.where(watermark == _NAT, _NAT, np.where(watermark == _MAX, _MAX, watermark - iv))
        t_done = (self._ticks.ts - self._ticks.ts % iv) <= limit[self._tick_codes]
        q_done = (self._quotes.ts - self._quotes.ts % iv) <= limit[self._quote_codes]
        if not t_done.any() and not q_done.any():
            return BarBatch.empty()
        ticks, t_codes = self._ticks.take(t_done), self._tick_codes[t_done]
        quotes, q_codes = self._quotes.take(q_done), self._quote_codes[q_done]
        if not t_done.all() or not q_done.all():
            self._ticks, self._tick_codes = self._ticks.take(~t_done), self._tick_codes[~t_done]
            self._quotes, self._quote_codes = self._quotes.take(~q_done), self._quote_codes[~q_done]
        else:
            self._ticks, self._tick_codes = TickBatch.empty(), np.empty(0, np.int64)
            self._quotes, self._quote_codes = QuoteBatch.empty(), np.empty(0, np.int64)
        ends = np.where(limit == _MAX, _MAX, np.where(limit == _NAT, _NAT, limit - limit % iv + iv))
        self._closed_through = np.maximum(self._closed_through, ends)
        return self._aggregate(ticks, t_codes, quotes, q_codes)

    def _aggregate(self, ticks: TickBatch, t_codes: I64, quotes: QuoteBatch, q_codes: I64) -> BarBatch:
        iv = self.interval_ns
        tg = _Groups(t_codes, ticks.ts - ticks.ts % iv, ticks.ts, ticks.seq)
        qg = _Groups(q_codes, quotes.ts - quotes.ts % iv, quotes.ts, quotes.seq)
        code, start, ti, qi = _outer_join(tg, qg)
        n = len(code)
        has_t, has_q = ti >= 0, qi >= 0

        def spread_to_keys(values: F64, idx: IntArr, has: npt.NDArray[np.bool_], fill: float) -> F64:
            out = np.full(n, fill, dtype=np.float64)
            out[has] = values[idx[has]]
            return out

        t_ohlc = _ohlc(tg, tg.sort(ticks.price))
        size = tg.sort(ticks.size)
        price = tg.sort(ticks.price)
        t_volume = np.add.reduceat(size, tg.first) if len(tg.first) else np.empty(0)
        t_pv = np.add.reduceat(price * size, tg.first) if len(tg.first) else np.empty(0)
        t_susp = (
            np.add.reduceat(tg.sort(ticks.suspicious).astype(np.int64), tg.first)
            if len(tg.first)
            else (np.empty(0, np.int64))
        )
        mid = qg.sort((quotes.bid + quotes.ask) / 2.0)
        q_ohlc = _ohlc(qg, mid)
        o, h, lo, c = (
            np.where(has_t, spread_to_keys(tv, ti, has_t, np.nan), spread_to_keys(qv, qi, has_q, np.nan))
            for tv, qv in zip(t_ohlc, q_ohlc, strict=True)
        )
        volume = spread_to_keys(t_volume, ti, has_t, 0.0)
        pv = spread_to_keys(t_pv, ti, has_t, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            vwap = np.where(volume > 0, pv / volume, np.nan)
        ql = qg.last
        bid = spread_to_keys(qg.sort(quotes.bid)[ql], qi, has_q, np.nan)
        ask = spread_to_keys(qg.sort(quotes.ask)[ql], qi, has_q, np.nan)
        symbols = np.array(self._symbols, dtype=object)[code]
        bars = BarBatch._trusted(
            ts=start,
            symbol=symbols,
            interval_ns=np.full(n, iv, dtype=np.int64),
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=volume,
            vwap=vwap,
            trade_count=spread_to_keys((tg.last - tg.first + 1).astype(np.float64), ti, has_t, 0.0).astype(np.int64),
            bid=bid,
            ask=ask,
            bid_size=spread_to_keys(qg.sort(quotes.bid_size)[ql], qi, has_q, np.nan),
            ask_size=spread_to_keys(qg.sort(quotes.ask_size)[ql], qi, has_q, np.nan),
            spread=ask - bid,
            quote_count=spread_to_keys((ql - qg.first + 1).astype(np.float64), qi, has_q, 0.0).astype(np.int64),
            suspicious_count=spread_to_keys(t_susp.astype(np.float64), ti, has_t, 0.0).astype(np.int64),
        )
        if n > 1:
            rank = np.argsort(np.argsort(np.array(self._symbols, dtype=str), kind="stable"))
            bars = bars.take(np.lexsort((rank[code], start)))
        return bars


def _outer_join(a: _Groups, b: _Groups) -> tuple[I64, I64, IntArr, IntArr]:
    """Union of the bar keys (code, start) of two groupings, sorted, with each side's row (-1 where absent)."""
    na, nb = len(a.code), len(b.code)
    if nb == 0 or na == 0:
        only = a if nb == 0 else b
        rows = np.arange(len(only.code))
        none = np.full(len(only.code), -1, dtype=np.intp)
        return only.code, only.start, (rows if nb == 0 else none), (none if nb == 0 else rows)
    codes = np.concatenate([a.code, b.code])
    starts = np.concatenate([a.start, b.start])
    order = np.lexsort((starts, codes))
    c, st = codes[order], starts[order]
    new = np.ones(len(c), dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | (st[1:] != st[:-1])
    key_of_sorted = np.cumsum(new) - 1
    key = np.empty(len(codes), dtype=np.intp)
    key[order] = key_of_sorted
    n = int(key_of_sorted[-1]) + 1
    ai = np.full(n, -1, dtype=np.intp)
    bi = np.full(n, -1, dtype=np.intp)
    ai[key[:na]] = np.arange(na)
    bi[key[na:]] = np.arange(nb)
    return c[new], st[new], ai, bi


def _ohlc(g: _Groups, price: F64) -> tuple[F64, F64, F64, F64]:
    if not len(g.first):
        e = np.empty(0)
        return e, e, e, e
    return price[g.first], np.maximum.reduceat(price, g.first), np.minimum.reduceat(price, g.first), price[g.last]


def build_bars(
    ticks: TickBatch | None = None,
    quotes: QuoteBatch | None = None,
    interval_ns: int = NS_PER_MINUTE,
) -> BarBatch:
    """All bars of a whole batch of trades and/or quotes in one call, sorted by (ts, symbol).

    Equal, bar for bar and bit for bit, to folding :meth:`BarBuilder.update` over any split of the same rows
    and then :meth:`BarBuilder.flush`.
    """
    builder = BarBuilder(interval_ns=interval_ns, lateness_ns=0)
    bars = BarBatch.concat([builder.update(ticks, quotes), builder.flush()])
    return bars.take(np.lexsort((bars.symbol.astype(str), bars.ts))) if len(bars) > 1 else bars
