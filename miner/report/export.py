"""`miner report RUN --all`: every unit's page plus the overview, with shared assets, so the overview's index
works from disk (offline sharing of a whole run).

The units are split into `parts` consecutive chunks, written in parallel as Ray tasks (or in this process);
each page is what `miner report --unit` writes. The existing pages are checked first: without `force`, one
that exists stops the export before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miner.cluster.tasks import map_chunks
from miner.outputs import check_output_folder
from miner.report.build import FORMATS, write_model_report, write_unit_report
from miner.report.render import unit_stem
from miner.run.catalog import read_run_manifest, read_run_table


@dataclass(frozen=True)
class ExportSummary:
    pages: int
    """Unit pages written (each in every format asked for)."""
    seconds: float
    pages_per_second: float
    out_dir: Path


def _write_chunk(units: np.ndarray, run_dir: Path, out_dir: Path, formats: tuple[str, ...], n_sentences: int,
                 with_activations: bool, device: str) -> int:
    """Write the pages of some units (a Ray task, or inline); returns how many."""
    for unit in units.tolist():
        write_unit_report(run_dir, int(unit), out_dir, formats, self_contained=False, n_sentences=n_sentences,
                          with_activations=with_activations, device=device, link_overview=True, force=True)
    return len(units)


def write_all_pages(run_dir: Path, out_dir: Path, formats: tuple[str, ...] | list[str] = FORMATS,
                    n_sentences: int = 20, with_activations: bool = True, device: str = "cpu", force: bool = False,
                    executor: str = "ray", parts: int = 2) -> ExportSummary:
    """Every unit page and the overview into out_dir (shared assets); see the module docstring."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    read_run_manifest(run_dir)
    units = np.sort(read_run_table(run_dir, "units", columns=["unit_id"])["unit_id"].to_numpy())
    formats = tuple(formats)
    names = [f"{unit_stem(int(u))}.{fmt}" for u in units for fmt in formats] + [f"model.{fmt}" for fmt in formats]
    check_output_folder(out_dir, names, force)  # every page, before any is written
    started = time.perf_counter()
    chunks = [c for c in np.array_split(units, max(parts, 1) * 4) if len(c)]
    done = map_chunks(_write_chunk, chunks, (run_dir, out_dir, formats, n_sentences, with_activations, device),
                      executor=executor if parts > 1 else "inline")
    write_model_report(run_dir, out_dir, formats, self_contained=False, force=True)
    seconds = time.perf_counter() - started
    pages = int(sum(done))
    return ExportSummary(pages=pages, seconds=round(seconds, 2), pages_per_second=round(pages / max(seconds, 1e-9), 2),
                         out_dir=out_dir)
