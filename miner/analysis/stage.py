"""Step 3, cross-unit analysis (the paper's section 4.3) for a run whose step 2 (signatures, vectors) is done.

- unit_clusters: k-means on the unit vectors (k = number of layers), scored against the true layers with
  the Hungarian algorithm (`hungarian_accuracy`); chance level = the same score for randomly permuted
  cluster labels (same cluster sizes), the right baseline because matching alone lifts a random labelling
  above 1/k.
- unit_map: a 2-D t-SNE map of the unit vectors (PCA to `pca_dims` first, PCA initialisation).
- layer_rankings / layer_distribution: units ranked by POS selectivity and sentiment std (or any numeric
  unit_stats column), and each layer's five-number summary of value and rank (the paper's figures 3-5).
- compare_runs: two or more runs side by side (e.g. pre-trained vs random-init): clustering accuracy,
  per-layer medians, convergence curves.
- concept_search: units ranked by how well their queue matches a concept's sentence set (IoU, precision).

Pure functions over NumPy/Arrow; `run_analysis` writes the tables (temporary name + os.replace), SVG plots
(miner.analysis.plots) into RUN/plots/, the manifest's "analysis" entry, and rebuilds the catalog.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.optimize import linear_sum_assignment

from miner.config import AnalysisOptions
from miner.errors import ConfigError, InputError, MinerError
from miner.run.catalog import (
    ANALYSIS_TABLES,
    build_catalog,
    check_run_tables,
    read_manifest_json,
    read_run_manifest,
    read_run_table,
    run_table_rows,
)

log = logging.getLogger(__name__)

Direction = Literal["top", "bottom"]
SENTIMENT_METRICS = ("sentiment_std", "sentiment_mean")


# ---------------------------------------------------------------------------------------------- clustering

def confusion(true_labels: np.ndarray, cluster_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts [true x cluster], true values, cluster values).

    Example: [0, 0, 1], [5, 5, 7] -> [[2, 0], [0, 1]], [0, 1], [5, 7].
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
    Examples:
        true [0, 0, 1, 1, 2, 2], clusters [1, 1, 0, 0, 2, 2] -> 1.0   (a relabelling is perfect)
        true [0, 0, 1, 1, 2, 2], clusters [0, 0, 1, 2, 2, 2] -> 5/6   (confusion [[2,0,0],[0,1,1],[0,0,2]];
                                                                        0->0, 1->1, 2->2 keeps 2 + 1 + 2)
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
    """Mean Hungarian accuracy of randomly permuted cluster labels (same cluster sizes): the chance level."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(cluster_labels)
    return float(np.mean([hungarian_accuracy(true_labels, rng.permutation(labels)) for _ in range(permutations)]))


def cluster_units(vectors: np.ndarray, layers: np.ndarray, k: int | None = None, n_init: int = 10, seed: int = 0,
                  permutations: int = 200) -> tuple[np.ndarray, np.ndarray, dict]:
    """k-means on unit vectors [n, dim]; returns (cluster [n], matched_layer [n], summary).

    Clusters are renumbered so that cluster i is the one matched (Hungarian) to the i-th smallest layer;
    clusters left unmatched (k > layers) come last and have matched_layer -1.
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
    """2-D t-SNE coordinates [n, 2] of vectors [n, dim] (PCA to pca_dims first; PCA initialisation)."""
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


# ---------------------------------------------------------------------------------------------- rankings

def rank_values(values: np.ndarray, unit_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, percentile): rank 1 = highest value, ties by smaller unit_id; percentile = 100 (n - rank) / (n - 1).

    Example: values [0.5, 2.0, 0.5], unit_ids [7, 3, 1] -> rank [3, 1, 2], percentile [0, 100, 50].
    """
    n = len(values)
    order = np.lexsort((unit_ids, -np.asarray(values, np.float64)))
    rank = np.empty(n, np.int32)
    rank[order] = np.arange(1, n + 1)
    percentile = 100.0 * (n - rank) / (n - 1) if n > 1 else np.full(n, 100.0)
    return rank, percentile


