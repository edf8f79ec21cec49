"""Runs that meet damaged input or a full disk: one clear line, non-zero exit, earlier results untouched."""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import load_job
from miner.corpus.prepare import load_corpus
from miner.mining.driver import run_mining
from tests.support.builders import make_corpus, tiny_model, write_job
from tests.support.mining_oracle import all_scores, expected_queues

pytestmark = pytest.mark.integration


def miner(*args: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """Run the CLI; with file_size_limit every file it writes is capped (RLIMIT_FSIZE), as on a full disk."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "miner.cli", *args], capture_output=True, text=True,
                          preexec_fn=limit if file_size_limit is not None else None, timeout=600)


def one_error(out: subprocess.CompletedProcess) -> str:
    """The single `miner: error:` line of a failed run (progress lines may precede it; no traceback)."""
    errors = [line for line in out.stderr.splitlines() if line.startswith("miner: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    return errors[0]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_corrupt_shard_is_named_then_skipped_and_recorded(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", n=300, shard_size=100)
    manifest = load_corpus(corpus)
    assert len(manifest.shards) == 3
    model = tiny_model(tmp_path / "m", "bert")
    fields = {"name": "c", "model": str(model), "corpus": str(corpus), "output": "run", "top_n": 5,
              "block_size": 50, "checkpoint_seconds": 0}
    job_path = write_job(tmp_path / "job.yaml", **fields)
    ids, scores, _, _ = all_scores(*load_job(job_path))  # the oracle, on the intact corpus

    bad = manifest.shards[1]
    raw = bytearray((corpus / bad.file).read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    (corpus / bad.file).write_bytes(bytes(raw))

    out = miner("mine", str(job_path), "--executor", "inline")
    line = one_error(out)
    assert out.returncode == 2 and bad.file in line and "corrupt shard" in line and "skip_corrupt_shards" in line
    run = tmp_path / "run"
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["next_block"] == 2  # the first shard's blocks are merged and kept

    write_job(job_path, **fields, skip_corrupt_shards=True)
    out = miner("-v", "mine", str(job_path), "--executor", "inline")
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stderr and "at block 2/" in out.stderr
    done = json.loads((run / "manifest.json").read_text())
    assert [s["file"] for s in done["skipped_shards"]] == [bad.file]
    assert "SHA-256" in done["skipped_shards"][0]["reason"]
    assert done["stats"]["sentences"] == 200 and done["stats"]["skipped_sentences"] == 100
    conv = pq.read_table(run / "convergence.parquet").to_pandas()
    assert sorted(conv.block.unique()) == [0, 1, 4, 5]  # no convergence rows for the skipped blocks

    step2 = miner("signatures", str(run), "--executor", "inline")  # step 2 and the catalog leave the shard out
    assert step2.returncode == 0, step2.stderr
    n = miner("sql", str(run), "SELECT count(*) AS n FROM corpus", "--format", "csv")
    assert n.returncode == 0 and n.stdout.split() == ["n", "200"], n.stdout + n.stderr

    write_job(job_path, **fields)  # skipping off again: the result with a shard missing is not reused silently
    refused = miner("mine", str(job_path), "--executor", "inline")
    assert refused.returncode == 2 and "skip_corrupt_shards" in one_error(refused) and bad.file in one_error(refused)

    keep = (ids < bad.first_id) | (ids >= bad.first_id + bad.sentences)
    top = pq.read_table(run / "top_sentences.parquet").to_pandas()
    for direction in ("top", "bottom"):
        expected = expected_queues(ids[keep], scores[keep], 5, direction)
        got = top[top.direction == direction].sort_values(["unit_id", "rank"])
        for unit, want in enumerate(expected):
            assert got[got.unit_id == unit].sentence_id.tolist() == want.tolist()
    assert not np.isin(top.sentence_id, np.arange(bad.first_id, bad.first_id + bad.sentences)).any()


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", n=300, shard_size=100)
    model = tiny_model(tmp_path / "m", "bert")
    # no score sample: its per-block shard would be the first file to hit the limit (test_disk_full_on_a_sample_shard)
    common = {"model": str(model), "corpus": str(corpus), "top_n": 5, "block_size": 50, "checkpoint_seconds": 0,
              "sample": {"sentences": 0}}
    ref = run_mining(*load_job(write_job(tmp_path / "ref.yaml", name="ref", output="ref", **common)),
                     executor="inline")
    job_path = write_job(tmp_path / "job.yaml", name="full", output="run", **common)
    first = miner("mine", str(job_path), "--executor", "inline", "--stop-after-blocks", "2")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    before = digest(run)
    assert "checkpoint/state.json" in before

    full = miner("mine", str(job_path), "--executor", "inline", file_size_limit=1024)
    line = one_error(full)
    assert full.returncode == 1 and str(run / "checkpoint") in line and "too large" in line.lower()
    assert digest(run) == before  # nothing half-written, the earlier checkpoint untouched
    assert [p.name for p in run.glob(".*")] == [".lock"]

    again = miner("mine", str(job_path), "--executor", "inline")
    assert again.returncode == 0, again.stderr
    for table in ("top_sentences", "sentences", "units", "convergence"):
        assert pq.read_table(run / f"{table}.parquet").equals(pq.read_table(Path(ref["run_dir"]) / f"{table}.parquet"))


def test_disk_full_on_a_sample_shard_keeps_the_run_resumable(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", n=300, shard_size=100)
    model = tiny_model(tmp_path / "m", "bert")
    common = {"model": str(model), "corpus": str(corpus), "top_n": 5, "block_size": 50, "checkpoint_seconds": 0}
    ref = run_mining(*load_job(write_job(tmp_path / "ref.yaml", name="ref", output="ref", **common)),
                     executor="inline")
    job_path = write_job(tmp_path / "job.yaml", name="full", output="run", **common)
    assert miner("mine", str(job_path), "--executor", "inline", "--stop-after-blocks", "2").returncode == 0
    run = tmp_path / "run"
    before = digest(run)
    full = miner("mine", str(job_path), "--executor", "inline", file_size_limit=1024)
    line = one_error(full)
    assert full.returncode == 1 and str(run / "sample") in line and "too large" in line.lower()
    assert digest(run) == before  # the shard is written atomically, before the checkpoint that covers its block
    assert miner("mine", str(job_path), "--executor", "inline").returncode == 0
    for table in ("top_sentences", "unit_moments", "sample_sentences"):
        assert pq.read_table(run / f"{table}.parquet").equals(pq.read_table(Path(ref["run_dir"]) / f"{table}.parquet"))
    assert (run / "sample" / "scores.npy").read_bytes() == (Path(ref["run_dir"]) / "sample" / "scores.npy").read_bytes()


def test_disk_full_in_step2_leaves_mining_output_intact(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", n=300, shard_size=100)
    model = tiny_model(tmp_path / "m", "bert")
    job_path = write_job(tmp_path / "job.yaml", name="s2", model=str(model), corpus=str(corpus), output="run",
                         top_n=5, block_size=100)
    assert miner("mine", str(job_path), "--executor", "inline").returncode == 0
    run = tmp_path / "run"
    before = digest(run)
    full = miner("signatures", str(run), "--executor", "inline", file_size_limit=16 * 1024)
    assert full.returncode != 0 and "too large" in one_error(full).lower()
    after = digest(run)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    again = miner("signatures", str(run), "--executor", "inline")  # with space again, step 2 completes
    assert again.returncode == 0, again.stderr
    mined = {k: v for k, v in before.items() if k != "manifest.json"}  # step 2 adds its summary to the manifest
    assert (run / "catalog.duckdb").exists() and {k: v for k, v in digest(run).items() if k in mined} == mined
