"""The driver's block loop: blocks sent to the workers' lanes, their reports accounted for in block order,
checkpoints written through the lanes, lost lanes restored."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miner.corpus.store import CorpusReader, DamagedShardError
from miner.errors import InputError, MinerError
from miner.mining import sample
from miner.mining.checkpoint import LaneFiles, MiningState, checkpoint_folder, save_checkpoint
from miner.mining.context import BLOCK_COUNTERS, MiningContext, convergence_rows, format_eta
from miner.mining.executors import LANE_DEPTH, MAX_RESTARTS, Executor
from miner.mining.lanes import LaneBlock, LaneReport, LaneRestore, LaneSave
from miner.mining.plan import BlockPlan

log = logging.getLogger(__name__)


@dataclass
class Lane:
    """The driver's view of one lane: where its queues restart from, and what it was sent since then."""

    epoch: int = 0
    next_seq: int = 0
    base_seq: int = 0
    """Sequence number of the first task after the lane's checkpoint files (`base_files`)."""
    base_files: list[str] = field(default_factory=list)
    sent: list[Any] = field(default_factory=list)
    """Requests sent since the checkpoint (resent in order, under a new epoch, if the lane is lost)."""
    blocks_in_flight: int = 0
    restoring: bool = False
    instance: str | None = None
    """The actor process that answered this epoch's requests: a report from another one means the actor
    restarted after the restore (its queues lack the blocks mined before), so the lane is restored again."""


@dataclass
class Cut:
    """A checkpoint being written: every block below `cut`, each lane's file in `folder`."""

    cut: int
    folder: Path
    started: float = 0.0
    """time.monotonic() when the lanes were asked to save."""
    saved: dict[int, int] = field(default_factory=dict)
    """Lane -> sequence number of its save task, once the lane reported the file written."""
    seqs: dict[int, int] = field(default_factory=dict)
    """Lane -> sequence number of its save task."""


