"""Records of the probing sections of the reports: a unit's probe ranks, and per concept the Dalvi table,
minimal subsets, per-layer probes and where the salient units lie."""

from __future__ import annotations

from dataclasses import dataclass, field

from miner.report.figure import Plot


@dataclass
class UnitProbeRank:
    """The unit's place in one neuron ranking of an all-layer probe (neuron_rankings, probes)."""

    probe_id: str
    """The probe, `<concept>:all`."""
    concept: str
    method: str
    """The ranking method: `lca`, `probeless` or `ap`."""
    rank: int | None
    """Overall rank (class NULL); 1 = the most salient unit. None when the unit is not ranked."""
    n_ranked: int
    """Units in the overall ranking."""
    score: float | None
    """The method's overall score (lca: the entry percentage, lower first; probeless and ap: higher first)."""
    best_class: str | None
    """The class the unit ranks best for (smallest per-class rank; ties to the smaller class name)."""
    best_class_rank: int | None
    best_class_n: int | None
    """Units ranked for that class."""
    test_accuracy: float | None
    """The probe's test accuracy."""
    classes: int
    """Classes of the concept."""


@dataclass
class SubsetEvaluation:
    """One row of the Dalvi et al. table: probes retrained on the top, a random and the bottom k% of a ranking."""

    ranking: str
    k_percent: float
    units: int | None
    """Units in each subset."""
    top: float | None
    """Test accuracy on the top k% (probe_accuracy evaluation `top`)."""
    random: float | None
    bottom: float | None
    control_top: float | None
    """Control-task test accuracy on the top k% (None unless recorded)."""


@dataclass
class MinimalSubset:
    """The smallest top-ranked prefix of a ranking that keeps `target` of the full probe's dev accuracy."""

    ranking: str
    target: float
    units: int
    unit_share: float
    dev_accuracy: float | None
    test_accuracy: float | None
    full_dev_accuracy: float | None


@dataclass
class LayerProbe:
    """A probe over the units of one site and layer (probes with scope `layer`)."""

    probe_id: str
    site: str
    layer: int
    units: int
    dev_accuracy: float | None
    test_accuracy: float | None
    majority_accuracy: float | None


@dataclass
class SubsetLayerCount:
    """How many units of a ranking's minimal subset lie in one site and layer (zero counts included)."""

    ranking: str
    site: str
    layer: int
    count: int
    layer_units: int
    """Units of the site and layer in the run."""


@dataclass
class ConceptProbing:
    """One concept's probes in the overview: the all-layer probe, its ranking evaluations, minimal subsets,
    per-layer probes and where the minimal-subset units lie."""

    concept: str
    probe_id: str
    """The all-layer probe, `<concept>:all`."""
    level: str
    """`token` or `sentence`."""
    units: int
    classes: int
    class_names: list[str]
    test_rows: int
    test_accuracy: float | None
    """The probe's own test accuracy (probes)."""
    all_accuracy: float | None
    """Test accuracy retrained on every unit with the chosen lambdas (probe_accuracy evaluation `all`)."""
    majority_accuracy: float | None
    control_accuracy: float | None
    selectivity: float | None
    l1: float | None
    l2: float | None
    dropped_classes: list[str]
    evaluations: list[SubsetEvaluation]
    subsets: list[MinimalSubset]
    layers: list[LayerProbe]
    subset_layers: list[SubsetLayerCount]
    plots: list[Plot] = field(default_factory=list)
