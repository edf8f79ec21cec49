"""The ablation curve plots of `miner ablate`: per metric, the effect versus the number of ablated units, for the
top, random and bottom units of the curve's ranking, with the clean value as a dashed line.

Files: RUN/plots/ablation_curve_<metric>.svg (`curve_svg_name`); the model overview shows them
(miner/report/plots.py picks up every RUN/plots/ablation_curve_*.svg).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from miner.analysis.plots import save_figure, styled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
CURVE_PREFIX = "ablation_curve_"
_STYLE = {"top": ("tab:red", "o"), "random": ("tab:grey", "s"), "bottom": ("tab:blue", "^")}


def curve_svg_name(metric: str) -> str:
    """The SVG file name of one metric's curve.

    >>> curve_svg_name("accuracy"), curve_svg_name("probe:pos:hidden:2")
    ('ablation_curve_accuracy.svg', 'ablation_curve_probe_pos_hidden_2.svg')
    """
    return CURVE_PREFIX + "".join(c if c.isalnum() or c in "-_" else "_" for c in metric) + ".svg"


def curve_series(effects: pa.Table, metric: str) -> tuple[dict[str, tuple[list[int], list[float]]], float | None]:
    """The curve points of one metric by pick (top/random/bottom): (numbers of units, ablated values), and the
    clean value.

    >>> t = pa.table({"set_name": ["curve"] * 3, "kind": ["curve_top", "curve_random", "curve_top"], "units": [5, 5, 1],
    ...               "metric": ["acc"] * 3, "clean": [0.9] * 3, "ablated": [0.5, 0.8, 0.7]})
    >>> curve_series(t, "acc")
    ({'top': ([1, 5], [0.7, 0.5]), 'random': ([5], [0.8])}, 0.9)
    """
    rows = [r for r in effects.select(["set_name", "kind", "units", "metric", "clean", "ablated"]).to_pylist()
            if r["set_name"] == "curve" and r["metric"] == metric]
    out: dict[str, tuple[list[int], list[float]]] = {}
    for which in _STYLE:
        pts = sorted((int(r["units"]), float(r["ablated"])) for r in rows if r["kind"] == f"curve_{which}")
        if pts:
            out[which] = ([p[0] for p in pts], [p[1] for p in pts])
    clean = float(rows[0]["clean"]) if rows else None
    return out, clean


@styled
def curve_figure(series: dict[str, tuple[list[int], list[float]]], clean: float | None, metric: str,
                 ranking: str) -> Figure:
    """One ablation curve: x = ablated units (log scale), y = the metric."""
    from matplotlib.figure import Figure as _Figure

    fig = _Figure(figsize=(5.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for which, (xs, ys) in series.items():
        colour, marker = _STYLE[which]
        ax.plot(xs, ys, color=colour, marker=marker, label=f"{which} units")
    if clean is not None:
        ax.axhline(clean, color="black", linestyle="--", linewidth=0.8, label="clean")
    ax.set_xscale("log")
    ax.set_xlabel("ablated units")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"Ablation curve ({ranking})")
    ax.legend(fontsize="small")
    return fig


def write_curve_plots(run_dir: Path, effects: pa.Table, ranking: str) -> list[str]:
    """Write one SVG per metric of the curve; returns their paths relative to the run folder (none without
    matplotlib: logged)."""
    metrics = sorted({r["metric"] for r in effects.select(["set_name", "metric"]).to_pylist() if r["set_name"] == "curve"})
    if not metrics:
        return []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("ablation curve plots need matplotlib (pip install matplotlib); skipped")
        return []
    written = []
    for metric in metrics:
        series, clean = curve_series(effects, metric)
        rel = Path("plots") / curve_svg_name(metric)
        save_figure(curve_figure(series, clean, metric, ranking), Path(run_dir) / rel)
        written.append(str(rel))
    return written


def remove_stale_curve_plots(run_dir: Path, keep: list[str]) -> None:
    """Delete the curve SVGs of an earlier ablate section that this one did not write (the overview shows every
    RUN/plots/ablation_curve_*.svg)."""
    for path in (Path(run_dir) / "plots").glob(CURVE_PREFIX + "*.svg"):
        if str(path.relative_to(run_dir)) not in keep:
            path.unlink()
