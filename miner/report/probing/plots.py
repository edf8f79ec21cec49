"""The overview's probing plots, drawn from a concept's probe record with the analysis plots' renderer.

Two plots per concept: the test accuracy of the per-layer probes (one line per site, with the all-layer
probe and the majority baseline as horizontal lines), and how the minimal-subset units of each ranking
spread over layers (grouped bars, one colour per ranking). Figures use matplotlib's object API under the
style of miner.analysis.plots and are rendered to SVG text by its `svg_text`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from miner.analysis.plots import styled, svg_text
from miner.report.figure import Plot
from miner.report.probing.records import ConceptProbing, LayerProbe, SubsetLayerCount

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

LAYER_CAPTION = ("Test accuracy of a probe trained on the units of one layer; dashed: the all-layer probe, "
                 "dotted: the majority baseline.")
SUBSET_CAPTION = ("Units of each ranking's minimal subset (fewest top-ranked units keeping the target share of the "
                  "full probe's dev accuracy) per layer.")


def _slug(text: str) -> str:
    """A safe file stem.

    >>> _slug("pos tags/x")
    'pos_tags_x'
    """
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60] or "concept"


def layer_slots(rows: list[SubsetLayerCount] | list[LayerProbe]) -> list[tuple[str, int]]:
    """The (site, layer) pairs of rows in plotting order: hidden before mlp, then by layer.

    >>> layer_slots([LayerProbe("p", "mlp", 1, 4, None, None, None), LayerProbe("q", "hidden", 2, 4, None, None, None)])
    [('hidden', 2), ('mlp', 1)]
    """
    return sorted({(r.site, r.layer) for r in rows}, key=lambda sl: (sl[0] != "hidden", sl[0], sl[1]))


def _slot_label(site: str, layer: int, sites: set[str]) -> str:
    return str(layer) if len(sites) == 1 else f"{site}:{layer}"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


@styled
def layer_accuracy_figure(concept: ConceptProbing) -> Figure:
    """Per-layer probe test accuracy, one line per site, with the all-layer probe and majority as lines."""
    import matplotlib

    fig = _new_figure(6.4, 4.0)
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    sites = sorted({r.site for r in concept.layers}, key=lambda s: (s != "hidden", s))
    for i, site in enumerate(sites):
        rows = sorted((r for r in concept.layers if r.site == site), key=lambda r: r.layer)
        ax.plot([r.layer for r in rows], [r.test_accuracy if r.test_accuracy is not None else float("nan")
                                          for r in rows], "-", marker="o", markersize=4, color=palette(i % 10),
                label=f"{site} layer probe")
    if concept.test_accuracy is not None:
        ax.axhline(concept.test_accuracy, linestyle="--", color="black", linewidth=1, label="all-layer probe")
    if concept.majority_accuracy is not None:
        ax.axhline(concept.majority_accuracy, linestyle=":", color="grey", linewidth=1, label="majority baseline")
    layers = sorted({r.layer for r in concept.layers})
    ax.set_xticks(layers, [str(layer) for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{concept.concept}: probe accuracy per layer ({concept.classes} classes)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return fig


@styled
def subset_layers_figure(concept: ConceptProbing) -> Figure:
    """Grouped bars: minimal-subset units per site and layer, one colour per ranking."""
    import matplotlib

    slots = layer_slots(concept.subset_layers)
    sites = {s for s, _ in slots}
    rankings = list(dict.fromkeys(r.ranking for r in concept.subset_layers))
    sizes = {s.ranking: s.units for s in concept.subsets}
    fig = _new_figure(max(6.4, 1.5 + 0.3 * len(rankings) * len(slots)), 4.0)
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    width = 0.8 / max(len(rankings), 1)
    for i, ranking in enumerate(rankings):
        counts = {(r.site, r.layer): r.count for r in concept.subset_layers if r.ranking == ranking}
        xs = [j + (i - (len(rankings) - 1) / 2) * width for j in range(len(slots))]
        ax.bar(xs, [counts.get(slot, 0) for slot in slots], width * 0.95, color=palette(i % 10),
               label=f"{ranking} ({sizes.get(ranking, 0)} units)")
    ax.set_xticks(range(len(slots)), [_slot_label(s, layer, sites) for s, layer in slots])
    ax.set_xlabel("layer")
    ax.set_ylabel("units in the minimal subset")
    ax.set_title(f"{concept.concept}: where the minimal-subset units lie")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(frameon=False, fontsize=8)
    return fig


def concept_plots(concept: ConceptProbing) -> list[Plot]:
    """The concept's plots (those with data); none when matplotlib is missing."""
    try:
        plots = []
        if concept.layers:
            plots.append(Plot(f"probe-layers-{_slug(concept.concept)}", f"{concept.concept}: accuracy per layer",
                              LAYER_CAPTION, "report", svg_text(layer_accuracy_figure(concept))))
        if concept.subset_layers:
            plots.append(Plot(f"probe-subset-{_slug(concept.concept)}",
                              f"{concept.concept}: minimal-subset units per layer", SUBSET_CAPTION, "report",
                              svg_text(subset_layers_figure(concept))))
    except ImportError:
        log.warning("probing plots left out: matplotlib is not installed")
        return []
    return plots


__all__ = ["concept_plots", "layer_accuracy_figure", "layer_slots", "subset_layers_figure"]
