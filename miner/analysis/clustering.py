"""Units clustered by their vectors and scored against their true layers (Hungarian matching), and 2-D maps.

k-means on the unit vectors (k = number of layers) is scored with `hungarian_accuracy`; the chance level is
the same score for randomly permuted cluster labels (same cluster sizes), the right baseline because
matching alone lifts a random labelling above 1/k. Pure functions over NumPy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from miner.errors import ConfigError


def confusion(true_labels: np.ndarray, cluster_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts [true x cluster], true values, cluster values).

    >>> counts, t, c = confusion(np.array([0, 0, 1]), np.array([5, 5, 7]))
    >>> counts.tolist(), t.tolist(), c.tolist()
    ([[2, 0], [0, 1]], [0, 1], [5, 7])
    """
    t_values, t = np.unique(np.asarray(true_labels), return_inverse=True)
    c_values, c = np.unique(np.asarray(cluster_labels), return_inverse=True)
    counts = np.zeros((len(t_values), len(c_values)), np.int64)
    np.add.at(counts, (t, c), 1)
    return counts, t_values, c_values


def hungarian_accuracy(true_labels: np.ndarray, cluster_labels: np.ndarray) -> float:
    """Share of items whose cluster is matched to their true label by the best one-to-one matching.

    The matching maximises the number of agreeing items (scipy's linear_sum_assignment on the confusion
    matrix); with more clusters than labels (or fewer) the unmatched ones count as wrong.

    A relabelling is perfect:

    >>> hungarian_accuracy(np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 2, 2]))
    1.0

    Confusion [[2,0,0],[0,1,1],[0,0,2]]: 0->0, 1->1, 2->2 keeps 2 + 1 + 2 of 6 items:

    >>> round(hungarian_accuracy(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 2, 2])), 4)
    0.8333

    Three clusters for two labels: the unmatched cluster's item counts as wrong:

    >>> hungarian_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]))
    0.75
    """
    if len(true_labels) != len(cluster_labels):
        raise ValueError("true_labels and cluster_labels differ in length")
    if len(true_labels) == 0:
        return float("nan")
    counts, _, _ = confusion(true_labels, cluster_labels)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(true_labels))


def chance_accuracy(true_labels: np.ndarray, cluster_labels: np.ndarray, permutations: int = 200,
                    seed: int = 0) -> float:
    """Mean Hungarian accuracy of randomly permuted cluster labels (same cluster sizes): the chance level.

    It lies above 1/k, since the matching itself picks the best labelling of each permutation:

    >>> layers = np.repeat([0, 1, 2], 4)
    >>> 1 / 3 < chance_accuracy(layers, layers, permutations=50) < 1.0
    True
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(cluster_labels)
    return float(np.mean([hungarian_accuracy(true_labels, rng.permutation(labels)) for _ in range(permutations)]))


def cluster_units(vectors: np.ndarray, layers: np.ndarray, k: int | None = None, n_init: int = 10, seed: int = 0,
                  permutations: int = 200) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """k-means on unit vectors [n, dim]; returns (cluster [n], matched_layer [n], summary).

    Clusters are renumbered so that cluster i is the one matched (Hungarian) to the i-th smallest layer;
    clusters left unmatched (k > layers) come last and have matched_layer -1.

    Two well-separated groups of units, layers 3 and 5:

    >>> vectors = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> cluster, matched, summary = cluster_units(vectors, np.array([5, 5, 3, 3]), permutations=10)
    >>> cluster.tolist(), matched.tolist(), summary["k"], summary["accuracy"]
    ([1, 1, 0, 0], [5, 5, 3, 3], 2, 1.0)
    """
    from sklearn.cluster import KMeans

    distinct = np.unique(layers)
    k = k or len(distinct)
    if k > len(vectors):
        raise ConfigError(f"k: {k} clusters for only {len(vectors)} units")
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(np.asarray(vectors, np.float64))
    counts, t_values, c_values = confusion(layers, km.labels_)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    matched = dict(zip(c_values[cols].tolist(), t_values[rows].tolist()))
    order = sorted(range(k), key=lambda c: (c not in matched, matched.get(c, 0), c))
    new_id = np.empty(k, np.int32)
    new_id[order] = np.arange(k)
    cluster = new_id[km.labels_]
    matched_layer = np.array([matched.get(c, -1) for c in range(k)], np.int64)[km.labels_]
    summary = {"k": int(k), "n_units": len(vectors), "layers": [int(x) for x in distinct],
               "accuracy": hungarian_accuracy(layers, cluster),
               "chance_accuracy": chance_accuracy(layers, cluster, permutations, seed),
               "uniform_chance": 1.0 / len(distinct), "inertia": float(km.inertia_)}
    return cluster, matched_layer, summary


def map_units(vectors: np.ndarray, pca_dims: int = 50, perplexity: float = 30.0, iterations: int = 500,
              seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates [n, 2] of vectors [n, dim] (PCA to pca_dims first; PCA initialisation).

    Fewer than three units all sit at the origin:

    >>> map_units(np.ones((2, 8))).tolist()
    [[0.0, 0.0], [0.0, 0.0]]
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(vectors, np.float32)
    n = len(x)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    if pca_dims and x.shape[1] > pca_dims:
        x = PCA(n_components=min(pca_dims, n), random_state=seed).fit_transform(x)
    tsne = TSNE(n_components=2, init="pca", perplexity=min(perplexity, (n - 1) / 3), max_iter=iterations,
                random_state=seed)
    return tsne.fit_transform(x).astype(np.float32)
