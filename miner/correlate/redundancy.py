"""Redundant units (Dalvi et al. 2020): hierarchical correlation clustering of units on the distance 1 - |r|.

Units whose clusters join at |r| >= threshold under the linkage (scipy's fcluster at distance 1 - threshold) share
a cluster; a unit is redundant when its cluster holds two or more units. Memory: scipy's linkage works on the
condensed distance matrix, n(n-1)/2 float64 (11,520 units: 530 MB), so runs above `max_units` are refused.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def condensed_from_corr(corr: np.ndarray) -> np.ndarray:
    """scipy's condensed distances 1 - |r| of a full correlation matrix (NaN -> distance 1).

    >>> condensed_from_corr(np.array([[1.0, 0.9, -0.2], [0.9, 1.0, np.nan], [-0.2, np.nan, 1.0]])).round(3).tolist()
    [0.1, 0.8, 1.0]
    """
    i, j = np.triu_indices(len(corr), 1)
    return 1.0 - np.nan_to_num(np.abs(corr[i, j]), nan=0.0)


def cluster_units(dist: np.ndarray, n: int, threshold: float, linkage: str = "average") -> np.ndarray:
    """int32 [n] cluster id per unit: clusters numbered from 0 in the order of their smallest unit.

    >>> corr = np.array([[1.0, 0.9, 0.1, 0.0], [0.9, 1.0, 0.0, 0.1], [0.1, 0.0, 1.0, -0.8], [0.0, 0.1, -0.8, 1.0]])
    >>> cluster_units(condensed_from_corr(corr), 4, 0.7).tolist(), cluster_units(condensed_from_corr(corr), 4, 0.85).tolist()
    ([0, 0, 1, 1], [0, 0, 1, 2])
    """
    if n == 0:
        return np.zeros(0, np.int32)
    if n == 1:
        return np.zeros(1, np.int32)
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as hierarchy

    tree = hierarchy(dist, method=linkage)
    # a small tolerance: a pair at exactly |r| = threshold joins despite rounding in 1 - |r|
    raw = fcluster(tree, t=1.0 - threshold + 1e-12, criterion="distance")
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(first)  # cluster labels by their first unit
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rank[np.searchsorted(np.unique(raw), raw)]


def unit_redundancy_table(unit_ids: np.ndarray, clusters: np.ndarray, best: np.ndarray,
                          best_corr: np.ndarray) -> pa.Table:
    """The `unit_redundancy` table: unit_id, cluster, cluster_size, redundant, best_unit, best_corr.

    >>> t = unit_redundancy_table(np.array([0, 1, 2]), np.array([0, 0, 1]), np.array([1, 0, 0]), np.array([0.9, 0.9, 0.1]))
    >>> t["cluster_size"].to_pylist(), t["redundant"].to_pylist()
    ([2, 2, 1], [True, True, False])
    """
    sizes = np.bincount(clusters, minlength=int(clusters.max(initial=-1)) + 1)[clusters].astype(np.int32)
    best_unit = np.where(best >= 0, unit_ids[np.maximum(best, 0)], -1)
    return pa.table({
        "unit_id": pa.array(np.asarray(unit_ids, np.int32)),
        "cluster": pa.array(np.asarray(clusters, np.int32)),
        "cluster_size": pa.array(sizes),
        "redundant": pa.array(sizes >= 2),
        "best_unit": pa.array(best_unit.astype(np.int32)),
        "best_corr": pa.array(np.asarray(best_corr, np.float64))})


def layer_redundancy_table(sites: np.ndarray, layers: np.ndarray, redundant: np.ndarray,
                           threshold: float) -> pa.Table:
    """The `layer_redundancy` table: per (site, layer) the units, the redundant ones and their share.

    >>> t = layer_redundancy_table(np.array(["hidden"] * 3 + ["mlp"]), np.array([1, 1, 2, 1]),
    ...                            np.array([True, False, True, False]), 0.7)
    >>> [(r["site"], r["layer"], r["units"], r["redundant_units"], r["redundant_share"]) for r in t.to_pylist()]
    [('hidden', 1, 2, 1, 0.5), ('hidden', 2, 1, 1, 1.0), ('mlp', 1, 1, 0, 0.0)]
    """
    rows = []
    keys = sorted({(str(s), int(la)) for s, la in zip(sites, layers)})
    for site, layer in keys:
        sel = (sites == site) & (layers == layer)
        n, k = int(sel.sum()), int(redundant[sel].sum())
        rows.append({"site": site, "layer": layer, "units": n, "redundant_units": k, "redundant_share": k / n,
                     "threshold": float(threshold)})
    schema = pa.schema([("site", pa.string()), ("layer", pa.int16()), ("units", pa.int32()),
                        ("redundant_units", pa.int32()), ("redundant_share", pa.float64()),
                        ("threshold", pa.float64())])
    return pa.Table.from_pylist(rows, schema)
