"""The synthetic market: determinism, labelled anomalies visible in the data, and stylised facts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ingest.records import NS_PER_MINUTE, BarBatch
from ingest.synthetic import (
    KINDS,
    UNIVERSE,
    Label,
    SimulationConfig,
    SimulationResult,
    simulate,
    write_simulation,
)
from ingest.synthetic.anomalies import max_drawdown
from ingest.synthetic.ticks import MinutePath, bridge_log_mid

HOUR_NS = 60 * NS_PER_MINUTE
SMALL = SimulationConfig(seed=5, days=1, assets=("SPY", "BTC-USD", "EURUSD", "TLT"))


@pytest.fixture(scope="module")
def full() -> SimulationResult:
    """Two days of the whole universe with two anomalies of each kind per day."""
    return simulate(SimulationConfig(seed=11, days=2, anomalies_per_day=2))


@pytest.fixture(scope="module")
def small_pair() -> tuple[SimulationResult, SimulationResult]:
    return simulate(SMALL), simulate(SMALL)


@pytest.fixture(scope="module")
def trades(full: SimulationResult) -> pd.DataFrame:
    return full.trades.to_frame()


@pytest.fixture(scope="module")
def quotes(full: SimulationResult) -> pd.DataFrame:
    frame = full.quotes.to_frame()
    frame["mid"] = (frame["bid"] + frame["ask"]) / 2.0
    frame["spread_bps"] = (frame["ask"] - frame["bid"]) / frame["mid"] * 1e4
    return frame


@pytest.fixture(scope="module")
def bars(full: SimulationResult) -> pd.DataFrame:
    return full.bars.to_frame()


def _labelled(labels: list[Label], symbol: str, ts: np.ndarray, margin_ns: int = 0) -> np.ndarray:
    """Timestamps inside a labelled window of ``symbol``, widened by ``margin_ns`` on each side."""
    out = np.zeros(ts.shape, dtype=bool)
    for lab in labels:
        if lab.symbol == symbol:
            out |= (ts >= lab.start - margin_ns) & (ts < lab.end + margin_ns)
    return out


def _clean_returns(bars: pd.DataFrame, labels: list[Label]) -> pd.DataFrame:
    """Log returns between consecutive one-minute bar closes, NaN across gaps and inside labelled windows."""
    close = bars.pivot(index="ts", columns="symbol", values="close")
    full_index = np.arange(close.index.min(), close.index.max() + NS_PER_MINUTE, NS_PER_MINUTE)
    close = close.reindex(full_index)
    returns = close.transform(np.log).diff()
    for symbol in returns.columns:
        returns.loc[_labelled(labels, symbol, returns.index.to_numpy()), symbol] = np.nan
    return returns


def _bar_returns(bars: pd.DataFrame, symbol: str) -> pd.Series:
    one = bars[bars["symbol"] == symbol].set_index("ts")["close"]
    one = one.reindex(np.arange(one.index.min(), one.index.max() + NS_PER_MINUTE, NS_PER_MINUTE))
    return one.transform(np.log).diff()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------
# Determinism and output files
# --------------------------------------------------------------------------------------------------------


def test_same_seed_gives_equal_batches_labels_and_regimes(
    small_pair: tuple[SimulationResult, SimulationResult],
) -> None:
    a, b = small_pair
    assert a.trades.equals(b.trades)
    assert a.quotes.equals(b.quotes)
    assert a.bars.equals(b.bars)
    assert a.labels == b.labels
    pd.testing.assert_frame_equal(a.regimes, b.regimes)


def test_same_seed_writes_identical_bytes(
    small_pair: tuple[SimulationResult, SimulationResult], tmp_path: Path
) -> None:
    first = write_simulation(small_pair[0], tmp_path / "a")
    second = write_simulation(small_pair[1], tmp_path / "b")
    assert set(first) == {"trades", "quotes", "bars", "labels", "regimes"}
    for name in first:
        assert _sha256(first[name]) == _sha256(second[name]), name


def test_different_seed_gives_different_data(small_pair: tuple[SimulationResult, SimulationResult]) -> None:
    other = simulate(SimulationConfig(seed=SMALL.seed + 1, days=SMALL.days, assets=SMALL.assets))
    assert not other.trades.equals(small_pair[0].trades)
    assert not other.quotes.equals(small_pair[0].quotes)
    assert other.labels != small_pair[0].labels


def test_written_files_follow_the_input_file_contract(
    small_pair: tuple[SimulationResult, SimulationResult], tmp_path: Path
) -> None:
    result = small_pair[0]
    paths = write_simulation(result, tmp_path)
    trades = pd.read_parquet(paths["trades"])
    quotes = pd.read_parquet(paths["quotes"])
    bars = pd.read_parquet(paths["bars"])
    assert list(trades.columns[:4]) == ["timestamp", "symbol", "price", "size"]
    assert list(quotes.columns[:6]) == ["timestamp", "symbol", "bid", "ask", "bid_size", "ask_size"]
    assert list(bars.columns[:7]) == ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
    for frame in (trades, quotes, bars):
        assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert np.array_equal(trades["timestamp"].astype("int64").to_numpy(), result.trades.ts)
    assert np.array_equal(bars["close"].to_numpy(), result.bars.close)
    labels = pd.read_csv(paths["labels"])
    assert list(labels.columns) == ["symbol", "start", "end", "kind", "magnitude"]
    starts = pd.to_datetime(labels["start"], utc=True, format="ISO8601")
    assert [int(t.value) for t in starts] == [lab.start for lab in result.labels]
    regimes = pd.read_csv(paths["regimes"])
    assert list(regimes.columns) == list(result.regimes.columns)


# --------------------------------------------------------------------------------------------------------
# Labelled anomalies
# --------------------------------------------------------------------------------------------------------


def test_one_day_run_labels_every_kind_inside_the_symbols_session(
    small_pair: tuple[SimulationResult, SimulationResult],
) -> None:
    labels = small_pair[0].labels
    assert {lab.kind for lab in labels} == set(KINDS)
    for lab in labels:
        minutes = np.arange(lab.start, lab.end, NS_PER_MINUTE, dtype=np.int64)
        assert UNIVERSE[lab.symbol].session.is_open(minutes).all(), lab
        assert lab.start % NS_PER_MINUTE == 0
        assert lab.end > lab.start


def test_run_without_anomalies_has_no_labels() -> None:
    result = simulate(SimulationConfig(seed=2, assets=("SPY",), anomalies=False))
    assert result.labels == []


def _kind(full: SimulationResult, kind: str) -> list[Label]:
    found = [lab for lab in full.labels if lab.kind == kind]
    assert found, f"no {kind} label"
    return found


def test_flash_crash_drawdown_in_window_reaches_labelled_magnitude(
    full: SimulationResult, trades: pd.DataFrame, quotes: pd.DataFrame
) -> None:
    # The label records the drawdown measured on the emitted prints, rounded down, so no tolerance is needed.
    for lab in _kind(full, "flash_crash"):
        if UNIVERSE[lab.symbol].has_trades:
            one = trades[(trades["symbol"] == lab.symbol) & (trades["ts"] >= lab.start) & (trades["ts"] < lab.end)]
            prices = one["price"].to_numpy()
        else:
            one = quotes[(quotes["symbol"] == lab.symbol) & (quotes["ts"] >= lab.start) & (quotes["ts"] < lab.end)]
            prices = one["mid"].to_numpy()
        assert max_drawdown(prices) >= lab.magnitude, lab
        assert lab.magnitude >= 0.01, lab


def test_volatility_spike_window_is_more_volatile_than_its_surroundings(
    full: SimulationResult, bars: pd.DataFrame
) -> None:
    for lab in _kind(full, "volatility_spike"):
        returns = _bar_returns(bars, lab.symbol)
        ts = returns.index.to_numpy()
        inside = (ts > lab.start) & (ts < lab.end)
        around = ((ts > lab.start - HOUR_NS) & (ts < lab.start)) | ((ts > lab.end) & (ts < lab.end + HOUR_NS))
        assert returns[inside].std() > 2.0 * returns[around].std(), lab


def test_volume_surge_window_trades_several_times_the_normal_volume(full: SimulationResult, bars: pd.DataFrame) -> None:
    for lab in _kind(full, "volume_surge"):
        one = bars[bars["symbol"] == lab.symbol]
        inside = (one["ts"] >= lab.start) & (one["ts"] < lab.end)
        around = ((one["ts"] >= lab.start - HOUR_NS) & (one["ts"] < lab.start)) | (
            (one["ts"] >= lab.end) & (one["ts"] < lab.end + HOUR_NS)
        )
        assert one.loc[inside, "volume"].mean() > 2.5 * one.loc[around, "volume"].mean(), lab


def test_spread_blowout_window_quotes_wider_than_outside(full: SimulationResult, quotes: pd.DataFrame) -> None:
    for lab in _kind(full, "spread_blowout"):
        one = quotes[quotes["symbol"] == lab.symbol]
        inside = (one["ts"] >= lab.start) & (one["ts"] < lab.end)
        around = ((one["ts"] >= lab.start - HOUR_NS) & (one["ts"] < lab.start)) | (
            (one["ts"] >= lab.end) & (one["ts"] < lab.end + HOUR_NS)
        )
        # Rounding bid down and ask up to the tick widens every quote by about a tick, which compresses the
        # ratio for instruments normally quoted one or two ticks wide (the multiplier is at least 6).
        assert one.loc[inside, "spread_bps"].mean() > 2.5 * one.loc[around, "spread_bps"].mean(), lab


def test_data_gap_window_has_no_trades_or_quotes_but_its_edges_do(
    full: SimulationResult, trades: pd.DataFrame, quotes: pd.DataFrame
) -> None:
    for lab in _kind(full, "data_gap"):
        assert lab.magnitude == (lab.end - lab.start) / NS_PER_MINUTE
        for frame in (trades, quotes):
            one = frame[frame["symbol"] == lab.symbol]
            if one.empty:
                continue
            assert not ((one["ts"] >= lab.start) & (one["ts"] < lab.end)).any(), lab
            assert ((one["ts"] >= lab.start - 10 * NS_PER_MINUTE) & (one["ts"] < lab.start)).any(), lab
            assert ((one["ts"] >= lab.end) & (one["ts"] < lab.end + 10 * NS_PER_MINUTE)).any(), lab


def test_regime_change_raises_volatility_against_the_hour_before(full: SimulationResult, bars: pd.DataFrame) -> None:
    for lab in _kind(full, "regime_change"):
        returns = _bar_returns(bars, lab.symbol)
        ts = returns.index.to_numpy()
        after = returns[(ts > lab.start) & (ts < lab.end)]
        before = returns[(ts > lab.start - HOUR_NS) & (ts < lab.start)]
        assert lab.magnitude > 1.0
        assert after.std() > 1.5 * before.std(), lab


# --------------------------------------------------------------------------------------------------------
# Statistical sanity (labelled windows excluded)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["SPY", "AAPL", "BTC-USD", "EURUSD"])
def test_one_minute_returns_are_fat_tailed(full: SimulationResult, bars: pd.DataFrame, symbol: str) -> None:
    # scipy's Fisher convention: excess kurtosis > 0 is Pearson kurtosis > 3, the normal's value.
    returns = _clean_returns(bars, full.labels)[symbol].dropna()
    assert stats.kurtosis(returns, fisher=True) > 0.0


def test_absolute_returns_cluster(full: SimulationResult, bars: pd.DataFrame) -> None:
    returns = _clean_returns(bars, full.labels)[["SPY", "AAPL", "BTC-USD", "EURUSD"]].abs()
    acf = returns.apply(lambda column: column.autocorr(lag=1))
    assert (acf > 0).all(), acf
    # Averaged over the four, clustering must also clear two standard errors of an independent series.
    assert acf.mean() > 2.0 / np.sqrt(returns.count().min()), acf


@pytest.mark.parametrize(
    ("a", "b", "tolerance"),
    [
        # Bar-close returns are attenuated by asynchronous last prints (Epps effect), most where fewer
        # prints arrive per minute, hence the wider band for crypto.
        ("SPY", "QQQ", 0.1),
        ("SPY", "TLT", 0.12),
        ("AAPL", "MSFT", 0.15),
        ("BTC-USD", "ETH-USD", 0.15),
        ("SPY", "BTC-USD", 0.15),
    ],
)
def test_realised_correlation_is_near_the_target(
    full: SimulationResult, bars: pd.DataFrame, a: str, b: str, tolerance: float
) -> None:
    pair = _clean_returns(bars, full.labels)[[a, b]].dropna()
    assert len(pair) > 300
    realised = pair[a].corr(pair[b])
    target = full.target_correlation.to_numpy()[list(UNIVERSE).index(a), list(UNIVERSE).index(b)]
    assert abs(realised - target) < tolerance, realised


def test_target_correlation_is_a_valid_correlation_matrix_with_the_intended_structure(full: SimulationResult) -> None:
    corr = full.target_correlation
    assert list(corr.index) == list(UNIVERSE)
    assert np.allclose(corr.to_numpy(), corr.to_numpy().T)
    assert np.allclose(np.diag(corr.to_numpy()), 1.0)
    assert np.linalg.eigvalsh(corr.to_numpy()).min() > 0
    assert corr.loc["SPY", "QQQ"] == pytest.approx(0.9, abs=0.05)
    assert corr.loc["AAPL", "GOOGL"] == pytest.approx(0.6, abs=0.1)
    assert corr.loc["BTC-USD", "ETH-USD"] == pytest.approx(0.7, abs=0.05)
    assert corr.loc["BTC-USD", "SPY"] == pytest.approx(0.2, abs=0.1)
    assert corr.loc["SPY", "TLT"] == pytest.approx(-0.3, abs=0.05)
    assert corr.loc["GLD", "SLV"] == pytest.approx(0.8, abs=0.05)


def test_us_session_volume_is_u_shaped(full: SimulationResult, bars: pd.DataFrame) -> None:
    us = [s for s, spec in UNIVERSE.items() if spec.session.kind == "us_equity"]
    one = bars[bars["symbol"].isin(us)].copy()
    for symbol in us:
        mine = one["symbol"] == symbol
        one.loc[mine & _labelled(full.labels, symbol, one["ts"].to_numpy()), "volume"] = np.nan
    one["minute"] = (one["ts"] // NS_PER_MINUTE) % 1440 - (14 * 60 + 30)
    profile = one.groupby("minute")["volume"].mean()
    opening, closing = profile.loc[0:29].mean(), profile.loc[360:389].mean()
    midday = profile.loc[150:269].mean()
    assert opening > 1.5 * midday
    assert closing > 1.5 * midday


@pytest.mark.parametrize("symbol", ["BTC-USD", "TSLA", "EURUSD"])
def test_spread_widens_with_volatility(
    full: SimulationResult, bars: pd.DataFrame, quotes: pd.DataFrame, symbol: str
) -> None:
    one = quotes[quotes["symbol"] == symbol]
    spread = one.groupby(one["ts"] // NS_PER_MINUTE * NS_PER_MINUTE)["spread_bps"].mean()
    vol = _bar_returns(bars, symbol).rolling(15, min_periods=10).std()
    joined = pd.concat([spread.rename("spread"), vol.rename("vol")], axis=1).dropna()
    joined = joined[~_labelled(full.labels, symbol, joined.index.to_numpy())]
    rho = stats.spearmanr(joined["spread"], joined["vol"]).statistic
    assert rho > 0.2


def test_no_trades_or_quotes_outside_sessions(trades: pd.DataFrame, quotes: pd.DataFrame) -> None:
    for frame in (trades, quotes):
        for symbol, one in frame.groupby("symbol"):
            minute = one["ts"].to_numpy() // NS_PER_MINUTE * NS_PER_MINUTE
            assert UNIVERSE[str(symbol)].session.is_open(minute).all(), symbol


def test_fx_is_quote_only_and_every_other_class_trades(trades: pd.DataFrame, quotes: pd.DataFrame) -> None:
    fx = {s for s, spec in UNIVERSE.items() if spec.asset_class == "fx"}
    assert fx == {"EURUSD", "GBPUSD", "USDJPY"}
    assert set(trades["symbol"]) == set(UNIVERSE) - fx
    assert set(quotes["symbol"]) == set(UNIVERSE)


def test_quotes_are_never_crossed_and_prices_and_sizes_positive(trades: pd.DataFrame, quotes: pd.DataFrame) -> None:
    assert (quotes["bid"] < quotes["ask"]).all()
    assert (quotes["bid"] > 0).all()
    assert (quotes[["bid_size", "ask_size"]] > 0).all().all()
    assert (trades["price"] > 0).all()
    assert (trades["size"] > 0).all()


def test_prices_sit_on_the_tick_grid(trades: pd.DataFrame, quotes: pd.DataFrame) -> None:
    for symbol, one in quotes.groupby("symbol"):
        tick = UNIVERSE[str(symbol)].tick_size
        ticks = one[["bid", "ask"]].to_numpy() / tick
        assert np.allclose(ticks, np.round(ticks), atol=1e-6), symbol
    equity = trades[trades["symbol"] == "AAPL"]
    assert np.allclose(equity["size"], np.round(equity["size"]))


def test_batches_are_sorted_and_seq_strictly_increases_per_symbol(full: SimulationResult) -> None:
    for batch in (full.trades, full.quotes):
        frame = batch.to_frame()
        assert (np.diff(frame["ts"].to_numpy()) >= 0).all()
        keys = frame[["ts", "symbol", "seq"]]
        assert keys.equals(keys.sort_values(["ts", "symbol", "seq"], kind="stable"))
        for _, seq in frame.groupby("symbol")["seq"]:
            values = seq.to_numpy()
            assert values[0] == 0
            assert (np.diff(values) == 1).all()


def test_bars_aggregate_trades_and_quotes_per_minute(
    full: SimulationResult, trades: pd.DataFrame, quotes: pd.DataFrame, bars: pd.DataFrame
) -> None:
    assert bars["trade_count"].sum() == len(trades)
    assert bars["quote_count"].sum() == len(quotes)
    assert bars["volume"].sum() == pytest.approx(trades["size"].sum())
    assert (bars["interval_ns"] == NS_PER_MINUTE).all()
    assert (bars["suspicious_count"] == 0).all()
    assert (bars["high"] >= bars[["open", "close", "low"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert np.allclose(bars["spread"].dropna(), (bars["ask"] - bars["bid"]).dropna())
    fx = bars[bars["symbol"] == "EURUSD"]
    assert (fx["volume"] == 0).all()
    assert (fx["trade_count"] == 0).all()
    assert fx["vwap"].isna().all()
    assert bars.equals(bars.sort_values(["ts", "symbol"], kind="stable"))
    spy = full.bars.take(full.bars.symbol == "SPY")
    assert isinstance(spy, BarBatch)
    assert len(spy.to_bars()) == len(spy)


def test_regime_path_covers_the_run_without_holes(full: SimulationResult) -> None:
    regimes = full.regimes
    assert regimes["start"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert regimes["end"].iloc[-1] == pd.Timestamp("2024-01-04", tz="UTC")
    assert (regimes["start"].iloc[1:].to_numpy() == regimes["end"].iloc[:-1].to_numpy()).all()
    assert set(regimes["regime"]) <= {"calm", "bull", "bear", "crisis"}


def test_equity_trade_counts_per_day_are_in_the_realistic_range(trades: pd.DataFrame) -> None:
    equities = [s for s, spec in UNIVERSE.items() if spec.asset_class == "equity"]
    one = trades[trades["symbol"].isin(equities)]
    per_day = one.groupby([one["ts"] // (1440 * NS_PER_MINUTE), "symbol"]).size()
    # A typical day; a crisis regime or a volatility burst may double or triple one.
    assert 5_000 <= per_day.median() <= 30_000, per_day
    assert per_day.between(2_000, 100_000).all(), per_day


def _reference_bridge(path: MinutePath, minute: np.ndarray, u: np.ndarray, seed: int) -> np.ndarray:
    """Brownian bridge inside each minute, one minute at a time, consuming draws in the fast path's order."""
    rng = np.random.default_rng(seed)
    step_draws = rng.standard_normal(minute.size)
    end_draws = rng.standard_normal(np.unique(minute).size)
    out = np.empty(minute.size)
    for group, m in enumerate(np.unique(minute)):
        where = np.flatnonzero(minute == m)
        sig = path.sigma[m]
        walk, previous = 0.0, 0.0
        values = []
        for k in where:
            walk += np.sqrt(u[k] - previous) * sig * step_draws[k]
            previous = u[k]
            values.append(walk)
        end = values[-1] + np.sqrt(1.0 - previous) * sig * end_draws[group]
        start, stop = path.log_price[m], path.log_price[m + 1]
        for k, value in zip(where, values, strict=True):
            out[k] = start + u[k] * (stop - start) + value - u[k] * end
    return out


