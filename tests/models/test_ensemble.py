"""The ensemble: streaming equals batch for any split (walk-forward refits inside a batch too), cutting the input
leaves earlier output unchanged, no model scores its training rows, a pickled mid-stream state continues exactly,
the default ensemble finds an injected crash, bad input is refused by name, the thresholds never let ties through,
and the combination is the weighted mean it promises."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.engine import FeatureEngine
from features.sets import default_feature_set
from ingest.records import NS_PER_MINUTE
from ingest.synthetic.anomalies import Label
from ingest.synthetic.market import SimulationConfig, simulate
from models.base import NotFittedError, Observations, Scores
from models.calibration import EmpiricalCalibrator
from models.ensemble import (
    KINDS,
    Ensemble,
    EnsembleScores,
    Member,
    alert_threshold,
    calibrate,
    calibration_table,
    combine,
    members_by_name,
)
from models.walkforward import WalkForward, WalkScores

SMALL = ("price_jump", "garch", "volume_burst", "trade_burst", "spread_blowout", "stale_feed", "cusum")
# the walk-forward schedule of the tests: first fit at row 1200, refits at 1900, 2600, 3300, 4000
WARMUP, REFIT, WINDOW = 1200, 700, 1500
SEED = 1  # its BTC-USD path has a flash crash and a volatility spike after the training part


@pytest.fixture(scope="module")
def market() -> tuple[Observations, list[Label]]:
    """Three days of one-minute BTC-USD bars of the synthetic market with their features, and its labels."""
    result = simulate(SimulationConfig(seed=SEED, days=3, activity=0.3, assets=("SPY", "BTC-USD")))
    bars = result.bars.take(result.bars.symbol == "BTC-USD")
    engine = FeatureEngine(default_feature_set(NS_PER_MINUTE), NS_PER_MINUTE)
    obs = Observations.from_bars(bars, engine.batch(bars))
    return obs, [label for label in result.labels if label.symbol == "BTC-USD"]


@pytest.fixture(scope="module")
def obs(market) -> Observations:
    return market[0]


def _split(obs: Observations) -> tuple[Observations, Observations]:
    cut = int(len(obs) * 0.6)
    return obs.take(slice(0, cut)), obs.take(slice(cut, None))


@pytest.fixture(scope="module")
def small(obs) -> Ensemble:
    """The small ensemble fitted on the first 60 % of the rows."""
    return Ensemble(members_by_name(SMALL)).fit(_split(obs)[0])


@pytest.fixture(scope="module")
def small_whole(small, obs) -> EnsembleScores:
    return small.score(_split(obs)[1])


@pytest.fixture(scope="module")
def walk() -> WalkForward:
    return WalkForward(Ensemble(members_by_name(SMALL)), warmup=WARMUP, refit_every=REFIT, window=WINDOW)


@pytest.fixture(scope="module")
def walk_whole(walk, obs) -> WalkScores:
    return walk.score(obs)


@pytest.fixture(scope="module")
def default_run(market) -> tuple[Ensemble, EnsembleScores]:
    """The default ensemble fitted on the first 60 % of the rows and its scores of the rest."""
    obs, _ = market
    history, live = _split(obs)
    ens = Ensemble().fit(history)
    return ens, ens.score(live)


# ---- helpers -----------------------------------------------------------------------------------------
def _random_cuts(n: int, seed: int, size: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), size=size, replace=False)).tolist()
    return list(zip([0, *cuts], [*cuts, n], strict=True))


def _concat_alerts(frames: list[pd.DataFrame], like: pd.DataFrame) -> pd.DataFrame:
    found = [f for f in frames if len(f)]
    return pd.concat(found, ignore_index=True) if found else like.iloc[:0]


def _assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k


def _assert_ensemble_parts_equal(parts: list[EnsembleScores], whole: EnsembleScores, explanation: bool) -> None:
    assert np.array_equal(np.concatenate([p.ts for p in parts]), whole.ts)
    _assert_same_arrays({k: np.concatenate([p.evidence[k] for p in parts]) for k in whole.evidence}, whole.evidence)
    _assert_same_arrays(
        {k: np.concatenate([p.member_flags[k] for p in parts]) for k in whole.member_flags}, whole.member_flags
    )
    for name, scores in whole.members.items():
        assert Scores.concat([p.members[name] for p in parts]).equals(scores), name
    alerts = _concat_alerts([p.alerts for p in parts], whole.alerts)
    expected = whole.alerts
    if not explanation:
        alerts, expected = alerts.drop(columns="explanation"), expected.drop(columns="explanation")
    _assert_alerts_equal(alerts, expected)
    assert not len(expected) or alerts.equals(expected)


def _assert_alerts_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    if not len(got) and not len(want):
        return  # an empty frame's text columns have no dtype to agree on
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True)


def _concat_walk_parts(parts: list[WalkScores]) -> WalkScores:
    """Walk-forward outputs of consecutive batches as one (flags of members not yet fitted are False)."""
    names = sorted({name for p in parts for name in p.member_flags})
    flags = {
        name: np.concatenate([p.member_flags.get(name, np.zeros(len(p), dtype=np.bool_)) for p in parts])
        for name in names
    }
    evidence = {k: np.concatenate([p.evidence[k] for p in parts]) for k in parts[0].evidence}
    alerts = _concat_alerts([p.alerts for p in parts], parts[0].alerts)
    return WalkScores(np.concatenate([p.ts for p in parts]), evidence, flags, alerts)


def _assert_walk_equal(got: WalkScores, want: WalkScores, explanation: bool = True) -> None:
    assert np.array_equal(got.ts, want.ts)
    _assert_same_arrays(got.evidence, want.evidence)
    for name in sorted(set(got.member_flags) | set(want.member_flags)):
        zeros = np.zeros(len(want), dtype=np.bool_)
        assert np.array_equal(got.member_flags.get(name, zeros), want.member_flags.get(name, zeros)), name
    a, b = got.alerts, want.alerts
    if not explanation:
        a, b = a.drop(columns="explanation"), b.drop(columns="explanation")
    _assert_alerts_equal(a, b)


def _walk_in_batches(walk: WalkForward, obs: Observations, bounds: list[tuple[int, int]]) -> WalkScores:
    state = walk.init_state()
    parts = []
    for a, b in bounds:
        batch = obs.take(slice(a, b))
        if state.model is not None:
            # the model about to score these rows never trained on them, nor did any of its members
            assert state.model.trained_until_ < batch.ts[0]
            assert all(d.trained_until_ < batch.ts[0] for d in state.model.detectors_)
        parts.append(walk.update(state, batch))
    return _concat_walk_parts(parts)


def _fit_points(n: int) -> list[int]:
    return list(range(WARMUP, n, REFIT))


# ---- streaming equals batch -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_ensemble_streaming_in_random_batches_equals_one_score_call(seed, small, small_whole, obs):
    live = _split(obs)[1]
    state = small.init_state()
    parts = [small.update(state, live.take(slice(a, b))) for a, b in _random_cuts(len(live), seed, 9)]
    _assert_ensemble_parts_equal(parts, small_whole, explanation=False)
    assert len(small_whole.alerts) > 0  # the comparison covers alerts, not only empty frames


def test_ensemble_bar_by_bar_equals_one_score_call(small, small_whole, market):
    obs, labels = market
    live = _split(obs)[1]
    # a few hundred bars one at a time, around the injected flash crash, then the rest in one batch
    crash = next(lb for lb in labels if lb.kind == "flash_crash" and lb.start >= live.ts[0])
    row = int(np.searchsorted(live.ts, crash.start))
    start, stop = row - 200, row + 100
    assert small_whole.alerts["ts"].between(live.ts[start], live.ts[stop - 1]).any()  # alerts among the bars
    state = small.init_state()
    parts = [small.update(state, live.take(slice(0, start)))]
    parts += [small.update(state, live.take(slice(i, i + 1))) for i in range(start, stop)]
    parts.append(small.update(state, live.take(slice(stop, None))))
    _assert_ensemble_parts_equal(parts, small_whole, explanation=False)


def test_ensemble_alert_explanations_do_not_depend_on_the_split(small, small_whole, obs):
    live = _split(obs)[1]
    rows = np.searchsorted(live.ts, small_whole.alerts["ts"].to_numpy())
    state = small.init_state()
    bounds = list(zip([0, *rows.tolist()], [*rows.tolist(), len(live)], strict=True))  # every alert opens a batch
    parts = [small.update(state, live.take(slice(a, b))) for a, b in bounds if b > a]
    _assert_ensemble_parts_equal(parts, small_whole, explanation=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_walk_forward_streaming_in_random_batches_equals_one_score_call(seed, walk, walk_whole, obs):
    bounds = _random_cuts(len(obs), seed, 12)
    # at least one fit falls strictly inside a batch
    assert any(a < f < b for a, b in bounds for f in _fit_points(len(obs)))
    got = _walk_in_batches(walk, obs, bounds)
    _assert_walk_equal(got, walk_whole, explanation=False)
    assert len(walk_whole.alerts) > 0


def test_walk_forward_bar_by_bar_across_a_refit_equals_one_score_call(walk, walk_whole, obs):
    refit = WARMUP + REFIT  # the second fit
    start, stop = refit - 150, refit + 150
    bounds = [(0, start), *[(i, i + 1) for i in range(start, stop)], (stop, len(obs))]
    _assert_walk_equal(_walk_in_batches(walk, obs, bounds), walk_whole, explanation=False)


def test_walk_forward_batches_split_at_the_fits_give_the_same_alerts(walk, walk_whole, obs):
    # batches that start where the models change: the walk's own parts, so the explanations agree too
    points = [0, *_fit_points(len(obs)), len(obs)]
    got = _walk_in_batches(walk, obs, list(itertools.pairwise(points)))
    _assert_walk_equal(got, walk_whole, explanation=True)


@pytest.mark.parametrize("window", [2000, 100])  # 100: the rows kept span less than the minimum
def test_walk_forward_with_a_minimum_span_fits_at_the_same_row_for_any_split(window, obs):
    span = 5 * 60 * NS_PER_MINUTE  # five hours: about 300 one-minute bars, more than the warm-up
    walk = WalkForward(
        Ensemble(members_by_name(["price_jump", "stale_feed", "volume_burst"])),
        warmup=100,
        window=window,
        min_span_ns=span,
    )
    rows = obs.take(slice(0, 600))
    whole = walk.score(rows)
    first = int(np.flatnonzero(np.isfinite(whole.evidence["data_gap"]))[0])
    assert first >= 100
    assert rows.ts[first - 1] - rows.ts[0] >= span > rows.ts[first - 2] - rows.ts[0]
    for size in (1, 50):
        bounds = [(a, min(a + size, len(rows))) for a in range(0, len(rows), size)]
        _assert_walk_equal(_walk_in_batches(walk, rows, bounds), whole, explanation=False)


def test_walk_forward_state_keeps_about_a_window_of_rows_when_fed_bar_by_bar(obs):
    walk = WalkForward(Ensemble(members_by_name(["price_jump", "stale_feed"])), warmup=200, window=300)
    state = walk.init_state()
    for i in range(1000):
        walk.update(state, obs.take(slice(i, i + 1)))
    assert state.kept == sum(len(p) for p in state.parts)
    assert state.kept < 2 * 300


# ---- causality and training rows --------------------------------------------------------------------
@pytest.mark.parametrize("cut", [WARMUP - 1, WARMUP + 1, WARMUP + REFIT + 37, 3840])
def test_walk_forward_output_of_a_cut_input_is_the_start_of_the_full_output(cut, walk, walk_whole, obs):
    prefix = walk.score(obs.take(slice(0, cut)))
    t = int(obs.ts[cut])
    want = WalkScores(
        walk_whole.ts[:cut],
        {k: v[:cut] for k, v in walk_whole.evidence.items()},
        {k: v[:cut] for k, v in walk_whole.member_flags.items()},
        walk_whole.alerts[walk_whole.alerts["ts"] < t],
    )
    _assert_walk_equal(prefix, want)


def test_ensemble_output_of_a_cut_input_is_the_start_of_the_full_output(small, small_whole, obs):
    live = _split(obs)[1]
    for cut in (1, len(live) // 3, len(live) - 5):
        prefix = small.score(live.take(slice(0, cut)))
        for k, v in small_whole.evidence.items():
            assert np.array_equal(prefix.evidence[k], v[:cut], equal_nan=True)
        want = small_whole.alerts[small_whole.alerts["ts"] < live.ts[cut]]
        _assert_alerts_equal(prefix.alerts, want)


def test_no_member_scores_its_training_rows(small, obs):
    history, live = _split(obs)
    cut = int(len(history) * small.train_fraction)
    assert small.member_names_ == SMALL
    assert not small.skipped_
    for d in small.detectors_:
        # members learnt from the first part of the history only: the validation part and the live rows are new
        assert d.trained_until_ == history.ts[cut - 1] < history.ts[cut] < live.ts[0]
        d.check_after_training(live)
        with pytest.raises(ValueError, match="training window"):
            d.check_after_training(history)
    assert small.trained_until_ == history.ts[-1] < live.ts[0]


def test_walk_forward_scores_nothing_before_its_warmup_and_fits_on_the_latest_window(walk, walk_whole, obs):
    scored = np.zeros(len(obs), dtype=np.bool_)
    for v in walk_whole.evidence.values():
        scored |= np.isfinite(v)
    assert int(np.flatnonzero(scored)[0]) == WARMUP
    assert not any(v[:WARMUP].any() for v in walk_whole.member_flags.values())
    assert (walk_whole.alerts["ts"] >= obs.ts[WARMUP]).all()
    # stop right after the last refit: the model in use trained on the WINDOW rows before it
    state = walk.init_state()
    last = _fit_points(len(obs))[-1]
    walk.update(state, obs.take(slice(0, last)))
    assert state.fits == len(_fit_points(len(obs)))
    assert state.model is not None
    assert state.model.trained_until_ == obs.ts[last - 1]
    first_train = last - WINDOW
    inner_cut = first_train + int(WINDOW * state.model.train_fraction)
    assert all(d.trained_until_ == obs.ts[inner_cut - 1] for d in state.model.detectors_)


# ---- pickling ----------------------------------------------------------------------------------------
def test_a_fitted_ensemble_and_a_mid_stream_state_pickle_and_continue_exactly(small, small_whole, obs):
    live = _split(obs)[1]
    third = len(live) // 3
    state = small.init_state()
    first = small.update(state, live.take(slice(0, third)))
    ens2, state2 = pickle.loads(pickle.dumps((small, state)))
    rest = ens2.update(state2, live.take(slice(third, None)))
    _assert_ensemble_parts_equal([first, rest], small_whole, explanation=False)
    # and a fitted ensemble alone, from its start state
    again = pickle.loads(pickle.dumps(small)).score(live)
    _assert_ensemble_parts_equal([again], small_whole, explanation=True)


def test_a_walk_forward_state_pickled_between_refits_continues_exactly(walk, walk_whole, obs):
    mid = WARMUP + REFIT + 250
    state = walk.init_state()
    first = walk.update(state, obs.take(slice(0, mid)))
    walk2, state2 = pickle.loads(pickle.dumps((walk, state)))
    rest = walk2.update(state2, obs.take(slice(mid, None)))
    _assert_walk_equal(_concat_walk_parts([first, rest]), walk_whole, explanation=False)


# ---- the default ensemble on an injected crash ------------------------------------------------------
def test_the_default_ensemble_finds_the_injected_crash_with_well_formed_alerts(default_run, market):
    obs, labels = market
    ens, out = default_run
    live_start = int(_split(obs)[1].ts[0])
    targets = [lb for lb in labels if lb.kind in ("flash_crash", "volatility_spike") and lb.start >= live_start]
    assert any(lb.kind == "flash_crash" for lb in targets)  # the seed has a crash after the fit
    alerts = out.alerts
    assert len(alerts) > 0
    found = []
    for lb in targets:
        near = alerts[(alerts["ts"] >= lb.start) & (alerts["ts"] < lb.end + 5 * NS_PER_MINUTE)]
        if near["kind"].isin(["flash_crash", "volatility_spike"]).any():
            found.append(lb.kind)
    assert "flash_crash" in found
    # the crash is reported as one: its alert kind, a severity above the threshold
    crash = next(lb for lb in targets if lb.kind == "flash_crash")
    hit = alerts[(alerts["ts"] >= crash.start) & (alerts["ts"] < crash.end + 5 * NS_PER_MINUTE)]
    assert (hit["kind"] == "flash_crash").any()
    assert (
        hit.loc[hit["kind"] == "flash_crash", "severity"].max() >= ens.thresholds_[ens.kind_names_.index("flash_crash")]
    )
    # every alert is well formed
    assert list(alerts.columns) == ["ts", "symbol", "kind", "severity", "score", "models", "explanation"]
    assert (alerts["symbol"] == "BTC-USD").all()
    assert alerts["ts"].is_monotonic_increasing
    assert np.isin(alerts["ts"].to_numpy(), out.ts).all()
    for row in alerts.itertuples(index=False):
        assert row.kind in KINDS
        assert 0.0 <= row.severity <= 1.0
        assert row.score >= 0.0
        assert isinstance(row.models, str)
        assert row.models
        assert all("=" in part for part in row.models.split(";"))
        assert isinstance(row.explanation, str)
        assert row.explanation
        assert "\n" not in row.explanation
        assert "\r" not in row.explanation
        assert row.kind.replace("_", " ") in row.explanation


# ---- bad input ---------------------------------------------------------------------------------------
def test_members_with_an_unknown_detector_or_kind_are_refused_by_name():
    with pytest.raises(ValueError, match="detector='nope'"):
        Member("nope", ("flash_crash",))
    with pytest.raises(ValueError, match="kinds='bad_kind'"):
        Member("garch", ("bad_kind",))
    with pytest.raises(ValueError, match=r"kinds=\(\)"):
        Member("garch", ())
    with pytest.raises(ValueError, match="weight=0"):
        Member("garch", ("flash_crash",), weight=0)
    with pytest.raises(ValueError, match="models='nope'"):
        members_by_name(["garch", "nope"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_fraction": 1.5}, "train_fraction=1.5"),
        ({"train_fraction": 0}, "train_fraction=0"),
        ({"alert_rate": 1.0}, "alert_rate=1.0"),
        ({"min_threshold": 0.0}, "min_threshold=0.0"),
        ({"weight_decay": 1.5}, "weight_decay=1.5"),
        ({"members": ()}, "members=()"),
    ],
)
def test_ensemble_parameters_are_refused_by_name_at_fit(kwargs, message, obs):
    kwargs = {"members": members_by_name(["price_jump"])} | kwargs
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Ensemble(**kwargs).fit(obs)


def test_a_history_too_short_to_split_is_refused(obs):
    with pytest.raises(ValueError, match="history"):
        Ensemble(members_by_name(["price_jump"])).fit(obs.take(slice(0, 3)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": 5}, "warmup=5"),
        ({"refit_every": 0}, "refit_every=0"),
        ({"warmup": 100, "window": 50}, "window=50"),
    ],
)
def test_walk_forward_parameters_are_refused_by_name(kwargs, message, obs):
    walk = WalkForward(Ensemble(members_by_name(["price_jump"])), **kwargs)
    with pytest.raises(ValueError, match=message):
        walk.init_state()
    with pytest.raises(ValueError, match=message):
        walk.score(obs.take(slice(0, 200)))


def test_scoring_before_fit_raises_not_fitted(obs):
    ens = Ensemble(members_by_name(SMALL))
    assert not ens.is_fitted
    with pytest.raises(NotFittedError, match="Ensemble"):
        ens.score(obs)
    with pytest.raises(NotFittedError, match="Ensemble"):
        ens.init_state()


# ---- thresholds --------------------------------------------------------------------------------------
def test_alert_threshold_never_lets_a_tie_exceed_the_rate():
    # 900 calm rows, 95 rows tied at 0.98 (a saturated score), 5 distinct high rows
    evidence = np.concatenate([np.full(900, 0.5), np.full(95, 0.98), [0.991, 0.992, 0.993, 0.994, 0.995]])
    thr = alert_threshold(evidence, rate=0.01, floor=0.9)
    assert thr == 0.991
    assert (evidence >= thr).mean() <= 0.01
    # a plain quantile would sit on the tie and let all 100 rows alert
    assert (evidence >= np.quantile(evidence, 0.99)).mean() > 0.01


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from([0.1, 0.5, 0.9, 0.95, 0.97, 0.98, 0.99, 0.999, np.nan]), min_size=1, max_size=300),
    st.floats(0.001, 0.5),
    st.floats(0.01, 1.0),
)
def test_alert_threshold_is_the_lowest_value_within_the_rate_and_respects_the_floor(values, rate, floor):
    evidence = np.array(values)
    thr = alert_threshold(evidence, rate, floor)
    finite = evidence[np.isfinite(evidence)]
    assert floor <= thr <= 1.0
    if not len(finite):
        assert thr == 1.0
        return
    assert (finite >= thr).mean() <= rate  # ties never let more than `rate` of the rows alert
    # and it is the lowest such value: any lower value at or above the floor lets too many through
    for v in np.unique(finite):
        if floor <= v < thr:
            assert (finite >= v).mean() > rate


def test_alert_threshold_is_the_floor_when_the_quantile_is_below_it_and_one_without_evidence():
    evidence = np.linspace(0.0, 0.5, 1000)
    assert alert_threshold(evidence, rate=0.01, floor=0.97) == 0.97
    assert alert_threshold(np.full(10, np.nan), rate=0.01, floor=0.5) == 1.0
    assert alert_threshold(np.array([]), rate=0.01, floor=0.5) == 1.0


# ---- combination -------------------------------------------------------------------------------------
def _combine(severity, member_kind, falling, counts=None, smooth=None, thresholds=None, alpha=None, exceed_at=2.0):
    m, k = member_kind.shape
    counts = np.zeros((m, 2)) if counts is None else counts
    smooth = np.full(k, np.nan) if smooth is None else smooth
    thresholds = np.full(k, np.inf) if thresholds is None else thresholds
    alpha = np.ones(k) if alpha is None else alpha
    return combine(
        np.asarray(severity, dtype=np.float64),
        member_kind,
        np.asarray(falling, dtype=np.float64),
        0,  # column 0 is flash_crash
        thresholds,
        exceed_at,
        1.0,
        alpha,
        counts,
        smooth,
    )


# kinds: 0 = flash_crash, 1 = volume_anomaly. Member 0 primary for both, member 1 supporting volume (0.5),
# member 2 primary for the crash with prior weight 2.
MEMBER_KIND = np.array([[1.0, 1.0], [0.0, 0.5], [2.0, 0.0]])
NAN = np.nan


def test_evidence_is_the_weighted_mean_of_the_members_present():
    severity = [
        [0.2, 0.8, 0.5],  # all present, falling
        [NAN, 0.9, 0.6],  # member 0 warming up: the crash has member 2; volume only a supporting member
        [0.4, 0.6, 0.9],  # a rising bar
        [NAN, NAN, NAN],  # nobody
        [0.3, NAN, NAN],  # only member 0
    ]
    evidence, fired = _combine(severity, MEMBER_KIND, [1, 1, 0, 1, 1])
    expected = np.array(
        [
            [(1 * 0.2 + 2 * 0.5) / 3, (1 * 0.2 + 0.5 * 0.8) / 1.5],
            [0.6, NAN],  # no primary member of volume present: no evidence
            [0.0, (1 * 0.4 + 0.5 * 0.6) / 1.5],  # a flash crash needs a falling bar
            [NAN, NAN],
            [0.3, 0.3],
        ]
    )
    np.testing.assert_allclose(evidence, expected, rtol=1e-12, atol=0)
    assert np.array_equal(np.isnan(evidence), np.isnan(expected))
    assert not fired.any()


def test_weights_follow_each_members_precision_counts_and_fired_rows_advance_them():
    # member 0 exceeded 8 times, never confirmed: weight 1/10; member 2 fresh: weight 1/2
    counts = np.array([[8.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    evidence, _ = _combine([[0.2, 0.8, 0.5]], MEMBER_KIND, [1], counts=counts.copy())
    w0, w2 = 1 / 10, 1 / 2
    assert evidence[0, 0] == pytest.approx((1 * w0 * 0.2 + 2 * w2 * 0.5) / (1 * w0 + 2 * w2), rel=1e-12)
    # a row where member 2 exceeds and the crash fires: counted and confirmed; member 1 exceeds, unconfirmed
    counts = np.zeros((3, 2))
    evidence, fired = _combine(
        [[0.1, 0.95, 0.99]], MEMBER_KIND, [1], counts=counts, thresholds=np.array([0.5, 0.9]), exceed_at=0.9
    )
    assert fired[0].tolist() == [1.0, 0.0]
    assert counts.tolist() == [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


def test_evidence_is_smoothed_over_rows_and_the_smoothing_carries_over_batches():
    severity = np.array([[0.2, NAN, NAN], [0.8, NAN, NAN], [NAN, NAN, NAN], [0.6, NAN, NAN]])
    alpha = np.array([1.0, 0.5])
    evidence, _ = _combine(severity, MEMBER_KIND, [1, 1, 1, 1], alpha=alpha)
    np.testing.assert_allclose(evidence[:, 1], [0.2, 0.5, NAN, 0.55])  # a row without evidence keeps the level
    np.testing.assert_allclose(evidence[:, 0], [0.2, 0.8, NAN, 0.6])
    smooth = np.full(2, np.nan)
    first, _ = _combine(severity[:2], MEMBER_KIND, [1, 1], alpha=alpha, smooth=smooth)
    rest, _ = _combine(severity[2:], MEMBER_KIND, [1, 1], alpha=alpha, smooth=smooth)
    assert np.array_equal(np.vstack([first, rest]), evidence, equal_nan=True)


def test_the_fused_calibration_equals_each_member_calibrator():
    rng = np.random.default_rng(3)
    calibrators = [EmpiricalCalibrator().fit(rng.standard_normal(n)) for n in (50, 7, 300)]
    calibrators.append(EmpiricalCalibrator().fit(np.array([np.nan])))  # no training scores: NaN severities
    raw = rng.standard_normal((40, 4)) * 2
    raw[3, 0] = raw[5, 2] = np.nan
    raw[7, 1] = calibrators[1].sorted_[2]  # a tie: mid-rank
    table, counts = calibration_table(calibrators)
    fused = calibrate(raw, table, counts)
    for j, c in enumerate(calibrators):
        np.testing.assert_array_equal(fused[:, j], c.severity(raw[:, j]))
