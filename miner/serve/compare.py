"""The served runs side by side (e.g. pre-trained vs random-init): their headline figures in one table and each
overview figure of every run next to the others."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from miner.report.build import model_report
from miner.report.records import Plot
from miner.report.render import svg_data_uri
from miner.serve.runs import ServedRun


@lru_cache(maxsize=16)
def _plots(path: Path) -> tuple[Plot, ...]:
    return tuple(model_report(path).plots)


def compare_context(runs: list[ServedRun]) -> dict[str, Any]:
    """{"runs", "rows": [(label, [value per run])], "plots": [(title, [(run, data URI)])]}."""
    def get(run: ServedRun, *keys: str) -> Any:
        value: Any = run.manifest
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        return value

    rows = [
        ("model", [get(r, "job", "model") for r in runs]),
        ("init", [get(r, "job", "init") or "pretrained" for r in runs]),
        ("units", [len(r.unit_ids) for r in runs]),
        ("sentences mined", [get(r, "stats", "sentences") for r in runs]),
        ("clustering accuracy", [get(r, "analysis", "accuracy") for r in runs]),
        ("median simulation score", [get(r, "scores", "median_simulation") for r in runs]),
        ("median simulation, shuffled signatures", [get(r, "scores", "median_simulation_baseline") for r in runs]),
        ("median detection AUC", [get(r, "scores", "median_detection_auc") for r in runs]),
    ]
    by_title: dict[str, list[tuple[ServedRun, str]]] = {}
    for run in runs:
        for plot in _plots(run.path):
            by_title.setdefault(plot.title, []).append((run, svg_data_uri(plot.svg)))
    return {"runs": runs, "rows": rows, "plots": list(by_title.items())}
