"""Lanes: per-worker queues merged at the end equal one queue; lane order, epochs, early stop and resume.

In-process (executor='inline' runs the job's `workers` lanes in this process, as Ray actors would); Ray and
killed actors are in tests/integration/test_mining_ray.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from miner.config import load_job
from miner.mining.block_miner import BlockMiner
from miner.mining.driver import run_mining
from miner.mining.lanes import (
    LaneBlock,
    LaneMiner,
    LaneRestore,
    LaneSave,
    lane_task,
    merge_lane_files,
    read_lane,
    save_lane,
)
from miner.mining.topn import SENTINEL, Candidates, TopNQueues, encode_keys
from miner.model.layout import unit_layout
from miner.model.loading import load_model
from tests.support.builders import make_corpus, tiny_model, write_job
from tests.support.mining_oracle import all_scores, lane_updates

TOP_TABLES = ("top_sentences", "sentences", "units", "unit_moments", "unit_distribution",
          "unit_histograms", "sample_sentences", "unit_exemplars")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n=300, shard_size=100)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model"), "bert")


def table(run: Path, name: str):
    return pq.read_table(run / f"{name}.parquet")


def same(a: Path, b: Path, names: tuple[str, ...]) -> None:
    for name in names:
        assert table(a, name).equals(table(b, name)), name


def test_merged_lane_files_equal_one_queue_over_everything(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows, n, lanes = 7, 5, 3  # rows = 2 directions x 3 units + ... : use D=1 with 7 units
    scores = rng.integers(-3, 3, size=(rows, 40)).astype(np.float32)  # many ties: the ids decide
    ids = np.arange(40)
    files = []
    for lane in range(lanes):
        q = TopNQueues(rows, n)
        mine = ids[ids % lanes == lane][: 4 + 3 * lane]  # lane 0 holds fewer than n entries in some rows
        keys = encode_keys(torch.from_numpy(scores[:, mine]), torch.from_numpy(mine))
        q.merge(Candidates(None, keys, keys.clone()))
        save_lane(tmp_path / f"lane-{lane}", q.state(), {"lane": lane, "seq": 0})
        files.append(tmp_path / f"lane-{lane}")
    merged = merge_lane_files(files, ("top",), rows, n, chunk_units=2)["top"]
    used = np.concatenate([ids[ids % lanes == lane][: 4 + 3 * lane] for lane in range(lanes)])
    for u in range(rows):
        want = sorted(encode_keys(torch.from_numpy(scores[u, used]), torch.from_numpy(used)).tolist(), reverse=True)[:n]
        got = sorted((k for k in merged.keys[u].tolist() if k != SENTINEL), reverse=True)
        assert got == want
        assert sorted(merged.payload[u].tolist()) != [] and set(merged.payload[u].tolist()) >= set(want)
    keys, payload, meta = read_lane(files[0])
    assert keys.shape == (rows, n) and meta["lane"] == 0


def test_damaged_lane_file_is_one_error_naming_it(tmp_path: Path) -> None:
    q = TopNQueues(3, 2)
    save_lane(tmp_path / "lane-000", q.state(), {"lane": 0, "seq": 0})
    (tmp_path / "lane-000.keys.npy").write_bytes(b"not numpy")
    from miner.errors import InputError

    with pytest.raises(InputError, match="lane-000.keys.npy: damaged lane checkpoint"):
        read_lane(tmp_path / "lane-000")


def test_lane_runs_tasks_in_sequence_whatever_the_arrival_order(tmp_path: Path, model: Path) -> None:
    loaded = load_model(model)
    layout = unit_layout(loaded.config, ["hidden"], None)
    texts = [f"sentence number {i} about {'cats' if i % 3 else 'dogs'} and more" for i in range(30)]
    blocks = [LaneBlock(0, 0, s, s, np.arange(10 * s, 10 * s + 10), texts[10 * s : 10 * s + 10]) for s in range(3)]

    def run(order: list[int], threaded: bool) -> tuple[list, dict]:
        lane = LaneMiner(BlockMiner(loaded, layout, 4, window=8, batch_size=4))
        lane_task(lane, LaneRestore(0, 0, 0, []))
        out: dict[int, object] = {}
        if threaded:
            threads = [threading.Thread(target=lambda b=blocks[i]: out.__setitem__(b.seq, lane_task(lane, b)))
                       for i in order]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        else:
            for i in order:
                out[i] = lane_task(lane, blocks[i])
        assert lane.queues is not None
        return [out[i].gains.tolist() for i in range(3)], lane.queues.state()  # type: ignore[attr-defined]

    gains, state = run([0, 1, 2], threaded=False)
    gains2, state2 = run([2, 0, 1], threaded=True)
    assert gains == gains2 and all(np.array_equal(state[k], state2[k]) for k in state)

    lane = LaneMiner(BlockMiner(loaded, layout, 4))
    lane_task(lane, LaneRestore(0, 1, 0, []))
    assert lane_task(lane, blocks[0]).stale  # an older epoch's task does nothing
    saved = lane_task(lane, LaneSave(0, 1, 0, str(tmp_path / "ck" / "lane-000")))
    assert saved.saved and not saved.stale and read_lane(tmp_path / "ck" / "lane-000")[2]["seq"] == 0


def test_actor_tasks_arriving_together_before_the_restore_share_one_lane(tmp_path: Path, model: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray actor's body (in this process): its lane exists before any task runs, so tasks that arrive at
    once on the actor's threads, the restore last, all wait on the same lane and run in sequence (a lane made
    by the first task to arrive could be made twice, and tasks waiting on the dropped one hung)."""
    from miner.config import JobSpec
    from miner.mining.executors import MiningActorImpl, WorkerConfig

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # the actor turns it on; restored after the test
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    job = JobSpec(name="a", model=str(model), corpus=tmp_path, output=tmp_path / "o", sites=["hidden"], top_n=4,
                  batch_size=4, threads_per_worker=1)
    texts = [f"sentence number {i} about {'cats' if i % 3 else 'dogs'} and more" for i in range(30)]
    blocks = [LaneBlock(0, 0, s, s, np.arange(10 * s, 10 * s + 10), texts[10 * s : 10 * s + 10]) for s in range(3)]
    results = []
    for _ in range(2):
        actor = MiningActorImpl(WorkerConfig(str(model), job, 1))
        assert actor.lane is not None
        out: dict[int, object] = {}
        go = threading.Barrier(3)

        def arrive(b: LaneBlock, act: MiningActorImpl = actor, go: threading.Barrier = go,
                   out: dict[int, object] = out) -> None:
            go.wait()
            out[b.seq] = act.run_lane(b)

        threads = [threading.Thread(target=arrive, args=(b,)) for b in reversed(blocks)]
        for t in threads:
            t.start()
        actor.run_lane(LaneRestore(0, 0, 0, []))
        for t in threads:
            t.join(timeout=60)
        assert sorted(out) == [0, 1, 2]
        results.append([out[i].gains.tolist() for i in range(3)])  # type: ignore[attr-defined]
    assert results[0] == results[1]


