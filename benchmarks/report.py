"""Time to build neuron reports for a run; prints JSON.

Usage: python benchmarks/report.py RUN [--unit 3:232] [--units 5] [--out /tmp/miner-report-bench]

Measures, separately for the record (SQL over the catalog + token activations recomputed with the model)
and for rendering (HTML self-contained, Markdown, JSON):
- the first unit report in a fresh process (includes loading the model once),
- further unit reports in the same process (model cached; what `miner report RUN --unit A B C` pays per unit),
- the model overview (index of every unit, per-layer summaries, plots).
Reports are written under --out (never into a run or corpus folder; pages already there only with --force).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from miner.errors import MinerError
from miner.outputs import check_output_folder
from miner.report.build import (
    model_report,
    render_html,
    render_json,
    render_markdown,
    unit_report,
)
from miner.run.catalog import open_catalog


def _render_all(report: object, out: Path) -> dict[str, float]:
    times = {}
    for name, fn in (("html", lambda: render_html(report, out)), ("md", lambda: render_markdown(report, out)),
                     ("json", lambda: render_json(report, out))):
        t = time.perf_counter()
        path = fn()
        times[name] = round(time.perf_counter() - t, 4)
        times[f"{name}_bytes"] = path.stat().st_size
    return times


def bench(run_dir: Path, first: str, n_units: int, out: Path, n_sentences: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    con = open_catalog(run_dir)
    n_total = con.execute("SELECT count(*) FROM units").fetchall()[0][0]
    con.close()
    others = [str((i * 7919 + 13) % n_total) for i in range(n_units)]

    t = time.perf_counter()
    report = unit_report(run_dir, first, n_sentences=n_sentences)
    first_build = time.perf_counter() - t
    first_render = _render_all(report, out)
    builds, renders, activation_seconds = [], [], []
    for unit in others:
        t = time.perf_counter()
        r = unit_report(run_dir, unit, n_sentences=n_sentences)
        builds.append(time.perf_counter() - t)
        activation_seconds.append(r.activations.seconds)
        t = time.perf_counter()
        _render_all(r, out)
        renders.append(time.perf_counter() - t)
    t = time.perf_counter()
    report_na = unit_report(run_dir, first, n_sentences=n_sentences, with_activations=False)
    no_act = time.perf_counter() - t

    t = time.perf_counter()
    overview = model_report(run_dir)
    model_build = time.perf_counter() - t
    model_render = _render_all(overview, out)
    return {
        "run": str(run_dir),
        "units_in_run": n_total,
        "sentences_per_direction": n_sentences,
        "unit_report": {
            "unit": report.unit.label,
            "first_build_seconds_incl_model_load": round(first_build, 3),
            "first_render_seconds": first_render,
            "max_score_diff": report.activations.max_score_diff,
            "next_units": len(others),
            "next_build_seconds_median": round(statistics.median(builds), 3) if builds else None,
            "next_activation_seconds_median": round(statistics.median(activation_seconds), 3) if builds else None,
            "next_render_seconds_median": round(statistics.median(renders), 3) if renders else None,
            "build_seconds_without_activations": round(no_act, 3),
            "directions": [d.direction for d in report_na.directions],
        },
        "model_report": {
            "build_seconds": round(model_build, 3),
            "render_seconds": model_render,
            "plots": [p.name for p in overview.plots],
            "index_units": len(overview.units),
        },
        "out": str(out),
        "machine": {"python": platform.python_version(), "torch_threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run folder (finished `miner signatures`).")
    parser.add_argument("--unit", default="3:232", help="First unit to report [default: 3:232].")
    parser.add_argument("--units", type=int, default=5, help="Further units, timed with the model cached [default: 5].")
    parser.add_argument("--sentences", type=int, default=20, help="Sentences per direction [default: 20].")
    parser.add_argument("--out", type=Path, default=Path("/tmp/miner-report-bench"),
                        help="Where reports go (never inside a run or corpus folder).")
    parser.add_argument("--force", action="store_true", help="Replace pages already in --out.")
    ns = parser.parse_args(argv)
    try:  # like `miner report --out`: outside every run or corpus folder, existing pages only with --force
        check_output_folder(ns.out, [p.name for p in ns.out.iterdir()] if ns.out.is_dir() else [], ns.force)
    except MinerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    json.dump(bench(ns.run, ns.unit, ns.units, ns.out, ns.sentences), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
