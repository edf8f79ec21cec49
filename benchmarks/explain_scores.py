"""Explanation scores of scored runs: scoring time for every unit, formula search per unit, and the medians of
pre-trained against random-init; prints JSON.

Issue 16: scoring all 2,304 MiniLM units (simulation, detection, baselines) in <= 60 s on 2 cores; beam search
<= 0.2 s per unit; the pre-trained model better explained than its random-init twin. For the first --run the
benchmark rebuilds step 2's inputs of the scores from the run folder (tokens, background, signatures; nothing
is written into it), then times the scoring alone (formulas off) and the formula search alone (one process),
--repeats times, keeping the fastest. For every run it reads unit_scores and unit_formulas as step 2 wrote
them and reports the medians (top direction) and the share of units above their shuffled baseline.

Usage: python benchmarks/explain_scores.py --run runs/demo [--run runs/demo-random] [--repeats 2] [--out F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from json_out import add_out_options, check_out, emit

from miner.config import ScoreOptions, SignatureOptions
from miner.explain.held_out import load_held_out
from miner.mining.sample import SCORES_FILE
from miner.run.folder import FILES
from miner.signatures.annotate import signature_inputs
from miner.signatures.features import sentence_features
from miner.signatures.scoring import score_units


def timed_scoring(run: Path, repeats: int) -> dict:
    """Rebuild the scores' inputs of a scored run and time scoring and formulas separately."""
    manifest = json.loads((run / FILES.manifest).read_text())
    options = ScoreOptions.model_validate(manifest["scores"]["options"])
    signature_options = SignatureOptions.model_validate(manifest["step2"]["options"]["signatures"])
    held_out = load_held_out(run, options.held_out)
    top, sentences, tokens, bg = signature_inputs(run, None, held_out)
    t = time.perf_counter()
    features = sentence_features(top, sentences, tokens, bg, signature_options, extra_ids=held_out.sentence_ids)
    features_seconds = time.perf_counter() - t
    tables = {name: pq.read_table(run / f"{name}.parquet") for name in ("signatures", "unit_stats", "unit_metadata")}
    true = np.asarray(np.load(run / FILES.sample / SCORES_FILE, mmap_mode="r")[held_out.rows], np.float32)
    scoring, formulas = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        out, record = score_units(features, tables, held_out, true, options.model_copy(update={"formulas": False}),
                                  signature_options)
        scoring.append(time.perf_counter() - t)
        t = time.perf_counter()
        fit, _ = score_units(features, tables, held_out, true, options, signature_options)
        formulas.append(time.perf_counter() - t - scoring[-1])
    stored = pq.read_table(run / "unit_scores.parquet")
    same = out["unit_scores"].equals(stored)
    units = int(len(np.unique(tables["unit_stats"]["unit_id"].to_numpy())))
    return {"run": str(run), "units": units, "queues": record["queues"], "held_out_sentences": int(len(held_out.rows)),
            "signature_items": record["items"], "features_seconds": round(features_seconds, 2),
            "scoring_seconds": round(min(scoring), 2), "scoring_target_seconds": 60,
            "formula_seconds": round(min(formulas), 2),
            "formula_seconds_per_unit": round(min(formulas) / max(units, 1), 4), "formula_target_seconds_per_unit": 0.2,
            "atoms": int(fit["unit_formulas"]["atoms"][0].as_py()) if fit["unit_formulas"].num_rows else 0,
            "recomputed_equals_stored": bool(same)}


def medians(run: Path) -> dict:
    """Median scores (top direction) of a scored run, as step 2 stored them."""
    scores = pq.read_table(run / "unit_scores.parquet").to_pandas()
    top = scores[scores.direction == "top"]
    out = {"run": str(run), "init": json.loads((run / FILES.manifest).read_text())["job"].get("init"),
           "units": int(len(top))}
    for col in ("simulation", "simulation_baseline", "detection_auc", "detection_baseline"):
        out[f"median_{col}"] = round(float(top[col].median()), 4)
    out["share_above_baseline"] = round(float((top.simulation > top.simulation_baseline).mean()), 4)
    units = pq.read_table(run / "units.parquet").to_pandas()[["unit_id", "layer"]]
    by_layer = top.merge(units, on="unit_id").groupby("layer")[["simulation", "detection_auc"]].median()
    out["median_by_layer"] = {int(layer): {k: round(float(v), 4) for k, v in row.items()}
                              for layer, row in by_layer.iterrows()}
    formulas = run / "unit_formulas.parquet"
    if formulas.exists():
        out["median_formula_iou"] = round(float(pq.read_table(formulas)["iou"].to_pandas().median()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True, help="a run scored by step 2 (repeatable)")
    ap.add_argument("--repeats", type=int, default=2)
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    report = {"benchmark": "explain_scores", "timing": timed_scoring(args.run[0], args.repeats),
              "runs": [medians(run) for run in args.run]}
    if len(args.run) > 1:
        a, b = report["runs"][0], report["runs"][1]
        report["first_better_explained"] = bool(a["median_simulation"] > b["median_simulation"]
                                                and a["median_detection_auc"] > b["median_detection_auc"])
    emit(report, args)


if __name__ == "__main__":
    main()
