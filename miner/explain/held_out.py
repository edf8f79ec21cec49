"""The held-out split of a run: mined sentences that no signature sees, and the score-sample rows that score them.

A sentence is held out when its seeded sample hash ``hash_uniform(seed, "sample", id)`` is below the fraction;
the score sample (:mod:`miner.mining.sample`) is the sentences with the smallest such hashes, so it holds the
held-out sentences before any other, and its held-out rows are min(sample size, held-out sentences). The
split depends only on the sentence id, the sample seed and the fraction: the same for any sharding, worker
count or resume, and recorded in the manifest's "scores" record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miner.errors import InputError
from miner.hashing import hash_uniform
from miner.run.catalog import read_run_table
from miner.run.folder import FILES, read_manifest_json


def held_out_mask(ids: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """bool per id: whether the sentence is in the held-out split.

    >>> ids = np.arange(10_000)
    >>> round(float(held_out_mask(ids, 0, 0.1).mean()), 2)
    0.1
    >>> bool((held_out_mask(ids, 0, 0.1) <= held_out_mask(ids, 0, 0.2)).all())  # a larger split contains it
    True
    """
    return hash_uniform(seed, "sample", np.asarray(ids, np.int64)) < fraction


@dataclass(frozen=True)
class HeldOut:
    """The held-out split of one run and the score-sample rows inside it."""

    fraction: float
    seed: int
    """The score sample's seed (the split uses the sample's hash)."""
    rows: np.ndarray
    """Rows of RUN/sample/scores.npy that are held out, ascending."""
    sentence_ids: np.ndarray
    """Their sentence ids (ascending, as the rows)."""
    sample_rows: int
    """Rows of the whole score sample."""

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """bool per id: held out."""
        return held_out_mask(ids, self.seed, self.fraction)

    def record(self) -> dict:
        """The manifest's description of the split."""
        return {"held_out": self.fraction, "seed": self.seed, "hash": "hash_uniform(seed, 'sample', sentence_id)",
                "held_out_sample_rows": int(len(self.rows)), "sample_rows": self.sample_rows}


def load_held_out(run_dir: Path, fraction: float) -> HeldOut:
    """The held-out split of a mined run; one InputError, before any work, if the run has no score sample (mined
    before it existed, or with sample.sentences 0) or none of its sample is held out."""
    run_dir = Path(run_dir)
    sample = read_manifest_json(run_dir).get("sample") or {}
    if not sample.get("file") or not sample.get("rows") or not (run_dir / FILES.sample_sentences).exists():
        raise InputError(f"{run_dir}: scores need the run's score sample, and this run has none (mined before "
                         "the sample existed, or with sample.sentences: 0); mine the job again with "
                         "sample.sentences > 0 into a new output folder (this run is left as it is), or drop the "
                         "job's scores section")
    table = read_run_table(run_dir, "sample_sentences", columns=["row", "sentence_id"])
    rows = table["row"].to_numpy().astype(np.int64)
    ids = table["sentence_id"].to_numpy().astype(np.int64)
    seed = int(sample.get("seed", 0))
    keep = held_out_mask(ids, seed, fraction)
    if not keep.any():
        raise InputError(f"scores.held_out: none of the {len(ids):,} score-sample sentences of {run_dir} falls in "
                         f"a held-out share of {fraction}; raise it (at most 0.5)")
    order = np.argsort(rows[keep], kind="stable")
    return HeldOut(fraction=fraction, seed=seed, rows=rows[keep][order], sentence_ids=ids[keep][order],
                   sample_rows=int(len(ids)))
