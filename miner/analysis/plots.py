"""SVG plots of the analysis data (rendering only; miner.analysis.stage makes the data).

Each function takes Arrow tables or plain dicts, draws with matplotlib's object API (a `Figure` of its own, never
pyplot's global state, so no GUI backend is touched; SVG is rendered by matplotlib's SVG backend, raster by
Agg), writes the file atomically (temporary name, then os.replace), and returns its path. Output is
reproducible: fixed SVG id salt, no date in the metadata, text kept as text.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure

_RC = {"svg.hashsalt": "neuron-miner", "svg.fonttype": "none", "font.size": 9}


def _styled(draw: Callable[..., Path]) -> Callable[..., Path]:
    """Run a plotting function under the module's fixed style (rcParams are read at draw and save time)."""
    @functools.wraps(draw)
    def wrapper(*args: object, **kwargs: object) -> Path:
        with matplotlib.rc_context(_RC):
            return draw(*args, **kwargs)
    return wrapper


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    try:
        fmt = out.suffix.lstrip(".").lower() or "svg"
        fig.savefig(tmp, format=fmt, metadata={"Date": None} if fmt == "svg" else None, bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _layer_colours(layers: list[int]) -> dict[int, tuple]:
    """One colour per layer from a sequential map (early layers light-purple, late layers yellow)."""
    cmap = matplotlib.colormaps["viridis"]
    n = max(len(layers) - 1, 1)
    return {layer: cmap(i / n) for i, layer in enumerate(sorted(layers))}


@_styled
def plot_unit_map(unit_map: pa.Table, out: Path, direction: str = "top", title: str | None = None) -> Path:
    """Scatter of the t-SNE map (unit_map rows of one direction), coloured by layer, with a legend."""
    rows = unit_map.filter(pc.equal(unit_map["direction"], direction))
    x, y = rows["x"].to_numpy(), rows["y"].to_numpy()
    layer = rows["layer"].to_numpy()
    colours = _layer_colours(np.unique(layer).tolist())
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    for value, colour in colours.items():
        sel = layer == value
        ax.scatter(x[sel], y[sel], s=5, color=colour, alpha=0.75, linewidths=0, label=f"layer {value}")
    ax.set_title(title or f"Units by t-SNE of their {direction} sentences' mean fastText vector ({len(x):,} units)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", markerscale=3, frameon=False, fontsize=8)
    return _save(fig, out)


@_styled
def plot_layer_boxes(distribution: pa.Table | Mapping[str, pa.Table], metric: str, out: Path,
                     direction: str = "top") -> Path:
    """Box per layer from layer_distribution rows (whiskers = min and max, a dot at the mean).

    `distribution` is one run's table, or {run label: table} for runs side by side (one colour per run).
    """
    runs = {"": distribution} if isinstance(distribution, pa.Table) else dict(distribution)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    width = 0.8 / len(runs)
    layers_seen: set[int] = set()
    handles = []
    for i, (label, table) in enumerate(runs.items()):
        mask = pc.and_(pc.equal(table["metric"], metric), pc.equal(table["direction"], direction))
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
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of units per layer ({direction} sentences)")
    if handles:
        ax.legend([h for h, _ in handles], [lab for _, lab in handles], frameon=False, fontsize=8)
    return _save(fig, out)


@_styled
def plot_convergence(curves: Mapping[str, Mapping[str, Mapping[str, list]]], out: Path, log_y: bool = False) -> Path:
    """Update rate vs sentences seen, one line per run and direction.

    `curves` is {run label: {direction: {"sentences_seen": [...], "update_rate": [...]}}}, as made by
    miner.analysis.stage.convergence_curves / compare_runs.
    """
    fig = Figure(figsize=(6.4, 4.0))
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
    return _save(fig, out)
