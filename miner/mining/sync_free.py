"""The sync-free batch loop (the default on CUDA): a block's inputs staged in one buffer and one copy, stage
times from CUDA events, and per batch nothing read back from the device (see `BlockMiner`)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from miner.mining.batches import Batch
from miner.mining.block_records import BlockStats, PreparedBlock
from miner.mining.block_sums import BatchSums, SampleRows
from miner.mining.peaks import RealTokens, candidate_slab, dense_peak_pair, real_span, signed_rows
from miner.mining.topn import Candidates, WindowedQueues
from miner.model.layout import UnitLayout
from miner.model.loading import LoadedModel


class BlockMiner(Protocol):
    """What the loop uses of `miner.mining.block_miner.BlockMiner`."""

    loaded: LoadedModel
    layout: UnitLayout
    offsets: list[int]
    directions: tuple[str, ...]
    use_native: bool
    sync_debug: str | None

    def score_weights(self, real: torch.Tensor) -> torch.Tensor: ...

    def weighted_scores(self, tensors: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor: ...

    def forward(self, batch: Batch) -> list[torch.Tensor]: ...

    def window_queue(self, floor: torch.Tensor | None) -> WindowedQueues: ...


@dataclass
class StagedBatch:
    """One batch's inputs on the device, as views of its block's staged buffer (`stage_block`)."""

    batch: Batch
    """ids, input_ids, attention and real on the device; the token counts of the CPU batch."""
    tokens: RealTokens
    """Where the real tokens lie (device views; span bounds known on the host)."""
    weights: torch.Tensor
    """float32 token weights of the scores (`BlockMiner.score_weights`), on the device."""
    sample_ids: np.ndarray
    """int64 the ids of the batch's sampled sentences, in batch order (host)."""
    sample_rows: torch.Tensor
    """int64 [k] their rows in the batch, on the device."""


