"""Damaged files (truncated weights, run tables, checkpoints, corpus shards, the catalog): one `miner: error:` line
naming the file and what to do, exit status 2, nothing already produced lost, and no `running` manifest left by a
run that failed before its first block."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from miner.cli import main
from tests.support.builders import make_corpus, tiny_model, write_job

pytestmark = pytest.mark.integration


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def miner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miner.cli", *args], capture_output=True, text=True, timeout=600)


def one_error(stderr: str) -> str:
    """The single error line of a failed command: no traceback, no other error lines."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower() and " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith("miner: error: "), stderr
    return errors[0]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model, a corpus and a complete run with step 2 and analysis done (inline, ~15 s)."""
    base = tmp_path_factory.mktemp("damaged")
    model = tiny_model(base / "model", "bert")
    corpus = make_corpus(base / "corpus", n=300, shard_size=100)
    job = write_job(base / "job.yaml", name="ok", model=str(model), corpus=str(corpus), output=str(base / "run"),
                    top_n=8, block_size=100, vectors={"dim": 16, "epoch": 1, "min_count": 1})
    assert main(["run", str(job), "--executor", "inline"]) == 0
    return {"base": base, "model": model, "corpus": corpus, "run": base / "run"}


def _job(setup: dict[str, Path], tmp: Path, **fields: object) -> Path:
    values = {"name": "d", "model": str(setup["model"]), "corpus": str(setup["corpus"]), "output": str(tmp / "out"),
              "top_n": 8, "block_size": 100, **fields}
    return write_job(tmp / "job.yaml", **values)


def test_truncated_weights_are_named_before_anything_starts(setup: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    truncate(model / "model.safetensors")
    out = miner("mine", str(_job(setup, tmp_path, model=str(model))))
    assert out.returncode == 2
    line = one_error(out.stderr)
    assert str(model / "model.safetensors") in line and "damaged" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("executor", ["ray", "inline"])
def test_a_model_that_fails_to_load_in_the_worker_leaves_no_running_manifest(
        setup: dict[str, Path], tmp_path: Path, executor: str) -> None:
    """The tokenizer is only loaded by the workers: on Ray the actor's error comes back as one line, with no
    restarts or tracebacks, and the run folder the miner created is gone again."""
    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    truncate(model / "tokenizer.json")
    out = miner("mine", str(_job(setup, tmp_path, model=str(model))), "--executor", executor)
    assert out.returncode == 2, out.stderr[-3000:]
    line = one_error(out.stderr)
    assert "tokenizer" in line and str(model) in line
    assert "retries" not in out.stdout + out.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_folder_that_existed_keeps_its_other_files(setup: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    truncate(model / "tokenizer.json")
    (tmp_path / "out").mkdir()
    out = miner("mine", str(_job(setup, tmp_path, model=str(model))), "--executor", "inline")
    assert out.returncode == 2
    assert list((tmp_path / "out").iterdir()) == []  # no manifest, no lock: a fixed model can mine here


@pytest.mark.parametrize("name", ["lane-000.keys.npy", "lane-000.json", "moments.npz", "state.json"])
def test_damaged_checkpoint_is_named_and_kept(setup: dict[str, Path], tmp_path: Path, name: str) -> None:
    job = _job(setup, tmp_path, checkpoint_seconds=0)
    assert main(["mine", str(job), "--executor", "inline", "--stop-after-blocks", "1"]) == 0
    checkpoint = tmp_path / "out" / "checkpoint"
    truncate(checkpoint / name)
    before = digest(tmp_path / "out")
    out = miner("mine", str(job), "--executor", "inline")
    assert out.returncode == 2
    line = one_error(out.stderr)
    assert str(checkpoint / name) in line and f"delete {checkpoint}" in line
    assert digest(tmp_path / "out") == before  # nothing already produced is lost


# (damaged file, command) -> the hint the error line must give
TABLE_CASES = [
    ("manifest.json", ["sql", "{run}", "SELECT 1"], "miner mine"),
    ("manifest.json", ["signatures", "{run}", "--executor", "inline"], "miner mine"),
    ("sentences.parquet", ["signatures", "{run}", "--executor", "inline"], "miner mine"),
    ("top_sentences.parquet", ["signatures", "{run}", "--executor", "inline"], "miner mine"),
    ("sentences.parquet", ["sql", "{run}", "SELECT count(*) FROM sentences"], "miner mine"),
    ("units.parquet", ["report", "{run}", "--model", "--out", "{tmp}/reports"], "miner mine"),
    ("top_sentences.parquet", ["analyze", "{run}"], "miner mine"),
    ("tokens.parquet", ["sql", "{run}", "SELECT count(*) FROM tokens"], "miner signatures"),
    ("unit_stats.parquet", ["report", "{run}", "--model", "--out", "{tmp}/reports"], "miner signatures"),
    ("unit_clusters.parquet", ["sql", "{run}", "SELECT 1"], "miner analyze"),
]


@pytest.mark.parametrize(("damaged", "command", "hint"), TABLE_CASES,
                         ids=[f"{d}-{c[0]}" for d, c, _ in TABLE_CASES])
def test_damaged_run_file_is_one_line_naming_it(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                                               damaged: str, command: list[str], hint: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(setup["run"], run)
    truncate(run / damaged)
    before = digest(run)
    args = [a.format(run=run, tmp=tmp_path) for a in command]
    assert main(args) == 2
    line = one_error(capsys.readouterr().err)
    assert str(run / damaged) in line and hint in line, line
    after = digest(run)
    assert after[damaged] == before[damaged]
    assert all(after.get(k) == v for k, v in before.items() if k != "catalog.duckdb"), "a run file was changed"


def test_damaged_corpus_shard_is_named_by_step_2(setup: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(setup["corpus"], corpus)
    job = _job(setup, tmp_path, corpus=str(corpus), vectors={"dim": 16, "epoch": 1, "min_count": 1})
    assert main(["mine", str(job), "--executor", "inline"]) == 0
    shard = sorted(corpus.glob("*.parquet"))[0]
    truncate(shard)
    assert main(["signatures", str(tmp_path / "out"), "--executor", "inline"]) == 2
    line = one_error(capsys.readouterr().err)
    assert str(shard) in line and "restore the corpus" in line


def test_damaged_catalog_is_rebuilt(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(setup["run"], run)
    assert main(["sql", str(run), "SELECT 1"]) == 0  # the copy gets its own catalog (views hold absolute paths)
    truncate(run / "catalog.duckdb")
    capsys.readouterr()
    assert main(["sql", str(run), "SELECT count(*) AS n FROM units", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "64"]
