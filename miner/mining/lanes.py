"""Lanes: each mining actor keeps its own top-N and bottom-N queues on its device over every block it mines.

A run with W workers has W lanes; block k belongs to lane k mod W, and each lane merges its blocks in block
order into queues that live where the work is (the actor's GPU or CPU). Nothing but a block's telemetry
(how many entries it changed in its lane's queues), its counters, its moment sums and its score-sample rows
travel back to the driver. The driver merges the lanes' queues only from their checkpoint files, at the end:
the top-N of a union is the top-N of the union of the parts' top-Ns, ties broken by sentence id inside the
keys, so the final queues are the same for any number of lanes.

Each lane task carries the lane's sequence number: a lane runs its tasks strictly in that order (a threaded
actor tokenises the next block while the current one is on the device, then waits its turn), and an epoch:
after the actor's process died and Ray restarted it (lane tasks are never retried by Ray: the executor answers
for them as stale), the driver restores the lane from its last checkpoint files under a new epoch and sends its
later tasks again; tasks of an older epoch are answered as stale, those of a newer one wait for its restore.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miner import atomic
from miner.errors import InputError, first_line
from miner.mining.block_miner import BlockMiner, BlockResult
from miner.mining.topn import SENTINEL, TopNQueues


@dataclass
class LaneRestore:
    """Start (or restart) a lane: its queues are the merge of `files` (lane checkpoint files, see `save_lane`;
    none: empty), its next task has sequence number `seq`, and tasks of other epochs are stale from now on."""

    lane: int
    epoch: int
    seq: int
    files: list[str]


@dataclass
class LaneBlock:
    """Mine one block into a lane's queues (ids, texts, and the block's score-sample ids or None)."""

    lane: int
    epoch: int
    seq: int
    block: int
    ids: np.ndarray
    texts: list[str]
    sample_ids: np.ndarray | None = None


@dataclass
class LaneSave:
    """Write a lane's queues, as they are after every earlier task of the lane, to `path` (atomically)."""

    lane: int
    epoch: int
    seq: int
    path: str
    checkpoint: str = ""
    """The checkpoint folder the file is for (named in a write error)."""


@dataclass
class LaneReport:
    """What a lane task sends back: for a block, its result (no candidates: they stay in the lane) and the
    entries it changed in the lane's queues; for a save, the file written."""

    lane: int
    epoch: int
    seq: int
    block: int | None = None
    result: BlockResult | None = None
    gains: np.ndarray | None = None
    """int64 [D * U]: entries of each lane queue row (direction d, unit u at d * U + u) the block changed."""
    saved: str | None = None
    instance: str = ""
    """Identifies the worker process (a restarted actor has another one)."""
    stale: bool = False
    """The task did nothing: it belongs to an older epoch of the lane (sent before a restore), or the actor
    died while it ran (then the executor answers for it: the lane's queues are lost)."""


class LaneMiner:
    """A worker's lane: the BlockMiner and the lane's queues, both directions in D x U rows on its device.

    Thread-safe for the tasks of one lane: `prepare` (tokenising) runs as soon as a task arrives, the device
    work waits until every earlier task of the lane is done (`seq`).
    """

    def __init__(self, miner: BlockMiner, device_lock: threading.Lock | None = None) -> None:
        self.miner = miner
        self.rows = len(miner.directions) * miner.layout.n_units
        self.lane = -1
        self.epoch = -1
        """-1 until the first restore: every task before it is stale."""
        self.seq = 0
        self.queues: TopNQueues | None = None
        self.instance = uuid.uuid4().hex
        self._turn = threading.Condition()
        self._device = device_lock or threading.Lock()

    def restore(self, req: LaneRestore) -> LaneReport:
        with self._turn:
            self.lane, self.epoch, self.seq = req.lane, req.epoch, req.seq
            with self._device:
                self.queues = load_lane_queues(req.files, self.rows, self.miner.top_n, self.miner.loaded.device)
            self._turn.notify_all()
        return LaneReport(req.lane, req.epoch, req.seq, instance=self.instance)

    def mine(self, req: LaneBlock) -> LaneReport:
        if req.epoch < self.epoch:
            return LaneReport(req.lane, req.epoch, req.seq, instance=self.instance, block=req.block, stale=True)
        prepared = self.miner.prepare(np.array(req.ids, copy=True), req.texts)
        sample = None if req.sample_ids is None else np.array(req.sample_ids, copy=True)
        with self._wait_turn(req) as ok:
            if not ok:
                return LaneReport(req.lane, req.epoch, req.seq, instance=self.instance, block=req.block, stale=True)
            assert self.queues is not None
            with self._device:
                found, result = self.miner.mine_prepared(req.block, prepared, self.queues.threshold(), sample)
                gains = self.queues.merge(found).numpy().astype(np.int64)
            self.seq += 1
        return LaneReport(req.lane, req.epoch, req.seq, instance=self.instance, block=req.block, result=result, gains=gains)

    def save(self, req: LaneSave) -> LaneReport:
        with self._wait_turn(req) as ok:
            if not ok:
                return LaneReport(req.lane, req.epoch, req.seq, instance=self.instance, stale=True)
            assert self.queues is not None
            with self._device:
                state = self.queues.state()
            try:
                save_lane(Path(req.path), state, {"lane": req.lane, "seq": req.seq})
            except OSError as exc:  # e.g. disk full: name the checkpoint, whose previous version stays
                raise atomic.write_error(Path(req.checkpoint or req.path), exc) from None
            self.seq += 1
        return LaneReport(req.lane, req.epoch, req.seq, instance=self.instance, saved=req.path)

    def _wait_turn(self, req: LaneBlock | LaneSave) -> _Turn:
        return _Turn(self, req.epoch, req.seq)


