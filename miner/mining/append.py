"""Appending corpora to a finished run: the job's corpus list grows, only the new shards are mined.

A finished run keeps its last checkpoint (the lanes' queues, the moment sums, the loop's state). A job that lists
the run's corpora, unchanged and first, then more corpora (each prepared `--after` the one before) and is otherwise
the same job, resumes from that checkpoint with the run's block size: the blocks of the old corpora are exactly
the blocks already merged, so the result is the one mining the whole list from scratch with that block size gives.
The score sample is the smallest seeded hashes of the whole list, so its old rows are a subset of the old sample
(taken from its matrix) and its new rows are gathered while mining. The later stages' outputs, made from the shorter
corpus, are removed when the append finishes; `miner mine` refreshes step 2 where the run had it.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from miner.config import CorpusManifest, JobSpec
from miner.errors import InputError, OutputConflictError
from miner.mining import sample
from miner.mining.checkpoint import MiningState, load_checkpoint
from miner.mining.context import EXECUTION_FIELDS, job_fingerprint
from miner.mining.plan import BlockPlan, auto_block_size
from miner.run.folder import FILES, RunFiles, RunFolder

log = logging.getLogger(__name__)

MINING_KEYS = frozenset({"tables", "units", "distinct_sentences", "sample", "fingerprint", "status", "code_version",
                         "job", "model", "corpus", "blocks", "skipped_shards", "hardware", "workers", "stats",
                         "timings", "completed", "run_dir", "append", "appending"})
"""Keys of a run manifest that mining writes; any other key is a later stage's record."""

_NAMES = [f.name for f in dataclasses.fields(RunFiles)]
LATER_OUTPUTS = tuple(getattr(FILES, n) for n in _NAMES[_NAMES.index("lock") + 1:])
"""The files and folders of a run that the stages after mining write (RunFiles lists them after mining's)."""


def run_block_size(manifest: dict, job: JobSpec, corpus_sentences: int) -> int:
    """The block size a finished run was mined with: recorded since appends exist; for an older run worked out
    as it was then, from its corpus's size (`corpus_sentences`)."""
    size = (manifest.get("blocks") or {}).get("size")
    if size:
        return int(size)
    if job.block_size:
        return job.block_size
    total = corpus_sentences if job.max_sentences is None else min(corpus_sentences, job.max_sentences)
    return auto_block_size(total)


def _differing_fields(old_job: dict, job: JobSpec) -> list[str]:
    new = job.model_dump(mode="json", exclude=EXECUTION_FIELDS | {"corpus"})
    keys = set(new) | (set(old_job) - EXECUTION_FIELDS - {"corpus"})
    return sorted(k for k in keys if new.get(k) != old_job.get(k))


def _shard_paths(manifest: dict) -> list[tuple[str, str]]:
    """(absolute path, sha256) of the shards a run manifest lists."""
    corpus = manifest.get("corpus") or {}
    folder = Path(corpus.get("path") or ".")
    return [(str((folder / s["file"]).resolve()), s["sha256"]) for s in corpus.get("shards", [])]