def test_vectorised_brownian_bridge_matches_a_per_minute_reference() -> None:
    rng = np.random.default_rng(3)
    minutes = 6
    path = MinutePath(
        minute_ts=np.arange(minutes, dtype=np.int64) * NS_PER_MINUTE,
        log_price=np.log(100.0) + np.cumsum(rng.normal(0.0, 1e-3, minutes + 1)),
        sigma=rng.uniform(5e-4, 2e-3, minutes),
        spread_bps=np.ones(minutes),
        trade_rate=np.ones(minutes),
        quote_rate=np.ones(minutes),
        gap=np.zeros(minutes, dtype=bool),
    )
    minute = np.repeat(np.array([0, 1, 3, 4, 5]), [3, 1, 5, 2, 4]).astype(np.int64)
    u = np.concatenate([np.sort(rng.random(n)) for n in (3, 1, 5, 2, 4)])
    fast = bridge_log_mid(np.random.default_rng(9), path, minute, u)
    assert np.allclose(fast, _reference_bridge(path, minute, u, seed=9), rtol=0.0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------


def test_config_with_unknown_asset_names_it() -> None:
    with pytest.raises(ValueError, match="assets='DOGE-USD'"):
        SimulationConfig(assets=("SPY", "DOGE-USD"))


@pytest.mark.parametrize("days", [0, -3])
def test_config_with_days_below_one_names_the_value(days: int) -> None:
    with pytest.raises(ValueError, match=f"days={days}"):
        SimulationConfig(days=days)


def test_config_with_malformed_start_names_it() -> None:
    with pytest.raises(ValueError, match="start='2024-13-01'"):
        SimulationConfig(start="2024-13-01")


def test_config_with_duplicate_asset_is_rejected() -> None:
    with pytest.raises(ValueError, match="assets="):
        SimulationConfig(assets=("SPY", "SPY"))
