"""The contract every registered detector keeps: one interface, streaming equals batch for any split, a state
pickled mid-stream continues exactly, cutting the input leaves earlier scores unchanged, a fixed seed gives the
same scores, bad input gets an error naming it."""

from __future__ import annotations

import importlib
import pickle
import pkgutil

import numpy as np
import pytest

import models
from ingest.asset import AssetProcessor
from ingest.records import NS_PER_MINUTE
from ingest.synthetic import SimulationConfig, simulate
from models.base import REGISTRY, Detector, NotFittedError, Observations, Scores

# every module of the package registers its detectors on import
for _module in pkgutil.iter_modules(models.__path__):
    importlib.import_module(f"models.{_module.name}")
NAMES = sorted(REGISTRY)


@pytest.fixture(scope="module")
def observations() -> Observations:
    """Two days of one-minute SPY bars of the synthetic market (with its injected anomalies) and their features."""
    market = simulate(SimulationConfig(seed=11, days=2, assets=("SPY",)))
    proc = AssetProcessor("SPY", intervals_ns=(NS_PER_MINUTE,))
    out = proc.process(market.trades, market.quotes)
    tail = proc.flush()
    bars = out.bars[NS_PER_MINUTE].concat([out.bars[NS_PER_MINUTE], tail.bars[NS_PER_MINUTE]])
    frames = [out.features[NS_PER_MINUTE], tail.features[NS_PER_MINUTE]]
    features = frames[0].concat(frames)
    return Observations.from_bars(bars, features)


def _split(obs: Observations) -> tuple[Observations, Observations]:
    cut = int(len(obs) * 0.6)
    return obs.take(slice(0, cut)), obs.take(slice(cut, None))


def _fitted(name: str, history: Observations) -> Detector:
    return REGISTRY[name]().fit(history)


@pytest.mark.parametrize("name", NAMES)
def test_interface_parameters_round_trip_and_required_columns_exist(name, observations):
    det = REGISTRY[name]()
    assert det.name == name
    again = type(det)(**det.get_params())
    assert repr(again) == repr(det)
    for col in det.requires:
        observations.column(col)
    assert not det.is_fitted


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_in_random_splits_equals_one_batch_call(name, seed, observations):
    history, live = _split(observations)
    det = _fitted(name, history)
    whole = det.score(live)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(live)), size=7, replace=False))
    state = det.init_state()
    parts = [det.update(state, live.take(slice(a, b))) for a, b in zip([0, *cuts], [*cuts, len(live)], strict=True)]
    assert Scores.concat(parts).equals(whole)
    sev = whole.severity[np.isfinite(whole.severity)]
    assert len(sev) > len(live) // 2
    assert ((sev >= 0) & (sev <= 1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_a_state_pickled_mid_stream_continues_exactly(name, observations):
    history, live = _split(observations)
    det = _fitted(name, history)
    whole = det.score(live)
    state = det.init_state()
    first = det.update(state, live.take(slice(0, len(live) // 3)))
    det2, state2 = pickle.loads(pickle.dumps((det, state)))
    rest = det2.update(state2, live.take(slice(len(live) // 3, None)))
    assert Scores.concat([first, rest]).equals(whole)


@pytest.mark.parametrize("name", NAMES)
def test_cutting_the_input_leaves_every_earlier_score_unchanged(name, observations):
    history, live = _split(observations)
    det = _fitted(name, history)
    whole = det.score(live)
    for cut in (1, len(live) // 4, len(live) // 2):
        prefix = det.score(live.take(slice(0, cut)))
        assert prefix.equals(
            Scores(whole.ts[:cut], whole.raw[:cut], whole.severity[:cut], {k: v[:cut] for k, v in whole.detail.items()})
        )


@pytest.mark.parametrize("name", NAMES)
def test_the_same_fit_twice_gives_the_same_scores_and_training_rows_are_refused(name, observations):
    history, live = _split(observations)
    a, b = _fitted(name, history).score(live), _fitted(name, history).score(live)
    assert a.equals(b)
    det = _fitted(name, history)
    det.check_after_training(live)
    with pytest.raises(ValueError, match="training window"):
        det.check_after_training(history)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_gets_an_error_naming_it(name, observations):
    det = REGISTRY[name]()
    if det.needs_fit:
        with pytest.raises(NotFittedError, match=type(det).__name__):
            det.score(observations)
    for col in det.requires:
        missing = Observations(
            observations.ts,
            {k: v for k, v in observations.columns.items() if k != col},
            observations.symbol,
            observations.interval_ns,
        )
        with pytest.raises(KeyError, match=repr(col)):
            det.fit(missing)


def test_observations_refuse_misaligned_columns_and_times_that_go_back():
    with pytest.raises(ValueError, match=r"columns\['close'\]"):
        Observations(np.arange(3), {"close": np.ones(2)})
    with pytest.raises(ValueError, match=r"ts\[2\]=1"):
        Observations(np.array([0, 5, 1]), {})
