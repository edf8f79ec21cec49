"""Report records: what a unit page and the model overview show, as plain JSON-serialisable dataclasses.

Records are built from the run's catalog (miner.report.build) and rendered by templates (miner.report.render);
nothing here reads files or formats text. Conventions: layer 1 is the first transformer layer, 0 the
embeddings; `direction` is `top` (highest-scoring sentences) or `bottom` (lowest); shares are in 0..1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from miner.report.causal.records import ModelCausal, UnitCausal
from miner.report.explanation import ModelScores, UnitScores
from miner.report.figure import Plot
from miner.report.probing.records import (
    ConceptProbing,
    LayerProbe,
    MinimalSubset,
    SubsetEvaluation,
    SubsetLayerCount,
    UnitProbeRank,
)


@dataclass
class UnitRef:
    """Which unit: its dense id and its place (site, layer, idx)."""

    unit_id: int
    """Dense id, the key of every catalog table."""
    site: str
    """`hidden` (layer output) or `mlp` (FFN neuron after its activation)."""
    layer: int
    """Layer number; 1 = first transformer layer, 0 = embeddings."""
    idx: int
    """Index of the unit within its site and layer (0-based)."""

    @property
    def label(self) -> str:
        """What users type: "3:232" for hidden units, "mlp:3:232" for mlp units."""
        return f"{self.layer}:{self.idx}" if self.site == "hidden" else f"{self.site}:{self.layer}:{self.idx}"


@dataclass
class RunInfo:
    """The run a report was built from."""

    run_dir: str
    name: str
    """The job's name."""
    model: str
    """The job's model value (short name or folder)."""
    model_path: str
    model_type: str
    init: str
    """`pretrained` or `random` (all weights but the embeddings re-initialised, seeded by init_seed)."""
    init_seed: int
    n_layers: int
    sites: list[str]
    top_n: int
    """Queue length N per unit and direction."""
    aggregation: str
    """How a sentence's score is made from its token activations (`mean` or `max`)."""
    max_length: int
    """Model tokens per sentence, special tokens included; longer sentences were truncated."""
    sentences: int
    """Sentences mined."""
    units: int
    corpus_path: str
    weights_sha256: str | None = None
    code_version: str | None = None


@dataclass
class PatternRow:
    """One word, word pattern or POS pattern of a unit's signature (a row of the signatures table)."""

    rank: int
    """1 = highest rel_freq within (unit, direction, kind)."""
    pattern: str
    """The word, or the pattern's items separated by spaces (gaps allowed between them)."""
    support: int
    """Queue sentences containing it."""
    share: float
    """support / queue sentences."""
    background_support: int
    background_share: float
    rel_freq: float
    """share / background_share."""


@dataclass
class PosRatio:
    """Share of a coarse POS class among the queue's tokens, against the corpus (background)."""

    name: str
    """`noun` (tags N*), `verb` (V*) or `adj` (J*)."""
    ratio: float | None
    corpus_ratio: float | None
    """The background's ratio (ratio / rel)."""
    rel: float | None
    """ratio / corpus_ratio."""


@dataclass
class MetadataValue:
    """One value of a metadata field among the queue's sentences."""

    value: str | None
    """None stands for sentences without this field (NULL)."""
    count: int
    share: float
    corpus_share: float | None
    rel_share: float | None


@dataclass
class MetadataField:
    """The distribution of one metadata field (domain, sentiment, topic, ...) over a queue, by count."""

    field: str
    values: list[MetadataValue]


@dataclass
class TokenActivation:
    """A model token of a sentence and the unit's activation on it (special tokens excluded)."""

    position: int
    """Position in the model's input (0 is usually [CLS] / BOS)."""
    token: str
    """The model token (word piece) as the tokenizer writes it."""
    start: int | None
    """Character span of the token in the sentence text (None if the tokenizer gives no offsets)."""
    end: int | None
    activation: float


@dataclass
class WordActivation:
    """A word of the sentence (the model tokens of one pre-tokenized word merged back)."""

    text: str
    start: int
    end: int
    activation: float
    """The activation of the word's most extreme token (largest |activation|)."""
    tokens: list[str]