def _job(tmp: Path, corpus: Path, model: Path, name: str, **extra) -> Path:
    # one thread whatever the worker count: torch rounds differently at another thread count
    fields = {"model": str(model), "corpus": str(corpus), "top_n": 6, "block_size": 25, "batch_size": 8, "threads_per_worker": 1,
              "checkpoint_seconds": 0, "sample": {"sentences": 40, "seed": 1}, **extra}
    return write_job(tmp / f"{name}.yaml", name=name, output=name, **fields)


def test_lanes_in_one_process_equal_one_lane_and_count_per_lane(tmp_path: Path, corpus: Path, model: Path) -> None:
    one = run_mining(*load_job(_job(tmp_path, corpus, model, "one")), executor="inline")
    three_job = _job(tmp_path, corpus, model, "three", workers=3)
    three = run_mining(*load_job(three_job), executor="inline")
    same(Path(one["run_dir"]), Path(three["run_dir"]), TOP_TABLES)
    assert three["workers"]["lanes"] == 3 and three["workers"]["lane_blocks"] == {"0": 4, "1": 4, "2": 4}
    assert three["timings"]["checkpoints"] >= 2 and three["timings"]["checkpoint_bytes"] > 0
    conv = table(Path(three["run_dir"]), "convergence").to_pandas()
    overall = conv[conv.site == "all"]
    job, base = load_job(three_job)
    ids, scores, _, _ = all_scores(job, base)
    first = overall[overall.direction == "top"].sort_values("block").first_sentence_id.tolist()
    for d in ("top", "bottom"):
        got = overall[overall.direction == d].sort_values("block").updates.tolist()
        assert got == lane_updates(ids, scores, first, 3, 6, d)
    assert overall.lane.tolist() == [b % 3 for b in overall.block]


