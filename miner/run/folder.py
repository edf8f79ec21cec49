"""The run folder: the name of every file in it, its lock, and reading, validating and updating its manifest."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from miner import __version__, atomic
from miner.config import CorpusManifest, JobSpec
from miner.corpus.combined import open_corpora
from miner.errors import InputError, OutputConflictError, first_line


@dataclass(frozen=True)
class RunFiles:
    """The name of every file and folder of a run, by the stage that writes it (tables: `<table>.parquet`).

    Example: FILES.top_sentences -> "top_sentences.parquet"; table_name(FILES.top_sentences) -> "top_sentences"
    """

    manifest: str = "manifest.json"
    # step 1, `miner mine`
    units: str = "units.parquet"
    sentences: str = "sentences.parquet"
    top_sentences: str = "top_sentences.parquet"
    convergence: str = "convergence.parquet"
    unit_moments: str = "unit_moments.parquet"
    """Per unit: count, mean, std, min, max and positive share of its sentence scores over the mined corpus."""
    unit_distribution: str = "unit_distribution.parquet"
    """Per unit: quantiles of its sentence scores (from the score histogram) and the kept share of the queues."""
    unit_histograms: str = "unit_histograms.parquet"
    """Per unit and non-empty bin: the score histogram (exact counts in fixed bins, miner.mining.sketch)."""
    unit_exemplars: str = "unit_exemplars.parquet"
    """Per unit and activation band (sample quantiles) a few sentences of the score sample, and random ones."""
    sample_sentences: str = "sample_sentences.parquet"
    """The seeded score sample: which sentences keep their scores for every unit (row -> sentence_id)."""
    sample: str = "sample"
    """The score sample's matrix (scores.npy, float16 [sample rows, units]) and per-block shards while mining."""
    checkpoint: str = "checkpoint"
    checkpoint_old: str = "checkpoint.old"
    lock: str = ".lock"
    # step 2, `miner signatures`
    tokens: str = "tokens.parquet"
    background: str = "background.parquet"
    signatures: str = "signatures.parquet"
    unit_stats: str = "unit_stats.parquet"
    unit_metadata: str = "unit_metadata.parquet"
    sentence_vectors: str = "sentence_vectors.parquet"
    unit_vectors: str = "unit_vectors.parquet"
    fasttext: str = "fasttext.bin"
    unit_scores: str = "unit_scores.parquet"
    """Per unit and direction: its signature's simulation and detection scores on the held-out split."""
    unit_formulas: str = "unit_formulas.parquet"
    """Per unit: the compositional explanation (formula of atoms) of its held-out top band, IoU, precision, recall."""
    # step 3, `miner analyze`
    unit_clusters: str = "unit_clusters.parquet"
    unit_map: str = "unit_map.parquet"
    layer_rankings: str = "layer_rankings.parquet"
    layer_distribution: str = "layer_distribution.parquet"
    unit_redundancy: str = "unit_redundancy.parquet"
    layer_redundancy: str = "layer_redundancy.parquet"
    plots: str = "plots"
    # multi-model search, `miner match`
    unit_matches: str = "unit_matches.parquet"
    # probing, `miner probe`
    probes: str = "probes.parquet"
    probe_accuracy: str = "probe_accuracy.parquet"
    neuron_rankings: str = "neuron_rankings.parquet"
    probe_subsets: str = "probe_subsets.parquet"
    probe_examples: str = "probe_examples.parquet"
    probing: str = "probing"
    """Per concept: the extracted activations (acts-NNNNN.npy, float16) and extraction.json."""
    # interventions, `miner ablate`
    ablation_sets: str = "ablation_sets.parquet"
    ablation_effects: str = "ablation_effects.parquet"
    steering_effects: str = "steering_effects.parquet"
    steering_texts: str = "steering_texts.parquet"
    unit_logits: str = "unit_logits.parquet"
    ablation: str = "ablation"
    """Working files of `miner ablate` (per-task result shards, so an interrupted run resumes)."""
    # views over all of the above
    catalog: str = "catalog.duckdb"


TABLE_SUFFIX = ".parquet"
FILES = RunFiles()


def table_file(name: str) -> str:
    """The file of a run table: "units" -> "units.parquet"."""
    return name + TABLE_SUFFIX


def table_name(file: str) -> str:
    """The table (catalog view) of a run file: "units.parquet" -> "units"."""
    return file.removesuffix(TABLE_SUFFIX)


# Which command writes each run table, for the "what to do" of a damaged file.
MINING_TABLES = tuple(table_name(f) for f in (FILES.units, FILES.sentences, FILES.top_sentences, FILES.convergence,
                                              FILES.unit_moments, FILES.unit_distribution, FILES.unit_histograms,
                                              FILES.sample_sentences, FILES.unit_exemplars))
