"""The ElasticNet probe against scikit-learn's saga solver, plus sparsity, grid choice, seeding and validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from miner.errors import ConfigError
from miner.probing.probe import (
    ProbeOptions,
    Standardizer,
    accuracy,
    majority_baseline,
    select_probe,
    train_probe,
)

UNITS, INFORMATIVE, CLASSES = 40, 8, 3


def _mixture(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture: class means differ on the first 8 units; correlated noise on all 40."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(0.0, 1.0, size=(CLASSES, INFORMATIVE))
    mixing = np.random.default_rng(98).normal(0.0, 0.3, size=(UNITS, UNITS)) + np.eye(UNITS)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(size=(n, UNITS)) @ mixing
    x[:, :INFORMATIVE] += means[y]
    return (3.0 * x + 1.0).astype(np.float32), y.astype(np.int64)


def _sklearn(x: np.ndarray, y: np.ndarray, l1: float, l2: float) -> LogisticRegression:
    """Our objective mean CE + l1 |w|_1 + l2 |w|^2 is sklearn's divided by C n, so C = 1/(n (l1 + 2 l2))."""
    c = 1.0 / (len(y) * (l1 + 2 * l2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=c, l1_ratio=l1 / (l1 + 2 * l2), solver="saga", max_iter=3000, tol=1e-6).fit(x, y)


def test_matches_sklearn_saga() -> None:
    x_train, y_train = _mixture(800, 0)
    x_test, y_test = _mixture(1000, 1)
    l1, l2 = 2e-3, 1e-3
    ours = train_probe(x_train, y_train, CLASSES, l1, l2, ProbeOptions(epochs=60, batch_size=32, lr=3e-2))
    std = Standardizer.fit(x_train)
    ref = _sklearn(std.transform(x_train), y_train, l1, l2)
    ours_acc, _ = accuracy(y_test, ours.predict(x_test), CLASSES)
    ref_acc = float((ref.predict(std.transform(x_test)) == y_test).mean())
    assert abs(ours_acc - ref_acc) <= 0.02, (ours_acc, ref_acc)
    top = np.argsort(-np.abs(ref.coef_).ravel())[:10]
    assert (np.sign(ours.weights.ravel()[top]) == np.sign(ref.coef_.ravel()[top])).all()


def test_large_l1_gives_exact_zeros() -> None:
    x, y = _mixture(600, 2)
    probe = train_probe(x, y, CLASSES, 3e-2, 0.0, ProbeOptions(epochs=30, batch_size=64))
    zero = probe.weights == 0
    assert zero[:, INFORMATIVE:].mean() > 0.6
    assert not zero[:, :INFORMATIVE].all()
    dense = train_probe(x, y, CLASSES, 0.0, 0.0, ProbeOptions(epochs=5, batch_size=32))
    assert (dense.weights == 0).mean() < 0.01


def test_grid_picks_the_better_setting() -> None:
    x_train, y_train = _mixture(600, 3)
    x_dev, y_dev = _mixture(400, 4)
    # l1 = 1.0 zeroes every weight (dev accuracy near chance); 0 must win
    opts = ProbeOptions(epochs=10, batch_size=64, l1_grid=(1.0, 0.0), l2_grid=(0.0,))
    sel = select_probe(x_train, y_train, x_dev, y_dev, CLASSES, opts)
    assert (sel.l1, sel.l2) == (0.0, 0.0)
    assert [(p.l1, p.l2) for p in sel.grid] == [(1.0, 0.0), (0.0, 0.0)]
    assert sel.grid[0].dev_accuracy < 0.5 < sel.grid[1].dev_accuracy
    assert sel.dev_accuracy > 0.7


def test_grid_ties_go_to_larger_regularisation() -> None:
    x_train, y_train = _mixture(300, 5)
    x_dev, y_dev = _mixture(100, 6)
    opts = ProbeOptions(epochs=3, batch_size=64, l1_grid=(0.0,), l2_grid=(0.0, 1e-9))
    sel = select_probe(x_train, y_train, x_dev, y_dev, CLASSES, opts)
    if sel.grid[0].dev_accuracy == sel.grid[1].dev_accuracy:
        assert sel.l2 == 1e-9


def test_grid_subsample() -> None:
    x_train, y_train = _mixture(500, 7)
    x_dev, y_dev = _mixture(100, 8)
    opts = ProbeOptions(epochs=2, grid_max_rows=200, l1_grid=(0.0,), l2_grid=(0.0,))
    sel = select_probe(x_train, y_train, x_dev, y_dev, CLASSES, opts)
    assert sel.grid_rows == 200


def test_deterministic_with_seed() -> None:
    x, y = _mixture(400, 9)
    a = train_probe(x, y, CLASSES, 1e-3, 1e-3, ProbeOptions(epochs=3, seed=5))
    b = train_probe(x, y, CLASSES, 1e-3, 1e-3, ProbeOptions(epochs=3, seed=5))
    c = train_probe(x, y, CLASSES, 1e-3, 1e-3, ProbeOptions(epochs=3, seed=6))
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weights, c.weights)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l1": -1.0, "l2": 0.0}, "probe.l1: must be >= 0"),
        ({"l1": 0.0, "l2": -1e-3}, "probe.l2: must be >= 0"),
    ],
)
def test_negative_lambdas_rejected(kwargs: dict[str, float], message: str) -> None:
    x, y = _mixture(20, 0)
    with pytest.raises(ConfigError, match=message):
        train_probe(x, y, CLASSES, **kwargs)


def test_options_and_classes_validated() -> None:
    with pytest.raises(ConfigError, match="probe.l1_grid: must be >= 0"):
        ProbeOptions(l1_grid=(0.0, -1.0))
    with pytest.raises(ConfigError, match="probe.epochs"):
        ProbeOptions(epochs=0)
    x, y = _mixture(20, 0)
    with pytest.raises(ConfigError, match="probe.n_classes: must be >= 2"):
        train_probe(x, np.zeros(20, dtype=np.int64), 1, 0.0, 0.0)


def test_standardizer_constant_unit() -> None:
    x = np.array([[1.0, 2.0], [3.0, 2.0]], dtype=np.float32)
    s = Standardizer.fit(x)
    np.testing.assert_array_equal(s.scale, [1.0, 1.0])
    np.testing.assert_array_equal(s.transform(x), [[-1.0, 0.0], [1.0, 0.0]])


def test_accuracy_and_majority() -> None:
    overall, per_class = accuracy(np.array([0, 1, 1, 1]), np.array([0, 1, 0, 1]), 3)
    assert overall == 0.75
    np.testing.assert_allclose(per_class, [1.0, 2 / 3, np.nan])
    assert majority_baseline(np.array([1, 1, 0]), np.array([1, 0, 1, 1])) == 0.75
