"""Where blocks are mined: in this process (tests, debugging) or on Ray actors (the default); Ray lives only here."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from miner.config import JobSpec
from miner.errors import MinerError
from miner.mining.batches import allow_tokenizer_threads
from miner.mining.block_miner import BlockMiner, BlockResult
from miner.mining.extract import ExtractRequest, ExtractResult, extract_block
from miner.mining.hardware import disable_tf32, fit_window, identity_of
from miner.mining.lanes import LaneMiner, LaneReport, lane_task
from miner.model.layout import truncate_blocks, unit_layout
from miner.model.loading import load_model

log = logging.getLogger(__name__)
MAX_RESTARTS = 4  # a mining actor whose process dies is restarted by Ray this many times
PLACEMENT_TIMEOUT_S = 900  # mining actors that cannot be placed (too few CPUs/GPUs) fail the run after this
LANE_DEPTH = 2
"""Blocks a mining lane may hold at once (one on the device, one being tokenised); the actor runs this many
plus a save and a restore concurrently, so a lane's tasks never wait for a thread."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to build its state (sent to remote actors).

    `builder` makes the state each worker keeps between tasks (default: `build_block_miner`, a BlockMiner); a
    stage that needs another model (e.g. with its output head, for interventions) passes its own module-level
    builder. Tasks (`Executor.submit_task`) are module-level functions `task(state, request) -> result`.
    """

    model_folder: str
    job: JobSpec
    threads: int
    builder: Callable[[WorkerConfig], Any] | None = None


def build_worker(cfg: WorkerConfig) -> Any:
    """The worker state of `cfg`: its builder's, or a BlockMiner."""
    return (cfg.builder or build_block_miner)(cfg)


def worker_device(state: Any) -> str:
    """The device a worker state computes on (its `loaded.device`, or its `device`)."""
    loaded = getattr(state, "loaded", None)
    return str(getattr(loaded, "device", None) or getattr(state, "device", "cpu"))


def worker_hardware(state: Any) -> dict | None:
    """The hardware identity (miner.mining.hardware) of a worker state with a loaded model, else None."""
    loaded = getattr(state, "loaded", None)
    return identity_of(loaded).as_dict() if loaded is not None else None


def mine_task(miner: BlockMiner, request: MineRequest) -> BlockResult:
    """Task: mine one block."""
    sample = None if request.sample_ids is None else np.array(request.sample_ids, copy=True)
    return miner.mine_block(request.block, np.array(request.ids, copy=True), request.texts, request.floors, sample)


def extract_task(miner: BlockMiner, request: ExtractRequest) -> ExtractResult:
    """Task: activations of one block of probing sentences."""
    return extract_block(miner, request)


@dataclass
class MineRequest:
    """One block of mining work: sentence ids and texts, the queues' floors per direction, and the block's
    sentences of the score sample."""

    block: int
    ids: np.ndarray
    texts: list[str]
    floors: dict[str, np.ndarray]
    sample_ids: np.ndarray | None = None
    """int64 ids (of this block) whose scores the worker returns, in this order (None: no sample)."""


def build_block_miner(cfg: WorkerConfig) -> BlockMiner:
    """Load the model and build the block miner of a job (runs inside each worker)."""
    import torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    job = cfg.job
    loaded = load_model(Path(cfg.model_folder), job.device, job.dtype, job.init, job.init_seed, job.allow_pickle,
                        job.trust_remote_code)
    layout = unit_layout(loaded.config, list(job.sites), job.layers)
    truncate_blocks(loaded.model, max(layer for _, layer, _ in layout.layers))  # deeper blocks are never computed
    disable_tf32()  # fp32 scores are exact float32 sums, never TF32 products
    miner = BlockMiner(loaded, layout, job.top_n, job.bottom, job.aggregation, job.max_length, job.batch_size,
                       batch_tokens=job.batch_tokens)
    # on CUDA: refuse (one line, with the numbers) or shrink the window when the queues will not fit the device
    miner.window = fit_window(layout.n_units, job.top_n, len(miner.directions), miner.window, job.batch_size,
                              miner.max_length, [w for _, _, w in layout.layers], loaded.dtype.itemsize,
                              loaded.device, share=min(1.0, job.gpus_per_worker or 1.0), batch_tokens=job.batch_tokens)
    return miner


