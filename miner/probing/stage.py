"""`miner probe`: the probing stage of a run, from the job's probe section to the probe tables in its catalog."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from miner.config import JobSpec, ProbingOptions, validate_model
from miner.errors import ConfigError, InputError
from miner.mining.executors import Executor, InlineExecutor, RayExecutor, WorkerConfig
from miner.model.layout import model_max_length, unit_layout
from miner.probing.concepts import ConceptExamples, build_examples
from miner.probing.examples import SPLITS
from miner.probing.extraction import concept_fingerprint, extract_concept
from miner.probing.train import ProbeTables, probe_concept, probe_options
from miner.run.catalog import build_catalog, check_run_tables
from miner.run.folder import FILES, PROBE_TABLES, RunFolder, repair_hint, run_corpus, table_file

log = logging.getLogger(__name__)
MANIFEST_KEY = "probe"


@dataclass
class ProbingSummary:
    """What `miner probe` did: per concept, its examples, extraction and headline accuracies."""

    fingerprint: str
    concepts: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    status: str = "complete"

    def to_dict(self) -> dict:
        return asdict(self)


def probing_fingerprint(options: ProbingOptions, manifest: dict, max_length: int, execution: dict) -> str:
    """Identity of a probing result: the probe section, the run it probes (its mining fingerprint and step 2's
    record, which changes when the tags are computed again), the contents of every concept file, and the
    execution settings that can change the activations' last bits (device, dtype, batch size, threads)."""
    files: dict[str, str | None] = {}
    for c in options.concepts:
        if c.path is not None:
            try:
                files[c.name] = hashlib.sha256(Path(c.path).read_bytes()).hexdigest()
            except OSError:
                files[c.name] = None  # the concept's reader names the file
    data = json.dumps([options.model_dump(mode="json"), manifest.get("fingerprint"), manifest.get("step2"), files,
                       max_length, execution], sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def probing_done(run_dir: Path, fingerprint: str) -> bool:
    """Whether the run already holds this probing result (summary recorded and every table present)."""
    from miner.run.folder import read_manifest_json

    recorded = read_manifest_json(run_dir).get(MANIFEST_KEY) or {}
    return (recorded.get("fingerprint") == fingerprint and recorded.get("status") == "complete"
            and all((run_dir / table_file(t)).exists() for t in PROBE_TABLES))


def _worker_job(manifest: dict, job: JobSpec, run_dir: Path) -> JobSpec:
    """The mining job the run recorded (its units), run with this job's execution settings."""
    recorded = dict(manifest.get("job") or {})
    recorded.pop("probe", None)
    try:
        mined = validate_model(JobSpec, {**recorded, "corpus": recorded.get("corpus") or ".", "probe": None}, "job")
    except ConfigError as exc:
        raise InputError(f"{run_dir / FILES.manifest}: damaged, the recorded {exc}; {repair_hint(run_dir / FILES.manifest)}"
                         ) from None
    return mined.model_copy(update={k: getattr(job, k) for k in (
        "workers", "threads_per_worker", "gpus_per_worker", "device", "dtype", "batch_size")})


def run_probing(run_dir: Path, job: JobSpec, executor: str = "ray", address: str | None = None,
                redo: bool = False) -> ProbingSummary:
    """Probe every concept of `job.probe` on the units of the mined run in `run_dir` (job paths resolved).

    Examples are built and checked for every concept before anything is written; activations are extracted on
    the mining workers (a Ray actor per worker, or inline), one shard per block under RUN/probing/<concept>/
    (an interrupted extraction resumes); then probes, rankings and evaluations are trained here and the probe
    tables written, recorded in the manifest and added to the catalog.
    """
    if job.probe is None:
        raise ConfigError("probe: the job has no probe section (see jobs/demo.yaml)")
    options = job.probe
    run_dir = Path(run_dir).resolve()
    manifest, _, _ = run_corpus(run_dir)
    model_folder = Path((manifest.get("model") or {}).get("path") or job.model)
    from transformers import AutoConfig, AutoTokenizer

    worker_job = _worker_job(manifest, job, run_dir)
    config = AutoConfig.from_pretrained(model_folder, trust_remote_code=worker_job.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=worker_job.trust_remote_code)
    layout = unit_layout(config, list(worker_job.sites), worker_job.layers)
    max_length = min(worker_job.max_length, model_max_length(config))
    threads = worker_job.threads_per_worker or max(1, (os.cpu_count() or 1) // worker_job.workers)
    execution = {"device": worker_job.device, "dtype": worker_job.dtype, "batch_size": worker_job.batch_size,
                 "threads": threads}
    fingerprint = probing_fingerprint(options, manifest, max_length, execution)
    if not redo and probing_done(run_dir, fingerprint):
        log.info("%s: probing already complete; nothing to do", run_dir)
        recorded = dict(manifest.get(MANIFEST_KEY) or {})
        return ProbingSummary(**{k: recorded[k] for k in ("fingerprint", "concepts", "seconds", "tables", "status")})
    check_run_tables(run_dir, rewritten=PROBE_TABLES)  # a damaged table is named before any work
    mined = int((manifest.get("stats") or {}).get("sentences") or 0) + int(
        (manifest.get("stats") or {}).get("skipped_sentences") or 0)
    run = RunFolder(run_dir)
    run.lock(wait_seconds=0)
    try:
        extraction_key = json.dumps([manifest.get("fingerprint"), execution], sort_keys=True)
        return _probe(run, options, worker_job, model_folder, tokenizer, layout, max_length, fingerprint,
                      extraction_key, executor, address, threads, mined or worker_job.max_sentences)
    finally:
        run.release()


def _probe(run: RunFolder, options: ProbingOptions, worker_job: JobSpec, model_folder: Path, tokenizer: object,
           layout: object, max_length: int, fingerprint: str, run_fingerprint: str, executor: str,
           address: str | None, threads: int, mined: int | None) -> ProbingSummary:
    from miner.model.layout import UnitLayout

    assert isinstance(layout, UnitLayout)
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    examples: list[ConceptExamples] = []
    t = time.monotonic()
    for spec in options.concepts:  # every concept checked before anything is written
        ex = build_examples(spec, options, run.path, tokenizer, max_length, mined)
        log.info("%s: %d examples of %d classes in %d sentences (%s)", ex.name, ex.rows, len(ex.classes),
                 len(ex.texts), ", ".join(f"{SPLITS[s]} {int((ex.splits == s).sum())}" for s in range(3)))
        examples.append(ex)
    timings["examples"] = time.monotonic() - t
    units = layout.n_units
    cfg = WorkerConfig(str(model_folder), worker_job, threads)
    t = time.monotonic()
    folder = run.file(FILES.probing)
    pool: Executor = InlineExecutor(cfg) if executor == "inline" else RayExecutor(cfg, worker_job.workers, address)
    extraction = {}
    try:
        for ex in examples:
            fp = concept_fingerprint(ex, run_fingerprint, options.subword, units, options.block_sentences)
            extraction[ex.name] = extract_concept(ex, folder / ex.name, pool, fp, units, options.subword,
                                                  options.block_sentences)
    finally:
        pool.close()
    timings["extraction"] = time.monotonic() - t
    from miner.probing.probe import probe_device

    popts = probe_options(options, probe_device(worker_job.device), None)
    tables = ProbeTables()
    summary = ProbingSummary(fingerprint=fingerprint)
    t = time.monotonic()
    for ex in examples:
        result = probe_concept(ex, folder / ex.name, layout.slices(), options, popts, options.block_sentences, tables)
        summary.concepts[ex.name] = {
            "level": ex.level, "classes": len(ex.classes), "examples": ex.rows, "candidates": ex.candidates,
            "sentences": len(ex.texts), "dropped_classes": ex.dropped_classes, "truncated_words": ex.truncated_words,
            "extraction": asdict(extraction[ex.name]), **result}
    timings["probes"] = time.monotonic() - t
    # while the tables are replaced the manifest says so: a kill in between never leaves old and new tables
    # under a record saying "complete"
    run.update_manifest(MANIFEST_KEY, {"status": "writing", "fingerprint": fingerprint})
    _write_tables(run, tables, examples)
    summary.tables = list(PROBE_TABLES)
    timings["total"] = time.monotonic() - t0
    summary.seconds = {k: round(v, 2) for k, v in timings.items()}
    run.update_manifest(MANIFEST_KEY, summary.to_dict())
    build_catalog(run.path)
    return summary


def _write_tables(run: RunFolder, tables: ProbeTables, examples: list[ConceptExamples]) -> None:
    """The five probe tables, each written atomically (a failure leaves the earlier ones as they were)."""
    ex_cols: dict[str, list] = {"concept": [], "row": [], "sentence_id": [], "file_sentence": [], "word_index": [],
                                "word": [], "label": [], "split": []}
    for ex in examples:
        n = ex.rows
        keys = ex.sentence_keys[ex.row_sentence]
        from_file = ex.kind == "file"
        ex_cols["concept"] += [ex.name] * n
        ex_cols["row"] += list(range(n))
        ex_cols["sentence_id"] += [None] * n if from_file else keys.tolist()
        ex_cols["file_sentence"] += keys.tolist() if from_file else [None] * n
        ex_cols["word_index"] += [None if w < 0 else int(w) for w in ex.row_word]
        ex_cols["word"] += [w if ex.level == "token" else None for w in ex.row_text]
        ex_cols["label"] += [ex.classes[i] for i in ex.labels]
        ex_cols["split"] += [SPLITS[s] for s in ex.splits]
    out = {
        FILES.probes: pa.Table.from_pylist(tables.probes, schema=_PROBES_SCHEMA),
        FILES.probe_accuracy: pa.Table.from_pylist(tables.probe_accuracy, schema=_ACCURACY_SCHEMA),
        FILES.neuron_rankings: pa.table({
            "probe_id": pa.array(tables.neuron_rankings["probe_id"], pa.string()),
            "method": pa.array(tables.neuron_rankings["method"], pa.string()),
            "class": pa.array(tables.neuron_rankings["class"], pa.string()),
            "unit_id": pa.array(tables.neuron_rankings["unit_id"], pa.int32()),
            "rank": pa.array(tables.neuron_rankings["rank"], pa.int32()),
            "score": pa.array(np.asarray(tables.neuron_rankings["score"], np.float64))}),
        FILES.probe_subsets: pa.Table.from_pylist(tables.probe_subsets, schema=_SUBSETS_SCHEMA),
        FILES.probe_examples: pa.table({
            "concept": pa.array(ex_cols["concept"], pa.string()), "row": pa.array(ex_cols["row"], pa.int64()),
            "sentence_id": pa.array(ex_cols["sentence_id"], pa.int64()),
            "file_sentence": pa.array(ex_cols["file_sentence"], pa.int64()),
            "word_index": pa.array(ex_cols["word_index"], pa.int32()), "word": pa.array(ex_cols["word"], pa.string()),
            "label": pa.array(ex_cols["label"], pa.string()), "split": pa.array(ex_cols["split"], pa.string())}),
    }
    for name, table in out.items():
        run.write_table(run.file(name), table)


_PROBES_SCHEMA = pa.schema([
    ("probe_id", pa.string()), ("concept", pa.string()), ("level", pa.string()), ("scope", pa.string()),
    ("site", pa.string()), ("layer", pa.int16()), ("units", pa.int32()), ("classes", pa.int32()),
    ("class_names", pa.list_(pa.string())), ("train_rows", pa.int64()), ("dev_rows", pa.int64()),
    ("test_rows", pa.int64()), ("l1", pa.float64()), ("l2", pa.float64()), ("dev_accuracy", pa.float64()),
    ("test_accuracy", pa.float64()), ("majority_accuracy", pa.float64()), ("control_accuracy", pa.float64()),
    ("selectivity", pa.float64()), ("subword", pa.string()), ("dropped_classes", pa.list_(pa.string())),
    ("seconds", pa.float64())])
_SUBSETS_SCHEMA = pa.schema([
    ("probe_id", pa.string()), ("ranking", pa.string()), ("target", pa.float64()), ("units", pa.int32()),
    ("unit_share", pa.float64()), ("dev_accuracy", pa.float64()), ("test_accuracy", pa.float64()),
    ("full_dev_accuracy", pa.float64()), ("probes_trained", pa.int32())])
_ACCURACY_SCHEMA = pa.schema([
    ("probe_id", pa.string()), ("evaluation", pa.string()), ("ranking", pa.string()), ("k_percent", pa.float64()),
    ("units", pa.int32()), ("class", pa.string()), ("dev_accuracy", pa.float64()), ("test_accuracy", pa.float64()),
    ("examples", pa.int64())])


def format_summary(summary: ProbingSummary) -> str:
    """The Top / Random / Bottom / All table of every concept and ranking (Dalvi et al. 2019), as text.

    >>> s = ProbingSummary("fp", {"pos": {"units": 100, "test_accuracy": 0.95, "majority_accuracy": 0.2,
    ...     "selectivity": 0.3, "rankings": {"lca": {"subset_units": 12, "top_10": 0.9, "random_10": 0.6,
    ...     "bottom_10": 0.3, "all_100": 0.95}}}})
    >>> print(format_summary(s))
    concept  ranking  top 10%  random 10%  bottom 10%    all  majority  selectivity  97% subset
    pos      lca        0.900       0.600       0.300  0.950     0.200        0.300    12 units
    """
    ks = sorted({key.split("_", 1)[1] for c in summary.concepts.values() for r in c.get("rankings", {}).values()
                 for key in r if key.startswith("top_")}, key=float)
    head = ["concept", "ranking"]
    for k in ks:
        head += [f"top {k}%", f"random {k}%", f"bottom {k}%"]
    head += ["all", "majority", "selectivity", "97% subset"]
    rows = []
    for name, c in summary.concepts.items():
        for method, r in c.get("rankings", {}).items():
            row = [name, method]
            for k in ks:
                row += [f"{r.get(f'{w}_{k}', float('nan')):.3f}" for w in ("top", "random", "bottom")]
            sel = c.get("selectivity")
            row += [f"{c['test_accuracy']:.3f}", f"{c['majority_accuracy']:.3f}",
                    "-" if sel is None else f"{sel:.3f}", f"{r['subset_units']} units"]
            rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = []
    for row in [head, *rows]:
        cells = [str(x).ljust(w) if i < 2 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
