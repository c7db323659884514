"""Bar building: hand-checked bars, quotes, lateness, and streaming == batch for any split."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.bars import BarBuilder, build_bars
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND, BarBatch, QuoteBatch, TickBatch

S, M = NS_PER_SECOND, NS_PER_MINUTE


def ticks(rows: list[tuple[int, str, float, float, int]], suspicious: list[bool] | None = None) -> TickBatch:
    ts, sym, price, size, seq = (np.array(c) for c in zip(*rows, strict=True))
    flags = np.array(suspicious or [False] * len(rows))
    return TickBatch(ts=ts, symbol=sym.astype(object), price=price, size=size, seq=seq, suspicious=flags)


def quotes(rows: list[tuple[int, str, float, float, int]]) -> QuoteBatch:
    ts, sym, bid, ask, seq = (np.array(c) for c in zip(*rows, strict=True))
    return QuoteBatch(
        ts=ts,
        symbol=sym.astype(object),
        bid=bid,
        ask=ask,
        bid_size=np.array([100.0] * len(rows)),
        ask_size=np.array([200.0] * len(rows)),
        seq=seq,
    )


def test_one_minute_bar_has_ohlcv_vwap_and_count_by_time_not_arrival():
    t = ticks(
        [(30 * S, "X", 11.0, 1, 1), (1 * S, "X", 10.0, 2, 0), (59 * S, "X", 9.0, 1, 2), (59 * S, "X", 12.0, 1, 3)],
        suspicious=[False, False, False, True],
    )
    (bar,) = build_bars(t).to_bars()
    assert (bar.open, bar.high, bar.low, bar.close) == (10.0, 12.0, 9.0, 12.0)
    assert bar.volume == 5.0
    assert bar.trade_count == 4
    assert bar.suspicious_count == 1
    assert bar.vwap == pytest.approx((11 + 20 + 9 + 12) / 5)
    assert np.isnan(bar.bid)
    assert bar.quote_count == 0


def test_bar_with_quotes_carries_last_bid_ask_and_spread():
    t = ticks([(1 * S, "X", 10.0, 1, 0)])
    q = quotes([(2 * S, "X", 9.9, 10.1, 0), (50 * S, "X", 9.95, 10.05, 1)])
    (bar,) = build_bars(t, q).to_bars()
    assert (bar.bid, bar.ask, bar.quote_count) == (9.95, 10.05, 2)
    assert bar.spread == pytest.approx(0.1)
    assert bar.close == 10.0  # trades set the price when there are trades


def test_quote_only_bar_takes_prices_from_the_midpoint_with_zero_volume():
    q = quotes([(2 * S, "EURUSD", 1.0800, 1.0802, 0), (40 * S, "EURUSD", 1.0810, 1.0812, 1)])
    (bar,) = build_bars(None, q).to_bars()
    assert bar.open == pytest.approx(1.0801)
    assert bar.close == pytest.approx(1.0811)
    assert bar.volume == 0
    assert bar.trade_count == 0
    assert np.isnan(bar.vwap)


def test_bar_closes_only_after_watermark_passes_its_end_so_late_rows_land_in_it():
    b = BarBuilder(M, lateness_ns=2 * S)
    assert len(b.update(ticks([(10 * S, "X", 10.0, 1, 0)]))) == 0
    assert len(b.update(ticks([(61 * S, "X", 11.0, 1, 1)]))) == 0  # watermark 59 s: bar [0, 60) still open
    assert len(b.update(ticks([(59 * S, "X", 9.0, 1, 2)]))) == 0  # late row, still in time
    closed = b.update(ticks([(62 * S, "X", 11.5, 1, 3)]))  # watermark 60 s: closes [0, 60)
    assert len(closed) == 1
    assert closed.low[0] == 9.0
    assert closed.trade_count[0] == 2
    assert b.late_rows == 0
    assert len(b.flush()) == 1


def test_close_until_closes_quiet_symbols_bars():
    b = BarBuilder(M, lateness_ns=S)
    b.update(ticks([(10 * S, "QUIET", 10.0, 1, 0), (10 * S, "BUSY", 5.0, 1, 0)]))
    b.update(ticks([(200 * S, "BUSY", 5.0, 1, 1)]))
    closed = b.close_until(120 * S)
    assert sorted(closed.symbol) == ["QUIET"]


def test_builder_rejects_bad_parameters_naming_them():
    with pytest.raises(ValueError, match="interval_ns"):
        BarBuilder(0)
    with pytest.raises(ValueError, match="lateness_ns"):
        BarBuilder(M, lateness_ns=-1)


def _stream(n: int, seed: int) -> tuple[TickBatch, QuoteBatch]:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 3 * S, n))
    # out of order by less than the lateness (1 s), as validation lets through
    ts = np.maximum(ts - rng.integers(0, S, n) * (rng.random(n) < 0.2), 0)
    sym = rng.choice(["A", "B", "C"], n)
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))), 2)
    t = TickBatch(
        ts=ts,
        symbol=sym,
        price=price,
        size=rng.integers(1, 1000, n).astype(float) / 7,
        seq=np.arange(n),
        suspicious=rng.random(n) < 0.05,
    )
    m = n // 2
    qts = np.sort(rng.integers(0, int(ts.max()) + 1, m))
    mid = np.round(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, m))), 2)
    q = QuoteBatch(
        ts=qts,
        symbol=rng.choice(["A", "B", "D"], m),
        bid=mid - 0.01,
        ask=mid + 0.01,
        bid_size=rng.integers(1, 9, m).astype(np.float64) * 100.0,
        ask_size=rng.integers(1, 9, m).astype(np.float64) * 100.0,
        seq=np.arange(m),
    )
    return t, q


def _sorted(b: BarBatch) -> BarBatch:
    return b.take(np.lexsort((b.ts, b.symbol.astype(str))))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 600), max_size=10),
    interval=st.sampled_from([S, 10 * S, M]),
)
def test_streaming_any_split_equals_one_batch_bit_for_bit(seed: int, cuts: list[int], interval: int):
    t, q = _stream(600, seed)
    whole = build_bars(t, q, interval_ns=interval)
    b = BarBuilder(interval, lateness_ns=S)
    out = []
    tb = [0, *sorted(set(cuts)), len(t)]
    qcuts = [min(c // 2, len(q)) for c in tb]
    for (a, z), (qa, qz) in zip(itertools.pairwise(tb), itertools.pairwise(qcuts), strict=True):
        out.append(b.update(t.take(slice(a, z)), q.take(slice(qa, qz))))
    out.append(b.flush())
    streamed = BarBatch.concat(out)
    assert _sorted(streamed).equals(_sorted(whole))
    assert int(whole.trade_count.sum()) == len(t) - b.late_rows
    assert int(whole.volume.sum() * 7 + 0.5) > 0


def test_builder_pickled_mid_stream_gives_the_same_bars():
    t, q = _stream(400, 3)
    a = BarBuilder(10 * S)
    first = a.update(t.take(slice(0, 200)), q.take(slice(0, 100)))
    b = pickle.loads(pickle.dumps(a))
    rest_a = BarBatch.concat([a.update(t.take(slice(200, 400)), q.take(slice(100, 200))), a.flush()])
    rest_b = BarBatch.concat([b.update(t.take(slice(200, 400)), q.take(slice(100, 200))), b.flush()])
    assert rest_a.equals(rest_b)
    assert len(first) + len(rest_a) == len(build_bars(t, q, 10 * S))


def test_cutting_the_input_at_t_leaves_every_bar_ending_by_t_unchanged():
    t, q = _stream(500, 11)
    full = build_bars(t, q, 10 * S)
    cut = int(t.ts[250])
    prefix = build_bars(t.take(t.ts <= cut), q.take(q.ts <= cut), 10 * S)
    before = _sorted(prefix.take(prefix.ts + 10 * S <= cut))
    assert len(before) > 10
    assert before.equals(_sorted(full.take(full.ts + 10 * S <= cut)))
