"""The correlation stages over score samples: `run_redundancy` (one run) and `run_match` (`miner match RUN OTHER...`).

- unit_redundancy / layer_redundancy (RUN): hierarchical correlation clustering of the units (Dalvi et al. 2020,
  miner.correlate.redundancy), recorded in the manifest under "redundancy".
- unit_matches (RUN): for every unit and every other run, the other run's unit with the largest |Pearson r| on
  the sentences both samples share (Bau et al. 2019), recorded under "match". Other runs are only read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from miner.config.correlate import MatchOptions, RedundancyOptions
from miner.correlate.correlation import best_partners, redundancy_pass, standardise
from miner.correlate.redundancy import cluster_units, layer_redundancy_table, unit_redundancy_table
from miner.correlate.samples import RunSample, read_sample
from miner.errors import ConfigError, InputError
from miner.run.catalog import build_catalog, check_run_tables
from miner.run.folder import FILES, RunFolder, table_name

log = logging.getLogger(__name__)

REDUNDANCY_KEY = "redundancy"
MATCH_KEY = "match"


def run_redundancy(run_dir: Path, options: RedundancyOptions | None = None) -> dict[str, Any]:
    """Cluster the run's units on its score sample; write unit_redundancy and layer_redundancy, record the
    manifest's "redundancy" entry, rebuild the catalog; returns the summary."""
    options = options or RedundancyOptions()
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    sample = read_sample(run_dir)
    n = sample.units.num_rows
    if n > options.max_units:
        raise ConfigError(f"redundancy.max_units: {run_dir} has {n} units, more than {options.max_units} (the "
                          f"clustering needs {n * (n - 1) // 2 * 8 / 1e9:.1f} GB of pairwise distances); raise "
                          "max_units if the machine has the memory")
    z, const = standardise(sample.scores, np.float32, options.block)
    dist, best, corr = redundancy_pass(z, const, options.block)
    del z
    clusters = cluster_units(dist, n, options.threshold, options.linkage)
    del dist
    unit_ids = sample.units["unit_id"].to_numpy()
    per_unit = unit_redundancy_table(unit_ids, clusters, best, corr)
    redundant = per_unit["redundant"].to_numpy(zero_copy_only=False)
    per_layer = layer_redundancy_table(np.asarray(sample.units["site"].to_pylist()),
                                       sample.units["layer"].to_numpy(), redundant, options.threshold)
    summary = {"threshold": options.threshold, "linkage": options.linkage, "units": n,
               "constant_units": int(const.sum()), "sample_rows": int(len(sample.sentence_ids)),
               "redundant_units": int(redundant.sum()), "redundant_share": float(redundant.mean()) if n else 0.0,
               "clusters": int(clusters.max(initial=-1)) + 1, "seconds": round(time.monotonic() - t0, 3),
               "tables": [table_name(FILES.unit_redundancy), table_name(FILES.layer_redundancy)]}
    _write(run_dir, REDUNDANCY_KEY, {FILES.unit_redundancy: per_unit, FILES.layer_redundancy: per_layer}, summary)
    log.info("%s: %d of %d units redundant at |r| >= %g", run_dir, summary["redundant_units"], n, options.threshold)
    return summary


