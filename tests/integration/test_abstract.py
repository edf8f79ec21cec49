"""Step 2 end to end on a real mining run: Ray-parallel equals in-process; bad input is one clear error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from miner.config import AnnotateOptions, SignatureOptions, VectorOptions
from miner.errors import ConfigError, InputError
from miner.signatures.stage import STEP2_TABLES, run_abstract, step2_done

pytestmark = pytest.mark.integration


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    return dst


def test_ray_parallel_step2_equals_inline(tiny_run: Path, tiny_fasttext: Path, tmp_path: Path) -> None:
    import ray

    opts = (AnnotateOptions(background_size=1500), SignatureOptions(), VectorOptions(model=tiny_fasttext))
    a = copy_run(tiny_run, tmp_path / "inline")
    b = copy_run(tiny_run, tmp_path / "ray")
    run_abstract(a, *opts, executor="inline")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_abstract(b, *opts, executor="ray", parts=2)
    finally:
        ray.shutdown()
    assert summary.parts == 2 and summary.executor == "ray" and step2_done(a) and step2_done(b)
    for table in STEP2_TABLES:
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet")), table
    stats = pq.read_table(a / "unit_stats.parquet").to_pandas()
    assert stats.typical_sentence_id.notna().all() and len(stats) == 2 * 2304
    top = pq.read_table(a / "top_sentences.parquet").to_pandas()
    member = set(zip(top.unit_id, top.direction, top.sentence_id))
    assert all((r.unit_id, r.direction, r.typical_sentence_id) in member for r in stats.itertuples())


def test_summary_is_the_manifest_record(tiny_run: Path, tiny_fasttext: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    before = json.loads((run / "manifest.json").read_text())
    summary = run_abstract(run, AnnotateOptions(background_size=800), vectors=VectorOptions(model=tiny_fasttext),
                           executor="inline", parts=3)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["step2"] == summary.to_dict()
    assert list(manifest["step2"]) == ["status", "units", "sentences_tagged", "background_sentences", "fasttext_model",
                                       "seconds", "seconds_per_unit_after_sentence_work", "options", "catalog",
                                       "executor", "parts"]
    assert list(manifest["step2"]["seconds"]) == ["annotate", "sentence_features", "unit_signatures", "vectors", "total"]
    assert manifest["step2"]["parts"] == 3 and manifest["step2"]["executor"] == "inline"
    assert {k: v for k, v in manifest.items() if k != "step2"} == before  # every other key as it was
    assert summary.units == 2304 and summary.catalog == run / "catalog.duckdb"


def test_cli_signatures_and_sql(tiny_run: Path, tiny_fasttext: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    exe = [sys.executable, "-m", "miner.cli"]
    done = subprocess.run([*exe, "signatures", str(run), "--executor", "inline", "--background-size", "800",
                           "--model", str(tiny_fasttext)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    q = subprocess.run([*exe, "sql", str(run), "SELECT count(*) AS n FROM unit_stats", "--format", "csv"],
                       capture_output=True, text=True, check=True)
    assert q.stdout.splitlines() == ["n", "4608"]
    bad = subprocess.run([*exe, "sql", str(run), "DROP VIEW units"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    err = subprocess.run([*exe, "sql", str(run), "SELECT nope FROM units"], capture_output=True, text=True)
    assert err.returncode == 2 and "nope" in err.stderr and len(err.stderr.strip().splitlines()) == 1


def test_bad_input(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no mining output"):
        run_abstract(tmp_path, executor="inline")
    run = copy_run(tiny_run, tmp_path / "run")
    with pytest.raises(ConfigError, match="colour"):
        run_abstract(run, AnnotateOptions(background_size=100), SignatureOptions(metadata_fields=["colour"]),
                     executor="inline")
    fake = tmp_path / "fake.bin"
    fake.write_bytes(b"not a fasttext model at all")
    with pytest.raises(InputError, match="fake.bin"):
        run_abstract(run, AnnotateOptions(background_size=100), vectors=VectorOptions(model=fake), executor="inline")
    assert not (run / "unit_stats.parquet").exists()  # nothing half-written
