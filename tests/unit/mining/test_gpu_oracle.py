"""Mining on CUDA equals its brute-force twin computed on CUDA in the same dtype (float32 and bfloat16).

Run with `pytest --device cuda tests/unit/mining/test_gpu_oracle.py`; skipped with a reason elsewhere. The
oracle (tests/support/mining_oracle.py) scores every sentence with the same batches on the same device and
sorts everything; the miner's queues (ids, order, bit-exact scores) and peak tokens must match it. bfloat16
activations tie often, so the peaks also check the first-position-on-ties rule of the CUDA reductions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import load_job
from miner.mining.hardware import disable_tf32
from tests.support.builders import FAMILY_CONFIGS, make_corpus, tiny_model, write_job
from tests.support.mining_oracle import all_scores, check_against_oracle

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n=260, shard_size=100)


@pytest.fixture
def cuda(device: str) -> str:
    """The CUDA device the tests mine on; skipped unless pytest runs with --device cuda."""
    if device != "cuda":
        pytest.skip("GPU oracle tests run with --device cuda")
    disable_tf32()  # as the mining actors do
    return device


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "gpt2", "llama", *FAMILY_CONFIGS])
def test_cuda_queues_equal_cuda_oracle(tmp_path: Path, corpus: Path, cuda: str, arch: str, dtype: str) -> None:
    model = tiny_model(tmp_path / arch, arch)
    job = write_job(tmp_path / "job.yaml", name=f"gpu-{arch}-{dtype}", model=str(model), corpus=str(corpus),
                    output="run", sites=["hidden", "mlp"], top_n=7, block_size=64, batch_size=8,
                    checkpoint_seconds=0, device=cuda, dtype=dtype)
    manifest = check_against_oracle(job, cuda, dtype)
    assert manifest["stats"]["kernel_batches"] == 0  # the compiled kernel is CPU-only: the torch path ran


@pytest.mark.parametrize("top_n", [5, 60])  # few candidates per batch (per-candidate peaks) and many (dense)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_peaks_are_the_first_extreme_real_token(tmp_path: Path, corpus: Path, cuda: str, dtype: str,
                                                     top_n: int) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    job_path = write_job(tmp_path / "job.yaml", name="gpu-peaks", model=str(model), corpus=str(corpus),
                         output="run", top_n=top_n, block_size=100, batch_size=16, device=cuda, dtype=dtype)
    job, base = load_job(job_path)
    manifest = check_against_oracle(job_path, cuda, dtype)
    ids, _, pmax, pmin = all_scores(job, base, cuda, dtype)
    (peak_max, pos_max), (peak_min, pos_min) = ([np.concatenate(v) for v in zip(*p)] for p in (pmax, pmin))
    row = {int(s): i for i, s in enumerate(ids)}
    top = pq.read_table(Path(manifest["run_dir"]) / "top_sentences.parquet").to_pandas()
    for r in top.itertuples():
        ref, pos = (peak_max, pos_max) if r.direction == "top" else (peak_min, pos_min)
        assert r.peak_score == ref[row[r.sentence_id], r.unit_id], (r.direction, r.unit_id, r.sentence_id)
        assert r.peak_position == pos[row[r.sentence_id], r.unit_id], (r.direction, r.unit_id, r.sentence_id)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_sync_free_loop_never_waits_and_equals_the_exact_loop(tmp_path: Path, corpus: Path, cuda: str,
                                                                  dtype: str) -> None:
    """The sync-free loop under torch.cuda.set_sync_debug_mode('error') (any host sync inside the batch loop
    raises) gives the exact loop's candidates, moment sums and sample rows, block by block."""
    from miner.corpus.prepare import load_corpus
    from miner.corpus.store import CorpusReader
    from miner.mining.block_miner import BlockMiner
    from miner.mining.plan import plan_blocks
    from miner.mining.topn import TopNQueues
    from miner.model.layout import unit_layout
    from miner.model.loading import load_model

    loaded = load_model(tiny_model(tmp_path / "m", "bert"), cuda, dtype)
    layout = unit_layout(loaded.config, ["hidden", "mlp"], None)
    miners = {free: BlockMiner(loaded, layout, 9, window=16, batch_size=8, sync_free=free, batch_tokens=120)
              for free in (True, False)}
    miners[True].sync_debug = "error"
    queue = TopNQueues(2 * layout.n_units, 9, loaded.device)
    manifest = load_corpus(corpus)
    reader = CorpusReader(corpus, manifest)
    for plan in plan_blocks(manifest, 60, None):
        ids, texts = reader.block(plan)
        floor = queue.threshold()
        sample = ids[::7].copy()
        (free_found, free), (exact_found, exact) = (
            miners[f].mine_prepared(plan.index, miners[f].prepare(ids, texts), floor, sample) for f in (True, False))
        assert free.stats.sync_free_batches == free.stats.batches > 1
        flat = [f.sparse() for f in (free_found, exact_found)]
        assert [set(zip(f.units.tolist(), f.keys.tolist(), f.payload.tolist())) for f in flat][0] == \
            set(zip(flat[1].units.tolist(), flat[1].keys.tolist(), flat[1].payload.tolist()))
        for f in ("count", "total", "squares", "low", "high", "positive"):
            assert np.array_equal(getattr(free.moments, f), getattr(exact.moments, f)), f
        assert np.array_equal(free.sample, exact.sample)
        queue.merge(exact_found)
