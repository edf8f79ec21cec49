"""Options of the intervention stage (`miner ablate`): which unit sets are ablated or steered, how, and on which
held-out sentences their effects are measured."""

from __future__ import annotations

from miner.config.base import StrictModel


class AblateOptions(StrictModel):
    """The intervention stage: unit sets ablated or clamped inside the forward pass, and their effects."""
