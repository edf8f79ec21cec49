"""`miner compare`: two or more runs side by side (e.g. pre-trained vs random-init), as JSON and SVG plots.

Clustering accuracy, per-layer medians and convergence curves of each run, taken from its analysis output
when present, otherwise computed in memory (no map, nothing written to the runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import miner.analysis.plots as plots
from miner import atomic
from miner.analysis.rankings import layer_distribution, layer_rankings
from miner.analysis.stage import MANIFEST_KEY, clustering_tables, convergence_curves, require_step2
from miner.config import AnalysisOptions
from miner.errors import ConfigError
from miner.outputs import check_output_folder
from miner.run.catalog import read_run_table
from miner.run.folder import FILES

__all__ = ["compare_runs", "convergence_curves", "probe_overview", "run_labels", "run_overview", "write_comparison"]


def run_labels(run_dirs: list[Path]) -> list[str]:
    """A unique short label per run: its folder name, with ' (2)', ' (3)' ... added to repeats.

    >>> run_labels([Path("a/run"), Path("b/run"), Path("c/other"), Path("d/run")])
    ['run', 'run (2)', 'other', 'run (3)']
    """
    labels: list[str] = []
    for path in run_dirs:
        name = Path(path).resolve().name
        label, n = name, 1
        while label in labels:
            n += 1
            label = f"{name} ({n})"
        labels.append(label)
    return labels


def run_overview(run_dir: Path, options: AnalysisOptions | None = None) -> tuple[dict[str, Any], pa.Table]:
    """(facts + clustering of one run, its layer_distribution): taken from the analysis stage's output when
    present, otherwise computed in memory (no map, nothing written)."""
    options = options or AnalysisOptions(map_directions=[])
    run_dir = Path(run_dir).resolve()
    manifest = require_step2(run_dir)
    stored = manifest.get(MANIFEST_KEY, {})
    units = read_run_table(run_dir, "units")
    if stored.get("status") == "complete" and (run_dir / FILES.layer_distribution).exists():
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
             "k": primary.get("k"), "head": model_head(model), "clustering": clustering,
             "explanation": _explanation(manifest.get("scores"))}
    return facts, distribution


def _explanation(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The explanation scores' medians (all queues) of a scored run; None for a run scored without them."""
    if not record:
        return None
    keys = ("median_simulation", "median_simulation_baseline", "median_detection_auc")
    return {**{k: record.get(k) for k in keys},
            "held_out_sentences": (record.get("split") or {}).get("held_out_sample_rows")}


def model_head(model: dict[str, Any]) -> dict[str, Any] | None:
    """The mined checkpoint's head (e.g. a fine-tuned sentiment classifier: architectures, labels), from the
    manifest's model entry or else the model folder's config.json; None when neither says."""
    import json

    from miner.model.loading import model_head_info

    if "head" in model:
        return {k: model.get(k) for k in ("architectures", "head", "num_labels", "labels")}
    try:
        config = json.loads((Path(model["path"]) / "config.json").read_text(encoding="utf-8"))
    except (KeyError, TypeError, OSError, ValueError):
        return None
    return model_head_info(config) if isinstance(config, dict) else None


def compare_runs(run_dirs: list[Path], options: AnalysisOptions | None = None) -> dict[str, Any]:
    """Two or more runs side by side (JSON-able): clustering accuracy, per-layer medians, convergence curves.

    {"runs": [{"label", "run_dir", "init", "accuracy", "chance_accuracy", "k", "head", "clustering", ...}],
     "layers": [{"metric", "direction", "layer", "median": {label: value}, "q1": {...}, "q3": {...}}],
     "convergence": {label: {direction: {"sentences_seen": [...], "update_rate": [...]}}},
     "probes": {label: [probe_overview rows]}}
    A run's layers missing from another run show as null there.
    """
    if len(run_dirs) < 2:
        raise ConfigError("compare: give two or more run folders")
    labels = run_labels(run_dirs)
    runs: list[dict[str, Any]] = []
    rows: dict[tuple[str, str, int], dict[str, dict[str, float | None]]] = {}
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
            "convergence": {label: convergence_curves(d) for label, d in zip(labels, run_dirs)},
            "probes": {label: probe_overview(d) for label, d in zip(labels, run_dirs)}}


def probe_overview(run_dir: Path) -> list[dict[str, Any]]:
    """Per concept of a probed run (`miner probe`): the all-layer probe's test, majority and control accuracy,
    selectivity, and the Top / Random / Bottom test accuracies per ranking and k (empty for an unprobed run)."""
    run_dir = Path(run_dir)
    if not (run_dir / FILES.probes).exists() or not (run_dir / FILES.probe_accuracy).exists():
        return []
    subsets: dict[str, dict[str, dict[str, float | None]]] = {}
    for r in read_run_table(run_dir, "probe_accuracy").to_pylist():
        if r["class"] is None and r["evaluation"] in ("top", "random", "bottom"):
            key = f"{r['evaluation']}_{r['k_percent']:g}"
            subsets.setdefault(r["probe_id"], {}).setdefault(r["ranking"], {})[key] = _finite(r["test_accuracy"])
    return [{"concept": p["concept"], "level": p["level"], "units": p["units"], "classes": p["classes"],
             **{k: _finite(p[k]) for k in ("test_accuracy", "majority_accuracy", "control_accuracy", "selectivity")},
             "subsets": subsets.get(p["probe_id"], {})}
            for p in read_run_table(run_dir, "probes").to_pylist() if p["scope"] == "all"]


def write_comparison(run_dirs: list[Path], out_dir: Path, options: AnalysisOptions | None = None,
                     force: bool = False) -> dict[str, Any]:
    """compare_runs, written to OUT/comparison.json with SVGs (convergence, grouped layer box plots per
    metric and direction); returns the comparison with a "files" list added.

    OUT may not lie in a run or corpus folder; a folder that already holds a comparison is replaced only with
    `force`.
    """
    out_dir = Path(out_dir)
    check_output_folder(out_dir, ["comparison.json", plots.svg_name("convergence")], force)
    comparison = compare_runs(run_dirs, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [plots.plot_convergence(comparison["convergence"], out_dir / plots.svg_name("convergence"))]
    distributions = {r["label"]: run_overview(Path(r["run_dir"]), options)[1] for r in comparison["runs"]}
    for metric, direction in sorted({(r["metric"], r["direction"]) for r in comparison["layers"]}):
        name = plots.svg_name("layer_boxes", metric, direction)
        files.append(plots.plot_layer_boxes(distributions, metric, out_dir / name, direction=direction))
    comparison["files"] = [str(p) for p in files]
    atomic.write_json(out_dir / "comparison.json", comparison)
    return comparison


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None
