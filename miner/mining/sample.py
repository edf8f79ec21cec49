"""The score sample mining records: which planned sentences it holds, per-block shards, and the final matrix.

The sample is the `sentences` planned sentence ids with the smallest seeded hash (`hash_uniform(seed, "sample",
ids)`, ties by smaller id), so it depends only on the corpus, max_sentences and the options. The driver sends each
block's sampled ids with the block, writes the scores a worker returns as RUN/sample/block-NNNNNN.npz before the
checkpoint that covers the block, and at the end joins the shards of the merged blocks into RUN/sample/scores.npy
(float16 [rows, units], rows in sentence_id order) and the table `sample_sentences` (row -> sentence_id).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from miner import atomic
from miner.config import SampleOptions
from miner.hashing import hash_uniform
from miner.mining.plan import BlockPlan
from miner.run.folder import FILES, RunFolder

SCORES_FILE = "scores.npy"
"""The sample's score matrix inside RUN/sample/."""
SAMPLE_DTYPE = np.float16


def sample_ids(ids: np.ndarray, options: SampleOptions) -> np.ndarray:
    """The sampled ids among `ids` (sorted ascending): the `options.sentences` smallest seeded hashes.

    >>> ids = np.arange(100, 110)
    >>> picked = sample_ids(ids, SampleOptions(sentences=3, seed=0))
    >>> len(picked), bool(np.isin(picked, ids).all()), bool((np.diff(picked) > 0).all())
    (3, True, True)
    >>> bool((sample_ids(ids[::-1], SampleOptions(sentences=3, seed=0)) == picked).all())  # order does not matter
    True
    >>> sample_ids(ids, SampleOptions(sentences=0)).tolist(), len(sample_ids(ids, SampleOptions(sentences=50)))
    ([], 10)
    """
    ids = np.asarray(ids, np.int64)
    k = min(options.sentences, len(ids))
    if k == 0:
        return np.zeros(0, np.int64)
    h = hash_uniform(options.seed, "sample", ids)
    kth = np.partition(h, k - 1)[k - 1]
    near = np.flatnonzero(h <= kth)  # the k smallest and any ties with the k-th
    chosen = near[np.lexsort((ids[near], h[near]))[:k]]
    return np.sort(ids[chosen])


def plan_sample(plans: list[BlockPlan], options: SampleOptions) -> dict[int, np.ndarray]:
    """Per block index: the sorted ids of its sampled sentences (blocks without any are left out).

    A block's sentence ids are consecutive from its first_id (a shard's ids are consecutive).
    """
    if options.sentences == 0 or not plans:
        return {}
    ids = np.concatenate([np.arange(p.first_id, p.first_id + p.rows, dtype=np.int64) for p in plans])
    picked = sample_ids(ids, options)
    out = {}
    for p in plans:
        lo, hi = np.searchsorted(picked, [p.first_id, p.first_id + p.rows])
        if hi > lo:
            out[p.index] = picked[lo:hi]
    return out


def folder(run: RunFolder) -> Path:
    """RUN/sample/."""
    return run.file(FILES.sample)


def shard_path(run: RunFolder, block: int) -> Path:
    return folder(run) / f"block-{block:06d}.npz"


def write_shard(run: RunFolder, block: int, ids: np.ndarray, scores: np.ndarray) -> None:
    """Write one block's sample rows atomically (replacing a shard an interrupted session left)."""
    if scores.shape[0] != len(ids):
        raise ValueError(f"block {block}: {scores.shape[0]} sample rows returned for {len(ids)} sampled sentences")
    folder(run).mkdir(exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.asarray(ids, np.int64), scores=np.asarray(scores).astype(SAMPLE_DTYPE))

    atomic.write_with(shard_path(run, block), write)


def finish_sample(run: RunFolder, blocks: list[int], n_units: int, options: SampleOptions,
                  texts: Callable[[np.ndarray], pa.Array] | None = None) -> dict:
    """Join the shards of `blocks` (the merged blocks that have sampled sentences) into scores.npy and the
    `sample_sentences` table; returns the manifest's "sample" record. The shards stay until the manifest says
    complete (`remove_shards`), so a session killed in between finishes the same way when it resumes."""
    record = {"sentences": options.sentences, "seed": options.seed, "rows": 0, "units": n_units,
              "dtype": np.dtype(SAMPLE_DTYPE).name, "file": None}
    if options.sentences == 0:
        return record
    parts = []
    for b in blocks:
        with np.load(shard_path(run, b)) as z:
            parts.append((z["ids"], z["scores"]))
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    row_of = np.empty(len(ids), np.int64)  # row of the i-th concatenated shard row in sentence_id order
    row_of[order] = np.arange(len(ids))
    starts = np.cumsum([0] + [len(p[0]) for p in parts])
    out = folder(run)
    out.mkdir(exist_ok=True)

    def write(tmp: Path) -> None:
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=SAMPLE_DTYPE, shape=(len(ids), n_units))
        for (_, scores), lo in zip(parts, starts):
            matrix[row_of[lo : lo + len(scores)]] = scores
        matrix.flush()
        del matrix

    atomic.write_with(out / SCORES_FILE, write)
    table = pa.table({"row": pa.array(np.arange(len(ids), dtype=np.int32)),
                      "sentence_id": pa.array(ids[order].astype(np.int64))})
    if texts is not None:  # the sentences' texts, for the exemplars (unit_exemplars) shown in reports
        table = table.append_column("text", texts(ids[order].astype(np.int64)))
    run.write_table(run.file(FILES.sample_sentences), table)
    record.update({"rows": int(len(ids)), "file": f"{FILES.sample}/{SCORES_FILE}"})
    return record


def remove_shards(run: RunFolder) -> None:
    """Remove the per-block shards once scores.npy and the complete manifest are written."""
    for shard in folder(run).glob("block-*.npz"):
        shard.unlink()


def clear_shards(run: RunFolder) -> None:
    """Remove the sample folder (a fresh run starts without shards of an earlier, abandoned attempt)."""
    shutil.rmtree(folder(run), ignore_errors=True)
