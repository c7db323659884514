"""Diebold-Yilmaz spillover: known decompositions, direction of spillover, and the streaming contract."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from features.cross_asset.spillover import SpilloverIndex, generalised_fevd


def test_fevd_of_independent_series_has_no_spillover():
    theta = generalised_fevd(np.diag([0.5, -0.2, 0.1]), np.diag([1.0, 2.0, 0.5]), horizon=10)
    np.testing.assert_allclose(theta, np.eye(3), atol=1e-15)


def test_fevd_with_uncorrelated_shocks_equals_the_orthogonalised_decomposition():
    # with a diagonal shock covariance the generalised and the Cholesky decompositions coincide
    a = np.array([[0.4, 0.3, 0.0], [0.1, 0.2, 0.5], [0.0, -0.3, 0.1]])
    sigma = np.diag([1.0, 0.5, 2.0])
    chol = np.linalg.cholesky(sigma)
    n, h = 3, 8
    ref = np.zeros((n, n))
    psi = np.eye(n)
    for _ in range(h):
        ref += (psi @ chol) ** 2
        psi = a @ psi
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(generalised_fevd(a, sigma, h), ref, rtol=1e-12)


def _leader_follower(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0, 0.01, (n, 3))
    r = np.zeros((n, 3))
    for t in range(1, n):
        r[t, 0] = shocks[t, 0]
        r[t, 1] = 0.6 * r[t - 1, 0] + shocks[t, 1]  # B follows A's shocks a row later
        r[t, 2] = shocks[t, 2]
    close = 100 * np.exp(np.cumsum(r, axis=0))
    close[rng.random((n, 3)) < 0.01] = np.nan  # some missing bars
    return np.arange(n, dtype=np.int64) * 60 * 10**9, close


def test_a_leader_transmits_and_its_follower_receives():
    ts, close = _leader_follower()
    frame = SpilloverIndex(["A", "B", "C"], window=500, every=25).batch(ts, close).to_frame().dropna()
    last = frame.iloc[-1]
    assert last["spill_to_500_A"] > 5 * last["spill_to_500_B"]
    assert last["spill_from_500_B"] > 5 * last["spill_from_500_C"]
    assert 0 < last["spillover_500"] < 100
    assert last["spillover_500"] == pytest.approx(last.filter(like="spill_to_").sum())


def test_streaming_pickling_and_prefixes_give_the_values_of_one_call():
    ts, close = _leader_follower(1200, seed=3)
    idx = SpilloverIndex(["A", "B", "C"], window=100, every=7)
    whole = idx.batch(ts, close)
    rng = np.random.default_rng(1)
    state, parts, at = idx.init_state(), [], 0
    while at < len(ts):
        k = int(rng.choice([1, 7, 100]))
        part, state = idx.step(state, ts[at : at + k], close[at : at + k])
        parts.append(part)
        at += k
        if len(parts) == 5:
            state = pickle.loads(pickle.dumps(state))
    for col in idx.columns:
        streamed = np.concatenate([p.values[col] for p in parts])
        assert np.array_equal(streamed, whole.values[col], equal_nan=True), col
        cut = idx.batch(ts[:700], close[:700]).values[col]
        assert np.array_equal(cut, whole.values[col][:700], equal_nan=True), col


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"window": 5}, "window"), ({"horizon": 0}, "horizon"), ({"every": 0}, "every")]
)
def test_bad_parameters_are_refused_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SpilloverIndex(["A", "B", "C"], **kwargs)