def plan_append(run: RunFolder, existing: dict, job: JobSpec, corpus_dir: Path, corpus: CorpusManifest,
                weights: str) -> dict:
    """Check that `job` appends corpora to the finished run `existing` (its manifest); returns the append record.

    Every refusal is one error naming what differs; nothing in the run is changed.
    """
    where = run.path
    if existing.get("status") != "complete":
        raise OutputConflictError(f"{where}: holds another job that is not finished (status: "
                                  f"{existing.get('status')}); finish it by running its own job again before "
                                  "appending to it, or choose another output")
    old_job = existing.get("job") or {}
    if job_fingerprint(job, (existing.get("corpus") or {}).get("fingerprint", ""), weights) != existing["fingerprint"]:
        fields = _differing_fields(old_job, job)
        what = (f"other settings ({', '.join(fields)})" if fields
                else "other model weights" if (existing.get("model") or {}).get("weights_sha256") != weights
                else "other settings")
        raise OutputConflictError(f"{where}: holds a different job ('{old_job.get('name')}', {what}); an append "
                                  "may only extend the corpus list; choose another output or delete it")
    old = _shard_paths(existing)
    new = [(str((corpus_dir / s.file).resolve()), s.sha256) for s in corpus.shards]
    mined_on = (existing.get("corpus") or {}).get("paths") or [(existing.get("corpus") or {}).get("path")]
    if new[: len(old)] != old:
        raise InputError(f"corpus: {where} was mined on {', '.join(map(str, mined_on))}; to append, the job's corpus "
                         "list must start with that corpus (unchanged: same shards and SHA-256) and add corpora "
                         "prepared `--after` it")
    if len(new) == len(old):
        raise InputError(f"corpus: the job's corpora hold no shard that {where} has not mined; nothing to append")
    blocks = existing.get("blocks") or {}
    if blocks.get("stopped_early"):
        raise InputError(f"{where}: stopped early (its queues converged, early_stop) before the end of its corpus; "
                         "mining the longer corpus from scratch would stop at the same block, so there is nothing "
                         "to append (turn early_stop off in a new run to mine everything)")
    if job.max_sentences is not None and int(existing["stats"]["sentences"]) >= job.max_sentences:
        raise InputError(f"max_sentences: {where} already mined {job.max_sentences:,} sentences; nothing to append")
    return {"from_fingerprint": existing["fingerprint"], "from_blocks": int(blocks.get("merged", 0)),
            "from_sentences": int(existing["stats"]["sentences"]),
            "from_corpus": mined_on,
            "block_size": run_block_size(existing, job, sum(s.sentences for s in corpus.shards[: len(old)])),
            "later_stages": sorted(k for k in existing if k not in MINING_KEYS)}


def start_state(run: RunFolder, record: dict, plans: list[BlockPlan], sampled: dict[int, np.ndarray]) -> MiningState:
    """The loop state an append starts from: the finished run's last checkpoint; the score sample's rows of the
    old blocks are written back as block shards (from the finished sample) so the run finishes as any other."""
    state = load_checkpoint(run, record["from_fingerprint"])
    if state is None and (run.checkpoint / "state.json").exists():
        raise InputError(f"{run.checkpoint}: holds an unfinished append of another corpus list; finish that one "
                         "(run its job again) or mine this corpus list into a new output")
    if state is None:
        raise InputError(f"{run.checkpoint}: the finished run's last checkpoint is missing (deleted?), so its "
                         "queues cannot take more blocks; mine the longer corpus into a new output")
    merged = record["from_blocks"]
    if state.next_block != merged or any(p.index != i for i, p in enumerate(plans[:merged])):
        raise InputError(f"{run.checkpoint}: holds {state.next_block} merged blocks, the run's manifest says "
                         f"{merged}; mine the longer corpus into a new output")
    state.block_size = record["block_size"]
    old = [b for b in sorted(sampled) if b < merged]
    if old:
        table = pq.read_table(run.file(FILES.sample_sentences), columns=["sentence_id"])
        have = table["sentence_id"].to_numpy()
        scores = np.load(run.file(FILES.sample) / sample.SCORES_FILE, mmap_mode="r")
        for b in old:
            ids = sampled[b]
            rows = np.searchsorted(have, ids)
            if (rows >= len(have)).any() or not np.array_equal(have[np.minimum(rows, len(have) - 1)], ids):
                raise InputError(f"{run.file(FILES.sample_sentences)}: lacks sentences the longer corpus's score "
                                 "sample holds (was the run mined with another sample?); mine into a new output")
            sample.write_shard(run, b, ids, np.asarray(scores[rows]))
    return state


def remove_later_outputs(run: RunFolder) -> list[str]:
    """Remove what the stages after mining wrote (made from the shorter corpus); returns the names removed."""
    removed = []
    for name in LATER_OUTPUTS:
        for path in (run.path / name, run.path / f"{name}.json"):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(path.name)
    return removed
