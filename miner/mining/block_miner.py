"""The worker-side hot path of mining: one forward pass per batch, unit scores, and each block's queue candidates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
    dense_peaks,
    sparse_candidates,
)
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
    tokenize_seconds: float = 0.0
    merge_seconds: float = 0.0
    moments_seconds: float = 0.0
    """Of `seconds`: accumulating the moment sums (on a GPU, only the time to queue the operations)."""
    sample_seconds: float = 0.0
    """Of `seconds`: gathering the sample sentences' scores."""


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

    def __init__(self, n_units: int, device: torch.device) -> None:
        self.count = 0
        self.total = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.squares = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.low = torch.full((n_units,), float("inf"), dtype=torch.float32, device=device)  # exact in float32
        self.high = torch.full((n_units,), float("-inf"), dtype=torch.float32, device=device)
        self.positive = torch.zeros(n_units, dtype=torch.float64, device=device)  # counts: exact below 2**53

    def add(self, scores: torch.Tensor) -> None:
        """Add a batch of float32 [B, U] scores.

        The column sums are products with a row of ones (a column reduction over a row-major [B, U] tensor is
        several times slower than one matrix-vector product), min and max come from one pass (aminmax).
        """
        x = scores.to(torch.float64)
        b = int(x.shape[0])
        ones = torch.ones((1, b), dtype=torch.float64, device=x.device)
        self.count += b
        self.total += (ones @ x)[0]
        self.squares += (ones @ (x * x))[0]
        low, high = torch.aminmax(scores, dim=0)  # NaN propagates, as in MomentSums.add
        self.low = torch.minimum(self.low, low)
        self.high = torch.maximum(self.high, high)
        self.positive += (ones @ (x > 0).to(torch.float64))[0]  # a batch's counts (< 2**53) are exact in float64

    def result(self) -> MomentSums:
        return MomentSums(self.count, self.total.cpu().numpy(), self.squares.cpu().numpy(),
                          self.low.cpu().numpy().astype(np.float64), self.high.cpu().numpy().astype(np.float64),
                          self.positive.cpu().numpy().astype(np.int64))


