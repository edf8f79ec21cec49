"""Bounded-gap pattern supports against a brute-force loop and against the prefixspan package."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from prefixspan import PrefixSpan

from miner.signatures import patterns
from miner.signatures.patterns import (
    PatternIndex,
    build_pattern_index,
    count_patterns,
    to_csr,
    unique_pairs,
)


def brute_force_patterns(seq: list[int], min_len: int, max_len: int, max_gap: int) -> set[tuple[int, ...]]:
    """Every pattern one sequence supports: all index combinations whose consecutive gaps are <= max_gap."""
    found = set()
    for k in range(min_len, max_len + 1):
        for idx in itertools.combinations(range(len(seq)), k):
            if all(idx[j + 1] - idx[j] - 1 <= max_gap for j in range(k - 1)):
                found.add(tuple(seq[i] for i in idx))
    return found


def brute_force_counts(seqs: list[list[int]], min_len: int, max_len: int, max_gap: int,
                       min_support: int = 1) -> dict[tuple[int, ...], int]:
    counts: dict[tuple[int, ...], int] = {}
    for seq in seqs:
        for p in brute_force_patterns(seq, min_len, max_len, max_gap):
            counts[p] = counts.get(p, 0) + 1
    return {p: c for p, c in counts.items() if c >= min_support}


def random_db(rng: random.Random, n_seq: int, max_seq_len: int, alphabet: int) -> list[list[int]]:
    return [[rng.randrange(alphabet) for _ in range(rng.randrange(0, max_seq_len + 1))] for _ in range(n_seq)]


def test_docstring_examples() -> None:
    assert count_patterns([[1, 2, 3], [1, 3], [2, 1]], 2, 2, max_gap=1) == {(1, 2): 1, (1, 3): 2, (2, 1): 1, (2, 3): 1}
    assert count_patterns([[1, 2], [1, 2, 2], [3]], 1, 2, 0, 2) == {(1,): 2, (2,): 2, (1, 2): 2}
    index = PatternIndex(items=np.zeros((4, 1)), lengths=np.ones(4, np.int8), support=np.zeros(4),
                         offsets=np.array([0, 2, 3, 6]), ids=np.array([0, 3, 1, 0, 2, 3], np.int32))
    assert index.gather(np.array([2, 0])).tolist() == [0, 2, 3, 0, 3]
    assert index.count(np.array([2, 0])).tolist() == [2, 0, 1, 2]
    assert index.gather(np.array([], np.int64)).tolist() == []
    offsets, items = to_csr([[5, 6], [], [7]])
    assert offsets.tolist() == [0, 2, 2, 3] and items.tolist() == [5, 6, 7]
    a, b = unique_pairs(np.array([1, 0, 1]), np.array([2, 5, 2]), 9)
    assert a.tolist() == [0, 1] and b.tolist() == [5, 2]


def test_gap_semantics() -> None:
    # (a, b) with two items between them: supported at max_gap 2, not at max_gap 1; counted once per sentence.
    seqs = [[0, 9, 9, 1], [0, 1, 0, 1]]
    assert count_patterns(seqs, 2, 2, max_gap=2)[(0, 1)] == 2
    assert count_patterns(seqs, 2, 2, max_gap=1)[(0, 1)] == 1


@pytest.mark.parametrize("seed", range(40))
def test_supports_equal_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    seqs = random_db(rng, rng.randrange(1, 15), 10, rng.choice([2, 4, 8]))
    min_len = rng.randint(1, 3)
    max_len = rng.randint(min_len, 4)
    max_gap = rng.randint(0, 3)
    min_support = rng.randint(1, 3)
    expected = brute_force_counts(seqs, min_len, max_len, max_gap, min_support)
    assert count_patterns(seqs, min_len, max_len, max_gap, min_support) == expected


@pytest.mark.parametrize("seed", range(10))
def test_per_sequence_ids_equal_brute_force(seed: int) -> None:
    """Each sequence lists exactly the kept patterns it supports; chunking changes nothing."""
    rng = random.Random(100 + seed)
    seqs = random_db(rng, 12, 9, 3)
    offsets, items = to_csr(seqs)
    index = build_pattern_index(offsets, items, min_len=1, max_len=3, max_gap=1, min_support=2)
    chunked = build_pattern_index(offsets, items, min_len=1, max_len=3, max_gap=1, min_support=2, chunk_size=3)
    for a, b in zip((index.items, index.lengths, index.support, index.offsets, index.ids),
                    (chunked.items, chunked.lengths, chunked.support, chunked.offsets, chunked.ids)):
        np.testing.assert_array_equal(a, b)
    kept = {index.pattern(i) for i in range(index.n_patterns)}
    for s, seq in enumerate(seqs):
        ids = index.ids[index.offsets[s]:index.offsets[s + 1]]
        assert np.all(np.diff(ids) > 0)
        assert {index.pattern(i) for i in ids} == brute_force_patterns(seq, 1, 3, 1) & kept


def test_counted_mask_and_count() -> None:
    """Support counts only the counted sequences; uncounted ones still list kept patterns for count()."""
    seqs = [[1, 2], [1, 2], [1, 2, 3], [3, 4], [3, 4]]
    offsets, items = to_csr(seqs)
    counted = np.array([True, True, True, False, False])
    index = build_pattern_index(offsets, items, min_len=2, max_len=2, max_gap=0, min_support=2, counted=counted)
    assert {index.pattern(i): int(index.support[i]) for i in range(index.n_patterns)} == {(1, 2): 3}
    counts = index.count(np.array([3, 4]))
    assert counts.tolist() == [0]  # (3, 4) was pruned: only 0 counted sequences hold it
    assert index.count(np.array([0, 2])).tolist() == [2]


def test_large_item_values_and_sparse_key_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item values beyond the lookup-table range and key spaces counted by sorting give the same result."""
    rng = random.Random(7)
    seqs = random_db(rng, 20, 8, 5)
    expected = brute_force_counts(seqs, 1, 4, 2, 2)
    big = [[x * 10**12 + 3 for x in s] for s in seqs]
    got = count_patterns(big, 1, 4, 2, 2)
    assert got == {tuple(x * 10**12 + 3 for x in p): c for p, c in expected.items()}
    monkeypatch.setattr(patterns, "_DENSE_KEYS", 4)
    assert count_patterns(seqs, 1, 4, 2, 2) == expected


