"""The paper's selectivity measures of a unit's queue (Oba et al. 2021, section 4.3), as pure NumPy functions.

- POS selectivity: the maximum relative frequency over the simplified classes noun, verb and adjective,
  ``max(noun_rel, verb_rel, adj_rel)``, where ``<class>_rel`` = the class's share of the queue's tokens / its
  share of the background's tokens (no smoothing; a class absent from the background has no defined ratio
  and is skipped). Classes are PTB tag prefixes (``miner.signatures.aggregate.POS_GROUPS``: NN*, V*, J*).
- Sentiment selectivity: the standard deviation (population, ddof 0) of the BINARY polarity of the queue's
  labelled sentences, positive = +1 and negative = -1, neutral and unlabelled sentences left out.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def class_selectivity(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, winner) per row of a (Q, C) matrix of per-class relative frequencies: the row's largest finite
    value and its column (ties: the first column), NaN and -1 where no value is finite.

    Columns noun, verb, adj; a queue with 1.5x the background's share of adjectives, one without any defined
    ratio, one with an undefined adjective ratio:

    >>> value, winner = class_selectivity(np.array([[0.8, 1.1, 1.5], [np.nan] * 3, [1.2, 0.4, np.nan]]))
    >>> value.tolist(), winner.tolist()
    ([1.5, nan, 1.2], [2, -1, 0])
    """
    rel = np.asarray(rel, np.float64)
    finite = np.isfinite(rel)
    masked = np.where(finite, rel, -np.inf)
    winner = masked.argmax(axis=1) if rel.shape[1] else np.zeros(len(rel), np.int64)
    has = finite.any(axis=1)
    value = np.where(has, masked[np.arange(len(rel)), winner] if rel.shape[1] else np.nan, np.nan)
    return value, np.where(has, winner, -1)


def binary_polarity(polarity: np.ndarray) -> np.ndarray:
    """Three-way polarity (+1 positive, 0 neutral, -1 negative, NaN unlabelled) with neutral left out (NaN).

    >>> binary_polarity(np.array([1.0, 0.0, -1.0, np.nan])).tolist()
    [1.0, nan, -1.0, nan]
    """
    polarity = np.asarray(polarity, np.float64)
    return np.where(polarity == 0, np.nan, polarity)


def polarity_spread(member: sp.csr_matrix, polarity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean, std) per queue (row of the (Q, S) 0/1 membership matrix) over its sentences whose polarity is
    not NaN; mean and std are NaN for a queue without any. std is the population standard deviation.

    One queue of sentences positive, positive, negative, neutral: binary [1, 1, -1] has mean 1/3 and std
    sqrt(1 - 1/9) = 0.943; three-way [1, 1, -1, 0] has mean 0.25 and std sqrt(3/4 - 1/16) = 0.829:

    >>> member = sp.csr_matrix(np.ones((1, 4)))
    >>> three_way = np.array([1.0, 1.0, -1.0, 0.0])
    >>> [(int(n[0]), round(float(m[0]), 3), round(float(s[0]), 3))
    ...  for n, m, s in (polarity_spread(member, binary_polarity(three_way)), polarity_spread(member, three_way))]
    [(3, 0.333, 0.943), (4, 0.25, 0.829)]
    """
    labelled = ~np.isnan(polarity)
    p = np.where(labelled, polarity, 0.0)
    n = np.asarray(member @ labelled.astype(np.float64)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.asarray(member @ p).ravel() / n
        var = np.maximum(np.asarray(member @ (p * p)).ravel() / n - mean * mean, 0.0)
    ok = n > 0
    return n.astype(np.int64), np.where(ok, mean, np.nan), np.where(ok, np.sqrt(var), np.nan)