def test_early_stop_with_lanes_is_deterministic_and_resumes_identically(tmp_path: Path, corpus: Path,
                                                                         model: Path) -> None:
    stop = {"max_update_rate": 0.6, "patience": 1, "min_sentences": 50}
    a = run_mining(*load_job(_job(tmp_path, corpus, model, "a", workers=2, early_stop=stop)), executor="inline")
    assert a["blocks"]["stopped_early"] and a["blocks"]["merged"] < a["blocks"]["planned"]
    conv = table(Path(a["run_dir"]), "convergence").to_pandas()
    overall = conv[(conv.site == "all")].groupby("block").agg({"updates": "sum", "entries": "sum",
                                                               "sentences_seen": "first"})
    rate = overall.updates / overall.entries
    first_calm = int(next(b for b in overall.index if rate[b] < 0.6 and overall.sentences_seen[b] >= 50))
    # the blocks up to the stop decision plus the lookahead (2 per lane, less the one just accounted for)
    assert a["blocks"]["merged"] == first_calm + 1 + (2 * 2 - 1)

    job_b, base = load_job(_job(tmp_path, corpus, model, "b", workers=2, early_stop=stop))
    part = run_mining(job_b, base, executor="inline", stop_after_blocks=2)
    assert part["status"] == "incomplete"
    b = run_mining(job_b, base, executor="inline")
    same(Path(a["run_dir"]), Path(b["run_dir"]), (*TOP_TABLES, "convergence"))


def test_resume_with_another_worker_count_keeps_the_tables(tmp_path: Path, corpus: Path, model: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    ref = run_mining(*load_job(_job(tmp_path, corpus, model, "ref")), executor="inline")
    job3, base = load_job(_job(tmp_path, corpus, model, "r", workers=3))
    run_mining(job3, base, executor="inline", stop_after_blocks=5)
    job2, _ = load_job(_job(tmp_path, corpus, model, "r", workers=2))
    with caplog.at_level("INFO"):
        out = run_mining(job2, base, executor="inline")
    assert "lane 0 starts from all their queues" in caplog.text
    same(Path(ref["run_dir"]), Path(out["run_dir"]), TOP_TABLES)


def test_checkpoint_of_the_merged_queues_format_resumes(tmp_path: Path, corpus: Path, model: Path) -> None:
    """A checkpoint written before lanes (queues-<direction>.npz, no lanes record) resumes to the same tables."""
    ref = run_mining(*load_job(_job(tmp_path, corpus, model, "ref")), executor="inline")
    job, base = load_job(_job(tmp_path, corpus, model, "old"))
    run_mining(job, base, executor="inline", stop_after_blocks=4)
    ck = tmp_path / "old" / "checkpoint"
    keys, payload, _ = read_lane(ck / "lane-000", mmap=False)
    units = keys.shape[0] // 2
    for k, d in enumerate(("top", "bottom")):
        np.savez(ck / f"queues-{d}.npz", keys=keys[k * units : (k + 1) * units],
                 payload=payload[k * units : (k + 1) * units])
    for f in ck.glob("lane-*"):
        f.unlink()
    state = json.loads((ck / "state.json").read_text())
    del state["lanes"]
    (ck / "state.json").write_text(json.dumps(state))
    out = run_mining(job, base, executor="inline")
    same(Path(ref["run_dir"]), Path(out["run_dir"]), (*TOP_TABLES, "convergence"))