class Executor(Protocol):
    """Runs submitted tasks on workers and returns results as they complete.

    Executors take tasks (a module-level function and its request, e.g. a block to mine) and hand back their
    results in completion order; callers order them by block, so the result never depends on the executor or
    the worker count.
    """

    capacity: int
    lanes: int
    """Mining lanes (one per worker): `submit_lane` sends a lane's requests to the worker that holds it."""

    def submit(self, block: int, ids: np.ndarray, texts: list[str], floors: dict[str, np.ndarray]) -> None:
        """Queue a block to mine (its result is a BlockResult)."""
        ...

    def submit_extract(self, request: ExtractRequest) -> None:
        """Queue a block of probing sentences (its result is an ExtractResult)."""
        ...

    def submit_task(self, task: Callable[[Any, Any], Any], block: int, request: Any) -> None:
        """Queue `task(worker_state, request)`; `block` names it in logs and when it is resubmitted."""
        ...

    def submit_lane(self, request: Any) -> None:
        """Queue a lane request (miner.mining.lanes) for the worker holding lane `request.lane`; its result is a
        LaneReport (stale when the worker lost the lane's state: its process died and was restarted)."""
        ...

    def next_result(self) -> Any: ...

    def in_flight(self) -> int: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs blocks one at a time in the calling process; its `lanes` (default: the job's workers) share the
    model, so a run gives the same tables and convergence counts as on that many Ray actors."""

    def __init__(self, cfg: WorkerConfig, lanes: int | None = None) -> None:
        self.miner = build_worker(cfg)
        self.capacity = 1
        self.lanes = lanes or cfg.job.workers
        self.hardware = worker_hardware(self.miner)
        self._lanes: dict[int, LaneMiner] = {}
        self._queue: deque[tuple[Callable[[Any, Any], Any], Any]] = deque()

    def submit(self, block: int, ids: np.ndarray, texts: list[str], floors: dict[str, np.ndarray]) -> None:
        self.submit_task(mine_task, block, MineRequest(block, ids, texts, floors))

    def submit_extract(self, request: ExtractRequest) -> None:
        self.submit_task(extract_task, request.block, request)

    def submit_task(self, task: Callable[[Any, Any], Any], block: int, request: Any) -> None:
        self._queue.append((task, request))

    def submit_lane(self, request: Any) -> None:
        self._queue.append((lane_task, request))

    def next_result(self) -> Any:
        task, request = self._queue.popleft()
        if task is lane_task:
            lane = self._lanes.get(request.lane)
            if lane is None:
                lane = self._lanes[request.lane] = LaneMiner(self.miner)
            return task(lane, request)
        return task(self.miner, request)

    def in_flight(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        self.miner.close()


class MiningActorImpl:
    """Body of the Ray mining actor: one model on one device, running tasks (mining blocks, ...) on request."""

    def __init__(self, cfg: WorkerConfig) -> None:
        # A user error while loading (a damaged model, an unsupported site) is kept and raised by node(): an
        # actor whose constructor raises dies, and Ray would restart it and print a traceback each time.
        self.error: MinerError | None = None
        self.device_lock = threading.Lock()
        """Held by every task while it computes: the actor is threaded (a lane tokenises its next block while
        the current one runs), but one task at a time uses the model."""
        self.lane: LaneMiner | None = None
        """The actor's lane, made here, before any task runs: made lazily, two tasks arriving at once (threads)
        could each make one, and a task waiting on the lane that was dropped would wait forever."""
        allow_tokenizer_threads(True, cfg.threads)  # a lane tokenises its next block on the actor's CPUs
        try:
            self.miner = build_worker(cfg)
        except MinerError as exc:
            self.error = exc
            return
        if isinstance(self.miner, BlockMiner):
            self.lane = LaneMiner(self.miner, self.device_lock)

    def node(self) -> dict:
        import ray

        if self.error is not None:
            raise self.error
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "device": worker_device(self.miner), "hardware": worker_hardware(self.miner)}

    def run(self, task: Callable[[Any, Any], Any], request: Any) -> Any:
        with self.device_lock:
            return task(self.miner, request)

    def run_lane(self, request: Any) -> LaneReport:
        if self.error is not None:
            raise self.error
        if self.lane is None:
            raise TypeError(f"run_lane: this actor holds no block miner ({type(self.miner).__name__})")
        return lane_task(self.lane, request)


class RayExecutor:
    """Runs blocks on `workers` Ray actors (restarted and retried by Ray if their process dies)."""

    def __init__(self, cfg: WorkerConfig, workers: int, address: str | None = None, num_cpus: int | None = None) -> None:
        import ray

        from miner.cluster.connect import connect

        self._ray = ray
        joined = connect(address, num_cpus or max(os.cpu_count() or 1, workers))
        gpus = cfg.job.gpus_per_worker
        if gpus == 0 and ray.cluster_resources().get("GPU", 0) >= 1 and cfg.job.device != "cpu":
            gpus = 1
        if joined:  # a real cluster: each actor holds the CPUs its torch threads use (one per GPU actor)
            cpus = 1.0 if gpus else float(cfg.threads)
        else:  # the private local cluster: share the machine, leaving room for the driver
            cpus = min(1.0, max(0.25, (ray.cluster_resources().get("CPU", 1) - 0.5) / workers))
        actor_cls: Any = ray.remote(MiningActorImpl).options(num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RESTARTS,
                                                        max_task_retries=MAX_RESTARTS,
                                                        max_concurrency=LANE_DEPTH + 2)
        self.actors: list[Any] = [actor_cls.remote(cfg) for _ in range(workers)]
        self.capacity = LANE_DEPTH * workers
        self.lanes = workers
        self._refs: dict = {}
        self._load: list[int] = [0] * workers
        self._deaths: list[int] = [0] * workers
        self._dead: set[int] = set()
        try:
            self.nodes = ray.get([a.node.remote() for a in self.actors], timeout=PLACEMENT_TIMEOUT_S)
        except ray.exceptions.RayTaskError as exc:  # a worker could not load the model: one line, no retries
            self.close()
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MinerError):
                raise cause from None
            raise
        except ray.exceptions.GetTimeoutError:
            for a in self.actors:
                ray.kill(a)
            raise MinerError(
                f"workers: {workers} mining actor(s) needing {cpus:g} CPU and {gpus:g} GPU each did not start within "
                f"{PLACEMENT_TIMEOUT_S} s; the cluster has {ray.cluster_resources().get('CPU', 0):g} CPU and "
                f"{ray.cluster_resources().get('GPU', 0):g} GPU in all: lower workers or add nodes") from None
        log.info("mining on %d Ray actor(s): %s", workers, ", ".join(n["device"] for n in self.nodes))

    def submit(self, block: int, ids: np.ndarray, texts: list[str], floors: dict[str, np.ndarray]) -> None:
        self.submit_task(mine_task, block, MineRequest(block, ids, texts, floors))

    def submit_extract(self, request: ExtractRequest) -> None:
        self.submit_task(extract_task, request.block, request)

    def submit_task(self, task: Callable[[Any, Any], Any], block: int, request: Any) -> None:
        self._call("run", block, (task, request))

    def submit_lane(self, request: Any) -> None:
        self._call("run_lane", getattr(request, "block", -1), (request,), actor=request.lane)

    def _lane_lost(self, k: int, request: Any) -> LaneReport:
        """The answer for a lane task whose actor died: wait until Ray has restarted the actor (so what is sent
        next reaches the new process), then report the lane's queues lost."""
        ray = self._ray
        try:
            ray.get(self.actors[k].node.options(max_task_retries=-1).remote())
        except ray.exceptions.RayActorError:
            self._dead.add(k)
            raise MinerError(f"mining actor {k} died more often than Ray restarts it (out of memory? see the Ray "
                             "logs); completed blocks are checkpointed: re-run to resume") from None
        return LaneReport(request.lane, request.epoch, request.seq, block=getattr(request, "block", None),
                          stale=True)

    def _call(self, method: str, block: int, args: tuple, actor: int | None = None) -> None:
        alive = [i for i in range(len(self.actors)) if i not in self._dead]
        if not alive or (actor is not None and actor in self._dead):
            raise MinerError("every mining actor died more often than Ray restarts them (out of memory? see the Ray "
                             "logs); completed blocks are checkpointed: re-run to resume")
        k = min(alive, key=lambda i: self._load[i]) if actor is None else actor
        remote = getattr(self.actors[k], method)
        if method == "run_lane":  # never retried by Ray: a restarted actor has lost the lane (see _lane_lost)
            remote = remote.options(max_task_retries=0)
        ref = remote.remote(*args)
        self._refs[ref] = (k, method, block, args)
        self._load[k] += 1

    def next_result(self) -> Any:
        ray = self._ray
        while True:
            done, _ = ray.wait(list(self._refs), num_returns=1)
            ref = done[0]
            k, method, block, args = self._refs.pop(ref)
            self._load[k] -= 1
            try:
                return ray.get(ref)
            except ray.exceptions.RayActorError:
                self._deaths[k] += 1
                if self._deaths[k] > MAX_RESTARTS:  # Ray will not restart it again
                    self._dead.add(k)
                if method == "run_lane":
                    return self._lane_lost(k, args[0])
                log.warning("mining actor %d died on block %d; resubmitting", k, block)
                self._call(method, block, args)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if hasattr(exc, "cause") else exc
                if isinstance(cause, (MinerError, OSError)):
                    raise cause from None
                raise

    def in_flight(self) -> int:
        return len(self._refs)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