STEP2_TABLES = tuple(table_name(f) for f in (FILES.tokens, FILES.background, FILES.signatures, FILES.unit_stats,
                                             FILES.unit_metadata, FILES.sentence_vectors, FILES.unit_vectors))
ANALYSIS_TABLES = tuple(table_name(f) for f in (FILES.unit_clusters, FILES.unit_map, FILES.layer_rankings,
                                                FILES.layer_distribution, FILES.unit_redundancy,
                                                FILES.layer_redundancy))
PROBE_TABLES = tuple(table_name(f) for f in (FILES.probes, FILES.probe_accuracy, FILES.neuron_rankings,
                                             FILES.probe_subsets, FILES.probe_examples))
MATCH_TABLES = (table_name(FILES.unit_matches),)
ABLATE_TABLES = tuple(table_name(f) for f in (FILES.ablation_sets, FILES.ablation_effects, FILES.steering_effects,
                                              FILES.steering_texts, FILES.unit_logits))


def repair_hint(path: Path) -> str:
    """What a user can do about a damaged file of a run folder (which command writes it again).

    Example: Path("runs/demo/tokens.parquet") -> "re-run `miner signatures runs/demo` to write it again"
    """
    path = Path(path)
    run = path.parent
    if path.name == FILES.catalog:
        return f"delete {path}; the next command rebuilds it"
    if path.name == FILES.manifest or path.stem in MINING_TABLES:
        return (f"it was written by `miner mine`: restore it, or move {run} away and mine the job again "
                "(nothing else in the folder is lost)")
    if path.stem in ANALYSIS_TABLES:
        return f"re-run `miner analyze {run}` to write it again"
    if path.stem in PROBE_TABLES:
        return "re-run `miner probe` on the run's job file to write it again"
    if path.stem in ABLATE_TABLES:
        return "re-run `miner ablate` on the run's job file to write it again"
    if path.stem in MATCH_TABLES:
        return f"re-run `miner match {run} OTHER_RUN ...` to write it again"
    return f"re-run `miner signatures {run}` to write it again"


class RunManifest(BaseModel):
    """RUN/manifest.json, typed for reading and validation only: the file is written from the plain dict, so its
    JSON stays exactly as the stages write it (keys this model does not name are kept as extra fields)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    status: str
    """running (mining under way or stopped) or complete."""
    fingerprint: str | None = None
    code_version: str | None = None
    job: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] | None = None
    corpus: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    skipped_shards: list[dict[str, Any]] = Field(default_factory=list)
    step2: dict[str, Any] | None = None
    """Step 2's summary (`miner signatures`)."""
    analysis: dict[str, Any] | None = None
    """Step 3's summary (`miner analyze`)."""
    probe: dict[str, Any] | None = None
    """The probing stage's summary (`miner probe`)."""


def read_manifest_json(run_dir: Path) -> dict:
    """RUN/manifest.json as a dict; unreadable or not JSON -> one InputError naming it and what to do."""
    manifest = Path(run_dir) / FILES.manifest
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{manifest}: damaged, not valid JSON ({first_line(exc)}); {repair_hint(manifest)}") from None
    if not isinstance(data, dict):
        raise InputError(f"{manifest}: damaged, not a JSON object; {repair_hint(manifest)}")
    return data


def validate_manifest(data: dict, run_dir: Path) -> RunManifest:
    """The typed view of a manifest dict; a field of the wrong type -> one InputError naming the file and field."""
    try:
        return RunManifest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "manifest"
        manifest = Path(run_dir) / FILES.manifest
        raise InputError(f"{manifest}: damaged, {where}: {error['msg']}; {repair_hint(manifest)}") from None


def read_manifest(run_dir: Path) -> RunManifest:
    """RUN/manifest.json, read and validated (see RunManifest)."""
    return validate_manifest(read_manifest_json(run_dir), run_dir)


