"""The worker-side hot path of mining: one forward pass per batch, unit scores, and each block's queue candidates."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from miner.mining import native
from miner.mining.batches import Batch, make_batches
from miner.mining.block_records import BlockResult, BlockStats, PreparedBlock
from miner.mining.block_sums import BatchSums, SampleRows
from miner.mining.peaks import (
    RealTokens,
    candidate_peaks,
    candidate_slab,
    candidate_superset,
    dense_peaks,
    sparse_candidates,
)
from miner.mining.sync_free import mine_sync_free
from miner.mining.topn import Candidates, WindowedQueues
from miner.model.layout import UnitLayout, down_projection, model_max_length, transformer_blocks
from miner.model.loading import LoadedModel


class BlockMiner:
    """Scores blocks of sentences for every unit of a layout and keeps per-unit candidates.

    `mine_block` takes one block of sentences (ids + texts), tokenises them, sorts them by length into batches
    (less padding), runs one forward pass per batch that feeds every selected layer and site, scores every unit
    (mean over real tokens; padding and special tokens excluded) and keeps, per unit, the block's candidates that
    beat the dispatched global threshold, with their peak token.

    Two batch loops give the same blocks (entries, moments, sample, counters): the exact loop (`_add_batch`:
    sparse candidates when few cells qualify, the compiled kernel on the CPU, NaN/inf handled per batch) and the
    sync-free loop (`sync_free`, the default on CUDA: `miner.mining.sync_free`), which never waits for the device inside
    the loop and mines a block again with the exact loop if some score of it was not finite.
    """

    def __init__(self, loaded: LoadedModel, layout: UnitLayout, top_n: int, bottom: bool = True,
                 aggregation: str = "mean", max_length: int = 128, batch_size: int = 64, window: int | None = None,
                 use_native: bool = True, sync_free: bool | None = None, batch_tokens: int | None = None) -> None:
        self.loaded = loaded
        self.layout = layout
        self.top_n = top_n
        self.directions: tuple[str, ...] = ("top", "bottom") if bottom else ("top",)
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
        """Scores and peaks of CPU float32 and bfloat16 batches come from the compiled one-pass kernel
        (`miner.mining.native`)."""
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
        self._batch_shape: tuple[int, ...] = (0, 0)
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
            x = args[0]
            if x.dim() == 2:  # OPT flattens the tokens before its FFN: [B * T, W] back to [B, T, W]
                b, t = self._batch_shape
                if x.shape[0] != b * t:  # a forward pass not started by `forward` (e.g. a bare twin): not mined
                    return
                x = x.view(b, t, -1)
            self._captured[layer] = x
        return hook

    def close(self) -> None:
        for h in self._hooks:
            h.remove()

    @torch.inference_mode()
    def forward(self, batch: Batch) -> list[torch.Tensor]:
        """One forward pass; returns the mined activation tensors [B, T, width] in layout order."""
        dev = self.loaded.device
        self._captured.clear()
        self._batch_shape = tuple(batch.input_ids.shape)
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
        one compiled pass (`miner.mining.native`), and a second one puts the candidates into the window, cutting
        each full row on the spot (`WindowedQueues.add_scored`); with the torch operations, the top direction's
        peaks come first (a dense peak search overwrites non-real cells, after the scores). The sync-free loop
        (`mine_sync_free`) handles every batch densely and reads the device only after its last batch; a block
        with a non-finite score is mined again by the exact loop, so NaN/inf semantics are the exact loop's.
        """
        t0 = time.perf_counter()
        mined = None
        if self.sync_free and prepared.batches:
            stats = self._new_stats(prepared)
            mined = mine_sync_free(self, prepared, floor, sample_ids, stats)
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

    def window_queue(self, floor: torch.Tensor | None) -> WindowedQueues:
        """The block's window, emptied and floored (its buffers are reused from block to block)."""
        if self._queue is None:
            self._queue = WindowedQueues(len(self.directions) * self.layout.n_units, self.top_n,
                                         max(self.window, self.batch_size), floor, self.loaded.device)
        self._queue.reset(floor)
        return self._queue

    def _mine_exact(self, prepared: PreparedBlock, floor: torch.Tensor | None, sample_ids: np.ndarray | None,
                    stats: BlockStats) -> tuple[Candidates, BatchSums, SampleRows | None]:
        """The exact loop over a block's batches (`_add_batch`): (candidates, moment sums, sample rows)."""
        sample = SampleRows(sample_ids) if sample_ids is not None else None
        sums = BatchSums(self.layout.n_units, self.loaded.device, self.use_native)
        queue = self.window_queue(floor)
        with torch.inference_mode():
            for batch in prepared.batches:
                self._add_batch(queue, batch, stats, sums, sample)
            tm = time.perf_counter()
            sums.drain()  # the batches the compiled pass still holds
            stats.moments_seconds += time.perf_counter() - tm
            found = queue.finish()
        return found, sums, sample

    def _add_batch(self, queue: WindowedQueues, batch: Batch, stats: BlockStats, sums: BatchSums,
                   sample: SampleRows | None) -> None:
        """One forward pass, the batch's scores into the block's sums and sample, and its candidates into the
        block's queue (see `mine_block`)."""
        with torch.profiler.record_function("miner.batch"):
            self._add_exact_batch(queue, batch, stats, sums, sample)

    def _add_exact_batch(self, queue: WindowedQueues, batch: Batch, stats: BlockStats, sums: BatchSums,
                         sample: SampleRows | None) -> None:
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
        """A batch's candidates into the window: compiled (the kernel's cells), else sparse or dense (see
        `mine_prepared`)."""
        dev = self.loaded.device
        if cells is not None and finite:  # the kernel's scores and peaks: candidates straight into the window
            queue.add_scored(scores, batch.ids.contiguous(), cells.top, cells.bottom)
            return
        # a batch with non-finite scores takes per-candidate peaks, which are right for any input
        signed, superset = candidate_superset(scores, queue.thresh_scores, finite)
        found = int(torch.count_nonzero(superset))
        if found == 0:  # no candidate for any unit: nothing to add
            return
        ids_dev = batch.ids.to(dev)
        if finite and found >= self.dense_window_fraction * superset.numel():
            slab = self._dense_payload(tensors, tokens)
            queue.add_slab(candidate_slab(signed, ids_dev, queue.thresh), *slab)
            return
        rows, cols, keys = sparse_candidates(signed, superset, ids_dev, queue.thresh)
        split = int(torch.searchsorted(rows, self.layout.n_units)) if len(self.directions) == 2 else rows.numel()
        queue.add(rows, keys, self._sparse_payload(tensors, tokens, rows, cols, split, finite))

    def _dense_payload(self, tensors: list[torch.Tensor], tokens: RealTokens | None) -> list[torch.Tensor]:
        """Payload rows [U, B] of every cell, direction by direction, from dense torch peak searches."""
        assert tokens is not None
        n_units = self.layout.n_units
        payload = [dense_peaks(tensors, self.offsets, n_units, tokens, True).T]
        if len(self.directions) == 2:
            payload.append(dense_peaks(tensors, self.offsets, n_units, tokens, False, restore=False).T)
        return payload

    def _sparse_payload(self, tensors: list[torch.Tensor], tokens: RealTokens | None, rows: torch.Tensor,
                        cols: torch.Tensor, split: int, finite: bool) -> torch.Tensor:
        """Payloads of the candidate cells (queue rows, batch rows) from torch peak searches; rows from `split` on
        are bottom rows."""
        n_units = self.layout.n_units
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
