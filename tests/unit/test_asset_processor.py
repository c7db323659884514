"""One symbol's streaming state: any micro-batch split, a checkpoint mid-stream, or a cut of the input gives the
bars and features of one whole call."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from features.engine import FeatureFrame
from ingest.asset import AssetOutput, AssetProcessor, FileCheckpointStore, frames_equal
from ingest.records import NS_PER_MINUTE, NS_PER_SECOND, BarBatch, QuoteBatch, TickBatch
from ingest.synthetic import SimulationConfig, SimulationResult, simulate
from ingest.validation import ValidationConfig, Validator
from tests.conftest import shared_data

SYMBOLS = ("SPY", "BTC-USD", "EURUSD")
LATENESS = ValidationConfig().out_of_order_tolerance_ns


@pytest.fixture(scope="module")
def market() -> SimulationResult:
    return simulate(SimulationConfig(seed=7, assets=SYMBOLS, activity=0.5))


def _of(result: SimulationResult, symbol: str) -> tuple[TickBatch, QuoteBatch]:
    return result.trades.take(result.trades.symbol == symbol), result.quotes.take(result.quotes.symbol == symbol)


def _whole(symbol: str, ticks: TickBatch | None, quotes: QuoteBatch | None) -> AssetOutput:
    proc = AssetProcessor(symbol, lateness_ns=LATENESS)
    return AssetOutput.concat([proc.process(ticks, quotes, position=0), proc.flush()])


def _time_cuts(rng: np.random.Generator, ticks: TickBatch, quotes: QuoteBatch, n: int) -> list[int]:
    lo = int(min(ticks.ts.min() if len(ticks) else np.iinfo(np.int64).max, quotes.ts.min()))
    hi = int(max(ticks.ts.max() if len(ticks) else 0, quotes.ts.max())) + 1
    inner = np.sort(rng.integers(lo, hi, n))
    # a few cuts a microsecond apart: micro-batches that are empty or hold one row
    tight = inner[: n // 10] + 1_000
    return [lo, *sorted({*inner.tolist(), *tight.tolist()}), hi]


def _streamed(
    symbol: str, ticks: TickBatch, quotes: QuoteBatch, cuts: list[int], stop_at: int | None = None
) -> tuple[list[AssetOutput], AssetProcessor]:
    proc = AssetProcessor(symbol, lateness_ns=LATENESS)
    outs = []
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        if stop_at is not None and i == stop_at:
            break
        t = ticks.take((ticks.ts >= a) & (ticks.ts < b))
        q = quotes.take((quotes.ts >= a) & (quotes.ts < b))
        outs.append(proc.process(t, q, position=i))
    return outs, proc


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_symbol_streamed_in_random_micro_batches_equals_one_call_exactly(market, symbol, seed):
    ticks, quotes = _of(market, symbol)
    whole = _whole(symbol, ticks, quotes)
    assert whole.bar_count > 1000
    cuts = _time_cuts(np.random.default_rng(seed), ticks, quotes, 300)
    outs, proc = _streamed(symbol, ticks, quotes, cuts)
    streamed = AssetOutput.concat([*outs, proc.flush()])
    assert streamed.equals(whole)
    assert proc.counters.records == len(ticks) + len(quotes) == whole.records
    assert proc.counters.bars_out == {iv: len(b) for iv, b in whole.bars.items()}
    assert proc.late_rows == 0
    assert proc.position == len(cuts) - 2


@pytest.mark.data
@pytest.mark.parametrize("seed", [0, 1])
def test_real_spy_ticks_validated_and_streamed_in_random_sizes_equal_one_call_exactly(seed):
    raw = pd.read_parquet(shared_data("spy_trade_ticks_20131008.parquet")).rename(columns={"ts": "timestamp"})
    config = ValidationConfig(universe=frozenset({"SPY"}))
    accepted = Validator("tick", config).validate(raw).accepted
    whole = _whole("SPY", accepted, None)
    assert int(whole.bars[NS_PER_MINUTE].trade_count.sum()) == len(raw)

    rng = np.random.default_rng(seed)
    validator = Validator("tick", config)
    proc = AssetProcessor("SPY", lateness_ns=config.out_of_order_tolerance_ns)
    outs = []
    i = 0
    while i < len(raw):
        k = int(rng.choice([1, 7, 1000, 25_000])) * int(rng.integers(1, 4))
        outs.append(proc.process(validator.validate(raw.iloc[i : i + k]).accepted, position=i + k))
        i += k
    outs.append(proc.flush())
    assert AssetOutput.concat(outs).equals(whole)
    assert proc.counters.ticks == len(raw)


@pytest.mark.parametrize("symbol", ["SPY", "BTC-USD"])
def test_checkpoint_restored_mid_stream_continues_exactly_like_the_uninterrupted_run(market, symbol, tmp_path):
    ticks, quotes = _of(market, symbol)
    cuts = _time_cuts(np.random.default_rng(3), ticks, quotes, 120)
    full, full_proc = _streamed(symbol, ticks, quotes, cuts)
    full.append(full_proc.flush())

    half = len(cuts) // 2
    first, proc = _streamed(symbol, ticks, quotes, cuts, stop_at=half)
    store = FileCheckpointStore(tmp_path / "ckpt")
    store.save(symbol, proc.checkpoint(position=half - 1))
    blob = store.load(symbol)
    assert blob is not None
    resumed = AssetProcessor.restore(blob)
    assert resumed.position == half - 1
    assert resumed.counters == proc.counters
    rest = []
    for i in range(half, len(cuts) - 1):
        a, b = cuts[i], cuts[i + 1]
        rest.append(
            resumed.process(
                ticks.take((ticks.ts >= a) & (ticks.ts < b)),
                quotes.take((quotes.ts >= a) & (quotes.ts < b)),
                position=i,
            )
        )
    rest.append(resumed.flush())
    assert AssetOutput.concat(first + rest).equals(AssetOutput.concat(full))
    assert resumed.counters == full_proc.counters


@pytest.mark.parametrize("cut_minutes", [9 * 60 + 7, 15 * 60 + 31])
def test_cutting_the_input_leaves_every_bar_and_feature_before_the_cut_unchanged(market, cut_minutes):
    ticks, quotes = _of(market, "SPY")
    whole = _whole("SPY", ticks, quotes)
    cut = int(min(ticks.ts.min(), quotes.ts.min())) // NS_PER_MINUTE * NS_PER_MINUTE + cut_minutes * NS_PER_MINUTE
    prefix = _whole("SPY", ticks.take(ticks.ts < cut), quotes.take(quotes.ts < cut))
    for iv in (NS_PER_SECOND, NS_PER_MINUTE):
        done = whole.bars[iv].ts + iv <= cut
        assert done.sum() > 10
        assert prefix.bars[iv].take(prefix.bars[iv].ts + iv <= cut).equals(whole.bars[iv].take(done))
        f_whole, f_prefix = whole.features[iv], prefix.features[iv]
        keep = f_prefix.ts + iv <= cut
        assert frames_equal(
            FeatureFrame(f_prefix.ts[keep], {c: v[keep] for c, v in f_prefix.values.items()}),
            FeatureFrame(f_whole.ts[done], {c: v[done] for c, v in f_whole.values.items()}),
        )


def test_input_bars_get_their_own_features_and_pass_through_in_time_order(market):
    bars = market.bars.take(market.bars.symbol == "SPY")
    proc = AssetProcessor("SPY", intervals_ns=(NS_PER_SECOND,))
    half = len(bars) // 2
    shuffled_first = bars.take(np.arange(half)[::-1])
    outs = [proc.process(bars=shuffled_first), proc.process(bars=bars.take(np.arange(half, len(bars))))]
    out = AssetOutput.concat(outs)
    assert out.bars[NS_PER_MINUTE].equals(bars)
    one = AssetProcessor("SPY", intervals_ns=(NS_PER_SECOND,)).process(bars=bars)
    assert frames_equal(out.features[NS_PER_MINUTE], one.features[NS_PER_MINUTE])
    assert proc.counters.bars_in == len(bars)


def test_rows_of_another_symbol_are_refused_naming_the_symbol(market):
    ticks, _ = _of(market, "BTC-USD")
    with pytest.raises(ValueError, match=r"ticks\.symbol='BTC-USD'.*'SPY'"):
        AssetProcessor("SPY").process(ticks)


def test_restore_refuses_bytes_that_hold_something_else():
    import pickle

    with pytest.raises(TypeError, match="holds a dict"):
        AssetProcessor.restore(pickle.dumps({"a": 1}))


def test_file_checkpoint_store_keeps_the_latest_blob_per_key_with_any_characters(tmp_path):
    store = FileCheckpointStore(tmp_path / "new")
    assert store.load("EUR/USD") is None
    store.save("EUR/USD", b"one")
    store.save("EUR/USD", b"two")
    store.save("BTC-USD", b"three")
    assert store.load("EUR/USD") == b"two"
    assert store.load("BTC-USD") == b"three"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["BTC-USD.ckpt", "EUR%2FUSD.ckpt"]
    with pytest.raises(ValueError, match="key=''"):
        store.path("")


def test_empty_batches_produce_nothing_and_count_one_batch():
    proc = AssetProcessor("SPY")
    out = proc.process(TickBatch.empty(), QuoteBatch.empty(), BarBatch.empty())
    assert out.bar_count == 0
    assert out.records == 0
    assert proc.counters.batches == 1


def _ticks(prices: list[float], suspicious: list[bool], t0: int = 0) -> TickBatch:
    n = len(prices)
    return TickBatch(
        ts=t0 + np.arange(n, dtype=np.int64) * NS_PER_SECOND,
        symbol=np.array(["X"] * n, dtype=object),
        price=np.array(prices),
        size=np.ones(n),
        seq=np.arange(n, dtype=np.int64),
        suspicious=np.array(suspicious),
    )


def test_prints_flagged_by_validation_raise_alerts_scored_against_the_last_unflagged_price():
    prices = [100.0, 101.0, 1010.0, 100.5, 10.0, 9.9, 100.7]
    flags = [False, False, True, False, True, True, False]
    proc = AssetProcessor("X", intervals_ns=(NS_PER_MINUTE,), lateness_ns=0)
    out = proc.process(_ticks(prices, flags))
    alerts = out.alerts
    assert alerts is not None
    assert list(alerts.columns) == ["ts", "symbol", "kind", "detector", "score", "severity", "details"]
    assert alerts["ts"].tolist() == [2 * NS_PER_SECOND, 4 * NS_PER_SECOND, 5 * NS_PER_SECOND]
    assert set(alerts["kind"]) == {"price_outlier"}
    expected = [abs(np.log(1010.0 / 101.0)), abs(np.log(10.0 / 100.5)), abs(np.log(9.9 / 100.5))]
    np.testing.assert_allclose(alerts["score"], expected)
    assert '"reference": 101.0' in alerts["details"].iloc[0]
    assert proc.counters.alerts == 3
    assert out.last_price == 100.7
    # any split gives the same alerts: the reference price is carried between micro-batches
    for cut in range(1, len(prices)):
        p = AssetProcessor("X", intervals_ns=(NS_PER_MINUTE,), lateness_ns=0)
        whole = _ticks(prices, flags)
        parts = [p.process(whole.take(slice(0, cut))), p.process(whole.take(slice(cut, None)))]
        joined = AssetOutput.concat(parts).alerts
        assert joined is not None
        pd.testing.assert_frame_equal(joined, alerts)


def test_a_flagged_first_print_has_no_reference_and_a_nan_score():
    proc = AssetProcessor("X", intervals_ns=(NS_PER_MINUTE,), lateness_ns=0)
    out = proc.process(_ticks([5.0, 100.0], [True, False]))
    assert out.alerts is not None
    assert np.isnan(out.alerts["score"].iloc[0])
    assert '"reference": null' in out.alerts["details"].iloc[0]
