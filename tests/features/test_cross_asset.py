"""Cross-asset features: streaming equals batch, pickling and prefix invariance, and known values against pandas."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from features.cross_asset import CrossAssetEngine, CrossAssetFrame, align_closes
from ingest.files import read_market_file
from ingest.records import NS_PER_DAY, NS_PER_MINUTE, BarBatch
from ingest.sources.replay import arch_daily_bars
from ingest.synthetic import SimulationConfig, simulate
from ingest.validation import Validator
from tests.conftest import shared_data

SIM_ASSETS = ("SPY", "QQQ", "AAPL", "MSFT", "TLT", "GLD", "BTC-USD", "ETH-USD", "EURUSD")


# ------------------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def arch_grid() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Real daily closes of SP500, NASDAQ, VIX and WTI (validated bars; WTI holidays and early VIX are gaps)."""
    bars = Validator("bar").validate(arch_daily_bars(), interval_ns=NS_PER_DAY).accepted
    symbols = ("SP500", "NASDAQ", "VIX", "WTI")
    ts, close = align_closes(bars, symbols)
    return ts, close, symbols


@pytest.fixture(scope="module")
def minute_grid() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Real one-minute closes of SPY, AAPL and BTCUSD; each file's days are shifted onto SPY's first day.

    The three files cover different dates, so their times are moved by whole days to overlap (the minute of the
    day is kept): the correlations are then computed over real, irregular gaps (pre-market, overnight).
    """
    frames = []
    start = pd.Timestamp("2013-10-07", tz="UTC")
    for name in ("spy", "aapl", "btcusd"):
        _, frame = read_market_file(shared_data(f"{name}_trade_bars_1min.csv.gz"))
        t = pd.to_datetime(frame["timestamp"], utc=True)
        frame["timestamp"] = t - (t.min().normalize() - start)
        frames.append(frame)
    raw = pd.concat(frames, ignore_index=True)
    bars = Validator("bar").validate(raw, interval_ns=NS_PER_MINUTE).accepted
    symbols = ("SPY", "AAPL", "BTCUSD")
    ts, close = align_closes(bars, symbols)
    return ts, close, symbols


@pytest.fixture(scope="module")
def sim() -> object:
    return simulate(SimulationConfig(seed=1, days=2, assets=SIM_ASSETS, anomalies=False))


def gbm(n: int, k: int, seed: int, nan_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated random-walk closes (one-minute rows), optionally with missing bars."""
    rng = np.random.default_rng(seed)
    cov = 0.4 * np.ones((k, k)) + 0.6 * np.eye(k)
    ret = rng.multivariate_normal(np.zeros(k), cov, size=n) * 0.001
    close = 100.0 * np.exp(np.cumsum(ret, axis=0))
    close[rng.random((n, k)) < nan_rate] = np.nan
    return np.arange(n, dtype=np.int64) * NS_PER_MINUTE, close


def stream(engine: CrossAssetEngine, ts: np.ndarray, close: np.ndarray, seed: int) -> CrossAssetFrame:
    rng = np.random.default_rng(seed)
    state = engine.init_state()
    parts, i = [], 0
    while i < len(ts):
        n = int(rng.choice([1, 7, 100, 10_000]))
        frame, state = engine.step(state, ts[i : i + n], close[i : i + n])
        parts.append(frame)
        i += n
    return CrossAssetFrame.concat(parts)


def assert_frames_equal(a: CrossAssetFrame, b: CrossAssetFrame) -> None:
    assert np.array_equal(a.ts, b.ts)
    assert list(a.values) == list(b.values)
    for c in a.values:
        assert np.array_equal(a.values[c], b.values[c], equal_nan=True), c


def returns(close: np.ndarray) -> pd.DataFrame:
    """Reference log returns against each symbol's previous available close."""
    c = pd.DataFrame(close)
    return np.log(c / c.ffill().shift(1)).where(c.notna())


