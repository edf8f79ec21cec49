"""Options of the correlation views over a run's score sample: redundancy (Dalvi et al. 2020) and multi-model
search (`miner match`, Bau et al. 2019)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from miner.config.base import StrictModel


class RedundancyOptions(StrictModel):
    """Hierarchical correlation clustering of a run's units on the score sample (Dalvi et al. 2020)."""

    threshold: float = Field(0.7, gt=0, le=1, description="Units whose clusters are correlated at least this much "
                                                           "(|Pearson r| >= threshold under the linkage) are merged; "
                                                           "a unit in a cluster of two or more is redundant.")
    linkage: Literal["average", "complete", "single"] = Field(
        "average", description="Linkage of the hierarchical clustering on the distance 1 - |r| (scipy).")
    max_units: int = Field(20_000, ge=2, description="Refuse runs with more units than this: the clustering holds "
                                                     "the n(n-1)/2 pairwise distances (float64; 20,000 units: 1.6 GB).")
    block: int = Field(2048, ge=1, description="Units per block of the blockwise correlation matmul.")


class MatchOptions(StrictModel):
    """Multi-model search: each unit's best-correlated unit in each other run, on the sentences both samples share."""

    min_shared: int = Field(100, ge=2, description="Fewest sentences the two runs' samples must share.")
    block: int = Field(2048, ge=1, description="Units per block of the blockwise correlation matmul.")
