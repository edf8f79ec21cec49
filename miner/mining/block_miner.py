"""The worker-side hot path of mining: one forward pass per batch, unit scores, and each block's queue candidates."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from miner.mining import native
from miner.mining.batches import Batch, make_batches
from miner.mining.moments import MomentSums
from miner.mining.peaks import (
    RealTokens,
    candidate_peaks,
    candidate_slab,
    candidate_superset,
    dense_peak_pair,
    dense_peaks,
    real_span,
    signed_rows,
    sparse_candidates,
)
from miner.mining.sketch import BINS, score_bins_torch
from miner.mining.topn import Candidates, WindowedQueues
from miner.model.layout import UnitLayout, down_projection, model_max_length, transformer_blocks
from miner.model.loading import LoadedModel


@dataclass
class BlockStats:
    """What one block cost and contained."""

    sentences: int = 0
    real_tokens: int = 0
    """Tokens that count for scores (special tokens and padding excluded)."""
    attended_tokens: int = 0
    """Tokens the model attends to (real + special tokens); padding efficiency = attended / computed."""
    computed_tokens: int = 0
    truncated: int = 0
    batches: int = 0
    kernel_batches: int = 0
    """Batches whose scores and peaks came from the compiled kernel (`miner.mining.native`); the others from torch."""
    seconds: float = 0.0
    forward_seconds: float = 0.0
    """The forward passes: GPU time (CUDA events) in the sync-free loop on CUDA, else wall time."""
    tokenize_seconds: float = 0.0
    merge_seconds: float = 0.0
    moments_seconds: float = 0.0
    """Of `seconds`: accumulating the moment sums (on a GPU outside the sync-free loop, only the time to queue
    the operations)."""
    sample_seconds: float = 0.0
    """Of `seconds`: gathering the sample sentences' scores."""
    scores_seconds: float = 0.0
    """Computing the scores from the activations (with the compiled kernel: its peaks too)."""
    window_seconds: float = 0.0
    """Candidates: keys, peaks and the window writes (in the exact loop: the window's top-k passes too)."""
    flush_seconds: float = 0.0
    """The window's top-k passes in the sync-free loop (in the exact loop they are part of `window_seconds`).
    Stage times are GPU times (CUDA events read once per block) in the sync-free loop on CUDA, else wall times."""
    sync_free_batches: int = 0
    """Batches mined by the sync-free loop (0 for a block it mined again with the exact loop, see `BlockMiner`)."""


@dataclass
class PreparedBlock:
    """A block tokenised and cut into batches, ready for the forward passes (`BlockMiner.prepare`)."""

    ids: np.ndarray
    """int64 [n] the block's sentence ids."""
    batches: list[Batch]
    truncated: int
    """Sentences cut to max_length."""
    seconds: float
    """Time spent tokenising and building the batches."""


@dataclass
class BlockResult:
    """A block's queue candidates per direction (numpy arrays: flat and unit-major, or dense rows, see
    `Candidates`), its stats, the moment sums of its scores and the scores of its sampled sentences."""

    block: int
    directions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    stats: BlockStats = field(default_factory=BlockStats)
    moments: MomentSums | None = None
    """Sums of every unit's scores over the block's sentences (see `miner.mining.moments`)."""
    sample: np.ndarray | None = None
    """float32 [k, U]: the scores of the requested sample sentences, in request order (None: none requested)."""


