"""Exact bounded-gap sequential patterns (skip-n-grams) over integer sequences, mined level-wise with NumPy.

A pattern ``p = (p1, ..., pk)`` is *supported* by a sequence ``s`` when ``s`` holds indices
``i1 < i2 < ... < ik`` with ``s[ij] == pj`` and at most ``max_gap`` skipped items between consecutive
pattern items (``i(j+1) - ij - 1 <= max_gap``). Support counts sequences, not occurrences. With
``max_gap`` at least the longest sequence this is PrefixSpan's (unbounded-gap) semantics.

Method (exact, no hashing): Apriori level by level. Level 1 gives every kept item a dense id; each
occurrence of a level-k pattern (end position, pattern id) extends by one kept item at each allowed gap;
an extension's key packs ``(prefix id, item)`` into one int64; keys are de-duplicated per sequence,
counted, pruned below ``min_support`` (a pattern is never more frequent than its prefix, so pruning loses
nothing at or above the threshold) and renumbered densely for the next level. Sequences are laid out
with ``max_gap + 1`` sentinel slots after each, so extensions need no bounds checks; work is chunked by
whole sequences to bound memory.

The result, :class:`PatternIndex`, stores each sequence's distinct pattern ids (CSR). Per-sequence work is
thus done once; the support of every pattern in any set of sequences (a unit's queue) is one gather and
one ``np.bincount`` (:meth:`PatternIndex.count`).

Example (max_gap=1, lengths 2..2); ``(1, 3)`` in the first sequence skips one item:

>>> count_patterns([[1, 2, 3], [1, 3], [2, 1]], min_len=2, max_len=2, max_gap=1)
{(1, 2): 1, (1, 3): 2, (2, 1): 1, (2, 3): 1}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_DENSE_KEYS = 1 << 24
"""Key spaces up to this size are counted and mapped with flat arrays instead of sorting/searching."""


@dataclass(frozen=True)
class PatternIndex:
    """Kept patterns and, for every sequence, the ids of the distinct patterns it supports."""

    items: np.ndarray
    """(P, max_len) int64: the items of pattern i, padded with -1 after its length."""
    lengths: np.ndarray
    """(P,) int8: pattern lengths; ids are ordered by length, then by (prefix id, last item)."""
    support: np.ndarray
    """(P,) int64: supporting sequences among the counted ones."""
    offsets: np.ndarray
    """(S + 1,) int64: sequence s owns ids[offsets[s]:offsets[s + 1]]."""
    ids: np.ndarray
    """int32: distinct pattern ids per sequence, ascending within a sequence."""

    @property
    def n_patterns(self) -> int:
        return len(self.lengths)

    @cached_property
    def _bounds(self) -> list[int]:
        return self.offsets.tolist()

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Concatenated pattern ids of the given sequences (in row order).

        >>> ix = build_pattern_index(*to_csr([[1, 2], [2], [1, 3]]), min_len=1, max_len=2, max_gap=0)
        >>> [ix.pattern(p) for p in range(ix.n_patterns)]
        [(1,), (2,), (3,), (1, 2), (1, 3)]
        >>> ix.gather(np.array([2, 0]))
        array([0, 2, 4, 0, 1, 3], dtype=int32)
        """
        bounds, ids = self._bounds, self.ids
        parts = [ids[bounds[r]:bounds[r + 1]] for r in np.asarray(rows).tolist()]
        return np.concatenate(parts) if parts else ids[:0]

    def count(self, rows: np.ndarray) -> np.ndarray:
        """Support of every pattern within the given distinct sequences: (P,) int64.

        >>> build_pattern_index(*to_csr([[1, 2], [2], [1, 3]]), min_len=1, max_len=2, max_gap=0).count([0, 2])
        array([2, 1, 1, 1, 1])
        """
        return np.bincount(self.gather(rows), minlength=self.n_patterns)

    def pattern(self, pid: int) -> tuple[int, ...]:
        """Items of one pattern as a tuple."""
        return tuple(int(x) for x in self.items[pid, : self.lengths[pid]])