class LaneLoop:
    """Send block k to lane k mod W, take the lanes' reports in any order, account for them strictly in block
    order (counters, moment sums, convergence, early stop, sample shards), checkpoint through the lanes.

    Lookahead: block j is sent only while j <= (blocks accounted for) + `lookahead`, so when the early stop is
    decided at block k, exactly the blocks up to k + lookahead have been or will be mined (they are already in
    the lanes' queues): the mined set depends on the data and the lane count only, never on timing.
    """

    def __init__(self, ctx: MiningContext, state: MiningState, plans: list[BlockPlan], pool: Executor,
                 sampled: dict[int, Any]) -> None:
        self.ctx, self.job, self.state, self.plans, self.pool = ctx, ctx.job, state, plans, pool
        self.sampled = sampled
        """Block index -> ids of its sentences in the score sample (see miner.mining.sample)."""
        self.reader = CorpusReader(ctx.corpus_dir, ctx.corpus)
        self.layers = ctx.layout.slices()
        self.directions = tuple(state.queues) if state.queues else (("top", "bottom") if ctx.job.bottom else ("top",))
        self.n_lanes = pool.lanes
        self.lookahead = LANE_DEPTH * self.n_lanes - 1
        self.reports: dict[int, LaneReport | None] = {}  # None: a block of a skipped (corrupt) shard
        self.next_dispatch = state.next_block
        stop = ctx.stop_after_blocks
        self.end_block = len(plans) if stop is None else min(len(plans), state.next_block + stop)
        self.total = sum(p.rows for p in plans)
        self.mined = 0  # sentences mined in this session
        self.t_loop = self.last_ckpt = time.monotonic()
        self.cut: Cut | None = None
        self.saved_cut = -1
        """The cut of the last checkpoint this session wrote."""
        self.failure: BaseException | None = None
        """A damaged shard met when sending a block: raised once the blocks before it are checkpointed."""
        self.deaths = 0
        self.lanes = self._start_lanes(state.lanes)

    def _start_lanes(self, saved: LaneFiles | None) -> dict[int, Lane]:
        """Each lane restarts from its checkpoint files; with another lane count, lane 0 takes them all."""
        lanes = {k: Lane() for k in range(self.n_lanes)}
        if saved is not None and saved.count == self.n_lanes:
            for k, lane in lanes.items():
                lane.base_files = list(saved.files.get(k, []))
                lane.base_seq = lane.next_seq = saved.seq.get(k, 0)
        elif saved is not None:
            lanes[0].base_files = [f for k in sorted(saved.files) for f in saved.files[k]]
            log.info("resuming with %d lane(s) where %d mined: lane 0 starts from all their queues (the tables "
                     "are the same; convergence counts differ from an uninterrupted run)", self.n_lanes, saved.count)
        for k, lane in lanes.items():
            self._restore(k, lane)
        return lanes

    def _restore(self, k: int, lane: Lane) -> None:
        lane.restoring = True
        self.pool.submit_lane(LaneRestore(k, lane.epoch, lane.base_seq, lane.base_files))

    def lane_of(self, block: int) -> int:
        return block % self.n_lanes

    def run(self) -> None:
        t_run = time.perf_counter()
        try:
            self._run()
            c = self.state.counters
            c["loop_seconds"] = c.get("loop_seconds", 0.0) + time.perf_counter() - t_run
            if self.failure is not None:
                raise self.failure
        except BaseException:
            if self.cut is not None:  # a checkpoint half-written: the previous one stays
                shutil.rmtree(self.cut.folder, ignore_errors=True)
            raise

    def _run(self) -> None:
        state = self.state
        c = state.counters
        while state.next_block < self.end_block or self.cut is not None:
            self._dispatch_ready()
            if (state.next_block < self.end_block and state.next_block in self.reports
                    and (self.cut is None or state.next_block < self.cut.cut)):
                pass
            elif self.pool.in_flight():
                t_wait = time.perf_counter()
                result = self.pool.next_result()
                # the driver's idle time: waiting for the lanes (inline, the lanes' work itself)
                c["driver_wait_seconds"] = c.get("driver_wait_seconds", 0.0) + time.perf_counter() - t_wait
                self._receive(result)
            elif self.cut is None or state.next_block < min(self.cut.cut, self.end_block):
                raise AssertionError("mining loop: nothing in flight and nothing to account for")
            # while a checkpoint is pending, blocks from its cut on wait: the checkpoint's state (counters,
            # moments, convergence) must cover exactly the blocks its lane files hold
            while (state.next_block < self.end_block and state.next_block in self.reports
                   and (self.cut is None or state.next_block < self.cut.cut)):
                self._account(self.reports.pop(state.next_block))
            self._maybe_checkpoint()
        if self.reports:  # blocks past an early stop that were mined but need no accounting: none by design
            raise AssertionError(f"unaccounted blocks {sorted(self.reports)}")

    def _dispatch_ready(self) -> None:
        while (self.next_dispatch < self.end_block and self.next_dispatch <= self.state.next_block + self.lookahead
               and self.lanes[self.lane_of(self.next_dispatch)].blocks_in_flight < LANE_DEPTH):
            self._dispatch(self.plans[self.next_dispatch])
            self.next_dispatch += 1

    def _dispatch(self, plan: BlockPlan) -> None:
        """Send one block to its lane, or mark it skipped (a corrupt shard, with skip_corrupt_shards)."""
        state = self.state
        if plan.shard not in state.skipped_shards:
            try:
                ids, texts = self.reader.block(plan)
            except DamagedShardError as exc:
                if not self.job.skip_corrupt_shards:
                    self._fail_at(plan, exc)
                    return
                if any(p.shard == plan.shard for p in self.plans[: plan.index]):
                    self._fail_at(plan, InputError(f"{exc.reason}; part of this shard was already mined, so it "
                                                   "cannot be skipped: restore it or delete the run folder"))
                    return
                log.warning("skipping %s (skip_corrupt_shards): %s", plan.shard, exc)
                state.skipped_shards[plan.shard] = exc.reason
        if plan.shard in state.skipped_shards:
            self.reports[plan.index] = None
            return
        k = self.lane_of(plan.index)
        lane = self.lanes[k]
        request = LaneBlock(k, lane.epoch, lane.next_seq, plan.index, ids, texts, self.sampled.get(plan.index))
        self._send(k, lane, request)
        lane.blocks_in_flight += 1

    def _fail_at(self, plan: BlockPlan, exc: BaseException) -> None:
        """Mine and checkpoint the blocks before `plan`, then stop with `exc`."""
        self.failure = exc
        self.end_block = min(self.end_block, plan.index)

    def _send(self, k: int, lane: Lane, request: Any) -> None:
        lane.next_seq += 1
        lane.sent.append(request)
        self.pool.submit_lane(request)

    def _receive(self, report: LaneReport) -> None:
        lane = self.lanes[report.lane]
        if report.epoch != lane.epoch:
            return  # sent before the lane was restored: it was sent again
        if lane.instance is None:
            lane.instance = report.instance
        if report.stale or report.instance != lane.instance:  # the actor restarted: its queues are gone
            self._recover(report.lane, lane)
            return
        if report.block is None and report.saved is None:  # the restore
            lane.restoring = False
            return
        if report.saved is not None:
            if self.cut is not None and report.saved.startswith(str(self.cut.folder.resolve())):
                self.cut.saved[report.lane] = report.seq
            return
        assert report.block is not None
        lane.blocks_in_flight = max(0, lane.blocks_in_flight - 1)
        if report.block >= self.state.next_block and report.block not in self.reports:
            self.reports[report.block] = report

    def _recover(self, k: int, lane: Lane) -> None:
        """Restore a lost lane from its checkpoint files and send its later requests again (same order, new
        epoch); blocks already accounted for are mined again only to rebuild the lane's queues."""
        self.deaths += 1
        if self.deaths > MAX_RESTARTS * self.n_lanes:
            raise MinerError("mining actors lost their state more often than Ray restarts them (out of memory? see "
                             "the Ray logs); completed blocks are checkpointed: re-run to resume")
        log.warning("lane %d lost its queues (its actor restarted); restoring it from its checkpoint and mining "
                    "its %d later block(s) again", k, sum(isinstance(r, LaneBlock) for r in lane.sent))
        lane.epoch += 1
        lane.instance = None
        self._restore(k, lane)
        sent, lane.sent, lane.next_seq = lane.sent, [], lane.base_seq
        lane.blocks_in_flight = 0
        if self.cut is not None:
            self.cut.saved.pop(k, None)
        for req in sent:
            again = dataclasses.replace(req, epoch=lane.epoch, seq=lane.next_seq)
            self._send(k, lane, again)
            if isinstance(again, LaneBlock):
                lane.blocks_in_flight += 1
            elif self.cut is not None and again.path.startswith(str(self.cut.folder.resolve())):
                self.cut.seqs[k] = again.seq

    def _account(self, report: LaneReport | None) -> None:
        """Account for the next block in order: counters, moments, sample shard, convergence, early stop."""
        state, job = self.state, self.job
        plan = self.plans[state.next_block]
        state.next_block += 1
        if report is None:  # nothing mined, no convergence row, early stop unaffected
            state.counters["skipped_sentences"] = state.counters.get("skipped_sentences", 0) + plan.rows
            return
        res = report.result
        assert res is not None and report.gains is not None and res.moments is not None
        assert state.moments is not None
        state.moments.add(res.moments)
        if plan.index in self.sampled:  # written before the checkpoint that covers this block
            assert res.sample is not None
            t_shard = time.monotonic()
            sample.write_shard(self.ctx.run, plan.index, self.sampled[plan.index], res.sample)
            res.stats.sample_seconds += time.monotonic() - t_shard
        for k in ("moments_seconds", "sample_seconds"):  # the cost of the moments and the sample, for the manifest
            state.counters[k] = state.counters.get(k, 0.0) + getattr(res.stats, k)
        s = res.stats
        for k in BLOCK_COUNTERS:
            state.counters[k] = state.counters.get(k, 0) + getattr(s, k)
        for k in ("forward_seconds", "tokenize_seconds"):
            state.counters[k] = state.counters.get(k, 0.0) + getattr(s, k)
        state.counters["worker_seconds"] += s.seconds
        self.mined += plan.rows
        n_units = self.ctx.layout.n_units
        gains = {d: torch.from_numpy(np.array(report.gains[i * n_units : (i + 1) * n_units])) for i, d in enumerate(self.directions)}
        rows = convergence_rows(plan, int(state.counters["sentences"]), gains, self.layers, job.top_n,
                                report.lane, self.n_lanes)
        state.convergence.extend(rows)
        overall = [r for r in rows if r["site"] == "all"]
        rate = sum(r["updates"] for r in overall) / sum(r["entries"] for r in overall)
        if job.early_stop is not None and not state.stopped_early:
            calm = rate < job.early_stop.max_update_rate
            state.calm_blocks = state.calm_blocks + 1 if calm else 0
            if (state.calm_blocks >= job.early_stop.patience
                    and state.counters["sentences"] >= job.early_stop.min_sentences):
                state.stopped_early = True
                # the blocks this loop may already have sent (see the class) are mined and accounted for too
                self.end_block = min(self.end_block, plan.index + 1 + self.lookahead)
                log.info("queues converged (update rate < %.3g for %d blocks) at block %d; stopping after block %d",
                         job.early_stop.max_update_rate, job.early_stop.patience, plan.index, self.end_block - 1)
        elapsed = time.monotonic() - self.t_loop
        speed = self.mined / elapsed if elapsed > 0 else 0.0
        left = self.total - state.counters["sentences"] - state.counters.get("skipped_sentences", 0)
        log.info("block %d/%d  %s sentences  %.0f sent/s  ETA %s  update rate %.2f%%",
                 state.next_block, len(self.plans), f"{int(state.counters['sentences']):,}", speed,
                 format_eta(left / speed if speed else 0), 100 * rate)

    def _maybe_checkpoint(self) -> None:
        """Start a checkpoint when due (every lane saves its queues after the blocks sent so far), write it when
        every block below its cut is accounted for and every lane's file is written."""
        state = self.state
        done = state.next_block >= self.end_block
        if self.cut is None:
            due = time.monotonic() - self.last_ckpt >= self.job.checkpoint_seconds
            if not (done or due) or any(lane.restoring for lane in self.lanes.values()):
                return
            if self.next_dispatch == state.next_block and (not done or self.saved_cut == state.next_block):
                return  # nothing new since the last checkpoint
            self.cut = Cut(self.next_dispatch, checkpoint_folder(self.ctx.run, self.next_dispatch), time.monotonic())
            for k, lane in self.lanes.items():
                self.cut.seqs[k] = lane.next_seq
                self._send(k, lane, LaneSave(k, lane.epoch, lane.next_seq, str(self.cut.folder.resolve() / lane_name(k)),
                                             str(self.ctx.run.checkpoint)))
        cut = self.cut
        if state.next_block < min(cut.cut, self.end_block) or len(cut.saved) < len(self.lanes):
            return
        if any(cut.saved[k] != cut.seqs[k] for k in cut.saved):  # a lane was restored meanwhile: it saves again
            return
        files = LaneFiles(self.n_lanes, {k: [lane_name(k)] for k in self.lanes}, {k: cut.seqs[k] + 1 for k in self.lanes})
        size = sum(p.stat().st_size for p in cut.folder.iterdir() if p.is_file())
        c = state.counters  # the checkpoints' cost: lanes save in parallel, the wait is for the slowest
        c["checkpoints"] = c.get("checkpoints", 0) + 1
        c["checkpoint_seconds"] = c.get("checkpoint_seconds", 0.0) + time.monotonic() - cut.started
        c["checkpoint_bytes"] = size
        save_checkpoint(self.ctx.run, state, self.ctx.fingerprint, cut.folder, files)
        for k, lane in self.lanes.items():
            lane.base_files = [str(self.ctx.run.checkpoint.resolve() / lane_name(k))]
            lane.base_seq = cut.seqs[k] + 1
            lane.sent = [r for r in lane.sent if r.seq > cut.seqs[k]]
        state.lanes = files
        self.saved_cut = cut.cut
        self.cut = None
        self.last_ckpt = time.monotonic()


def lane_name(k: int) -> str:
    return f"lane-{k:03d}"
