"""Unit moments and the score sample recorded during mining, against the brute-force mining oracle.

Runs in-process (executor='inline'); 1 vs 2 Ray workers and killed runs are in tests/integration/test_mining_ray.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import SampleOptions, load_job
from miner.corpus.prepare import load_corpus
from miner.corpus.store import read_rows
from miner.errors import InputError
from miner.mining.driver import run_mining
from miner.mining.moments import MomentSums
from miner.mining.plan import BlockPlan
from miner.mining.sample import plan_sample, sample_ids
from miner.mining.sketch import BINS, QUANTILES, bin_edges, histogram, score_bins
from miner.probing.examples import hash_uniform
from tests.support.builders import make_corpus, tiny_model, write_job
from tests.support.mining_oracle import all_scores


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n=260, shard_size=100)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "bert", "bert")


def brute_moments(scores: np.ndarray) -> dict[str, np.ndarray]:
    x = scores.astype(np.float64)
    return {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0), "positive_share": (x > 0).mean(0)}


def check_run(run: Path, ids: np.ndarray, scores: np.ndarray, options: SampleOptions) -> None:
    """unit_moments and the sample equal the oracle's scores of every mined sentence."""
    moments = pq.read_table(run / "unit_moments.parquet").to_pandas()
    assert moments.unit_id.tolist() == list(range(scores.shape[1]))
    assert (moments.sentences == len(ids)).all()
    for col, want in brute_moments(scores).items():
        np.testing.assert_allclose(moments[col].to_numpy(), want, rtol=1e-9, atol=1e-12, err_msg=col)
    assert np.array_equal(moments["min"].to_numpy(), scores.min(0).astype(np.float64))  # exact: no arithmetic
    rows = pq.read_table(run / "unit_histograms.parquet").to_pandas()
    hist = np.zeros((scores.shape[1], BINS), np.int64)
    hist[rows.unit_id.to_numpy(), rows.bin.to_numpy()] = rows["count"].to_numpy()
    assert np.array_equal(hist, histogram(scores))  # every score in its bin, exactly
    dist = pq.read_table(run / "unit_distribution.parquet").to_pandas()
    edges = bin_edges()
    for q in QUANTILES:
        exact = np.quantile(scores, q, axis=0, method="inverted_cdf")
        got = dist[f"q{round(q * 1000):03d}"].to_numpy()
        bins = score_bins(exact.astype(np.float32))
        assert np.array_equal(got, edges[bins].mean(axis=1)), q  # the midpoint of the bin holding the quantile
    sentences = pq.read_table(run / "sample_sentences.parquet").to_pandas()
    h = hash_uniform(options.seed, "sample", ids)
    want_ids = np.sort(ids[np.lexsort((ids, h))[: options.sentences]])
    assert sentences.sentence_id.tolist() == want_ids.tolist()
    assert sentences.row.tolist() == list(range(len(want_ids)))
    matrix = np.load(run / "sample" / "scores.npy")
    assert matrix.dtype == np.float16 and matrix.shape == (len(want_ids), scores.shape[1])
    pos = {int(s): i for i, s in enumerate(ids)}
    assert np.array_equal(matrix, scores[[pos[int(s)] for s in want_ids]].astype(np.float16))
    assert sorted(p.name for p in (run / "sample").iterdir()) == ["scores.npy"]  # the shards are gone
    corpus_dir = Path(json.loads((run / "manifest.json").read_text())["corpus"]["path"])
    rows = read_rows(corpus_dir, load_corpus(corpus_dir), want_ids)
    assert sentences.text.tolist() == rows["text"].to_pylist()
    exemplars = pq.read_table(run / "unit_exemplars.parquet").to_pandas()
    assert set(exemplars.unit_id) == set(range(scores.shape[1])) and set(exemplars.sentence_id) <= set(want_ids)