def layer_rankings(stats: pa.Table, units: pa.Table, metrics: list[str], directions: list[str],
                   min_sentiment_n: int = 5) -> pa.Table:
    """Units ranked per direction and metric (unit_stats column); NULL/NaN values and sentiment metrics of
    units with fewer than min_sentiment_n labelled sentences are left out.

    Columns: unit_id, direction, layer, metric, value, rank, percentile; ordered by direction, metric, rank.
    """
    numeric = {f.name for f in stats.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
    bad = [m for m in metrics if m not in numeric or m == "unit_id"]
    if bad:
        raise ConfigError(f"metrics: {bad[0]!r} is not a numeric unit_stats column "
                          f"(choose from {', '.join(sorted(numeric - {'unit_id'}))})")
    layer_of = _lookup(units, "layer")
    parts = []
    for direction in directions:
        rows = stats.filter(pc.equal(stats["direction"], direction))
        if rows.num_rows == 0:
            continue
        unit_ids = rows["unit_id"].to_numpy()
        for metric in metrics:
            values = rows[metric].to_numpy(zero_copy_only=False).astype(np.float64)
            keep = np.isfinite(values)
            if metric in SENTIMENT_METRICS and "sentiment_n" in rows.column_names:
                keep &= rows["sentiment_n"].to_numpy(zero_copy_only=False) >= min_sentiment_n
            ids, vals = unit_ids[keep], values[keep]
            if len(vals) > 1 and vals.min() == vals.max():
                log.warning("%s (%s): every ranked unit has the same value %g; its ranking is by unit_id only",
                            metric, direction, vals[0])
            rank, percentile = rank_values(vals, ids)
            order = np.argsort(rank)
            n = len(ids)
            parts.append(pa.table({
                "unit_id": pa.array(ids[order], pa.int32()), "direction": pa.array([direction] * n, pa.string()),
                "layer": pa.array(layer_of[ids[order]], pa.int16()), "metric": pa.array([metric] * n, pa.string()),
                "value": pa.array(vals[order], pa.float64()), "rank": pa.array(rank[order]),
                "percentile": pa.array(percentile[order], pa.float64())}))
    return pa.concat_tables(parts) if parts else _empty_rankings()


def layer_distribution(rankings: pa.Table) -> pa.Table:
    """Per direction, metric and layer: n, min, q1, median, q3, max, mean of the units' values (numpy linear
    percentiles), the data of one box per layer (the paper's figures 3-5; rank boxes: query layer_rankings).

    Example: one layer with values [1, 2, 3, 4] -> min 1, q1 1.75, median 2.5, q3 3.25, max 4, mean 2.5.
    """
    names = ("direction", "metric", "layer", "n", "min", "q1", "median", "q3", "max", "mean")
    cols: dict[str, list] = {k: [] for k in names}
    if rankings.num_rows:
        df = rankings.select(["direction", "metric", "layer", "value"]).to_pandas()
        for (direction, metric, layer), group in df.groupby(["direction", "metric", "layer"], sort=True):
            v = group["value"].to_numpy(np.float64)
            for key, val in zip(names, (direction, metric, int(layer), len(v),
                                        *np.percentile(v, [0, 25, 50, 75, 100]), v.mean())):
                cols[key].append(val)
    types = {"direction": pa.string(), "metric": pa.string(), "layer": pa.int16(), "n": pa.int64()}
    return pa.table({k: pa.array(v, types.get(k, pa.float64())) for k, v in cols.items()})


def _empty_rankings() -> pa.Table:
    return pa.table({"unit_id": pa.array([], pa.int32()), "direction": pa.array([], pa.string()),
                     "layer": pa.array([], pa.int16()), "metric": pa.array([], pa.string()),
                     "value": pa.array([], pa.float64()), "rank": pa.array([], pa.int32()),
                     "percentile": pa.array([], pa.float64())})


def _lookup(units: pa.Table, column: str) -> np.ndarray:
    """Array indexed by unit_id holding the units table's `column`."""
    ids = units["unit_id"].to_numpy()
    values = units[column].to_numpy(zero_copy_only=False)
    out = np.empty(int(ids.max()) + 1 if len(ids) else 0, values.dtype)
    out[ids] = values
    return out


# ---------------------------------------------------------------------------------------------- run stage

def read_unit_vectors(run_dir: Path, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit_ids [n], vectors [n, dim] float32) of one direction; units without a finite vector are left out."""
    table = read_run_table(Path(run_dir), "unit_vectors", filters=[("direction", "=", direction)])
    table = table.filter(pc.is_valid(table["vector"]))
    if table.num_rows == 0:
        return np.zeros(0, np.int32), np.zeros((0, 0), np.float32)
    col = table["vector"].combine_chunks()
    vectors = col.flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, -1).astype(np.float32)
    ids = table["unit_id"].to_numpy()
    keep = np.isfinite(vectors).all(axis=1)
    order = np.argsort(ids[keep], kind="stable")
    return ids[keep][order], vectors[keep][order]


def _require_step2(run_dir: Path) -> dict:
    manifest = read_run_manifest(run_dir)
    for name in ("unit_vectors", "unit_stats"):
        if not (run_dir / f"{name}.parquet").exists():
            raise InputError(f"{run_dir}: no {name}.parquet; run `miner signatures {run_dir}` first")
    return manifest


def clustering_tables(run_dir: Path, units: pa.Table, options: AnalysisOptions) -> tuple[pa.Table, list[dict]]:
    """unit_clusters rows and one summary per (site, direction): k-means per site over its layers."""
    layer_of, site_of = _lookup(units, "layer"), _lookup(units, "site")
    parts, summaries = [], []
    for direction in options.directions:
        ids, vectors = read_unit_vectors(run_dir, direction)
        for site in sorted(set(site_of[ids].tolist())):
            sel = site_of[ids] == site
            if sel.sum() < 2:
                continue
            cluster, matched, summary = cluster_units(vectors[sel], layer_of[ids[sel]], options.k, options.n_init,
                                                      options.seed, options.chance_permutations)
            summaries.append({"site": site, "direction": direction, **summary})
            parts.append(pa.table({"unit_id": pa.array(ids[sel], pa.int32()),
                                   "direction": pa.array([direction] * int(sel.sum()), pa.string()),
                                   "cluster": pa.array(cluster, pa.int32()),
                                   "layer": pa.array(layer_of[ids[sel]], pa.int16()),
                                   "matched_layer": pa.array(matched, pa.int16())}))
    if not parts:
        raise InputError(f"{run_dir}: unit_vectors holds no vectors for directions {options.directions}")
    return pa.concat_tables(parts), summaries


def unit_map_table(run_dir: Path, units: pa.Table, options: AnalysisOptions) -> pa.Table:
    """unit_map rows: t-SNE x, y of every unit with a vector, per direction in options.map_directions."""
    layer_of = _lookup(units, "layer")
    parts = []
    for direction in options.map_directions:
        ids, vectors = read_unit_vectors(run_dir, direction)
        if not len(ids):
            continue
        xy = map_units(vectors, options.pca_dims, options.perplexity, options.tsne_iterations, options.seed)
        parts.append(pa.table({"unit_id": pa.array(ids, pa.int32()),
                               "direction": pa.array([direction] * len(ids), pa.string()),
                               "x": pa.array(xy[:, 0], pa.float32()), "y": pa.array(xy[:, 1], pa.float32()),
                               "layer": pa.array(layer_of[ids], pa.int16())}))
    schema = pa.schema([("unit_id", pa.int32()), ("direction", pa.string()), ("x", pa.float32()),
                        ("y", pa.float32()), ("layer", pa.int16())])
    return pa.concat_tables(parts) if parts else schema.empty_table()


def write_table(path: Path, table: pa.Table) -> None:
    """Write a Parquet table atomically (temporary name in the same folder, then os.replace)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temporary name, then os.replace)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_analysis(run_dir: Path, options: AnalysisOptions | None = None) -> dict:
    """Cluster, map and rank the units of a run with step 2 done; write unit_clusters, unit_map,
    layer_rankings, layer_distribution (+ SVG plots in RUN/plots/), record a summary in the manifest under
    "analysis", rebuild the catalog, and return the summary."""
    options = options or AnalysisOptions()
    run_dir = Path(run_dir).resolve()
    _require_step2(run_dir)
    check_run_tables(run_dir, rewritten=ANALYSIS_TABLES)
    t0 = time.monotonic()
    seconds: dict[str, float] = {}
    units = read_run_table(run_dir, "units")

    t = time.monotonic()
    clusters, clustering = clustering_tables(run_dir, units, options)
    seconds["kmeans"] = time.monotonic() - t
    t = time.monotonic()
    umap = unit_map_table(run_dir, units, options)
    seconds["tsne"] = time.monotonic() - t
    t = time.monotonic()
    stats = read_run_table(run_dir, "unit_stats")
    rankings = layer_rankings(stats, units, options.metrics, options.directions, options.min_sentiment_n)
    distribution = layer_distribution(rankings)
    seconds["rankings"] = time.monotonic() - t

    tables = {"unit_clusters": clusters, "unit_map": umap, "layer_rankings": rankings,
              "layer_distribution": distribution}
    for name, table in tables.items():
        write_table(run_dir / f"{name}.parquet", table)
    plots: list[str] = []
    if options.plots:
        t = time.monotonic()
        plots = [str(p.relative_to(run_dir)) for p in write_run_plots(run_dir, umap, distribution, options)]
        seconds["plots"] = time.monotonic() - t
    seconds["total"] = time.monotonic() - t0
    primary = next((c for c in clustering if c["direction"] == "top"), clustering[0])
    summary = {
        "status": "complete", "site": primary["site"], "direction": primary["direction"],
        "accuracy": primary["accuracy"], "chance_accuracy": primary["chance_accuracy"], "k": primary["k"],
        "n_units": primary["n_units"], "clustering": clustering, "tables": list(tables), "plots": plots,
        "seconds": {k: round(v, 3) for k, v in seconds.items()}, "options": options.model_dump(mode="json"),
    }
    manifest_path = run_dir / "manifest.json"
    manifest = read_manifest_json(run_dir)
    manifest["analysis"] = summary
    write_json(manifest_path, manifest)
    build_catalog(run_dir)
    log.info("analysis done in %.1f s: clustering accuracy %.3f (chance %.3f, k=%d, %d units)", seconds["total"],
             summary["accuracy"], summary["chance_accuracy"], summary["k"], summary["n_units"])
    return summary


