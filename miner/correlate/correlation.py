"""Pearson correlation of score-sample columns, blockwise: standardised columns and one matmul per block of units.

Convention: a column with zero variance (a unit whose sampled scores are all equal) or a non-finite value has no
correlation: its row and column of the matrix are NaN (the diagonal too), it is nobody's best partner, and its
own best partner is -1 with correlation NaN.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def standardise(x: np.ndarray, dtype: type = np.float32, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(z [S, U] of `dtype`, constant [U] bool): each column centred and scaled to unit norm (in float64, column
    block by column block), so z[:, i] @ z[:, j] is the Pearson r of columns i and j; constant or non-finite
    columns are all zero in z and flagged.

    >>> z, const = standardise(np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 0.0]]))
    >>> const.tolist(), round(float(z[:, 0] @ z[:, 0]), 6), round(float(z[:, 0] @ z[:, 2]), 6)
    ([False, True, False], 1.0, -0.5)
    """
    s, u = x.shape
    z: np.ndarray = np.zeros((s, u), dtype)
    const = np.zeros(u, bool)
    for lo in range(0, u, block):
        col = np.asarray(x[:, lo : lo + block], np.float64)
        centred = col - col.mean(0)
        norm = np.sqrt((centred * centred).sum(0))
        bad = ~np.isfinite(norm) | (norm <= 1e-12 * np.maximum(1.0, np.abs(col).max(0, initial=0.0)) * np.sqrt(s))
        const[lo : lo + block] = bad
        with np.errstate(invalid="ignore", divide="ignore"):
            z[:, lo : lo + block] = np.where(bad, 0.0, centred / np.where(bad, 1.0, norm))
    return z, const


def _row_blocks(z: np.ndarray, other: np.ndarray, block: int) -> Iterator[tuple[int, np.ndarray]]:
    """(lo, r [b, U_other] float64) per block of z's columns: their correlations with every column of `other`."""
    for lo in range(0, z.shape[1], block):
        yield lo, np.clip((z[:, lo : lo + block].T @ other).astype(np.float64), -1.0, 1.0)


def correlation_matrix(x: np.ndarray, dtype: type = np.float32, block: int = 2048) -> np.ndarray:
    """float64 [U, U]: Pearson r of every pair of columns of x [S, U] (NaN rows/columns for constant ones).

    >>> correlation_matrix(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 3.0], [3.0, 7.0, 3.0]]), np.float64).round(3)
    array([[1.   , 0.993,   nan],
           [0.993, 1.   ,   nan],
           [  nan,   nan,   nan]])
    """
    z, const = standardise(x, dtype, block)
    out = np.empty((x.shape[1], x.shape[1]))
    for lo, r in _row_blocks(z, z, block):
        out[lo : lo + len(r)] = r
    out[const] = np.nan
    out[:, const] = np.nan
    return out


def best_partners(za: np.ndarray, const_a: np.ndarray, zb: np.ndarray, const_b: np.ndarray, block: int = 2048,
                  exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(best [Ua] int64, r [Ua] float64): for each column of za (standardised), the column of zb with the largest
    |r| (the first of equal ones) and its signed r; -1 and NaN where none exists. `exclude_self`: za is zb and
    a column is not its own partner.

    >>> z, c = standardise(np.array([[1.0, 2.0, -1.0], [2.0, 4.1, -2.0], [3.0, 5.9, -3.5]]))
    >>> best, r = best_partners(z, c, z, c, exclude_self=True)
    >>> best.tolist(), r.round(3).tolist()
    ([1, 0, 0], [0.999, 0.999, -0.993])
    """
    best = np.full(za.shape[1], -1, np.int64)
    corr = np.full(za.shape[1], np.nan)
    for lo, r in _row_blocks(za, zb, block):
        size = np.abs(r)
        size[:, const_b] = -1.0
        if exclude_self:
            rows = np.arange(len(r))
            size[rows, lo + rows] = -1.0
        pick = size.argmax(1)
        ok = (size[np.arange(len(r)), pick] >= 0) & ~const_a[lo : lo + len(r)]
        best[lo : lo + len(r)] = np.where(ok, pick, -1)
        corr[lo : lo + len(r)] = np.where(ok, r[np.arange(len(r)), pick], np.nan)
    return best, corr


def redundancy_pass(z: np.ndarray, const: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One blockwise pass over a standardised sample: (condensed distances 1 - |r| in scipy's pdist order, float64
    [U(U-1)/2], 1 for pairs with a constant column; best partner [U]; its r [U]) (see `best_partners`).

    >>> z, c = standardise(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 1.0], [3.0, 7.0, 0.0]]))
    >>> dist, best, r = redundancy_pass(z, c)
    >>> dist.round(3).tolist(), best.tolist()
    ([0.007, 1.0, 0.885], [1, 0, 1])
    """
    n = z.shape[1]
    dist = np.empty(n * (n - 1) // 2)
    best = np.full(n, -1, np.int64)
    corr = np.full(n, np.nan)
    for lo, r in _row_blocks(z, z, block):
        r[:, const] = 0.0
        r[const[lo : lo + len(r)]] = 0.0
        for k in range(len(r)):
            i = lo + k
            start = n * i - i * (i + 1) // 2
            dist[start : start + n - i - 1] = 1.0 - np.abs(r[k, i + 1 :])
        size = np.abs(r)
        size[:, const] = -1.0
        rows = np.arange(len(r))
        size[rows, lo + rows] = -1.0
        pick = size.argmax(1)
        ok = (size[rows, pick] >= 0) & ~const[lo : lo + len(r)]
        best[lo : lo + len(r)] = np.where(ok, pick, -1)
        corr[lo : lo + len(r)] = np.where(ok, r[rows, pick], np.nan)
    return dist, best, corr
