"""Neuron rankings: LCA from probe weights (Dalvi 2019), probeless (Antverg & Belinkov 2022), AP (Suau 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miner.errors import ConfigError

_AP_CHUNK = 64


@dataclass(frozen=True)
class UnitOrder:
    """Units ordered most important first, with the score each got."""

    order: np.ndarray
    """int64 [U] unit indices, most important first; ties by smaller unit index."""
    scores: np.ndarray
    """float64 [U] indexed by unit (scores[u] is unit u's score, not the score of order[u])."""
    higher_first: bool
    """True when a higher score ranks a unit earlier (False for LCA's entry percentage)."""


@dataclass(frozen=True)
class Ranking:
    """One ranking method's overall and per-class orders."""

    method: str
    """"lca", "probeless" or "ap"."""
    overall: UnitOrder
    per_class: list[UnitOrder]
    """per_class[c] orders the units for class c."""


def _order_desc(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, nan last, ties by index.

    >>> _order_desc(np.array([0.5, 2.0, 0.5, np.nan])).tolist()
    [1, 0, 2, 3]
    """
    key = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((np.arange(scores.size), -key)).astype(np.int64)


def check_labelled(x: np.ndarray, y: np.ndarray, n_classes: int, what: str = "ranking") -> None:
    """Features [n, U] and labels [n] in 0..n_classes-1 that fit together, with at least 2 classes (a
    ConfigError naming `what`.n_classes otherwise); shared by the rankings and the probe trainer."""
    if n_classes < 2:
        raise ConfigError(f"{what}.n_classes: must be >= 2, got {n_classes}")
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")


def lca_ranking(weights: np.ndarray, stride: int = 100) -> Ranking:
    """Linguistic Correlation Analysis order from probe weights [C, U] (NeuroX get_neuron_ordering).

    Per class, units sorted by |w| descending; the class's top units at percentage p are the fewest whose
    cumulative |w| reaches p of the class's |w| mass (units with |w| = 0 never count). Overall, p steps over
    0, 1/stride, ..., 1 and each step appends the newly included units, ties within a step by their largest
    per-class mass share and then by index; units with zero weight in every class come last (score inf). The
    overall score is the p at which a unit entered (lower = more salient); per class it is the mass share.

    Class 0 has shares (.5, .3, .2, 0) and class 1 (0, .1, .9, 0). At p = 0 each class's top unit enters
    (unit 2, share .9, before unit 0, share .5); unit 1 enters at p = .6, the first p above class 0's .5:

    >>> w = np.array([[0.5, -0.3, 0.2, 0.0], [0.0, 0.1, -0.9, 0.0]])
    >>> r = lca_ranking(w, stride=10)
    >>> r.overall.order.tolist(), r.overall.scores.tolist()
    ([2, 0, 1, 3], [0.0, 0.6, 0.0, inf])
    >>> r.per_class[1].order.tolist(), r.per_class[1].scores.tolist()
    ([2, 1, 0, 3], [0.0, 0.1, 0.9, 0.0])
    """
    if stride < 1:
        raise ConfigError(f"ranking.stride: must be >= 1, got {stride}")
    mass = np.abs(np.asarray(weights, dtype=np.float64))
    if mass.ndim != 2:
        raise ValueError(f"weights must be [classes, units], got shape {mass.shape}")
    n_classes, n_units = mass.shape
    totals = mass.sum(axis=1)
    shares = np.divide(mass, totals[:, None], out=np.zeros_like(mass), where=totals[:, None] > 0)
    steps = np.arange(stride + 1) / stride
    entry = np.full(n_units, stride + 1, dtype=np.int64)  # first step at which each unit is included
    per_class = []
    for c in range(n_classes):
        order = _order_desc(shares[c])
        per_class.append(UnitOrder(order=order, scores=shares[c], higher_first=True))
        n_pos = int((mass[c] > 0).sum())
        if n_pos == 0:
            continue
        cum = np.cumsum(shares[c, order[:n_pos]])
        cum[-1] = 1.0  # the whole mass, free of rounding, so p = 1 takes every non-zero unit
        # units included at each step: fewest j with cum[j-1] >= p
        counts = np.minimum(np.searchsorted(cum, steps, side="left") + 1, n_pos)
        # sorted position j enters at the first step whose count exceeds j
        first_step = np.searchsorted(counts, np.arange(n_pos), side="right")
        entry[order[:n_pos]] = np.minimum(entry[order[:n_pos]], first_step)
    max_share = shares.max(axis=0) if n_classes else np.zeros(n_units)
    overall_order = np.lexsort((np.arange(n_units), -max_share, entry)).astype(np.int64)
    score = np.where(entry <= stride, entry / stride, np.inf)
    return Ranking("lca", UnitOrder(overall_order, score, higher_first=False), per_class)


def _class_means(x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(means [C, U] with nan rows for absent classes, counts [C])."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, y, x.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[counts == 0] = np.nan
    return means, counts


def probeless_ranking(x: np.ndarray, y: np.ndarray, n_classes: int) -> Ranking:
    """Rank units by differences of class-mean activations, no classifier (Antverg & Belinkov 2022).

    Overall score of a unit: sum over class pairs c < c' of |mean_c - mean_c'| (classes present in y only); per
    class: |mean_c - mean_not_c|, mean_not_c over all rows of other classes (nan for an absent class).

    >>> x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 0.0]], dtype=np.float32)
    >>> r = probeless_ranking(x, np.array([0, 1, 2]), 3)
    >>> r.overall.order.tolist(), r.overall.scores.tolist()
    ([0, 1], [8.0, 2.0])
    >>> r.per_class[2].scores.tolist()
    [3.0, 1.0]
    """
    check_labelled(x, y, n_classes)
    means, counts = _class_means(x, y, n_classes)
    present = means[counts > 0]
    # sum_{i<j} |a_i - a_j| = sum_k a_(k) * (2k - m + 1) over the m sorted values a_(0) <= ... <= a_(m-1)
    m = present.shape[0]
    coef = 2.0 * np.arange(m) - m + 1
    overall = (np.sort(present, axis=0) * coef[:, None]).sum(axis=0)
    total = means[counts > 0].T @ counts[counts > 0]  # [U] sum of all activations
    per_class = []
    for c in range(n_classes):
        rest = counts.sum() - counts[c]
        if counts[c] == 0 or rest == 0:
            scores = np.full(x.shape[1], np.nan)
        else:
            scores = np.abs(means[c] - (total - means[c] * counts[c]) / rest)
        per_class.append(UnitOrder(_order_desc(scores), scores, higher_first=True))
    return Ranking("probeless", UnitOrder(_order_desc(overall), overall, higher_first=True), per_class)


def _ap_chunk(xc: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision [C, k] of each column of xc [n, k] as a detector of each class (sklearn's definition).

    AP = sum over distinct thresholds t (descending) of (R_t - R_prev) * P_t, so each positive row contributes
    TP(t) / N(t) of the tie group it falls in, where TP and N count the rows scoring >= t.
    """
    n, k = xc.shape
    cols = np.arange(k)[None, :]
    order = np.argsort(-xc, axis=0, kind="stable")
    xs = xc[order, cols]
    ys = y[order]
    is_end = np.ones((n, k), dtype=bool)
    is_end[:-1] = xs[:-1] != xs[1:]
    rows = np.arange(n)[:, None]
    # index of the last row of each row's tie group: reverse running minimum of the group-end indices
    group_end = np.minimum.accumulate(np.where(is_end, rows, n)[::-1], axis=0)[::-1]
    group_id = np.cumsum(is_end, axis=0) - is_end
    # rows of each class, in score order: class c occupies the fixed slice starts[c]:starts[c + 1] of every column
    by_class = np.argsort(ys, axis=0, kind="stable")
    cls = ys[by_class, cols]
    grp = group_id[by_class, cols]
    run_last = np.ones((n, k), dtype=bool)
    run_last[:-1] = (cls[:-1] != cls[1:]) | (grp[:-1] != grp[1:])
    run_end = np.minimum.accumulate(np.where(run_last, rows, n)[::-1], axis=0)[::-1]
    starts = np.concatenate([[0], np.cumsum(counts)])
    tp = run_end - starts[cls] + 1  # positives of the class scoring >= the group's threshold
    contrib = tp / (group_end[by_class, cols] + 1.0)
    csum = np.concatenate([np.zeros((1, k)), np.cumsum(contrib, axis=0)])
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (csum[starts[1:]] - csum[starts[:-1]]) / counts[:, None]
    ap[counts == 0] = np.nan
    return ap


