"""Step 3 (`miner analyze`) on one run whose step 2 (signatures, vectors) is done: tables, plots, manifest.

- unit_clusters: k-means on the unit vectors per site (k = number of layers), scored against the true layers
  (miner.analysis.clustering).
- unit_map: a 2-D t-SNE map of the unit vectors (PCA to `pca_dims` first, PCA initialisation).
- layer_rankings / layer_distribution: units ranked by POS selectivity and sentiment std (or any numeric
  unit_stats column), and each layer's five-number summary of value and rank (miner.analysis.rankings).

`run_analysis` writes the tables and the SVG plots (miner.analysis.plots, into RUN/plots/) through
miner.atomic, records the manifest's "analysis" entry, and rebuilds the catalog.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import miner.analysis.plots as plots
from miner import atomic
from miner.analysis.clustering import cluster_units, map_units
from miner.analysis.rankings import by_unit_id, layer_distribution, layer_rankings
from miner.config import AnalysisOptions
from miner.errors import InputError
from miner.run.catalog import build_catalog, check_run_tables, read_run_manifest, read_run_table
from miner.run.folder import ANALYSIS_TABLES, FILES, table_file, update_manifest

log = logging.getLogger(__name__)

MANIFEST_KEY = "analysis"  # the manifest entry step 3 records its summary under


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


def convergence_curves(run_dir: Path) -> dict[str, dict[str, list]]:
    """Overall (site 'all') update rate per block: {direction: {"sentences_seen": [...], "update_rate": [...]}}."""
    path = Path(run_dir) / FILES.convergence
    if not path.exists():
        return {}
    table = read_run_table(run_dir, "convergence", filters=[("site", "=", "all")])
    return plots.convergence_series(table.sort_by([("direction", "descending"), ("block", "ascending")]))


def require_step2(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, once its step 2 tables (unit_vectors, unit_stats) are known to exist."""
    manifest = read_run_manifest(run_dir)
    for name in (FILES.unit_vectors, FILES.unit_stats):
        if not (run_dir / name).exists():
            raise InputError(f"{run_dir}: no {name}; run `miner signatures {run_dir}` first")
    return manifest


def clustering_tables(run_dir: Path, units: pa.Table,
                      options: AnalysisOptions) -> tuple[pa.Table, list[dict[str, Any]]]:
    """unit_clusters rows and one summary per (site, direction): k-means per site over its layers."""
    layer_of, site_of = by_unit_id(units, "layer"), by_unit_id(units, "site")
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
    layer_of = by_unit_id(units, "layer")
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


def run_analysis(run_dir: Path, options: AnalysisOptions | None = None) -> dict[str, Any]:
    """Cluster, map and rank the units of a run with step 2 done; write unit_clusters, unit_map,
    layer_rankings, layer_distribution (+ SVG plots in RUN/plots/), record a summary in the manifest under
    "analysis" (holding the run folder's lock), rebuild the catalog, and return the summary."""
    options = options or AnalysisOptions()
    run_dir = Path(run_dir).resolve()
    require_step2(run_dir)
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
        atomic.write_table(run_dir / table_file(name), table)
    plot_files: list[str] = []
    if options.plots:
        t = time.monotonic()
        plot_files = [str(p.relative_to(run_dir)) for p in write_run_plots(run_dir, umap, distribution, options)]
        seconds["plots"] = time.monotonic() - t
    seconds["total"] = time.monotonic() - t0
    primary = next((c for c in clustering if c["direction"] == "top"), clustering[0])
    summary = {
        "status": "complete", "site": primary["site"], "direction": primary["direction"],
        "accuracy": primary["accuracy"], "chance_accuracy": primary["chance_accuracy"], "k": primary["k"],
        "n_units": primary["n_units"], "clustering": clustering, "tables": list(tables), "plots": plot_files,
        "seconds": {k: round(v, 3) for k, v in seconds.items()}, "options": options.model_dump(mode="json"),
    }
    update_manifest(run_dir, MANIFEST_KEY, summary)
    build_catalog(run_dir)
    log.info("analysis done in %.1f s: clustering accuracy %.3f (chance %.3f, k=%d, %d units)", seconds["total"],
             summary["accuracy"], summary["chance_accuracy"], summary["k"], summary["n_units"])
    return summary


def write_run_plots(run_dir: Path, umap: pa.Table, distribution: pa.Table, options: AnalysisOptions) -> list[Path]:
    """SVGs of one run into RUN/plots/: unit maps, layer box plots per metric and direction, convergence."""
    folder = run_dir / FILES.plots
    folder.mkdir(exist_ok=True)
    out = []
    for direction in options.map_directions:
        if umap.filter(pc.equal(umap["direction"], direction)).num_rows:
            out.append(plots.plot_unit_map(umap, folder / plots.svg_name("unit_map", direction=direction),
                                           direction=direction))
    for direction in options.directions:
        for metric in options.metrics:
            rows = distribution.filter(pc.and_(pc.equal(distribution["direction"], direction),
                                               pc.equal(distribution["metric"], metric)))
            if rows.num_rows:
                name = plots.svg_name("layer_boxes", metric, direction)
                out.append(plots.plot_layer_boxes(rows, metric, folder / name, direction=direction))
    curves = {run_dir.name: convergence_curves(run_dir)}
    if any(curves[run_dir.name].values()):
        out.append(plots.plot_convergence(curves, folder / plots.svg_name("convergence")))
    for stale in sorted(folder.glob("*.svg")):
        if plots.svg_kind(stale.name) and stale not in out:  # from an earlier analysis with other options
            stale.unlink()
    return out
