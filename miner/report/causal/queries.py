"""A unit's causal and cross-model sections, read with SQL from the catalog tables of `miner analyze`
(unit_redundancy, layer_redundancy), `miner match` (unit_matches) and `miner ablate` (unit_logits,
ablation_sets, ablation_effects). A run without a table gets None for that part, so its pages look as before.
See schemas/tables.md.
"""

from __future__ import annotations

from typing import Any

import duckdb

from miner.report.causal.records import (
    AblationRow,
    LayerMatches,
    LayerRedundancy,
    Match,
    ModelCausal,
    OutputToken,
    Redundancy,
    SteeredClass,
    SteeredText,
    UnitAblation,
    UnitCausal,
)

MAX_MEMBERS = 12


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def unit_label(site: str | None, layer: int | None, idx: int | None) -> str:
    """LAYER:IDX on the hidden site, SITE:LAYER:IDX elsewhere (the unit syntax of every command).

    >>> unit_label("hidden", 3, 17), unit_label("mlp", 2, 5)
    ('3:17', 'mlp:2:5')
    """
    if layer is None or idx is None:
        return "?"
    return f"{layer}:{idx}" if site in (None, "hidden") else f"{site}:{layer}:{idx}"


def _label_sql(alias: str) -> str:
    return (f"CASE WHEN {alias}.site = 'hidden' THEN {alias}.layer || ':' || {alias}.idx "
            f"ELSE {alias}.site || ':' || {alias}.layer || ':' || {alias}.idx END")


def _redundancy(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int) -> Redundancy | None:
    if "unit_redundancy" not in views:
        return None
    rows = _rows(con, f"""SELECT r.cluster, r.cluster_size, r.redundant, r.best_unit, r.best_corr,
                                 {_label_sql('b')} AS best_label, u.site, u.layer
                          FROM unit_redundancy r JOIN units u USING (unit_id)
                          LEFT JOIN units b ON b.unit_id = r.best_unit WHERE r.unit_id = ?""", [unit_id])
    if not rows:
        return None
    r = rows[0]
    share = threshold = None
    if "layer_redundancy" in views:
        lr = _rows(con, "SELECT redundant_share, threshold FROM layer_redundancy WHERE site = ? AND layer = ?",
                   [r["site"], r["layer"]])
        if lr:
            share, threshold = lr[0]["redundant_share"], lr[0]["threshold"]
    members = [m["label"] for m in _rows(con, f"""SELECT {_label_sql('u')} AS label FROM unit_redundancy r
                                                JOIN units u USING (unit_id)
                                                WHERE r.cluster = ? AND r.unit_id <> ? ORDER BY r.unit_id LIMIT ?""",
                                         [r["cluster"], unit_id, MAX_MEMBERS])]
    return Redundancy(cluster=int(r["cluster"]), cluster_size=int(r["cluster_size"]), redundant=bool(r["redundant"]),
                      best_unit=r["best_unit"], best_label=r["best_label"], best_corr=r["best_corr"],
                      layer_share=share, threshold=threshold, members=members)


def _matches(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int) -> list[Match] | None:
    if "unit_matches" not in views:
        return None
    return [Match(other_run=r["other_name"], best_label=unit_label(r["best_site"], r["best_layer"], r["best_idx"]),
                  corr=r["corr"])
            for r in _rows(con, """SELECT other_name, best_site, best_layer, best_idx, corr FROM unit_matches
                                   WHERE unit_id = ? ORDER BY other_name, other_run""", [unit_id])]


def _output_tokens(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int,
                   direction: str) -> list[OutputToken] | None:
    if "unit_logits" not in views:
        return None
    return [OutputToken(int(r["rank"]), str(r["token"]), float(r["logit"]))
            for r in _rows(con, """SELECT rank, token, logit FROM unit_logits WHERE unit_id = ? AND direction = ?
                                   ORDER BY rank""", [unit_id, direction])]


