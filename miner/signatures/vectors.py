"""Sentence and unit vectors from fastText word vectors, and each unit's typical sentence (the paper's section 3.2).

- Sentence vector = the plain mean of the word vectors of its tokens (the paper: "mean fastText word
  vector"; tokens as :func:`miner.signatures.fasttext.tokenize` splits them). fastText's own
  get_sentence_vector divides every word vector by its norm first; we do not, so frequent well-trained
  words weigh as much as the model says. A sentence without word tokens gets the zero vector.
- Unit vector = mean of the sentence vectors of a unit's queue (per direction), for clustering and maps.
- Typical sentence = the queue sentence whose vector is nearest (Euclidean; cosine optional) to that
  mean; ties go to the smaller sentence_id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from scipy import sparse

from miner import atomic
from miner.config import VectorOptions
from miner.run.catalog import read_manifest_json, read_run_table
from miner.run.folder import FILES, skipped_shards, table_file
from miner.signatures.fasttext import ensure_fasttext, load_fasttext, tokenize
from miner.signatures.features import queue_key

if TYPE_CHECKING:
    import fasttext.FastText

def sentence_vectors(model: fasttext.FastText._FastText, texts: list[str]) -> np.ndarray:
    """Mean fastText word vector of each text, float32 [n, dim]; zero for a text without word tokens.

    Each distinct word is looked up once; the mean is a sparse (texts x words) averaging matrix product.
    Example: texts ["a b", "b b"] with vec(a)=[1, 0], vec(b)=[0, 1] -> [[0.5, 0.5], [0, 1]].
    """
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, text in enumerate(texts):
        for token in tokenize(text):
            rows.append(i)
            cols.append(vocab.setdefault(token, len(vocab)))
    dim = model.get_dimension()
    words = np.zeros((len(vocab), dim), np.float32)
    for word, j in vocab.items():
        words[j] = model.get_word_vector(word)
    rows_a = np.asarray(rows, np.int64)
    counts = np.bincount(rows_a, minlength=len(texts)).astype(np.float64)
    weights = 1.0 / counts[rows_a] if len(rows_a) else np.zeros(0)
    mean = sparse.csr_matrix((weights, (rows_a, np.asarray(cols, np.int64))), shape=(len(texts), len(vocab)))
    return np.asarray(mean @ words.astype(np.float64), dtype=np.float32).reshape(len(texts), dim)


@dataclass(frozen=True)
class QueueGroups:
    """Queue entries grouped by (unit_id, direction): group index and vector row of every entry."""

    unit_id: np.ndarray
    """[G] int32: unit of each group."""
    direction: np.ndarray
    """[G] object: 'top' or 'bottom' of each group."""
    group: np.ndarray
    """[E] int64: group index of each queue entry."""
    row: np.ndarray
    """[E] int64: row of each entry's sentence in the vector matrix."""
    sentence_id: np.ndarray
    """[E] int64: sentence_id of each entry."""