class _SampleRows:
    """The scores of a block's sampled sentences, gathered batch by batch and returned in request order."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.wanted = np.sort(self.ids)
        self.found_ids: list[np.ndarray] = []
        self.found: list[np.ndarray] = []

    def add(self, batch_ids: torch.Tensor, scores: torch.Tensor) -> None:
        ids = batch_ids.numpy()
        rows = np.flatnonzero(np.isin(ids, self.wanted))
        if len(rows):
            self.found_ids.append(ids[rows])
            self.found.append(scores[torch.from_numpy(rows).to(scores.device)].cpu().numpy())

    def result(self, n_units: int) -> np.ndarray:
        if not self.found:
            got_ids, got = np.zeros(0, np.int64), np.zeros((0, n_units), np.float32)
        else:
            got_ids, got = np.concatenate(self.found_ids), np.concatenate(self.found)
        order = np.argsort(got_ids)
        if not np.array_equal(got_ids[order], self.wanted):  # the driver only asks for ids of the block
            raise ValueError("sample ids that are not in the block were requested")
        return np.ascontiguousarray(got[order[np.searchsorted(got_ids[order], self.ids)]], dtype=np.float32)


class BlockMiner:
    """Scores blocks of sentences for every unit of a layout and keeps per-unit candidates.

    `mine_block` takes one block of sentences (ids + texts), tokenises them, sorts them by length into batches
    (less padding), runs one forward pass per batch that feeds every selected layer and site, scores every unit
    (mean over real tokens; padding and special tokens excluded) and keeps, per unit, the block's candidates that
    beat the dispatched global threshold, with their peak token.
    """

    def __init__(self, loaded: LoadedModel, layout: UnitLayout, top_n: int, bottom: bool = True,
                 aggregation: str = "mean", max_length: int = 128, batch_size: int = 64, window: int | None = None,
                 use_native: bool = True) -> None:
        self.loaded = loaded
        self.layout = layout
        self.top_n = top_n
        self.directions = ("top", "bottom") if bottom else ("top",)
        self.aggregation = aggregation
        self.max_length = min(max_length, model_max_length(loaded.config))
        self.batch_size = batch_size
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
        """`scores` with torch operations (any device and dtype)."""
        b = real.shape[0]
        out = torch.empty((b, self.layout.n_units), dtype=torch.float32, device=real.device)
        if self.aggregation == "mean":
            weights = (real.to(torch.float32) / real.sum(1, keepdim=True).to(torch.float32))[:, None, :]
            for x, off in zip(tensors, self.offsets):  # [B, 1, T] @ [B, T, W]: the weighted mean as one bmm
                out[:, off : off + x.shape[2]] = torch.bmm(weights, x.to(torch.float32))[:, 0]
        else:
            neg = torch.where(real, 0.0, float("-inf")).to(torch.float32)[:, :, None]
            for x, off in zip(tensors, self.offsets):
                out[:, off : off + x.shape[2]] = (x.to(torch.float32) + neg).amax(1)
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

    def mine_block(self, block: int, ids: np.ndarray, texts: list[str],
                   floors: dict[str, np.ndarray] | None = None, sample_ids: np.ndarray | None = None) -> BlockResult:
        """Mine one block; candidates are the block's local top-N entries that beat `floors` (per direction).

        Every batch's scores also feed the block's moment sums (`BlockResult.moments`), and the scores of the
        sentences in `sample_ids` (ids of this block) are returned in that order (`BlockResult.sample`).

        Both directions live in one windowed queue of D x U rows (row d * U + u: direction d, unit u; the
        bottom rows hold the keys of the negated scores). Per batch only the scores are dense over all
        (sentence, unit) cells: candidates are the cells whose score reaches their row's threshold score
        (`candidate_superset`, `sparse_candidates`), and only they get keys, peak tokens (see `peaks`) and a
        place in the window; a batch where most cells qualify is handled densely (`candidate_slab`).
        On CPU the scores and both directions' peaks of every cell come from one compiled pass
        (`miner.mining.native`); with the torch operations, the top direction's peaks come first (a dense peak search
        overwrites non-real cells, after the scores).
        """
        t0 = time.perf_counter()
        stats = BlockStats(sentences=len(texts))
        dev = self.loaded.device
        n_units = self.layout.n_units
        sample = _SampleRows(sample_ids) if sample_ids is not None else None
        if not texts:
            empty = {"units": np.zeros(0, np.int64), "keys": np.zeros(0, np.int64), "payload": np.zeros(0, np.int64)}
            return BlockResult(block=block, directions={d: dict(empty) for d in self.directions}, stats=stats,
                               moments=MomentSums.empty(n_units),
                               sample=sample.result(n_units) if sample is not None else None)
        batches, stats.truncated = make_batches(self.loaded.tokenizer, np.asarray(ids), texts, self.max_length,
                                                self.batch_size)
        stats.tokenize_seconds = time.perf_counter() - t0
        sums = _BatchSums(n_units, dev)
        floor = None
        if floors is not None:
            floor = torch.from_numpy(np.concatenate([np.asarray(floors[d], dtype=np.int64) for d in self.directions]))
        if self._queue is None:
            self._queue = WindowedQueues(len(self.directions) * n_units, self.top_n,
                                         max(self.window, self.batch_size), floor, dev)
        queue = self._queue
        queue.reset(floor)
        with torch.inference_mode():
            for batch in batches:
                self._add_batch(queue, batch, stats, sums, sample)
            found = queue.finish()
        result = BlockResult(block=block, stats=stats, moments=sums.result(),
                             sample=sample.result(n_units) if sample is not None else None)
        result.directions = self._split_directions(found)
        stats.seconds = time.perf_counter() - t0
        stats.merge_seconds = stats.seconds - stats.forward_seconds - stats.tokenize_seconds
        return result

    def _add_batch(self, queue: WindowedQueues, batch: Batch, stats: BlockStats, sums: _BatchSums,
                   sample: _SampleRows | None) -> None:
        """One forward pass, the batch's scores into the block's sums and sample, and its candidates into the
        block's queue (see `mine_block`)."""
        dev = self.loaded.device
        tf = time.perf_counter()
        tensors = self.forward(batch)
        stats.forward_seconds += time.perf_counter() - tf
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
        sums.add(scores)
        ts = time.perf_counter()
        stats.moments_seconds += ts - tm
        if sample is not None:
            sample.add(batch.ids, scores)
            stats.sample_seconds += time.perf_counter() - ts
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

    def _split_directions(self, found: Candidates) -> dict[str, dict[str, np.ndarray]]:
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
