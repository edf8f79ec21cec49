"""Step 2 driver: abstract every unit's sentences into a signature and store it all in the run's catalog.

annotate (spaCy PTB tags for queue sentences + a background sample, each distinct sentence once)
  -> signatures (words, word and POS patterns, POS ratios, metadata distribution, length)
  -> vectors (fastText sentence vectors, typical sentence, unit vectors)
  -> catalog.duckdb (views over every table of the run).

Per-sentence work runs once per distinct sentence; per-unit work is vectorised over unit slices. With the Ray
executor both are split across Ray tasks (tagging by sentence chunks, signatures by unit slices over one shared
copy of the per-sentence features); results are identical to the in-process path.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miner.config import AnnotateOptions, SignatureOptions, VectorOptions
from miner.mining.driver import RunFolder
from miner.run.catalog import build_catalog, catalog_path, check_run_tables, read_manifest_json, read_run_table
from miner.signatures.aggregate import sentence_features, unit_signatures
from miner.signatures.annotate import (
    Annotation,
    annotate_run,
    background_ids,
    load_tagger,
    read_corpus_rows,
    run_corpus,
    signature_inputs,
    tokens_table,
    write_annotation,
)
from miner.signatures.vectors import compute_vector_tables, write_vector_tables

log = logging.getLogger(__name__)

STEP2_TABLES = ("tokens", "background", "signatures", "unit_stats", "unit_metadata", "sentence_vectors", "unit_vectors")


def _tag_chunk(ids: np.ndarray, texts: list[str], model: str, batch_size: int) -> pa.Table:
    return tokens_table(np.array(ids, copy=True), texts, load_tagger(model), batch_size)


def _signature_slice(features: object, top: pa.Table, units: np.ndarray, options: SignatureOptions) -> dict:
    part = top.filter(pc.is_in(top["unit_id"], value_set=pa.array(units)))
    return unit_signatures(features, part, options)


def annotate_parallel(run_dir: Path, options: AnnotateOptions, ray_module: object, parts: int) -> Annotation:
    """annotate_run with the tagging split over `parts` Ray tasks (same tokens table, same order)."""
    manifest, corpus_dir, corpus = run_corpus(run_dir)
    bg_ids = background_ids(corpus, options.background_size, options.background_seed,
                            manifest.get("stats", {}).get("sentences"))
    background = read_corpus_rows(corpus_dir, corpus, bg_ids)
    queue = read_run_table(run_dir, "sentences", columns=["sentence_id", "text"])
    extra = background.filter(pc.invert(pc.is_in(background["sentence_id"], value_set=queue["sentence_id"])))
    todo = pa.concat_tables([queue, extra.select(["sentence_id", "text"])]).sort_by("sentence_id")
    started = time.monotonic()
    task = ray_module.remote(_tag_chunk)
    bounds = np.linspace(0, todo.num_rows, parts + 1).astype(int)
    refs = [task.remote(todo["sentence_id"].to_numpy()[lo:hi], todo["text"].to_pylist()[lo:hi], options.spacy_model,
                        options.batch_size) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    tokens = pa.concat_tables(ray_module.get(refs))
    seconds = time.monotonic() - started
    log.info("tagged %s sentences in %.1f s on %d Ray tasks", f"{todo.num_rows:,}", seconds, len(refs))
    return Annotation(tokens=tokens, background=background, tagged=todo.num_rows, seconds=seconds)


def run_abstract(run_dir: Path, annotate: AnnotateOptions | None = None, signatures: SignatureOptions | None = None,
                 vectors: VectorOptions | None = None, executor: str = "ray", address: str | None = None,
                 parts: int | None = None) -> dict:
    """Compute step 2 for a finished mining run and build its catalog; returns a summary (also in the manifest)."""
    annotate = annotate or AnnotateOptions()
    signatures = signatures or SignatureOptions()
    vectors = vectors or VectorOptions()
    run_dir = Path(run_dir).resolve()
    run_corpus(run_dir)  # clear error before any work if mining output is missing or incomplete
    check_run_tables(run_dir, rewritten=STEP2_TABLES)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    ray_module = None
    if executor == "ray":
        import ray

        from miner.cluster.connect import connect

        connect(address)
        ray_module = ray
        parts = parts or max(1, int(ray.cluster_resources().get("CPU", 1)))
    t = time.monotonic()
    annotation = (annotate_parallel(run_dir, annotate, ray_module, parts) if ray_module is not None and parts > 1
                  else annotate_run(run_dir, annotate))
    write_annotation(run_dir, annotation)
    timings["annotate"] = time.monotonic() - t

    t = time.monotonic()
    top, sentences, tokens, bg = signature_inputs(run_dir, annotation)
    features = sentence_features(top, sentences, tokens, bg, signatures)
    timings["sentence_features"] = time.monotonic() - t
    t = time.monotonic()
    units = np.unique(top["unit_id"].to_numpy())
    if ray_module is not None and parts > 1:
        feat_ref = ray_module.put(features)
        top_ref = ray_module.put(top)
        task = ray_module.remote(_signature_slice)
        refs = [task.remote(feat_ref, top_ref, chunk, signatures) for chunk in np.array_split(units, parts) if len(chunk)]
        results = ray_module.get(refs)
        tables = {k: pa.concat_tables([r[k] for r in results]) for k in results[0]}
    else:
        tables = unit_signatures(features, top, signatures)
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

    for name in ("signatures", "unit_stats", "unit_metadata"):
        RunFolder.write_table(run_dir / f"{name}.parquet", tables[name])
    timings["total"] = time.monotonic() - t0
    n_units = int(len(units))
    summary = {
        "status": "complete", "units": n_units, "sentences_tagged": annotation.tagged,
        "background_sentences": int(len(bg)), "fasttext_model": str(vt.model_path),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "seconds_per_unit_after_sentence_work": round(timings["unit_signatures"] / max(n_units, 1), 5),
        "options": {"annotate": annotate.model_dump(mode="json"), "signatures": signatures.model_dump(mode="json"),
                    "vectors": vectors.model_dump(mode="json")},
        "catalog": str(catalog_path(run_dir)), "executor": executor, "parts": parts or 1,
    }
    manifest_path = run_dir / "manifest.json"
    manifest = read_manifest_json(run_dir)
    manifest["step2"] = summary
    RunFolder.write_json(manifest_path, manifest)
    build_catalog(run_dir)
    log.info("step 2 done for %d units in %.1f s (%s)", n_units, timings["total"],
             ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if k != "total"))
    return summary


def step2_done(run_dir: Path) -> bool:
    """Whether a run already has every step-2 table and a recorded step-2 summary."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return False
    done = read_manifest_json(run_dir).get("step2", {}).get("status") == "complete"
    return done and all((run_dir / f"{t}.parquet").exists() for t in STEP2_TABLES)


