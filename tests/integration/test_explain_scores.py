"""Explanation scores end to end on a real MiniLM run: the held-out split stays out of the signatures, every
queue is scored, Ray equals inline, and a run without a score sample is one clear error with nothing lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import AnnotateOptions, JobSpec, ScoreOptions, SignatureOptions, VectorOptions, validate_model
from miner.errors import ConfigError, InputError
from miner.explain.held_out import held_out_mask
from miner.signatures.stage import SCORE_TABLES, run_abstract

pytestmark = pytest.mark.integration

SCORES = ScoreOptions(held_out=0.3, top_band=0.9, formula_length=3, beam=3, min_concept_count=3)


@pytest.fixture(scope="module")
def deep_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM, hidden units, top/bottom 40 of the first 600 sentences, all of them in the score sample."""
    from miner.mining.driver import run_mining

    base = tmp_path_factory.mktemp("deep-run")
    job = JobSpec(name="deep", model="minilm", corpus=tiny_corpus, output=base / "run", top_n=40, max_sentences=600,
                  threads_per_worker=2, sample={"sentences": 600})
    run_mining(job, base, executor="inline")
    return base / "run"


@pytest.fixture(scope="module")
def scored(deep_run: Path, tiny_fasttext: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = shutil.copytree(deep_run, tmp_path_factory.mktemp("scored") / "run",
                          ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    run_abstract(run, AnnotateOptions(background_size=600), SignatureOptions(), VectorOptions(model=tiny_fasttext),
                 executor="inline", scores=SCORES)
    return run


def test_the_held_out_split_never_reaches_the_signatures(scored: Path) -> None:
    manifest = json.loads((scored / "manifest.json").read_text())
    split = manifest["scores"]["split"]
    assert split["held_out"] == SCORES.held_out and split["seed"] == manifest["sample"]["seed"]
    top = pq.read_table(scored / "top_sentences.parquet").to_pandas()
    held = held_out_mask(top.sentence_id.to_numpy(), split["seed"], SCORES.held_out)
    assert 0 < held.mean() < 0.5  # the queues (mining's exact result) still hold held-out sentences
    kept = top[~held].groupby(["unit_id", "direction"]).size()
    stats = pq.read_table(scored / "unit_stats.parquet").to_pandas().set_index(["unit_id", "direction"])
    assert (stats.n_sentences.reindex(kept.index) == kept).all()  # each queue's signature saw only the rest
    background = pq.read_table(scored / "background.parquet")["sentence_id"].to_numpy()
    assert len(background) and not held_out_mask(background, split["seed"], SCORES.held_out).any()
    sample = pq.read_table(scored / "sample_sentences.parquet")["sentence_id"].to_numpy()
    assert split["held_out_sample_rows"] == int(held_out_mask(sample, split["seed"], SCORES.held_out).sum()) > 100


def test_every_queue_is_scored_within_bounds(scored: Path) -> None:
    scores = pq.read_table(scored / "unit_scores.parquet").to_pandas()
    assert len(scores) == 2 * 2304 and set(scores.direction) == {"top", "bottom"}
    h = json.loads((scored / "manifest.json").read_text())["scores"]["split"]["held_out_sample_rows"]
    assert (scores.held_out_sentences == h).all() and (scores.top_band_sentences == int(np.ceil(0.1 * h))).all()
    for col in ("simulation", "simulation_baseline"):
        finite = scores[col].dropna()
        assert len(finite) > 0.8 * len(scores) and finite.between(-1, 1).all()
    for col in ("detection_auc", "detection_baseline"):
        assert scores[col].dropna().between(0, 1).all()
    assert scores.simulation.median() > scores.simulation_baseline.median()
    assert scores.detection_auc.median() > scores.detection_baseline.median()
    formulas = pq.read_table(scored / "unit_formulas.parquet").to_pandas()
    assert len(formulas) == 2304 and (formulas.direction == "top").all()
    assert formulas.length.between(1, SCORES.formula_length).all()
    inter = formulas.precision * formulas.support
    band = formulas.band_sentences
    assert np.allclose(inter, formulas.recall * band)
    assert np.allclose(formulas.iou, inter / (formulas.support + band - inter))
    assert formulas.iou.median() > 0


def test_ray_equals_inline_and_a_plain_rerun_drops_the_scores(scored: Path, tiny_fasttext: Path,
                                                              tmp_path: Path) -> None:
    import ray

    run = shutil.copytree(scored, tmp_path / "run")
    opts = (AnnotateOptions(background_size=600), SignatureOptions(), VectorOptions(model=tiny_fasttext))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_abstract(run, *opts, executor="ray", parts=2, scores=SCORES)
    finally:
        ray.shutdown()
    for table in (*SCORE_TABLES, "signatures", "unit_stats", "background"):
        assert pq.read_table(run / f"{table}.parquet").equals(pq.read_table(scored / f"{table}.parquet")), table
    run_abstract(run, *opts, executor="inline")
    assert not any((run / f"{t}.parquet").exists() for t in SCORE_TABLES)
    assert json.loads((run / "manifest.json").read_text())["scores"] is None


def test_scores_on_a_run_without_a_score_sample_say_what_to_rerun(deep_run: Path, tiny_fasttext: Path,
                                                                 tmp_path: Path) -> None:
    run = shutil.copytree(deep_run, tmp_path / "old", ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["sample"]  # as mined before the score sample existed
    (run / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(run / "sample")
    (run / "sample_sentences.parquet").unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(InputError, match="mine the job again with sample.sentences > 0"):
        run_abstract(run, vectors=VectorOptions(model=tiny_fasttext), executor="inline", scores=SCORES)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(("scores", "field"), [({"held_out": 0}, "scores.held_out"),
                                               ({"held_out": 0.6}, "scores.held_out"),
                                               ({"formula_length": 0}, "scores.formula_length"),
                                               ({"top_band": 1.0}, "scores.top_band")])
def test_bad_score_options_name_their_field(scores: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        validate_model(JobSpec, {"name": "x", "model": "minilm", "corpus": "c", "scores": scores}, "field")


def test_reports_show_the_scores_and_sql_ranks_units_by_them(scored: Path, tmp_path: Path) -> None:
    import duckdb

    from miner.report.build import write_model_report, write_unit_report

    con = duckdb.connect(str(scored / "catalog.duckdb"), read_only=True)
    try:
        best = con.execute("""SELECT u.layer, u.idx, s.simulation FROM unit_scores s JOIN units u USING (unit_id)
                              WHERE direction = 'top' AND NOT isnan(simulation)
                              ORDER BY simulation DESC LIMIT 1""").fetchone()
    finally:
        con.close()
    assert best is not None and best[2] > 0
    out = tmp_path / "report"
    write_unit_report(scored, f"{best[0]}:{best[1]}", out, with_activations=False)
    write_model_report(scored, out)
    unit_html = next(out.glob("unit-*.html")).read_text()
    assert "How good is this explanation?" in unit_html and "Compositional explanation" in unit_html
    assert f"{best[2]:.3f}" in unit_html
    unit_json = json.loads(next(out.glob("unit-*.json")).read_text())
    assert {q["direction"] for q in unit_json["scores"]["queues"]} == {"top", "bottom"}
    assert unit_json["scores"]["held_out"] == SCORES.held_out
    model = json.loads((out / "model.json").read_text())["scores"]
    assert [row["layer"] for row in model["layers"]] == list(range(1, 7))
    assert model["best"][0]["label"] == f"{best[0]}:{best[1]}" and len(model["worst"]) == 10
    html = (out / "model.html").read_text()
    assert "How well is each unit explained?" in html and f'href="unit-{unit_json["unit"]["unit_id"]}.html"' in html
    assert "How well is each unit explained?" in (out / "model.md").read_text()


def test_the_cli_refuses_a_bad_held_out_share_in_one_line(deep_run: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "miner.cli", "signatures", str(deep_run), "--held-out", "0.7"],
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("miner: error:") and "held_out" in lines[0]