@dataclass
class SentenceEntry:
    """One sentence of a unit's queue, with its stored score and (optionally) recomputed token activations."""

    rank: int
    sentence_id: int
    score: float
    """Stored sentence score (mean over real tokens, or max, per the job's aggregation)."""
    text: str
    peak_position: int | None
    peak_token: str | None
    peak_score: float | None
    metadata: dict[str, str | None]
    """Metadata fields of the sentence (domain, source, sentiment, ...)."""
    n_model_tokens: int | None = None
    truncated: bool | None = None
    tokens: list[TokenActivation] | None = None
    """Per-token activations recomputed with the model; None when activations were not requested."""
    words: list[WordActivation] | None = None
    recomputed_score: float | None = None
    """The score aggregated from `tokens`; equals `score` up to float rounding when the model is unchanged."""


@dataclass
class TypicalSentence:
    """The queue sentence nearest to the mean of the queue's fastText sentence vectors."""

    sentence_id: int
    text: str
    distance: float | None


@dataclass
class DirectionSignature:
    """The paper's table-2 signature of one queue (top or bottom) plus its sentences."""

    direction: str
    n_sentences: int
    """Sentences in the queue (N)."""
    score_max: float | None
    score_min: float | None
    words: list[PatternRow]
    word_patterns: list[PatternRow]
    pos_patterns: list[PatternRow]
    pos_ratios: list[PosRatio]
    pos_selectivity: float | None
    """The paper's POS selectivity: max of noun_rel, verb_rel, adj_rel (queue's class share / corpus share)."""
    pos_selectivity_tag: str | None
    """The class attaining it: noun, verb or adj."""
    avg_length: float | None
    """Mean sentence length in spaCy tokens."""
    sentiment_n: int | None
    sentiment_mean: float | None
    """Mean binary polarity (positive 1, negative -1) of the sentiment_n positive or negative sentences."""
    sentiment_std: float | None
    """The paper's sentiment selectivity: std of that binary polarity (neutral left out)."""
    metadata: list[MetadataField]
    typical: TypicalSentence | None
    sentences: list[SentenceEntry]
    """The first n_sentences of the queue, by rank."""
    pos_selectivity_ptb: float | None = None
    """Max over all PTB tags of the tag's frequency in the queue / its (smoothed) corpus frequency."""
    pos_selectivity_ptb_tag: str | None = None


@dataclass
class ClusterInfo:
    """The unit's k-means cluster (analysis step) and how that cluster's units spread over layers."""

    direction: str
    """The queue whose unit vector was clustered."""
    cluster: int
    size: int
    """Units in the cluster."""
    layer_counts: dict[str, int]
    """Units of the cluster per layer (keys are layer numbers as strings, for JSON)."""
    matched_layer: int | None = None
    """The layer the Hungarian matching pairs with the cluster (-1: none; None: not recorded)."""


@dataclass
class RankingEntry:
    """The unit's position in a ranking of all units by a metric (analysis step, layer_rankings)."""

    direction: str
    metric: str
    """E.g. pos_selectivity, sentiment_std."""
    layer: int
    value: float | None
    rank: int | None
    """1 = highest value among all ranked units of this direction and metric."""
    percentile: float | None
    """100 for the first, 0 for the last."""
    n_ranked: int | None = None
    """Units ranked (units with no value are left out)."""
    layer_rank: int | None = None
    """Rank among the ranked units of the same layer."""
    layer_n: int | None = None
    """Ranked units of the same layer."""


@dataclass
class Placement:
    """The unit's place in the model."""

    layer_units: int
    """Units in the unit's site and layer."""
    clusters: list[ClusterInfo] = field(default_factory=list)
    rankings: list[RankingEntry] = field(default_factory=list)
    analysis_available: bool = False
    """False when `miner analyze` has not written unit_clusters / layer_rankings yet."""


@dataclass
class ActivationInfo:
    """How the token activations of a unit report were obtained."""

    computed: bool
    device: str | None = None
    max_abs: float | None = None
    """Largest |activation| over every shown token: the colour scale's end."""
    max_score_diff: float | None = None
    """Largest |recomputed score - stored score| over the shown sentences."""
    seconds: float | None = None
    note: str | None = None


@dataclass
class Exemplar:
    """One exemplar sentence of a band (unit_exemplars joined with the sample's text)."""

    rank: int
    sentence_id: int
    score: float
    quantile: float
    text: str | None


@dataclass
class ExemplarBand:
    band: str
    sentences: list[Exemplar]


