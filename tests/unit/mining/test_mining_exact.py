"""Mining equals its brute-force twin (score everything, sort everything) on tiny random models.

Runs in-process (executor='inline'); Ray, MiniLM and kill/resume are in tests/integration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from miner.config import load_job
from miner.corpus.prepare import load_corpus
from miner.errors import ConfigError, InputError, OutputConflictError
from miner.mining import native
from miner.mining.driver import run_mining
from miner.mining.plan import plan_blocks
from miner.model.loading import load_model, reinitialize_except_embeddings
from tests.support.builders import FAMILY_CONFIGS, make_corpus, tiny_model, write_job
from tests.support.mining_oracle import all_scores, check_against_oracle


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n=260, shard_size=100)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "gpt2", "llama", *FAMILY_CONFIGS])
def test_queues_equal_brute_force(tmp_path: Path, corpus: Path, arch: str) -> None:
    model = tiny_model(tmp_path / arch, arch)
    job = write_job(tmp_path / "job.yaml", name=f"t-{arch}", model=str(model), corpus=str(corpus), output="run",
                    sites=["hidden", "mlp"], top_n=7, block_size=64, batch_size=8, checkpoint_seconds=0)
    manifest = check_against_oracle(job)
    assert manifest["units"] == 2 * 32 + 2 * (128 if arch in ("bert", "roberta", "distilbert", "gpt2") else 96)
    assert manifest["model"]["attention"] == ("eager" if arch in ("deberta-v2", "gemma2") else "sdpa")
    stats = manifest["stats"]  # every batch scored by the compiled kernel where it builds (as on CI)
    assert stats["batches"] > 0 and stats["kernel_batches"] == (stats["batches"] if native.available() else 0)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_bfloat16_on_the_cpu_equals_its_brute_force_twin(tmp_path: Path, corpus: Path, arch: str) -> None:
    """`dtype: bfloat16` on the CPU: the forward in bf16, its activations read by the compiled kernel as they are
    (scores and queues in float32), against the oracle's bf16 forward of the same batches."""
    model = tiny_model(tmp_path / arch, arch)
    job = write_job(tmp_path / "job.yaml", name=f"t-{arch}-bf16", model=str(model), corpus=str(corpus),
                    output="run", sites=["hidden", "mlp"], top_n=7, block_size=64, batch_size=8, checkpoint_seconds=0,
                    dtype="bfloat16")
    stats = check_against_oracle(job, "cpu", "bfloat16")["stats"]
    assert stats["kernel_batches"] == (stats["batches"] if native.available() else 0)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_torch_path_queues_equal_brute_force(tmp_path: Path, corpus: Path, arch: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch operations (GPU, other dtypes, machines without a C compiler) against the same oracle, which
    then scores with them too."""
    monkeypatch.setenv("MINER_NATIVE", "0")
    model = tiny_model(tmp_path / arch, arch)
    job = write_job(tmp_path / "job.yaml", name=f"t-{arch}-torch", model=str(model), corpus=str(corpus),
                    output="run", sites=["hidden", "mlp"], top_n=7, block_size=64, batch_size=8, checkpoint_seconds=0)
    assert check_against_oracle(job)["stats"]["kernel_batches"] == 0


@pytest.mark.parametrize("arch,top_n,sites", [("bert", 7, ["hidden", "mlp"]), ("gpt2", 40, ["hidden"])])
def test_sync_free_loop_equals_brute_force(tmp_path: Path, corpus: Path, arch: str, top_n: int, sites: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync-free loop (CUDA's default), run on the CPU, against the oracle; with a token budget, so that
    batches differ in rows, and a window that fills (a flush inside the block)."""
    monkeypatch.setenv("MINER_NATIVE", "0")  # the oracle then scores with the torch operations the loop uses
    monkeypatch.setenv("MINER_SYNC_FREE", "1")
    model = tiny_model(tmp_path / arch, arch)
    job = write_job(tmp_path / "job.yaml", name=f"t-{arch}-sync-free", model=str(model), corpus=str(corpus),
                    output="run", sites=sites, top_n=top_n, block_size=100, batch_size=16, batch_tokens=200,
                    checkpoint_seconds=0)
    stats = check_against_oracle(job)["stats"]
    assert stats["batches"] > 0 and stats["sync_free_batches"] == stats["batches"]


def test_empty_block_gives_no_candidates(tmp_path: Path) -> None:
    from miner.mining.block_miner import BlockMiner
    from miner.model.layout import unit_layout

    loaded = load_model(tiny_model(tmp_path / "m", "bert"))
    miner = BlockMiner(loaded, unit_layout(loaded.config, ["hidden"], None), 3)
    result = miner.mine_block(0, np.zeros(0, dtype=np.int64), [], None)
    assert result.stats.sentences == 0 and all(len(v["units"]) == 0 for v in result.directions.values())


@pytest.mark.parametrize("top_n", [5, 60])  # few candidates per batch (per-candidate peaks) and many (dense)
def test_peaks_are_the_extreme_real_token(tmp_path: Path, corpus: Path, top_n: int) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    job_path = write_job(tmp_path / "job.yaml", name="peaks", model=str(model), corpus=str(corpus), output="run",
                         top_n=top_n, block_size=100, batch_size=16)
    job, base = load_job(job_path)
    run = Path(run_mining(job, base, executor="inline")["run_dir"])
    ids, _, pmax, pmin = all_scores(job, base)
    (peak_max, pos_max), (peak_min, pos_min) = ([np.concatenate(v) for v in zip(*p)] for p in (pmax, pmin))
    row = {int(s): i for i, s in enumerate(ids)}
    top = pq.read_table(run / "top_sentences.parquet").to_pandas()
    sentences = pq.read_table(run / "sentences.parquet").to_pandas().set_index("sentence_id")
    for r in top.itertuples():
        ref, pos = (peak_max, pos_max) if r.direction == "top" else (peak_min, pos_min)
        assert r.peak_score == ref[row[r.sentence_id], r.unit_id]
        assert r.peak_position == pos[row[r.sentence_id], r.unit_id]  # the first of equal extremes
        assert 0 < r.peak_position < sentences.loc[r.sentence_id, "n_model_tokens"] - 1  # never [CLS]/[SEP]
        assert isinstance(r.peak_token, str) and r.peak_token not in ("[CLS]", "[SEP]", "[PAD]")


def test_corpus_smaller_than_n_and_layer_subset(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "gpt2", layers=3)
    job_path = write_job(tmp_path / "job.yaml", name="small", model=str(model), corpus=str(corpus), output="run",
                         top_n=50, max_sentences=30, layers=[0, 3], bottom=False)
    job, base = load_job(job_path)
    manifest = run_mining(job, base, executor="inline")
    run = Path(manifest["run_dir"])
    top = pq.read_table(run / "top_sentences.parquet").to_pandas()
    assert top.groupby("unit_id").size().eq(30).all()
    assert set(top.direction) == {"top"}
    units = pq.read_table(run / "units.parquet").to_pandas()
    assert sorted(set(units.layer)) == [0, 3] and len(units) == 64


def test_truncation_is_recorded(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    job_path = write_job(tmp_path / "job.yaml", name="trunc", model=str(model), corpus=str(corpus), output="run",
                         top_n=5, max_length=8)
    manifest = check_against_oracle(job_path)
    sentences = pq.read_table(Path(manifest["run_dir"]) / "sentences.parquet").to_pandas()
    assert manifest["stats"]["truncated"] > 0
    assert sentences.truncated.any() and sentences.n_model_tokens.max() == 8


def test_convergence_counts_every_entry(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    job_path = write_job(tmp_path / "job.yaml", name="conv", model=str(model), corpus=str(corpus), output="run",
                         top_n=10, block_size=50)
    manifest = run_mining(*load_job(job_path), executor="inline")
    conv = pq.read_table(Path(manifest["run_dir"]) / "convergence.parquet").to_pandas()
    overall = conv[(conv.site == "all") & (conv.direction == "top")].sort_values("block")
    assert overall.updates.iloc[0] == 10 * manifest["units"]  # the first block fills every queue
    assert overall.sentences_seen.tolist() == [50, 100, 150, 200, 250, 260]
    per_layer = conv[(conv.site != "all") & (conv.direction == "top")].groupby("block").updates.sum()
    assert per_layer.tolist() == overall.updates.tolist()
    assert (overall.update_rate <= 1).all()


def test_early_stop_when_converged(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    job_path = write_job(tmp_path / "job.yaml", name="early", model=str(model), corpus=str(corpus), output="run",
                         top_n=2, block_size=20, early_stop={"max_update_rate": 0.99, "patience": 1})
    manifest = run_mining(*load_job(job_path), executor="inline")
    assert manifest["blocks"]["stopped_early"] and manifest["blocks"]["merged"] < manifest["blocks"]["planned"]


def test_resume_after_stop_is_identical(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    common = {"model": str(model), "corpus": str(corpus), "top_n": 6, "block_size": 40, "checkpoint_seconds": 0}
    full = run_mining(*load_job(write_job(tmp_path / "a.yaml", name="a", output="a", **common)), executor="inline")
    job, base = load_job(write_job(tmp_path / "b.yaml", name="b", output="b", **common))
    partial = run_mining(job, base, executor="inline", stop_after_blocks=3)
    assert partial["status"] == "incomplete" and partial["next_block"] == 3
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["next_block"] == 3
    resumed = run_mining(job, base, executor="inline")
    for table in ("top_sentences", "sentences", "convergence", "units"):
        a = pq.read_table(Path(full["run_dir"]) / f"{table}.parquet")
        b = pq.read_table(Path(resumed["run_dir"]) / f"{table}.parquet")
        assert a.equals(b), table


def test_blocks_never_cross_shards(corpus: Path) -> None:
    m = load_corpus(corpus)
    plans = plan_blocks(m, 64, None)
    assert sum(p.rows for p in plans) == 260
    assert [(p.shard, p.row_start, p.rows) for p in plans][:3] == [
        ("shard-00000.parquet", 0, 64), ("shard-00000.parquet", 64, 36), ("shard-00001.parquet", 0, 64)]
    assert [p.rows for p in plan_blocks(m, 64, 70)] == [64, 6]


def test_random_init_changes_all_but_embeddings_reproducibly() -> None:
    from miner.model.loading import bundled_minilm

    a = load_model(bundled_minilm())
    b = load_model(bundled_minilm(), init="random", init_seed=3)
    c = load_model(bundled_minilm(), init="random", init_seed=3)
    pa, pb, pc = dict(a.model.named_parameters()), dict(b.model.named_parameters()), dict(c.model.named_parameters())
    for name in pa:
        assert torch.equal(pb[name], pc[name]), name
        if name.startswith("embeddings."):
            assert torch.equal(pa[name], pb[name]), name
        elif not name.startswith("pooler."):  # the pooler is not in the checkpoint (zeros) and feeds no unit
            assert not torch.equal(pa[name], pb[name]), name
    changed = reinitialize_except_embeddings(a.model, 3)
    assert all(not n.startswith("embeddings.") for n in changed) and len(changed) == len(pa) - 5


def test_bad_jobs_fail_with_one_line(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    ok = {"name": "bad", "model": str(model), "corpus": str(corpus), "output": "run"}

    def fails(exc: type, match: str, **fields: object) -> None:
        path = write_job(tmp_path / "job.yaml", **{**ok, **fields})
        with pytest.raises(exc, match=match) as info:
            run_mining(*load_job(path), executor="inline")
        assert "\n" not in str(info.value)

    fails(ConfigError, "top_n", top_n=0)
    fails(ConfigError, "batch_size", batch_size=-1)
    fails(ConfigError, "sites", sites=["attention"])
    fails(ConfigError, "layers: 9 is out of range", layers=[9])
    fails(ConfigError, "no config.json", model=str(tmp_path))
    fails(ConfigError, "no such folder", model=str(tmp_path / "nope"))
    fails(ConfigError, "Extra inputs|extra", colour="blue")
    fails(InputError, "not a prepared corpus", corpus=str(tmp_path))
    (tmp_path / "notyaml.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_job(tmp_path / "notyaml.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(tmp_path / "broken.yaml")


def test_pickle_weights_refused_unless_allowed(tmp_path: Path, corpus: Path) -> None:
    from transformers import BertModel

    folder = tiny_model(tmp_path / "m", "bert")
    model = BertModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    path = write_job(tmp_path / "job.yaml", name="pk", model=str(folder), corpus=str(corpus), output="run", top_n=3,
                     max_sentences=20)
    with pytest.raises(ConfigError, match="pickle"):
        run_mining(*load_job(path), executor="inline")


def test_output_holding_another_job_is_refused_and_kept(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    first = run_mining(*load_job(write_job(tmp_path / "a.yaml", name="a", model=str(model), corpus=str(corpus),
                                           output="run", top_n=3, max_sentences=40)), executor="inline")
    before = (Path(first["run_dir"]) / "top_sentences.parquet").read_bytes()
    other = write_job(tmp_path / "b.yaml", name="b", model=str(model), corpus=str(corpus), output="run", top_n=4,
                      max_sentences=40)
    with pytest.raises(OutputConflictError, match="different job"):
        run_mining(*load_job(other), executor="inline")
    assert (Path(first["run_dir"]) / "top_sentences.parquet").read_bytes() == before
    again = run_mining(*load_job(tmp_path / "a.yaml"), executor="inline")
    assert again["completed"] == first["completed"]  # already complete: nothing redone


def _entries(found) -> set[tuple[int, int, int]]:
    """A block's candidates as a set of (row, key, payload), whatever their form (dense or flat)."""
    flat = found.sparse()
    return set(zip(flat.units.tolist(), flat.keys.tolist(), flat.payload.tolist()))


@pytest.mark.parametrize("nan", [False, True])
def test_sync_free_blocks_equal_the_exact_loop(tmp_path: Path, corpus: Path, nan: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Block by block (floors rising, a window that flushes inside the block, a sample): the sync-free loop's
    candidates, moment sums and sample rows equal the exact loop's. A block with a NaN activation is mined
    again by the exact loop (its semantics)."""
    from miner.corpus.prepare import load_corpus
    from miner.corpus.store import CorpusReader
    from miner.mining.block_miner import BlockMiner
    from miner.mining.plan import plan_blocks
    from miner.mining.topn import TopNQueues
    from miner.model.layout import unit_layout

    monkeypatch.setenv("MINER_NATIVE", "0")
    loaded = load_model(tiny_model(tmp_path / "m", "bert"))
    if nan:
        with torch.no_grad():
            loaded.model.encoder.layer[1].output.dense.bias[3] = float("nan")
    layout = unit_layout(loaded.config, ["hidden", "mlp"], None)
    miners = {free: BlockMiner(loaded, layout, 9, window=16, batch_size=8, sync_free=free, batch_tokens=120)
              for free in (True, False)}
    queue = TopNQueues(2 * layout.n_units, 9, loaded.device)
    reader = CorpusReader(corpus, load_corpus(corpus))
    for plan in plan_blocks(load_corpus(corpus), 60, None):
        ids, texts = reader.block(plan)
        floor = queue.threshold()
        sample = ids[::7].copy()
        (free_found, free), (exact_found, exact) = (
            miners[f].mine_prepared(plan.index, miners[f].prepare(ids, texts), floor, sample) for f in (True, False))
        assert free.stats.sync_free_batches == (0 if nan else free.stats.batches) and free.stats.batches > 1
        assert _entries(free_found) == _entries(exact_found)
        for f in ("count", "total", "squares", "low", "high", "positive"):
            assert np.array_equal(getattr(free.moments, f), getattr(exact.moments, f), equal_nan=True), f
        assert np.array_equal(free.sample, exact.sample, equal_nan=True)
        queue.merge(exact_found)
