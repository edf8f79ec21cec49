"""Time the analysis stage on a run folder (step 2 done) and print JSON.

    python benchmarks/analysis.py runs/demo [--map-directions top] [--directions top bottom]

Writes the analysis tables, plots and manifest entry into the run (as `miner analyze` would), then reports
wall seconds in total and split (k-means incl. chance permutations, t-SNE incl. PCA, rankings, plots),
the clustering accuracy per site and direction with its chance level, and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.analysis.stage import run_analysis
from miner.config import AnalysisOptions
from miner.query.concepts import concept_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--directions", nargs="+", default=["top", "bottom"])
    parser.add_argument("--map-directions", nargs="*", default=["top"])
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    options = AnalysisOptions(directions=args.directions, map_directions=args.map_directions,
                              plots=not args.no_plots)
    t = time.monotonic()
    summary = run_analysis(args.run, options)
    total = time.monotonic() - t
    t = time.monotonic()
    hits = concept_search(args.run, ["united states", "u.s.", "america"], top=5)
    concept_seconds = time.monotonic() - t
    print(json.dumps({
        "run": str(args.run.resolve()), "n_units": summary["n_units"], "k": summary["k"],
        "seconds": {**summary["seconds"], "wall_total": round(total, 3),
                    "concept_search_united_states": round(concept_seconds, 3)},
        "accuracy": round(summary["accuracy"], 4), "chance_accuracy": round(summary["chance_accuracy"], 4),
        "clustering": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items()}
                       for c in summary["clustering"]],
        "united_states_top5": hits.select(["unit_id", "layer", "idx", "hits", "precision", "iou"]).to_pylist(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    main()
