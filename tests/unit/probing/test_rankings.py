"""Rankings against hand-worked orders and brute-force / scikit-learn references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from miner.errors import ConfigError
from miner.probing.rankings import ap_ranking, lca_ranking, probeless_ranking


def test_lca_hand_made_matrix() -> None:
    # class 0 mass 2.0: shares u0 .4, u1 .3, u2 .2, u4 .1; class 1 mass 1.0: u3 .6, u1 .4; u5 zero everywhere
    w = np.array([[0.8, -0.6, 0.4, 0.0, 0.2, 0.0], [0.0, 0.4, 0.0, -0.6, 0.0, 0.0]])
    r = lca_ranking(w, stride=10)
    # p=0: u3 (.6) before u0 (.4); class 0 cum .4 .7 .9 1.0 -> u1 at p=.5, u2 at p=.8, u4 at p=1.0;
    # class 1 cum .6 1.0 -> u1 would enter at .7 (already in at .5)
    assert r.overall.order.tolist() == [3, 0, 1, 2, 4, 5]
    np.testing.assert_allclose(r.overall.scores, [0.0, 0.5, 0.8, 0.0, 1.0, np.inf])
    assert r.per_class[0].order.tolist() == [0, 1, 2, 4, 3, 5]
    np.testing.assert_allclose(r.per_class[0].scores, [0.4, 0.3, 0.2, 0.0, 0.1, 0.0])
    assert r.per_class[1].order.tolist() == [3, 1, 0, 2, 4, 5]
    assert not r.overall.higher_first


def test_lca_ties_within_step_by_share_then_index() -> None:
    w = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    # p=0 takes u0 (class 0) and u2 (class 1), both share .5 -> by index; then u1, u3 at p=.6
    r = lca_ranking(w, stride=10)
    assert r.overall.order.tolist() == [0, 2, 1, 3]


def test_lca_brute_force_on_random_weights() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 30)) * (rng.random((5, 30)) < 0.6)
    stride = 20
    order: list[int] = []
    for k in range(stride + 1):
        p = k / stride
        new = set()
        for c in range(w.shape[0]):
            mass = np.abs(w[c])
            idx = sorted((u for u in range(30) if mass[u] > 0), key=lambda u: (-mass[u], u))
            total, cum = mass.sum(), 0.0
            for u in idx:
                new.add(u)
                cum += mass[u]
                if cum >= p * total - 1e-12:
                    break
        share = (np.abs(w) / np.abs(w).sum(axis=1, keepdims=True)).max(axis=0)
        order += sorted(new - set(order), key=lambda u: (-share[u], u))
    order += [u for u in range(30) if u not in order]
    assert lca_ranking(w, stride=stride).overall.order.tolist() == order


def test_probeless_matches_loops() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 7)).astype(np.float32)
    y = rng.integers(0, 4, 200)
    y[y == 2] = 3  # class 2 absent
    r = probeless_ranking(x, y, 5)
    present = [c for c in range(5) if (y == c).any()]
    for u in range(7):
        means = {c: x[y == c, u].astype(np.float64).mean() for c in present}
        expected = sum(abs(means[a] - means[b]) for a, b in itertools.combinations(present, 2))
        assert r.overall.scores[u] == pytest.approx(expected, rel=1e-9)
        for c in present:
            rest = x[y != c, u].astype(np.float64).mean()
            assert r.per_class[c].scores[u] == pytest.approx(abs(means[c] - rest), rel=1e-9)
    assert np.isnan(r.per_class[2].scores).all()
    assert r.overall.order.tolist() == sorted(range(7), key=lambda u: (-r.overall.scores[u], u))


@pytest.mark.parametrize("levels", [None, 3])
def test_ap_matches_sklearn(levels: int | None) -> None:
    rng = np.random.default_rng(1)
    n, units, classes = 300, 9, 4
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, units)) + 0.8 * (y[:, None] == np.arange(units)[None, :] % classes)
    if levels is not None:  # many tied values
        x = np.round(x * levels / 2) / levels
    x = x.astype(np.float32)
    r = ap_ranking(x, y, classes)
    for c in range(classes):
        for u in range(units):
            expected = average_precision_score(y == c, x[:, u])
            assert r.per_class[c].scores[u] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(r.overall.scores, np.max([r.per_class[c].scores for c in range(classes)], axis=0))


def test_ap_absent_class_and_constant_unit() -> None:
    x = np.array([[1.0, 0.0], [1.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1, 0])
    r = ap_ranking(x, y, 3)
    assert np.isnan(r.per_class[2].scores).all()
    assert r.per_class[1].scores[0] == pytest.approx(average_precision_score(y == 1, x[:, 0]))


def test_orders_deterministic_and_validated() -> None:
    x = np.zeros((4, 3), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    assert probeless_ranking(x, y, 2).overall.order.tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="n_classes"):
        ap_ranking(x, np.zeros(4, dtype=np.int64), 1)
    with pytest.raises(ConfigError, match="stride"):
        lca_ranking(np.ones((2, 2)), stride=0)
