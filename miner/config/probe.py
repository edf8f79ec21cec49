"""Options of the probing stage (top-down): the concepts to probe, how examples are sampled and split, the probe's
regularisation grid and the evaluations of each neuron ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from miner.config.base import StrictModel

ConceptKind = Literal["tags", "file", "metadata"]
RankingMethod = Literal["lca", "probeless", "ap"]
Lambda = Annotated[float, Field(ge=0)]
Percent = Annotated[float, Field(gt=0, le=100)]


class ConceptSpec(StrictModel):
    """One concept to probe: token labels (the run's POS tags, or a labelled file) or a sentence label (a corpus
    metadata column).

    tags: the Penn Treebank tags step 2 computed with spaCy (tokens.pos), on every sentence step 2 tagged.
    file: token labels from a CoNLL-U, `word/TAG` or JSONL (`tokens`, `labels`) file; each sentence is the
    file's words joined by spaces. metadata: one label per sentence from a corpus column; the feature of a unit
    is its sentence score (mean over tokens, as in mining).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Concept name, used in probe ids (e.g. 'pos', 'sentiment').")
    kind: ConceptKind = Field(description="tags (the run's spaCy POS tags), file (token labels) or metadata "
                                          "(a sentence label from a corpus column).")
    path: Path | None = Field(None, description="kind file: the labelled file (relative to the job file's folder).")
    format: Literal["auto", "conllu", "word_tag", "jsonl"] = Field(
        "auto", description="kind file: the file's format (auto: by suffix, .conllu/.conll, .jsonl/.json, else "
                            "word/TAG lines).")
    column: str = Field("upos", description="kind file, CoNLL-U: the label column (name, e.g. upos or xpos, or "
                                            "1-based number).")
    field: str | None = Field(None, description="kind metadata: the corpus column holding the sentence label.")
    max_sentences: int | None = Field(None, gt=0, description="Read at most this many labelled sentences.")

    @model_validator(mode="after")
    def _check(self) -> ConceptSpec:
        if self.kind == "file" and self.path is None:
            raise ValueError("path: a concept of kind file needs the labelled file's path")
        if self.kind == "metadata" and not self.field:
            raise ValueError("field: a concept of kind metadata needs the corpus column that holds the label")
        if self.kind != "file" and self.path is not None:
            raise ValueError(f"path: only a concept of kind file reads a file (this one is {self.kind})")
        if self.kind != "metadata" and self.field is not None:
            raise ValueError(f"field: only a concept of kind metadata reads a corpus column (this one is {self.kind})")
        return self


class ProbingOptions(StrictModel):
    """The probing stage: per-token (or per-sentence) activations of every mined unit for labelled concepts,
    ElasticNet probes per layer and over all layers, neuron rankings, and the evaluations that prove them."""

    concepts: list[ConceptSpec] = Field(min_length=1, description="Concepts to probe.")
    subword: Literal["first", "last", "mean"] = Field(
        "last", description="Which subword piece stands for a word split into several (NeuroX: last).")
    max_per_class: int = Field(
        2000, ge=10, description="Examples kept per class and split (train; dev and test in proportion): a "
                                 "seeded sample of very frequent classes, so the classes stay balanced.")
    min_per_class: int = Field(
        10, ge=3, description="A class needs at least this many examples (and one in each of dev and test).")
    rare_classes: Literal["error", "drop"] = Field(
        "error", description="A class with fewer than min_per_class examples: stop with an error, or drop the "
                             "class (recorded in the probes table).")
    dev_share: float = Field(0.1, gt=0, lt=0.5, description="Share of sentences in the dev split (lambda choice).")
    test_share: float = Field(0.1, gt=0, lt=0.5, description="Share of sentences in the test split.")
    seed: int = Field(0, description="Seed of the split, the class-balanced sample, probe training, random subsets "
                                     "and control labels.")
    l1_grid: list[Lambda] = Field([0.0, 1e-4, 1e-3], min_length=1,
                                  description="L1 strengths tried (chosen on dev, with l2_grid).")
    l2_grid: list[Lambda] = Field([0.0, 1e-4, 1e-3], min_length=1,
                                  description="L2 strengths tried (chosen on dev, with l1_grid).")
    epochs: int = Field(20, ge=1, description="Most probe training epochs (training stops early when dev accuracy stalls).")
    per_layer: bool = Field(True, description="Also train one probe per layer (and site) beside the all-layer one.")
    rankings: list[RankingMethod] = Field(
        ["lca", "probeless", "ap"], min_length=1,
        description="Neuron rankings: lca (probe weight mass, Dalvi et al. 2019), probeless (class-mean "
                    "differences, Antverg & Belinkov 2022), ap (average precision as a class detector, Suau et al. 2020).")
    k_percent: list[Percent] = Field([10.0], min_length=1,
                                     description="Top / random / bottom k% of units retrained (each in (0, 100]).")
    subset_target: float = Field(0.97, gt=0, le=1,
                                 description="Minimal subset: fewest top-ranked units keeping this share of the full "
                                             "probe's accuracy (Durrani et al. 2022).")
    block_sentences: int = Field(256, ge=1, description="Sentences per extraction block (the unit of scheduling, "
                                                         "storage and resume).")
    control: bool = Field(True, description="Control task (Hewitt & Liang 2019): random labels per word type; "
                                            "selectivity = task - control accuracy (token concepts).")

    @field_validator("concepts")
    @classmethod
    def _unique_names(cls, concepts: list[ConceptSpec]) -> list[ConceptSpec]:
        names = [c.name for c in concepts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"concept names must be unique: {', '.join(dup)} listed twice")
        return concepts

    @field_validator("rankings", "k_percent")
    @classmethod
    def _dedupe(cls, values: list) -> list:
        return list(dict.fromkeys(values))