def write_run_plots(run_dir: Path, umap: pa.Table, distribution: pa.Table, options: AnalysisOptions) -> list[Path]:
    """SVGs of one run into RUN/plots/: unit maps, layer box plots per metric and direction, convergence."""
    from miner.analysis import plots

    folder = run_dir / "plots"
    folder.mkdir(exist_ok=True)
    out = []
    for direction in options.map_directions:
        if umap.filter(pc.equal(umap["direction"], direction)).num_rows:
            out.append(plots.plot_unit_map(umap, folder / f"unit_map_{direction}.svg", direction=direction))
    for direction in options.directions:
        for metric in options.metrics:
            rows = distribution.filter(pc.and_(pc.equal(distribution["direction"], direction),
                                                       pc.equal(distribution["metric"], metric)))
            if rows.num_rows:
                out.append(plots.plot_layer_boxes(rows, metric, folder / f"layer_boxes_{metric}_{direction}.svg",
                                                  direction=direction))
    curves = {run_dir.name: convergence_curves(run_dir)}
    if any(curves[run_dir.name].values()):
        out.append(plots.plot_convergence(curves, folder / "convergence.svg"))
    for stale in [*folder.glob("unit_map_*.svg"), *folder.glob("layer_boxes_*.svg"), folder / "convergence.svg"]:
        if stale.exists() and stale not in out:  # from an earlier analysis with other options
            stale.unlink()
    return out


