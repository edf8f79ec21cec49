"""The job file: which model, corpus and units, how to mine them, and each later step's options; loading and path
resolution."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from miner.config.ablate import AblateOptions
from miner.config.base import SHORT_NAMES, StrictModel, validate_model
from miner.config.probe import ProbingOptions
from miner.config.sample import SampleOptions
from miner.config.scores import ScoreOptions
from miner.config.steps import AnalysisOptions, AnnotateOptions, SignatureOptions, VectorOptions
from miner.errors import ConfigError

Site = Literal["hidden", "mlp"]


class EarlyStop(StrictModel):
    """Stop mining once the queues have settled (the paper's figure 1)."""

    max_update_rate: float = Field(
        gt=0, le=1, description="Stop when a block changes fewer than this share of all queue entries."
    )
    patience: int = Field(2, ge=1, description="...for this many consecutive blocks.")
    min_sentences: int = Field(0, ge=0, description="Never stop before this many sentences were mined.")


class JobSpec(StrictModel):
    """A mining job: which model, which corpus, which units, how many sentences per unit, where to write.

    Loaded from YAML (see jobs/demo.yaml); paths are resolved relative to the job file's folder.
    """

    name: str = Field(description="Job name; the default output folder is runs/<name>.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: str = Field(
        description="Local Hugging Face model folder, or a bundled model's short name ('minilm' = all-MiniLM-L6-v2)."
    )
    corpus: Path | list[Path] = Field(
        description="Prepared corpus folder (from `miner corpus prepare` or `miner corpus fetch`), or a list of them "
        "read as one, each prepared `--after` the one before it; extending a finished run's list appends the new "
        "corpora to the run (only they are mined).")
    output: Path | None = Field(None, description="Run folder (default: runs/<name> next to the job file's project).")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="random re-initialises every weight except the embeddings (seeded) for a baseline."
    )
    init_seed: int = Field(0, description="Seed of the random re-initialisation.")
    sites: list[Site] = Field(
        default_factory=lambda: list[Site](["hidden"]),
        min_length=1,
        description="hidden = output of each transformer layer (the paper's units); mlp = FFN neurons after the activation.",
    )
    layers: list[int] | None = Field(
        None, description="Layers to mine, 1 = first transformer layer (default: all). 0 = embeddings (hidden site only)."
    )
    top_n: int = Field(1000, gt=0, description="Sentences kept per unit and direction (the paper's N).")
    bottom: bool = Field(True, description="Also keep the N sentences with the lowest activation.")
    aggregation: Literal["mean", "max"] = Field(
        "mean", description="Sentence score of a unit: mean over real tokens (the paper) or the maximum."
    )
    max_length: int = Field(128, gt=1, description="Truncate sentences to this many model tokens (counted in the manifest).")
    batch_size: int = Field(64, gt=0, description="Sentences per forward pass (per worker; at most, with batch_tokens).")
    batch_tokens: int | None = Field(
        None, gt=0, description="Padded tokens per forward pass (sentences x the longest one): batches of length-sorted "
        "sentences are cut at this budget, at most batch_size sentences each (default: batch_size sentences per batch). "
        "On a GPU, e.g. batch_size 1024 with batch_tokens 65536."
    )
    block_size: int | None = Field(
        None, gt=0, description="Sentences per work block (the unit of scheduling, checkpoints and convergence; default: auto)."
    )
    max_sentences: int | None = Field(None, gt=0, description="Mine only the first this many sentences of the corpus.")
    workers: int = Field(1, gt=0, description="Mining actors (one per GPU when GPUs are used).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when the actor has a GPU, else CPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU."
    )
    threads_per_worker: int = Field(0, ge=0, description="CPU threads per actor (0 = cores / workers).")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per actor (0 = 1 when the cluster has GPUs, else none).")
    checkpoint_seconds: float = Field(60, ge=0, description="Checkpoint the lanes' queues at most this often (0 = as often as the blocks in flight allow).")
    early_stop: EarlyStop | None = Field(None, description="Optional early stop when the queues have converged.")
    skip_corrupt_shards: bool = Field(
        False, description="Skip corpus shards that are unreadable or fail their manifest SHA-256 (each skip is "
        "recorded in the run manifest) instead of stopping with an error naming the shard.")
    allow_pickle: bool = Field(False, description="Allow loading .bin (pickle) weights; safetensors are always preferred.")
    sample: SampleOptions = Field(default_factory=SampleOptions,
                                  description="Step 1: the seeded score sample kept for every unit (redundancy, "
                                              "multi-model search).")
    annotate: AnnotateOptions = Field(default_factory=AnnotateOptions, description="Step 2: POS tagging and background sample.")
    signatures: SignatureOptions = Field(default_factory=SignatureOptions, description="Step 2: per-unit signatures.")
    vectors: VectorOptions = Field(default_factory=VectorOptions, description="Step 2: fastText sentence vectors.")
    scores: ScoreOptions | None = Field(
        None, description="Step 2: score every unit's signature on a held-out split (simulation, detection, "
                          "formulas); the split is left out of the signatures. Needs the score sample (sample.sentences > 0).")
    analysis: AnalysisOptions = Field(default_factory=AnalysisOptions, description="Step 3: clustering, map, rankings.")
    probe: ProbingOptions | None = Field(
        None, description="Top-down probing of labelled concepts (`miner probe`; `miner run` runs it when present).")
    ablate: AblateOptions | None = Field(
        None, description="Interventions inside the forward pass: ablation, steering, output view (`miner ablate`; "
                          "`miner run` runs it when present).")
    trust_remote_code: bool = Field(False, description="Allow model code shipped in the model folder.")

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if len(set(self.sites)) != len(self.sites):
            raise ValueError("sites: listed twice")
        if self.layers is not None:
            if any(layer < 0 for layer in self.layers):
                raise ValueError("layers: must be >= 0")
            if 0 in self.layers and self.sites == ["mlp"]:
                raise ValueError("layers: 0 (embeddings) has no mlp site")
        if isinstance(self.corpus, list) and not self.corpus:
            raise ValueError("corpus: the list of corpora is empty")
        return self

    @property
    def corpus_folders(self) -> list[Path]:
        """The corpus folders the job reads as one (a single `corpus:` folder is a list of one)."""
        return list(self.corpus) if isinstance(self.corpus, list) else [self.corpus]