class _Turn:
    """Context manager: wait until `seq` is the lane's next task (yields True), or the epoch moved on (False)."""

    def __init__(self, lane: LaneMiner, epoch: int, seq: int) -> None:
        self.lane, self.epoch, self.seq = lane, epoch, seq

    def __enter__(self) -> bool:
        lane = self.lane
        lane._turn.acquire()
        # a later epoch's task waits for its restore; an earlier epoch's, or a duplicate, is stale
        lane._turn.wait_for(lambda: lane.epoch > self.epoch or (lane.epoch == self.epoch and lane.seq >= self.seq))
        return lane.epoch == self.epoch and lane.seq == self.seq

    def __exit__(self, *exc: object) -> None:
        self.lane._turn.notify_all()
        self.lane._turn.release()


def lane_task(lane: LaneMiner, request: LaneRestore | LaneBlock | LaneSave) -> LaneReport:
    """Task: one lane request (restore, mine a block, save)."""
    if isinstance(request, LaneRestore):
        return lane.restore(request)
    if isinstance(request, LaneBlock):
        return lane.mine(request)
    return lane.save(request)


def save_lane(path: Path, state: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write a lane's queue arrays (keys and payload, [D * U, N] int64 each) as PATH.keys.npy,
    PATH.payload.npy and PATH.json, each atomically (temporary name, then rename; the JSON last, so a file set
    without its JSON is incomplete). The .npy files can be memory-mapped when the driver merges them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("keys", "payload"):
        final = Path(f"{path}.{name}.npy")
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            arr = np.ascontiguousarray(state[name])
            with tmp.open("wb") as fh:  # the .npy header, then the buffer through Python's writer (which
                # raises the OS's error on a short write, e.g. a full disk; numpy's tofile reports only counts)
                np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(arr))
                fh.write(arr.data.cast("B"))
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise atomic.write_error(final, exc) from None
    atomic.write_json(Path(f"{path}.json"), {**meta, "rows": int(state["keys"].shape[0]),
                                             "top_n": int(state["keys"].shape[1])})


def read_lane(path: Path, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(keys, payload, meta) of a lane file set written by `save_lane`; one InputError naming a damaged file."""
    current = Path(f"{path}.json")
    try:
        meta = json.loads(current.read_text())
        arrays = []
        for name in ("keys", "payload"):
            current = Path(f"{path}.{name}.npy")
            arr = np.load(current, mmap_mode="r" if mmap else None)
            if arr.dtype != np.int64 or arr.shape != (meta["rows"], meta["top_n"]):
                raise ValueError(f"expected int64 [{meta['rows']}, {meta['top_n']}], found {arr.dtype} {arr.shape}")
            arrays.append(arr)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{current}: damaged lane checkpoint ({first_line(exc)}); delete "
                         f"{Path(path).parent} to mine this run from the start") from None
    return arrays[0], arrays[1], meta


def load_lane_queues(files: list[str], rows: int, top_n: int, device: torch.device | str) -> TopNQueues:
    """Queues of `rows` rows holding the merge of lane files (empty queues when there are none)."""
    queues = TopNQueues(rows, top_n, device)
    for f in files:
        keys, payload, _ = read_lane(Path(f), mmap=False)
        if keys.shape != (rows, top_n):
            raise InputError(f"{f}: lane checkpoint of {keys.shape[0]} rows x {keys.shape[1]}, this run has "
                             f"{rows} x {top_n}; delete the checkpoint to mine from the start")
        merge_rows(queues, torch.from_numpy(keys), torch.from_numpy(payload))
    return queues


def merge_rows(queues: TopNQueues, keys: torch.Tensor, payload: torch.Tensor) -> None:
    """Merge dense [rows, N] key/payload rows (SENTINEL: empty) into `queues` (rows of the same order)."""
    from miner.mining.topn import Candidates

    dev = queues.keys.device
    queues.merge(Candidates(None, keys.to(dev), payload.to(dev)))


def merge_lane_files(files: list[Path], directions: tuple[str, ...], n_units: int, top_n: int,
                     chunk_units: int = 4096) -> dict[str, TopNQueues]:
    """The run's queues per direction: the lanes' files merged, `chunk_units` rows at a time (so the driver
    holds one chunk of every lane at once, memory-mapped, beside the result)."""
    metas = [read_lane(f) for f in files]
    out = {}
    for k, d in enumerate(directions):
        keys_out = np.full((n_units, top_n), SENTINEL, dtype=np.int64)
        payload_out = np.zeros((n_units, top_n), dtype=np.int64)
        for lo in range(0, n_units, chunk_units):
            hi = min(n_units, lo + chunk_units)
            part = TopNQueues(hi - lo, top_n)
            for keys, payload, _ in metas:
                rows = slice(k * n_units + lo, k * n_units + hi)
                merge_rows(part, torch.from_numpy(np.array(keys[rows])), torch.from_numpy(np.array(payload[rows])))
            state = part.state()
            keys_out[lo:hi], payload_out[lo:hi] = state["keys"], state["payload"]
        out[d] = TopNQueues.from_state({"keys": keys_out, "payload": payload_out})
    return out