def ap_ranking(x: np.ndarray, y: np.ndarray, n_classes: int) -> Ranking:
    """Rank units by the average precision of their raw activation as a class detector (Suau et al. 2020).

    Per class, score = sklearn.metrics.average_precision_score(y == c, x[:, u]) (ties handled as there: one
    precision per distinct threshold), nan for an absent class; overall score = max over classes.

    >>> x = np.array([[3.0, 1.0], [2.0, 1.0], [1.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    >>> r = ap_ranking(x, np.array([1, 1, 0, 0]), 2)
    >>> r.per_class[1].scores.round(4).tolist(), r.per_class[0].scores.round(4).tolist()
    ([1.0, 0.5], [0.4167, 0.5])
    >>> r.overall.order.tolist()
    [0, 1]
    """
    check_labelled(x, y, n_classes)
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes)
    ap = np.empty((n_classes, x.shape[1]))
    for start in range(0, x.shape[1], _AP_CHUNK):
        ap[:, start : start + _AP_CHUNK] = _ap_chunk(np.asarray(x[:, start : start + _AP_CHUNK]), y, counts)
    present = counts > 0
    overall = ap[present].max(axis=0) if present.any() else np.full(x.shape[1], np.nan)
    per_class = [UnitOrder(_order_desc(ap[c]), ap[c], higher_first=True) for c in range(n_classes)]
    return Ranking("ap", UnitOrder(_order_desc(overall), overall, higher_first=True), per_class)