# ------------------------------------------------------------------------------------------------------ parity
def test_streaming_arch_daily_history_in_random_batches_equals_batch(arch_grid):
    ts, close, symbols = arch_grid
    engine = CrossAssetEngine(symbols, window=60, halflife=20, market="SP500", lags=(1, 2), min_periods=40)
    batch = engine.batch(ts, close)
    assert_frames_equal(stream(engine, ts, close, seed=3), batch)
    # VIX only starts in the arch data later: its columns are finite once it trades
    assert np.isfinite(batch.values["vixcorr_60_SP500"]).sum() > 1000
    assert np.nanmean(batch.values["vixcorr_60_SP500"]) < -0.5


def test_streaming_real_minute_bars_in_random_batches_equals_batch(minute_grid):
    ts, close, symbols = minute_grid
    engine = CrossAssetEngine(symbols, window=30, halflife=10, market="SPY", leadlag="all", min_periods=20)
    batch = engine.batch(ts, close)
    assert_frames_equal(stream(engine, ts, close, seed=4), batch)
    assert np.isfinite(batch.values["corr_30_SPY_AAPL"]).sum() > 500


def test_streaming_simulated_universe_in_random_batches_equals_batch(sim):
    ts, close = align_closes(sim.bars, SIM_ASSETS)
    engine = CrossAssetEngine(SIM_ASSETS, window=50, halflife=15)
    assert_frames_equal(stream(engine, ts, close, seed=5), engine.batch(ts, close))


def test_state_pickled_halfway_resumes_identically(arch_grid):
    ts, close, symbols = arch_grid
    engine = CrossAssetEngine(symbols, window=40, market="SP500")
    half = len(ts) // 2 + 13
    first, state = engine.step(engine.init_state(), ts[:half], close[:half])
    state = pickle.loads(pickle.dumps(state))
    second, _ = engine.step(state, ts[half:], close[half:])
    assert_frames_equal(CrossAssetFrame.concat([first, second]), engine.batch(ts, close))


def test_cutting_history_leaves_earlier_values_unchanged(minute_grid):
    ts, close, symbols = minute_grid
    engine = CrossAssetEngine(symbols, window=25, market="SPY", min_periods=10)
    full = engine.batch(ts, close)
    for cut in (1, 24, 25, 777, len(ts) - 1):
        part = engine.batch(ts[:cut], close[:cut])
        for c, v in part.values.items():
            assert np.array_equal(v, full.values[c][:cut], equal_nan=True), (cut, c)