class _BatchSums:
    """A block's moment sums accumulated batch by batch on the scores' device (float64 sums of float32 scores)."""

    def __init__(self, n_units: int, device: torch.device, use_native: bool = False) -> None:
        self.count = 0
        self.native = use_native and device.type == "cpu"
        """Count the histogram with the compiled kernel (`native.score_histogram`)."""
        self.total = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.squares = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.low = torch.full((n_units,), float("inf"), dtype=torch.float32, device=device)  # exact in float32
        self.high = torch.full((n_units,), float("-inf"), dtype=torch.float32, device=device)
        self.positive = torch.zeros(n_units, dtype=torch.float64, device=device)  # counts: exact below 2**53
        self.hist = torch.zeros(n_units * BINS, dtype=torch.int64, device=device)
        """Sentences per (unit, score bin), unit-major (`miner.mining.sketch`)."""
        self._offsets = torch.arange(n_units, dtype=torch.int64, device=device) * BINS
        self._ones: dict[int, torch.Tensor] = {}
        self._one = torch.ones(1, dtype=torch.int64, device=device)

    def add(self, scores: torch.Tensor) -> None:
        """Add a batch of float32 [B, U] scores.

        The column sums are products with a row of ones (a column reduction over a row-major [B, U] tensor is
        several times slower than one matrix-vector product), min and max come from one pass (aminmax).
        """
        x = scores.to(torch.float64)
        b = int(x.shape[0])
        ones = self._ones.get(b)
        if ones is None:  # made once per batch size (most batches of a block have the same)
            ones = self._ones[b] = torch.ones((1, b), dtype=torch.float64, device=x.device)
        self.count += b
        self.total += (ones @ x)[0]
        self.squares += (ones @ (x * x))[0]
        low, high = torch.aminmax(scores, dim=0)  # NaN propagates, as in MomentSums.add
        torch.minimum(self.low, low, out=self.low)
        torch.maximum(self.high, high, out=self.high)
        self.positive += (ones @ (x > 0).to(torch.float64))[0]  # a batch's counts (< 2**53) are exact in float64
        if self.native and native.takes([scores[None]]):  # the compiled twin of the two lines below
            native.score_histogram(scores, self.hist)
            return
        # integer adds: exact in any order (bincount would read the largest index back: a host sync on CUDA)
        cells = (score_bins_torch(scores) + self._offsets).view(-1)
        self.hist.index_add_(0, cells, self._one.expand(cells.numel()))

    def finite(self) -> bool:
        """Whether every score added was finite (one device read): float64 sums of finite float32 scores never
        overflow, and a NaN or infinite score makes its unit's sum NaN or infinite."""
        return bool(torch.isfinite(self.total).all())

    def result(self) -> MomentSums:
        return MomentSums(self.count, self.total.cpu().numpy(), self.squares.cpu().numpy(),
                          self.low.cpu().numpy().astype(np.float64), self.high.cpu().numpy().astype(np.float64),
                          self.positive.cpu().numpy().astype(np.int64),
                          self.hist.view(-1, BINS).to(torch.int32).cpu().numpy())  # a block's counts fit int32


class _SampleRows:
    """The scores of a block's sampled sentences, gathered batch by batch (on the scores' device, read once at
    `result`) and returned in request order."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.wanted = np.sort(self.ids)
        self.found_ids: list[np.ndarray] = []
        self.found: list[torch.Tensor] = []

    def rows(self, batch_ids: np.ndarray) -> np.ndarray:
        """int64: the rows of a batch (its sentence ids) holding sampled sentences.

        >>> _SampleRows(np.array([9, 4])).rows(np.array([4, 5, 9])).tolist()
        [0, 2]
        """
        return np.flatnonzero(np.isin(batch_ids, self.wanted))

    def add(self, batch_ids: torch.Tensor, scores: torch.Tensor) -> None:
        """Gather a batch's sampled rows (CPU `batch_ids`; the row indices go to the scores' device)."""
        ids = batch_ids.numpy()
        rows = self.rows(ids)
        if len(rows):
            self.add_rows(ids[rows], scores.index_select(0, torch.from_numpy(rows).to(scores.device)))

    def add_rows(self, ids: np.ndarray, rows: torch.Tensor) -> None:
        """Add sampled sentences' ids and their score rows (float32 [k, U], on any device)."""
        self.found_ids.append(ids)
        self.found.append(rows)

    def result(self, n_units: int) -> np.ndarray:
        if not self.found:
            got_ids, got = np.zeros(0, np.int64), np.zeros((0, n_units), np.float32)
        else:
            got_ids, got = np.concatenate(self.found_ids), torch.cat(self.found).cpu().numpy()
        order = np.argsort(got_ids)
        if not np.array_equal(got_ids[order], self.wanted):  # the driver only asks for ids of the block
            raise ValueError("sample ids that are not in the block were requested")
        return np.ascontiguousarray(got[order[np.searchsorted(got_ids[order], self.ids)]], dtype=np.float32)