@pytest.mark.parametrize("native_kernel", [True, False])
def test_moments_and_sample_equal_brute_force(tmp_path: Path, corpus: Path, model: Path, native_kernel: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if not native_kernel:
        monkeypatch.setenv("MINER_NATIVE", "0")
    options = SampleOptions(sentences=37, seed=5)
    job, base = load_job(write_job(tmp_path / "job.yaml", name="m", model=str(model), corpus=str(corpus),
                                   output="run", sites=["hidden", "mlp"], top_n=5, block_size=64, batch_size=8,
                                   sample=options.model_dump()))
    manifest = run_mining(job, base, executor="inline")
    ids, scores, _, _ = all_scores(job, base)
    check_run(Path(manifest["run_dir"]), ids, scores, options)
    assert manifest["sample"].pop("finish_seconds") >= 0
    assert manifest["timings"]["sample_seconds"] > 0 and manifest["timings"]["moments_seconds"] > 0
    assert manifest["sample"] == {"sentences": 37, "seed": 5, "rows": 37, "units": scores.shape[1],
                                  "dtype": "float16", "file": "sample/scores.npy", "planned_rows": 37}
    assert {"unit_moments", "unit_distribution", "unit_histograms", "sample_sentences"} <= set(manifest["tables"])


def test_max_sentences_samples_among_planned(tmp_path: Path, corpus: Path, model: Path) -> None:
    options = SampleOptions(sentences=500, seed=1)  # more than planned: every planned sentence
    job, base = load_job(write_job(tmp_path / "job.yaml", name="m", model=str(model), corpus=str(corpus),
                                   output="run", top_n=3, max_sentences=130, block_size=50,
                                   sample=options.model_dump()))
    manifest = run_mining(job, base, executor="inline")
    ids, scores, _, _ = all_scores(job, base)
    assert len(ids) == 130
    check_run(Path(manifest["run_dir"]), ids, scores, options)
    assert manifest["sample"]["rows"] == 130


def test_resume_gives_identical_moments_and_sample(tmp_path: Path, corpus: Path, model: Path) -> None:
    common = {"model": str(model), "corpus": str(corpus), "top_n": 4, "block_size": 40, "checkpoint_seconds": 0,
              "sample": {"sentences": 90, "seed": 2}}
    full = Path(run_mining(*load_job(write_job(tmp_path / "a.yaml", name="a", output="a", **common)),
                           executor="inline")["run_dir"])
    job, base = load_job(write_job(tmp_path / "b.yaml", name="b", output="b", **common))
    assert run_mining(job, base, executor="inline", stop_after_blocks=3)["status"] == "incomplete"
    shards = sorted(p.name for p in (tmp_path / "b" / "sample").iterdir())
    assert shards and all(name.startswith("block-00000") for name in shards)
    assert int(shards[-1][6:12]) < 3  # only merged blocks have shards
    # a shard of a block past the checkpoint (written by a session killed before its checkpoint) is rewritten
    (tmp_path / "b" / "sample" / "block-000004.npz").write_bytes(b"stale")
    resumed = Path(run_mining(job, base, executor="inline")["run_dir"])
    for table in ("unit_moments", "unit_distribution", "unit_histograms", "sample_sentences", "unit_exemplars"):
        assert pq.read_table(full / f"{table}.parquet").equals(pq.read_table(resumed / f"{table}.parquet")), table
    assert (full / "sample" / "scores.npy").read_bytes() == (resumed / "sample" / "scores.npy").read_bytes()


def test_early_stop_samples_only_mined_sentences(tmp_path: Path, corpus: Path, model: Path) -> None:
    options = SampleOptions(sentences=200, seed=0)
    job, base = load_job(write_job(tmp_path / "job.yaml", name="e", model=str(model), corpus=str(corpus),
                                   output="run", top_n=2, block_size=20, sample=options.model_dump(),
                                   early_stop={"max_update_rate": 0.99, "patience": 1}))
    manifest = run_mining(job, base, executor="inline")
    assert manifest["blocks"]["stopped_early"]
    mined = manifest["stats"]["sentences"]
    run = Path(manifest["run_dir"])
    moments = pq.read_table(run / "unit_moments.parquet").to_pandas()
    assert (moments.sentences == mined).all()
    sampled = pq.read_table(run / "sample_sentences.parquet")["sentence_id"].to_numpy()
    planned = np.concatenate(list(plan_sample(
        [BlockPlan(i, "s", 0, 20, 20 * i) for i in range(13)], options).values()))
    assert len(sampled) == int((planned < mined).sum()) and (sampled < mined).all()  # ids 0.. in block order
    assert manifest["sample"]["rows"] == len(sampled) < 200


def test_sample_off(tmp_path: Path, corpus: Path, model: Path) -> None:
    job, base = load_job(write_job(tmp_path / "job.yaml", name="o", model=str(model), corpus=str(corpus),
                                   output="run", top_n=2, max_sentences=40, sample={"sentences": 0}))
    manifest = run_mining(job, base, executor="inline")
    run = Path(manifest["run_dir"])
    assert manifest["sample"]["rows"] == 0 and manifest["sample"]["file"] is None
    assert not (run / "sample_sentences.parquet").exists() and not (run / "sample").exists()
    assert (run / "unit_moments.parquet").exists()


def test_checkpoint_without_moments_is_one_error(tmp_path: Path, corpus: Path, model: Path) -> None:
    common = {"model": str(model), "corpus": str(corpus), "top_n": 4, "block_size": 40, "checkpoint_seconds": 0}
    job, base = load_job(write_job(tmp_path / "b.yaml", name="b", output="b", **common))
    run_mining(job, base, executor="inline", stop_after_blocks=2)
    (tmp_path / "b" / "checkpoint" / "moments.npz").unlink()
    with pytest.raises(InputError, match="moments.npz: damaged checkpoint") as info:
        run_mining(job, base, executor="inline")
    assert "\n" not in str(info.value)
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["next_block"] == 2


def test_sample_ids_are_the_smallest_hashes() -> None:
    ids = np.arange(1000, 3000, dtype=np.int64)
    options = SampleOptions(sentences=100, seed=9)
    got = sample_ids(ids, options)
    h = hash_uniform(9, "sample", ids)
    assert got.tolist() == np.sort(ids[np.argsort(h)[:100]]).tolist()
    plans = [BlockPlan(0, "a", 0, 700, 1000), BlockPlan(1, "a", 700, 1300, 1700)]
    per_block = plan_sample(plans, options)
    assert np.concatenate([per_block[0], per_block[1]]).tolist() == got.tolist()
    assert (per_block[0] < 1700).all() and (per_block[1] >= 1700).all()


def test_moment_sums_merge_in_any_split() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    whole = MomentSums.of_scores(x)
    parts = MomentSums.empty(4)
    for lo in range(0, 50, 7):
        parts.add(MomentSums.of_scores(x[lo : lo + 7]))
    a, b = whole.table().to_pandas(), parts.table().to_pandas()
    for col in ("mean", "std"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-12)
    for col in ("min", "max", "positive_share", "sentences"):
        assert a[col].tolist() == b[col].tolist()
    assert MomentSums.empty(3).table()["mean"].null_count == 0  # NaN, not null, with nothing mined


def test_resume_of_a_checkpoint_without_histograms_writes_no_distribution(tmp_path: Path, corpus: Path,
                                                                          model: Path) -> None:
    """A run checkpointed by a version that kept no histograms resumes; its moments are whole, but its
    histogram would miss the first blocks, so no unit_distribution or unit_histograms is written (a warning
    says to mine again)."""
    common = {"model": str(model), "corpus": str(corpus), "top_n": 4, "block_size": 40, "checkpoint_seconds": 0}
    full = Path(run_mining(*load_job(write_job(tmp_path / "a.yaml", name="a", output="a", **common)),
                           executor="inline")["run_dir"])
    job, base = load_job(write_job(tmp_path / "b.yaml", name="b", output="b", **common))
    assert run_mining(job, base, executor="inline", stop_after_blocks=3)["status"] == "incomplete"
    path = tmp_path / "b" / "checkpoint" / "moments.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "hist"}
    np.savez(path, **arrays)
    manifest = run_mining(job, base, executor="inline")
    run = Path(manifest["run_dir"])
    assert not (run / "unit_distribution.parquet").exists() and "unit_distribution" not in manifest["tables"]
    assert pq.read_table(run / "unit_moments.parquet").equals(pq.read_table(full / "unit_moments.parquet"))
