"""Reading a run's score sample (recorded by mining: RUN/sample/scores.npy and the sample_sentences table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from miner.errors import InputError, first_line
from miner.run.catalog import read_run_manifest, read_run_table
from miner.run.folder import FILES


@dataclass(frozen=True)
class RunSample:
    """A run's score sample and what identifies its units."""

    run_dir: Path
    manifest: dict[str, Any]
    sentence_ids: np.ndarray
    """int64 [S] ascending: the sentence of each row."""
    scores: np.ndarray
    """float16 [S, U] (memory-mapped): every unit's score on each sampled sentence."""
    units: pa.Table
    """The run's units table (unit_id, site, layer, idx), in unit_id order."""

    @property
    def name(self) -> str:
        """The run's job name (its folder's name when the job has none)."""
        return str(self.manifest.get("job", {}).get("name") or self.run_dir.name)

    @property
    def corpus(self) -> str | None:
        """The corpus fingerprint the run mined."""
        return (self.manifest.get("corpus") or {}).get("fingerprint")


def read_sample(run_dir: Path) -> RunSample:
    """The score sample of a complete run; one InputError naming the run (or file) when it has none."""
    run_dir = Path(run_dir)
    manifest = read_run_manifest(run_dir)
    record = manifest.get("sample") or {}
    if not record.get("file") or not record.get("rows"):
        raise InputError(f"{run_dir}: has no score sample (mined with sample.sentences 0, or before mining recorded "
                         "one); mine the job again with a `sample:` section")
    path = run_dir / record["file"]
    try:
        scores = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: missing or damaged score sample ({first_line(exc)}); mine the job again") from None
    ids = read_run_table(run_dir, "sample_sentences")["sentence_id"].to_numpy()
    units = read_run_table(run_dir, "units").sort_by("unit_id")
    if scores.ndim != 2 or scores.shape != (len(ids), units.num_rows):
        raise InputError(f"{path}: shape {scores.shape} does not match {FILES.sample_sentences} ({len(ids)} rows) "
                         f"and {FILES.units} ({units.num_rows} units); mine the job again")
    return RunSample(run_dir, manifest, ids.astype(np.int64), scores, units)
