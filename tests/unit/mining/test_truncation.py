"""Mining only shallow layers computes only the blocks they need, with values identical to the full model."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from miner.config import load_job
from miner.mining.driver import run_mining
from miner.mining.executors import WorkerConfig, build_block_miner
from miner.model.layout import transformer_blocks
from tests.support.builders import make_corpus, tiny_model, write_job
from tests.support.mining_oracle import all_scores, expected_queues


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_shallow_layers_equal_full_model(tmp_path: Path, arch: str) -> None:
    corpus = make_corpus(tmp_path / "corpus", n=120, shard_size=60)
    model = tiny_model(tmp_path / "m", arch, layers=4)
    job_path = write_job(tmp_path / "job.yaml", name="t", model=str(model), corpus=str(corpus), output="run",
                         top_n=6, block_size=40, layers=[1, 2], sites=["hidden", "mlp"])
    job, base = load_job(job_path)
    miner = build_block_miner(WorkerConfig(str(model), job, 1))
    assert len(transformer_blocks(miner.loaded.model)) == 3  # layers 1-2 need blocks 1-3, not 4
    miner.close()
    manifest = run_mining(job, base, executor="inline")
    ids, scores, _, _ = all_scores(job, base)  # the oracle runs the whole, untruncated model
    top = pq.read_table(Path(manifest["run_dir"]) / "top_sentences.parquet").to_pandas()
    row_of = {int(i): k for k, i in enumerate(ids)}
    for direction in ("top", "bottom"):
        expected = expected_queues(ids, scores, 6, direction)
        got = top[top.direction == direction].sort_values(["unit_id", "rank"])
        for unit, want in enumerate(expected):
            rows = got[got.unit_id == unit]
            assert rows.sentence_id.tolist() == want.tolist()
            assert rows.score.tolist() == [float(scores[row_of[int(i)], unit]) for i in want]  # bit-identical