def to_csr(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged list of sequences -> (offsets, items):
    >>> to_csr([[5, 6], [], [7]])
    (array([0, 2, 2, 3]), array([5, 6, 7]))
    """
    lens = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    offsets = np.zeros(len(sequences) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    items = np.fromiter((x for s in sequences for x in s), np.int64, int(offsets[-1]))
    return offsets, items


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + neighbour compare; np.unique is far slower on large int64 arrays).

    >>> sorted_unique(np.array([3, 1, 3, 2]))
    array([1, 2, 3])
    """
    s = np.sort(x)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def bits_for(size: int) -> int:
    """Bits that hold the values 0..size-1:
    >>> [bits_for(1), bits_for(2), bits_for(5)]
    [0, 1, 3]
    """
    return max(int(size) - 1, 0).bit_length()


def unique_pairs(a: np.ndarray, b: np.ndarray, b_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs of non-negative ints (b < b_size), sorted by a then b.

    Packs ``a << bits | b`` into one int64 when it fits (it always does for the sizes mined here),
    otherwise sorts lexicographically:
    >>> unique_pairs(np.array([1, 0, 1]), np.array([2, 5, 2]), b_size=9)
    (array([0, 1]), array([5, 2]))
    """
    if len(a) == 0:
        return a.astype(np.int64), b.astype(np.int64)
    shift = bits_for(b_size)
    if bits_for(int(a.max()) + 1) + shift <= 62:
        key = sorted_unique((a.astype(np.int64, copy=False) << shift) | b)
        return key >> shift, key & ((1 << shift) - 1)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep].astype(np.int64), b[keep].astype(np.int64)


def _dense_items(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index of each item among them); a lookup table when values are small ints.

    >>> _dense_items(np.array([7, 3, 7]))
    (array([3, 7]), array([1, 0, 1]))
    """
    if len(items) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if items.max() < _DENSE_KEYS:
        present = np.bincount(items) > 0
        return np.flatnonzero(present), (np.cumsum(present) - 1)[items]
    values, inv = np.unique(items, return_inverse=True)
    return values, inv.astype(np.int64)


def _chunk_bounds(occ_seq: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Split sorted occurrence rows into chunks of about `size` rows that never split a sequence."""
    n = len(occ_seq)
    bounds, start = [], 0
    while start < n:
        stop = min(start + size, n)
        if stop < n:
            stop = int(np.searchsorted(occ_seq, occ_seq[stop], "left"))
            if stop <= start:
                stop = int(np.searchsorted(occ_seq, occ_seq[start], "right"))
        bounds.append((start, stop))
        start = stop
    return bounds


def _extend(pos: np.ndarray, pid: np.ndarray, tokp: np.ndarray, item_bits: int,
            max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Extend occurrences (end position, pattern id) by the item at each gap 0..max_gap.

    tokp: padded item ids, where the sentinel ``n_items`` marks a dropped item or the end of a sequence.
    Returns (new end positions, keys ``pid << item_bits | item``), sentinel extensions included (callers
    drop them: they are never kept). Example: tokp [0, 1, 2, 3, 3] (sentinel 3), item_bits 2, max_gap 1;
    pattern 4 ending at 0 grows by item 1 (key 4 << 2 | 1) or, skipping one, by item 2:

    >>> _extend(np.array([0]), np.array([4]), np.array([0, 1, 2, 3, 3]), item_bits=2, max_gap=1)
    (array([1, 2]), array([17, 18]))
    """
    nxt = (pos[:, None] + np.arange(1, max_gap + 2, dtype=np.int64)).ravel()
    key = ((pid << item_bits)[:, None] | tokp[nxt].reshape(len(pos), max_gap + 1)).ravel()
    return nxt, key


class _KeyCounter:
    """Sums per-key counts over chunks: a dense array for small key spaces, sorted runs otherwise."""

    def __init__(self, key_size: int) -> None:
        self.dense = np.zeros(key_size, np.int64) if key_size <= _DENSE_KEYS else None
        self.parts: list[np.ndarray] = []

    def add(self, keys: np.ndarray) -> None:
        if self.dense is not None:
            self.dense += np.bincount(keys, minlength=len(self.dense))
        else:
            self.parts.append(keys)

    def frequent(self, min_support: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted keys with total count >= min_support, and their counts."""
        if self.dense is not None:
            keys = np.flatnonzero(self.dense >= min_support)
            return keys, self.dense[keys]
        keys = np.sort(np.concatenate(self.parts)) if self.parts else np.zeros(0, np.int64)
        if len(keys) == 0:
            return keys, np.zeros(0, np.int64)
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        counts = np.diff(np.append(starts, len(keys)))
        keep = counts >= min_support
        return keys[starts[keep]], counts[keep]


def _key_mapper(kept_keys: np.ndarray, key_size: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Function mapping keys to (dense id, hit mask) among sorted kept keys (lookup table when small)."""
    if key_size <= _DENSE_KEYS:
        lut = np.full(key_size, -1, np.int64)
        lut[kept_keys] = np.arange(len(kept_keys))

        def by_table(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pid = lut[keys]
            return pid, pid >= 0

        return by_table
    last = len(kept_keys) - 1

    def by_search(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pid = np.searchsorted(kept_keys, keys)
        return pid, kept_keys[np.minimum(pid, last)] == keys

    return by_search


def build_pattern_index(
    offsets: np.ndarray,
    items: np.ndarray,
    *,
    min_len: int = 2,
    max_len: int = 4,
    max_gap: int = 2,
    min_support: int = 1,
    counted: np.ndarray | None = None,
    chunk_size: int = 1 << 20,
) -> PatternIndex:
    """Every pattern of length min_len..max_len with support >= min_support, and per-sequence ids.

    offsets/items: the sequences in CSR form (see :func:`to_csr`); items are non-negative ints.
    counted: bool per sequence; support (and so pruning) counts only these sequences, but the ids of
    kept patterns are listed for every sequence (e.g. background sentences, counted later with
    :meth:`PatternIndex.count`). chunk_size bounds the occurrences processed at once (memory).

    Example: (2, 2) and (3,) have support 1 and are dropped; every sequence lists its kept patterns' ids:

    >>> ix = build_pattern_index(*to_csr([[1, 2], [1, 2, 2], [3]]), min_len=1, max_len=2, max_gap=0, min_support=2)
    >>> [ix.pattern(p) for p in range(ix.n_patterns)], ix.support
    ([(1,), (2,), (1, 2)], array([2, 2, 2]))
    >>> ix.offsets, ix.ids
    (array([0, 3, 6, 6]), array([0, 1, 2, 0, 1, 2], dtype=int32))
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"min_len/max_len: need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if max_gap < 0:
        raise ValueError(f"max_gap: must be >= 0, got {max_gap}")
    if min_support < 1:
        raise ValueError(f"min_support: must be >= 1, got {min_support}")
    offsets = np.asarray(offsets, np.int64)
    items = np.asarray(items, np.int64)
    if len(items) and items.min() < 0:
        raise ValueError("items: must be non-negative")
    n_seq = len(offsets) - 1
    counted = np.ones(n_seq, bool) if counted is None else np.asarray(counted, bool)
    if len(counted) != n_seq:
        raise ValueError("counted: needs one flag per sequence")
    seq_of = np.repeat(np.arange(n_seq, dtype=np.int64), np.diff(offsets))

    # Level 1: dense ids for items with enough support.
    values, inv = _dense_items(items)
    s1, i1 = unique_pairs(seq_of, inv, max(len(values), 1))
    sup1 = np.bincount(i1[counted[s1]], minlength=len(values))
    frequent = sup1 >= min_support
    n_items = int(frequent.sum())
    remap = np.full(len(values), n_items, np.int64)  # dropped items become the sentinel n_items
    remap[frequent] = np.arange(n_items)
    layout = _Layout.build(seq_of, remap[inv], n_items, max_gap, counted)
    del seq_of, inv

    level_items = [values[frequent].reshape(-1, 1)]
    level_support = [sup1[frequent].astype(np.int64)]
    level_csr: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per level: chunks of (sequence, id) rows
    if min_len <= 1:
        keep = frequent[i1]
        level_csr.append([(s1[keep], remap[i1[keep]])])
    occ_pos = np.flatnonzero(layout.tokp != n_items)
    occ_pid = layout.tokp[occ_pos]
    for k in range(2, max_len + 1):
        if len(occ_pos) == 0:
            break
        grown = _next_level(layout, occ_pos, occ_pid, len(level_support[-1]), min_support, last=k == max_len,
                            want_rows=k >= min_len, chunk_size=chunk_size)
        if grown is None:
            break
        kept_keys, sup, csr, occ_pos, occ_pid = grown
        prefix, last = kept_keys >> layout.item_bits, kept_keys & ((1 << layout.item_bits) - 1)
        level_items.append(np.hstack([level_items[-1][prefix], level_items[0][last]]))
        level_support.append(sup)
        if k >= min_len:
            level_csr.append(csr)
    return _assemble(level_items, level_support, level_csr, min_len, max_len, n_seq)


@dataclass(frozen=True)
class _Layout:
    """Sequences laid out with max_gap + 1 sentinel slots after each (so extensions need no bounds checks)."""

    tokp: np.ndarray
    """Kept item id per slot; the sentinel (n_items) marks dropped items and the padding."""
    seqp: np.ndarray
    """Sequence of each slot."""
    counted: np.ndarray
    """Per sequence: does it count towards support?"""
    all_counted: bool
    item_bits: int
    """Bits of an item id in a packed key (room for the sentinel)."""
    sentinel: int
    max_gap: int

    @staticmethod
    def build(seq_of: np.ndarray, tok: np.ndarray, n_items: int, max_gap: int, counted: np.ndarray) -> _Layout:
        """Sequence s starts at slot offsets[s] + s * (max_gap + 1). Example (max_gap 1, sentinel 9), [[4, 5], [6]]:
        >>> _Layout.build(np.array([0, 0, 1]), np.array([4, 5, 6]), 9, 1, np.ones(2, bool)).tokp
        array([4, 5, 9, 9, 6, 9, 9])
        """
        pad = max_gap + 1
        slot = np.arange(len(tok), dtype=np.int64) + seq_of * pad
        tokp = np.full(len(tok) + len(counted) * pad, n_items, np.int64)
        tokp[slot] = tok
        seqp = np.zeros(len(tokp), np.int64)
        seqp[slot] = seq_of
        return _Layout(tokp=tokp, seqp=seqp, counted=counted, all_counted=bool(counted.all()),
                       item_bits=bits_for(n_items + 1), sentinel=n_items, max_gap=max_gap)


_Level = tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]


def _next_level(lay: _Layout, occ_pos: np.ndarray, occ_pid: np.ndarray, n_prev: int, min_support: int, *,
                last: bool, want_rows: bool, chunk_size: int) -> _Level | None:
    """Grow every occurrence by one item: (kept keys, their support, per-sequence (sequence, id) row
    chunks, next occurrence positions, next occurrence ids), or None when no pattern is kept."""
    key_size = n_prev << lay.item_bits
    bounds = _chunk_bounds(lay.seqp[occ_pos], chunk_size)
    # Pass 1: support of each candidate key over counted sequences. At the last level the distinct
    # (sequence, key) rows are kept, so pass 2 there is a lookup, not a second extension and sort.
    counter = _KeyCounter(key_size)
    kept_rows: list[tuple[int, np.ndarray, np.ndarray]] = []
    key_type = np.int32 if key_size < 2**31 else np.int64
    for a, b in bounds:
        pos, key = _extend(occ_pos[a:b], occ_pid[a:b], lay.tokp, lay.item_bits, lay.max_gap)
        seq0 = int(lay.seqp[occ_pos[a]])
        s, key = unique_pairs(lay.seqp[pos] - seq0, key, key_size)
        counter.add(key if lay.all_counted else key[lay.counted[s + seq0]])
        if last:
            kept_rows.append((seq0, s.astype(np.int32), key.astype(key_type)))
    kept_keys, sup = counter.frequent(min_support)
    real = (kept_keys & ((1 << lay.item_bits) - 1)) != lay.sentinel
    kept_keys, sup = kept_keys[real], sup[real]
    del counter
    if len(kept_keys) == 0:
        return None
    # Pass 2: renumber kept keys densely (ids ascend with keys); next occurrences, per-sequence ids.
    to_id = _key_mapper(kept_keys, key_size)
    n_kept = len(kept_keys)
    pos_type = np.int32 if len(lay.tokp) < 2**31 else np.int64  # stored occurrences: half the memory
    new_pos, new_pid, csr = [], [], []
    while kept_rows:
        seq0, s, key = kept_rows.pop(0)
        pid, hit = to_id(key.astype(np.int64))
        csr.append(((s[hit] + seq0).astype(np.int32), pid[hit].astype(np.int32)))
    if not last:
        for a, b in bounds:
            pos, key = _extend(occ_pos[a:b], occ_pid[a:b], lay.tokp, lay.item_bits, lay.max_gap)
            pid, hit = to_id(key)
            pos, pid = unique_pairs(pos[hit], pid[hit], n_kept)
            if len(pos) == 0:
                continue
            new_pos.append(pos.astype(pos_type))
            new_pid.append(pid.astype(np.int32))
            if want_rows:
                seq0 = int(lay.seqp[pos[0]])
                s_, q_ = unique_pairs(lay.seqp[pos] - seq0, pid, n_kept)
                csr.append(((s_ + seq0).astype(np.int32), q_.astype(np.int32)))
    return kept_keys, sup.astype(np.int64), csr, _cat(new_pos), _cat(new_pid)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _assemble(level_items: list[np.ndarray], level_support: list[np.ndarray],
              level_csr: list[list[tuple[np.ndarray, np.ndarray]]], min_len: int, max_len: int,
              n_seq: int) -> PatternIndex:
    """Join the levels min_len.. into one id space and interleave the per-level CSR rows by sequence.

    Each level's rows come in chunks sorted by (sequence, id); they are written chunk by chunk into
    place, so memory stays at the result plus one chunk.
    """
    out_levels = list(range(min_len, min_len + len(level_csr)))
    sizes = [len(level_items[k - 1]) for k in out_levels]
    bases = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    counts = []
    for chunks in level_csr:
        c = np.zeros(n_seq, np.int64)
        for s, _ in chunks:
            c += np.bincount(s, minlength=n_seq)
        counts.append(c)
    offsets = np.zeros(n_seq + 1, np.int64)
    if counts:
        np.cumsum(np.sum(counts, axis=0), out=offsets[1:])
    ids = np.empty(int(offsets[-1]), np.int32)
    before = offsets[:-1].copy()
    for li, chunks in enumerate(level_csr):
        # Row j of this level (sequence s[j]) goes after the earlier levels' ids of s[j], in order.
        shift = before - (np.cumsum(counts[li]) - counts[li])
        row = 0
        while chunks:
            s, p = chunks.pop(0)
            ids[shift[s] + np.arange(row, row + len(s), dtype=np.int64)] = bases[li] + p
            row += len(s)
        before += counts[li]
    items = np.full((int(bases[-1]), max_len), -1, np.int64)
    for li, k in enumerate(out_levels):
        items[bases[li]:bases[li + 1], :k] = level_items[k - 1]
    lengths = np.repeat(np.array(out_levels, np.int8), sizes)
    support = np.concatenate([level_support[k - 1] for k in out_levels]) if out_levels else np.zeros(0, np.int64)
    return PatternIndex(items=items, lengths=lengths, support=support, offsets=offsets, ids=ids)


def count_patterns(sequences: Sequence[Sequence[int]], min_len: int = 2, max_len: int = 4, max_gap: int = 2,
                   min_support: int = 1) -> dict[tuple[int, ...], int]:
    """Support of every bounded-gap pattern of length min_len..max_len (support >= min_support); see the
    module docstring for an example."""
    offsets, items = to_csr(sequences)
    index = build_pattern_index(offsets, items, min_len=min_len, max_len=max_len, max_gap=max_gap,
                                min_support=min_support)
    return {index.pattern(i): int(index.support[i]) for i in range(index.n_patterns)}
