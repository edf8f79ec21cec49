"""Sentence and unit vectors from fastText, and each unit's typical sentence (the paper's section 3.2).

- A word vector comes from a fastText skipgram model trained on (a deterministic sample of) the corpus,
  or from an existing `.bin` model the job names. Subword n-grams stay on, so unseen words get vectors.
- Sentence vector = the plain mean of the word vectors of its tokens (the paper: "mean fastText word
  vector"). fastText's own get_sentence_vector divides every word vector by its norm first; we do not,
  so frequent well-trained words weigh as much as the model says. A sentence without word tokens gets
  the zero vector.
- Unit vector = mean of the sentence vectors of a unit's queue (per direction), for clustering and maps.
- Typical sentence = the queue sentence whose vector is nearest (Euclidean; cosine optional) to that
  mean; ties go to the smaller sentence_id.

Tokenisation (training and sentence vectors alike): lower-cased runs of letters/digits, inner
apostrophes kept, punctuation dropped: "Hello, World! It's 2021." -> ["hello", "world", "it's", "2021"].
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import sparse

from miner import atomic
from miner.config import VectorOptions
from miner.errors import InputError, first_line
from miner.run.catalog import read_manifest_json, read_run_table

if TYPE_CHECKING:
    import fasttext.FastText

log = logging.getLogger(__name__)

FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin (FASTTEXT_FILEFORMAT_MAGIC_INT32)
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens: "Hello, World! It's 2021." -> ["hello", "world", "it's", "2021"]."""
    return _TOKEN.findall(text.lower())


def sample_corpus_texts(corpus_dir: Path, max_sentences: int, seed: int = 0,
                        skip: frozenset[str] = frozenset()) -> list[str]:
    """Every corpus sentence's text, or a seeded uniform sample of `max_sentences` of them, in id order.

    Shards in `skip` (skipped as corrupt by the miner) are not read; the sample of the others is unchanged.
    """
    from miner.corpus.prepare import load_corpus

    manifest = load_corpus(corpus_dir)
    total = manifest.sentences
    keep = None
    if total > max_sentences:
        keep = np.sort(np.random.default_rng(seed).choice(total, max_sentences, replace=False))
    texts: list[str] = []
    offset = 0
    for shard in manifest.shards:
        if shard.file in skip:
            offset += shard.sentences
            continue
        try:
            column = pq.read_table(corpus_dir / shard.file, columns=["text"])["text"]
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{corpus_dir / shard.file}: corrupt or unreadable shard ({first_line(exc)}); restore "
                             "the corpus (the same inputs and options prepare the same shards)") from None
        if keep is None:
            texts.extend(column.to_pylist())
        else:
            lo, hi = np.searchsorted(keep, [offset, offset + shard.sentences])
            texts.extend(column.take(pa.array(keep[lo:hi] - offset)).to_pylist())
        offset += shard.sentences
    return texts


def train_fasttext(corpus_dir: Path, out_path: Path, options: VectorOptions,
                   skip: frozenset[str] = frozenset()) -> Path:
    """Train an unsupervised skipgram model on the corpus (sampled) and save it atomically to out_path.

    A sidecar `<out_path>.json` records the corpus fingerprint and the options, so the model can be reused.
    fastText with more than one thread is not bit-reproducible (Hogwild updates); use thread=1 for that.
    """
    import fasttext

    from miner.corpus.prepare import load_corpus

    started = time.monotonic()
    corpus_dir, out_path = Path(corpus_dir), Path(out_path)
    fingerprint = load_corpus(corpus_dir).fingerprint
    texts = sample_corpus_texts(corpus_dir, options.max_sentences, options.seed, skip)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".fasttext-") as tmp:
        train_file = Path(tmp) / "train.txt"
        n_tokens = 0
        with train_file.open("w", encoding="utf-8") as fh:
            for text in texts:
                tokens = tokenize(text)
                n_tokens += len(tokens)
                if tokens:
                    fh.write(" ".join(tokens) + "\n")
        try:
            model = fasttext.train_unsupervised(
                str(train_file), model="skipgram", dim=options.dim, epoch=options.epoch,
                minCount=options.min_count, minn=options.minn, maxn=options.maxn, bucket=options.bucket,
                ws=options.ws, lr=options.lr, thread=options.thread, verbose=0)
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"{corpus_dir}: fastText training failed ({str(exc).strip()}); "
                             "the corpus may be too small for min_count") from None
        tmp_model = Path(tmp) / "model.bin"
        model.save_model(str(tmp_model))
        os.replace(tmp_model, out_path)
    info = {"corpus_fingerprint": fingerprint, "options": _training_options(options), "sentences": len(texts),
            "skipped_shards": sorted(skip),
            "tokens": n_tokens, "seconds": round(time.monotonic() - started, 2)}
    atomic.write_json(Path(str(out_path) + ".json"), info)
    log.info("fastText: %d sentences, %d tokens, %.1f s -> %s", len(texts), n_tokens, info["seconds"], out_path)
    return out_path


