"""Tokenise sentences as the model sees them and cut them into padded, length-sorted batches."""

from __future__ import annotations

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


def make_batches(tokenizer: Any, ids: np.ndarray, texts: list[str], max_length: int, batch_size: int,
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
