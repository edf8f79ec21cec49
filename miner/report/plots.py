"""The overview's plots: the SVGs `miner analyze` wrote, else the same drawings made from the catalog tables.

Sources, in order: the analysis SVGs (named by miner.analysis.plots.svg_name: those the manifest's "analysis"
entry lists, else those under the run folder, report folders excluded), then miner.analysis.plots' drawings
of the catalog tables (unit_map, convergence, layer_distribution). A plot whose data is missing becomes a
one-line note ("run `miner analyze` first") instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from miner.analysis.plots import (
    PLOT_KINDS,
    PlotKind,
    PlotName,
    convergence_figure,
    convergence_series,
    layer_boxes_figure,
    svg_kind,
    svg_text,
    unit_map_figure,
)
from miner.report.records import Plot

log = logging.getLogger(__name__)

_SKIP_DIRS = {"reports", "checkpoint", "assets"}
_TITLES: dict[PlotKind, tuple[str, str]] = {
    "unit_map": ("Unit map", ("Every unit's vector (mean fastText vector of its top sentences), projected to 2-D; "
                              "colour = layer.")),
    "convergence": ("Convergence", ("Share of queue entries that changed per block of sentences fed; "
                                    "a flat line near zero means more data would change little.")),
    "layer_boxes": ("Rankings by layer", ("Distribution of each layer's units (box: quartiles, whiskers: min-max, "
                                          "dot: mean).")),
}
_TABLES: dict[PlotKind, str] = {"unit_map": "unit_map", "layer_boxes": "layer_distribution",
                                "convergence": "convergence"}


def analysis_svgs(run_dir: Path, listed: list[str] | None = None) -> dict[PlotKind, list[Path]]:
    """SVG files written into the run folder by the analysis step, by plot kind: the files the manifest's
    "analysis" entry lists (in its order), else every SVG under the run folder (report folders excluded);
    a file whose name miner.analysis.plots.svg_kind does not know is left out.

    Example: RUN/plots/unit_map_top.svg, RUN/plots/layer_boxes_pos_selectivity_top.svg -> {"unit_map":
    [...unit_map_top.svg], "convergence": [], "layer_boxes": [...layer_boxes_pos_selectivity_top.svg]}
    """
    run_dir = Path(run_dir)
    if listed:
        paths = [run_dir / p for p in listed if str(p).endswith(".svg") and (run_dir / p).is_file()]
    else:
        paths = [p for p in sorted(run_dir.rglob("*.svg"))
                 if not any(part in _SKIP_DIRS for part in p.relative_to(run_dir).parts[:-1])]
    found: dict[PlotKind, list[Path]] = {k: [] for k in PLOT_KINDS}
    for path in paths:
        name = svg_kind(path.name)
        if name is not None:
            found[name.kind].append(path)
    return found


def plot_title(kind: PlotKind, metric: str | None = None, direction: str | None = None) -> str:
    """A plot's title from what it shows.

    >>> plot_title("layer_boxes", "pos_selectivity", "top"), plot_title("unit_map", direction="top")
    ('Rankings by layer: pos selectivity (top)', 'Unit map (top)')
    """
    base = _TITLES[kind][0]
    title = f"{base}: {metric.replace('_', ' ')}" if metric else base
    return f"{title} ({direction})" if direction else title


def _drawn(kind: PlotKind, con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """(name, title, svg) of the plots of one kind drawn from the tables by miner.analysis.plots."""
    title = _TITLES[kind][0]
    if kind == "unit_map":
        rows = con.sql("SELECT unit_id, direction, x, y, layer FROM unit_map WHERE direction = 'top' "
                       "ORDER BY layer, unit_id").to_arrow_table()
        return [(kind, title, svg_text(unit_map_figure(rows, "top")))]
    if kind == "convergence":
        rows = con.sql("SELECT direction, sentences_seen, update_rate FROM convergence WHERE site = 'all' "
                       "ORDER BY direction DESC, block").to_arrow_table()
        curves = {"": convergence_series(rows)}
        return [(kind, title, svg_text(convergence_figure(curves)))]
    table = con.sql("SELECT * FROM layer_distribution").to_arrow_table()
    if "direction" not in table.column_names:
        metrics = sorted(set(table["metric"].to_pylist()))
        return [(f"{kind}-{_slug(m)}", plot_title(kind, m), svg_text(layer_boxes_figure(table, m, None)))
                for m in metrics]
    pairs = sorted(set(zip(table["direction"].to_pylist(), table["metric"].to_pylist())),
                   key=lambda dm: (dm[0] != "top", dm[0], dm[1]))
    return [(f"{kind}-{_slug(m)}-{d}", plot_title(kind, m, d), svg_text(layer_boxes_figure(table, m, d)))
            for d, m in pairs]


def _slug(text: str) -> str:
    """A safe file stem.

    >>> _slug("pos selectivity/x")
    'pos_selectivity_x'
    """
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60] or "plot"


def overview_plots(run_dir: Path, con: duckdb.DuckDBPyConnection, views: set[str],
                   listed: list[str] | None = None) -> tuple[list[Plot], list[str]]:
    """The overview's plots and a note for each plot that cannot be shown yet. `listed`: the SVG paths
    (relative to the run folder) that the manifest's "analysis" entry names."""
    plots, missing = [], []
    found = analysis_svgs(run_dir, listed)
    for kind, (title, caption) in _TITLES.items():
        if found[kind]:
            for path in found[kind]:
                shows = svg_kind(path.name) or PlotName(kind)
                plots.append(Plot(_slug(path.stem), plot_title(*shows), caption, "analysis",
                                  path.read_text(encoding="utf-8")))
            continue
        if _TABLES[kind] not in views:
            step = "`miner mine`" if kind == "convergence" else "`miner analyze`"
            missing.append(f"{title.lower()}: run {step} first (no {_TABLES[kind]} table)")
            continue
        try:
            drawn = _drawn(kind, con)
        except ImportError:
            missing.append(f"{title.lower()}: needs matplotlib (pip install matplotlib)")
            continue
        plots += [Plot(name, drawn_title, caption, "report", svg) for name, drawn_title, svg in drawn]
    plots += ablation_plots(run_dir)
    return plots, missing


def ablation_plots(run_dir: Path) -> list[Plot]:
    """The ablation curves `miner ablate` wrote (RUN/plots/ablation_curve_<metric>.svg), in name order."""
    caption = ("Effect versus the number of ablated units: the top, a seeded random and the bottom units of the "
               "curve's ranking (dashed: the clean model); table ablation_effects, set_name = 'curve'.")
    return [Plot(_slug(p.stem), f"Ablation curve: {p.stem.removeprefix('ablation_curve_').replace('_', ' ')}",
                 caption, "ablate", p.read_text(encoding="utf-8"))
            for p in sorted((Path(run_dir) / "plots").glob("ablation_curve_*.svg"))]
