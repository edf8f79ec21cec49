"""Exact bounded-gap sequential patterns (skip-n-grams) over integer sequences, mined level-wise with NumPy.

A pattern ``p = (p1, ..., pk)`` is *supported* by a sequence ``s`` when ``s`` holds indices
``i1 < i2 < ... < ik`` with ``s[ij] == pj`` and at most ``max_gap`` skipped items between consecutive
pattern items (``i(j+1) - ij - 1 <= max_gap``). Support counts sequences, not occurrences. With
``max_gap`` at least the longest sequence this is PrefixSpan's (unbounded-gap) semantics.

Method (exact, no hashing): Apriori level by level. Level 1 gives every item a dense id; the occurrences
of level k (end position, pattern id) extend by one item at each allowed gap, an extension's key is
``prefix_id * V + item`` (V = number of kept items), keys are de-duplicated per sequence, counted, pruned
below ``min_support`` (a pattern is never more frequent than its prefix, so pruning loses nothing above
the threshold) and renumbered densely for the next level. Work is done in chunks of whole sequences.

The result, :class:`PatternIndex`, stores each sequence's distinct pattern ids (CSR). Per-sequence work is
thus done once; the support of every pattern in any set of sequences (a unit's queue) is one gather and
one ``np.bincount`` (:meth:`PatternIndex.count`).

Example (max_gap=1, lengths 2..2): ``[[1, 2, 3], [1, 3], [2, 1]]`` -> ``{(1, 2): 1, (1, 3): 2, (2, 3): 1,
(2, 1): 1}``; ``(1, 3)`` in the first sequence skips one item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_FITS = 1 << 62


@dataclass(frozen=True)
class PatternIndex:
    """Kept patterns and, for every sequence, the ids of the distinct patterns it supports."""

    items: np.ndarray
    """(P, max_len) int64: the items of pattern i, padded with -1 after its length."""
    lengths: np.ndarray
    """(P,) int8: pattern lengths; ids are ordered by length, then by items."""
    support: np.ndarray
    """(P,) int64: supporting sequences among the counted ones."""
    offsets: np.ndarray
    """(S + 1,) int64: sequence s owns ids[offsets[s]:offsets[s + 1]]."""
    ids: np.ndarray
    """int32: distinct pattern ids per sequence, ascending within a sequence."""

    @property
    def n_patterns(self) -> int:
        return len(self.lengths)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Concatenated pattern ids of the given sequences (in row order)."""
        return self.ids[gather_ranges(self.offsets, rows)]

    def count(self, rows: np.ndarray) -> np.ndarray:
        """Support of every pattern within the given distinct sequences: (P,) int64.

        Example: ids of rows 0 and 2 are [0, 3] and [3] -> counts[3] == 2, counts[0] == 1.
        """
        return np.bincount(self.gather(np.asarray(rows, np.int64)), minlength=self.n_patterns)

    def pattern(self, pid: int) -> tuple[int, ...]:
        """Items of one pattern as a tuple."""
        return tuple(int(x) for x in self.items[pid, : self.lengths[pid]])