@dataclass
class UnitDistribution:
    """The unit's score distribution over the mined corpus and its exemplars across the range."""

    sentences: int
    quantiles: list[tuple[str, float | None]]
    """(label, value): "0.1%" ... "99.9%" from unit_distribution."""
    mean: float | None
    std: float | None
    top_kept_share: float | None
    bands: list[ExemplarBand]


@dataclass
class UnitReport:
    """Everything a unit page shows."""

    run: RunInfo
    unit: UnitRef
    directions: list[DirectionSignature]
    placement: Placement
    activations: ActivationInfo
    generated_at: str
    code_version: str
    probes: list[UnitProbeRank] | None = None
    """Ranks in every all-layer probe's rankings; None when the run has no probe tables (no section, no key)."""
    causal: UnitCausal | None = None
    """Redundancy cluster, matches in other runs, output tokens, ablations; None without any of their tables."""
    distribution: UnitDistribution | None = None
    """Score quantiles and exemplars across the range; None for runs mined before they were kept."""
    scores: UnitScores | None = None
    """Explanation scores on the held-out split and the unit's formula; None for runs scored without them."""

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": "unit", **asdict(self), "label": self.unit.label}
        for key in ("probes", "causal", "distribution", "scores"):
            if getattr(self, key) is None:
                del out[key]
        return out


@dataclass
class UnitIndexRow:
    """One unit in the overview's browsable index (summary of its top queue)."""

    unit_id: int
    site: str
    layer: int
    idx: int
    dominant_domain: str | None
    dominant_domain_share: float | None
    sentiment_mean: float | None
    sentiment_std: float | None
    pos_selectivity: float | None
    pos_selectivity_tag: str | None
    noun_rel: float | None
    verb_rel: float | None
    adj_rel: float | None
    avg_length: float | None
    top_words: list[str]
    """The 5 words of highest rel_freq."""
    cluster: int | None = None


@dataclass
class LayerSummary:
    """Per site and layer: unit count and the means of a few unit statistics (top queues)."""

    site: str
    layer: int
    units: int
    mean_pos_selectivity: float | None
    mean_sentiment_std: float | None
    mean_avg_length: float | None
    top_domains: dict[str, int]
    """Units whose dominant domain is each value, most frequent first."""


@dataclass
class ModelReport:
    """Everything the model overview shows."""

    run: RunInfo
    analysis: dict[str, Any] | None
    """manifest.json "analysis" (clustering accuracy, ...) or None before `miner analyze`."""
    missing: list[str]
    """Sections that need a step not yet run, as one line each."""
    plots: list[Plot]
    layers: list[LayerSummary]
    units: list[UnitIndexRow]
    convergence: dict[str, Any] | None
    """Final update rates per direction and the sentences mined when 96% of entries were fixed."""
    timings: dict[str, Any]
    generated_at: str
    code_version: str
    probing: list[ConceptProbing] | None = None
    """One entry per probed concept; None when the run has no probe tables (no section, no key)."""
    causal: ModelCausal | None = None
    """Per-layer redundancy, matches with other runs, ablation effects; None without any of their tables."""
    scores: ModelScores | None = None
    """Explanation scores per layer, best- and worst-explained units; None for runs scored without them."""

    def all_plots(self) -> list[Plot]:
        """The overview's plots and every concept's probing plots."""
        return self.plots + [p for c in self.probing or [] for p in c.plots]

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": "model", **asdict(self)}
        if self.probing is None:
            del out["probing"]
        if self.causal is None:
            del out["causal"]
        if self.scores is None:
            del out["scores"]
        for plot in out["plots"] + [p for c in out.get("probing") or [] for p in c["plots"]]:
            del plot["svg"]
        return out


__all__ = [
    "ActivationInfo", "ClusterInfo", "ConceptProbing", "DirectionSignature", "LayerProbe", "LayerSummary",
    "MetadataField", "MetadataValue", "MinimalSubset", "ModelReport", "PatternRow", "Placement", "Plot", "PosRatio",
    "RankingEntry", "RunInfo", "SentenceEntry", "SubsetEvaluation", "SubsetLayerCount", "TokenActivation",
    "TypicalSentence", "UnitIndexRow", "UnitProbeRank", "UnitRef", "UnitReport", "WordActivation",
]