# ------------------------------------------------------------------------------------------------ known values
def pandas_pair(x: pd.Series, y: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The pairwise-complete series: both NaN where either is."""
    both = x.notna() & y.notna()
    return x.where(both), y.where(both)


@pytest.mark.parametrize("nan_rate", [0.0, 0.1])
def test_windowed_correlation_beta_and_leadlag_match_pandas_rolling(nan_rate):
    ts, close = gbm(700, 4, seed=7, nan_rate=nan_rate)
    symbols = ("SPY", "A", "B", "C")
    w, minp = 30, (30 if nan_rate == 0 else 18)
    engine = CrossAssetEngine(symbols, window=w, min_periods=minp, lags=(1, 3), leadlag="all", vix=None)
    got = engine.batch(ts, close).values
    r = returns(close)
    checked = 0
    for i, a in enumerate(symbols):
        for j, b in enumerate(symbols):
            if i < j:
                x, y = pandas_pair(r[i], r[j])
                want = x.rolling(w, min_periods=minp).corr(y).to_numpy()
                np.testing.assert_allclose(got[f"corr_{w}_{a}_{b}"], want, rtol=1e-9, atol=1e-12)
                checked += np.isfinite(want).sum()
            if i != j and a != "SPY" and j == 0:
                x, m = pandas_pair(r[i], r[0])
                want = (x.rolling(w, min_periods=minp).cov(m) / m.rolling(w, min_periods=minp).var()).to_numpy()
                np.testing.assert_allclose(got[f"beta_{w}_{a}"], want, rtol=1e-9, atol=1e-12)
            for k, prefix in ((1, "leadlag"), (3, "leadlag3")):
                if i != j:
                    x, y = pandas_pair(r[i].shift(k), r[j])
                    want = x.rolling(w, min_periods=minp).corr(y).to_numpy()
                    np.testing.assert_allclose(got[f"{prefix}_{w}_{a}_{b}"], want, rtol=1e-9, atol=1e-12)
    assert checked > 5 * 600


@pytest.mark.parametrize("nan_rate", [0.0, 0.1])
def test_ew_correlation_matches_pandas_ewm_adjust_false(nan_rate):
    ts, close = gbm(900, 3, seed=11, nan_rate=nan_rate)
    symbols = ("SPY", "QQQ", "TLT")
    engine = CrossAssetEngine(symbols, window=20, halflife=12.5, ew_min_periods=5, vix=None)
    got = engine.batch(ts, close).values
    r = returns(close)
    for i, a in enumerate(symbols):
        for j in range(i + 1, len(symbols)):
            x, y = pandas_pair(r[i], r[j])
            ewm = {"halflife": 12.5, "adjust": False, "ignore_na": True, "min_periods": 5}
            cov = x.ewm(**ewm).cov(y, bias=True)
            want = (cov / np.sqrt(x.ewm(**ewm).var(bias=True) * y.ewm(**ewm).var(bias=True))).to_numpy()
            if nan_rate == 0:
                np.testing.assert_allclose(want, x.ewm(**ewm).corr(y).to_numpy(), rtol=1e-12)
            np.testing.assert_allclose(got[f"ewcorr_12p5_{a}_{symbols[j]}"], want, rtol=1e-9, atol=1e-12)


def test_vix_level_change_and_regime_follow_the_thresholds():
    vix = np.array([12.0, 14.99, 15.0, 24.99, 25.0, np.nan, 34.99, 35.0, 80.0])
    spy = 400.0 + np.arange(len(vix))
    ts = np.arange(len(vix), dtype=np.int64) * NS_PER_DAY
    frame = CrossAssetEngine(["SPY", "VIX"], window=3).batch(ts, np.column_stack([spy, vix])).values
    np.testing.assert_array_equal(frame["vix_regime"], [0, 0, 1, 1, 2, np.nan, 2, 3, 3])
    np.testing.assert_array_equal(frame["vix_level"], vix)
    # the change after a missing bar spans the gap
    assert frame["vix_change"][6] == math.log(34.99 / 25.0)
    assert np.isnan(frame["vix_change"][0])
    assert np.isnan(frame["vix_change"][5])
    custom = CrossAssetEngine(["SPY", "VIX"], window=3, vix_thresholds=(20.0,)).batch(ts, np.column_stack([spy, vix]))
    np.testing.assert_array_equal(custom.values["vix_regime"], [0, 0, 0, 1, 1, np.nan, 1, 1, 1])


def test_vixcorr_is_the_pair_correlation_named_by_asset(arch_grid):
    ts, close, symbols = arch_grid
    frame = CrossAssetEngine(symbols, window=50, market="SP500").batch(ts, close).values
    assert np.array_equal(frame["vixcorr_50_WTI"], frame["corr_50_VIX_WTI"], equal_nan=True)
    assert np.array_equal(frame["vixcorr_50_SP500"], frame["corr_50_SP500_VIX"], equal_nan=True)


def test_simulated_minute_bar_correlations_average_near_the_target(sim):
    ts, close = align_closes(sim.bars, SIM_ASSETS)
    frame = CrossAssetEngine(SIM_ASSETS, window=60, halflife=30, market="SPY").batch(ts, close).values
    target = sim.target_correlation
    got, want = [], []
    for i, a in enumerate(SIM_ASSETS):
        for b in SIM_ASSETS[i + 1 :]:
            got.append(np.nanmean(frame[f"corr_60_{a}_{b}"]))
            want.append(target.loc[a, b])
    diff = np.array(got) - np.array(want)
    # bars lower correlations (bid-ask bounce, asynchronous last prints); two days of data are noisy
    assert np.abs(diff).mean() < 0.08
    assert np.abs(diff).max() < 0.3
    assert np.corrcoef(got, want)[0, 1] > 0.95


def test_matrices_equal_the_last_row_and_are_symmetric(minute_grid):
    ts, close, symbols = minute_grid
    engine = CrossAssetEngine(symbols, window=30, market="SPY", min_periods=10, ew_min_periods=10)
    n = 2000
    frame, state = engine.step(engine.init_state(), ts[:n], close[:n])
    mats = engine.matrices(state)
    assert mats.ts == int(ts[n - 1])
    for i, a in enumerate(symbols):
        for j in range(i + 1, len(symbols)):
            b = symbols[j]
            assert np.array_equal(mats.corr[i, j], frame.values[f"corr_30_{a}_{b}"][-1], equal_nan=True)
            assert np.array_equal(mats.ewcorr[j, i], frame.values[f"ewcorr_20_{a}_{b}"][-1], equal_nan=True)
    assert np.array_equal(mats.corr, mats.corr.T, equal_nan=True)
    assert set(np.diag(mats.ewcorr)) <= {1.0}
    assert list(mats.to_frames()["corr"].columns) == list(symbols)
    assert engine.matrices(engine.init_state()).ts is None


def test_flat_symbol_gives_nan_correlation_and_zero_beta():
    ts, close = gbm(200, 3, seed=2)
    close[:, 2] = 50.0
    close[150:, 1] = close[149, 1]
    frame = CrossAssetEngine(["SPY", "A", "FLAT"], window=20, vix=None).batch(ts, close).values
    assert np.isnan(frame["corr_20_SPY_FLAT"]).all()
    assert np.isnan(frame["ewcorr_20_SPY_FLAT"]).all()
    assert (frame["beta_20_FLAT"][20:] == 0.0).all()
    # once A has been flat for a whole window its correlation is NaN, not a ratio of rounding residues
    assert np.isnan(frame["corr_20_SPY_A"][170:]).all()
    assert np.isfinite(frame["corr_20_SPY_A"][20:150]).all()


def test_warmup_is_min_periods_pairwise_complete_rows():
    ts, close = gbm(100, 2, seed=3)
    frame = CrossAssetEngine(["SPY", "B"], window=10, min_periods=6, ew_min_periods=4, vix=None).batch(ts, close)
    v = frame.values
    # row 0 has no return; rows 1..6 give 6 returns
    assert np.isnan(v["corr_10_SPY_B"][:6]).all()
    assert np.isfinite(v["corr_10_SPY_B"][6:]).all()
    assert np.isnan(v["ewcorr_20_SPY_B"][:4]).all()
    assert np.isfinite(v["ewcorr_20_SPY_B"][4:]).all()
    assert np.isnan(v["leadlag_10_SPY_B"][:7]).all()
    assert np.isfinite(v["leadlag_10_SPY_B"][7:]).all()
    assert frame.to_frame().index[0] == pd.Timestamp(0, tz="UTC")


# --------------------------------------------------------------------------------------------- columns, errors
def test_columns_are_named_by_statistic_parameters_and_symbols():
    engine = CrossAssetEngine(["SPY", "QQQ", "VIX", "GLD"], window=50, halflife=20, lags=(1, 5))
    cols = engine.columns
    assert cols[:6] == tuple(
        f"corr_50_{a}_{b}" for a, b in [("SPY", "QQQ"), ("SPY", "VIX"), ("SPY", "GLD"), ("QQQ", "VIX"),
                                        ("QQQ", "GLD"), ("VIX", "GLD")]
    )  # fmt: skip
    assert "ewcorr_20_QQQ_GLD" in cols
    assert [c for c in cols if c.startswith("beta")] == ["beta_50_QQQ", "beta_50_VIX", "beta_50_GLD"]
    assert {"vix_level", "vix_change", "vix_regime", "vixcorr_50_GLD"} <= set(cols)
    # hubs: ordered pairs with SPY or VIX on either side, SPY/VIX once each way
    assert len([c for c in cols if c.startswith("leadlag_")]) == 2 * 3 + 2 * 2
    assert "leadlag5_50_GLD_VIX" in cols
    assert "leadlag_50_QQQ_GLD" not in cols
    assert len(set(cols)) == len(cols)
    n_all = len(CrossAssetEngine(["SPY", "QQQ", "GLD"], leadlag="all").columns)
    assert n_all == 3 + 3 + 2 + 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbols": ["SPY"]}, "symbols="),
        ({"symbols": ["SPY", "SPY"]}, "'SPY' appears more than once"),
        ({"window": 1}, "window=1"),
        ({"halflife": 0}, "halflife=0"),
        ({"market": "IWM"}, "market='IWM'"),
        ({"lags": (0,)}, "lags=0"),
        ({"leadlag": "some"}, "leadlag='some'"),
        ({"min_periods": 60}, "min_periods=60"),
        ({"vix_thresholds": (25.0, 15.0)}, "vix_thresholds="),
        ({"symbols": ["SPY", "A_B", "C", "A", "B_C"]}, "ambiguous"),
    ],
)
def test_bad_parameters_are_refused_naming_them(kwargs, message):
    params = {"symbols": ["SPY", "QQQ"], **kwargs}
    with pytest.raises(ValueError, match=message):
        CrossAssetEngine(**params)


def test_bad_rows_are_refused_naming_time_symbol_and_value():
    engine = CrossAssetEngine(["SPY", "QQQ"])
    ts, close = gbm(10, 2, seed=1)
    close[4, 1] = -1.0
    with pytest.raises(ValueError, match=r"close=-1.0: at ts=240000000000 symbol='QQQ'"):
        engine.batch(ts, close)
    with pytest.raises(ValueError, match="strictly increasing"):
        engine.batch(ts[::-1].copy(), gbm(10, 2, seed=1)[1])
    state = engine.init_state()
    _, state = engine.step(state, ts[:5], gbm(10, 2, seed=1)[1][:5])
    with pytest.raises(ValueError, match="after the last row"):
        engine.step(state, ts[3:], gbm(10, 2, seed=1)[1][3:])
    with pytest.raises(ValueError, match="state"):
        CrossAssetEngine(["SPY", "IWM"]).step(state, ts, close)


def bars_of(rows: list[tuple[int, str, float, int]]) -> BarBatch:
    frame = pd.DataFrame(rows, columns=["ts", "symbol", "close", "interval_ns"])
    for c in ("open", "high", "low"):
        frame[c] = frame["close"]
    for c in ("volume", "trade_count", "quote_count", "suspicious_count"):
        frame[c] = 0
    for c in ("vwap", "bid", "ask", "bid_size", "ask_size", "spread"):
        frame[c] = np.nan
    return BarBatch.from_frame(frame)


def test_align_closes_takes_the_union_of_times_without_filling():
    m = NS_PER_MINUTE
    bars = bars_of([(2 * m, "B", 3.0, m), (0, "A", 1.0, m), (m, "A", 2.0, m), (0, "X", 9.0, m)])
    ts, close = align_closes(bars, ["A", "B", "C"])
    assert ts.tolist() == [0, m, 2 * m]
    np.testing.assert_array_equal(close, [[1.0, np.nan, np.nan], [2.0, np.nan, np.nan], [np.nan, 3.0, np.nan]])


def test_align_closes_refuses_duplicates_and_mixed_intervals():
    m = NS_PER_MINUTE
    with pytest.raises(ValueError, match="symbol='A' has more than one bar"):
        align_closes(bars_of([(0, "A", 1.0, m), (0, "A", 2.0, m)]), ["A"])
    with pytest.raises(ValueError, match="interval_ns="):
        align_closes(bars_of([(0, "A", 1.0, m), (0, "B", 2.0, 5 * m)]), ["A", "B"])


def test_batch_bars_aligns_then_computes(sim):
    engine = CrossAssetEngine(SIM_ASSETS, window=20)
    assert_frames_equal(engine.batch_bars(sim.bars), engine.batch(*align_closes(sim.bars, SIM_ASSETS)))