def load_job(path: Path) -> tuple[JobSpec, Path]:
    """Read and validate a job file; returns the job and the folder its relative paths resolve against."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such job file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job file must be a YAML mapping of fields, got {type(data).__name__}")
    try:
        job = validate_model(JobSpec, data, "field")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return job, path.resolve().parent


def _absolute(path: Path | None, base: Path) -> Path | None:
    """`path` made absolute against `base`, lexically: symlinks are not resolved on this machine, since a
    cluster may mount the same storage under the link's path rather than its target."""
    if path is None:
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def resolve_job_paths(job: JobSpec, base: Path, cwd: Path) -> JobSpec:
    """The job with every path made absolute, the one rule `miner mine`, `miner run` and `miner submit` share.

    Relative corpus, model, output, fastText and concept-file paths resolve against the job file's folder `base`; a
    missing output becomes `<cwd>/runs/<name>`. Bundled model short names stay as they are.

    Example: a job in /proj/jobs with `corpus: ../data/default` and no output, run from /proj, gets
    `corpus: /proj/data/default` and `output: /proj/runs/<name>`.
    """
    update: dict = {"corpus": ([_absolute(c, base) for c in job.corpus] if isinstance(job.corpus, list)
                               else _absolute(job.corpus, base)),
                    "output": _absolute(job.output if job.output is not None else Path("runs") / job.name,
                                        base if job.output is not None else cwd)}
    if job.model.lower() not in SHORT_NAMES:
        update["model"] = str(_absolute(Path(job.model), base))
    if job.vectors.model is not None:
        update["vectors"] = job.vectors.model_copy(update={"model": _absolute(job.vectors.model, base)})
    if job.probe is not None:
        concepts = [c.model_copy(update={"path": _absolute(c.path, base)}) for c in job.probe.concepts]
        update["probe"] = job.probe.model_copy(update={"concepts": concepts})
    return job.model_copy(update=update)
