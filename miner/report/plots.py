"""The overview's plots: SVGs written by `miner analyze` when present, else drawn here from the tables.

Sources, in order: an SVG under the run folder whose name says what it shows (`*map*`, `*box*` /
`*distribution*`, `*convergence*`; report folders excluded), then a plain matplotlib drawing from the catalog
tables (unit_map, layer_distribution, convergence). A plot whose data is missing becomes a one-line note
("run `miner analyze` first") instead.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import duckdb

from miner.report.records import Plot

log = logging.getLogger(__name__)

_KEYWORDS = {
    "unit_map": ("map", "tsne", "umap"),
    "convergence": ("convergence",),
    "layer_boxes": ("box", "distribution"),
}
_SKIP_DIRS = {"reports", "checkpoint", "assets"}
_RC = {"svg.fonttype": "none", "svg.hashsalt": "neuron-miner", "font.size": 9,
       "font.family": ["DejaVu Sans", "sans-serif"], "axes.spines.top": False, "axes.spines.right": False}


def analysis_svgs(run_dir: Path, listed: list[str] | None = None) -> dict[str, list[Path]]:
    """SVG files written into the run folder by the analysis step, by plot kind: the files the manifest's
    "analysis" entry lists (in its order), else every SVG under the run folder (report folders excluded).

    Example: RUN/plots/unit_map_top.svg, RUN/plots/layer_boxes_pos_selectivity_top.svg -> {"unit_map":
    [...unit_map_top.svg], "convergence": [], "layer_boxes": [...layer_boxes_pos_selectivity_top.svg]}
    """
    run_dir = Path(run_dir)
    if listed:
        paths = [run_dir / p for p in listed if str(p).endswith(".svg") and (run_dir / p).is_file()]
    else:
        paths = [p for p in sorted(run_dir.rglob("*.svg"))
                 if not any(part in _SKIP_DIRS for part in p.relative_to(run_dir).parts[:-1])]
    found: dict[str, list[Path]] = {k: [] for k in _KEYWORDS}
    for path in paths:
        name = path.stem.lower()
        for kind, words in _KEYWORDS.items():
            if any(w in name for w in words):
                found[kind].append(path)
                break
    return found


def analysis_title(kind: str, stem: str) -> str:
    """A plot's title from its kind and file stem.

    Example: ("layer_boxes", "layer_boxes_pos_selectivity_top") -> "Rankings by layer: pos selectivity (top)";
    ("unit_map", "unit_map_top") -> "Unit map (top)".
    """
    base = _TITLES[kind][0]
    rest = stem.lower()
    for prefix in ("layer_boxes", "unit_map", "convergence", "boxes", "box", "map"):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    words = [w for w in rest.replace("-", "_").split("_") if w]
    direction = words.pop() if words and words[-1] in ("top", "bottom") else None
    detail = " ".join(words)
    title = f"{base}: {detail}" if detail else base
    return f"{title} ({direction})" if direction else title


def _svg(fig: object) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "neuron-miner"}, bbox_inches="tight")
    return buf.getvalue()


def _figure(width: float, height: float) -> object:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), dpi=100)


def convergence_svg(con: duckdb.DuckDBPyConnection) -> str:
    """Share of queue entries that changed per block of sentences (overall per direction, per layer thin)."""
    import matplotlib

    rows = con.execute("""SELECT direction, site, layer, sentences_seen, update_rate FROM convergence
                          ORDER BY direction DESC, site, layer, sentences_seen""").fetchall()
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 3.4)
        ax = fig.subplots()
        series: dict[tuple, tuple[list, list]] = {}
        for d, site, layer, seen, rate in rows:
            xs, ys = series.setdefault((d, site, layer), ([], []))
            xs.append(seen)
            ys.append(max(rate, 1e-6))
        styles = {"top": {"color": "#c0392b", "ls": "-", "lw": 2.4, "marker": "o"},
                  "bottom": {"color": "#2c6fbb", "ls": "--", "lw": 1.6, "marker": "s"}}
        labelled = False
        for (d, site, layer), (xs, ys) in series.items():
            if site == "all":
                ax.plot(xs, ys, ms=3.5, label=f"all units, {d}", zorder=3, **styles.get(d, {}))
            elif d == "top":
                ax.plot(xs, ys, color="#9aa1a9", lw=0.8, alpha=0.8, zorder=1,
                        label=None if labelled else "single layers, top")
                labelled = True
        ax.axhline(0.04, color="#555555", ls="--", lw=0.8)
        ax.text(ax.get_xlim()[0], 0.04, " 96% of entries fixed", va="bottom", fontsize=8, color="#555555")
        ax.set_yscale("log")
        ax.set_xlabel("sentences mined")
        ax.set_ylabel("queue entries changed in the block (share)")
        ax.grid(True, which="major", alpha=0.25)
        ax.legend(frameon=False, fontsize=8)
        return _svg(fig)


def unit_map_svg(con: duckdb.DuckDBPyConnection, direction: str = "top") -> str:
    """2-D map of the unit vectors (unit_map table), one colour per layer."""
    import matplotlib

    rows = con.execute("SELECT x, y, layer FROM unit_map WHERE direction = ? ORDER BY layer, unit_id",
                       [direction]).fetchall()
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 5.2)
        ax = fig.subplots()
        layers = sorted({r[2] for r in rows})
        cmap = matplotlib.colormaps["viridis"]
        for i, layer in enumerate(layers):
            pts = [r for r in rows if r[2] == layer]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=5, alpha=0.75, lw=0,
                       color=cmap(i / max(1, len(layers) - 1)), label=f"layer {layer}")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.legend(frameon=False, fontsize=8, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _svg(fig)


def layer_boxes_svg(con: duckdb.DuckDBPyConnection, metric: str, direction: str | None = None) -> str:
    """One metric's distribution over each layer's units (layer_distribution: min/q1/median/q3/max, mean)."""
    import matplotlib

    where, params = "metric = ?", [metric]
    if direction is not None:
        where, params = where + " AND direction = ?", [metric, direction]
    rows = con.execute(f"""SELECT layer, min, q1, median, q3, max, mean FROM layer_distribution WHERE {where}
                           ORDER BY layer""", params).fetchall()
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 3.4)
        ax = fig.subplots()
        stats = [{"label": str(r[0]), "whislo": r[1], "q1": r[2], "med": r[3], "q3": r[4], "whishi": r[5],
                  "mean": r[6], "fliers": []} for r in rows]
        ax.bxp(stats, showmeans=True, patch_artist=True, widths=0.55,
               boxprops={"facecolor": "#f3d9d5", "edgecolor": "#c0392b"}, medianprops={"color": "#c0392b"},
               whiskerprops={"color": "#555555"}, capprops={"color": "#555555"},
               meanprops={"marker": "D", "markerfacecolor": "#2c6fbb", "markeredgecolor": "none", "markersize": 4})
        ax.set_xlabel("layer")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(True, axis="y", alpha=0.25)
        return _svg(fig)


_TITLES = {
    "unit_map": ("Unit map", ("Every unit's vector (mean fastText vector of its top sentences), projected to 2-D; "
                              "colour = layer.")),
    "convergence": ("Convergence", ("Share of queue entries that changed per block of sentences fed; "
                                    "a flat line near zero means more data would change little.")),
    "layer_boxes": ("Rankings by layer", ("Distribution of each layer's units (box: quartiles, whiskers: min-max, "
                                          "diamond: mean).")),
}
_TABLES = {"unit_map": "unit_map", "layer_boxes": "layer_distribution", "convergence": "convergence"}


def _drawn(kind: str, con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """(name, title, svg) of the plots of one kind drawn from the tables."""
    title = _TITLES[kind][0]
    if kind == "unit_map":
        return [(kind, title, unit_map_svg(con))]
    if kind == "convergence":
        return [(kind, title, convergence_svg(con))]
    cols = {r[0] for r in con.execute("DESCRIBE layer_distribution").fetchall()}
    if "direction" not in cols:
        metrics = [r[0] for r in con.execute("SELECT DISTINCT metric FROM layer_distribution ORDER BY metric").fetchall()]
        return [(f"{kind}-{_slug(m)}", f"{title}: {m.replace('_', ' ')}", layer_boxes_svg(con, m)) for m in metrics]
    pairs = con.execute("""SELECT DISTINCT direction, metric FROM layer_distribution
                           ORDER BY direction DESC, metric""").fetchall()
    return [(f"{kind}-{_slug(m)}-{d}", f"{title}: {m.replace('_', ' ')} ({d})", layer_boxes_svg(con, m, d))
            for d, m in pairs]


def _slug(text: str) -> str:
    """A safe file stem: "pos selectivity/x" -> "pos_selectivity_x"."""
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
                plots.append(Plot(_slug(path.stem), analysis_title(kind, path.stem), caption, "analysis",
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
        plots += [Plot(name, plot_title, caption, "report", svg) for name, plot_title, svg in drawn]
    return plots, missing
