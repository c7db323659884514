"""LSTM autoencoder: injected flash crashes and volatility spikes of the synthetic market reconstruct badly after a
fit on calm days, streaming in batches of 1, 7 or 100 rows equals one batch call bit for bit, a missing feature
breaks exactly the windows it is in, fits repeat exactly and leave torch's settings as they were, pickles carry
no torch module, and bad parameters are refused by name."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ingest.asset import AssetProcessor
from ingest.records import NS_PER_MINUTE
from ingest.synthetic import SimulationConfig, simulate
from models.autoencoder import CHUNK, LstmAutoencoder, window_rows
from models.base import REGISTRY, Observations, Scores
from models.ml import DEFAULT_COLUMNS

DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def market() -> tuple[Observations, Observations, np.ndarray, np.ndarray]:
    """Three days of one-minute SPY bars with their features: the first two days without the labelled anomalies
    and the half hour after each (the history), the third day (the live rows), its label kinds ("" outside
    every anomaly) and its calm rows (outside every anomaly and its margins)."""
    sim = simulate(SimulationConfig(seed=2, days=3, assets=("SPY",)))
    proc = AssetProcessor("SPY", intervals_ns=(NS_PER_MINUTE,))
    out, tail = proc.process(sim.trades, sim.quotes), proc.flush()
    bars = out.bars[NS_PER_MINUTE].concat([out.bars[NS_PER_MINUTE], tail.bars[NS_PER_MINUTE]])
    frames = [out.features[NS_PER_MINUTE], tail.features[NS_PER_MINUTE]]
    obs = Observations.from_bars(bars, frames[0].concat(frames))
    day = obs.ts // DAY - obs.ts[0] // DAY
    kind = np.full(len(obs), "", dtype=object)
    near = np.zeros(len(obs), dtype=np.bool_)
    for label in sim.labels:
        kind[(obs.ts >= label.start) & (obs.ts < label.end)] = label.kind
        near |= (obs.ts >= label.start - 5 * NS_PER_MINUTE) & (obs.ts < label.end + 30 * NS_PER_MINUTE)
    live = day == 2
    return obs.take((day < 2) & ~near), obs.take(live), kind[live], ~near[live]


@pytest.fixture(scope="module")
def fitted(market) -> LstmAutoencoder:
    return LstmAutoencoder().fit(market[0])


def _with_nan(obs: Observations, rows: np.ndarray, column: str) -> Observations:
    values = obs.column(column).copy()
    values[rows] = np.nan
    return Observations(obs.ts, {**obs.columns, column: values}, obs.symbol, obs.interval_ns)


def _streamed(det: LstmAutoencoder, obs: Observations, size: int) -> Scores:
    state = det.init_state()
    return Scores.concat([det.update(state, obs.take(slice(a, a + size))) for a in range(0, len(obs), size)])


# ---- detection -------------------------------------------------------------------------------------------
def test_autoencoder_fitted_on_calm_days_scores_flash_crash_and_volatility_spike_windows_far_above_calm_ones(
    market, fitted
):
    _, live, kind, calm = market
    assert REGISTRY["lstm_autoencoder"] is LstmAutoencoder
    assert {"flash_crash", "volatility_spike"} <= set(kind)
    scores = fitted.score(live)
    calm_severity = scores.severity[calm & np.isfinite(scores.severity)]
    assert len(calm_severity) > 200
    assert np.median(calm_severity) < 0.7
    assert np.nanmean(scores.severity[kind == "flash_crash"]) > 0.95
    assert np.nanmean(scores.severity[kind == "volatility_spike"]) > 0.9
    assert np.nanmin(scores.raw[kind == "flash_crash"]) > np.nanquantile(scores.raw[calm], 0.75)
    assert np.isfinite(fitted.loss_)
    assert fitted.loss_ < np.nanmedian(scores.raw[calm]) * 2


# ---- exactness -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 7, 100])
def test_streaming_in_batches_of_one_seven_or_a_hundred_rows_equals_one_batch_call_exactly(size, market, fitted):
    live = market[1].take(slice(0, 150 if size == 1 else None))  # across chunk boundaries (CHUNK rows)
    assert len(live) > 2 * CHUNK
    assert _streamed(fitted, live, size).equals(fitted.score(live))


def test_a_stream_starts_empty_and_scores_from_its_window_th_row(market, fitted):
    live = market[1]
    scores = fitted.score(live)
    assert np.isnan(scores.raw[: fitted.window - 1]).all()
    assert np.isfinite(scores.raw[fitted.window - 1 :]).all()
    assert np.isfinite(scores.detail["last_row"][fitted.window - 1 :]).all()


def test_a_missing_feature_breaks_exactly_the_windows_that_contain_its_row(market, fitted):
    live = market[1]
    row = 80
    broken = fitted.score(_with_nan(live, np.array([row]), "spread_z_20"))
    clean = fitted.score(live)
    hit = np.zeros(len(live), dtype=np.bool_)
    hit[row : row + fitted.window] = True
    assert np.isnan(broken.raw[hit]).all()
    assert np.isnan(broken.severity[hit]).all()
    assert np.array_equal(broken.raw[~hit], clean.raw[~hit], equal_nan=True)
    # and the same in a stream cut inside the broken stretch
    assert _streamed(fitted, _with_nan(live, np.array([row]), "spread_z_20"), 85).equals(broken)


def test_window_rows_marks_the_windows_without_a_missing_value():
    x = np.arange(12.0).reshape(6, 2)
    x[3, 1] = np.nan
    windows, complete = window_rows(x, 3)
    assert windows.shape == (4, 3, 2)
    assert np.array_equal(windows[2], x[2:5], equal_nan=True)
    assert complete.tolist() == [True, False, False, False]
    assert window_rows(x[:2], 3)[0].shape == (0, 3, 2)


# ---- determinism, torch settings, pickling -----------------------------------------------------------------
def test_the_same_seed_gives_the_same_network_a_different_seed_another_and_torch_settings_are_restored(market):
    history, live, _, _ = market
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    a = LstmAutoencoder(epochs=1).fit(history)
    b = LstmAutoencoder(epochs=1).fit(history)
    c = LstmAutoencoder(epochs=1, random_state=1).fit(history)
    assert a.score(live).equals(b.score(live))
    assert all(np.array_equal(v, b.weights_[k]) for k, v in a.weights_.items())
    assert not np.array_equal(a.weights_["output.weight"], c.weights_["output.weight"])
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_a_pickled_detector_carries_weights_not_a_torch_module_and_scores_the_same(market, fitted):
    live = market[1]
    whole = fitted.score(live)  # builds the network
    data = pickle.dumps(fitted)
    again = pickle.loads(data)
    assert "_network" not in vars(again)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in again.weights_.values())
    assert again.score(live).equals(whole)
    assert len(data) < 100_000


# ---- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"window": 1}, "window=1"),
        ({"hidden": 0}, "hidden=0"),
        ({"epochs": 0}, "epochs=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"max_train": 0}, "max_train=0"),
        ({"random_state": -1}, "random_state=-1"),
        ({"columns": ()}, r"columns=\(\)"),
    ],
)
def test_bad_parameter_is_refused_naming_it_and_its_value(params, match, market):
    with pytest.raises(ValueError, match=match):
        LstmAutoencoder(**params).fit(market[0])


def test_unknown_column_and_a_history_without_enough_windows_are_refused_naming_them(market):
    history = market[0]
    assert LstmAutoencoder.requires == DEFAULT_COLUMNS
    with pytest.raises(KeyError, match="'no_such_feature'"):
        LstmAutoencoder(columns=("ret_1min", "no_such_feature")).fit(history)
    with pytest.raises(ValueError, match="complete windows of window=16"):
        LstmAutoencoder().fit(history.take(slice(0, 60)))
