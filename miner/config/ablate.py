"""Options of the intervention stage (`miner ablate`): which unit sets are ablated or steered, how, and on which
held-out sentences their effects are measured."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from miner.config.base import StrictModel

AblationMode = Literal["zero", "mean", "clamp"]
Which = Literal["top", "random", "bottom"]
HeadTask = Literal["auto", "classification", "causal_lm", "masked_lm", "embedding"]


class RankingPick(StrictModel):
    """Units picked from a probe's neuron ranking (table neuron_rankings)."""

    probe_id: str = Field(description="The probe whose ranking is used (see the probes table).")
    method: str = Field("lca", description="Ranking method (lca, probeless, ap).")
    class_: str | None = Field(None, alias="class", description="The ranking's class (none: the overall ranking).")
    which: Which = Field("top", description="top (the best ranked), random (seeded) or bottom (the worst ranked).")
    percent: float | None = Field(None, gt=0, le=100, description="This share of the ranked units ...")
    count: int | None = Field(None, ge=1, description="... or this many units.")

    model_config = {"extra": "forbid", "validate_assignment": True, "populate_by_name": True}

    @model_validator(mode="after")
    def _one_size(self) -> RankingPick:
        if (self.percent is None) == (self.count is None):
            raise ValueError("give exactly one of percent and count")
        return self


class UnitSetSpec(StrictModel):
    """One named set of units: exactly one of units, ranking and sql."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Set name (in the ablation tables).")
    units: list[int | str] | None = Field(
        None, description="Unit ids, or LAYER:IDX (site hidden) / SITE:LAYER:IDX strings (e.g. 'mlp:3:17').")
    ranking: RankingPick | None = Field(None, description="Units from a probe's neuron ranking.")
    sql: str | None = Field(None, description="A read-only SQL query over the run catalog returning a unit_id column.")

    @model_validator(mode="after")
    def _one_source(self) -> UnitSetSpec:
        if sum(x is not None for x in (self.units, self.ranking, self.sql)) != 1:
            raise ValueError("give exactly one of units, ranking and sql")
        return self


class HeldOutOptions(StrictModel):
    """The held-out sentences effects are measured on."""

    sentences: int = Field(200, ge=1, description="Corpus sentences after the mined prefix (never mined); with "
                                                 "label_field: at most this many test-split sentences (corpus order).")
    label_field: str | None = Field(
        None, description="A classifier's label column (e.g. sentiment): its labelled sentences of the TEST split "
                          "(sentence_splits(text_keys(lower-cased texts), split_seed, dev_share, test_share) == test) are used instead, for accuracy.")
    labels: list[str] | None = Field(
        None, description="label_field: keep only sentences with these labels (e.g. [negative, positive] for a "
                          "binary classifier on three-way labels); none: every label must be a class of the model.")
    sources: list[str] = Field(default_factory=list, description="label_field: keep only sentences of these "
                                                                "corpus sources (column source), e.g. [tweets].")
    split_seed: int = Field(0, description="Seed of that split (the probing / fine-tuning split seed).")
    dev_share: float = Field(0.1, ge=0, lt=1, description="Dev share of that split.")
    test_share: float = Field(0.2, gt=0, lt=1, description="Test share of that split.")


class CurveOptions(StrictModel):
    """The ablation curve: the effect versus the number of ablated units, top vs random vs bottom of a ranking."""

    probe_id: str = Field(description="The probe whose ranking orders the units.")
    method: str = Field("lca", description="Ranking method.")
    class_: str | None = Field(None, alias="class", description="The ranking's class (none: the overall ranking).")
    counts: list[int] = Field(default_factory=lambda: [1, 5, 10, 50], description="Numbers of ablated units.")

    model_config = {"extra": "forbid", "validate_assignment": True, "populate_by_name": True}

    @field_validator("counts")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(c < 1 for c in v):
            raise ValueError("counts must be positive integers")
        return sorted(set(v))


class SteeringSpec(StrictModel):
    """Clamp a set to a multiple of each unit's top-queue mean and report what changes."""

    set: str = Field(description="The name of a set in `sets`.")
    multiple: float = Field(5.0, description="Each unit is clamped to this multiple of its top-queue mean score.")
    prompts: list[str] = Field(default_factory=list, description="Decoders: prompts continued greedily, before/after.")
    max_new_tokens: int = Field(20, ge=1, le=512, description="Decoders: tokens generated per prompt.")

    @field_validator("multiple")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class ProbeEffectSpec(StrictModel):
    """The effect of every ablated set on a probe reading a later layer: a probe of one of the job's probing
    concepts is trained on the clean activations of (site, layer) (train/dev split of the concept's examples)
    and tested on its test split, clean and with each set's EARLIER units ablated (hidden units of layers below
    `layer`, and mlp units of layers up to `layer` for a hidden probe, below it for an mlp probe)."""

    concept: str = Field(description="A concept of the job's probe section (e.g. pos).")
    site: Literal["hidden", "mlp"] = Field("hidden", description="The site the probe reads.")
    layer: int = Field(ge=1, description="The layer the probe reads (a mined layer).")


class AblateOptions(StrictModel):
    """The intervention stage: unit sets ablated or clamped inside the forward pass, and their effects."""

    task: HeadTask = Field("auto", description="The model output measured: auto (the checkpoint's head: "
                                               "classification, causal_lm for decoders, else embedding), or one.")
    sets: list[UnitSetSpec] = Field(default_factory=list, description="The unit sets to intervene on.")
    mode: AblationMode = Field("zero", description="zero, mean (each unit's corpus mean, table unit_moments) or "
                                                   "clamp (to `value`).")
    value: float | None = Field(None, description="mode clamp: the value every unit is set to.")
    held_out: HeldOutOptions = Field(default_factory=HeldOutOptions, description="Where effects are measured.")
    curve: CurveOptions | None = Field(None, description="The ablation curve (top / random / bottom).")
    controls: bool = Field(True, description="Measure every set against as many random and bottom-ranked units "
                                             "(bottom: of the curve's ranking, when there is one).")
    probe_effects: list[ProbeEffectSpec] = Field(
        default_factory=list, description="Probes at later layers whose test accuracy is measured under each set.")
    steering: list[SteeringSpec] = Field(default_factory=list, description="Steering experiments.")
    output_view_top_k: int = Field(0, ge=0, le=100, description="Models with an LM head: each set unit's top k "
                                                                "positive/negative output tokens (0: off).")
    seed: int = Field(0, description="Seed of the random unit sets.")
    block_sentences: int = Field(64, ge=1, description="Held-out sentences per worker task.")

    @model_validator(mode="after")
    def _check(self) -> AblateOptions:
        if self.mode == "clamp":
            if self.value is None:
                raise ValueError("mode clamp needs a value")
            if not math.isfinite(self.value):
                raise ValueError(f"value: {self.value} is not a finite number")
        elif self.value is not None:
            raise ValueError("value is only used with mode clamp")
        names = [s.name for s in self.sets]
        if len(set(names)) != len(names):
            raise ValueError("sets: a name is listed twice")
        for st in self.steering:
            if st.set not in names:
                raise ValueError(f"steering: unknown set {st.set!r}")
        if not self.sets and self.curve is None:
            raise ValueError("nothing to do: give sets or a curve")
        return self
