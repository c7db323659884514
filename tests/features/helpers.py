"""Shared test tools for features: the real bars as :class:`BarBatch` objects and streaming in random batches."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from features.engine import FeatureEngine, FeatureFrame
from ingest.records import NS_PER_MINUTE, BarBatch, to_ns
from ingest.synthetic import SimulationConfig, SimulationResult, simulate
from tests.conftest import shared_data


def _mid(frame: pd.DataFrame, bid: str, ask: str) -> np.ndarray:
    return ((frame[bid] + frame[ask]) / 2.0).to_numpy(dtype=np.float64)


def _quote_ohlc(frame: pd.DataFrame, bid: str, ask: str) -> dict[str, np.ndarray]:
    """OHLC of the quote midpoint from bid/ask bars (high and low kept consistent with open and close)."""
    o, c = _mid(frame, bid.format("open"), ask.format("open")), _mid(frame, bid.format("close"), ask.format("close"))
    h, lo = _mid(frame, bid.format("high"), ask.format("high")), _mid(frame, bid.format("low"), ask.format("low"))
    return {"open": o, "high": np.maximum.reduce([o, c, h]), "low": np.minimum.reduce([o, c, lo]), "close": c}


def _bar_batch(ts: np.ndarray, symbol: str, cols: dict[str, np.ndarray]) -> BarBatch:
    n = len(ts)
    nan = np.full(n, np.nan)
    bid, ask = cols.get("bid", nan), cols.get("ask", nan)
    return BarBatch(
        ts=ts,
        symbol=np.full(n, symbol, dtype=object),
        interval_ns=np.full(n, NS_PER_MINUTE, np.int64),
        open=cols["open"],
        high=cols["high"],
        low=cols["low"],
        close=cols["close"],
        volume=cols.get("volume", np.zeros(n)),
        vwap=nan,
        trade_count=cols.get("trade_count", np.zeros(n, np.int64)),
        bid=bid,
        ask=ask,
        bid_size=cols.get("bid_size", nan),
        ask_size=cols.get("ask_size", nan),
        spread=ask - bid,
        quote_count=(~np.isnan(bid)).astype(np.int64),
        suspicious_count=np.zeros(n, np.int64),
    )


@lru_cache(maxsize=1)
def load_spy_bars() -> BarBatch:
    """The vendor's SPY one-minute trade and quote bars of 2013-10-07..11 merged into one :class:`BarBatch`.

    An outer join on ``ts``: ``bid``/``ask`` are the quote bars' closes; a minute with quotes but no trade bar
    takes its OHLC from the quote midpoint with zero volume (as the bar builder does); a minute with a trade bar
    but no quote bar has NaN quotes. The vendor gives neither VWAP (NaN) nor trade counts (``trade_count`` is 1
    for a minute with a trade bar, meaning at least one). Sorted by ``ts``; one symbol; 60 s bars. Do not modify
    the arrays: the batch is cached.
    """
    trades = pd.read_csv(shared_data("spy_trade_bars_1min.csv.gz"))
    quotes = pd.read_csv(shared_data("spy_quote_bars_1min.csv.gz"))
    merged = trades.merge(quotes, on=["ts", "symbol"], how="outer")
    merged["ts"] = to_ns(merged["ts"])
    merged = merged.sort_values("ts", kind="stable").reset_index(drop=True)
    has_trade = merged["close"].notna().to_numpy()
    q = _quote_ohlc(merged, "bid_{}", "ask_{}")
    cols = {k: np.where(has_trade, merged[k].to_numpy(dtype=np.float64), q[k]) for k in q}
    cols["volume"] = merged["volume"].fillna(0.0).to_numpy(dtype=np.float64)
    cols["trade_count"] = has_trade.astype(np.int64)
    for name, source in (
        ("bid", "bid_close"),
        ("ask", "ask_close"),
        ("bid_size", "bid_size"),
        ("ask_size", "ask_size"),
    ):
        cols[name] = merged[source].to_numpy(dtype=np.float64)
    return _bar_batch(merged["ts"].to_numpy(dtype=np.int64), "SPY", cols)


@lru_cache(maxsize=1)
def load_gbpusd_bars() -> BarBatch:
    """FXCM GBP/USD one-minute bid and ask bars of February 2012 as a :class:`BarBatch`.

    OHLC from the midpoint, ``bid``/``ask`` the closing bid and ask, no volume (0), sizes and VWAP NaN. Real
    data: 347 minutes close crossed (bid above ask). Sorted by ``ts``; 60 s bars; cached, do not modify.
    """
    frame = pd.read_csv(shared_data("gbpusd_bidask_bars_1min_2012-02.csv.gz"))
    frame["ts"] = to_ns(frame["ts"])
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    cols = _quote_ohlc(frame, "{}_bid", "{}_ask")
    cols["bid"] = frame["close_bid"].to_numpy(dtype=np.float64)
    cols["ask"] = frame["close_ask"].to_numpy(dtype=np.float64)
    return _bar_batch(frame["ts"].to_numpy(dtype=np.int64), "GBPUSD", cols)


def random_splits(n: int, sizes: Sequence[int] = (1, 7, 100, 10_000), seed: int = 0) -> list[int]:
    """Cut points ``0 < c1 < ... < n`` of consecutive batches whose sizes are drawn from ``sizes``.

    The first batches are every size smaller than ``n``, in random order, so that each is exercised and a size
    larger than the data cannot swallow it whole at the first draw; after them sizes are drawn uniformly (the
    last batch takes what is left).
    """
    rng = np.random.default_rng(seed)
    first = [int(s) for s in rng.permutation(np.asarray(sizes)) if s < n]
    cuts, at = [], 0
    while at < n:
        size = first.pop(0) if first else int(rng.choice(np.asarray(sizes)))
        at = min(n, at + size)
        cuts.append(at)
    return cuts


def stream_in_batches(
    engine: FeatureEngine, bars: BarBatch, sizes: Sequence[int] = (1, 7, 100, 10_000), seed: int = 0
) -> FeatureFrame:
    """The engine's output over ``bars`` fed in consecutive batches of sizes drawn at random from ``sizes``."""
    state = engine.init_state()
    frames, start = [], 0
    for stop in random_splits(len(bars), sizes, seed):
        frame, state = engine.step(state, bars.take(slice(start, stop)))
        frames.append(frame)
        start = stop
    return FeatureFrame.concat(frames)


