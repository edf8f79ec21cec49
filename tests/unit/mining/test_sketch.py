"""The score histogram: torch bins equal their numpy twin on any float32; counts merge by addition; quantiles
read from it hold numpy's exact quantiles and are within the documented error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from miner.mining.moments import MomentSums
from miner.mining.sketch import (
    BINS,
    NAN_BIN,
    QUANTILES,
    ZERO,
    bin_edges,
    distribution_table,
    histogram,
    histogram_table,
    quantile_bins,
    score_bins,
    score_bins_torch,
)

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 2.0**12, -(2.0**12), 2.0**-12, -(2.0**-12),
                    np.nextafter(np.float32(2.0**-12), np.float32(0)), np.nextafter(np.float32(2.0**12), np.float32(0)),
                    np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45], np.float32)


def values(seed: int, n: int = 50_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_torch_bins_equal_numpy_and_the_edges(seed: int) -> None:
    x = np.concatenate([values(seed), SPECIAL])
    bins = score_bins(x)
    assert np.array_equal(bins, score_bins_torch(torch.from_numpy(x)).numpy())
    assert bins.min() >= 0 and bins.max() == NAN_BIN and (bins[np.isnan(x)] == NAN_BIN).all()
    edges = bin_edges()
    finite = ~np.isnan(x)
    lo, hi = edges[bins[finite], 0], edges[bins[finite], 1]
    v = x[finite].astype(np.float64)
    inside = (lo <= v) & ((v < hi) | (v == np.inf))  # the overflow bin holds +inf
    # negative bins are (-hi, -lo]: closed at the magnitude's lower edge, as |x| is binned
    mirrored = (bins[finite] < ZERO) & (lo < v) & (v <= hi)
    zero = (bins[finite] == ZERO) & (np.abs(v) < 2.0**-12)
    assert (inside | mirrored | zero).all()
    assert np.all(np.diff(edges[:NAN_BIN, 0]) > 0)  # ascending in value


def test_histograms_merge_by_addition_in_any_order() -> None:
    x = np.stack([values(0, 3000), values(1, 3000)], axis=1)
    whole = histogram(x)
    assert whole.sum() == x.size and whole.shape == (2, BINS)
    parts = [MomentSums.of_scores(x[lo : lo + 700]) for lo in range(0, 3000, 700)]
    for order in (parts, parts[::-1]):
        total = MomentSums.empty(2)
        for p in order:
            total.add(p)
        assert total.hist is not None and np.array_equal(total.hist, whole)
    total.add(MomentSums(1, np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2, np.int64)))
    assert total.hist is None  # a part without a histogram (an older checkpoint) makes it unknown
    state = MomentSums.of_scores(x).state()
    assert np.array_equal(MomentSums.from_state(state).hist, whole)
    del state["hist"]
    assert MomentSums.from_state(state).hist is None


@pytest.mark.parametrize("seed", range(3))
def test_quantiles_hold_numpy_exact_quantiles_within_the_bound(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.stack([rng.normal(size=5000), rng.exponential(size=5000) * 30, rng.uniform(-3, 3, 5000) ** 3],
                 axis=1).astype(np.float32)
    hist = histogram(x)
    qs = np.array(QUANTILES)
    qb = quantile_bins(hist, qs)
    table = distribution_table(hist, np.array([10, 10, 10]), None).to_pandas()
    for u in range(3):
        exact = np.quantile(x[:, u], qs, method="inverted_cdf")
        assert np.array_equal(qb[u], score_bins(exact.astype(np.float32)))  # the bin holding the exact quantile
        for q, e in zip(QUANTILES, exact):
            got = table[f"q{round(q * 1000):03d}"][u]
            assert abs(got - e) <= max(abs(e) / 16, 2.0**-12) + 1e-12, (u, q)
    assert table.top_kept_share.tolist() == [10 / 5000] * 3 and table.bottom_kept_share.isna().all()


def test_histogram_table_lists_the_non_empty_bins() -> None:
    hist = histogram(np.array([[1.0, 0.0], [1.0, 5.0], [-2.0, 5.0]], np.float32))
    t = histogram_table(hist).to_pandas()
    assert t["count"].sum() == 6 and (t["count"] > 0).all()
    assert t[t.unit_id == 0][["low", "high", "count"]].values.tolist() == [[-2.25, -2.0, 1], [1.0, 1.125, 2]]


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_histogram_equals_torch_and_numpy(threads: int) -> None:
    from miner.mining import native

    if not native.available():
        pytest.skip("no C compiler: the compiled kernel is not built here")
    rng = np.random.default_rng(threads)
    x = np.concatenate([values(threads, 64 * 37).reshape(64, 37), np.tile(SPECIAL[:, None], (1, 37))])
    x[rng.random(x.shape) < 0.01] = np.nan
    t = torch.from_numpy(np.ascontiguousarray(x))
    hist = torch.zeros(37 * BINS, dtype=torch.int64)
    native.score_histogram(t, hist, threads)
    native.score_histogram(t, hist, threads)  # it adds
    offsets = torch.arange(37, dtype=torch.int64) * BINS
    twin = torch.zeros(37 * BINS, dtype=torch.int64)
    cells = (score_bins_torch(t) + offsets).view(-1)
    twin.index_add_(0, cells, torch.ones(cells.numel(), dtype=torch.int64))
    assert torch.equal(hist, 2 * twin) and np.array_equal(hist.view(37, BINS).numpy(), 2 * histogram(x))
