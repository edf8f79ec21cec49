"""Forward passes and per-sentence unit scores: the worker-side hot path of mining.

`BlockMiner.mine_block` takes one block of sentences (ids + texts), tokenises them, sorts them by
length into batches (less padding), runs one forward pass per batch that feeds every selected layer
and site, scores every unit (mean over real tokens; padding and special tokens excluded) and keeps,
per unit, the block's candidates that beat the dispatched global threshold, with their peak token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from miner.mining import native
from miner.mining.topn import SENTINEL, Candidates, WindowedQueues, encode_keys, pack_payload
from miner.model.loading import (
    LoadedModel,
    UnitLayout,
    down_projection,
    transformer_blocks,
)


@dataclass
class Batch:
    """One padded batch of tokenised sentences."""

    ids: torch.Tensor
    """int64 [B] sentence ids."""
    input_ids: torch.Tensor
    """int64 [B, T] token ids, right-padded."""
    attention: torch.Tensor
    """int64 [B, T] 1 for tokens the model attends to."""
    real: torch.Tensor
    """bool [B, T] tokens that count for scores (attended and not special)."""
    real_tokens: int = 0
    """Number of True cells in `real`."""
    attended_tokens: int = 0
    """Number of attended tokens (the sentences' lengths, special tokens included)."""


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


@dataclass
class BlockResult:
    """A block's queue candidates per direction (numpy arrays: flat and unit-major, or dense rows, see
    `Candidates`) and its stats."""

    block: int
    directions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    stats: BlockStats = field(default_factory=BlockStats)


def tokenize_sentences(tokenizer: object, texts: list[str], max_length: int) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Token ids and special-token masks as the model sees them; rows longer than max_length are
    re-tokenised with truncation (keeping the closing special token). Returns (ids, special, truncated rows).
    """
    enc = tokenizer(texts, add_special_tokens=True, truncation=False, return_special_tokens_mask=True)
    input_ids: list[list[int]] = enc["input_ids"]
    special: list[list[int]] = enc["special_tokens_mask"]
    long_rows = [i for i, row in enumerate(input_ids) if len(row) > max_length]
    if long_rows:
        cut = tokenizer([texts[i] for i in long_rows], add_special_tokens=True, truncation=True,
                        max_length=max_length, return_special_tokens_mask=True)
        for j, i in enumerate(long_rows):
            input_ids[i] = cut["input_ids"][j]
            special[i] = cut["special_tokens_mask"][j]
    return input_ids, special, long_rows


def make_batches(tokenizer: object, ids: np.ndarray, texts: list[str], max_length: int, batch_size: int,
                 ) -> tuple[list[Batch], int]:
    """Tokenise, sort by length (stable), and cut into padded batches; returns (batches, truncated count).

    Example: lengths [9, 3, 5, 3] with batch_size 2 -> batches of the sentences at [1, 3] and [2, 0].
    """
    input_ids, special, long_rows = tokenize_sentences(tokenizer, texts, max_length)
    lengths = np.fromiter((len(r) for r in input_ids), dtype=np.int64, count=len(input_ids))
    order = np.argsort(lengths, kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        t = int(lengths[rows].max())
        arr = np.full((len(rows), t), pad, dtype=np.int64)
        att = np.zeros((len(rows), t), dtype=np.int64)
        real = np.zeros((len(rows), t), dtype=bool)
        for k, i in enumerate(rows):
            n = len(input_ids[i])
            arr[k, :n] = input_ids[i]
            att[k, :n] = 1
            real[k, :n] = np.asarray(special[i], dtype=bool) == 0
            if not real[k].any():  # a sentence of special tokens only: score over everything attended
                real[k, :n] = True
        batches.append(Batch(torch.from_numpy(ids[rows].astype(np.int64)), torch.from_numpy(arr),
                             torch.from_numpy(att), torch.from_numpy(real), int(real.sum()),
                             int(lengths[rows].sum())))
    return batches, len(long_rows)


class BlockMiner:
    """Scores blocks of sentences for every unit of a layout and keeps per-unit candidates."""

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
                   floors: dict[str, np.ndarray] | None = None) -> BlockResult:
        """Mine one block; candidates are the block's local top-N entries that beat `floors` (per direction).

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
        if not texts:
            empty = {"units": np.zeros(0, np.int64), "keys": np.zeros(0, np.int64), "payload": np.zeros(0, np.int64)}
            return BlockResult(block=block, directions={d: dict(empty) for d in self.directions}, stats=stats)
        batches, stats.truncated = make_batches(self.loaded.tokenizer, np.asarray(ids), texts, self.max_length,
                                                self.batch_size)
        stats.tokenize_seconds = time.perf_counter() - t0
        n_units = self.layout.n_units
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
                    # the sum of the scores is finite only if every score is (else NaN/inf activations, or an
                    # overflow)
                    finite = bool(torch.isfinite(scores.sum()))
                # a batch with non-finite scores takes per-candidate peaks, which are right for any input
                signed, superset = candidate_superset(scores, queue.thresh_scores, finite)
                found = int(torch.count_nonzero(superset))
                if found == 0:  # no candidate for any unit: nothing to add
                    continue
                ids_dev = batch.ids.to(dev)
                if finite and found >= self.dense_window_fraction * superset.numel():
                    if cells is not None:
                        payload = [p.T for p in (cells.top, cells.bottom) if p is not None]
                    else:
                        payload = [dense_peaks(tensors, self.offsets, n_units, tokens, True).T]
                        if len(self.directions) == 2:
                            payload.append(dense_peaks(tensors, self.offsets, n_units, tokens, False, restore=False).T)
                    queue.add_slab(candidate_slab(signed, ids_dev, queue.thresh), *payload)
                    continue
                rows, cols, keys = sparse_candidates(signed, superset, ids_dev, queue.thresh)
                split = int(torch.searchsorted(rows, n_units)) if len(self.directions) == 2 else rows.numel()
                if cells is not None:  # the kernel's peaks of the candidate cells
                    payload = cells.top[cols[:split], rows[:split]]
                    if split < rows.numel():
                        payload = torch.cat([payload, cells.bottom[cols[split:], rows[split:] - n_units]])
                    queue.add(rows, keys, payload)
                    continue
                payload = self.peaks(tensors, tokens, rows[:split], cols[:split], True, dense_ok=finite)
                if split < rows.numel():
                    bottom = self.peaks(tensors, tokens, rows[split:] - n_units, cols[split:], False, restore=False,
                                        dense_ok=finite)
                    payload = torch.cat([payload, bottom])
                queue.add(rows, keys, payload)
            found = queue.finish()
        entries = found.to_numpy()  # rows direction by direction
        result = BlockResult(block=block, stats=stats)
        if found.dense:
            for k, d in enumerate(self.directions):
                result.directions[d] = {f: v[k * n_units : (k + 1) * n_units] for f, v in entries.items()}
        else:
            cuts = np.searchsorted(entries["units"], [k * n_units for k in range(len(self.directions) + 1)])
            for k, d in enumerate(self.directions):
                part = {f: v[cuts[k] : cuts[k + 1]] for f, v in entries.items()}
                part["units"] = part["units"] - k * n_units
                result.directions[d] = part
        stats.seconds = time.perf_counter() - t0
        stats.merge_seconds = stats.seconds - stats.forward_seconds - stats.tokenize_seconds
        return result


def candidate_superset(scores: torch.Tensor, floor: torch.Tensor, finite: bool = False,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed [R, B], superset [R, B]): the scores per queue row (negated for bottom rows, when `floor` has
    2U rows) and the cells whose score is at least the row's threshold score `floor`.

    A key beats a threshold key only if its score is at least the threshold's score (-inf for an empty
    row; NaN scores are kept, their keys decide), so one float comparison over the batch finds a superset
    of the candidates, and keys are built only where needed. `finite`: the caller knows every score is
    finite (one comparison instead of two).
    """
    signed = scores.T if floor.shape[0] == scores.shape[1] else torch.cat([scores.T, -scores.T])
    if finite:
        return signed, signed >= floor[:, None]
    return signed, torch.logical_not(signed < floor[:, None])


def sparse_candidates(signed: torch.Tensor, superset: torch.Tensor, ids: torch.Tensor, thresh: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cells whose key beats their row's threshold key: (rows [K] ascending, batch rows [K], keys [K]),
    keys built for the `candidate_superset` cells only.

    Example: scores [[0.5], [0.2]] (signed [[0.5, 0.2]]), ids [7, 9], thresh [key(0.5, id 8)] -> superset
    [[1, 0]] (0.5 >= 0.5); key(0.5, 7) beats key(0.5, 8) (smaller id) -> candidate (row 0, batch row 0).
    """
    rows, cols = superset.nonzero(as_tuple=True)
    keys = encode_keys(signed[rows, cols], ids[cols])
    beat = keys > thresh[rows]
    if not bool(beat.all()):
        rows, cols, keys = rows[beat], cols[beat], keys[beat]
    return rows, cols, keys


