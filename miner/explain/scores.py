"""Explanation scores of structured signatures on held-out sentences: a simulator, its Pearson correlation
with the true scores (OpenAI's simulation score) against a shuffled-signature baseline, and detection AUC
(delphi's idea: does the simulator rank the unit's top-band sentences above random ones?).

The simulator needs no language model: a unit's signature is a set of items (words, word patterns, POS
patterns, metadata values) with relative frequencies, fitted on the mining split. Its prediction for a
held-out sentence is the sum of log(rel_freq) over the items the sentence holds (`simulate`): an item twice as
frequent among the unit's sentences as in the corpus adds log 2. Only over-represented items (rel_freq > 1)
are signature items, so every weight is positive.

>>> presence = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float64))  # 4 sentences, 2 items
>>> weights = signature_weights(np.array([0, 1]), np.array([0, 0]), np.array([np.e, np.e ** 2]), 2, 1)
>>> simulate(presence, weights)[:, 0].tolist()
[1.0, 2.0, 3.0, 0.0]
>>> float(pearson_columns(simulate(presence, weights), np.array([[1.0], [2.0], [3.0], [0.0]]))[0])
1.0
>>> roc_auc(np.array([3.0, 2.0]), np.array([2.0, 0.0]))  # pairs won 3, tied 1 (half), of 4
0.875
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata


def signature_weights(items: np.ndarray, units: np.ndarray, rel_freq: np.ndarray, n_items: int,
                      n_units: int) -> sp.csc_matrix:
    """[items, units] weights log(rel_freq) of each unit's signature items (rows: item index, columns: the
    unit's column; an item listed twice for a unit counts once, with its largest weight)."""
    w = np.log(np.asarray(rel_freq, dtype=np.float64))
    order = np.lexsort((-w, items, units))
    items, units, w = np.asarray(items)[order], np.asarray(units)[order], w[order]
    first = np.ones(len(items), bool)
    first[1:] = (items[1:] != items[:-1]) | (units[1:] != units[:-1])
    return sp.csc_matrix((w[first], (items[first], units[first])), shape=(n_items, n_units))


def simulate(presence: sp.spmatrix, weights: sp.spmatrix) -> np.ndarray:
    """float64 [sentences, units]: each sentence's simulated score for each unit (presence [sentences, items]
    of 0/1 times the signature weights [items, units])."""
    return np.asarray((presence @ weights).todense(), dtype=np.float64)


def pearson_columns(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """float64 [units]: Pearson r of each column of `pred` with the same column of `true` ([sentences, units]);
    NaN where either column is constant."""
    p = pred - pred.mean(axis=0)
    t = true - true.mean(axis=0)
    num = (p * t).sum(axis=0)
    den = np.sqrt((p * p).sum(axis=0) * (t * t).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def shuffled_weights(weights: sp.spmatrix, seed: int) -> sp.csc_matrix:
    """The null simulator: each unit gets another unit's signature (a seeded permutation of the columns with
    no fixed point when there are at least 2 units)."""
    n = weights.shape[1]
    rng = np.random.default_rng(seed)
    perm = (np.arange(n) + 1 + rng.integers(0, n - 1)) % n if n > 1 else np.arange(n)
    return sp.csc_matrix(weights)[:, perm]


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of scores of positives against negatives (Mann-Whitney U / (n_pos n_neg), ties count half);
    NaN when either side is empty."""
    n_pos, n_neg = len(positive), len(negative)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