def gather_ranges(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Flat indices of the CSR ranges ``offsets[r]:offsets[r + 1]`` for r in rows, concatenated.

    Example: offsets [0, 2, 3, 6], rows [2, 0] -> [3, 4, 5, 0, 1].
    """
    rows = np.asarray(rows, np.int64)
    starts = offsets[rows]
    lens = offsets[rows + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = starts - (np.cumsum(lens) - lens)
    return np.arange(total, dtype=np.int64) + np.repeat(shift, lens)


def to_csr(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged list of sequences -> (offsets, items). Example: [[5, 6], [], [7]] -> ([0, 2, 2, 3], [5, 6, 7])."""
    lens = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    offsets = np.zeros(len(sequences) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    items = np.fromiter((x for s in sequences for x in s), np.int64, int(offsets[-1]))
    return offsets, items


def unique_pairs(a: np.ndarray, b: np.ndarray, b_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs of non-negative ints (b < b_size), sorted by a then b.

    Example: a [1, 0, 1], b [2, 5, 2], b_size 9 -> ([0, 1], [5, 2]).
    """
    if len(a) == 0:
        return a.astype(np.int64), b.astype(np.int64)
    hi = int(a.max()) + 1
    if hi * b_size < _FITS:
        key = np.unique(a.astype(np.int64) * b_size + b)
        return key // b_size, key % b_size
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep].astype(np.int64), b[keep].astype(np.int64)


def _chunk_bounds(occ_seq: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Split sorted occurrence rows into chunks of about `size` rows that never split a sequence."""
    n = len(occ_seq)
    bounds, start = [], 0
    while start < n:
        stop = start + size
        if stop >= n:
            stop = n
        else:
            stop = int(np.searchsorted(occ_seq, occ_seq[stop], "left"))
            if stop <= start:
                stop = int(np.searchsorted(occ_seq, occ_seq[start], "right"))
        bounds.append((start, stop))
        start = stop
    return bounds


def _extend(pos: np.ndarray, pid: np.ndarray, tok: np.ndarray, end_of: np.ndarray, n_items: int,
            max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Extend occurrences (end position, pattern id) by one kept item at each gap 0..max_gap.

    Returns (new end positions, keys prefix_id * n_items + item). Example: pos [0], pid [4], tokens
    [a, b, c] with ids a=0 b=1 c=2, n_items 3, max_gap 1 -> pos [1, 2], keys [13, 14].
    """
    ends = end_of[pos]
    out_pos, out_key = [], []
    for gap in range(max_gap + 1):
        nxt = pos + 1 + gap
        ok = nxt < ends
        nxt = nxt[ok]
        item = tok[nxt]
        kept = item >= 0
        out_pos.append(nxt[kept])
        out_key.append(pid[ok][kept] * n_items + item[kept])
    return np.concatenate(out_pos), np.concatenate(out_key)


def build_pattern_index(
    offsets: np.ndarray,
    items: np.ndarray,
    *,
    min_len: int = 2,
    max_len: int = 4,
    max_gap: int = 2,
    min_support: int = 1,
    counted: np.ndarray | None = None,
    chunk_size: int = 1 << 21,
) -> PatternIndex:
    """Every pattern of length min_len..max_len with support >= min_support, and per-sequence ids.

    offsets/items: the sequences in CSR form (see :func:`to_csr`); items are non-negative ints.
    counted: bool per sequence; support (and so pruning) counts only these sequences, but the ids of
    kept patterns are listed for every sequence (e.g. background sentences, counted later with
    :meth:`PatternIndex.count`). chunk_size bounds the occurrences processed at once (memory).

    Example (min_len 1, max_len 2, max_gap 0, min_support 2): [[1, 2], [1, 2, 2], [3]] -> patterns
    (1,) (2,) (1, 2) with supports 2, 2, 2; (2, 2) and (3,) have support 1 and are dropped.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"min_len/max_len: need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if max_gap < 0:
        raise ValueError(f"max_gap: must be >= 0, got {max_gap}")
    if min_support < 1:
        raise ValueError(f"min_support: must be >= 1, got {min_support}")
    offsets = np.asarray(offsets, np.int64)
    items = np.asarray(items, np.int64)
    n_seq = len(offsets) - 1
    lens = np.diff(offsets)
    seq_of = np.repeat(np.arange(n_seq, dtype=np.int64), lens)
    end_of = np.repeat(offsets[1:], lens)
    counted = np.ones(n_seq, bool) if counted is None else np.asarray(counted, bool)
    if len(counted) != n_seq:
        raise ValueError("counted: needs one flag per sequence")

    # Level 1: dense ids for items with enough support.
    values, inv = np.unique(items, return_inverse=True)
    s1, i1 = unique_pairs(seq_of, inv.astype(np.int64), max(len(values), 1))
    sup1 = np.bincount(i1[counted[s1]], minlength=len(values))
    frequent = sup1 >= min_support
    n_items = int(frequent.sum())
    remap = np.full(len(values), -1, np.int64)
    remap[frequent] = np.arange(n_items)
    tok = remap[inv] if len(items) else np.zeros(0, np.int64)
    item_values = values[frequent]

    level_items = [item_values.reshape(-1, 1)]
    level_support = [sup1[frequent].astype(np.int64)]
    level_csr: list[tuple[np.ndarray, np.ndarray]] = []
    if min_len <= 1:
        keep = frequent[i1]
        level_csr.append((s1[keep], remap[i1[keep]]))
    occ_pos = np.flatnonzero(tok >= 0)
    occ_pid = tok[occ_pos]

    for k in range(2, max_len + 1):
        n_prev = len(level_support[-1])
        if len(occ_pos) == 0 or n_items == 0:
            break
        key_size = n_prev * n_items
        bounds = _chunk_bounds(seq_of[occ_pos], chunk_size)
        # Pass 1: support of each candidate key over counted sequences.
        part_keys, part_counts = [], []
        for a, b in bounds:
            pos, key = _extend(occ_pos[a:b], occ_pid[a:b], tok, end_of, n_items, max_gap)
            seq0 = seq_of[occ_pos[a]]
            s, kk = unique_pairs(seq_of[pos] - seq0, key, key_size)
            uk, uc = np.unique(kk[counted[s + seq0]], return_counts=True)
            part_keys.append(uk)
            part_counts.append(uc)
        all_keys = np.concatenate(part_keys)
        uk, uinv = np.unique(all_keys, return_inverse=True)
        sup = np.bincount(uinv, weights=np.concatenate(part_counts), minlength=len(uk)).astype(np.int64)
        keep = sup >= min_support
        kept_keys = uk[keep]
        if len(kept_keys) == 0:
            break
        # Pass 2: renumber kept keys densely; next occurrences and per-sequence ids.
        new_pos, new_pid, csr_s, csr_p = [], [], [], []
        n_kept = len(kept_keys)
        for a, b in bounds:
            pos, key = _extend(occ_pos[a:b], occ_pid[a:b], tok, end_of, n_items, max_gap)
            pid = np.searchsorted(kept_keys, key)
            hit = kept_keys[np.minimum(pid, n_kept - 1)] == key
            pos, pid = pos[hit], pid[hit]
            if k < max_len:
                p_, d_ = unique_pairs(pos, pid, n_kept)
                new_pos.append(p_)
                new_pid.append(d_)
            if k >= min_len and len(pos):
                seq0 = seq_of[pos[0]]
                s_, q_ = unique_pairs(seq_of[pos] - seq0, pid, n_kept)
                csr_s.append(s_ + seq0)
                csr_p.append(q_)
        prefix, last = kept_keys // n_items, kept_keys % n_items
        level_items.append(np.hstack([level_items[-1][prefix], item_values[last].reshape(-1, 1)]))
        level_support.append(sup[keep])
        if k >= min_len:
            level_csr.append((np.concatenate(csr_s) if csr_s else np.zeros(0, np.int64),
                              np.concatenate(csr_p) if csr_p else np.zeros(0, np.int64)))
        if k < max_len:
            occ_pos, occ_pid = np.concatenate(new_pos), np.concatenate(new_pid)

    return _assemble(level_items, level_support, level_csr, min_len, max_len, n_seq)


def _assemble(level_items: list[np.ndarray], level_support: list[np.ndarray],
              level_csr: list[tuple[np.ndarray, np.ndarray]], min_len: int, max_len: int, n_seq: int) -> PatternIndex:
    """Join the levels min_len.. into one id space and interleave the per-level CSR rows by sequence."""
    out_levels = list(range(min_len, min_len + len(level_csr)))
    padded, sizes = [], []
    for k in out_levels:
        it = level_items[k - 1]
        pad = np.full((len(it), max_len), -1, np.int64)
        pad[:, :k] = it
        padded.append(pad)
        sizes.append(len(it))
    bases = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    counts = [np.bincount(s, minlength=n_seq) for s, _ in level_csr]
    total = np.sum(counts, axis=0) if counts else np.zeros(n_seq, np.int64)
    offsets = np.zeros(n_seq + 1, np.int64)
    np.cumsum(total, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), np.int32)
    before = np.zeros(n_seq, np.int64)
    for li, (s, p) in enumerate(level_csr):
        start = np.cumsum(counts[li]) - counts[li]
        rank = np.arange(len(s), dtype=np.int64) - start[s]
        ids[offsets[s] + before[s] + rank] = bases[li] + p
        before += counts[li]
    items = np.concatenate(padded) if padded else np.zeros((0, max_len), np.int64)
    lengths = np.concatenate([np.full(n, k, np.int8) for n, k in zip(sizes, out_levels)]) if sizes else np.zeros(0, np.int8)
    support = np.concatenate([level_support[k - 1] for k in out_levels]) if out_levels else np.zeros(0, np.int64)
    return PatternIndex(items=items, lengths=lengths, support=support, offsets=offsets, ids=ids)


def count_patterns(sequences: Sequence[Sequence[int]], min_len: int = 2, max_len: int = 4, max_gap: int = 2,
                   min_support: int = 1) -> dict[tuple[int, ...], int]:
    """Support of every bounded-gap pattern of length min_len..max_len (support >= min_support).

    Example: count_patterns([[1, 2, 3], [1, 3], [2, 1]], 2, 2, max_gap=1)
    -> {(1, 2): 1, (1, 3): 2, (2, 1): 1, (2, 3): 1}
    """
    offsets, items = to_csr(sequences)
    index = build_pattern_index(offsets, items, min_len=min_len, max_len=max_len, max_gap=max_gap,
                                min_support=min_support)
    return {index.pattern(i): int(index.support[i]) for i in range(index.n_patterns)}
