"""Seeded hashes that are the same in every process: uniform numbers from keys (splits, samples, random unit
sets) and the key of a sentence text. Pure NumPy and hashlib; every stage that draws "at random" uses these, so
results never depend on worker count, process or order."""

from __future__ import annotations

import hashlib

import numpy as np


def unit_hash(seed: int, *parts: object) -> float:
    """A stable uniform number in [0, 1) from the seed and the parts (blake2b, the same in every process).

    >>> unit_hash(0, 17) == unit_hash(0, 17), 0 <= unit_hash(1, 17) < 1
    (True, True)
    """
    text = "\x1f".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2.0**64


_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic): a fixed bijection that scrambles every bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, tag: str, *keys: np.ndarray) -> np.ndarray:
    """float64 in [0, 1) per row of the integer key arrays: a seeded hash, the same in every process and
    independent of the other rows (splitmix64, vectorised). `tag` separates the uses of one seed.

    >>> a = hash_uniform(0, "split", np.array([5, 6, 7]))
    >>> bool((a == hash_uniform(0, "split", np.array([5, 6, 7]))).all()), bool((a != hash_uniform(1, "split", np.array([5, 6, 7]))).all())
    (True, True)
    >>> float(hash_uniform(0, "x", np.array([5]))[0]) == float(hash_uniform(0, "x", np.array([9, 5]))[1])
    True
    """
    with np.errstate(over="ignore"):
        h = np.full(len(keys[0]) if keys else 0, np.uint64(int(unit_hash(seed, tag) * 2**63)), np.uint64)
        for k in keys:
            h = _mix(h ^ (np.asarray(k).astype(np.int64).view(np.uint64) + _GOLDEN))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def text_keys(texts: list[str]) -> np.ndarray:
    """int64 key of each text (blake2b of its UTF-8 bytes): the key of sentence splits by text, so a sentence
    keeps its split in every stage that splits by text (probing, the fine-tuning example, `miner ablate`).

    >>> bool(text_keys(["a b", "c"])[0] == text_keys(["x", "a b"])[1])
    True
    """
    return np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big", signed=True)
                     for t in texts], np.int64)
