"""Worker side of probing: one forward pass per batch, and the activations of chosen words (or sentence scores)
of every mined unit, in request order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner


@dataclass
class ExtractRequest:
    """One block of probing sentences for a worker."""

    block: int
    """Block index (results are written per block, so the order of arrival never matters)."""
    texts: list[str]
    """Sentence texts, tokenised exactly as mining tokenises them."""
    pieces: list[list[tuple[int, int]]]
    """Per sentence, the [start, end) token positions of each word to extract (see miner.probing.align);
    empty lists for a sentence-level concept."""
    sentence_level: bool = False
    """True: one row per sentence, the unit's sentence score (mean over real tokens, as in mining)."""
    subword: str = "last"
    """first, last or mean: which of a word's pieces give its activation."""


@dataclass
class ExtractResult:
    """A block's activations: float32 [rows, units], rows in request order (sentence by sentence, word by word)."""

    block: int
    values: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)
    """sentences, rows, computed_tokens, seconds, forward_seconds."""


def _gather_index(pieces: list[list[tuple[int, int]]], local: np.ndarray, starts: np.ndarray, subword: str,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch rows, token positions, output rows, weights) of every token that feeds an extracted row.

    Example: one sentence (batch row 0, output rows from 5) with words at [1, 3) and [3, 4): last ->
    rows [0, 0], positions [2, 3], outputs [5, 6], weights [1, 1]; mean -> positions [1, 2, 3], outputs
    [5, 5, 6], weights [0.5, 0.5, 1].
    """
    b_idx: list[int] = []
    t_idx: list[int] = []
    o_idx: list[int] = []
    wts: list[float] = []
    for b, sent in enumerate(local):
        for j, (start, end) in enumerate(pieces[sent]):
            if subword == "first":
                pos = [start]
            elif subword == "last":
                pos = [end - 1]
            else:
                pos = list(range(start, end))
            b_idx += [b] * len(pos)
            t_idx += pos
            o_idx += [int(starts[sent]) + j] * len(pos)
            wts += [1.0 / len(pos)] * len(pos)
    return (torch.tensor(b_idx, dtype=torch.int64), torch.tensor(t_idx, dtype=torch.int64),
            torch.tensor(o_idx, dtype=torch.int64), torch.tensor(wts, dtype=torch.float32))


def extract_block(miner: BlockMiner, req: ExtractRequest) -> ExtractResult:
    """Activations of every unit of `miner`'s layout for the requested words (or sentences) of one block.

    The sentences are batched as mining batches them (length-sorted, padded), so a word's row does not depend
    on which worker ran the block or on the other blocks.
    """
    t0 = time.perf_counter()
    n = len(req.texts)
    counts = np.ones(n, np.int64) if req.sentence_level else np.fromiter((len(p) for p in req.pieces), np.int64, n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
    total = int(counts.sum())
    out = torch.zeros((total, miner.layout.n_units), dtype=torch.float32)
    stats = {"sentences": float(n), "rows": float(total), "computed_tokens": 0.0, "forward_seconds": 0.0}
    if total == 0:
        stats["seconds"] = time.perf_counter() - t0
        return ExtractResult(req.block, out.numpy(), stats)
    keep = np.flatnonzero(counts > 0)
    texts = [req.texts[i] for i in keep]
    batches, _ = make_batches(miner.loaded.tokenizer, keep.astype(np.int64), texts, miner.max_length, miner.batch_size)
    offsets = miner.offsets
    with torch.inference_mode():
        for batch in batches:
            tf = time.perf_counter()
            tensors = miner.forward(batch)
            stats["computed_tokens"] += batch.input_ids.numel()
            local = batch.ids.numpy()
            if req.sentence_level:
                scores = miner.scores(tensors, batch.real.to(miner.loaded.device)).float().cpu()
                out[torch.from_numpy(starts[local])] = scores
            else:
                b_idx, t_idx, o_idx, wts = _gather_index(req.pieces, local, starts, req.subword)
                dev = tensors[0].device
                b_dev, t_dev = b_idx.to(dev), t_idx.to(dev)
                for x, off in zip(tensors, offsets):
                    vals = x[b_dev, t_dev].float().cpu()  # [K, width]
                    # each output row belongs to one sentence, so to one batch: adding into zeros writes it once
                    out[:, off : off + x.shape[2]].index_add_(0, o_idx, vals if req.subword != "mean" else vals * wts[:, None])
            stats["forward_seconds"] += time.perf_counter() - tf
    stats["seconds"] = time.perf_counter() - t0
    return ExtractResult(req.block, out.numpy(), stats)