def resume_after_pickle(engine: FeatureEngine, bars: BarBatch, cut: int) -> FeatureFrame:
    """Output of a stream whose state is pickled and restored after the first ``cut`` bars."""
    first, state = engine.step(engine.init_state(), bars.take(slice(0, cut)))
    state = pickle.loads(pickle.dumps(state))
    second, _ = engine.step(state, bars.take(slice(cut, len(bars))))
    return FeatureFrame.concat([first, second])


def assert_frames_identical(got: FeatureFrame, want: FeatureFrame) -> None:
    """Same timestamps and columns, and every value equal bit for bit (NaN equals NaN)."""
    np.testing.assert_array_equal(got.ts, want.ts)
    assert list(got.values) == list(want.values)
    for col in want.values:
        a, b = got.values[col], want.values[col]
        assert a.dtype == b.dtype == np.float64, col
        if not np.array_equal(a, b, equal_nan=True):
            bad = int(np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))[0])
            raise AssertionError(f"{col}: row {bad} is {a[bad]!r}, want {b[bad]!r}")


def assert_prefix_invariant(engine: FeatureEngine, bars: BarBatch, cuts: Sequence[int]) -> None:
    """Computing on the first ``c`` bars leaves every value of the full computation's first ``c`` rows unchanged."""
    full = engine.batch(bars)
    for c in cuts:
        part = engine.batch(bars.take(slice(0, c)))
        for col, values in full.values.items():
            assert np.array_equal(part.values[col], values[:c], equal_nan=True), f"{col}: cut at {c}"


@lru_cache(maxsize=1)
def synthetic_market() -> SimulationResult:
    """Two simulated days of SPY (trades and quotes) and EURUSD (quotes only), seed 1; cached."""
    return simulate(SimulationConfig(seed=1, days=2, assets=("SPY", "EURUSD")))


def synthetic_bars(symbol: str) -> BarBatch:
    """One symbol's one-minute bars from :func:`synthetic_market`, sorted by ``ts``."""
    bars = synthetic_market().bars
    one = bars.take(bars.symbol == symbol)
    return one.take(np.argsort(one.ts, kind="stable"))


#: Bar data sets the contract tests run on, by name.
BAR_DATASETS: dict[str, Callable[[], BarBatch]] = {
    "spy_real": load_spy_bars,
    "gbpusd_real": load_gbpusd_bars,
    "spy_synthetic": lambda: synthetic_bars("SPY"),
    "eurusd_synthetic": lambda: synthetic_bars("EURUSD"),
}
