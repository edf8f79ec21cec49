"""Probe records of the reports, read with SQL from the probing stage's catalog tables.

A unit page gets the unit's rank in every ranking of every all-layer probe (neuron_rankings); the overview
gets, per concept, the Dalvi et al. table (probe_accuracy top/random/bottom/all), the baselines (probes),
the minimal subsets (probe_subsets), the per-layer probes and how the minimal-subset units spread over
layers. A run without the tables gets None, so its pages look as before. See schemas/tables.md.
"""

from __future__ import annotations

from typing import Any

import duckdb

from miner.report.probing.records import (
    ConceptProbing,
    LayerProbe,
    MinimalSubset,
    SubsetEvaluation,
    SubsetLayerCount,
    UnitProbeRank,
)

UNIT_TABLES = ("probes", "neuron_rankings")
MODEL_TABLES = ("probes", "probe_accuracy")
_METHOD_ORDER = "CASE {col} WHEN 'lca' THEN 0 WHEN 'probeless' THEN 1 WHEN 'ap' THEN 2 ELSE 3 END, {col}"


def _rows(con: duckdb.DuckDBPyConnection, sql: str,
          params: list | dict[str, Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _method_order(col: str) -> str:
    """SQL ORDER BY terms listing rankings as the job's default does (lca, probeless, ap), others after.

    >>> _method_order("m")
    "CASE m WHEN 'lca' THEN 0 WHEN 'probeless' THEN 1 WHEN 'ap' THEN 2 ELSE 3 END, m"
    """
    return _METHOD_ORDER.format(col=col)


def unit_probe_ranks(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int) -> list[UnitProbeRank] | None:
    """The unit's overall and best per-class rank in each ranking of each all-layer probe; None without
    probe tables. The best class is the one of smallest rank (ties: the smaller class name)."""
    if not all(t in views for t in UNIT_TABLES):
        return None
    rows = _rows(con, f"""
        WITH pairs AS (SELECT DISTINCT probe_id, method FROM neuron_rankings),
        overall AS (SELECT probe_id, method, count(*) AS n_ranked,
                           any_value(rank) FILTER (WHERE unit_id = $u) AS rank,
                           any_value(score) FILTER (WHERE unit_id = $u) AS score
                    FROM neuron_rankings WHERE class IS NULL GROUP BY probe_id, method),
        mine AS (SELECT probe_id, method, class, rank,
                        row_number() OVER (PARTITION BY probe_id, method ORDER BY rank, class) AS pick
                 FROM neuron_rankings WHERE class IS NOT NULL AND unit_id = $u),
        sizes AS (SELECT probe_id, method, class, count(*) AS n FROM neuron_rankings
                  WHERE class IS NOT NULL GROUP BY probe_id, method, class)
        SELECT pairs.probe_id, p.concept, pairs.method, o.rank, coalesce(o.n_ranked, 0) AS n_ranked, o.score,
               m.class AS best_class, m.rank AS best_class_rank, s.n AS best_class_n, p.test_accuracy,
               p.classes
        FROM pairs JOIN probes p ON p.probe_id = pairs.probe_id AND p.scope = 'all'
        LEFT JOIN overall o ON o.probe_id = pairs.probe_id AND o.method = pairs.method
        LEFT JOIN mine m ON m.probe_id = pairs.probe_id AND m.method = pairs.method AND m.pick = 1
        LEFT JOIN sizes s ON s.probe_id = m.probe_id AND s.method = m.method AND s.class = m.class
        ORDER BY pairs.probe_id, {_method_order("pairs.method")}""", {"u": unit_id})
    return [UnitProbeRank(**r) for r in rows]


def _evaluations(con: duckdb.DuckDBPyConnection, probe_id: str) -> list[SubsetEvaluation]:
    rows = _rows(con, f"""
        SELECT ranking, k_percent, max(units) FILTER (WHERE evaluation = 'top') AS units,
               max(test_accuracy) FILTER (WHERE evaluation = 'top') AS top,
               max(test_accuracy) FILTER (WHERE evaluation = 'random') AS random,
               max(test_accuracy) FILTER (WHERE evaluation = 'bottom') AS bottom,
               max(test_accuracy) FILTER (WHERE evaluation = 'control_top') AS control_top
        FROM probe_accuracy
        WHERE probe_id = ? AND class IS NULL AND ranking IS NOT NULL
              AND evaluation IN ('top', 'random', 'bottom', 'control_top')
        GROUP BY ranking, k_percent ORDER BY {_method_order("ranking")}, k_percent""", [probe_id])
    return [SubsetEvaluation(**r) for r in rows]


def _subsets(con: duckdb.DuckDBPyConnection, views: set[str], probe_id: str) -> list[MinimalSubset]:
    if "probe_subsets" not in views:
        return []
    rows = _rows(con, f"""SELECT ranking, target, units, unit_share, dev_accuracy, test_accuracy, full_dev_accuracy
                          FROM probe_subsets WHERE probe_id = ? ORDER BY {_method_order("ranking")}""", [probe_id])
    return [MinimalSubset(**r) for r in rows]


def _layer_probes(con: duckdb.DuckDBPyConnection, concept: str) -> list[LayerProbe]:
    rows = _rows(con, """SELECT probe_id, site, layer, units, dev_accuracy, test_accuracy, majority_accuracy
                         FROM probes WHERE concept = ? AND scope = 'layer' ORDER BY site DESC, layer""", [concept])
    return [LayerProbe(**r) for r in rows]


def subset_layer_counts(con: duckdb.DuckDBPyConnection, views: set[str], probe_id: str) -> list[SubsetLayerCount]:
    """Units of each ranking's minimal subset per site and layer, every layer of the run listed (zeros too).

    The subset's units are the overall ranking's first `units` (schemas/tables.md, probe_subsets).
    """
    if not {"probe_subsets", "neuron_rankings"} <= views:
        return []
    rows = _rows(con, f"""
        WITH layers AS (SELECT site, layer, count(*) AS layer_units FROM units GROUP BY site, layer),
        picked AS (SELECT s.ranking, u.site, u.layer, count(*) AS n
                   FROM probe_subsets s
                   JOIN neuron_rankings r ON r.probe_id = s.probe_id AND r.method = s.ranking
                        AND r.class IS NULL AND r.rank <= s.units
                   JOIN units u ON u.unit_id = r.unit_id
                   WHERE s.probe_id = $p GROUP BY s.ranking, u.site, u.layer)
        SELECT s.ranking, l.site, l.layer, coalesce(picked.n, 0) AS count, l.layer_units
        FROM (SELECT DISTINCT ranking FROM probe_subsets WHERE probe_id = $p) s CROSS JOIN layers l
        LEFT JOIN picked ON picked.ranking = s.ranking AND picked.site = l.site AND picked.layer = l.layer
        ORDER BY {_method_order("s.ranking")}, l.site DESC, l.layer""", {"p": probe_id})
    return [SubsetLayerCount(**r) for r in rows]


def _overall(con: duckdb.DuckDBPyConnection, probe_id: str) -> float | None:
    got = con.execute("""SELECT test_accuracy FROM probe_accuracy WHERE probe_id = ? AND evaluation = 'all'
                         AND class IS NULL LIMIT 1""", [probe_id]).fetchall()
    return got[0][0] if got else None


def concept_probing(con: duckdb.DuckDBPyConnection, views: set[str]) -> list[ConceptProbing] | None:
    """One record per concept's all-layer probe (without plots: miner.report.probing.plots draws them);
    None without probe tables."""
    if not all(t in views for t in MODEL_TABLES):
        return None
    out = []
    for p in _rows(con, """SELECT probe_id, concept, level, units, classes, class_names, test_rows, test_accuracy,
                                  majority_accuracy, control_accuracy, selectivity, l1, l2, dropped_classes
                           FROM probes WHERE scope = 'all' ORDER BY concept"""):
        pid = p["probe_id"]
        out.append(ConceptProbing(
            concept=p["concept"], probe_id=pid, level=p["level"], units=int(p["units"]), classes=int(p["classes"]),
            class_names=list(p["class_names"] or []), test_rows=int(p["test_rows"]),
            test_accuracy=p["test_accuracy"], all_accuracy=_overall(con, pid),
            majority_accuracy=p["majority_accuracy"], control_accuracy=p["control_accuracy"],
            selectivity=p["selectivity"], l1=p["l1"], l2=p["l2"], dropped_classes=list(p["dropped_classes"] or []),
            evaluations=_evaluations(con, pid), subsets=_subsets(con, views, pid),
            layers=_layer_probes(con, p["concept"]), subset_layers=subset_layer_counts(con, views, pid)))
    return out


__all__ = ["concept_probing", "subset_layer_counts", "unit_probe_ranks"]
