"""Options of the score sample mining records: a fixed, seeded set of sentences whose scores are kept for every
unit (for redundancy, multi-model search and, later, held-out explanation scores)."""

from __future__ import annotations

from pydantic import Field, field_validator

from miner.config.base import StrictModel


class SampleOptions(StrictModel):
    """A seeded sample of the mined sentences whose scores mining keeps for every unit (float16)."""

    sentences: int = Field(20000, ge=0, description="Sentences in the score sample (0 = none); the sample is the "
                                                    "sentences with the smallest seeded hash of their id.")
    seed: int = Field(0, description="Seed of the sentence hash that picks the sample.")
    exemplars: int = Field(5, ge=0, description="Exemplar sentences per unit and activation band, and random ones, "
                                                "picked from the score sample (table unit_exemplars; 0 = none).")
    exemplar_bands: list[float] = Field(
        [0.5, 0.9, 0.99, 0.999], description="Quantiles that cut each unit's sample scores into bands (increasing, "
        "inside (0, 1)): the default gives [0, .5), [.5, .9), [.9, .99), [.99, .999), [.999, 1].")

    @field_validator("exemplar_bands")
    @classmethod
    def _increasing(cls, bands: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in bands):
            raise ValueError("every band edge must lie strictly between 0 and 1")
        if any(b <= a for a, b in zip(bands, bands[1:])):
            raise ValueError(f"band edges must be increasing, got {bands}")
        return bands
