"""Blockwise correlation, best partners and the clustering threshold against numpy / scipy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from miner.correlate.correlation import best_partners, correlation_matrix, redundancy_pass, standardise
from miner.correlate.redundancy import cluster_units, condensed_from_corr


def sample_matrix(rows: int = 300, units: int = 37, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rows, 6))
    x = base @ rng.normal(size=(6, units)) + 0.5 * rng.normal(size=(rows, units))  # correlated columns
    x[:, 5] = 3.25  # a constant unit
    x[:, 9] = -x[:, 2] * 2 + 1  # a perfect negative twin
    return x.astype(np.float16).astype(np.float32)


def brute_best(ref: np.ndarray, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    size = np.abs(np.nan_to_num(ref, nan=-1.0))
    size[np.isnan(ref)] = -1.0
    if exclude_self:
        np.fill_diagonal(size, -1.0)
    best = size.argmax(1)
    ok = size[np.arange(len(ref)), best] >= 0
    return np.where(ok, best, -1), np.where(ok, ref[np.arange(len(ref)), best], np.nan)


@pytest.mark.parametrize(("dtype", "tol"), [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("block", [1, 8, 4096])
def test_correlation_matrix_equals_corrcoef(dtype: type, tol: float, block: int) -> None:
    x = sample_matrix()
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.corrcoef(x.astype(np.float64).T)
    got = correlation_matrix(x, dtype, block)
    assert np.array_equal(np.isnan(got), np.isnan(ref))  # the constant unit's row and column
    assert np.isnan(got[5]).all() and np.isnan(got[:, 5]).all()
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], atol=tol, rtol=0)


@pytest.mark.parametrize("block", [3, 4096])
def test_best_partners_equal_brute_force(block: int) -> None:
    x, y = sample_matrix(seed=1), sample_matrix(units=23, seed=2)
    y = np.concatenate([y, x[:, :4] * 0.5 + 0.1], axis=1)  # y holds scaled copies of x's first units
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.corrcoef(x.astype(np.float64).T, y.astype(np.float64).T)[: x.shape[1], x.shape[1]:]
    za, ca = standardise(x, np.float64)
    zb, cb = standardise(y, np.float64)
    best, corr = best_partners(za, ca, zb, cb, block)
    want_best, want_corr = brute_best(ref, exclude_self=False)
    assert best.tolist() == want_best.tolist()
    np.testing.assert_allclose(corr, want_corr, atol=1e-12)
    assert best[:4].tolist() == [23, 24, 25, 26] and np.allclose(corr[:4], 1.0)
    assert best[5] == -1 and np.isnan(corr[5])  # a constant unit has no partner


def test_redundancy_pass_equals_brute_force() -> None:
    x = sample_matrix()
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.corrcoef(x.astype(np.float64).T)
    z, const = standardise(x, np.float64)
    dist, best, corr = redundancy_pass(z, const, block=5)
    np.testing.assert_allclose(dist, condensed_from_corr(ref), atol=1e-12)
    want_best, want_corr = brute_best(ref, exclude_self=True)
    assert best.tolist() == want_best.tolist()
    np.testing.assert_allclose(corr, want_corr, atol=1e-12)
    assert best[2] == 9 and corr[2] == pytest.approx(-1.0)  # the negative twin, by |r|


def test_clustering_threshold_on_hand_made_matrix() -> None:
    # units 0-2 correlate at 0.8-0.95 (average link 0.85 between {0,1} and 2), 3 and 4 at -0.75, 5 alone
    corr = np.eye(6)
    for (i, j), r in {(0, 1): 0.95, (0, 2): 0.8, (1, 2): 0.9, (3, 4): -0.75, (2, 5): 0.3}.items():
        corr[i, j] = corr[j, i] = r
    dist = condensed_from_corr(corr)
    assert cluster_units(dist, 6, 0.7).tolist() == [0, 0, 0, 1, 1, 2]
    assert cluster_units(dist, 6, 0.75).tolist() == [0, 0, 0, 1, 1, 2]  # exactly at the threshold: joined
    assert cluster_units(dist, 6, 0.76).tolist() == [0, 0, 0, 1, 2, 3]
    assert cluster_units(dist, 6, 0.86).tolist() == [0, 0, 1, 2, 3, 4]  # average link of 2 to {0,1}: 0.85
    assert cluster_units(dist, 6, 0.86, "single").tolist() == [0, 0, 0, 1, 2, 3]  # single link: 0.9
    assert cluster_units(dist, 6, 0.99).tolist() == [0, 1, 2, 3, 4, 5]
    assert cluster_units(dist, 6, 0.25, "complete").tolist() == [0, 0, 0, 1, 1, 2]  # 5's complete link to 0: r 0
    assert cluster_units(dist, 6, 0.25, "single").tolist() == [0, 0, 0, 1, 1, 0]  # 5's single link: r 0.3 to 2
