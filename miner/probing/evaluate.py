"""Evaluations of a neuron ranking: top/random/bottom retraining, minimal subsets, control tasks, selectivity."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np

from miner.errors import ConfigError
from miner.probing.probe import ProbeOptions, accuracy, train_probe

log = logging.getLogger(__name__)

WHICH = ("top", "random", "bottom")


@dataclass(frozen=True)
class SubsetResult:
    """A probe retrained on a subset of units."""

    which: str
    """"top", "random", "bottom" (of the ranking) or "all"."""
    k_percent: float
    """Requested share of the units (100 for "all")."""
    units: np.ndarray
    """int64 [k] the units kept."""
    dev_accuracy: float
    test_accuracy: float


@dataclass(frozen=True)
class MinimalSubset:
    """The smallest top-ranked prefix that keeps target x the full probe's dev accuracy."""

    size: int
    """Units in the prefix."""
    units: np.ndarray
    """int64 [size] the prefix of the order."""
    dev_accuracy: float
    test_accuracy: float
    full_dev_accuracy: float
    """Dev accuracy with every unit."""
    threshold: float
    """target * full_dev_accuracy, the dev accuracy the prefix had to reach."""
    tried: dict[int, float]
    """Dev accuracy of every prefix size trained during the search."""


def _label_for(seed: int, word_type: str, cdf: np.ndarray) -> int:
    digest = hashlib.blake2b(f"{seed}\x1f{word_type}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    return int(np.searchsorted(cdf, u, side="right"))


def control_labels(word_types: list[str], labels: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Hewitt & Liang (2019) control task: each word type gets one label drawn from the empirical distribution.

    The draw is blake2b(seed, type) mapped onto the cumulative label distribution, so a type's label does not
    depend on row order or process, only on the seed, the type and the label counts.

    >>> types = ["the", "cat", "the", "sat"]
    >>> ctl = control_labels(types, np.array([0, 1, 0, 1]), 2, seed=0)
    >>> bool(ctl[0] == ctl[2]), ctl.dtype.name, set(ctl.tolist()) <= {0, 1}
    (True, 'int64', True)
    """
    labels = np.asarray(labels, dtype=np.int64)
    if n_classes < 2:
        raise ConfigError(f"control.n_classes: must be >= 2, got {n_classes}")
    if len(word_types) != labels.shape[0]:
        raise ValueError(f"{len(word_types)} word types for {labels.shape[0]} labels")
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    cdf = np.cumsum(counts) / counts.sum()
    cdf[-1] = 1.0
    cdf[counts.nonzero()[0][-1] :] = 1.0  # u < 1 never lands past the last present class
    table: dict[str, int] = {}
    out = np.empty(len(word_types), dtype=np.int64)
    for i, word_type in enumerate(word_types):
        label = table.get(word_type)
        if label is None:
            label = table[word_type] = _label_for(seed, word_type, cdf)
        out[i] = label
    return out


def _check_k(k_percent: float) -> None:
    if not 0 < k_percent <= 100:
        raise ConfigError(f"probe.k_percent: {k_percent:g} is outside (0, 100]")


def subset_size(n_units: int, k_percent: float) -> int:
    """Units in k% of n_units, rounded up, at least 1.

    >>> subset_size(2304, 10), subset_size(100, 10), subset_size(5, 0.1)
    (231, 10, 1)
    """
    _check_k(k_percent)
    return max(1, min(n_units, math.ceil(round(k_percent * n_units / 100.0, 9))))


def select_units(order: np.ndarray, n_units: int, k_percent: float, which: str, seed: int) -> np.ndarray:
    """The top (first), bottom (last) or a seeded random k% of the units of a ranking's order.

    Top and bottom keep the order's sequence; random is sorted by unit index.

    >>> order = np.array([3, 1, 0, 2, 4])
    >>> select_units(order, 5, 40, "top", 0).tolist(), select_units(order, 5, 40, "bottom", 0).tolist()
    ([3, 1], [2, 4])
    >>> len(select_units(order, 5, 40, "random", 0))
    2
    """
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (n_units,):
        raise ValueError(f"order has shape {order.shape}, expected ({n_units},)")
    k = subset_size(n_units, k_percent)
    if which == "top":
        return order[:k].copy()
    if which == "bottom":
        return order[n_units - k :].copy()
    if which == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n_units, size=k, replace=False)).astype(np.int64)
    raise ConfigError(f"probe.which: {which!r} is not one of top, random, bottom")


def _fit_eval(
    splits: tuple[np.ndarray, ...], units: np.ndarray, n_classes: int, l1: float, l2: float, options: ProbeOptions
) -> tuple[float, float]:
    """(dev, test) accuracy of a probe retrained on the given units."""
    x_train, y_train, x_dev, y_dev, x_test, y_test = splits
    probe = train_probe(x_train[:, units], y_train, n_classes, l1, l2, options, x_dev[:, units], y_dev)
    dev_acc, _ = accuracy(y_dev, probe.predict(x_dev[:, units]), n_classes)
    test_acc, _ = accuracy(y_test, probe.predict(x_test[:, units]), n_classes)
    return dev_acc, test_acc


def evaluate_subsets(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_dev: np.ndarray,
    y_dev: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    order: np.ndarray,
    k_percents: list[float],
    l1: float,
    l2: float,
    options: ProbeOptions | None = None,
    seed: int = 0,
) -> list[SubsetResult]:
    """Retrain probes (fixed l1, l2; no grid) on the top, random and bottom k% of the order, and on all units.

    Results come as "all" first, then for each k in k_percents: top, random, bottom.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> x = rng.normal(size=(300, 10)).astype(np.float32)
    >>> x[:, 0] += 3 * y
    >>> order = np.arange(10)
    >>> opts = ProbeOptions(epochs=30, batch_size=32, lr=1e-2)
    >>> res = evaluate_subsets(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:], 2, order, [10], 0, 0, opts)
    >>> [(r.which, len(r.units)) for r in res]
    [('all', 10), ('top', 1), ('random', 1), ('bottom', 1)]
    >>> res[1].test_accuracy > res[3].test_accuracy + 0.2
    True
    """
    options = options or ProbeOptions()
    for k in k_percents:
        _check_k(k)
    n_units = x_train.shape[1]
    splits = (x_train, y_train, x_dev, y_dev, x_test, y_test)
    every = np.arange(n_units, dtype=np.int64)
    dev_acc, test_acc = _fit_eval(splits, every, n_classes, l1, l2, options)
    results = [SubsetResult("all", 100.0, every, dev_acc, test_acc)]
    for k in k_percents:
        for which in WHICH:
            units = select_units(order, n_units, k, which, seed)
            dev_acc, test_acc = _fit_eval(splits, units, n_classes, l1, l2, options)
            results.append(SubsetResult(which, float(k), units, dev_acc, test_acc))
            log.info("subset %s %g%%: %d units, test accuracy %.4f", which, k, len(units), test_acc)
    return results


def minimal_subset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_dev: np.ndarray,
    y_dev: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    order: np.ndarray,
    l1: float,
    l2: float,
    options: ProbeOptions | None = None,
    target: float = 0.97,
) -> MinimalSubset:
    """The smallest top-ranked prefix whose dev accuracy reaches target x the full probe's dev accuracy.

    Search: prefix sizes 1, 2, 4, 8, ... (doubling, capped at U) until one reaches the threshold, then bisection
    between the last size that failed and the first that passed. Bisection assumes accuracy grows with the prefix;
    where it does not, the answer is a prefix that passes whose next-smaller tried neighbour failed. About
    2 log2(U) probes are trained (23 for U = 2304).

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> x = rng.normal(size=(300, 8)).astype(np.float32)
    >>> x[:, 2] += 4 * y
    >>> order = np.array([2, 0, 1, 3, 4, 5, 6, 7])
    >>> opts = ProbeOptions(epochs=10, batch_size=32)
    >>> best = minimal_subset(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:], 2, order, 0, 0, opts)
    >>> best.size, best.units.tolist()
    (1, [2])
    """
    options = options or ProbeOptions()
    if not 0 < target <= 1:
        raise ConfigError(f"probe.target: {target:g} is outside (0, 1]")
    order = np.asarray(order, dtype=np.int64)
    n_units = x_train.shape[1]
    splits = (x_train, y_train, x_dev, y_dev, x_test, y_test)
    tried: dict[int, float] = {}
    tests: dict[int, float] = {}

    def dev_at(size: int) -> float:
        if size not in tried:
            tried[size], tests[size] = _fit_eval(splits, order[:size], n_classes, l1, l2, options)
        return tried[size]

    full = dev_at(n_units)
    threshold = target * full
    low, size = 0, 1  # low: largest size known to fail (0: none tried)
    while size < n_units and dev_at(size) < threshold:
        low, size = size, min(2 * size, n_units)
    high = size  # passes (n_units passes by definition: full >= target * full)
    while high - low > 1:
        mid = (low + high) // 2
        if dev_at(mid) >= threshold:
            high = mid
        else:
            low = mid
    return MinimalSubset(
        size=high,
        units=order[:high].copy(),
        dev_accuracy=tried[high],
        test_accuracy=tests[high],
        full_dev_accuracy=full,
        threshold=threshold,
        tried=dict(sorted(tried.items())),
    )


def selectivity(task_acc: float, control_acc: float) -> float:
    """Hewitt & Liang selectivity: task accuracy minus control-task accuracy.

    >>> round(selectivity(0.91, 0.62), 2)
    0.29
    """
    return float(task_acc - control_acc)