class RunFolder:
    """Layout of runs/<job>/, its lock and its manifest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.manifest = self.path / FILES.manifest
        self.checkpoint = self.path / FILES.checkpoint
        self.checkpoint_old = self.path / FILES.checkpoint_old
        self._lock: IO[str] | None = None

    def file(self, name: str) -> Path:
        """The path of one of its files: run.file(FILES.units) -> runs/<job>/units.parquet."""
        return self.path / name

    def status(self) -> dict | None:
        """The folder's manifest, None if it has none; a damaged one is an InputError naming it."""
        if not self.manifest.exists():
            return None
        return read_manifest_json(self.path)

    def claim(self, fingerprint: str, job: JobSpec, appending: bool = False) -> None:
        """Refuse a folder that holds another job; mark it as ours (status: running) otherwise.

        `appending`: the folder holds the finished run this job appends corpora to (miner.mining.append checked
        it); its manifest stays as it is until the append finishes.
        """
        existing = self.status()
        if existing is None and self.path.exists() and any(self.path.iterdir()):
            raise OutputConflictError(f"{self.path}: exists and is not a neuron-miner run; choose another output")
        if existing is not None and existing.get("fingerprint") != fingerprint and not appending:
            raise OutputConflictError(
                f"{self.path}: holds a different job ('{existing.get('job', {}).get('name')}', other settings, corpus "
                "or model); choose another output or delete it"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        atomic.remove_stale_temporaries(self.path)  # left by a killed driver; we hold the lock now
        if existing is None:
            self.write_json(self.manifest, {"status": "running", "fingerprint": fingerprint,
                                            "job": job.model_dump(mode="json"), "code_version": __version__})

    def lock(self, wait_seconds: float = 0.0) -> None:
        """Hold an exclusive lock on the run folder until release(): two processes never write one run.

        `wait_seconds`: how long to wait for another holder to let go (0: fail at once, as a second driver does).
        """
        import fcntl

        if self._lock is not None:
            return
        handle = open(self.file(FILES.lock), "a")  # noqa: SIM115 - held open until release()
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise OutputConflictError(f"{self.path}: in use by another running miner process (wait for it, "
                                              "or stop it: `miner jobs stop` / kill the driver)") from None
                time.sleep(0.05)
        self._lock = handle

    def release(self) -> None:
        """Let go of the lock (a no-op when not held)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    write_json = staticmethod(atomic.write_json)
    write_table = staticmethod(atomic.write_table)

    def update_manifest(self, key: str, summary: dict[str, Any] | None) -> dict[str, Any]:
        """Set manifest[key] = summary (read, validate, write atomically); call while holding the lock."""
        if self._lock is None:
            raise RuntimeError(f"{self.path}: update_manifest needs the run folder's lock")
        manifest = read_manifest_json(self.path)
        validate_manifest(manifest, self.path)
        manifest[key] = summary
        self.write_json(self.manifest, manifest)
        return manifest

    def discard_unstarted(self, created_folder: bool) -> None:
        """Remove what claim() wrote if nothing was mined yet (no checkpoint, no tables), so a run that fails
        before its first block leaves no manifest saying `running`. Call while holding the lock."""
        if self.checkpoint.exists() or self.checkpoint_old.exists() or any(self.path.glob("*" + TABLE_SUFFIX)):
            return
        self.manifest.unlink(missing_ok=True)
        self.file(FILES.lock).unlink(missing_ok=True)
        if created_folder:
            with contextlib.suppress(OSError):  # not empty: something else lives there; leave it
                self.path.rmdir()


def update_manifest(run_dir: Path, key: str, summary: dict[str, Any] | None, wait_seconds: float = 60.0) -> dict[str, Any]:
    """Record a stage's summary as RUN/manifest.json[key] while holding the run folder's lock; returns the manifest.

    The manifest is read and validated (a damaged one is one InputError naming it), updated and written
    atomically; a process holding the lock longer than `wait_seconds` (a mining driver) is an OutputConflictError.
    Example: update_manifest(run, "step2", {"status": "complete", ...}) keeps every other key as it was.
    """
    run = RunFolder(Path(run_dir))
    run.lock(wait_seconds)
    try:
        return run.update_manifest(key, summary)
    finally:
        run.release()


def run_corpus(run_dir: Path) -> tuple[dict, Path, CorpusManifest]:
    """(run manifest, corpus folder, corpus manifest) of a finished mining run; one clear error otherwise.

    Shards the miner skipped as corrupt are left out of the corpus manifest: they are not part of the run's corpus.
    """
    run_dir = Path(run_dir)
    if not (run_dir / FILES.manifest).exists() or not (run_dir / FILES.top_sentences).exists():
        raise InputError(f"{run_dir}: no mining output ({FILES.manifest}, {FILES.top_sentences}); "
                         "run `miner mine` first")
    manifest = read_manifest_json(run_dir)
    if manifest.get("status") != "complete":
        raise InputError(f"{run_dir}: mining is not complete (status: {manifest.get('status')})")
    corpus_path = validate_manifest(manifest, run_dir).corpus
    if not corpus_path or not corpus_path.get("path"):
        raise InputError(f"{run_dir / FILES.manifest}: damaged, no corpus path; {repair_hint(run_dir / FILES.manifest)}")
    corpus_dir, corpus = open_corpora([Path(p) for p in corpus_path.get("paths") or [corpus_path["path"]]])
    skipped = skipped_shards(manifest)
    if skipped:
        corpus = corpus.model_copy(update={"shards": [s for s in corpus.shards if s.file not in skipped]})
    return manifest, corpus_dir, corpus


def skipped_shards(run_manifest: dict) -> frozenset[str]:
    """Corpus shard files a mining run skipped as corrupt (recorded in its manifest)."""
    return frozenset(s["file"] for s in run_manifest.get("skipped_shards", []))
