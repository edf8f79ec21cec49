"""Mining on a real local Ray cluster and with the real MiniLM: workers, kill-and-resume, exactness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from miner.config import load_job
from miner.mining.driver import run_mining
from miner.mining.processes import mining_actor_pids
from tests.support.builders import make_corpus, tiny_model, write_job
from tests.support.mining_oracle import all_scores, expected_queues, lane_updates

pytestmark = pytest.mark.integration
TABLES = ("top_sentences", "sentences", "units", "unit_moments", "unit_distribution",
          "unit_histograms", "sample_sentences", "unit_exemplars")
"""Identical for any number of workers; convergence too for the same number (it counts per lane)."""
SAMPLE = {"sentences": 97, "seed": 3}  # a part of the corpus, spread over the blocks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n=400, shard_size=150)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def actor_pids() -> list[int]:
    """This test's live mining actors (under this process's local Ray cluster; never another run's)."""
    return mining_actor_pids(os.getpid())


def same_tables(a: Path, b: Path, convergence: bool = True) -> None:
    for table in TABLES + (("convergence",) if convergence else ()):
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet")), table
    assert (a / "sample" / "scores.npy").read_bytes() == (b / "sample" / "scores.npy").read_bytes()
    assert pq.read_table(b / "sample_sentences.parquet").num_rows == SAMPLE["sentences"]


def test_one_and_two_ray_workers_equal_inline(tmp_path: Path, corpus: Path, ray_local) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    # Bit-identical for any number of workers at the same threads per worker: torch's CPU kernels may round
    # differently at another thread count (seen on an AMD EPYC with AVX-512, 1 vs 2 threads: last-bit changes).
    common = {"model": str(model), "threads_per_worker": 1, "corpus": str(corpus), "top_n": 8, "block_size": 50,
              "sites": ["hidden", "mlp"], "sample": SAMPLE}
    inline = run_mining(*load_job(write_job(tmp_path / "i.yaml", name="i", output="i", **common)), executor="inline")
    one = run_mining(*load_job(write_job(tmp_path / "a.yaml", name="a", output="a", workers=1, **common)))
    two = run_mining(*load_job(write_job(tmp_path / "b.yaml", name="b", output="b", workers=2, **common)))
    assert len({n["pid"] for n in two["workers"]["nodes"]}) == 2
    same_tables(Path(inline["run_dir"]), Path(one["run_dir"]))
    same_tables(Path(inline["run_dir"]), Path(two["run_dir"]), convergence=False)
    job, base = load_job(tmp_path / "b.yaml")
    for run, lanes in ((inline, 1), (two, 2)):  # each block's count: what it brought into its lane's queues
        check_convergence(job, base, Path(run["run_dir"]), lanes)


def check_convergence(job, base: Path, run_dir: Path, lanes: int) -> None:
    """The run's overall convergence counts equal the brute-force count of `lane_updates`."""
    conv = pq.read_table(run_dir / "convergence.parquet").to_pandas()
    overall = conv[conv.site == "all"].sort_values(["direction", "block"])
    assert set(overall.lane) == set(range(lanes)) and set(overall.lanes) == {lanes}
    ids, scores, _, _ = all_scores(job, base)
    first_ids = overall[overall.direction == "top"].first_sentence_id.tolist()
    for direction in ("top", "bottom"):
        got = overall[overall.direction == direction].updates.tolist()
        assert got == lane_updates(ids, scores, first_ids, lanes, job.top_n, direction), direction


def test_killed_actor_is_replaced_and_result_identical(tmp_path: Path, corpus: Path, ray_local) -> None:
    import threading

    model = tiny_model(tmp_path / "m", "bert")
    common = {"model": str(model), "threads_per_worker": 1, "corpus": str(corpus), "top_n": 8, "block_size": 20, "batch_size": 4,
              "checkpoint_seconds": 0, "sample": SAMPLE}
    ref = run_mining(*load_job(write_job(tmp_path / "r.yaml", name="r", output="r", **common)), executor="inline")
    job, base = load_job(write_job(tmp_path / "k.yaml", name="k", output="k", workers=2, **common))
    killed: list[int] = []
    finished = threading.Event()

    def kill_one() -> None:  # polls until the run ends (a loaded machine can take minutes to start the actors)
        st = tmp_path / "k" / "checkpoint" / "state.json"
        while not finished.is_set() and not killed:
            if st.exists() and json.loads(st.read_text())["next_block"] >= 2:
                for pid in actor_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    t = threading.Thread(target=kill_one)
    t.start()
    try:
        out = run_mining(job, base)
    finally:
        finished.set()
        t.join()
    assert killed, "no actor was killed (run finished too fast?)"
    same_tables(Path(ref["run_dir"]), Path(out["run_dir"]), convergence=False)
    check_convergence(job, base, Path(out["run_dir"]), 2)  # the restored lane counted as if never lost


def test_killed_driver_resumes_identically(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    common = {"model": str(model), "corpus": str(corpus), "top_n": 8, "block_size": 20, "batch_size": 4,
              "checkpoint_seconds": 0, "sample": SAMPLE}
    ref = run_mining(*load_job(write_job(tmp_path / "r.yaml", name="r", output="r", **common)), executor="inline")
    job_path = write_job(tmp_path / "k.yaml", name="k", output="k", **common)
    cmd = [sys.executable, "-m", "miner.cli", "mine", str(job_path), "--executor", "inline"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "k" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["next_block"] >= 3:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = json.loads(state.read_text())["next_block"]
    assert done_before < 20, "the run finished before it could be killed"
    assert json.loads((tmp_path / "k" / "manifest.json").read_text())["status"] == "running"
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {tmp_path / 'k'} at block" in resumed.stderr
    same_tables(Path(ref["run_dir"]), tmp_path / "k")


def test_minilm_queues_equal_brute_force(tmp_path: Path, corpus: Path) -> None:
    job_path = write_job(tmp_path / "job.yaml", name="minilm", model="minilm", corpus=str(corpus), output="run",
                         top_n=20, block_size=100, max_sentences=250, layers=[1, 6])
    job, base = load_job(job_path)
    manifest = run_mining(job, base, executor="inline")
    assert manifest["units"] == 768 and manifest["model"]["weights_sha256"]
    top = pq.read_table(Path(manifest["run_dir"]) / "top_sentences.parquet").to_pandas()
    ids, scores, _, _ = all_scores(job, base)
    for direction in ("top", "bottom"):
        expected = expected_queues(ids, scores, 20, direction)
        got = top[top.direction == direction].sort_values(["unit_id", "rank"])
        for unit in range(0, 768, 7):
            assert got[got.unit_id == unit].sentence_id.tolist() == expected[unit].tolist()


def test_cli_mine_on_ray_with_progress(tmp_path: Path, corpus: Path) -> None:
    model = tiny_model(tmp_path / "m", "gpt2")
    job_path = write_job(tmp_path / "job.yaml", name="cli", model=str(model), corpus=str(corpus), output="run",
                         top_n=5, workers=2, max_sentences=200, block_size=50)
    done = subprocess.run([sys.executable, "-m", "miner.cli", "mine", str(job_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "sent/s" in done.stderr and "ETA" in done.stderr and "update rate" in done.stderr
    assert "mined 200 sentences" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "miner.cli", "mine", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "missing.yaml" in bad.stderr
