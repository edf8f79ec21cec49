"""The runs `miner serve` shows: each checked once at start (a finished step 2), named by its folder, with its
units' places for navigation and the cached pages rendered from its catalog."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miner.errors import InputError
from miner.report.build import STEP2_VIEWS, resolve_unit
from miner.run.catalog import open_catalog, read_run_manifest, read_run_table

SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


class PageCache:
    """A bounded, thread-safe LRU of rendered pages (key -> HTML)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._pages: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> str | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: tuple, page: str) -> None:
        with self._lock:
            self._pages[key] = page
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)


@dataclass
class ServedRun:
    """One run folder as served under /r/<slug>/."""

    slug: str
    path: Path
    manifest: dict
    unit_ids: np.ndarray
    sites: list[str]
    layers: np.ndarray
    idxs: np.ndarray
    place: dict[tuple[str, int, int], int] = field(default_factory=dict)
    """(site, layer, idx) -> unit_id."""

    @property
    def name(self) -> str:
        return str(self.manifest.get("job", {}).get("name") or self.slug)

    def label(self, unit_id: int) -> str:
        site, layer, idx = self.sites[unit_id], int(self.layers[unit_id]), int(self.idxs[unit_id])
        return f"{layer}:{idx}" if site == "hidden" else f"{site}:{layer}:{idx}"

    def has(self, unit_id: int) -> bool:
        return 0 <= unit_id < len(self.unit_ids)

    def resolve(self, unit: str) -> int:
        """A unit_id from LAYER:IDX, SITE:LAYER:IDX or an id; InputError when the run has no such unit."""
        con = open_catalog(self.path)
        try:
            return resolve_unit(con, unit).unit_id
        finally:
            con.close()


def load_run(path: Path, taken: set[str]) -> ServedRun:
    """Check a run folder (mined and through step 2) and name it; one InputError naming what is missing."""
    path = Path(path).resolve()
    manifest = read_run_manifest(path)
    con = open_catalog(path)
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    finally:
        con.close()
    missing = [v for v in STEP2_VIEWS if v not in views]
    if missing:
        raise InputError(f"{path}: no {missing[0]} table (step 2 has not run); run `miner signatures {path}` first")
    units = read_run_table(path, "units").sort_by("unit_id")
    ids = units["unit_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise InputError(f"{path}/units.parquet: unit ids are not 0..{len(ids) - 1}")
    slug = SLUG.sub("-", path.name) or "run"
    base, n = slug, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    sites = [str(s) for s in units["site"].to_pylist()]
    layers, idxs = units["layer"].to_numpy(), units["idx"].to_numpy()
    place = {(s, int(layer), int(i)): int(u) for s, layer, i, u in zip(sites, layers, idxs, ids)}
    return ServedRun(slug=slug, path=path, manifest=manifest, unit_ids=ids, sites=sites, layers=layers, idxs=idxs,
                     place=place)


def neighbours(run: ServedRun, unit_id: int) -> dict[str, int | None]:
    """The previous / next unit of the same site and layer, and the same index one layer up / down."""
    site, layer, idx = run.sites[unit_id], int(run.layers[unit_id]), int(run.idxs[unit_id])
    return {"prev": run.place.get((site, layer, idx - 1)), "next": run.place.get((site, layer, idx + 1)),
            "up": run.place.get((site, layer - 1, idx)), "down": run.place.get((site, layer + 1, idx))}
