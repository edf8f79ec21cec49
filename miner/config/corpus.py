"""Corpus records: how documents are prepared into shards, and the manifest of a prepared corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from miner.config.base import StrictModel

InputFormat = Literal["auto", "txt", "jsonl", "csv", "tsv", "parquet"]


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
