"""The run folder: one name per file, manifest updates under the run lock, and the corpus rows read by id."""

from __future__ import annotations

import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader, DamagedShardError, read_rows
from miner.errors import InputError, OutputConflictError
from miner.mining.plan import plan_blocks
from miner.run.folder import (
    ANALYSIS_TABLES,
    FILES,
    MINING_TABLES,
    STEP2_TABLES,
    RunFolder,
    read_manifest,
    repair_hint,
    table_file,
    table_name,
    update_manifest,
)
from tests.support.builders import make_corpus


def _run(tmp_path: Path, manifest: object) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / FILES.manifest).write_text(json.dumps(manifest))
    return run


def test_table_names_and_files_agree() -> None:
    assert table_file(table_name(FILES.top_sentences)) == FILES.top_sentences == "top_sentences.parquet"
    assert MINING_TABLES == ("units", "sentences", "top_sentences", "convergence", "unit_moments", "unit_distribution",
                             "unit_histograms", "sample_sentences", "unit_exemplars")
    assert STEP2_TABLES == ("tokens", "background", "signatures", "unit_stats", "unit_metadata", "sentence_vectors",
                            "unit_vectors")
    assert ANALYSIS_TABLES == ("unit_clusters", "unit_map", "layer_rankings", "layer_distribution", "unit_redundancy",
                               "layer_redundancy")
    assert "miner analyze" in repair_hint(Path("r") / FILES.unit_map)
    assert "miner mine" in repair_hint(Path("r") / FILES.manifest)
    assert "miner mine" in repair_hint(Path("r") / FILES.unit_moments)
    assert "miner analyze" in repair_hint(Path("r") / FILES.unit_redundancy)
    assert "miner ablate" in repair_hint(Path("r") / FILES.ablation_effects)
    assert "miner match r OTHER_RUN" in repair_hint(Path("r") / FILES.unit_matches)


def test_update_manifest_keeps_every_other_key_byte_for_byte(tmp_path: Path) -> None:
    original = {"status": "complete", "fingerprint": "f", "job": {"name": "j"}, "stats": {"sentences": 3},
                "future_key": [1, 2]}
    run = _run(tmp_path, original)
    written = update_manifest(run, "step2", {"status": "complete", "units": 4})
    assert written == {**original, "step2": {"status": "complete", "units": 4}}
    assert json.loads((run / FILES.manifest).read_text()) == written
    assert list(written) == [*original, "step2"]  # key order kept: the file reads as the stages wrote it
    update_manifest(run, "step2", {"status": "complete", "units": 5})
    assert read_manifest(run).step2 == {"status": "complete", "units": 5}
    assert read_manifest(run).model_extra == {"future_key": [1, 2]}


def test_update_manifest_waits_for_the_lock_and_refuses_a_long_holder(tmp_path: Path) -> None:
    run = _run(tmp_path, {"status": "complete"})
    holder = RunFolder(run)
    holder.lock()
    with pytest.raises(OutputConflictError, match="in use by another running miner process"):
        update_manifest(run, "analysis", {"status": "complete"}, wait_seconds=0.2)
    threading.Timer(0.3, holder.release).start()
    started = time.monotonic()
    update_manifest(run, "analysis", {"status": "complete"}, wait_seconds=10)
    assert time.monotonic() - started >= 0.25
    assert json.loads((run / FILES.manifest).read_text())["analysis"] == {"status": "complete"}


def test_update_manifest_refuses_a_damaged_manifest_and_leaves_it(tmp_path: Path) -> None:
    run = _run(tmp_path, {"status": "complete"})
    (run / FILES.manifest).write_text("{not json")
    with pytest.raises(InputError, match="manifest.json: damaged, not valid JSON"):
        update_manifest(run, "step2", {})
    (run / FILES.manifest).write_text(json.dumps({"job": {}}))
    with pytest.raises(InputError, match="manifest.json: damaged, status: Field required"):
        update_manifest(run, "step2", {})
    assert json.loads((run / FILES.manifest).read_text()) == {"job": {}}
    with pytest.raises(RuntimeError, match="needs the run folder's lock"):
        RunFolder(run).update_manifest("step2", {})


def test_read_rows_takes_rows_by_id_across_shards(tmp_path: Path) -> None:
    corpus_dir = make_corpus(tmp_path / "c", n=250, shard_size=100)
    corpus = load_corpus(corpus_dir)
    ids = np.array([0, 99, 100, 101, 249])
    rows = read_rows(corpus_dir, corpus, ids)
    assert rows["sentence_id"].to_pylist() == ids.tolist()
    assert {"text", "domain", "sentiment"} <= set(rows.column_names)
    reader = CorpusReader(corpus_dir, corpus)
    texts = {}
    for plan in plan_blocks(corpus, 50, None):
        block_ids, block_texts = reader.block(plan)
        texts.update(zip(block_ids.tolist(), block_texts))
    assert rows["text"].to_pylist() == [texts[i] for i in ids.tolist()]
    empty = read_rows(corpus_dir, corpus, np.zeros(0, np.int64))
    assert empty.num_rows == 0 and empty.column_names == ["sentence_id", "text"]


def test_a_damaged_shard_is_one_error_naming_it_and_saying_to_restore_the_corpus(tmp_path: Path) -> None:
    corpus_dir = make_corpus(tmp_path / "c", n=250, shard_size=100)
    corpus = load_corpus(corpus_dir)
    shard = corpus_dir / corpus.shards[1].file
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(DamagedShardError) as caught:
        read_rows(corpus_dir, corpus, np.array([5, 150]))
    assert str(caught.value).startswith(f"{shard}: corrupt or unreadable shard (")
    assert "restore the corpus" in str(caught.value)
    reader = CorpusReader(corpus_dir, corpus)
    with pytest.raises(DamagedShardError) as mining:
        reader.block(plan_blocks(corpus, 100, None)[1])
    assert mining.value.reason == f"{shard}: corrupt shard (SHA-256 differs from the corpus manifest)"
    assert str(mining.value).endswith("restore the corpus (the same inputs and options prepare the same shards) "
                                      "or set skip_corrupt_shards: true")
    again = pickle.loads(pickle.dumps(mining.value))  # crosses process boundaries (Ray) intact
    assert str(again) == str(mining.value) and again.reason == mining.value.reason