def stage_block(batches: list[Batch], weights: Callable[[torch.Tensor], torch.Tensor],
                 sample: SampleRows | None, device: torch.device) -> list[StagedBatch]:
    """Every input of a block's batch loop, worked out on the host from the CPU batches, in one host buffer
    (pinned when the device is CUDA) copied to the device with one non-blocking copy: the loop then reads views
    of it, and nothing in it waits for the host.

    Per batch: token ids, attention mask, sentence ids, the rows and positions of the tokens that are not real
    (`RealTokens.holes`), the rows of the sampled sentences (int64); the score weights (float32); the real-token
    mask (bool). On the CPU the views are of the host buffer itself (no copy).
    Example: 2 batches of [4, 6] tokens with 3 holes each, no sample -> 2 * (24 + 24 + 4 + 6) int64, 2 * 24
    float32 and 2 * 24 bool cells, 1,168 bytes, one copy.
    """
    specs: list[tuple[torch.Tensor, torch.dtype]] = []  # (flat CPU tensor, its dtype), placed below

    def part(t: torch.Tensor) -> int:
        specs.append((t.reshape(-1), t.dtype))
        return len(specs) - 1

    host_parts = []
    for batch in batches:
        rows, cols = (~batch.real).nonzero(as_tuple=True)
        lo, hi = real_span(batch.real)
        ids = batch.ids.numpy()
        hit = sample.rows(ids) if sample is not None else np.zeros(0, np.int64)
        w = weights(batch.real)
        host_parts.append((lo, hi, ids[hit], w.shape,
                           [part(batch.input_ids), part(batch.attention), part(batch.ids), part(rows), part(cols),
                            part(torch.from_numpy(hit.astype(np.int64))), part(w.contiguous()), part(batch.real)]))
    order = sorted(range(len(specs)), key=lambda k: -specs[k][0].element_size())  # int64, then float32, bool
    starts = [0] * len(specs)
    total = 0
    for k in order:
        starts[k] = total
        total += specs[k][0].numel() * specs[k][0].element_size()
    host = torch.empty(total, dtype=torch.uint8, pin_memory=device.type == "cuda")
    for (flat, dtype), at in zip(specs, starts):
        host[at : at + flat.numel() * flat.element_size()].view(dtype).copy_(flat)
    dev = host.to(device, non_blocking=True)

    def view(k: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        flat, dtype = specs[k]
        return dev[starts[k] : starts[k] + flat.numel() * flat.element_size()].view(dtype).view(shape)

    staged = []
    for batch, (lo, hi, sample_ids, w_shape, ks) in zip(batches, host_parts):
        shape = tuple(batch.input_ids.shape)
        real = view(ks[7], shape)
        holes = (view(ks[3], (-1,)), view(ks[4], (-1,)))
        staged.append(StagedBatch(
            Batch(view(ks[2], (-1,)), view(ks[0], shape), view(ks[1], shape), real, batch.real_tokens,
                  batch.attended_tokens),
            RealTokens(real, real[:, lo:hi], lo, hi - lo, holes), view(ks[6], w_shape), sample_ids,
            view(ks[5], (-1,))))
    return staged


class StageClock:
    """Stage times of a batch loop: CUDA events recorded per batch and read once per block on a GPU (GPU times,
    read without a sync inside the loop), wall-clock marks elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.spans: list[tuple[str, Any, Any]] = []
        self.totals: dict[str, float] = defaultdict(float)

    def mark(self) -> Any:
        """A point in the stream of work (an event recorded on the current CUDA stream, or a wall time)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def span(self, stage: str, start: Any) -> Any:
        """Close a span of `stage` begun at mark `start`; returns its end (the next span's start)."""
        end = self.mark()
        if self.cuda:
            self.spans.append((stage, start, end))
        else:
            self.totals[stage] += end - start
        return end

    def read(self) -> dict[str, float]:
        """Seconds per stage (on CUDA: waits for the last span's end)."""
        if self.spans:
            self.spans[-1][2].synchronize()
            for stage, start, end in self.spans:
                self.totals[stage] += start.elapsed_time(end) / 1000.0
            self.spans.clear()
        return dict(self.totals)


@contextmanager
def sync_debug_mode(mode: str | None, device: torch.device) -> Iterator[None]:
    """Run a block under torch.cuda.set_sync_debug_mode(mode) ('warn', 'error') on CUDA; nothing otherwise."""
    if mode is None or device.type != "cuda":
        yield
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def mine_sync_free(miner: BlockMiner, prepared: PreparedBlock, floor: torch.Tensor | None,
                   sample_ids: np.ndarray | None, stats: BlockStats) -> tuple[Candidates, BatchSums, SampleRows | None] | None:
    """The sync-free loop over a block's batches (`_add_staged`), or None if some score was not finite.

    The block's inputs are staged once (`stage_block`: one pinned buffer, one non-blocking copy); per batch
    nothing is read from the device (counts and the window's fill level are known on the host, thresholds
    rise on the device, finiteness is the moment sums' and the sample rows stay on the device). After the
    loop the device is read for the candidates (`WindowedQueues.finish`), the finiteness and the stage
    times, and at `BlockResult` for the sums and sample rows.
    """
    dev = miner.loaded.device
    sample = SampleRows(sample_ids) if sample_ids is not None else None
    staged = stage_block(prepared.batches, miner.score_weights, sample, dev)
    sums = BatchSums(miner.layout.n_units, dev, miner.use_native)
    queue = miner.window_queue(floor)
    clock = StageClock(dev)
    with torch.inference_mode():
        with sync_debug_mode(miner.sync_debug, dev):
            for sb in staged:
                _add_staged(miner, queue, sb, stats, sums, sample, clock)
        found = queue.finish()
    finite = sums.finite()
    times = clock.read()
    if not finite:
        return None
    stats.forward_seconds += times.get("forward", 0.0)
    stats.scores_seconds += times.get("scores", 0.0)
    stats.moments_seconds += times.get("moments", 0.0)
    stats.sample_seconds += times.get("sample", 0.0)
    stats.window_seconds += times.get("window", 0.0)
    stats.flush_seconds += times.get("flush", 0.0)
    stats.sync_free_batches = len(staged)
    return found, sums, sample


def _add_staged(miner: BlockMiner, queue: WindowedQueues, sb: StagedBatch, stats: BlockStats, sums: BatchSums,
                sample: SampleRows | None, clock: StageClock) -> None:
    """One batch of the sync-free loop: forward pass, scores into the sums and the sample, then every cell
    into the window densely (keys where they beat the threshold, SENTINEL elsewhere; both directions' peaks,
    `dense_peak_pair`); the window's top-k pass when it is full. Nothing is read from the device."""
    with torch.profiler.record_function("miner.batch"):
        _add_staged_batch(miner, queue, sb, stats, sums, sample, clock)


def _add_staged_batch(miner: BlockMiner, queue: WindowedQueues, sb: StagedBatch, stats: BlockStats,
                      sums: BatchSums, sample: SampleRows | None, clock: StageClock) -> None:
    batch = sb.batch
    t = clock.mark()
    with torch.profiler.record_function("miner.forward"):
        tensors = miner.forward(batch)
    t = clock.span("forward", t)
    stats.batches += 1
    stats.real_tokens += batch.real_tokens
    stats.attended_tokens += batch.attended_tokens
    stats.computed_tokens += batch.input_ids.numel()
    scores = miner.weighted_scores(tensors, sb.weights)
    t = clock.span("scores", t)
    sums.add(scores)
    t = clock.span("moments", t)
    if sample is not None and len(sb.sample_ids):
        sample.add_rows(sb.sample_ids, scores.index_select(0, sb.sample_rows))
        t = clock.span("sample", t)
    b = scores.shape[0]
    if queue.needs_flush(b):
        queue.flush()
        t = clock.span("flush", t)
    keys, payload = queue.open_slab(b)
    candidate_slab(signed_rows(scores, queue.n_units), batch.ids, queue.thresh, out=keys)
    n_units = miner.layout.n_units
    top, bottom = dense_peak_pair(tensors, miner.offsets, n_units, sb.tokens, len(miner.directions) == 2)
    payload[:n_units] = top.T
    if bottom is not None:
        payload[n_units:] = bottom.T
    queue.close_slab(b)
    clock.span("window", t)