def match_units(run: RunSample, other: RunSample, options: MatchOptions) -> pa.Table:
    """unit_matches rows of `run` against one other run (see the module docstring)."""
    if run.corpus != other.corpus:
        raise InputError(f"{other.run_dir}: mined another corpus than {run.run_dir} (fingerprints "
                         f"{str(other.corpus)[:12]} vs {str(run.corpus)[:12]}); multi-model search needs one corpus")
    shared, rows_a, rows_b = np.intersect1d(run.sentence_ids, other.sentence_ids, assume_unique=True,
                                            return_indices=True)
    if len(shared) < options.min_shared:
        raise InputError(f"{other.run_dir}: its score sample shares {len(shared)} sentences with {run.run_dir}'s, "
                         f"fewer than {options.min_shared}; mine both with the same sample (sentences, seed)")
    za, ca = standardise(np.asarray(run.scores[rows_a]), np.float32, options.block)
    zb, cb = standardise(np.asarray(other.scores[rows_b]), np.float32, options.block)
    best, corr = best_partners(za, ca, zb, cb, options.block)
    units, ok = other.units, best >= 0
    pick = np.maximum(best, 0)
    site = np.asarray(units["site"].to_pylist(), dtype=object)[pick]
    layer = units["layer"].to_numpy()[pick]
    idx = units["idx"].to_numpy()[pick]
    own_layer = run.units["layer"].to_numpy()
    own_site = np.asarray(run.units["site"].to_pylist(), dtype=object)
    rank = np.zeros(len(best), np.int32)  # 1 = the unit with the largest |r| of its (site, layer)
    size = np.where(ok, np.abs(np.nan_to_num(corr, nan=0.0)), -1.0)
    for key in sorted({(s, int(la)) for s, la in zip(own_site, own_layer)}):
        sel = np.flatnonzero((own_site == key[0]) & (own_layer == key[1]))
        order = sel[np.lexsort((sel, -size[sel]))]
        rank[order] = np.arange(1, len(order) + 1)
    n = len(best)
    return pa.table({
        "unit_id": pa.array(run.units["unit_id"].to_numpy().astype(np.int32)),
        "other_run": pa.array([str(other.run_dir.resolve())] * n),
        "other_name": pa.array([other.name] * n),
        "best_unit": pa.array(np.where(ok, units["unit_id"].to_numpy()[pick], -1).astype(np.int32)),
        "best_site": pa.array([s if o else None for s, o in zip(site, ok)], pa.string()),
        "best_layer": pa.array(np.where(ok, layer, -1).astype(np.int16)),
        "best_idx": pa.array(np.where(ok, idx, -1).astype(np.int32)),
        "corr": pa.array(corr, pa.float64()),
        "layer_rank": pa.array(rank),
        "shared_sentences": pa.array(np.full(n, len(shared), np.int32))})


def run_match(run_dir: Path, others: list[Path], options: MatchOptions | None = None) -> dict[str, Any]:
    """Multi-model search: write RUN/unit_matches (every unit against each run of `others`), record the manifest's
    "match" entry, rebuild RUN's catalog; the other runs are only read. Returns the summary."""
    options = options or MatchOptions()
    t0 = time.monotonic()
    run_dir = Path(run_dir)
    if not others:
        raise ConfigError("match: name at least one other run")
    run = read_sample(run_dir)
    parts, summaries = [], []
    for path in others:
        other = read_sample(Path(path))
        table = match_units(run, other, options)
        parts.append(table)
        corr = np.abs(table["corr"].to_numpy(zero_copy_only=False))
        summaries.append({"run": str(other.run_dir.resolve()), "name": other.name,
                          "shared_sentences": int(table["shared_sentences"][0].as_py()) if len(table) else 0,
                          "median_abs_corr": float(np.nanmedian(corr)) if np.isfinite(corr).any() else None})
    summary = {"others": summaries, "rows": sum(len(p) for p in parts), "seconds": round(time.monotonic() - t0, 3),
               "tables": [table_name(FILES.unit_matches)]}
    _write(run_dir, MATCH_KEY, {FILES.unit_matches: pa.concat_tables(parts)}, summary)
    return summary


def _write(run_dir: Path, key: str, tables: dict[str, pa.Table], summary: dict[str, Any]) -> None:
    """Write a stage's tables under the run's lock: the manifest says "writing" while they are replaced (a kill
    in between never leaves new tables under an old record), then the summary; then the catalog."""
    check_run_tables(run_dir, rewritten=tuple(table_name(f) for f in tables))
    run = RunFolder(run_dir)
    run.lock(wait_seconds=0)
    try:
        run.update_manifest(key, {"status": "writing"})
        for file, table in tables.items():
            run.write_table(run.file(file), table)
        run.update_manifest(key, {"status": "complete", **summary})
    finally:
        run.release()
    build_catalog(run_dir)
