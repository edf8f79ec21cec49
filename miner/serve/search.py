"""Search a served run's units: by words (concept search, as `miner concepts`), by SQL returning unit_id (the
`miner sql` sandbox and guard) or by the share of one metadata value among the unit's top sentences."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from miner.errors import ConfigError
from miner.query.concepts import concept_search
from miner.query.sandbox import query_batches
from miner.run.catalog import open_catalog
from miner.serve.runs import ServedRun

MAX_RESULTS = 200
"""Units listed per search."""
MAX_FIELD = 500
"""Characters of a search field."""


@dataclass(frozen=True)
class SearchForm:
    words: str = ""
    sql: str = ""
    field: str = ""
    value: str = ""
    min_share: str = "0.6"

    @classmethod
    def from_params(cls, params: dict[str, str], strict: bool = True) -> SearchForm:
        values = {k: str(params.get(k, getattr(cls, k))) for k in ("words", "sql", "field", "value", "min_share")}
        if strict:
            for k, v in values.items():
                if len(v) > MAX_FIELD:
                    raise ConfigError(f"{k}: at most {MAX_FIELD} characters")
        else:
            values = {k: v[:MAX_FIELD] for k, v in values.items()}
        return cls(**values)

    @property
    def empty(self) -> bool:
        return not (self.words.strip() or self.sql.strip() or (self.field.strip() and self.value.strip()))

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _words(text: str) -> list[str]:
    """Concept words: comma-separated phrases, or else whitespace-separated words.

    >>> _words("united states, u.s."), _words("lol haha")
    (['united states', 'u.s.'], ['lol', 'haha'])
    """
    parts = [p.strip() for p in text.split(",")] if "," in text else text.split()
    return [p for p in parts if p]


def search_units(run: ServedRun, form: SearchForm) -> dict[str, Any]:
    """{"results": [{"unit_id", "label", "cells", "words"}], "columns", "how"} for the first filled field."""
    if form.words.strip():
        table = concept_search(run.path, words=_words(form.words), top=MAX_RESULTS)
        columns = ["precision", "recall", "iou", "hits"]
        ids = table["unit_id"].to_numpy()
        values = [{c: table[c][i].as_py() for c in columns} for i in range(table.num_rows)]
        how = f"units whose top sentences best match {', '.join(_words(form.words))} (IoU)"
    elif form.sql.strip():
        table = first_rows(run, form.sql, MAX_RESULTS)
        if "unit_id" not in table.column_names:
            raise ConfigError(f"sql: the query must return a unit_id column (it returned {', '.join(table.column_names)})")
        ids = np.asarray(table["unit_id"].to_pylist(), dtype=np.int64)
        columns = [c for c in table.column_names if c != "unit_id" and _numeric(table.schema.field(c).type)][:4]
        values = [{c: table[c][i].as_py() for c in columns} for i in range(table.num_rows)]
        how = "the query's units, in its order"
    else:
        try:
            share = float(form.min_share or 0)
        except ValueError:
            raise ConfigError(f"min_share: {form.min_share!r} is not a number") from None
        if not 0 <= share <= 1:
            raise ConfigError(f"min_share: {share} is not between 0 and 1")
        con = open_catalog(run.path)
        try:
            rows = con.execute("""SELECT unit_id, share, rel_share FROM unit_metadata
                                  WHERE direction = 'top' AND field = ? AND value = ? AND share >= ?
                                  ORDER BY share DESC, unit_id LIMIT ?""",
                               [form.field.strip(), form.value.strip(), share, MAX_RESULTS]).fetchall()
        finally:
            con.close()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        columns = ["share", "rel_share"]
        values = [{"share": r[1], "rel_share": r[2]} for r in rows]
        how = f"units whose top sentences are at least {share:.0%} {form.field.strip()} = {form.value.strip()}"
    ids = [int(u) for u in ids]
    bad = [u for u in ids if not run.has(u)]
    if bad:
        raise ConfigError(f"sql: unit_id {bad[0]} is not a unit of the run")
    words = signature_words(run, ids)
    results = [{"unit_id": u, "label": run.label(u), "cells": v, "words": words.get(u, [])}
               for u, v in zip(ids, values)]
    return {"results": results, "columns": columns, "how": how}


def first_rows(run: ServedRun, sql: str, n: int) -> pa.Table:
    """The first n rows of a read-only query (streamed: a query with millions of rows is not materialised)."""
    with query_batches(run.path, sql) as result:
        batches, rows = [], 0
        for batch in result.batches:
            batches.append(batch.slice(0, n - rows))
            rows += batches[-1].num_rows
            if rows >= n:
                break
        return pa.Table.from_batches(batches, result.schema)


def _numeric(kind: Any) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def signature_words(run: ServedRun, unit_ids: list[int], n: int = 5) -> dict[int, list[str]]:
    """The n top-direction signature words of each unit (by rank)."""
    if not unit_ids:
        return {}
    con = open_catalog(run.path)
    try:
        rows = con.execute("""SELECT unit_id, list(pattern ORDER BY rank) FROM signatures
                              WHERE direction = 'top' AND kind = 'word' AND rank <= ? AND unit_id IN
                              (SELECT unnest(?::INTEGER[])) GROUP BY unit_id""", [n, unit_ids]).fetchall()
    finally:
        con.close()
    return {int(u): list(w) for u, w in rows}


def signature_summaries(run: ServedRun, unit_ids: list[int]) -> dict[int, str]:
    """A one-line signature summary per unit: its top words and dominant domain."""
    words = signature_words(run, unit_ids)
    con = open_catalog(run.path)
    try:
        cols = {r[0] for r in con.execute("DESCRIBE unit_stats").fetchall()}
        domain = {}
        if "dominant_domain" in cols and unit_ids:
            domain = {int(u): (d, s) for u, d, s in con.execute(
                """SELECT unit_id, dominant_domain, dominant_domain_share FROM unit_stats
                   WHERE direction = 'top' AND unit_id IN (SELECT unnest(?::INTEGER[]))""", [unit_ids]).fetchall()}
    finally:
        con.close()
    out = {}
    for u in unit_ids:
        text = ", ".join(words.get(u, [])) or "no characteristic word"
        d = domain.get(u)
        if d and d[0] is not None and d[1] is not None:
            text += f" · {d[0]} {d[1]:.0%}"
        out[u] = text
    return out
