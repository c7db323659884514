"""Isolation forest and one-class SVM on the feature vector: injected flash crashes and volatility spikes of the
synthetic market score high after a fit on calm days, rows with a missing feature score NaN and stay out of the
fit, a row's score ignores the other rows of its call, fits repeat exactly, and bad parameters are refused by
name."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ingest.asset import AssetProcessor
from ingest.records import NS_PER_MINUTE
from ingest.synthetic import SimulationConfig, simulate
from models.base import REGISTRY, Observations
from models.ml import (
    DEFAULT_COLUMNS,
    MIN_ROWS,
    FeatureVectorDetector,
    IsolationForestDetector,
    OneClassSvmDetector,
    RobustScale,
)

DAY = 86_400 * 10**9
MODELS = [IsolationForestDetector, OneClassSvmDetector]


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
def fitted(market) -> dict[str, FeatureVectorDetector]:
    history = market[0]
    return {cls.name: cls().fit(history) for cls in MODELS}


def _with_nan(obs: Observations, rows: np.ndarray, column: str) -> Observations:
    values = obs.column(column).copy()
    values[rows] = np.nan
    return Observations(obs.ts, {**obs.columns, column: values}, obs.symbol, obs.interval_ns)


# ---- detection -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS)
def test_detector_fitted_on_calm_days_scores_flash_crash_and_volatility_spike_bars_far_above_calm_bars(
    cls, market, fitted
):
    _, live, kind, calm = market
    assert {"flash_crash", "volatility_spike"} <= set(kind)
    scores = fitted[cls.name].score(live)
    calm_severity = scores.severity[calm & np.isfinite(scores.severity)]
    assert len(calm_severity) > 200
    assert np.median(calm_severity) < 0.7
    assert np.nanmean(scores.severity[kind == "flash_crash"]) > 0.95
    assert np.nanmean(scores.severity[kind == "volatility_spike"]) > 0.9
    assert np.nanmin(scores.raw[kind == "flash_crash"]) > np.quantile(scores.raw[calm], 0.75)


def test_both_detectors_are_registered_and_require_the_default_columns():
    assert REGISTRY["isolation_forest"] is IsolationForestDetector
    assert REGISTRY["one_class_svm"] is OneClassSvmDetector
    for cls in MODELS:
        assert cls.requires == DEFAULT_COLUMNS
        assert cls().columns == DEFAULT_COLUMNS


# ---- rows and columns ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS)
def test_rows_with_a_missing_feature_score_nan_and_are_left_out_of_the_fit(cls, market, fitted):
    history, live, _, _ = market
    holes = np.arange(40, len(history), 37)
    with_holes = cls().fit(_with_nan(history, holes, "volume_z_20"))
    keep = np.ones(len(history), dtype=np.bool_)
    keep[holes] = False
    without_rows = cls().fit(history.take(keep))
    assert with_holes.score(live).equals(without_rows.score(live))

    live_holes = np.array([3, 4, 100])
    scores = fitted[cls.name].score(_with_nan(live, live_holes, "rsi_14"))
    clean = fitted[cls.name].score(live)
    assert np.isnan(scores.raw[live_holes]).all()
    assert np.isnan(scores.severity[live_holes]).all()
    others = np.setdiff1d(np.arange(len(live)), live_holes)
    assert np.array_equal(scores.raw[others], clean.raw[others])


@pytest.mark.parametrize("cls", MODELS)
def test_a_row_scores_the_same_alone_in_a_sparse_selection_or_in_the_whole_batch(cls, market, fitted):
    _, live, _, _ = market
    det = fitted[cls.name]
    whole = det.score(live)
    every_third = np.zeros(len(live), dtype=np.bool_)
    every_third[::3] = True
    assert np.array_equal(det.score(live.take(every_third)).raw, whole.raw[every_third])
    for row in (0, 57, len(live) - 1):
        alone = det.score(live.take(slice(row, row + 1)))
        assert alone.raw.dtype == np.float64
        assert np.array_equal(alone.raw, whole.raw[row : row + 1])
    assert len(det.score(live.take(slice(0, 0)))) == 0


@pytest.mark.parametrize("cls", MODELS)
def test_detector_on_chosen_columns_needs_only_those_columns(cls, market):
    history, live, _, _ = market
    columns = ("ret_1min", "spread_z_20")
    narrow = Observations(history.ts, {c: history.column(c) for c in columns}, history.symbol, history.interval_ns)
    det = cls(columns=columns).fit(narrow)
    assert det.scaler_.center.shape == (2,)
    assert np.isfinite(det.score(live).raw).sum() > len(live) // 2
    with pytest.raises(KeyError, match="'ret_5min'"):  # the first default column not there
        cls().fit(narrow)


def test_robust_scale_uses_median_and_iqr_and_falls_back_to_the_standard_deviation_then_one():
    x = np.array([[1.0, 0.0, 2.0], [2.0, 0.0, 2.0], [3.0, 0.0, 2.0], [4.0, 0.0, 2.0], [100.0, 10.0, 2.0]])
    scale = RobustScale.fit(x)
    assert scale.center.tolist() == [3.0, 0.0, 2.0]
    assert scale.scale.tolist() == [2.0, 4.0, 1.0]  # the IQR; a column mostly 0: its std; a constant: 1
    assert np.isnan(scale.transform(np.array([[np.nan, 0.0, 2.0]]))[0, 0])


# ---- determinism and pickling ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MODELS)
def test_the_same_fit_twice_gives_identical_scores_and_a_pickled_detector_scores_the_same(cls, market, fitted):
    history, live, _, _ = market
    det = fitted[cls.name]
    assert cls().fit(history).score(live).equals(det.score(live))
    again = pickle.loads(pickle.dumps(det))
    assert again.score(live).equals(det.score(live))


def test_isolation_forest_seed_changes_the_trees(market, fitted):
    history, live, _, _ = market
    other = IsolationForestDetector(random_state=1).fit(history)
    assert not np.array_equal(other.score(live).raw, fitted["isolation_forest"].score(live).raw, equal_nan=True)


def test_one_class_svm_fits_an_even_subsample_of_at_most_max_train_rows(market):
    history, _, _, _ = market
    det = OneClassSvmDetector(max_train=50).fit(history)
    assert det.model_.shape_fit_ == (50, len(DEFAULT_COLUMNS))
    assert OneClassSvmDetector().fit(history).model_.shape_fit_[0] > 50


# ---- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "params", "match"),
    [
        (IsolationForestDetector, {"n_estimators": 0}, "n_estimators=0"),
        (IsolationForestDetector, {"max_samples": 1}, "max_samples=1"),
        (IsolationForestDetector, {"random_state": -1}, "random_state=-1"),
        (IsolationForestDetector, {"columns": ()}, r"columns=\(\)"),
        (IsolationForestDetector, {"columns": ["ret_1min"]}, r"columns=\['ret_1min'\]"),
        (IsolationForestDetector, {"columns": ("ret_1min", "ret_1min")}, "columns="),
        (OneClassSvmDetector, {"nu": 0}, "nu=0"),
        (OneClassSvmDetector, {"nu": 1.5}, "nu=1.5"),
        (OneClassSvmDetector, {"gamma": "wide"}, "gamma='wide'"),
        (OneClassSvmDetector, {"gamma": -1.0}, "gamma=-1.0"),
        (OneClassSvmDetector, {"max_train": 5}, "max_train=5"),
    ],
)
def test_bad_parameter_is_refused_naming_it_and_its_value(cls, params, match, market):
    with pytest.raises(ValueError, match=match):
        cls(**params).fit(market[0])


@pytest.mark.parametrize("cls", MODELS)
def test_unknown_column_and_short_history_are_refused_naming_them(cls, market):
    history = market[0]
    with pytest.raises(KeyError, match="'no_such_feature'"):
        cls(columns=("ret_1min", "no_such_feature")).fit(history)
    with pytest.raises(ValueError, match=f"at least {MIN_ROWS}"):
        cls().fit(history.take(slice(0, MIN_ROWS - 1)))


def test_isolation_forest_scores_the_same_under_a_threading_joblib_backend_of_the_caller(market, fitted):
    from joblib import parallel_config  # type: ignore[import-untyped]  # joblib ships no type hints

    live = market[1]
    det = fitted["isolation_forest"]
    with parallel_config(backend="threading", n_jobs=2):
        threaded = det.score(live)
    assert threaded.equals(det.score(live))


def test_the_numba_scores_are_scikit_learns_score_samples(market, fitted):
    _, live, _, _ = market
    forest, svm = fitted[IsolationForestDetector.name], fitted[OneClassSvmDetector.name]
    for detector, exact in ((forest, True), (svm, False)):
        x = detector.standardised(live)
        rows = np.isfinite(x).all(axis=1)
        ours = detector.score(live).raw[rows]
        theirs = -detector.model_.score_samples(x[rows])
        if exact:  # the same tree walk and the same sum order
            assert np.array_equal(ours, theirs)
        else:  # libsvm expands |x - s|^2 into dot products: equal to rounding
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
