"""Driver side of extraction: a concept's sentences cut into blocks, sent to the mining workers, each block's
activations written to its own shard (so memory stays flat and a killed run resumes), and splits read back."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miner import atomic
from miner.mining.executors import Executor
from miner.mining.extract import ExtractRequest, ExtractResult
from miner.probing.concepts import ConceptExamples

log = logging.getLogger(__name__)
STORE_DTYPE = np.float16
"""Activations are stored as float16 (half the bytes; probes standardise their inputs, so its 3 significant
digits are plenty) and read back as float32."""
DONE = "extraction.json"


@dataclass(frozen=True)
class ExtractionSummary:
    """What one concept's extraction read, computed and stored."""

    concept: str
    rows: int
    sentences: int
    units: int
    blocks: int
    reused_blocks: int
    """Blocks found complete on disk (a resumed extraction)."""
    seconds: float
    forward_seconds: float
    bytes: int
    """Bytes of the activation shards on disk."""


def concept_fingerprint(examples: ConceptExamples, run_fingerprint: str, subword: str, units: int,
                        sentences_per_block: int) -> str:
    """Identity of a concept's extraction: same sentences, words, model, units and blocks give the same shards."""
    h = hashlib.sha256()
    h.update(json.dumps([run_fingerprint, subword, units, sentences_per_block, examples.level, examples.texts,
                         examples.pieces]).encode())
    return h.hexdigest()


def block_bounds(examples: ConceptExamples, sentences_per_block: int) -> list[tuple[int, int, int, int]]:
    """(first sentence, end sentence, first row, end row) of each block: consecutive sentences, fixed cuts.

    Example: 5 sentences with rows [2, 1, 0, 3, 1] and 2 per block -> [(0, 2, 0, 3), (2, 4, 3, 6), (4, 5, 6, 7)]
    """
    n = len(examples.texts)
    per = np.bincount(examples.row_sentence, minlength=n) if n else np.zeros(0, np.int64)
    row_start = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
    return [(a, min(a + sentences_per_block, n), int(row_start[a]), int(row_start[min(a + sentences_per_block, n)]))
            for a in range(0, n, sentences_per_block)]


def shard_path(folder: Path, block: int) -> Path:
    return folder / f"acts-{block:05d}.npy"


def extract_concept(examples: ConceptExamples, folder: Path, pool: Executor, fingerprint: str, units: int,
                    subword: str, sentences_per_block: int) -> ExtractionSummary:
    """Every example's activations into folder/acts-NNNNN.npy (one per block, rows in example order).

    Blocks already on disk from an interrupted extraction of the same fingerprint are kept; a folder holding
    another fingerprint is cleared first. The folder's extraction.json is written last and marks it complete.
    """
    t0 = time.monotonic()
    done = folder / DONE
    if folder.exists():
        stamp = _read_stamp(folder)
        if stamp.get("fingerprint") != fingerprint:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temporaries(folder)
    bounds = block_bounds(examples, sentences_per_block)
    todo = [b for b, (_, _, r0, r1) in enumerate(bounds) if not _shard_ok(shard_path(folder, b), r1 - r0, units)]
    if not done.exists():
        atomic.write_json(folder / "extraction.partial.json", {"fingerprint": fingerprint})
    reused = len(bounds) - len(todo)
    forward = 0.0
    queue = list(todo)
    finished = 0
    while queue or pool.in_flight():
        while queue and pool.in_flight() < pool.capacity:
            b = queue.pop(0)
            s0, s1, _, _ = bounds[b]
            pool.submit_extract(ExtractRequest(b, examples.texts[s0:s1], examples.pieces[s0:s1],
                                               examples.level == "sentence", subword))
        result: ExtractResult = pool.next_result()
        _, _, r0, r1 = bounds[result.block]
        if result.values.shape != (r1 - r0, units):
            raise RuntimeError(f"block {result.block}: got {result.values.shape}, expected {(r1 - r0, units)}")
        _save_shard(shard_path(folder, result.block), result.values)
        forward += float(result.stats.get("forward_seconds", 0.0))
        finished += 1
        if finished % 10 == 0 or not queue:
            log.info("%s: extracted %d/%d blocks", examples.name, reused + finished, len(bounds))
    size = sum(shard_path(folder, b).stat().st_size for b in range(len(bounds)))
    summary = ExtractionSummary(examples.name, examples.rows, len(examples.texts), units, len(bounds), reused,
                                round(time.monotonic() - t0, 3), round(forward, 3), size)
    atomic.write_json(done, {"fingerprint": fingerprint, **summary.__dict__})
    (folder / "extraction.partial.json").unlink(missing_ok=True)
    return summary


def _save_shard(path: Path, values: np.ndarray) -> None:
    """One block's activations, written atomically as float16 .npy."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, values.astype(STORE_DTYPE), allow_pickle=False)
    atomic.write_with(path, write)


def _read_stamp(folder: Path) -> dict:
    for name in (DONE, "extraction.partial.json"):
        try:
            data = json.loads((folder / name).read_text())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            continue
    return {}


def _shard_ok(path: Path, rows: int, units: int) -> bool:
    """A complete shard of the expected shape (a damaged or partial one is computed again)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return arr.shape == (rows, units) and arr.dtype == STORE_DTYPE


def load_rows(folder: Path, examples: ConceptExamples, mask: np.ndarray, sentences_per_block: int,
              columns: np.ndarray | None = None) -> np.ndarray:
    """float32 [mask.sum(), units or len(columns)]: the activations of the examples where mask is true, in order."""
    parts = []
    for b, (_, _, r0, r1) in enumerate(block_bounds(examples, sentences_per_block)):
        pick = np.flatnonzero(mask[r0:r1])
        if len(pick) == 0:
            continue
        arr = np.load(shard_path(folder, b), mmap_mode="r", allow_pickle=False)
        part = arr[pick] if columns is None else arr[pick][:, columns]
        parts.append(np.asarray(part, dtype=np.float32))
    width = len(columns) if columns is not None else None
    if not parts:
        return np.zeros((0, width or 0), np.float32)
    return np.concatenate(parts)