def candidate_slab(signed: torch.Tensor, ids: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    """int64 [R, B]: every cell's key where it beats its row's threshold, SENTINEL elsewhere (for batches
    where most cells are candidates, one dense pass beats gathering them)."""
    keys = encode_keys(signed, ids[None, :])
    return keys.masked_fill_(keys <= thresh[:, None], SENTINEL)


@dataclass
class RealTokens:
    """Where a batch's real tokens lie, worked out once per batch for the scores and both peak searches.

    The `span` is the range of positions real in some row; `holes` are the cells that are not real in their
    row (special tokens and padding: in a length-sorted batch, a few per row).
    Example: real rows [0 1 1 1 0], [0 1 1 0 0] -> span lo 1, width 3; holes rows [0 0 1 1 1], positions
    [0 4 0 3 4].
    """

    real: torch.Tensor
    """bool [B, T] tokens that count, on the device."""
    mask: torch.Tensor
    """bool [B, width] real tokens inside the span."""
    lo: int
    """Position of the span's first column."""
    width: int
    """Span width (0 when no token is real)."""
    holes: tuple[torch.Tensor, torch.Tensor]
    """int64 [H] rows and [H] positions of the cells that are not real."""

    @staticmethod
    def of(real: torch.Tensor, device: torch.device | str | None = None) -> RealTokens:
        """Work out the layout on `real`'s device (a CPU copy needs no device syncs), then move it."""
        device = device if device is not None else real.device
        lo, hi = real_span(real)
        rows, cols = (~real).nonzero(as_tuple=True)
        return RealTokens(real.to(device), real[:, lo:hi].to(device), lo, hi - lo, (rows.to(device), cols.to(device)))


@torch.inference_mode()
def dense_peaks(tensors: list[torch.Tensor], offsets: list[int], n_units: int, tokens: RealTokens,
                largest: bool, restore: bool = True) -> torch.Tensor:
    """int64 [B, U]: packed (peak activation, token position) of every unit over each row's real tokens: the
    maximum (`largest`) or the minimum, at the first real position among equal peaks (as torch.max(dim)), for
    finite activations (with NaN the max-pool takes the last NaN; see `BlockMiner.peaks`).

    Overwrites the tensors' non-real cells with -inf or +inf, so call it after the scores (those cells count
    for nothing); real cells are left as they were. Index-returning reductions over the token axis (torch.max(dim)) are slow on
    CPU, but a max-pool over it with one window per row returns the first position of each maximum in one
    vectorised pass as fast as a plain amax: [B, T, W] activations seen as an image batch [B, W, T, 1] (W
    channels) are already in the channels-last layout the pooling kernel vectorises over (`channels_last`),
    with no copy. Minima are the maxima of the tensor negated in place (and negated back, exactly, unless
    `restore` is False: for a last use of the tensors).
    Example: a unit's row [8, 2, 7, 7, 9] with real [0 1 1 1 0] -> [-inf, 2, 7, 7, -inf] -> max-pool: 7 at
    position 2 (the first of the tied 7s).
    """
    b, t = tokens.real.shape
    dev = tokens.real.device
    if tokens.width == 0:
        return torch.empty((b, n_units), dtype=torch.int64, device=dev)
    vals = torch.empty((b, n_units), dtype=torch.float32, device=dev)
    idx = torch.empty((b, n_units), dtype=torch.int64, device=dev)
    hole_rows, hole_cols = tokens.holes
    for x, off in zip(tensors, offsets):
        if hole_rows.numel():
            x[hole_rows, hole_cols] = float("-inf") if largest else float("inf")
        if not largest:  # minima: maxima of the negated tensor, negated in place and back (no allocation)
            x.neg_()
        v, i = F.max_pool2d(channels_last(x), (t, 1), return_indices=True)
        if not largest and restore:
            x.neg_()
        vals[:, off : off + x.shape[2]] = v[:, :, 0, 0]
        idx[:, off : off + x.shape[2]] = i[:, :, 0, 0]
    return pack_payload(vals if largest else vals.neg_(), idx)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B, T, W] activations (last dimension contiguous) as a [B, W, T, 1] channels-last image batch, no copy.

    Example: a contiguous [2, 3, 4] tensor (strides 12, 4, 1) -> size [2, 4, 3, 1], strides [12, 1, 4, 4].
    """
    return x.as_strided((x.shape[0], x.shape[2], x.shape[1], 1), (x.stride(0), x.stride(2), x.stride(1), x.stride(1)))


def candidate_peaks(tensors: list[torch.Tensor], offsets: list[int], tokens: RealTokens, units: torch.Tensor,
                    cols: torch.Tensor, largest: bool) -> torch.Tensor:
    """int64 [K]: packed (peak activation, token position) of the candidate cells (units[k], cols[k]) only.

    `units` must be ascending (the order of `mask.nonzero()` over a unit-major [U, B] mask). Per layer the
    candidates' token rows are gathered as a [k, width] tile (x[b, span, u] for each candidate), non-real
    tokens are filled with -inf (+inf for minima) and one reduction over the contiguous last dimension gives
    the peak: the same value and first-on-ties position as `dense_peaks` at those cells, at a cost
    proportional to the candidates instead of B x U.
    Example: one unit, x[0, :, 0] = [9, 4, 7, 7, 1] with real [0 1 1 1 0], candidate (unit 0, row 0)
    -> tile over the span [4, 7, 7] -> peak 7.0 at position 1 + 1 = 2 (the first of the tied 7s).
    """
    lo, width = tokens.lo, tokens.width
    if units.numel() == 0 or width == 0:
        return torch.zeros(units.shape, dtype=torch.int64, device=units.device)
    fill = float("-inf") if largest else float("inf")
    bounds = torch.tensor([off + x.shape[2] for x, off in zip(tensors, offsets)], device=units.device)
    ends = torch.searchsorted(units, bounds).tolist()  # units are ascending: one slice per layer
    vals, idx = [], []
    start = 0
    for x, off, end in zip(tensors, offsets, ends):
        if end == start:
            continue
        b = cols[start:end]
        tile = x[:, lo : lo + width].transpose(1, 2)[b, units[start:end] - off]  # [k, width]
        tile.masked_fill_(~tokens.mask[b], fill)
        red = tile.max(1) if largest else tile.min(1)
        vals.append(red.values)
        idx.append(red.indices)
        start = end
    return pack_payload(torch.cat(vals), torch.cat(idx) + lo)


def real_span(real: torch.Tensor) -> tuple[int, int]:
    """(lo, hi): the token positions that are real in at least one row lie in lo..hi-1.

    Example: real rows [0 1 1 0 0], [0 1 1 1 0] -> (1, 4).
    """
    cols = real.any(0).nonzero()
    return (int(cols[0]), int(cols[-1]) + 1) if cols.numel() else (0, 0)


def model_max_length(config: object) -> int:
    """Longest input the model's position embeddings allow (unbounded if the config does not say)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(n, int) or n <= 0:
        return 1 << 30
    if getattr(config, "model_type", "") in _PADDING_OFFSET_POSITIONS:  # positions start after padding_idx
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return n


_PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"}


def empty_floors(n_units: int, directions: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Floors for a first block: every candidate may enter."""
    return {d: np.full(n_units, SENTINEL, dtype=np.int64) for d in directions}


__all__ = ["Batch", "BlockMiner", "BlockResult", "BlockStats", "Candidates", "RealTokens", "candidate_peaks",
           "candidate_slab", "candidate_superset", "dense_peaks", "empty_floors", "make_batches", "real_span",
           "sparse_candidates"]
