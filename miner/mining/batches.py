"""Tokenise sentences as the model sees them and cut them into padded, length-sorted batches."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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


def allow_tokenizer_threads(allow: bool = True, threads: int = 0) -> None:
    """Let (or stop) the Rust tokenizer encode a batch of texts on `threads` threads (0: its default, one per
    core).

    `miner` turns this off at import (a forked process would deadlock on the tokenizer's thread pool); a mining
    actor, which never forks, turns it on so that a block's texts are encoded in parallel (the `tokenizers`
    library reads the switch at every batch call; the thread count counts only before its first parallel call).
    The tokens are the same either way.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if allow else "false"
    if allow and threads > 0:
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))


def tokenize_sentences(tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[list[int]], list[list[int]], list[int]]:
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


def batch_bounds(lengths: np.ndarray, batch_size: int, batch_tokens: int | None = None) -> list[tuple[int, int]]:
    """[start, end) of each batch over `lengths` sorted ascending: at most `batch_size` sentences, and, with a
    token budget, at most `batch_tokens` padded cells (rows x the longest row; a sentence longer than the
    budget gets a batch of its own).

    Example: lengths [2, 3, 3, 5, 9], batch_size 4, budget 10: rows 0-2 take 3 x 3 cells (4 x 5 is over),
    row 3 alone 5 (2 x 9 is over), row 4 alone 9.

    >>> batch_bounds(np.array([2, 3, 3, 5, 9]), 4, 10)
    [(0, 3), (3, 4), (4, 5)]
    >>> batch_bounds(np.array([2, 3, 3, 5, 9]), 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    n = len(lengths)
    if batch_tokens is None:
        return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    bounds = []
    start = 0
    while start < n:
        # rows start..e-1 take (e - start) * lengths[e - 1] cells, which grows with e: the batch ends at the
        # last e within the budget (at least one row)
        stop = min(start + batch_size, n)
        cells = np.arange(1, stop - start + 1) * lengths[start:stop]
        end = start + max(1, int(np.count_nonzero(cells <= batch_tokens)))
        bounds.append((start, end))
        start = end
    return bounds


def make_batches(tokenizer: Any, ids: np.ndarray, texts: list[str], max_length: int, batch_size: int,
                 batch_tokens: int | None = None) -> tuple[list[Batch], int]:
    """Tokenise, sort by length (stable), and cut into padded batches (`batch_bounds`); returns (batches,
    truncated count). Each batch is filled by one vectorised gather from the block's concatenated token ids.

    Example: lengths [9, 3, 5, 3] with batch_size 2 -> batches of the sentences at [1, 3] and [2, 0].
    """
    input_ids, special, long_rows = tokenize_sentences(tokenizer, texts, max_length)
    n = len(input_ids)
    lengths = np.fromiter((len(r) for r in input_ids), dtype=np.int64, count=n)
    total = int(lengths.sum())
    flat_ids = np.fromiter((t for row in input_ids for t in row), dtype=np.int64, count=total)
    flat_real = np.fromiter((s == 0 for row in special for s in row), dtype=bool, count=total)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    counted = np.concatenate([[0], np.cumsum(flat_real, dtype=np.int64)])
    reals = counted[starts + lengths] - counted[starts]  # real tokens per sentence
    # a sentence of special tokens only: score over everything attended
    none_real = np.flatnonzero((reals == 0) & (lengths > 0))
    if len(none_real):
        flat_real[np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in none_real])] = True
    order = np.argsort(lengths, kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sorted_lengths = lengths[order]
    batches = []
    for a, b in batch_bounds(sorted_lengths, batch_size, batch_tokens):
        rows = order[a:b]
        row_len = sorted_lengths[a:b]
        t = int(row_len[-1])
        att = np.arange(t)[None, :] < row_len[:, None]
        where = np.where(att, starts[rows][:, None] + np.arange(t)[None, :], 0)
        arr = np.where(att, flat_ids[where] if total else pad, pad)
        real = att & (flat_real[where] if total else False)
        batches.append(Batch(torch.from_numpy(ids[rows].astype(np.int64)), torch.from_numpy(arr),
                             torch.from_numpy(att.astype(np.int64)), torch.from_numpy(real), int(real.sum()),
                             int(row_len.sum())))
    return batches, len(long_rows)
