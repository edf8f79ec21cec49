"""A real two-node Ray cluster on this machine: `miner submit`, `miner jobs`, actors on both nodes.

The head and a second node are separate `ray start --block` processes with their own resources and ports,
token authentication on (a random token shared through RAY_AUTH_TOKEN); both are stopped by their process
ids, never with `ray stop` (which would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from miner.config import load_job
from miner.mining.driver import run_mining
from tests.support.builders import make_corpus, tiny_model, write_job

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TABLES = ("top_sentences", "sentences", "units")
# convergence counts per lane (one per worker): its layout is the same for any worker count, its counts are
# checked against a brute-force twin in tests/integration/test_mining_ray.py
LANE_FREE = ["block", "first_sentence_id", "sentences", "sentences_seen", "direction", "site", "layer", "entries"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ports() -> list[str]:
    return ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
            "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())]


class TwoNodes:
    """Head + one worker node, each a `ray start --block` process of this test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        # Ray's unix sockets live under the temp dir and their paths may not exceed 107 bytes.
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        # The virtualenv is NOT on PATH (`.venv/bin/ray start` without activating it): jobs must still run
        # under the cluster's own Python, not whatever `python` PATH finds.
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "PATH": path, "RAY_USAGE_STATS_ENABLED": "0",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.env.pop("RAY_ADDRESS", None)
        self.gcs = free_port()
        self.dash_port = free_port()
        self.dashboard = f"http://127.0.0.1:{self.dash_port}"

    def start(self) -> None:
        # Ray gives a starting node a fixed 30 s to register with the GCS ("The current node timed out during
        # startup"); on a loaded 2-core CI machine that can pass, so a node that timed out is started again.
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
        for attempt in range(3):
            self.gcs, self.dash_port = free_port(), free_port()
            self.dashboard = f"http://127.0.0.1:{self.dash_port}"
            self.head = subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", "--port", str(self.gcs), "--dashboard-host", "127.0.0.1",
                 "--dashboard-port", str(self.dash_port), "--include-dashboard", "true", "--ray-client-server-port",
                 str(free_port()), "--temp-dir", str(self.ray_tmp), *common, *node_ports()],
                env=self.env, stdout=open(self.tmp / "head.log", "wb"), stderr=subprocess.STDOUT,
                start_new_session=True)
            if self._started(1, attempt):
                break
        for attempt in range(3):
            self.worker = subprocess.Popen(
                [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{self.gcs}", *common, *node_ports()],
                env=self.env, stdout=open(self.tmp / "worker.log", "wb"), stderr=subprocess.STDOUT,
                start_new_session=True)
            if self._started(2, attempt):
                break

    def _started(self, n: int, attempt: int) -> bool:
        """True once the cluster has n nodes; False if the newest node timed out registering (retry it)."""
        try:
            self.wait_nodes(n)
            return True
        except RuntimeError as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            dead = self.head if n == 1 else self.worker
            if dead is not None:  # its session may still hold the node's other processes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(dead.pid, signal.SIGKILL)
            if n == 1:
                self.head = None
            else:
                self.worker = None
            return False

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
                 "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.time() + timeout
        while time.time() < deadline:
            for proc, log in ((self.head, "head.log"), (self.worker, "worker.log")):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"ray start exited: {(self.tmp / log).read_text()[-2000:]}")
            try:
                out = subprocess.run([sys.executable, "-c", probe, f"127.0.0.1:{self.gcs}"], env=self.env,
                                     capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                continue
            if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= n:
                return
            time.sleep(1)
        raise RuntimeError(f"cluster did not reach {n} nodes")

    def miner(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "miner.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def stop(self) -> None:
        procs = [p for p in (self.worker, self.head) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.fail("the ray CLI is not installed in the test environment")
    nodes = TwoNodes(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, str(nodes.ray_tmp))]
    assert not leftovers, "Ray processes of the test cluster survived their nodes"


def _mentions(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n=600, shard_size=200)


def same_tables(a: Path, b: Path, lanes: int = 2) -> None:
    for table in TABLES:
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet")), table
    ca, cb = (pq.read_table(p / "convergence.parquet") for p in (a, b))
    assert ca.select(LANE_FREE).equals(cb.select(LANE_FREE))
    assert set(cb["lanes"].to_pylist()) == {lanes}


def test_submitted_job_mines_on_both_nodes_and_equals_one_process(tmp_path: Path, corpus: Path,
                                                                    cluster: TwoNodes) -> None:
    model = tiny_model(tmp_path / "m", "bert")
    common = {"model": str(model), "threads_per_worker": 1, "corpus": str(corpus), "top_n": 8, "block_size": 50, "sites": ["hidden", "mlp"],
              "vectors": {"dim": 16, "epoch": 1, "min_count": 1}}
    ref = run_mining(*load_job(write_job(tmp_path / "ref.yaml", name="ref", output="ref", **common)),
                     executor="inline")
    (tmp_path / "jobs").mkdir()
    job = write_job(tmp_path / "jobs" / "multi.yaml", name="multi", output="../out/multi", workers=2, **common)
    done = cluster.miner("submit", str(job), "--address", cluster.dashboard, "--submission-id", "multi-1", "--follow")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "multi-1: SUCCEEDED" in done.stdout
    run = tmp_path / "out" / "multi"  # relative output resolved against the job file's folder
    manifest = json.loads((run / "manifest.json").read_text())
    nodes = manifest["workers"]["nodes"]
    assert len(nodes) == 2 and len({n["node_id"] for n in nodes}) == 2, nodes
    same_tables(Path(ref["run_dir"]), run)
    assert (run / "catalog.duckdb").exists()  # `miner run` did step 2 on the cluster too

    listed = cluster.miner("jobs", "list", "--json", "--address", cluster.dashboard)
    assert listed.returncode == 0, listed.stderr
    rec = next(r for r in json.loads(listed.stdout) if r["submission_id"] == "multi-1")
    assert rec["status"] == "SUCCEEDED" and rec["name"] == "multi" and rec["output"] == str(run)
    status = cluster.miner("jobs", "status", "multi-1", "--address", cluster.dashboard)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "SUCCEEDED"
    logs = cluster.miner("jobs", "logs", "multi-1", "--address", cluster.dashboard)
    assert logs.returncode == 0 and "sent/s" in logs.stdout
    assert " DEBUG matplotlib" not in logs.stdout  # -v keeps third-party loggers at INFO
    missing = cluster.miner("jobs", "status", "nope-0", "--address", cluster.dashboard)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope-0" in missing.stderr


def test_stopped_job_resumes_when_resubmitted(tmp_path: Path, cluster: TwoNodes) -> None:
    corpus = make_corpus(tmp_path / "corpus", n=3000, shard_size=1000)
    model = tiny_model(tmp_path / "m", "bert", layers=4, hidden=64)
    common = {"model": str(model), "threads_per_worker": 1, "corpus": str(corpus), "top_n": 8, "block_size": 10, "batch_size": 1,
              "checkpoint_seconds": 0, "vectors": {"dim": 16, "epoch": 1, "min_count": 1}}
    ref = run_mining(*load_job(write_job(tmp_path / "ref.yaml", name="ref", output="ref", **common)),
                     executor="inline")
    job = write_job(tmp_path / "stop.yaml", name="stop", output="stop", workers=2, **common)
    sub = cluster.miner("submit", str(job), "--address", cluster.dashboard, "--submission-id", "stop-1")
    assert sub.returncode == 0, sub.stderr
    state = tmp_path / "stop" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["next_block"] >= 3):
        time.sleep(0.1)
    stop = cluster.miner("jobs", "stop", "stop-1", "--address", cluster.dashboard)
    assert stop.returncode == 0 and "stop requested" in stop.stdout, stop.stdout + stop.stderr
    deadline = time.time() + 120
    while time.time() < deadline:
        status = json.loads(cluster.miner("jobs", "status", "stop-1", "--address", cluster.dashboard).stdout)
        if status["status"] == "STOPPED":
            break
        time.sleep(1)
    assert status["status"] == "STOPPED"
    merged = json.loads(state.read_text())["next_block"]
    assert 3 <= merged < 300, "the job finished before it could be stopped"
    again = cluster.miner("submit", str(job), "--address", cluster.dashboard, "--submission-id", "stop-2",
                          "--follow")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    assert f"resuming {tmp_path / 'stop'} at block" in again.stdout
    same_tables(Path(ref["run_dir"]), tmp_path / "stop")


def test_submit_refuses_bad_job_before_contacting_the_cluster(tmp_path: Path, cluster: TwoNodes) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: minilm\ncorpus: c\ntop_n: 0\n")
    out = cluster.miner("submit", str(bad), "--address", cluster.dashboard)
    assert out.returncode == 2 and "top_n" in out.stderr and out.stderr.count("\n") == 1
    unreachable = cluster.miner("jobs", "list", "--address", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
