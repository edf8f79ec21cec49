"""`miner corpus fetch default` on a small slice of the real packages: domains, labels, consistent columns."""

from __future__ import annotations

import json
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