# ---------------------------------------------------------------------------------------------- comparison

def convergence_curves(run_dir: Path) -> dict[str, dict[str, list]]:
    """Overall (site 'all') update rate per block: {direction: {"sentences_seen": [...], "update_rate": [...]}}."""
    path = Path(run_dir) / "convergence.parquet"
    if not path.exists():
        return {}
    table = read_run_table(run_dir, "convergence", filters=[("site", "=", "all")])
    table = table.sort_by([("direction", "descending"), ("block", "ascending")])
    out: dict[str, dict[str, list]] = {}
    for row in table.select(["direction", "sentences_seen", "update_rate"]).to_pylist():
        curve = out.setdefault(row["direction"], {"sentences_seen": [], "update_rate": []})
        curve["sentences_seen"].append(int(row["sentences_seen"]))
        curve["update_rate"].append(float(row["update_rate"]))
    return out


def run_labels(run_dirs: list[Path]) -> list[str]:
    """A unique short label per run: its folder name, with ' (2)', ' (3)' ... added to repeats."""
    labels: list[str] = []
    for path in run_dirs:
        name = Path(path).resolve().name
        label, n = name, 1
        while label in labels:
            n += 1
            label = f"{name} ({n})"
        labels.append(label)
    return labels


def run_overview(run_dir: Path, options: AnalysisOptions | None = None) -> tuple[dict, pa.Table]:
    """(facts + clustering of one run, its layer_distribution): taken from the analysis stage's output when
    present, otherwise computed in memory (no map, nothing written)."""
    options = options or AnalysisOptions(map_directions=[])
    run_dir = Path(run_dir).resolve()
    manifest = _require_step2(run_dir)
    stored = manifest.get("analysis", {})
    units = read_run_table(run_dir, "units")
    if stored.get("status") == "complete" and (run_dir / "layer_distribution.parquet").exists():
        clustering = stored["clustering"]
        distribution = read_run_table(run_dir, "layer_distribution")
    else:
        _, clustering = clustering_tables(run_dir, units, options)
        stats = read_run_table(run_dir, "unit_stats")
        distribution = layer_distribution(layer_rankings(stats, units, options.metrics, options.directions,
                                                         options.min_sentiment_n))
    job, model = manifest.get("job", {}), manifest.get("model", {})
    primary = next((c for c in clustering if c["direction"] == "top"), clustering[0] if clustering else {})
    facts = {"run_dir": str(run_dir), "name": job.get("name"), "model": job.get("model"),
             "init": model.get("init", job.get("init")), "init_seed": model.get("init_seed", job.get("init_seed")),
             "units": units.num_rows, "top_n": job.get("top_n"),
             "sentences_mined": manifest.get("stats", {}).get("sentences"),
             "accuracy": primary.get("accuracy"), "chance_accuracy": primary.get("chance_accuracy"),
             "k": primary.get("k"), "clustering": clustering}
    return facts, distribution


