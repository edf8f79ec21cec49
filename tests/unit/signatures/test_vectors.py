"""Typical sentences and unit vectors against brute-force loops; sentence vectors with a stub model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from miner.config import VectorOptions
from miner.signatures.fasttext import tokenize
from miner.signatures.vectors import (
    sentence_vectors,
    typical_sentences,
    unit_vectors,
    vectors_from_table,
    vectors_table,
)


def _queues(rng: np.random.Generator, n_units: int, n_sentences: int, per_queue: int) -> pa.Table:
    """A top_sentences-like table: every unit has a top and a bottom queue of distinct sentences."""
    rows = {"unit_id": [], "direction": [], "sentence_id": []}
    for unit in rng.permutation(n_units):
        for direction in ("top", "bottom"):
            k = int(rng.integers(1, per_queue + 1))
            for sid in rng.choice(n_sentences, k, replace=False):
                rows["unit_id"].append(int(unit))
                rows["direction"].append(direction)
                rows["sentence_id"].append(int(sid) * 10 + 3)  # ids are not row numbers
    return pa.table({"unit_id": pa.array(rows["unit_id"], pa.int32()), "direction": rows["direction"],
                     "sentence_id": pa.array(rows["sentence_id"], pa.int64())})


def _brute_force(top: pa.Table, ids: np.ndarray, vectors: np.ndarray, metric: str) -> dict:
    """{(unit, direction): (sentence_id, mean)} by a plain loop over every queue."""
    by_id = {int(s): vectors[i].astype(np.float64) for i, s in enumerate(ids)}
    queues: dict = {}
    for unit, direction, sid in zip(*top.to_pydict().values()):
        queues.setdefault((unit, direction), []).append(sid)
    out = {}
    for key, sids in queues.items():
        mean = np.mean([by_id[s] for s in sids], axis=0)
        best = None
        for s in sorted(sids):
            v = by_id[s]
            if metric == "euclidean":
                d = float(np.linalg.norm(v - mean))
            else:
                denom = np.linalg.norm(v) * np.linalg.norm(mean)
                d = 1.0 - (float(v @ mean / denom) if denom > 0 else 0.0)
            if best is None or d < best[1]:
                best = (s, d)
        out[key] = (best[0], mean)
    return out


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_typical_sentence_equals_brute_force(metric: str) -> None:
    rng = np.random.default_rng(1)
    n_sentences = 400
    top = _queues(rng, n_units=60, n_sentences=n_sentences, per_queue=25)
    ids = np.arange(n_sentences, dtype=np.int64)[::-1] * 10 + 3  # vector rows in another order than ids
    vectors = rng.normal(size=(n_sentences, 16)).astype(np.float32)
    expected = _brute_force(top, ids, vectors, metric)
    got = typical_sentences(top, ids, vectors, metric)
    assert got.num_rows == len(expected)
    for unit, direction, sid, dist in zip(*got.to_pydict().values()):
        assert sid == expected[(unit, direction)][0], (unit, direction)
        assert dist >= 0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_many_exact_ties_equal_brute_force(metric: str) -> None:
    # Few distinct small-integer vectors: duplicates everywhere, so most queues hold exact ties.
    rng = np.random.default_rng(5)
    n_sentences = 300
    top = _queues(rng, n_units=80, n_sentences=n_sentences, per_queue=12)
    ids = np.arange(n_sentences, dtype=np.int64) * 10 + 3
    vectors = rng.integers(-1, 2, size=(n_sentences, 3)).astype(np.float32)
    expected = _brute_force(top, ids, vectors, metric)
    got = typical_sentences(top, ids, vectors, metric)
    for unit, direction, sid, _ in zip(*got.to_pydict().values()):
        assert sid == expected[(unit, direction)][0], (unit, direction)


def test_ties_go_to_the_smaller_sentence_id() -> None:
    # unit 0: two sentences equidistant from the mean [1, 1]; unit 1: duplicates of one vector.
    top = pa.table({"unit_id": pa.array([0, 0, 1, 1, 1], pa.int32()), "direction": ["top"] * 5,
                    "sentence_id": pa.array([50, 30, 70, 20, 60], pa.int64())})
    ids = np.array([20, 30, 50, 60, 70], np.int64)
    vectors = np.array([[1, 1], [2, 2], [0, 0], [5, 5], [5, 5]], np.float32)
    got = typical_sentences(top, ids, vectors).to_pydict()
    assert got["unit_id"] == [0, 1]
    # unit 0: 30 -> [2, 2] and 50 -> [0, 0], both sqrt(2) from [1, 1]; unit 1: 60 and 70 tie (20 is farther).
    assert got["typical_sentence_id"] == [30, 60]
    assert got["distance"][0] == pytest.approx(np.sqrt(2))


def test_docstring_example() -> None:
    top = pa.table({"unit_id": pa.array([7, 7, 7], pa.int32()), "direction": ["bottom"] * 3,
                    "sentence_id": pa.array([4, 2, 9], pa.int64())})
    got = typical_sentences(top, np.array([4, 2, 9]), np.array([[0, 0], [2, 2], [1, 1]], np.float32))
    assert got.to_pylist() == [{"unit_id": 7, "direction": "bottom", "typical_sentence_id": 9, "distance": 0.0}]


def test_unit_vectors_are_queue_means() -> None:
    rng = np.random.default_rng(2)
    top = _queues(rng, n_units=20, n_sentences=100, per_queue=10)
    ids = np.arange(100, dtype=np.int64) * 10 + 3
    vectors = rng.normal(size=(100, 8)).astype(np.float32)
    expected = _brute_force(top, ids, vectors, "euclidean")
    table = unit_vectors(top, ids, vectors)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 8)
    for row in table.to_pylist():
        mean = expected[(row["unit_id"], row["direction"])][1]
        np.testing.assert_allclose(row["vector"], mean, rtol=1e-5, atol=1e-6)


def test_missing_vector_is_an_error() -> None:
    top = pa.table({"unit_id": pa.array([0], pa.int32()), "direction": ["top"], "sentence_id": pa.array([5], pa.int64())})
    with pytest.raises(ValueError, match="sentence 5"):
        typical_sentences(top, np.array([4, 6]), np.zeros((2, 3), np.float32))


class _StubModel:
    """A fastText stand-in: fixed vectors for a few words, [9, 9] for anything else."""

    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0]}

    def get_dimension(self) -> int:
        return 2

    def get_word_vector(self, word: str) -> np.ndarray:
        return np.array(self.vectors.get(word, [9.0, 9.0]), np.float32)


def test_sentence_vector_is_the_mean_word_vector() -> None:
    got = sentence_vectors(_StubModel(), ["a b", "B, b!", "...", "a zz"])
    assert got.dtype == np.float32 and got.shape == (4, 2)
    np.testing.assert_allclose(got, [[0.5, 0.5], [0, 1], [0, 0], [5, 4.5]])


def test_tokenize() -> None:
    assert tokenize("Hello, World! It's 2021.") == ["hello", "world", "it's", "2021"]
    assert tokenize("lol im so happy :) haha") == ["lol", "im", "so", "happy", "haha"]


def test_vectors_table_round_trip() -> None:
    ids = np.array([3, 1, 2], np.int64)
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = vectors_table(ids, vecs)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 4)
    back_ids, back = vectors_from_table(table)
    np.testing.assert_array_equal(back_ids, ids)
    np.testing.assert_array_equal(back, vecs)


def test_options_keep_subwords_on() -> None:
    with pytest.raises(ValueError):
        VectorOptions(minn=0, maxn=0)
    with pytest.raises(ValueError):
        VectorOptions(minn=5, maxn=3)
