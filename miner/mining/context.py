"""What one mining session works from (`MiningContext`), the run's fingerprint, and the convergence rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from miner.config import CorpusManifest, JobSpec
from miner.mining.plan import BlockPlan
from miner.model.layout import LayerSlice, UnitLayout
from miner.run.folder import RunFolder

# Fields that do not change a run's result (excluded from its fingerprint).
# skip_corrupt_shards is one too: a run stopped by a corrupt shard resumes with the option turned on.
EXECUTION_FIELDS = {"workers", "threads_per_worker", "gpus_per_worker", "checkpoint_seconds", "output", "name",
                     "annotate", "signatures", "vectors", "scores", "analysis", "probe", "ablate",
                     "skip_corrupt_shards"}
# Per-block counters summed into the run's counters (BlockStats fields).
BLOCK_COUNTERS = ("sentences", "real_tokens", "attended_tokens", "computed_tokens", "truncated", "batches",
                   "kernel_batches", "sync_free_batches")


@dataclass(frozen=True)
class MiningContext:
    """Everything one mining session works from, resolved once by run_mining."""

    job: JobSpec
    run: RunFolder
    fingerprint: str
    """job_fingerprint: identifies the run's result (checkpoints of another job are never resumed)."""
    corpus_dir: Path
    corpus: CorpusManifest
    layout: UnitLayout
    model_folder: Path
    model_config: Any
    """The transformers config of the model."""
    config_dict: dict
    """The model's config.json."""
    weights: str
    """SHA-256 of the weight files."""
    address: str | None = None
    """Ray cluster address (None: the local or current cluster)."""
    executor: str = "ray"
    stop_after_blocks: int | None = None
    allow_other_hardware: bool = False
    started: float = 0.0
    """time.monotonic() when the session started."""
    attention: str = "sdpa"
    """The model's attention implementation (`attention_implementation`), worked out when the session starts:
    it imports the model's module, which needs a current directory that a Ray job's may not keep to the end."""
    append: dict | None = None
    """The append record (miner.mining.append.plan_append) when this session grows a finished run."""


def job_fingerprint(job: JobSpec, corpus_fp: str, weights: str) -> str:
    """Identity of a run's result: result-shaping job fields, corpus and model weights."""
    fields = job.model_dump(mode="json", exclude=EXECUTION_FIELDS)
    if fields.get("batch_tokens") is None:  # runs from before the field existed keep their fingerprint
        fields.pop("batch_tokens", None)
    for name in ("exemplars", "exemplar_bands"):  # picked from the sample when a run finishes: not its result
        fields.get("sample", {}).pop(name, None)
    fields["corpus"] = corpus_fp
    fields["model"] = weights
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def convergence_rows(block: BlockPlan, seen: int, gains: dict[str, torch.Tensor], layers: list[LayerSlice],
                     n: int, lane: int = 0, lanes: int = 1) -> list[dict]:
    """Per direction: entries the block changed in its lane's queues, overall (site 'all', layer -1) and per
    (site, layer). With one lane (one worker) those are the run's queues; with W lanes, block k's lane k mod W
    holds the queues of that lane's blocks up to k (about 1/W of the sentences seen), so rates at equal
    sentences_seen are higher than with one worker and an early stop comes later, never earlier."""
    rows = []
    for d, gain in gains.items():
        total = int(gain.sum())
        rows.append({"block": block.index, "first_sentence_id": block.first_id, "sentences": block.rows,
                     "sentences_seen": seen, "direction": d, "site": "all", "layer": -1, "updates": total,
                     "entries": int(gain.numel()) * n, "update_rate": total / (gain.numel() * n),
                     "lane": lane, "lanes": lanes})
        for site, layer, lo, hi in layers:
            upd = int(gain[lo:hi].sum())
            rows.append({"block": block.index, "first_sentence_id": block.first_id, "sentences": block.rows,
                         "sentences_seen": seen, "direction": d, "site": site, "layer": layer, "updates": upd,
                         "entries": (hi - lo) * n, "update_rate": upd / ((hi - lo) * n), "lane": lane, "lanes": lanes})
    return rows


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