@dataclass
class _StagedBatch:
    """One batch's inputs on the device, as views of its block's staged buffer (`_stage_block`)."""

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


def _stage_block(batches: list[Batch], weights: Callable[[torch.Tensor], torch.Tensor],
                 sample: _SampleRows | None, device: torch.device) -> list[_StagedBatch]:
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
        staged.append(_StagedBatch(
            Batch(view(ks[2], (-1,)), view(ks[0], shape), view(ks[1], shape), real, batch.real_tokens,
                  batch.attended_tokens),
            RealTokens(real, real[:, lo:hi], lo, hi - lo, holes), view(ks[6], w_shape), sample_ids,
            view(ks[5], (-1,))))
    return staged


class _StageClock:
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
def _sync_debug(mode: str | None, device: torch.device) -> Iterator[None]:
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


class BlockMiner:
    """Scores blocks of sentences for every unit of a layout and keeps per-unit candidates.

    `mine_block` takes one block of sentences (ids + texts), tokenises them, sorts them by length into batches
    (less padding), runs one forward pass per batch that feeds every selected layer and site, scores every unit
    (mean over real tokens; padding and special tokens excluded) and keeps, per unit, the block's candidates that
    beat the dispatched global threshold, with their peak token.

    Two batch loops give the same blocks (entries, moments, sample, counters): the exact loop (`_add_batch`:
    sparse candidates when few cells qualify, the compiled kernel on the CPU, NaN/inf handled per batch) and the
    sync-free loop (`sync_free`, the default on CUDA: `_add_staged`), which never waits for the device inside
    the loop and mines a block again with the exact loop if some score of it was not finite.
    """

    def __init__(self, loaded: LoadedModel, layout: UnitLayout, top_n: int, bottom: bool = True,
                 aggregation: str = "mean", max_length: int = 128, batch_size: int = 64, window: int | None = None,
                 use_native: bool = True, sync_free: bool | None = None, batch_tokens: int | None = None) -> None:
        self.loaded = loaded
        self.layout = layout
        self.top_n = top_n
        self.directions = ("top", "bottom") if bottom else ("top",)
        self.aggregation = aggregation
        self.max_length = min(max_length, model_max_length(loaded.config))
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        """Padded tokens per batch at most (`miner.mining.batches.batch_bounds`); None: batch_size sentences."""
        self.window = window or max(batch_size, 16 * batch_size)
        self.offsets = layout.offsets()
        self.dense_window_fraction = 0.15
        """A batch whose candidate superset covers at least this share of its cells is handled densely: keys,
        peaks and the window write for every cell (cheaper than gathering and scattering most of them)."""
        self.dense_peak_fraction = 0.06
        """Peaks are computed densely for a batch when at least this share of its (sentence, unit) cells are
        candidates (the dense reduction is then cheaper than gathering the candidates' token rows)."""
        self.use_native = use_native and loaded.device.type == "cpu" and native.available()
        """Scores and peaks of CPU float32 batches come from the compiled one-pass kernel (`miner.mining.native`)."""
        if sync_free is None:  # MINER_SYNC_FREE=1 (0) switches it on (off) on any device, e.g. to test it on a CPU
            forced = os.environ.get("MINER_SYNC_FREE", "")
            sync_free = forced == "1" if forced in ("0", "1") else loaded.device.type == "cuda"
        self.sync_free = sync_free
        """Blocks are mined by the sync-free loop (`mine_prepared`): on by default on CUDA; on the CPU the exact
        loop (compiled kernel, sparse candidates) is faster, and True there runs the same code for tests."""
        self.sync_debug: str | None = None
        """On CUDA, run the sync-free batch loop under torch.cuda.set_sync_debug_mode(this): 'warn' or 'error'
        reports any host sync inside it (the block's last steps, after the loop, read the device once)."""
        self._queue: WindowedQueues | None = None
        self._captured: dict[int, torch.Tensor] = {}
        self._hooks = []
        self._need_hidden = any(site == "hidden" for site, _, _ in layout.layers)
        blocks = transformer_blocks(loaded.model) if any(s == "mlp" for s, _, _ in layout.layers) else None
        for site, layer, _ in layout.layers:
            if site == "mlp":
                assert blocks is not None
                mod = down_projection(blocks[layer - 1])
                self._hooks.append(mod.register_forward_pre_hook(self._capture(layer)))

    def _capture(self, layer: int):
        def hook(_module: torch.nn.Module, args: tuple) -> None:
            self._captured[layer] = args[0]
        return hook

    def close(self) -> None:
        for h in self._hooks:
            h.remove()

    @torch.inference_mode()
    def forward(self, batch: Batch) -> list[torch.Tensor]:
        """One forward pass; returns the mined activation tensors [B, T, width] in layout order."""
        dev = self.loaded.device
        self._captured.clear()
        out = self.loaded.model(input_ids=batch.input_ids.to(dev, non_blocking=True),
                                attention_mask=batch.attention.to(dev, non_blocking=True),
                                output_hidden_states=self._need_hidden, use_cache=False)
        tensors = []
        for site, layer, _ in self.layout.layers:
            tensors.append(out.hidden_states[layer] if site == "hidden" else self._captured[layer])
        return tensors

    def scores(self, tensors: list[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
        """float32 [B, U]: each unit's sentence score (mean, or max, over real tokens), as mining computes it:
        the compiled kernel where it runs (`native`), else `torch_scores`."""
        cells = self._kernel_cells(tensors, real, False)
        return cells.scores if cells is not None else self.torch_scores(tensors, real)

    def _kernel_cells(self, tensors: list[torch.Tensor], real: torch.Tensor, bottom: bool) -> native.TokenStats | None:
        """Scores and peaks of every cell from the compiled kernel, or None where the torch operations run: the
        kernel is off or does not take these tensors, or some activation is NaN or infinite (torch's semantics
        then, for scores and peaks alike)."""
        if not (self.use_native and native.takes(tensors)):
            return None
        cells = native.token_stats(tensors, self.offsets, self.layout.n_units, real, self.aggregation == "mean",
                                   bottom)
        return cells if cells.finite else None

    def torch_scores(self, tensors: list[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
        """`scores` with torch operations (any device and dtype; `real` is moved to the activations' device)."""
        dev = tensors[0].device if tensors else real.device
        return self.weighted_scores(tensors, self.score_weights(real.to(dev)))

    def score_weights(self, real: torch.Tensor) -> torch.Tensor:
        """float32 token weights of `weighted_scores`, on `real`'s device: [B, 1, T] real / count (mean), or
        [B, T, 1] 0 at real tokens, -inf elsewhere (max). Worked out on the host for the sync-free loop (IEEE
        division and the constants are the same bits on any device).

        Example: mean, real [[0, 1, 1, 0]] -> [[[0.0, 0.5, 0.5, 0.0]]].
        """
        if self.aggregation == "mean":
            return (real.to(torch.float32) / real.sum(1, keepdim=True).to(torch.float32))[:, None, :]
        return torch.where(real, 0.0, float("-inf")).to(torch.float32)[:, :, None]

    def weighted_scores(self, tensors: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        """float32 [B, U] scores from activations and `score_weights`: per layer, the weighted mean as one bmm
        ([B, 1, T] @ [B, T, W]), or the max of the activations plus 0 / -inf."""
        b = weights.shape[0]
        out = torch.empty((b, self.layout.n_units), dtype=torch.float32, device=weights.device)
        if self.aggregation == "mean":
            for x, off in zip(tensors, self.offsets):
                out[:, off : off + x.shape[2]] = torch.bmm(weights, x.to(torch.float32))[:, 0]
        else:
            for x, off in zip(tensors, self.offsets):
                out[:, off : off + x.shape[2]] = (x.to(torch.float32) + weights).amax(1)
        return out

    def extremes(self, tensors: list[torch.Tensor], real: torch.Tensor, largest: bool) -> torch.Tensor:
        """int64 [B, U]: packed peaks of every cell, see `dense_peaks` (which overwrites non-real cells)."""
        return dense_peaks(tensors, self.offsets, self.layout.n_units, RealTokens.of(real), largest)

    def peaks(self, tensors: list[torch.Tensor], tokens: RealTokens, units: torch.Tensor, cols: torch.Tensor,
              largest: bool, restore: bool = True, dense_ok: bool = True) -> torch.Tensor:
        """int64 [K]: packed peaks of the candidate cells (units[k], cols[k]), units ascending.

        Dense (`dense_peaks`, then pick the cells) when at least `dense_peak_fraction` of the batch's cells are
        candidates, since the dense passes are then cheaper than gathering every candidate's token row; per
        candidate (`candidate_peaks`) otherwise. Both give identical payloads for finite activations; a batch
        with NaN or infinite scores passes `dense_ok=False` (per candidate: torch.max's first NaN, and real
        tokens only even where every one is infinite). `restore`: see `dense_peaks`.
        """
        if dense_ok and units.numel() >= self.dense_peak_fraction * tokens.mask.shape[0] * self.layout.n_units:
            return dense_peaks(tensors, self.offsets, self.layout.n_units, tokens, largest, restore)[cols, units]
        return candidate_peaks(tensors, self.offsets, tokens, units, cols, largest)

    def prepare(self, ids: np.ndarray, texts: list[str]) -> PreparedBlock:
        """Tokenise a block and cut it into padded, length-sorted batches (CPU only: runs ahead of the forward
        passes, e.g. in another thread while the previous block is mined)."""
        t0 = time.perf_counter()
        ids = np.asarray(ids, dtype=np.int64)
        if not texts:
            return PreparedBlock(ids, [], 0, 0.0)
        batches, truncated = make_batches(self.loaded.tokenizer, ids, texts, self.max_length, self.batch_size,
                                          self.batch_tokens)
        return PreparedBlock(ids, batches, truncated, time.perf_counter() - t0)

    def mine_block(self, block: int, ids: np.ndarray, texts: list[str],
                   floors: dict[str, np.ndarray] | None = None, sample_ids: np.ndarray | None = None) -> BlockResult:
        """Mine one block; candidates are the block's local top-N entries that beat `floors` (per direction),
        returned as numpy arrays per direction (`BlockResult.directions`). See `mine_prepared`."""
        floor = None
        if floors is not None:
            floor = torch.from_numpy(np.concatenate([np.asarray(floors[d], dtype=np.int64) for d in self.directions]))
        found, result = self.mine_prepared(block, self.prepare(ids, texts), floor, sample_ids)
        t0 = time.perf_counter()
        result.directions = self.split_directions(found)
        result.stats.seconds += time.perf_counter() - t0
        result.stats.merge_seconds += time.perf_counter() - t0
        return result

    def mine_prepared(self, block: int, prepared: PreparedBlock, floor: torch.Tensor | None = None,
                      sample_ids: np.ndarray | None = None) -> tuple[Candidates, BlockResult]:
        """Mine one prepared block: (its candidates on the device, rows direction by direction (row d * U + u:
        direction d, unit u), the block's local best N per row above `floor` (int64 [D * U] keys, None: no
        floor); its result without `directions`).

        Every batch's scores also feed the block's moment sums (`BlockResult.moments`), and the scores of the
        sentences in `sample_ids` (ids of this block) are returned in that order (`BlockResult.sample`).

        Both directions live in one windowed queue of D x U rows (the bottom rows hold the keys of the negated
        scores). The exact loop (`_add_batch`) makes dense only the scores of a batch: candidates are the cells
        whose score reaches their row's threshold score (`candidate_superset`, `sparse_candidates`), and only
        they get keys, peak tokens (see `peaks`) and a place in the window; a batch where most cells qualify is
        handled densely (`candidate_slab`). On CPU the scores and both directions' peaks of every cell come from
        one compiled pass (`miner.mining.native`); with the torch operations, the top direction's peaks come
        first (a dense peak search overwrites non-real cells, after the scores). The sync-free loop
        (`_mine_sync_free`) handles every batch densely and reads the device only after its last batch; a block
        with a non-finite score is mined again by the exact loop, so NaN/inf semantics are the exact loop's.
        """
        t0 = time.perf_counter()
        mined = None
        if self.sync_free and prepared.batches:
            stats = self._new_stats(prepared)
            mined = self._mine_sync_free(prepared, floor, sample_ids, stats)
        if mined is None:  # sync-free off, or a NaN/inf score in the block: the exact loop (torch semantics)
            stats = self._new_stats(prepared)
            mined = self._mine_exact(prepared, floor, sample_ids, stats)
        found, sums, sample = mined
        result = BlockResult(block=block, stats=stats, moments=sums.result(),
                             sample=sample.result(self.layout.n_units) if sample is not None else None)
        stats.seconds = time.perf_counter() - t0 + prepared.seconds
        stats.merge_seconds = stats.seconds - stats.forward_seconds - stats.tokenize_seconds
        return found, result

    @staticmethod
    def _new_stats(prepared: PreparedBlock) -> BlockStats:
        return BlockStats(sentences=len(prepared.ids), truncated=prepared.truncated,
                          tokenize_seconds=prepared.seconds)

    def _window_queue(self, floor: torch.Tensor | None) -> WindowedQueues:
        """The block's window, emptied and floored (its buffers are reused from block to block)."""
        if self._queue is None:
            self._queue = WindowedQueues(len(self.directions) * self.layout.n_units, self.top_n,
                                         max(self.window, self.batch_size), floor, self.loaded.device)
        self._queue.reset(floor)
        return self._queue

    def _mine_exact(self, prepared: PreparedBlock, floor: torch.Tensor | None, sample_ids: np.ndarray | None,
                    stats: BlockStats) -> tuple[Candidates, _BatchSums, _SampleRows | None]:
        """The exact loop over a block's batches (`_add_batch`): (candidates, moment sums, sample rows)."""
        sample = _SampleRows(sample_ids) if sample_ids is not None else None
        sums = _BatchSums(self.layout.n_units, self.loaded.device, self.use_native)
        queue = self._window_queue(floor)
        with torch.inference_mode():
            for batch in prepared.batches:
                self._add_batch(queue, batch, stats, sums, sample)
            found = queue.finish()
        return found, sums, sample

    def _mine_sync_free(self, prepared: PreparedBlock, floor: torch.Tensor | None, sample_ids: np.ndarray | None,
                        stats: BlockStats) -> tuple[Candidates, _BatchSums, _SampleRows | None] | None:
        """The sync-free loop over a block's batches (`_add_staged`), or None if some score was not finite.

        The block's inputs are staged once (`_stage_block`: one pinned buffer, one non-blocking copy); per batch
        nothing is read from the device (counts and the window's fill level are known on the host, thresholds
        rise on the device, finiteness is the moment sums' and the sample rows stay on the device). After the
        loop the device is read for the candidates (`WindowedQueues.finish`), the finiteness and the stage
        times, and at `BlockResult` for the sums and sample rows.
        """
        dev = self.loaded.device
        sample = _SampleRows(sample_ids) if sample_ids is not None else None
        staged = _stage_block(prepared.batches, self.score_weights, sample, dev)
        sums = _BatchSums(self.layout.n_units, dev, self.use_native)
        queue = self._window_queue(floor)
        clock = _StageClock(dev)
        with torch.inference_mode():
            with _sync_debug(self.sync_debug, dev):
                for sb in staged:
                    self._add_staged(queue, sb, stats, sums, sample, clock)
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

    def _add_staged(self, queue: WindowedQueues, sb: _StagedBatch, stats: BlockStats, sums: _BatchSums,
                    sample: _SampleRows | None, clock: _StageClock) -> None:
        """One batch of the sync-free loop: forward pass, scores into the sums and the sample, then every cell
        into the window densely (keys where they beat the threshold, SENTINEL elsewhere; both directions' peaks,
        `dense_peak_pair`); the window's top-k pass when it is full. Nothing is read from the device."""
        with torch.profiler.record_function("miner.batch"):
            self._add_staged_batch(queue, sb, stats, sums, sample, clock)

    def _add_staged_batch(self, queue: WindowedQueues, sb: _StagedBatch, stats: BlockStats, sums: _BatchSums,
                          sample: _SampleRows | None, clock: _StageClock) -> None:
        batch = sb.batch
        t = clock.mark()
        with torch.profiler.record_function("miner.forward"):
            tensors = self.forward(batch)
        t = clock.span("forward", t)
        stats.batches += 1
        stats.real_tokens += batch.real_tokens
        stats.attended_tokens += batch.attended_tokens
        stats.computed_tokens += batch.input_ids.numel()
        scores = self.weighted_scores(tensors, sb.weights)
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
        n_units = self.layout.n_units
        top, bottom = dense_peak_pair(tensors, self.offsets, n_units, sb.tokens, len(self.directions) == 2)
        payload[:n_units] = top.T
        if bottom is not None:
            payload[n_units:] = bottom.T
        queue.close_slab(b)
        clock.span("window", t)

    def _add_batch(self, queue: WindowedQueues, batch: Batch, stats: BlockStats, sums: _BatchSums,
                   sample: _SampleRows | None) -> None:
        """One forward pass, the batch's scores into the block's sums and sample, and its candidates into the
        block's queue (see `mine_block`)."""
        with torch.profiler.record_function("miner.batch"):
            self._add_exact_batch(queue, batch, stats, sums, sample)

    def _add_exact_batch(self, queue: WindowedQueues, batch: Batch, stats: BlockStats, sums: _BatchSums,
                         sample: _SampleRows | None) -> None:
        dev = self.loaded.device
        tf = time.perf_counter()
        with torch.profiler.record_function("miner.forward"):
            tensors = self.forward(batch)
        tc = time.perf_counter()
        stats.forward_seconds += tc - tf
        stats.batches += 1
        stats.real_tokens += batch.real_tokens
        stats.attended_tokens += batch.attended_tokens
        stats.computed_tokens += batch.input_ids.numel()
        tokens = None
        cells = self._kernel_cells(tensors, batch.real, len(self.directions) == 2)  # one pass, all cells
        if cells is not None:
            stats.kernel_batches += 1
            scores, finite = cells.scores, True
        else:  # torch operations (GPU, other dtypes, no compiler), or NaN/inf activations: torch semantics
            tokens = RealTokens.of(batch.real, dev)
            scores = self.torch_scores(tensors, tokens.real)
            # the sum of the scores is finite only if every score is (else NaN/inf activations, or an overflow)
            finite = bool(torch.isfinite(scores.sum()))
        tm = time.perf_counter()
        stats.scores_seconds += tm - tc
        sums.add(scores)
        ts = time.perf_counter()
        stats.moments_seconds += ts - tm
        if sample is not None:
            sample.add(batch.ids, scores)
            stats.sample_seconds += time.perf_counter() - ts
        tw = time.perf_counter()
        self._add_candidates(queue, batch, tensors, scores, cells, tokens, finite)
        stats.window_seconds += time.perf_counter() - tw

    def _add_candidates(self, queue: WindowedQueues, batch: Batch, tensors: list[torch.Tensor],
                        scores: torch.Tensor, cells: native.TokenStats | None, tokens: RealTokens | None,
                        finite: bool) -> None:
        """A batch's candidates into the window, sparse or dense (see `mine_prepared`)."""
        dev = self.loaded.device
        # a batch with non-finite scores takes per-candidate peaks, which are right for any input
        signed, superset = candidate_superset(scores, queue.thresh_scores, finite)
        found = int(torch.count_nonzero(superset))
        if found == 0:  # no candidate for any unit: nothing to add
            return
        ids_dev = batch.ids.to(dev)
        if finite and found >= self.dense_window_fraction * superset.numel():
            slab = self._dense_payload(tensors, cells, tokens)
            queue.add_slab(candidate_slab(signed, ids_dev, queue.thresh), *slab)
            return
        rows, cols, keys = sparse_candidates(signed, superset, ids_dev, queue.thresh)
        split = int(torch.searchsorted(rows, self.layout.n_units)) if len(self.directions) == 2 else rows.numel()
        queue.add(rows, keys, self._sparse_payload(tensors, cells, tokens, rows, cols, split, finite))

    def _dense_payload(self, tensors: list[torch.Tensor], cells: native.TokenStats | None,
                       tokens: RealTokens | None) -> list[torch.Tensor]:
        """Payload rows [U, B] of every cell, direction by direction: the kernel's, or dense torch peak searches."""
        if cells is not None:
            return [p.T for p in (cells.top, cells.bottom) if p is not None]
        assert tokens is not None
        n_units = self.layout.n_units
        payload = [dense_peaks(tensors, self.offsets, n_units, tokens, True).T]
        if len(self.directions) == 2:
            payload.append(dense_peaks(tensors, self.offsets, n_units, tokens, False, restore=False).T)
        return payload

    def _sparse_payload(self, tensors: list[torch.Tensor], cells: native.TokenStats | None, tokens: RealTokens | None,
                        rows: torch.Tensor, cols: torch.Tensor, split: int, finite: bool) -> torch.Tensor:
        """Payloads of the candidate cells (queue rows, batch rows); rows from `split` on are bottom rows."""
        n_units = self.layout.n_units
        if cells is not None:  # the kernel's peaks of the candidate cells
            payload = cells.top[cols[:split], rows[:split]]
            if split < rows.numel():
                assert cells.bottom is not None
                payload = torch.cat([payload, cells.bottom[cols[split:], rows[split:] - n_units]])
            return payload
        assert tokens is not None
        payload = self.peaks(tensors, tokens, rows[:split], cols[:split], True, dense_ok=finite)
        if split < rows.numel():
            bottom = self.peaks(tensors, tokens, rows[split:] - n_units, cols[split:], False, restore=False,
                                dense_ok=finite)
            payload = torch.cat([payload, bottom])
        return payload

    def split_directions(self, found: Candidates) -> dict[str, dict[str, np.ndarray]]:
        """The block's entries (rows direction by direction) as numpy arrays per direction, unit ids from 0."""
        n_units = self.layout.n_units
        entries = found.to_numpy()
        out = {}
        if found.dense:
            for k, d in enumerate(self.directions):
                out[d] = {f: v[k * n_units : (k + 1) * n_units] for f, v in entries.items()}
        else:
            cuts = np.searchsorted(entries["units"], [k * n_units for k in range(len(self.directions) + 1)])
            for k, d in enumerate(self.directions):
                part = {f: v[cuts[k] : cuts[k + 1]] for f, v in entries.items()}
                part["units"] = part["units"] - k * n_units
                out[d] = part
        return out