_ABLATION_SQL = """
    SELECT set_name, metric, max(units) FILTER (kind = 'set') AS units, max(clean) FILTER (kind = 'set') AS clean,
           max(ablated) FILTER (kind = 'set') AS value, max(ablated) FILTER (kind = 'random') AS random_value,
           max(ablated) FILTER (kind = 'bottom') AS bottom_value
    FROM ablation_effects WHERE set_name <> 'curve' {where}
    GROUP BY set_name, metric ORDER BY set_name, metric"""


def _ablations(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int | None) -> list[dict[str, Any]] | None:
    """Each named set's effect beside its random and bottom controls, per metric (of the sets holding `unit_id`
    when given); None without the tables."""
    if not {"ablation_effects", "ablation_sets"} <= views:
        return None
    if unit_id is None:
        return _rows(con, _ABLATION_SQL.format(where=""))
    where = ("AND set_name IN (SELECT set_name FROM ablation_sets WHERE kind = 'set' AND unit_id = ?)")
    return _rows(con, _ABLATION_SQL.format(where=where), [unit_id])


def unit_causal(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int) -> UnitCausal | None:
    """The unit's causal and cross-model record; None when the run has none of the tables."""
    out = UnitCausal(redundancy=_redundancy(con, views, unit_id), matches=_matches(con, views, unit_id),
                     output_positive=_output_tokens(con, views, unit_id, "positive"),
                     output_negative=_output_tokens(con, views, unit_id, "negative"))
    ablations = _ablations(con, views, unit_id)
    if ablations is not None:
        out.ablations = [UnitAblation(r["set_name"], int(r["units"] or 0), r["metric"], r["value"], r["random_value"],
                                      r["bottom_value"]) for r in ablations]
    return None if out.empty else out


UNMATCHED_BELOW = 0.5
"""A unit whose best |r| in another run is below this has no counterpart there (the overview's count)."""


def model_causal(con: duckdb.DuckDBPyConnection, views: set[str]) -> ModelCausal | None:
    """The overview's per-layer redundancy, per-layer matches with each other run and the ablation table; None
    when the run has none of the tables."""
    out = ModelCausal(unmatched_below=UNMATCHED_BELOW)
    if "layer_redundancy" in views:
        rows = _rows(con, """SELECT site, layer, units, redundant_units, redundant_share, threshold
                             FROM layer_redundancy ORDER BY site DESC, layer""")
        out.redundancy = [LayerRedundancy(r["site"], int(r["layer"]), int(r["units"]), int(r["redundant_units"]),
                                          float(r["redundant_share"])) for r in rows]
        out.threshold = float(rows[0]["threshold"]) if rows else None
    if "unit_matches" in views:
        out.matches = [LayerMatches(r["other_name"], r["site"], int(r["layer"]), int(r["units"]), r["med"],
                                    int(r["unmatched"]))
                       for r in _rows(con, """SELECT m.other_name, u.site, u.layer, count(*) AS units,
                                                     median(abs(m.corr)) AS med,
                                                     count(*) FILTER (WHERE m.corr IS NULL OR abs(m.corr) < ?)
                                                         AS unmatched
                                              FROM unit_matches m JOIN units u USING (unit_id)
                                              GROUP BY ALL ORDER BY m.other_name, u.site DESC, u.layer""",
                                      [UNMATCHED_BELOW])]
    ablations = _ablations(con, views, None)
    if ablations:
        out.ablations = [AblationRow(r["set_name"], int(r["units"] or 0), r["metric"], r["clean"], r["value"],
                                     r["random_value"], r["bottom_value"]) for r in ablations]
    if "steering_effects" in views:
        rows = _rows(con, """SELECT set_name, multiple, label, share_before, share_after, flipped_in, flipped_out
                             FROM steering_effects ORDER BY set_name, multiple, class_id""")
        out.steered_classes = [SteeredClass(**r) for r in rows] or None
    if "steering_texts" in views:
        rows = _rows(con, """SELECT set_name, multiple, prompt, before, after, changed FROM steering_texts
                             ORDER BY set_name, multiple, prompt_index""")
        out.steered_texts = [SteeredText(**r) for r in rows] or None
    return None if out.empty else out