def queue_groups(top_sentences: pa.Table, vector_ids: np.ndarray) -> QueueGroups:
    """Group a top_sentences table by (unit_id, direction) and find each sentence's vector row.

    Example: entries (unit 3, top, s=7), (unit 3, top, s=9), (unit 1, top, s=9) with vector_ids [7, 9]
    -> groups [(1, top), (3, top)], group [1, 1, 0], row [0, 1, 1].
    """
    sid = top_sentences["sentence_id"].to_numpy().astype(np.int64)
    keys, group = np.unique(queue_key(top_sentences), return_inverse=True)
    vector_ids = np.asarray(vector_ids, np.int64)
    order = np.argsort(vector_ids, kind="stable")
    pos = np.searchsorted(vector_ids[order], sid)
    found = pos < len(vector_ids)
    found[found] = vector_ids[order[pos[found]]] == sid[found]
    if not found.all():
        raise ValueError(f"sentence {sid[~found][0]} of top_sentences has no vector")
    row = order[pos] if len(sid) else np.zeros(0, np.int64)
    names = np.where(keys % 2 == 1, "bottom", "top").astype(object)
    return QueueGroups((keys // 2).astype(np.int32), names, group.astype(np.int64), row.astype(np.int64), sid)


def group_means(groups: QueueGroups, vectors: np.ndarray) -> np.ndarray:
    """Mean vector of every group, float64 [G, dim] (a sparse group x sentence indicator product)."""
    n_groups = len(groups.unit_id)
    indicator = sparse.csr_matrix((np.ones(len(groups.group)), (groups.group, groups.row)),
                                  shape=(n_groups, len(vectors)))
    counts = np.bincount(groups.group, minlength=n_groups).astype(np.float64)
    return np.asarray(indicator @ vectors.astype(np.float64)) / np.maximum(counts, 1)[:, None]


def nearest_to_mean(groups: QueueGroups, vectors: np.ndarray,
                    metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """Per group, the sentence_id nearest to the group's mean vector and its distance; ties -> smaller id.

    Euclidean distance, or cosine distance 1 - cos (a zero vector is at distance 1). Means come from one
    sparse product over all groups; then, per group, a float32 matrix-vector product ranks its sentences
    and the few within rounding reach of the best are re-measured exactly in float64, so the answer
    equals a brute-force float64 loop (exact ties included) at a fraction of its cost.
    Example: a group with vectors s=4:[0, 0], s=2:[2, 2], s=9:[1, 1] has mean [1, 1] -> (9, 0.0); a group
    with s=5:[0, 0], s=3:[2, 2] is a tie at distance sqrt(2) -> (3, 1.414...).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric: unknown {metric!r} (euclidean or cosine)")
    means = group_means(groups, vectors)
    v32 = np.ascontiguousarray(vectors, np.float32)
    sq = np.einsum("ij,ij->i", v32, v32, dtype=np.float64)
    order = np.argsort(groups.group, kind="stable")
    bounds = np.searchsorted(groups.group[order], np.arange(len(means) + 1))
    chosen = np.empty(len(means), np.int64)
    dist = np.empty(len(means), np.float64)
    for g in range(len(means)):
        entries = order[bounds[g]:bounds[g + 1]]
        rows = groups.row[entries]
        c = means[g]
        dots = v32[rows] @ c.astype(np.float32)
        if metric == "euclidean":  # |v - c|^2 up to the constant |c|^2
            approx = sq[rows] - 2.0 * dots
            slack = 1e-4 * (float(sq[rows].max()) + float(c @ c)) + 1e-12
        else:
            norms = np.sqrt(sq[rows]) * np.sqrt(c @ c)
            approx = -np.divide(dots, norms, out=np.zeros(len(rows)), where=norms > 0)
            slack = 1e-4
        near = entries[approx <= approx.min() + slack]
        exact = _exact_distance(vectors[groups.row[near]].astype(np.float64), c, metric)
        best = np.lexsort((groups.sentence_id[near], exact))[0]
        chosen[g], dist[g] = groups.sentence_id[near[best]], exact[best]
    return chosen, dist


def _exact_distance(v: np.ndarray, c: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances of rows v [k, dim] to c [dim]: Euclidean, or 1 - cos clipped at 0."""
    if metric == "euclidean":
        diff = v - c
        return np.sqrt(np.einsum("ij,ij->i", diff, diff))
    norms = np.sqrt(np.einsum("ij,ij->i", v, v)) * np.sqrt(c @ c)
    cos = np.divide(v @ c, norms, out=np.zeros(len(v)), where=norms > 0)
    return np.maximum(1.0 - cos, 0.0)


def vectors_table(ids: np.ndarray, vectors: np.ndarray, id_name: str = "sentence_id") -> pa.Table:
    """(id int64, vector fixed_size_list<float32>[dim]) rows, e.g. the sentence_vectors table."""
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
    return pa.table({id_name: pa.array(np.asarray(ids, np.int64)),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def vectors_from_table(table: pa.Table, id_name: str = "sentence_id") -> tuple[np.ndarray, np.ndarray]:
    """Inverse of vectors_table: (ids int64 [n], vectors float32 [n, dim])."""
    column = table["vector"].combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table[id_name].to_numpy().astype(np.int64), values.reshape(len(table), dim)


def typical_sentences(top_sentences: pa.Table | QueueGroups, vector_ids: np.ndarray | None,
                      vectors: np.ndarray, metric: str = "euclidean") -> pa.Table:
    """(unit_id, direction, typical_sentence_id, distance) for every queue of a top_sentences table
    (or of QueueGroups already built from one; vector_ids is then unused)."""
    groups = _as_groups(top_sentences, vector_ids)
    chosen, dist = nearest_to_mean(groups, vectors, metric)
    return pa.table({"unit_id": pa.array(groups.unit_id, pa.int32()),
                     "direction": pa.array(groups.direction, pa.string()),
                     "typical_sentence_id": pa.array(chosen, pa.int64()), "distance": pa.array(dist, pa.float32())})


def unit_vectors(top_sentences: pa.Table | QueueGroups, vector_ids: np.ndarray | None,
                 vectors: np.ndarray) -> pa.Table:
    """(unit_id, direction, vector fixed_size_list<float32>[dim]): mean sentence vector of every queue."""
    groups = _as_groups(top_sentences, vector_ids)
    means = group_means(groups, vectors).astype(np.float32)
    flat = pa.array(means.reshape(-1))
    return pa.table({"unit_id": pa.array(groups.unit_id, pa.int32()),
                     "direction": pa.array(groups.direction, pa.string()),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, means.shape[1])})


def _as_groups(top: pa.Table | QueueGroups, vector_ids: np.ndarray | None) -> QueueGroups:
    if isinstance(top, QueueGroups):
        return top
    if vector_ids is None:
        raise ValueError("vector_ids: needed with a top_sentences table")
    return queue_groups(top, vector_ids)


@dataclass(frozen=True)
class VectorTables:
    """Everything the vector stage produces for a run."""

    sentence_vectors: pa.Table
    """sentence_id, vector: one row per sentence in any queue."""
    unit_vectors: pa.Table
    """unit_id, direction, vector: mean sentence vector per queue."""
    typical: pa.Table
    """unit_id, direction, typical_sentence_id, distance (goes into unit_stats)."""
    model_path: Path
    """The fastText model used."""


def compute_vector_tables(run_dir: Path, options: VectorOptions, corpus_dir: Path | None = None) -> VectorTables:
    """Vectors of a mining run's sentences and queues; trains RUN/fasttext.bin unless options.model is set.

    The corpus folder defaults to the one recorded in RUN/manifest.json.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest_json(run_dir)
    corpus: Path | list[Path] = corpus_dir if corpus_dir is not None else [
        Path(p) for p in manifest["corpus"].get("paths") or [manifest["corpus"]["path"]]]
    model_path = ensure_fasttext(corpus, run_dir / FILES.fasttext, options, skipped_shards(manifest))
    model = load_fasttext(model_path)
    sentences = read_run_table(run_dir, "sentences", columns=["sentence_id", "text"])
    top = read_run_table(run_dir, "top_sentences", columns=["unit_id", "direction", "sentence_id"])
    ids = sentences["sentence_id"].to_numpy().astype(np.int64)
    vecs = sentence_vectors(model, sentences["text"].to_pylist())
    groups = queue_groups(top, ids)
    return VectorTables(vectors_table(ids, vecs), unit_vectors(groups, None, vecs),
                        typical_sentences(groups, None, vecs, options.metric), model_path)


def write_vector_tables(run_dir: Path, tables: VectorTables) -> list[Path]:
    """Write sentence_vectors.parquet and unit_vectors.parquet into the run folder (atomic renames)."""
    written = []
    for name, table in (("sentence_vectors", tables.sentence_vectors), ("unit_vectors", tables.unit_vectors)):
        path = Path(run_dir) / table_file(name)
        atomic.write_table(path, table)
        written.append(path)
    return written