def test_unique_pairs_fallback() -> None:
    a = np.array([2**61, 5, 2**61, 5])
    b = np.array([3, 1, 3, 0])
    ua, ub = unique_pairs(a, b, 2**20)
    assert list(zip(ua.tolist(), ub.tolist())) == [(5, 0), (5, 1), (2**61, 3)]


def test_empty_inputs() -> None:
    assert count_patterns([], 1, 3, 1) == {}
    assert count_patterns([[], []], 1, 3, 1) == {}
    assert count_patterns([[1]], 2, 3, 1) == {}
    with pytest.raises(ValueError, match="min_len"):
        count_patterns([[1, 2]], 3, 2, 1)


@pytest.mark.parametrize("seed", range(8))
def test_unbounded_gap_equals_prefixspan(seed: int) -> None:
    """With max_gap >= the longest sequence, supports equal PrefixSpan's (subsequences, unbounded gaps)."""
    rng = random.Random(1000 + seed)
    db = random_db(rng, 10, 7, 4)
    min_len, max_len, minsup = 1 + seed % 2, 4, 2
    ps = PrefixSpan(db)
    ps.minlen, ps.maxlen = min_len, max_len
    oracle = {tuple(p): s for s, p in ps.frequent(minsup, closed=False)}
    assert count_patterns(db, min_len, max_len, max_gap=100, min_support=minsup) == oracle
