"""The per-unit score histogram mining keeps: fixed, exact bins of the float32 score, so counts merge by
addition (identical for any number of workers, blocks and interruptions), with a known error for quantiles.

Bins (`BINS` = 388 per unit, ascending in value), read from the float32 bits of a score x:
  * 0: x <= -2**12 (and -inf);  387: NaN;  386: x >= 2**12 (and +inf);
  * 193: |x| < 2**-12 (the zero bin, both signs);
  * 194 + j, j = 8 (e + 12) + m for 2**-12 <= x < 2**12, where x = 2**e (1 + f), 0 <= f < 1, m = floor(8 f)
    (the exponent and the top 3 mantissa bits): bin [2**e (1 + m/8), 2**e (1 + (m+1)/8));
  * 192 - j: the same bin of -x (mirrored).
A bin of the 384 inside [2**-12, 2**12) in magnitude spans at most 1/8 of its lower edge, so the midpoint of the
bin that holds a quantile is within 1/16 (6.25%) of the quantile's magnitude; in the zero bin within 2**-12.

>>> x = np.array([0.0, 1.0, 1.1, -1.0, 3.0, 5000.0, -1e-5, np.nan], np.float32)
>>> score_bins(x).tolist()
[193, 290, 290, 96, 302, 386, 193, 387]
>>> bin_edges()[290].tolist(), bin_edges()[96].tolist()  # [1, 1.125) and (-1.125, -1]
([1.0, 1.125], [-1.125, -1.0])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

OCTAVES = 24
"""Octaves of |score| binned finely: [2**-12, 2**12)."""
SUB = 8
"""Bins per octave (the top 3 mantissa bits)."""
_HALF = OCTAVES * SUB  # 192 bins per sign
ZERO = _HALF + 1  # 193
BINS = 2 * _HALF + 4  # 388: underflow, 192 negative, zero, 192 positive, overflow, NaN
NAN_BIN = BINS - 1
_LOW_EXP = 127 - 12  # the biased float32 exponent of 2**-12


def _bins_from_bits(bits, xp):  # type: ignore[no-untyped-def]
    """Bins from int32 float bits (numpy or torch as `xp`), in a few integer operations: bits >> 20 of |x| is
    8 x the biased exponent + the top 3 mantissa bits, so one subtraction and a clamp give the magnitude bin
    (-1: the zero bin, _HALF: overflow and inf); the sign (bits >> 31 | 1: -1 or 1) mirrors it around ZERO."""
    mag = bits & 0x7FFFFFFF
    j = xp.clip((mag >> 20) - _LOW_EXP * SUB, -1, _HALF)
    out = ZERO + ((bits >> 31) | 1) * (j + 1)
    return xp.where(mag > 0x7F800000, NAN_BIN, out)  # NaN: exponent all ones, mantissa not 0


def score_bins(x: np.ndarray) -> np.ndarray:
    """int64 bin of every float32 score (numpy; the twin of `score_bins_torch`)."""
    bits = np.asarray(x, np.float32).view(np.int32)
    return _bins_from_bits(bits, np).astype(np.int64)


def score_bins_torch(x: torch.Tensor) -> torch.Tensor:
    """int64 bin of every float32 score, on x's device (integer operations only: the same on any device)."""
    bits = x.to(torch.float32).view(torch.int32)
    return _bins_from_bits(bits, torch).to(torch.int64)


def histogram(scores: np.ndarray) -> np.ndarray:
    """int64 [units, BINS]: the histogram of a [sentences, units] score matrix (the brute-force twin of the
    mining loop's).

    >>> histogram(np.array([[1.0, 0.0], [1.05, -3.0]], np.float32))[:, [193, 290]].tolist()
    [[0, 2], [1, 0]]
    """
    scores = np.asarray(scores, np.float32)
    units = scores.shape[1]
    flat = score_bins(scores) + np.arange(units, dtype=np.int64)[None, :] * BINS
    return np.bincount(flat.ravel(), minlength=units * BINS).reshape(units, BINS)


