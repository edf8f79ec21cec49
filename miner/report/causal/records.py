"""Records of a unit's causal and cross-model sections: its redundancy cluster, its best match in every other run,
its output tokens (direct effect on the logits) and the ablations that include it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Redundancy:
    """The unit's redundancy cluster on the score sample (unit_redundancy; Dalvi et al. 2020)."""

    cluster: int
    cluster_size: int
    redundant: bool
    """In a cluster of two or more units (correlation above the threshold)."""
    best_unit: int | None
    best_label: str | None
    """LAYER:IDX of the most correlated other unit (SITE:LAYER:IDX off the hidden site)."""
    best_corr: float | None
    layer_share: float | None
    """Share of redundant units in the unit's layer (layer_redundancy)."""
    threshold: float | None
    members: list[str] = field(default_factory=list)
    """Labels of the first cluster members (at most 12), the unit itself excluded."""


@dataclass
class Match:
    """The unit's best match in another run over the shared score sample (unit_matches; Bau et al. 2019)."""

    other_run: str
    best_label: str
    """LAYER:IDX of the matching unit in the other run."""
    corr: float | None


@dataclass
class OutputToken:
    """One output token of the unit's direct effect on the logits (unit_logits)."""

    rank: int
    token: str
    logit: float


@dataclass
class UnitAblation:
    """One ablated or steered unit set the unit belongs to (ablation_sets, ablation_effects)."""

    set_id: str
    units: int
    """Units in the set."""
    metric: str
    value: float | None
    """The effect with the set ablated."""
    random_value: float | None
    """The same number of random units ablated."""
    bottom_value: float | None
    """The same number of bottom-ranked units ablated."""


@dataclass
class UnitCausal:
    """Everything of the causal and cross-model sections a unit page shows; parts are None without their table."""

    redundancy: Redundancy | None = None
    matches: list[Match] | None = None
    output_positive: list[OutputToken] | None = None
    output_negative: list[OutputToken] | None = None
    ablations: list[UnitAblation] | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.redundancy, self.matches, self.output_positive, self.ablations))


@dataclass
class LayerRedundancy:
    """One layer's share of redundant units (layer_redundancy)."""

    site: str
    layer: int
    units: int
    redundant_units: int
    redundant_share: float


@dataclass
class LayerMatches:
    """How one layer's units match another run's units (unit_matches, per layer)."""

    other_run: str
    site: str
    layer: int
    units: int
    median_abs_corr: float | None
    unmatched: int
    """Units whose best |r| in the other run is below UNMATCHED_BELOW (no counterpart)."""


@dataclass
class AblationRow:
    """One ablated set's effect and its controls, for the overview (ablation_effects)."""

    set_id: str
    units: int
    metric: str
    clean: float | None
    value: float | None
    random_value: float | None
    bottom_value: float | None


@dataclass
class SteeredClass:
    """One class of a classifier under a steering clamp (steering_effects)."""

    set_name: str
    multiple: float
    label: str
    share_before: float
    share_after: float
    flipped_in: int
    flipped_out: int


@dataclass
class SteeredText:
    """One prompt's greedy continuation without and with a steering clamp, side by side (steering_texts)."""

    set_name: str
    multiple: float
    prompt: str
    before: str
    after: str
    changed: bool


@dataclass
class ModelCausal:
    """The overview's causal and cross-model section; parts are None without their table."""

    redundancy: list[LayerRedundancy] | None = None
    threshold: float | None = None
    matches: list[LayerMatches] | None = None
    unmatched_below: float = 0.5
    ablations: list[AblationRow] | None = None
    steered_classes: list[SteeredClass] | None = None
    steered_texts: list[SteeredText] | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.redundancy, self.matches, self.ablations, self.steered_classes,
                                       self.steered_texts))
