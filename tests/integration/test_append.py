"""Appending corpora to a finished run: identical to mining the concatenation from scratch; bad appends refused.

Mining runs in-process (executor='inline') on a tiny random BERT, except the Ray case and the CLI's step-2 refresh.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import load_job
from miner.corpus.combined import open_corpora
from miner.corpus.prepare import load_corpus
from miner.errors import MinerError
from miner.mining.driver import run_mining
from miner.run.folder import RunFolder
from tests.support.builders import make_corpus, tiny_model, write_job

pytestmark = pytest.mark.integration
TABLES = ("top_sentences", "sentences", "units", "unit_moments", "unit_distribution", "unit_histograms",
          "sample_sentences", "unit_exemplars", "convergence")
SAMPLE = {"sentences": 120, "seed": 3}
COMMON = {"top_n": 6, "block_size": 50, "batch_size": 8, "sites": ["hidden", "mlp"], "checkpoint_seconds": 0,
          "sample": SAMPLE, "bottom": True}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpora")
    first = make_corpus(root / "a", n=260, shard_size=100)
    return first, make_corpus(root / "b", n=170, seed=1, shard_size=100, after=first)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "bert", "bert")


def mine(tmp: Path, name: str, corpus: object, model: Path, **fields: object) -> dict:
    job = write_job(tmp / f"{name}.yaml", name=name, model=str(model), output=name,
                    corpus=[str(c) for c in corpus] if isinstance(corpus, list) else str(corpus),
                    **{**COMMON, **fields})
    return run_mining(*load_job(job), executor="inline")


def same_tables(a: Path, b: Path) -> None:
    for table in TABLES:
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet")), table
    assert (a / "sample" / "scores.npy").read_bytes() == (b / "sample" / "scores.npy").read_bytes()


def folder_bytes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_prepare_after_continues_the_ids(corpora: tuple[Path, Path]) -> None:
    first, second = load_corpus(corpora[0]), load_corpus(corpora[1])
    assert second.shards[0].first_id == first.sentences == 260
    docs_a = pq.read_table(corpora[0] / first.shards[-1].file)["doc_id"].to_numpy()
    docs_b = pq.read_table(corpora[1] / second.shards[0].file)["doc_id"].to_numpy()
    assert docs_b.min() == docs_a.max() + 1
    ids = pq.read_table(corpora[1] / second.shards[-1].file)["sentence_id"].to_numpy()
    assert ids[-1] == 260 + 170 - 1
    assert second.model_extra["after"]["fingerprint"] == first.fingerprint
    folder, both = open_corpora(list(corpora))
    assert folder == corpora[0] and both.sentences == 430 and len(both.shards) == 5
    assert both.shards[3].file == str((corpora[1] / second.shards[0].file).resolve())


def test_append_equals_mining_the_concatenation(tmp_path: Path, corpora: tuple[Path, Path], model: Path) -> None:
    first = mine(tmp_path, "grown", corpora[0], model)
    assert first["blocks"]["size"] == 50
    before = Path(first["run_dir"])
    grown = mine(tmp_path, "grown", list(corpora), model)
    scratch = mine(tmp_path, "scratch", list(corpora), model)
    same_tables(Path(scratch["run_dir"]), before)
    record = grown["append"]
    assert record["from_blocks"] == first["blocks"]["merged"] == 6 and record["added_sentences"] == 170
    assert grown["stats"] == {k: v for k, v in scratch["stats"].items()}
    assert grown["blocks"] == scratch["blocks"] and grown["fingerprint"] == scratch["fingerprint"]
    assert grown["corpus"]["paths"] == [str(c.resolve()) for c in corpora]
    ids = pq.read_table(before / "sentences.parquet")["sentence_id"].to_numpy()
    assert (ids >= 260).any()  # the appended corpus's sentences made it into the queues
    again = mine(tmp_path, "grown", list(corpora), model)  # the same longer job again: already complete
    assert again["fingerprint"] == grown["fingerprint"] and "append" in again


def test_interrupted_append_resumes_and_keeps_the_run_readable(tmp_path: Path, corpora: tuple[Path, Path],
                                                                model: Path) -> None:
    mine(tmp_path, "r", corpora[0], model)
    run = tmp_path / "r"
    job = write_job(tmp_path / "r2.yaml", name="r", model=str(model), output="r",
                    corpus=[str(c) for c in corpora], **COMMON)
    stopped = run_mining(*load_job(job), executor="inline", stop_after_blocks=2)
    assert stopped["status"] == "incomplete"
    assert RunFolder(run).status()["status"] == "complete"  # the shorter run stays readable meanwhile
    assert pq.read_table(run / "sentences.parquet")["sentence_id"].to_numpy().max() < 260
    run_mining(*load_job(job), executor="inline")
    same_tables(Path(mine(tmp_path, "s", list(corpora), model)["run_dir"]), run)


def test_append_on_ray_workers_equals_inline(tmp_path: Path, corpora: tuple[Path, Path], model: Path) -> None:
    import ray

    mine(tmp_path, "ray", corpora[0], model, threads_per_worker=1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        job = write_job(tmp_path / "ray2.yaml", name="ray", model=str(model), output="ray",
                        corpus=[str(c) for c in corpora], workers=2, threads_per_worker=1, **COMMON)
        run_mining(*load_job(job), executor="ray")
    finally:
        ray.shutdown()
    ref = Path(mine(tmp_path, "one", list(corpora), model, threads_per_worker=1)["run_dir"])
    for table in TABLES[:-1]:  # convergence counts per lane: 2 lanes count differently from 1
        assert pq.read_table(ref / f"{table}.parquet").equals(pq.read_table(tmp_path / "ray" / f"{table}.parquet"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, corpora: tuple[Path, Path], model: Path) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    mine(tmp, "done", corpora[0], model)
    return tmp


def refused(tmp: Path, corpus: object, model: Path, expected: str, **fields: object) -> None:
    run = tmp / "done"
    snapshot = folder_bytes(run)
    with pytest.raises(MinerError) as err:
        mine(tmp, "done", corpus, model, **fields)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert folder_bytes(run) == snapshot


def test_bad_appends_are_one_line_and_change_nothing(tmp_path: Path, finished: Path, corpora: tuple[Path, Path],
                                                     model: Path) -> None:
    unchained = make_corpus(tmp_path / "u", n=60, seed=2, shard_size=100)  # ids from 0 again
    refused(finished, [corpora[0], unchained], model, f"{unchained}: its sentence ids start at 0, not at 260")
    refused(finished, [corpora[1]], model, "must start with that corpus")
    refused(finished, list(corpora), model, "other settings (top_n)", top_n=7)
    other_cols = make_corpus(tmp_path / "c", n=60, seed=2, after=corpora[0], extra={"genre": "poem"})
    refused(finished, [corpora[0], other_cols], model, "its columns differ")
    refused(finished, [corpora[0], corpora[0]], model, "listed twice")


def test_append_to_a_run_still_mining_or_stopped_early_is_refused(tmp_path: Path, corpora: tuple[Path, Path],
                                                                 model: Path) -> None:
    job = write_job(tmp_path / "p.yaml", name="p", model=str(model), output="p", corpus=str(corpora[0]), **COMMON)
    assert run_mining(*load_job(job), executor="inline", stop_after_blocks=1)["status"] == "incomplete"
    snapshot = folder_bytes(tmp_path / "p")
    with pytest.raises(MinerError, match="not finished"):
        mine(tmp_path, "p", list(corpora), model)
    assert folder_bytes(tmp_path / "p") == snapshot

    mine(tmp_path, "busy", corpora[0], model)
    holder = RunFolder(tmp_path / "busy")
    holder.lock()  # another driver appending to it right now
    try:
        with pytest.raises(MinerError, match="in use by another running miner process"):
            mine(tmp_path, "busy", list(corpora), model)
    finally:
        holder.release()

    early = {"early_stop": {"max_update_rate": 0.99, "patience": 1}}
    assert mine(tmp_path, "early", corpora[0], model, **early)["blocks"]["stopped_early"]
    with pytest.raises(MinerError, match="stopped early"):
        mine(tmp_path, "early", list(corpora), model, **early)


def test_cli_append_refreshes_step_2_and_the_catalog(tmp_path: Path, corpora: tuple[Path, Path], model: Path) -> None:
    steps = {"annotate": {"background_size": 200}, "vectors": {"dim": 16, "epoch": 1, "min_count": 1, "bucket": 5000}}
    fields = {"name": "cli", "model": str(model), "output": "cli", **COMMON, **steps}
    short = write_job(tmp_path / "short.yaml", corpus=str(corpora[0]), **fields)
    run = subprocess.run([sys.executable, "-m", "miner.cli", "run", str(short), "--executor", "inline"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    long = write_job(tmp_path / "long.yaml", corpus=[str(c) for c in corpora], **fields)
    grown = subprocess.run([sys.executable, "-m", "miner.cli", "mine", str(long), "--executor", "inline"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr
    assert "appended 170 sentences" in grown.stdout and "step 2 refreshed" in grown.stdout
    assert "were made from the shorter corpus and were removed" in grown.stderr
    import duckdb

    with duckdb.connect(str(tmp_path / "cli" / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM corpus").fetchall() == [(430,)]
        top = con.execute("SELECT max(sentence_id) FROM background").fetchall()[0][0]
        assert top >= 260  # the background sample is drawn from both corpora now
    sidecar = json.loads((tmp_path / "cli" / "fasttext.bin.json").read_text())
    assert sidecar["corpus_fingerprint"] == open_corpora(list(corpora))[1].fingerprint  # trained on both
    assert sidecar["sentences"] == 430
    ids = pq.read_table(tmp_path / "cli" / "tokens.parquet")["sentence_id"].to_numpy()
    assert np.isin(ids, pq.read_table(tmp_path / "cli" / "sentences.parquet")["sentence_id"].to_numpy()).any()
    bad = subprocess.run([sys.executable, "-m", "miner.cli", "mine", str(short), "--executor", "inline"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("miner: error:") and "must start with" in lines[0]
