"""Step 2 driver: abstract every unit's sentences into a signature and store it all in the run's catalog.

annotate (spaCy PTB tags for queue sentences + a background sample, each distinct sentence once)
  -> features (per sentence: word and POS patterns, tag counts, metadata codes; once per distinct sentence)
  -> signatures (per queue: words, word and POS patterns, POS ratios, metadata distribution, length)
  -> vectors (fastText sentence vectors, typical sentence, unit vectors)
  -> scores (with a scores section: each signature scored on the held-out split, :mod:`miner.signatures.scoring`)
  -> catalog.duckdb (views over every table of the run).

With scores, the held-out split (:mod:`miner.explain.held_out`) is left out of every queue and of the
background before signatures are computed, and its score-sample sentences are tagged and featurised too.

With the Ray executor, tagging (by chunks of sentences) and signatures (by slices of units, over one shared
copy of the per-sentence features) fan out with :func:`miner.cluster.tasks.map_chunks`; the tables are
identical for any number of parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miner.cluster.tasks import cluster_cpus, map_chunks
from miner.config import AnnotateOptions, ScoreOptions, SignatureOptions, VectorOptions
from miner.explain.held_out import HeldOut, load_held_out
from miner.mining.sample import SCORES_FILE
from miner.run.catalog import build_catalog, catalog_path, check_run_tables
from miner.run.folder import (
    FILES,
    STEP2_TABLES,
    RunFolder,
    read_manifest_json,
    run_corpus,
    table_file,
    table_name,
    update_manifest,
)
from miner.signatures.aggregate import unit_signatures
from miner.signatures.annotate import annotate_run, signature_inputs, write_annotation
from miner.signatures.features import SentenceFeatures, sentence_features
from miner.signatures.scoring import score_units
from miner.signatures.vectors import compute_vector_tables, write_vector_tables

log = logging.getLogger(__name__)

MANIFEST_KEY = "step2"
SCORES_KEY = "scores"
"""The manifest's record of the explanation scores (None when step 2 ran without them)."""
SCORE_TABLES = (table_name(FILES.unit_scores), table_name(FILES.unit_formulas))


@dataclass(frozen=True)
class Step2Summary:
    """What step 2 did for a run; :meth:`to_dict` is its RUN/manifest.json["step2"] record."""

    units: int
    """Units with a signature."""
    sentences_tagged: int
    """Distinct sentences tagged (queue and background)."""
    background_sentences: int
    """Size of the background sample."""
    fasttext_model: Path
    """The fastText model of the sentence vectors."""
    seconds: Mapping[str, float]
    """Wall time per phase (annotate, sentence_features, unit_signatures, vectors) and in total, rounded to 0.01."""
    seconds_per_unit_after_sentence_work: float
    """unit_signatures' time per unit (rounded to 1e-5 s)."""
    options: Mapping[str, Any]
    """The annotate, signatures and vectors options used (JSON form)."""
    catalog: Path
    """RUN/catalog.duckdb."""
    executor: str
    """inline or ray."""
    parts: int
    """Chunks the work was split into (1 inline)."""
    status: str = "complete"

    def to_dict(self) -> dict[str, Any]:
        """The manifest record: the keys and their order as written since step 2 existed."""
        return {
            "status": self.status, "units": self.units, "sentences_tagged": self.sentences_tagged,
            "background_sentences": self.background_sentences, "fasttext_model": str(self.fasttext_model),
            "seconds": dict(self.seconds),
            "seconds_per_unit_after_sentence_work": self.seconds_per_unit_after_sentence_work,
            "options": dict(self.options), "catalog": str(self.catalog), "executor": self.executor,
            "parts": self.parts,
        }


def _signature_slice(units: np.ndarray, features: SentenceFeatures, top: pa.Table,
                     options: SignatureOptions) -> dict[str, pa.Table]:
    """unit_signatures of the queues of some units (a Ray task, or inline)."""
    part = top.filter(pc.is_in(top["unit_id"], value_set=pa.array(units)))
    return unit_signatures(features, part, options)


def signatures_by_slices(features: SentenceFeatures, top: pa.Table, options: SignatureOptions, parts: int = 1,
                         executor: str = "inline", address: str | None = None) -> dict[str, pa.Table]:
    """unit_signatures over `parts` slices of the units (ascending), concatenated: the same tables as one call."""
    units = np.unique(top["unit_id"].to_numpy())
    slices = [chunk for chunk in np.array_split(units, max(parts, 1)) if len(chunk)] or [units]
    results = map_chunks(_signature_slice, slices, (features, top, options), executor=executor, address=address)
    return {name: pa.concat_tables([r[name] for r in results]) for name in results[0]}