def _training_options(options: VectorOptions) -> dict:
    return options.model_dump(mode="json", exclude={"model", "metric", "thread"})


def check_fasttext_file(path: Path) -> None:
    """Walk a fastText .bin's layout (header, args, dictionary, matrices) without loading it; InputError
    naming the path unless the file is a complete model. fastText itself may read a truncated file for
    minutes, allocate without bound, or accept missing matrix rows, so this runs first.

    Layout: int32 magic, int32 version; args (12 int32, 1 float64); dictionary (int32 size, nwords, nlabels;
    int64 ntokens, pruneidx_size; size x (word NUL, int64 count, int8 type); pruneidx_size x 2 int32);
    bool quant; input matrix (int64 rows, cols; floats); bool qout; output matrix (same).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such fastText model file")
    bad = InputError(f"{path}: not a fastText model (.bin file expected)")
    truncated = InputError(f"{path}: truncated or damaged fastText model")
    with path.open("rb") as fh:
        if path.stat().st_size < 100:
            raise bad
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic, version = struct.unpack_from("<ii", mm, 0)
            if magic != FASTTEXT_MAGIC or not 11 <= version <= 12:
                raise bad
            args = struct.unpack_from("<12id", mm, 8)
            dim = args[0]
            off = 8 + 56
            try:
                size, _nwords, _nlabels, _ntokens, prune = struct.unpack_from("<iiiqq", mm, off)
                off += 28
                if size < 0 or prune < -1 or dim <= 0:
                    raise truncated
                for _ in range(size):
                    end = mm.find(b"\0", off)
                    if end < 0:
                        raise truncated
                    off = end + 1 + 9
                off += 8 * max(prune, 0)
                quant = mm[off]
                if quant:  # quantized (.ftz): product-quantizer layout, leave it to fastText
                    return
                rows, cols = struct.unpack_from("<qq", mm, off + 1)
                off += 17 + 4 * rows * cols
                out_rows, out_cols = struct.unpack_from("<qq", mm, off + 1)
                off += 17 + 4 * out_rows * out_cols
            except (struct.error, IndexError):
                raise truncated from None
            if cols != dim or off != len(mm):
                raise truncated


def load_fasttext(path: Path) -> fasttext.FastText._FastText:
    """Load a fastText .bin model; one InputError naming the path if it is missing or not a model."""
    import fasttext

    check_fasttext_file(path)
    try:
        return fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise InputError(f"{path}: not a usable fastText model ({str(exc).strip()})") from None


def ensure_fasttext(corpus_dir: Path, model_path: Path, options: VectorOptions,
                    skip: frozenset[str] = frozenset()) -> Path:
    """options.model if set; else model_path, (re)trained unless its sidecar matches corpus and options."""
    if options.model is not None:
        return Path(options.model)
    from miner.corpus.prepare import load_corpus

    sidecar = Path(str(model_path) + ".json")
    if Path(model_path).exists() and sidecar.exists():
        try:
            info = json.loads(sidecar.read_text())
        except ValueError:
            info = {}
        if (info.get("corpus_fingerprint") == load_corpus(Path(corpus_dir)).fingerprint
                and info.get("options") == _training_options(options)
                and info.get("skipped_shards", []) == sorted(skip)):
            return Path(model_path)
    return train_fasttext(corpus_dir, model_path, options, skip)


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
    unit = top_sentences["unit_id"].to_numpy().astype(np.int64)
    is_bottom = pc.equal(top_sentences["direction"], "bottom").to_numpy(zero_copy_only=False).astype(np.int64)
    sid = top_sentences["sentence_id"].to_numpy().astype(np.int64)
    keys, group = np.unique(unit * 2 + is_bottom, return_inverse=True)
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
    from miner.signatures.annotate import skipped_shards

    run_dir = Path(run_dir)
    manifest = read_manifest_json(run_dir)
    if corpus_dir is None:
        corpus_dir = Path(manifest["corpus"]["path"])
    model_path = ensure_fasttext(corpus_dir, run_dir / "fasttext.bin", options, skipped_shards(manifest))
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
        path = Path(run_dir) / f"{name}.parquet"
        atomic.write_table(path, table)
        written.append(path)
    return written
