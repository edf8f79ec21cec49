"""Options of the explanation scores (issue 16): the held-out split, the detection band and the formula search."""

from __future__ import annotations

from pydantic import Field

from miner.config.base import StrictModel


class ScoreOptions(StrictModel):
    """How far to trust each unit's signature: scored on sentences the signature never saw.

    The held-out split is the mined sentences whose seeded sample hash (`hash_uniform(sample.seed, "sample",
    id)`, the hash that picks the score sample) is below `held_out`; the score sample is the smallest hashes, so
    it holds the held-out sentences first, and its held-out rows are the ones scored. Step 2 leaves every
    held-out sentence out of the signatures and the background (mining's queues stay exact over the corpus).
    """

    held_out: float = Field(0.1, gt=0, le=0.5, description="Share of the mined sentences (by sentence-id hash) never "
                                                          "used for signatures; scores use its score-sample rows.")
    top_band: float = Field(0.99, gt=0, lt=1, description="Quantile of a unit's held-out scores above which a "
                            "sentence is in its top band (detection positives and the formulas' target set).")
    formula_length: int = Field(3, ge=1, description="Most atoms (words, POS tags, metadata values) in a "
                                                     "compositional explanation (AND, OR, AND NOT).")
    beam: int = Field(5, ge=1, description="Beam width of the formula search.")
    min_concept_count: int = Field(5, ge=1, description="An atom must hold for at least this many held-out "
                                                        "sentences to enter formulas.")
    max_concepts: int = Field(2000, ge=1, description="At most this many atoms (the most frequent) enter formulas.")
    formulas: bool = Field(True, description="Search a compositional explanation per unit (table unit_formulas; "
                                             "top direction).")
    baseline_seed: int = Field(0, description="Seed of the shuffled-signature baseline.")