def compare_runs(run_dirs: list[Path], options: AnalysisOptions | None = None) -> dict:
    """Two or more runs side by side (JSON-able): clustering accuracy, per-layer medians, convergence curves.

    {"runs": [{"label", "run_dir", "init", "accuracy", "chance_accuracy", "k", "clustering", ...}],
     "layers": [{"metric", "direction", "layer", "median": {label: value}, "q1": {...}, "q3": {...}}],
     "convergence": {label: {direction: {"sentences_seen": [...], "update_rate": [...]}}}}
    A run's layers missing from another run show as null there.
    """
    if len(run_dirs) < 2:
        raise ConfigError("compare: give two or more run folders")
    labels = run_labels(run_dirs)
    runs, rows = [], {}
    for label, run_dir in zip(labels, run_dirs):
        facts, distribution = run_overview(run_dir, options)
        runs.append({"label": label, **facts})
        for r in distribution.to_pylist():
            entry = rows.setdefault((r["metric"], r["direction"], r["layer"]), {"median": {}, "q1": {}, "q3": {}})
            for key in ("median", "q1", "q3"):
                entry[key][label] = _finite(r[key])
    layers = [{"metric": m, "direction": d, "layer": layer,
               **{key: {lab: entry[key].get(lab) for lab in labels} for key in ("median", "q1", "q3")}}
              for (m, d, layer), entry in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "top", kv[0][2]))]
    return {"runs": runs, "layers": layers,
            "convergence": {label: convergence_curves(d) for label, d in zip(labels, run_dirs)}}


