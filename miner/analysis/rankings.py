"""Units ranked by a unit_stats metric, and each layer's five-number summary of the values (figures 3-5).

Ranked metrics are the paper's POS selectivity (pos_selectivity: max relative frequency of noun, verb, adjective)
and sentiment selectivity (sentiment_std: std of the binary positive/negative polarity) by default, or any numeric
unit_stats column (e.g. pos_selectivity_ptb, sentiment_std_3way). Pure functions over NumPy and Arrow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miner.errors import ConfigError

log = logging.getLogger(__name__)

SENTIMENT_METRICS = {"sentiment_std": "sentiment_n", "sentiment_mean": "sentiment_n",
                     "sentiment_std_3way": "sentiment_n_3way", "sentiment_mean_3way": "sentiment_n_3way"}
"""Sentiment metrics and the unit_stats column counting the labelled sentences each is computed over."""
LOWER_IS_SELECTIVE = frozenset({"sentiment_std", "sentiment_std_3way"})
"""Metrics ranked lowest first: a unit whose sentences share one polarity (std 0) is the most sentiment-selective."""


def rank_values(values: np.ndarray, unit_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, percentile): rank 1 = highest value, ties by smaller unit_id; percentile = 100 (n - rank) / (n - 1).

    >>> rank, percentile = rank_values(np.array([0.5, 2.0, 0.5]), np.array([7, 3, 1]))
    >>> rank.tolist(), percentile.tolist()
    ([3, 1, 2], [0.0, 100.0, 50.0])

    A single unit is rank 1 at the 100th percentile:

    >>> [a.tolist() for a in rank_values(np.array([4.2]), np.array([9]))]
    [[1], [100.0]]
    """
    n = len(values)
    order = np.lexsort((unit_ids, -np.asarray(values, np.float64)))
    rank = np.empty(n, np.int32)
    rank[order] = np.arange(1, n + 1)
    percentile = 100.0 * (n - rank) / (n - 1) if n > 1 else np.full(n, 100.0)
    return rank, percentile


def by_unit_id(units: pa.Table, column: str) -> np.ndarray:
    """An array indexed by unit_id holding the units table's `column`.

    >>> by_unit_id(pa.table({"unit_id": [2, 0], "layer": [5, 3]}), "layer")[[0, 2]].tolist()
    [3, 5]
    """
    ids = units["unit_id"].to_numpy()
    values = units[column].to_numpy(zero_copy_only=False)
    out = np.empty(int(ids.max()) + 1 if len(ids) else 0, values.dtype)
    out[ids] = values
    return out


def layer_rankings(stats: pa.Table, units: pa.Table, metrics: Sequence[str], directions: Sequence[str],
                   min_sentiment_n: int = 5) -> pa.Table:
    """Units ranked per direction and metric (unit_stats column); NULL/NaN values and sentiment metrics of
    units with fewer than min_sentiment_n labelled sentences (sentiment_n: positive or negative ones;
    sentiment_n_3way for the _3way metrics) are left out.

    Columns: unit_id, direction, layer, metric, value, rank, percentile; ordered by direction, metric, rank.
    Rank 1 is the most selective unit: the highest value, or the lowest for LOWER_IS_SELECTIVE metrics
    (sentiment_std: one polarity only).

    >>> stats = pa.table({"unit_id": [0, 1, 2], "direction": ["top"] * 3, "pos_selectivity": [0.2, None, 0.9]})
    >>> units = pa.table({"unit_id": [0, 1, 2], "layer": [1, 1, 2]})
    >>> rows = layer_rankings(stats, units, ["pos_selectivity"], ["top"])
    >>> [(r["unit_id"], r["layer"], r["rank"], r["percentile"]) for r in rows.to_pylist()]
    [(2, 2, 1, 100.0), (0, 1, 2, 0.0)]
    """
    numeric = {f.name for f in stats.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
    bad = [m for m in metrics if m not in numeric or m == "unit_id"]
    if bad:
        raise ConfigError(f"metrics: {bad[0]!r} is not a numeric unit_stats column "
                          f"(choose from {', '.join(sorted(numeric - {'unit_id'}))})")
    layer_of = by_unit_id(units, "layer")
    parts = []
    for direction in directions:
        rows = stats.filter(pc.equal(stats["direction"], direction))
        if rows.num_rows == 0:
            continue
        unit_ids = rows["unit_id"].to_numpy()
        for metric in metrics:
            values = rows[metric].to_numpy(zero_copy_only=False).astype(np.float64)
            keep = np.isfinite(values)
            n_column = SENTIMENT_METRICS.get(metric)
            if n_column is not None and n_column in rows.column_names:
                counts = rows[n_column].to_numpy(zero_copy_only=False).astype(np.float64)
                keep &= np.nan_to_num(counts, nan=0.0) >= min_sentiment_n
            ids, vals = unit_ids[keep], values[keep]
            if len(vals) > 1 and vals.min() == vals.max():
                log.warning("%s (%s): every ranked unit has the same value %g; its ranking is by unit_id only",
                            metric, direction, vals[0])
            rank, percentile = rank_values(-vals if metric in LOWER_IS_SELECTIVE else vals, ids)
            order = np.argsort(rank)
            n = len(ids)
            parts.append(pa.table({
                "unit_id": pa.array(ids[order], pa.int32()), "direction": pa.array([direction] * n, pa.string()),
                "layer": pa.array(layer_of[ids[order]], pa.int16()), "metric": pa.array([metric] * n, pa.string()),
                "value": pa.array(vals[order], pa.float64()), "rank": pa.array(rank[order]),
                "percentile": pa.array(percentile[order], pa.float64())}))
    return pa.concat_tables(parts) if parts else _empty_rankings()


def layer_distribution(rankings: pa.Table) -> pa.Table:
    """Per direction, metric and layer: n, min, q1, median, q3, max, mean of the units' values (numpy linear
    percentiles), the data of one box per layer (the paper's figures 3-5; rank boxes: query layer_rankings).

    One layer with values [1, 2, 3, 4]:

    >>> rankings = pa.table({"direction": ["top"] * 4, "metric": ["m"] * 4, "layer": [1] * 4,
    ...                      "value": [1.0, 2.0, 3.0, 4.0]})
    >>> [(k, v) for k, v in layer_distribution(rankings).to_pylist()[0].items() if k in ("n", "q1", "median", "q3")]
    [('n', 4), ('q1', 1.75), ('median', 2.5), ('q3', 3.25)]
    """
    names = ("direction", "metric", "layer", "n", "min", "q1", "median", "q3", "max", "mean")
    cols: dict[str, list] = {k: [] for k in names}
    if rankings.num_rows:
        df = rankings.select(["direction", "metric", "layer", "value"]).to_pandas()
        for (direction, metric, layer), group in df.groupby(["direction", "metric", "layer"], sort=True):
            v = group["value"].to_numpy(np.float64)
            for key, val in zip(names, (direction, metric, int(layer), len(v),
                                        *np.percentile(v, [0, 25, 50, 75, 100]), v.mean())):
                cols[key].append(val)
    types = {"direction": pa.string(), "metric": pa.string(), "layer": pa.int16(), "n": pa.int64()}
    return pa.table({k: pa.array(v, types.get(k, pa.float64())) for k, v in cols.items()})


def _empty_rankings() -> pa.Table:
    return pa.table({"unit_id": pa.array([], pa.int32()), "direction": pa.array([], pa.string()),
                     "layer": pa.array([], pa.int16()), "metric": pa.array([], pa.string()),
                     "value": pa.array([], pa.float64()), "rank": pa.array([], pa.int32()),
                     "percentile": pa.array([], pa.float64())})