def run_abstract(run_dir: Path, annotate: AnnotateOptions | None = None, signatures: SignatureOptions | None = None,
                 vectors: VectorOptions | None = None, executor: str = "ray", address: str | None = None,
                 parts: int | None = None, scores: ScoreOptions | None = None) -> Step2Summary:
    """Compute step 2 for a finished mining run and build its catalog; returns its summary (also in the manifest).

    With `scores`, the held-out split is left out of the signatures and every signature is scored on it (tables
    unit_scores and unit_formulas, the manifest's "scores" record); without, those tables are removed (they
    would describe other signatures).

    executor "ray" splits tagging and signatures into `parts` Ray tasks each (default: the cluster's CPUs;
    `address` as for :func:`miner.cluster.connect.connect`); "inline" does everything in this process.
    """
    annotate = annotate or AnnotateOptions()
    signatures = signatures or SignatureOptions()
    vectors = vectors or VectorOptions()
    run_dir = Path(run_dir).resolve()
    run_corpus(run_dir)  # clear error before any work if mining output is missing or incomplete
    check_run_tables(run_dir, rewritten=STEP2_TABLES + SCORE_TABLES)
    held_out: HeldOut | None = load_held_out(run_dir, scores.held_out) if scores is not None else None
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    if executor == "ray":
        parts = parts or cluster_cpus(address)
    fan_out, chunks = ("ray", parts or 1) if executor == "ray" else ("inline", 1)
    t = time.monotonic()
    annotation = annotate_run(run_dir, annotate, executor=fan_out, parts=chunks, address=address, held_out=held_out)
    write_annotation(run_dir, annotation)
    timings["annotate"] = time.monotonic() - t

    t = time.monotonic()
    top, sentences, tokens, bg = signature_inputs(run_dir, annotation, held_out)
    features = sentence_features(top, sentences, tokens, bg, signatures,
                                 extra_ids=held_out.sentence_ids if held_out is not None else None)
    timings["sentence_features"] = time.monotonic() - t
    t = time.monotonic()
    tables = signatures_by_slices(features, top, signatures, chunks, fan_out, address)
    timings["unit_signatures"] = time.monotonic() - t

    t = time.monotonic()
    vt = compute_vector_tables(run_dir, vectors)
    typical = vt.typical.select(["unit_id", "direction", "typical_sentence_id", "distance"])
    stats = tables["unit_stats"]
    if "typical_sentence_id" in stats.column_names:
        stats = stats.drop(["typical_sentence_id"])
    stats = stats.join(typical.rename_columns(["unit_id", "direction", "typical_sentence_id", "typical_distance"]),
                       keys=["unit_id", "direction"], join_type="left outer").sort_by([("unit_id", "ascending"),
                                                                                       ("direction", "descending")])
    tables["unit_stats"] = stats
    write_vector_tables(run_dir, vt)
    timings["vectors"] = time.monotonic() - t

    score_record = None
    if scores is not None and held_out is not None:
        t = time.monotonic()
        true = np.asarray(np.load(run_dir / FILES.sample / SCORES_FILE, mmap_mode="r")[held_out.rows], np.float32)
        score_tables, score_record = score_units(features, tables, held_out, true, scores, signatures, fan_out,
                                                 chunks, address)
        timings["scores"] = time.monotonic() - t
    for name in ("signatures", "unit_stats", "unit_metadata"):
        RunFolder.write_table(run_dir / f"{name}.parquet", tables[name])
    for name in SCORE_TABLES:  # written when scored; removed otherwise (they would describe other signatures)
        path = run_dir / table_file(name)
        if score_record is not None and name in score_tables:
            RunFolder.write_table(path, score_tables[name])
        else:
            path.unlink(missing_ok=True)
    if score_record is not None or read_manifest_json(run_dir).get(SCORES_KEY) is not None:
        update_manifest(run_dir, SCORES_KEY, score_record)
    timings["total"] = time.monotonic() - t0
    n_units = int(len(np.unique(top["unit_id"].to_numpy())))
    summary = Step2Summary(
        units=n_units, sentences_tagged=annotation.tagged, background_sentences=int(len(bg)),
        fasttext_model=vt.model_path, seconds={k: round(v, 2) for k, v in timings.items()},
        seconds_per_unit_after_sentence_work=round(timings["unit_signatures"] / max(n_units, 1), 5),
        options={"annotate": annotate.model_dump(mode="json"), "signatures": signatures.model_dump(mode="json"),
                 "vectors": vectors.model_dump(mode="json"),
                 "scores": scores.model_dump(mode="json") if scores is not None else None},
        catalog=catalog_path(run_dir), executor=executor, parts=parts or 1,
    )
    update_manifest(run_dir, MANIFEST_KEY, summary.to_dict())
    build_catalog(run_dir)
    log.info("step 2 done for %d units in %.1f s (%s)", n_units, timings["total"],
             ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if k != "total"))
    return summary


def step2_done(run_dir: Path) -> bool:
    """Whether a run already has every step-2 table and a recorded step-2 summary."""
    if not (run_dir / FILES.manifest).exists():
        return False
    done = read_manifest_json(run_dir).get(MANIFEST_KEY, {}).get("status") == "complete"
    return done and all((run_dir / table_file(t)).exists() for t in STEP2_TABLES)
