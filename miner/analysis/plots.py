"""The one matplotlib renderer of the analysis data, and the names of the SVG files it writes.

`miner analyze`, `miner compare` and `miner report` all draw with it. Each `*_figure` function takes Arrow
tables or plain dicts and returns a matplotlib `Figure` of its own (its object API, never pyplot's global
state, so no GUI backend is touched); `svg_text` renders one to SVG text and `save_figure` writes it to a
file through miner.atomic (a failed write names the file); `plot_*` do both and return the path. Output
is reproducible: fixed SVG id salt, no date in the metadata, text kept as text. matplotlib is imported
when something is drawn, so the file names (`svg_name`, `svg_kind`) cost nothing to import.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from miner.atomic import write_with

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PlotKind = Literal["unit_map", "convergence", "layer_boxes"]
PLOT_KINDS: tuple[PlotKind, ...] = ("unit_map", "convergence", "layer_boxes")
DIRECTIONS = ("top", "bottom")
Curves = Mapping[str, Mapping[str, Mapping[str, list]]]

# Any: matplotlib's stubs type rc_context's keys as a Literal of every rc name.
_RC: Any = {"svg.hashsalt": "neuron-miner", "svg.fonttype": "none", "font.size": 9}


METRIC_LABELS = {
    "pos_selectivity": "POS selectivity (max rel. freq. of noun / verb / adj)",
    "pos_selectivity_ptb": "POS selectivity over PTB tags (max rel. freq.)",
    "sentiment_std": "sentiment std (binary polarity, neutral left out; lower = more selective)",
    "sentiment_std_3way": "sentiment std (three-way polarity, neutral = 0)",
}
"""Axis labels of the metrics the paper's figures 3-5 draw and their variants; other metrics: the column name."""


def metric_label(metric: str) -> str:
    """The y-axis label of a box plot of a unit_stats metric.

    >>> metric_label("sentiment_std"), metric_label("avg_length")
    ('sentiment std (binary polarity, neutral left out; lower = more selective)', 'avg_length')
    """
    return METRIC_LABELS.get(metric, metric)


class PlotName(NamedTuple):
    """What an analysis SVG shows, read back from its file name by `svg_kind`."""

    kind: PlotKind
    metric: str | None = None
    direction: str | None = None


def svg_name(kind: PlotKind, metric: str | None = None, direction: str | None = None) -> str:
    """The file name of an analysis plot; `svg_kind` reads it back.

    >>> svg_name("unit_map", direction="top"), svg_name("convergence")
    ('unit_map_top.svg', 'convergence.svg')
    >>> svg_name("layer_boxes", "pos_selectivity", "bottom")
    'layer_boxes_pos_selectivity_bottom.svg'
    """
    if kind == "unit_map" and direction:
        return f"unit_map_{direction}.svg"
    if kind == "layer_boxes" and metric and direction:
        return f"layer_boxes_{metric}_{direction}.svg"
    if kind == "convergence":
        return "convergence.svg"
    raise ValueError(f"no plot file name for {kind!r} (metric {metric!r}, direction {direction!r})")


def svg_kind(name: str) -> PlotName | None:
    """The plot a file name made by `svg_name` stands for; None for any other name.

    >>> svg_kind("layer_boxes_pos_selectivity_top.svg")
    PlotName(kind='layer_boxes', metric='pos_selectivity', direction='top')
    >>> svg_kind("unit_map_bottom.svg"), svg_kind("convergence.svg").kind, svg_kind("tsne_map.svg")
    (PlotName(kind='unit_map', metric=None, direction='bottom'), 'convergence', None)
    """
    stem = name.removesuffix(".svg")
    if stem == name:
        return None
    if stem == "convergence":
        return PlotName("convergence")
    head, _, direction = stem.rpartition("_")
    if direction not in DIRECTIONS:
        return None
    if head == "unit_map":
        return PlotName("unit_map", None, direction)
    metric = head.removeprefix("layer_boxes_")
    if metric != head and metric:
        return PlotName("layer_boxes", metric, direction)
    return None


def convergence_series(table: pa.Table) -> dict[str, dict[str, list]]:
    """Convergence rows (direction, sentences_seen, update_rate, in plotting order) as one run's curves.

    >>> rows = pa.table({"direction": ["top", "top"], "sentences_seen": [10, 20], "update_rate": [0.5, 0.25]})
    >>> convergence_series(rows)
    {'top': {'sentences_seen': [10, 20], 'update_rate': [0.5, 0.25]}}
    """
    out: dict[str, dict[str, list]] = {}
    for row in table.select(["direction", "sentences_seen", "update_rate"]).to_pylist():
        curve = out.setdefault(row["direction"], {"sentences_seen": [], "update_rate": []})
        curve["sentences_seen"].append(int(row["sentences_seen"]))
        curve["update_rate"].append(float(row["update_rate"]))
    return out


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a drawing function under the module's fixed style (rcParams are read at draw and save time)."""
    @functools.wraps(draw)
    def wrapper(*args: object, **kwargs: object) -> Figure:
        import matplotlib

        with matplotlib.rc_context(_RC):
            return draw(*args, **kwargs)
    return wrapper


def _savefig(fig: Figure, target: Path | IO[str], fmt: str) -> None:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig.savefig(target, format=fmt, metadata={"Date": None} if fmt == "svg" else None, bbox_inches="tight")


def svg_text(fig: Figure) -> str:
    """A figure as SVG text."""
    buf = io.StringIO()
    _savefig(fig, buf, "svg")
    return buf.getvalue()


