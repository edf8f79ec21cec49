"""Simulation and detection scores against scipy and scikit-learn, and on units whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from miner.explain.scores import pearson_columns, roc_auc, shuffled_weights, signature_weights, simulate


def presence_matrix(seed: int, sentences: int = 2000, items: int = 40) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((sentences, items)) < rng.uniform(0.02, 0.3, items)).astype(np.float64))


def test_pearson_columns_equal_scipy() -> None:
    rng = np.random.default_rng(0)
    pred, true = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    true[:, 1] += 2 * pred[:, 1]
    got = pearson_columns(pred, true)
    assert got == pytest.approx([pearsonr(pred[:, k], true[:, k]).statistic for k in range(5)], abs=1e-12)
    assert np.isnan(pearson_columns(np.ones((4, 1)), rng.normal(size=(4, 1)))[0])


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos, neg = rng.integers(0, 6, size=50).astype(float), rng.integers(0, 5, size=80).astype(float)
    labels = np.r_[np.ones(50), np.zeros(80)]
    assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)
    assert np.isnan(roc_auc(pos, neg[:0]))


def test_a_word_unit_is_explained_and_a_random_unit_is_not() -> None:
    """Unit 0 fires exactly when item 7 is present; its signature is item 7: simulation r = 1, AUC = 1.
    Unit 1's scores are noise, whatever its signature: r and AUC near chance. The shuffled baseline of unit
    0 (another unit's signature) is near 0 too."""
    presence = presence_matrix(0)
    rng = np.random.default_rng(1)
    true = np.stack([presence[:, 7].toarray()[:, 0] * 2.5 + 0.1, rng.normal(size=presence.shape[0])], axis=1)
    weights = signature_weights(np.array([7, 3, 11, 19]), np.array([0, 1, 1, 1]), np.array([4.0, 2.0, 3.0, 1.5]),
                                presence.shape[1], 2)
    pred = simulate(presence, weights)
    r = pearson_columns(pred, true)
    assert r[0] == pytest.approx(1.0, abs=1e-12) and abs(r[1]) < 0.1
    null = pearson_columns(simulate(presence, shuffled_weights(weights, 0)), true)
    assert abs(null[0]) < 0.1
    for unit, want in ((0, 1.0), (1, 0.5)):
        band = true[:, unit] >= np.quantile(true[:, unit], 0.9)
        auc = roc_auc(pred[band, unit], pred[~band, unit])
        assert auc == pytest.approx(want, abs=0.1 if unit else 1e-12)


def test_signature_weights_keep_one_entry_per_item_and_unit() -> None:
    w = signature_weights(np.array([2, 2, 0]), np.array([1, 1, 0]), np.array([np.e, np.e ** 3, np.e]), 3, 2)
    assert w.toarray().tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 3.0]]
    perm = shuffled_weights(sp.csc_matrix(np.eye(4)), 3).toarray()
    assert sorted(perm.argmax(axis=0).tolist()) == [0, 1, 2, 3] and not np.any(np.diag(perm))
