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

from miner.model_loading import (
    LoadedModel,
    UnitLayout,
    down_projection,
    transformer_blocks,
)
from miner.topn import SENTINEL, Candidates, WindowedQueues, encode_keys, pack_payload


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
    seconds: float = 0.0
    forward_seconds: float = 0.0
    tokenize_seconds: float = 0.0
    merge_seconds: float = 0.0


@dataclass
class BlockResult:
    """A block's queue candidates per direction (numpy arrays, unit-major) and its stats."""

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
                             torch.from_numpy(att), torch.from_numpy(real)))
    return batches, len(long_rows)


class BlockMiner:
    """Scores blocks of sentences for every unit of a layout and keeps per-unit candidates."""

    def __init__(self, loaded: LoadedModel, layout: UnitLayout, top_n: int, bottom: bool = True,
                 aggregation: str = "mean", max_length: int = 128, batch_size: int = 64, window: int | None = None,
                 ) -> None:
        self.loaded = loaded
        self.layout = layout
        self.top_n = top_n
        self.directions = ("top", "bottom") if bottom else ("top",)
        self.aggregation = aggregation
        self.max_length = min(max_length, model_max_length(loaded.config))
        self.batch_size = batch_size
        self.window = window or max(batch_size, 16 * batch_size)
        self.offsets = layout.offsets()
        self._captured: dict[int, torch.Tensor] = {}
        self._hooks = []
        self._need_hidden = any(site == "hidden" for site, _, _ in layout.layers)
        blocks = transformer_blocks(loaded.model) if any(s == "mlp" for s, _, _ in layout.layers) else None
        for site, layer, _ in layout.layers:
            if site == "mlp":
                mod = down_projection(blocks[layer - 1])
                self._hooks.append(mod.register_forward_pre_hook(self._capture(layer)))

    def _capture(self, layer: int):  # noqa: ANN202 - torch hook signature
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
        """float32 [B, U]: each unit's sentence score (mean, or max, over real tokens)."""
        b = real.shape[0]
        out = torch.empty((b, self.layout.n_units), dtype=torch.float32, device=real.device)
        if self.aggregation == "mean":
            weights = real.to(torch.float32) / real.sum(1, keepdim=True).to(torch.float32)
            for x, off in zip(tensors, self.offsets):
                out[:, off : off + x.shape[2]] = torch.einsum("bt,btw->bw", weights, x.to(torch.float32))
        else:
            neg = torch.where(real, 0.0, float("-inf")).to(torch.float32)[:, :, None]
            for x, off in zip(tensors, self.offsets):
                out[:, off : off + x.shape[2]] = (x.to(torch.float32) + neg).amax(1)
        return out

    def extremes(self, tensors: list[torch.Tensor], real: torch.Tensor, largest: bool) -> torch.Tensor:
        """int64 [B, U]: packed (peak activation, token position) of every unit over each row's real tokens.

        Real tokens form one contiguous run per row (special tokens sit at the edges, padding at the end), so
        the reduction runs over a view of the positions that are real in every row, and only the few edge
        positions real in some rows are masked and folded in: no full masked copy of the activations.
        Example: real rows [0 1 1 1 0], [0 1 1 0 0] -> core positions 1..2, edge position 3 (row 0 only).
        """
        b, t = real.shape
        any_real = real.any(0)
        all_real = real.all(0)
        core = all_real.nonzero().squeeze(1)
        lo, hi = (int(core[0]), int(core[-1]) + 1) if core.numel() else (0, 0)
        if core.numel() and not bool(all_real[lo:hi].all()):
            lo, hi = 0, 0  # non-contiguous real tokens: fall back to masking everything
        edge = (any_real & ~(torch.arange(t, device=real.device).ge(lo) & torch.arange(t, device=real.device).lt(hi)))
        edge_pos = edge.nonzero().squeeze(1)
        fill = float("-inf") if largest else float("inf")
        out = torch.empty((b, self.layout.n_units), dtype=torch.int64, device=real.device)
        for x, off in zip(tensors, self.offsets):
            vals = idx = None
            if hi > lo:
                red = x[:, lo:hi].max(1) if largest else x[:, lo:hi].min(1)
                vals, idx = red.values.to(torch.float32), red.indices + lo
            if edge_pos.numel():
                ex = x[:, edge_pos].to(torch.float32).masked_fill(~real[:, edge_pos, None], fill)
                red = ex.max(1) if largest else ex.min(1)
                ev, ei = red.values, edge_pos[red.indices]
                if vals is None:
                    vals, idx = ev, ei
                else:
                    better = ev > vals if largest else ev < vals
                    vals = torch.where(better, ev, vals)
                    idx = torch.where(better, ei, idx)
            out[:, off : off + x.shape[2]] = pack_payload(vals, idx)
        return out

    def mine_block(self, block: int, ids: np.ndarray, texts: list[str],
                   floors: dict[str, np.ndarray] | None = None) -> BlockResult:
        """Mine one block; candidates are the block's local top-N entries that beat `floors` (per direction)."""
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
        queues = {}
        for d in self.directions:
            floor = torch.from_numpy(np.array(floors[d], copy=True)) if floors is not None else None
            queues[d] = WindowedQueues(n_units, self.top_n, max(self.window, self.batch_size), floor, dev)
        for batch in batches:
            tf = time.perf_counter()
            tensors = self.forward(batch)
            stats.forward_seconds += time.perf_counter() - tf
            stats.batches += 1
            stats.real_tokens += int(batch.real.sum())
            stats.attended_tokens += int(batch.attention.sum())
            stats.computed_tokens += int(batch.input_ids.numel())
            real = batch.real.to(dev)
            scores = self.scores(tensors, real)
            ids_dev = batch.ids.to(dev)
            for d in self.directions:
                q = queues[d]
                if q.room() < scores.shape[0]:
                    q.flush()
                keys = encode_keys(scores.T if d == "top" else -scores.T, ids_dev[None, :])
                mask = keys > q.thresh[:, None]
                units, cols = mask.nonzero(as_tuple=True)
                if units.numel():  # a batch with no candidate for any unit leaves the window untouched
                    payload = self.extremes(tensors, real, largest=(d == "top"))[cols, units]
                    q.add_batch(keys, mask, units, cols, payload)
        result = BlockResult(block=block, stats=stats)
        for d in self.directions:
            queues[d].flush()
            result.directions[d] = queues[d].entries(above=queues[d].floor).to_numpy()
        stats.seconds = time.perf_counter() - t0
        stats.merge_seconds = stats.seconds - stats.forward_seconds - stats.tokenize_seconds
        return result


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


__all__ = ["Batch", "BlockMiner", "BlockResult", "BlockStats", "Candidates", "empty_floors", "make_batches"]