def save_figure(fig: Figure, out: Path) -> Path:
    """Write a figure to `out` (format from the suffix, SVG without one) through miner.atomic; returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lstrip(".").lower() or "svg"
    write_with(out, lambda tmp: _savefig(fig, tmp, fmt))
    return out


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _layer_colours(layers: list[int]) -> dict[int, tuple]:
    """One colour per layer from a sequential map (early layers light-purple, late layers yellow)."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    n = max(len(layers) - 1, 1)
    return {layer: cmap(i / n) for i, layer in enumerate(sorted(layers))}


@styled
def unit_map_figure(unit_map: pa.Table, direction: str = "top", title: str | None = None) -> Figure:
    """Scatter of the t-SNE map (unit_map rows of one direction), coloured by layer, with a legend."""
    import numpy as np

    rows = unit_map.filter(pc.equal(unit_map["direction"], direction))
    x, y = rows["x"].to_numpy(), rows["y"].to_numpy()
    layer = rows["layer"].to_numpy()
    colours = _layer_colours(np.unique(layer).tolist())
    fig = _new_figure(6.4, 5.6)
    ax = fig.subplots()
    for value, colour in colours.items():
        sel = layer == value
        ax.scatter(x[sel], y[sel], s=5, color=colour, alpha=0.75, linewidths=0, label=f"layer {value}")
    ax.set_title(title or f"Units by t-SNE of their {direction} sentences' mean fastText vector ({len(x):,} units)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", markerscale=3, frameon=False, fontsize=8)
    return fig


@styled
def layer_boxes_figure(distribution: pa.Table | Mapping[str, pa.Table], metric: str,
                       direction: str | None = "top") -> Figure:
    """Box per layer from layer_distribution rows (whiskers = min and max, a dot at the mean).

    `distribution` is one run's table, or {run label: table} for runs side by side (one colour per run);
    direction None takes the metric's rows of a table without a direction column.
    """
    import matplotlib

    runs = {"": distribution} if isinstance(distribution, pa.Table) else dict(distribution)
    fig = _new_figure(6.4, 4.0)
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    width = 0.8 / len(runs)
    layers_seen: set[int] = set()
    handles = []
    for i, (label, table) in enumerate(runs.items()):
        mask = pc.equal(table["metric"], metric)
        if direction is not None:
            mask = pc.and_(mask, pc.equal(table["direction"], direction))
        rows = table.filter(mask).sort_by("layer").to_pylist()
        stats = [{"med": r["median"], "q1": r["q1"], "q3": r["q3"], "whislo": r["min"], "whishi": r["max"],
                  "mean": r["mean"], "label": str(r["layer"])} for r in rows]
        if not stats:
            continue
        layers_seen.update(r["layer"] for r in rows)
        positions = [r["layer"] + (i - (len(runs) - 1) / 2) * width for r in rows]
        colour = palette(i % 10)
        art = ax.bxp(stats, positions=positions, widths=width * 0.9, showmeans=True, showfliers=False,
                     patch_artist=True, manage_ticks=False,
                     boxprops={"facecolor": colour, "alpha": 0.55}, medianprops={"color": "black"},
                     meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black",
                                "markersize": 3})
        if label:
            handles.append((art["boxes"][0], label))
    ticks = sorted(layers_seen)
    fig.set_size_inches(max(6.4, 1.5 + 0.35 * len(runs) * len(ticks)), 4.0)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("layer")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{metric} of units per layer ({direction} sentences)" if direction else
                 f"{metric} of units per layer")
    if handles:
        ax.legend([h for h, _ in handles], [lab for _, lab in handles], frameon=False, fontsize=8)
    return fig


@styled
def convergence_figure(curves: Curves, log_y: bool = False) -> Figure:
    """Update rate vs sentences seen, one line per run and direction.

    `curves` is {run label: {direction: {"sentences_seen": [...], "update_rate": [...]}}}, as made by
    convergence_series, miner.analysis.stage.convergence_curves and compare_runs.
    """
    import matplotlib

    fig = _new_figure(6.4, 4.0)
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    styles = {"top": "-", "bottom": "--"}
    for i, (label, by_direction) in enumerate(curves.items()):
        for direction, curve in by_direction.items():
            name = f"{label} · {direction}" if len(curves) > 1 else direction
            ax.plot(curve["sentences_seen"], curve["update_rate"], styles.get(direction, ":"), color=palette(i % 10),
                    marker=".", markersize=4, label=name)
    ax.set_xlabel("sentences seen")
    ax.set_ylabel("queue entries changed per block / entries")
    if log_y:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.02)
    ax.set_title("Convergence of the top-N / bottom-N queues")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_unit_map(unit_map: pa.Table, out: Path, direction: str = "top", title: str | None = None) -> Path:
    """unit_map_figure written to `out`; returns `out`."""
    return save_figure(unit_map_figure(unit_map, direction, title), out)


def plot_layer_boxes(distribution: pa.Table | Mapping[str, pa.Table], metric: str, out: Path,
                     direction: str | None = "top") -> Path:
    """layer_boxes_figure written to `out`; returns `out`."""
    return save_figure(layer_boxes_figure(distribution, metric, direction), out)


def plot_convergence(curves: Curves, out: Path, log_y: bool = False) -> Path:
    """convergence_figure written to `out`; returns `out`."""
    return save_figure(convergence_figure(curves, log_y), out)