def write_comparison(run_dirs: list[Path], out_dir: Path, options: AnalysisOptions | None = None,
                     force: bool = False) -> dict:
    """compare_runs, written to OUT/comparison.json with SVGs (convergence, grouped layer box plots per
    metric and direction); returns the comparison with a "files" list added.

    OUT may not lie in a run or corpus folder; a folder that already holds a comparison is replaced only with
    `force`.
    """
    from miner.analysis import plots
    from miner.outputs import check_output_folder

    out_dir = Path(out_dir)
    check_output_folder(out_dir, ["comparison.json", "convergence.svg"], force)
    comparison = compare_runs(run_dirs, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [plots.plot_convergence(comparison["convergence"], out_dir / "convergence.svg")]
    distributions = {r["label"]: run_overview(Path(r["run_dir"]), options)[1] for r in comparison["runs"]}
    for metric, direction in sorted({(r["metric"], r["direction"]) for r in comparison["layers"]}):
        files.append(plots.plot_layer_boxes(distributions, metric, out_dir / f"layer_boxes_{metric}_{direction}.svg",
                                            direction=direction))
    comparison["files"] = [str(p) for p in files]
    write_json(out_dir / "comparison.json", comparison)
    return comparison


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


# ---------------------------------------------------------------------------------------------- concepts

_CLAUSE_WORDS = frozenset({"select", "from", "union", "intersect", "except", "order", "limit", "offset", "group",
                           "having", "window", "qualify", "returning", "into", "using", "join"})


def check_predicate(predicate: str) -> str:
    """A SQL boolean expression over `sentences`, checked to be one pure expression; returns it stripped.

    Subqueries inside parentheses are allowed; a top-level clause, an unbalanced parenthesis or a `;` is not.
    Examples: "domain = 'news' AND sentiment = 'positive'" -> passes;
              "sentence_id IN (SELECT sentence_id FROM tokens WHERE lower = 'lol')" -> passes;
              "1 = 1) UNION SELECT (1" -> ConfigError; "true; DROP VIEW units" -> ConfigError.
    """
    text = predicate.strip()
    if not text:
        raise ConfigError("predicate: empty")
    try:
        tokens = duckdb.tokenize(text)
    except duckdb.Error as exc:
        raise ConfigError(f"predicate: cannot parse: {exc}") from None
    depth = 0
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        word = text[start:end].strip()
        if kind.name == "operator":
            for ch in word:
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth < 0:
                    raise ConfigError("predicate: unbalanced ')'; give one boolean expression")
            if ";" in word:
                raise ConfigError("predicate: ';' is not allowed; give one boolean expression")
        elif kind.name in ("keyword", "identifier") and depth == 0 and word.lower() in _CLAUSE_WORDS:
            raise ConfigError(f"predicate: {word.upper()} is not allowed at the top level; give one boolean "
                              "expression (subqueries go in parentheses)")
    if depth:
        raise ConfigError("predicate: unbalanced '('; give one boolean expression")
    return text


def predicate_sentences(run_dir: Path, predicate: str) -> np.ndarray:
    """Sorted sentence ids of the run's sentences table matching a SQL predicate (read-only sandbox)."""
    from miner.query.sql import check_read_only, query_arrow

    sql = f"SELECT DISTINCT sentence_id FROM sentences WHERE (\n{check_predicate(predicate)}\n)"
    check_read_only(sql)
    return np.sort(query_arrow(run_dir, sql)["sentence_id"].to_numpy())


def word_pattern(words: list[str]) -> str:
    """RE2 regex (case-insensitive via the 'i' flag) matching any entry as whole words, spaces as any run
    of whitespace: ["u.s.", "united states"] -> (^|[^\\pL\\pN_])(?:u\\.s\\.|united\\s+states)([^\\pL\\pN_]|$)."""
    entries = ["\\s+".join(re.escape(part) for part in w.split()) for w in _entries(words)]
    return "(^|[^\\pL\\pN_])(?:" + "|".join(entries) + ")([^\\pL\\pN_]|$)"


def _entries(words: list[str]) -> list[str]:
    entries = list(dict.fromkeys(" ".join(w.lower().split()) for w in words if w and w.strip()))
    if not entries:
        raise ConfigError("words: no word given")
    return entries


def word_sentences(run_dir: Path, words: list[str], match: Literal["auto", "tokens", "text"] = "auto") -> np.ndarray:
    """Sorted ids of the run's sentences containing any entry (case-insensitive, whole words).

    match 'tokens': an entry's space-separated parts must be consecutive spaCy tokens (tokens.lower), so
    "u.s." matches the token "U.S." and "united states" two tokens in a row; 'text': a regex over the text
    (word_pattern); 'auto': tokens when the run has tokens.parquet, else text.
    """
    run_dir = Path(run_dir)
    tokens_path = run_dir / "tokens.parquet"
    if match == "auto":
        match = "tokens" if tokens_path.exists() else "text"
    con = duckdb.connect(":memory:")
    try:
        sentences = str(run_dir / "sentences.parquet")
        if match == "text":
            sql = "SELECT sentence_id FROM read_parquet($s) WHERE regexp_matches(text, $re, 'i')"
            ids = con.execute(sql, {"s": sentences, "re": word_pattern(words)}).fetchnumpy()["sentence_id"]
        elif match == "tokens":
            if not tokens_path.exists():
                raise InputError(f"{run_dir}: no tokens.parquet (run `miner signatures`), or match words on the text")
            ids = _token_matches(con, str(tokens_path), sentences, [e.split() for e in _entries(words)])
        else:
            raise ConfigError(f"match: {match!r} is not one of auto, tokens, text")
    finally:
        con.close()
    return np.unique(np.asarray(ids, np.int64))


def _token_matches(con: duckdb.DuckDBPyConnection, tokens: str, sentences: str, entries: list[list[str]]) -> np.ndarray:
    params: dict[str, object] = {"tokens": tokens, "sentences": sentences}
    selects = []
    singles = [e[0] for e in entries if len(e) == 1]
    if singles:
        params["singles"] = singles
        selects.append("SELECT sentence_id FROM tok WHERE lower IN (SELECT unnest($singles))")
    for n, entry in enumerate(e for e in entries if len(e) > 1):
        joins = " ".join(f"JOIN tok t{j} ON t{j}.sentence_id = t0.sentence_id AND t{j}.position = t0.position + {j}"
                         for j in range(1, len(entry)))
        where = " AND ".join(f"t{j}.lower = $e{n}_{j}" for j in range(len(entry)))
        params.update({f"e{n}_{j}": part for j, part in enumerate(entry)})
        selects.append(f"SELECT t0.sentence_id FROM tok t0 {joins} WHERE {where}")
    sql = (f"WITH tok AS (SELECT sentence_id, position, lower FROM read_parquet($tokens)) "
           f"SELECT DISTINCT sentence_id FROM ({' UNION ALL '.join(selects)}) "
           f"WHERE sentence_id IN (SELECT sentence_id FROM read_parquet($sentences))")
    return con.execute(sql, params).fetchnumpy()["sentence_id"]


def concept_scores(unit_ids: np.ndarray, sentence_ids: np.ndarray, concept: np.ndarray,
                   n_units: int) -> dict[str, np.ndarray]:
    """Queue-vs-concept overlap of every unit at once from queue entries (unit_ids[i], sentence_ids[i]).

    hits = |queue ∩ concept|, precision = hits / |queue|, recall = hits / |concept|,
    iou = hits / (|queue| + |concept| - hits). It is the sparse (units x sentences) membership matrix times
    the concept's indicator vector, done as a weighted bincount.
    Example: queues {0: [1, 2], 1: [2, 3, 4]}, concept [2, 3] -> hits [1, 2], precision [0.5, 0.667],
    recall [0.5, 1.0], iou [1/3, 2/3].
    """
    member = np.isin(sentence_ids, concept)
    queue = np.bincount(unit_ids, minlength=n_units).astype(np.int64)
    hits = np.bincount(unit_ids, weights=member, minlength=n_units).astype(np.int64)
    size = len(concept)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(queue > 0, hits / np.maximum(queue, 1), 0.0)
        recall = hits / size if size else np.zeros(n_units)
        union = queue + size - hits
        iou = np.where(union > 0, hits / np.maximum(union, 1), 0.0)
    return {"queue_size": queue, "hits": hits, "precision": precision, "recall": recall, "iou": iou}


def concept_sentences(run_dir: Path, words: list[str] | None = None, predicate_sql: str | None = None,
                      match: Literal["auto", "tokens", "text"] = "auto") -> np.ndarray:
    """The concept's sentence set: run sentences (the sentences table, i.e. sentences held by any queue)
    containing any of `words` AND/OR matching `predicate_sql`; both given = their intersection."""
    if not words and not predicate_sql:
        raise ConfigError("concept: give words (--words) or a predicate (--where)")
    sets = []
    if words:
        sets.append(word_sentences(run_dir, words, match))
    if predicate_sql:
        sets.append(predicate_sentences(run_dir, predicate_sql))
    return sets[0] if len(sets) == 1 else np.intersect1d(sets[0], sets[1])


def concept_search(run_dir: Path, words: list[str] | None = None, predicate_sql: str | None = None,
                   direction: str = "top", top: int | None = 20,
                   match: Literal["auto", "tokens", "text"] = "auto") -> pa.Table:
    """Units ranked by how well their queue matches a concept (the paper's "United States neuron" workflow).

    The concept's sentence set is drawn from the run's sentences (every sentence in any queue), not from the
    whole corpus: queues can only hold mined sentences and only those are tagged; it makes recall "share of
    the concept's queue sentences that this unit holds". Ranked by iou, then precision, then unit_id; `top`
    rows (None = all). Columns: rank, unit_id, site, layer, idx, direction, queue_size, concept_size, hits,
    precision, recall, iou, lift (precision / the concept's share of the run's sentences).
    Example: concept_search(run, ["united states", "u.s.", "america"]) or
             concept_search(run, predicate_sql="domain = 'social_media' AND sentiment = 'positive'").
    """
    run_dir = Path(run_dir).resolve()
    read_run_manifest(run_dir)
    if direction not in ("top", "bottom"):
        raise ConfigError(f"direction: {direction!r} is not top or bottom")
    concept = concept_sentences(run_dir, words, predicate_sql, match)
    if not len(concept):
        raise MinerError("concept: no sentence of the run matches it")
    units = read_run_table(run_dir, "units").sort_by("unit_id")
    n_units = int(units["unit_id"].to_numpy().max()) + 1
    queues = read_run_table(run_dir, "top_sentences", columns=["unit_id", "sentence_id"],
                           filters=[("direction", "=", direction)])
    scores = concept_scores(queues["unit_id"].to_numpy(), queues["sentence_id"].to_numpy(), concept, n_units)
    ids = units["unit_id"].to_numpy()
    n_sentences = run_table_rows(run_dir, "sentences")
    base = len(concept) / max(n_sentences, 1)
    order = np.lexsort((ids, -scores["precision"][ids], -scores["iou"][ids]))
    order = order[scores["queue_size"][ids][order] > 0]
    if top is not None:
        order = order[:top]
    sel = ids[order]
    return pa.table({
        "rank": pa.array(np.arange(1, len(sel) + 1), pa.int32()), "unit_id": pa.array(sel, pa.int32()),
        "site": units["site"].take(order), "layer": units["layer"].take(order), "idx": units["idx"].take(order),
        "direction": pa.array([direction] * len(sel), pa.string()),
        "queue_size": pa.array(scores["queue_size"][sel]), "concept_size": pa.array(np.full(len(sel), len(concept))),
        "hits": pa.array(scores["hits"][sel]), "precision": pa.array(scores["precision"][sel]),
        "recall": pa.array(scores["recall"][sel]), "iou": pa.array(scores["iou"][sel]),
        "lift": pa.array(scores["precision"][sel] / base)})
