"""How well each unit is explained (tables unit_scores and unit_formulas): the unit page's section and the
overview's distribution per layer with the best- and worst-explained units. A run scored without them gets None,
so its pages look as before."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

RANKED_UNITS = 10
"""Best- and worst-explained units listed in the overview."""


@dataclass
class QueueScore:
    """One direction's explanation scores on the held-out split."""

    direction: str
    simulation: float | None
    simulation_baseline: float | None
    detection_auc: float | None
    detection_baseline: float | None
    signature_items: int
    held_out_sentences: int
    top_band_sentences: int


@dataclass
class FormulaInfo:
    """The unit's compositional explanation of its held-out top band."""

    formula: str
    length: int
    iou: float
    precision: float
    recall: float
    support: int
    band_sentences: int


@dataclass
class UnitScores:
    """The unit page's "How good is this explanation?" section."""

    held_out: float | None
    """The held-out share of the mined sentences."""
    queues: list[QueueScore]
    formula: FormulaInfo | None


@dataclass
class LayerScores:
    """Per site and layer (top direction): the spread of simulation scores and the median detection AUC."""

    site: str
    layer: int
    units: int
    q25_simulation: float | None
    median_simulation: float | None
    q75_simulation: float | None
    median_simulation_baseline: float | None
    median_detection_auc: float | None
    median_detection_baseline: float | None
    median_formula_iou: float | None


@dataclass
class RankedUnit:
    """A unit in the overview's best- or worst-explained list (top direction)."""

    unit_id: int
    label: str
    simulation: float | None
    detection_auc: float | None
    formula: str | None
    iou: float | None


@dataclass
class ModelScores:
    """The overview's explanation-score section."""

    held_out: float | None
    held_out_sentences: int
    median_simulation: float | None
    median_simulation_baseline: float | None
    median_detection_auc: float | None
    layers: list[LayerScores]
    best: list[RankedUnit]
    worst: list[RankedUnit]


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _nan_free(row: dict[str, Any]) -> dict[str, Any]:
    """NaN (a constant column) shown as missing."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def unit_scores(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int,
                held_out: float | None) -> UnitScores | None:
    """The unit's rows of unit_scores and unit_formulas; None when the run was not scored."""
    if "unit_scores" not in views:
        return None
    queues = [QueueScore(**_nan_free(r)) for r in _rows(con, """
        SELECT direction, simulation, simulation_baseline, detection_auc, detection_baseline, signature_items,
               held_out_sentences, top_band_sentences
        FROM unit_scores WHERE unit_id = ? ORDER BY direction DESC""", [unit_id])]
    formula = None
    if "unit_formulas" in views:
        rows = _rows(con, """SELECT formula, length, iou, precision, recall, support, band_sentences
                             FROM unit_formulas WHERE unit_id = ? AND direction = 'top'""", [unit_id])
        formula = FormulaInfo(**rows[0]) if rows else None
    return UnitScores(held_out=held_out, queues=queues, formula=formula)


def model_scores(con: duckdb.DuckDBPyConnection, views: set[str], held_out: float | None) -> ModelScores | None:
    """Per-layer distribution and the best / worst explained units (by simulation, top direction)."""
    if "unit_scores" not in views:
        return None
    has_formulas = "unit_formulas" in views
    iou = "f.iou" if has_formulas else "NULL::DOUBLE"
    join = "LEFT JOIN unit_formulas f ON f.unit_id = s.unit_id AND f.direction = 'top'" if has_formulas else ""
    base = f"""FROM unit_scores s JOIN units u USING (unit_id) {join}
               WHERE s.direction = 'top'"""
    finite = "CASE WHEN isnan(s.{0}) THEN NULL ELSE s.{0} END"
    sim, simb = finite.format("simulation"), finite.format("simulation_baseline")
    auc, aucb = finite.format("detection_auc"), finite.format("detection_baseline")
    layers = [LayerScores(**_nan_free(r)) for r in _rows(con, f"""
        SELECT u.site, u.layer, count(*) AS units, quantile_cont({sim}, 0.25) AS q25_simulation,
               median({sim}) AS median_simulation, quantile_cont({sim}, 0.75) AS q75_simulation,
               median({simb}) AS median_simulation_baseline, median({auc}) AS median_detection_auc,
               median({aucb}) AS median_detection_baseline, median({iou}) AS median_formula_iou
        {base} GROUP BY u.site, u.layer ORDER BY u.site DESC, u.layer""")]
    overall = _nan_free(_rows(con, f"""SELECT median({sim}) AS sim, median({simb}) AS simb, median({auc}) AS auc,
                                              max(s.held_out_sentences) AS h {base}""")[0])
    formula = "f.formula" if has_formulas else "NULL"

    def ranked(order: str) -> list[RankedUnit]:
        out = []
        for r in _rows(con, f"""SELECT s.unit_id, u.site, u.layer, u.idx, {sim} AS simulation, {auc} AS detection_auc,
                                       {formula} AS formula, {iou} AS iou
                                {base} AND NOT isnan(s.simulation) ORDER BY s.simulation {order}, s.unit_id
                                LIMIT {RANKED_UNITS}"""):
            label = f"{r['layer']}:{r['idx']}" if r["site"] == "hidden" else f"{r['site']}:{r['layer']}:{r['idx']}"
            out.append(RankedUnit(unit_id=r["unit_id"], label=label, simulation=r["simulation"],
                                  detection_auc=r["detection_auc"], formula=r["formula"] or None, iou=r["iou"]))
        return out

    return ModelScores(held_out=held_out, held_out_sentences=int(overall["h"] or 0),
                       median_simulation=overall["sim"], median_simulation_baseline=overall["simb"],
                       median_detection_auc=overall["auc"], layers=layers, best=ranked("DESC"), worst=ranked("ASC"))
