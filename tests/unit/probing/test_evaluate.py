"""Ranking evaluations on synthetic data whose informative units are known."""

from __future__ import annotations

import numpy as np
import pytest

from miner.errors import ConfigError
from miner.probing.evaluate import (
    control_labels,
    evaluate_subsets,
    minimal_subset,
    select_units,
    selectivity,
    subset_size,
)
from miner.probing.probe import ProbeOptions

INFORMATIVE = [5, 17, 23, 31]
OPTS = ProbeOptions(epochs=15, batch_size=64, lr=1e-2, patience=3)


def _data(seed: int = 0, n: int = 900, units: int = 40, classes: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, units)).astype(np.float32)
    for c, u in enumerate(INFORMATIVE):
        x[:, u] += 2.5 * (y == c)
    return x[:500], y[:500], x[500:700], y[500:700], x[700:], y[700:]


def _order(units: int = 40) -> np.ndarray:
    rest = [u for u in range(units) if u not in INFORMATIVE]
    return np.array(INFORMATIVE + rest, dtype=np.int64)


def test_control_labels_per_type_reproducible() -> None:
    types = ["a", "b", "a", "c", "b", "a"]
    labels = np.array([0, 1, 0, 2, 1, 0])
    first = control_labels(types, labels, 3, seed=7)
    assert first[0] == first[2] == first[5] and first[1] == first[4]
    np.testing.assert_array_equal(first, control_labels(types, labels, 3, seed=7))
    # independent of order: a type keeps its label in a shuffled list
    again = control_labels(types[::-1], labels[::-1], 3, seed=7)
    assert dict(zip(types[::-1], again.tolist())) == dict(zip(types, first.tolist()))


def test_control_labels_follow_empirical_distribution() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=20_000, p=[0.6, 0.3, 0.1])
    types = [f"w{i}" for i in range(20_000)]
    ctl = control_labels(types, labels, 4, seed=1)
    freq = np.bincount(ctl, minlength=4) / ctl.size
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1, 0.0], atol=0.015)
    other = control_labels(types, labels, 4, seed=2)
    assert (other != ctl).mean() > 0.3


def test_select_units_sizes_and_seeding() -> None:
    order = np.arange(50)[::-1].copy()
    assert select_units(order, 50, 10, "top", 0).tolist() == [49, 48, 47, 46, 45]
    assert select_units(order, 50, 10, "bottom", 0).tolist() == [4, 3, 2, 1, 0]
    assert len(select_units(order, 50, 1, "top", 0)) == 1  # 0.5 rounds up
    a, b = select_units(order, 50, 20, "random", 3), select_units(order, 50, 20, "random", 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, select_units(order, 50, 20, "random", 4))
    assert subset_size(50, 100) == 50


@pytest.mark.parametrize("k", [0, -5, 100.5])
def test_k_outside_range_rejected(k: float) -> None:
    with pytest.raises(ConfigError, match=r"probe.k_percent: .* is outside \(0, 100\]"):
        select_units(np.arange(10), 10, k, "top", 0)


def test_top_beats_bottom() -> None:
    splits = _data()
    res = evaluate_subsets(*splits, 4, _order(), [10], 0.0, 1e-4, OPTS, seed=0)
    by = {r.which: r for r in res}
    assert by["top"].units.tolist() == INFORMATIVE
    assert by["top"].test_accuracy > by["bottom"].test_accuracy + 0.3
    assert by["all"].test_accuracy > 0.7
    again = evaluate_subsets(*splits, 4, _order(), [10], 0.0, 1e-4, OPTS, seed=0)
    np.testing.assert_array_equal(again[2].units, by["random"].units)
    assert again[2].test_accuracy == by["random"].test_accuracy


def test_minimal_subset_finds_informative_units() -> None:
    best = minimal_subset(*_data(), 4, _order(), 0.0, 1e-4, OPTS, target=0.97)
    assert 3 <= best.size <= 6
    assert set(INFORMATIVE[:3]) <= set(best.units.tolist())
    assert best.dev_accuracy >= best.threshold
    assert all(acc < best.threshold for size, acc in best.tried.items() if size < best.size)


def test_selectivity() -> None:
    assert selectivity(0.9, 0.6) == pytest.approx(0.3)