def bin_edges() -> np.ndarray:
    """float64 [BINS, 2]: [low, high] value edges of every bin (±inf at the open ends, NaN for the NaN bin; the
    zero bin [-2**-12, 2**-12])."""
    j = np.arange(_HALF)
    e = j // SUB - 12
    m = j % SUB
    lo = np.ldexp(1 + m / SUB, e)
    hi = np.ldexp(1 + (m + 1) / SUB, e)
    edges = np.empty((BINS, 2))
    edges[0] = (-np.inf, -(2.0**12))
    edges[1:ZERO] = np.stack([-hi, -lo], axis=1)[::-1]
    edges[ZERO] = (-(2.0**-12), 2.0**-12)
    edges[ZERO + 1 : ZERO + 1 + _HALF] = np.stack([lo, hi], axis=1)
    edges[BINS - 2] = (2.0**12, np.inf)
    edges[NAN_BIN] = (np.nan, np.nan)
    return edges


def quantile_bins(hist: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """int64 [units, len(qs)]: the bin holding each q-quantile, the smallest score s with F(s) >= q (numpy's
    "inverted_cdf"): the bin of the ceil(q n)-th smallest score (the first, for q = 0). NaN scores count last.

    >>> h = histogram(np.array([[1.0], [2.0], [3.0], [4.0]], np.float32))
    >>> bin_edges()[quantile_bins(h, np.array([0.5, 0.51, 1.0]))[0]][:, 0].tolist()
    [2.0, 3.0, 4.0]
    """
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    rank = np.maximum(np.ceil(np.asarray(qs, np.float64)[None, :] * n[:, None] - 1e-9), 1).astype(np.int64)
    return np.stack([np.searchsorted(cum[u], rank[u]) for u in range(len(hist))]) if len(hist) else \
        np.zeros((0, len(qs)), np.int64)


QUANTILES = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)


def distribution_table(hist: np.ndarray, top_kept: np.ndarray, bottom_kept: np.ndarray | None) -> pa.Table:
    """The `unit_distribution` table: per unit its sentences and, per quantile of `QUANTILES`, the bin's
    midpoint (`qNNN`; an open end bin gives its finite edge), and what share of the mined sentences its kept
    top (bottom) sentences are."""
    edges = bin_edges()
    mid = np.where(np.isfinite(edges).all(axis=1), edges.mean(axis=1),
                   np.where(np.isfinite(edges[:, 0]), edges[:, 0], edges[:, 1]))
    qb = quantile_bins(hist, np.array(QUANTILES))
    n = hist.sum(axis=1)
    cols: dict[str, pa.Array] = {"unit_id": pa.array(np.arange(len(hist), dtype=np.int32)),
                                 "sentences": pa.array(n.astype(np.int64))}
    for k, q in enumerate(QUANTILES):
        cols[f"q{_name(q)}"] = pa.array(np.where(n > 0, mid[qb[:, k]], np.nan), pa.float64())
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["top_kept_share"] = pa.array(np.where(n > 0, top_kept / n, np.nan), pa.float64())
        bottom = np.where(n > 0, bottom_kept / n, np.nan) if bottom_kept is not None else np.full(len(n), np.nan)
    cols["bottom_kept_share"] = pa.array(bottom, pa.float64())
    return pa.table(cols)


def _name(q: float) -> str:
    """Column suffix of a quantile: 0.5 -> "500", 0.999 -> "999", 0.001 -> "001", 0.25 -> "250"."""
    return f"{round(q * 1000):03d}"


def histogram_table(hist: np.ndarray) -> pa.Table:
    """The `unit_histograms` table: one row per unit and non-empty bin (unit_id, bin, low, high, count)."""
    units, bins = np.nonzero(hist)
    edges = bin_edges()
    return pa.table({"unit_id": pa.array(units.astype(np.int32)), "bin": pa.array(bins.astype(np.int16)),
                     "low": pa.array(edges[bins, 0], pa.float64()), "high": pa.array(edges[bins, 1], pa.float64()),
                     "count": pa.array(hist[units, bins].astype(np.int64))})
