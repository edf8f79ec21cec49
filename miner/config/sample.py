"""Options of the score sample mining records: a fixed, seeded set of sentences whose scores are kept for every
unit (for redundancy, multi-model search and, later, held-out explanation scores)."""

from __future__ import annotations

from pydantic import Field

from miner.config.base import StrictModel


class SampleOptions(StrictModel):
    """A seeded sample of the mined sentences whose scores mining keeps for every unit (float16)."""

    sentences: int = Field(10000, ge=0, description="Sentences in the score sample (0 = none); the sample is the "
                                                    "sentences with the smallest seeded hash of their id.")
    seed: int = Field(0, description="Seed of the sentence hash that picks the sample.")
