"""Unit sets: the units an intervention acts on, resolved from ids, LAYER:IDX references, a probe ranking's
top / random / bottom share, or a SQL query over the run catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from miner.config.ablate import RankingPick, UnitSetSpec
from miner.errors import ConfigError
from miner.model.layout import UnitLayout
from miner.probing.examples import hash_uniform
from miner.run.folder import FILES


def unit_of_ref(ref: int | str, layout: UnitLayout, field: str) -> int:
    """The unit id of an id, a LAYER:IDX (site hidden) or a SITE:LAYER:IDX reference.

    >>> layout = UnitLayout(("hidden", "mlp"), (("hidden", 1, 4), ("hidden", 2, 4), ("mlp", 2, 8)))
    >>> [unit_of_ref(r, layout, "units") for r in (5, "2:1", "mlp:2:7", "hidden:1:3")]
    [5, 5, 15, 3]
    """
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().lstrip("-").isdigit()):
        uid = int(ref)
        if not 0 <= uid < layout.n_units:
            raise ConfigError(f"{field}: unit id {uid} does not exist (the run has units 0..{layout.n_units - 1})")
        return uid
    parts = str(ref).split(":")
    if len(parts) == 2:
        parts = ["hidden", *parts]
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ConfigError(f"{field}: {ref!r} is not a unit id, LAYER:IDX or SITE:LAYER:IDX")
    site, layer, idx = parts[0], int(parts[1]), int(parts[2])
    for s in layout.slices():
        if s.site == site and s.layer == layer:
            if not 0 <= idx < s.hi - s.lo:
                raise ConfigError(f"{field}: {ref!r}: index {idx} is out of range (width {s.hi - s.lo})")
            return s.lo + idx
    mined = ", ".join(f"{s}:{la}" for s, la, _ in layout.layers)
    raise ConfigError(f"{field}: {ref!r}: {site} layer {layer} was not mined (mined: {mined})")


def ranked_units(run_dir: Path, probe_id: str, method: str, cls: str | None, field: str) -> np.ndarray:
    """int64 unit ids of a probe ranking, best first (table neuron_rankings)."""
    path = Path(run_dir) / FILES.neuron_rankings
    if not path.exists():
        raise ConfigError(f"{field}: the run has no neuron rankings (run `miner probe` first)")
    t = pq.read_table(path, columns=["probe_id", "method", "class", "unit_id", "rank"]).to_pandas()
    sel = t[(t["probe_id"] == probe_id) & (t["method"] == method)]
    sel = sel[sel["class"].isna()] if cls is None else sel[sel["class"] == cls]
    if sel.empty:
        raise ConfigError(f"{field}: no ranking for probe {probe_id!r}, method {method!r}, class "
                          f"{'(overall)' if cls is None else repr(cls)} in {path.name}")
    return sel.sort_values(["rank", "unit_id"])["unit_id"].to_numpy(np.int64)


def seeded_sample(pool: np.ndarray, k: int, seed: int, tag: str) -> np.ndarray:
    """k units of `pool` chosen by a seeded hash (the same in every process), in pool order.

    >>> a = seeded_sample(np.arange(100), 5, 0, "x")
    >>> len(a), bool((a == seeded_sample(np.arange(100), 5, 0, "x")).all()), len(set(a) - set(range(100)))
    (5, True, 0)
    """
    if k >= len(pool):
        return np.asarray(pool, np.int64)
    u = hash_uniform(seed, tag, np.asarray(pool, np.int64))
    pick = np.sort(np.argsort(u, kind="stable")[:k])
    return np.asarray(pool, np.int64)[pick]


def pick_from_ranking(order: np.ndarray, which: str, k: int, seed: int, tag: str) -> np.ndarray:
    """top: the k best ranked; bottom: the k worst; random: k seeded ones of the ranking.

    >>> order = np.array([7, 3, 9, 1, 0])
    >>> pick_from_ranking(order, "top", 2, 0, "t").tolist(), pick_from_ranking(order, "bottom", 2, 0, "t").tolist()
    ([7, 3], [1, 0])
    """
    k = min(k, len(order))
    if which == "top":
        return order[:k]
    if which == "bottom":
        return order[len(order) - k:]
    return seeded_sample(order, k, seed, tag)


def ranking_set(run_dir: Path, pick: RankingPick, seed: int, field: str) -> np.ndarray:
    order = ranked_units(run_dir, pick.probe_id, pick.method, pick.class_, field)
    k = pick.count if pick.count is not None else max(1, round(len(order) * float(pick.percent or 0) / 100))
    return pick_from_ranking(order, pick.which, k, seed, f"set:{field}")


def sql_set(run_dir: Path, sql: str, layout: UnitLayout, field: str) -> np.ndarray:
    """Unit ids returned by a read-only query over the catalog (column unit_id)."""
    from miner.query.sql import query_arrow

    table = query_arrow(Path(run_dir), sql)
    if "unit_id" not in table.column_names:
        raise ConfigError(f"{field}: the query returns no unit_id column (columns: {', '.join(table.column_names)})")
    ids = np.asarray([u for u in table.column("unit_id").to_pylist() if u is not None], np.int64)
    if ids.size == 0:
        raise ConfigError(f"{field}: the query selects no units")
    for u in ids:
        unit_of_ref(int(u), layout, field)
    return ids


def resolve_set(spec: UnitSetSpec, layout: UnitLayout, run_dir: Path, seed: int, index: int) -> np.ndarray:
    """int64 sorted unique unit ids of one set spec; every bad input is one ConfigError naming the field."""
    field = f"ablate.sets[{index}] ({spec.name})"
    if spec.units is not None:
        if not spec.units:
            raise ConfigError(f"{field}.units: empty")
        ids = np.asarray([unit_of_ref(r, layout, f"{field}.units") for r in spec.units], np.int64)
    elif spec.ranking is not None:
        ids = ranking_set(run_dir, spec.ranking, seed, f"{field}.ranking")
    else:
        assert spec.sql is not None
        ids = sql_set(run_dir, spec.sql, layout, f"{field}.sql")
    return np.unique(ids)


def control_sets(ids: np.ndarray, layout: UnitLayout, order: np.ndarray | None, seed: int, name: str,
                 ) -> dict[str, np.ndarray]:
    """The controls of a set of k units: k seeded random units matched tensor by tensor (as many from each mined
    tensor as the set has there, other units first: any other layer's units would change what is measured), and
    the k bottom-ranked units of `order` (when a ranking is given).

    >>> layout = UnitLayout(("hidden",), (("hidden", 1, 4), ("hidden", 2, 4)))
    >>> c = control_sets(np.array([0, 1]), layout, np.arange(8)[::-1], 0, "s")
    >>> sorted(c), c["random"].tolist(), c["bottom"].tolist()
    (['bottom', 'random'], [2, 3], [0, 1])
    >>> sorted(int(u) // 4 for u in control_sets(np.array([0, 1, 5]), layout, None, 0, "s")["random"])
    [0, 0, 1]
    """
    picks = []
    for s in layout.slices():
        mine = ids[(ids >= s.lo) & (ids < s.hi)]
        if len(mine) == 0:
            continue
        pool = np.arange(s.lo, s.hi, dtype=np.int64)
        rest = np.setdiff1d(pool, mine)
        picks.append(seeded_sample(rest if len(rest) >= len(mine) else pool, len(mine), seed,
                                   f"control:{name}:{s.site}:{s.layer}"))
    out = {"random": np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)}
    if order is not None:
        out["bottom"] = np.sort(order[len(order) - min(len(ids), len(order)):])
    return out
