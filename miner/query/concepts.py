"""`miner concepts`: units ranked by how well their queue matches a concept's sentence set (IoU, precision).

A concept is a list of words (matched as whole words on the spaCy tokens or the text) and/or a SQL predicate
over the run's `sentences` view, run in the read-only sandbox of `miner sql`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa

from miner.errors import ConfigError, InputError, MinerError
from miner.query.guard import check_read_only
from miner.query.sql import query_arrow
from miner.run.catalog import read_run_manifest, read_run_table, run_table_rows
from miner.run.folder import FILES

Match = Literal["auto", "tokens", "text"]

_CLAUSE_WORDS = frozenset({"select", "from", "union", "intersect", "except", "order", "limit", "offset", "group",
                           "having", "window", "qualify", "returning", "into", "using", "join"})


def check_predicate(predicate: str) -> str:
    """A SQL boolean expression over `sentences`, checked to be one pure expression; returns it stripped.

    Subqueries inside parentheses are allowed; a top-level clause, an unbalanced parenthesis or a `;` is not.

    >>> check_predicate(" domain = 'news' AND sentiment = 'positive' ")
    "domain = 'news' AND sentiment = 'positive'"
    >>> check_predicate("sentence_id IN (SELECT sentence_id FROM tokens WHERE lower = 'lol')")
    "sentence_id IN (SELECT sentence_id FROM tokens WHERE lower = 'lol')"
    >>> check_predicate("1 = 1) UNION SELECT (1")
    Traceback (most recent call last):
    miner.errors.ConfigError: predicate: unbalanced ')'; give one boolean expression
    >>> check_predicate("true; DROP VIEW units")
    Traceback (most recent call last):
    miner.errors.ConfigError: predicate: ';' is not allowed; give one boolean expression
    """
    text = predicate.strip()
    if not text:
        raise ConfigError("predicate: empty")
    try:
        tokens = duckdb.tokenize(text)
    except duckdb.Error as exc:
        raise ConfigError(f"predicate: cannot parse: {exc}") from None
    depth = 0
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        word = text[start:end].strip()
        if kind.name == "operator":
            for ch in word:
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth < 0:
                    raise ConfigError("predicate: unbalanced ')'; give one boolean expression")
            if ";" in word:
                raise ConfigError("predicate: ';' is not allowed; give one boolean expression")
        elif kind.name in ("keyword", "identifier") and depth == 0 and word.lower() in _CLAUSE_WORDS:
            raise ConfigError(f"predicate: {word.upper()} is not allowed at the top level; give one boolean "
                              "expression (subqueries go in parentheses)")
    if depth:
        raise ConfigError("predicate: unbalanced '('; give one boolean expression")
    return text


def predicate_sentences(run_dir: Path, predicate: str) -> np.ndarray:
    """Sorted sentence ids of the run's sentences table matching a SQL predicate (read-only sandbox)."""
    sql = f"SELECT DISTINCT sentence_id FROM sentences WHERE (\n{check_predicate(predicate)}\n)"
    check_read_only(sql)
    return np.sort(query_arrow(run_dir, sql)["sentence_id"].to_numpy())


def word_pattern(words: list[str]) -> str:
    """RE2 regex (case-insensitive via the 'i' flag) matching any entry as whole words, spaces as any run
    of whitespace.

    >>> print(word_pattern(["u.s.", "United  States", "u.s."]))
    (^|[^\\pL\\pN_])(?:u\\.s\\.|united\\s+states)([^\\pL\\pN_]|$)
    """
    entries = ["\\s+".join(re.escape(part) for part in w.split()) for w in _entries(words)]
    return "(^|[^\\pL\\pN_])(?:" + "|".join(entries) + ")([^\\pL\\pN_]|$)"


def _entries(words: list[str]) -> list[str]:
    """The distinct entries, lower-cased with single spaces, in their first order.

    >>> _entries(["U.S.", " united   states ", "u.s.", ""])
    ['u.s.', 'united states']
    """
    entries = list(dict.fromkeys(" ".join(w.lower().split()) for w in words if w and w.strip()))
    if not entries:
        raise ConfigError("words: no word given")
    return entries


def word_sentences(run_dir: Path, words: list[str], match: Match = "auto") -> np.ndarray:
    """Sorted ids of the run's sentences containing any entry (case-insensitive, whole words).

    match 'tokens': an entry's space-separated parts must be consecutive spaCy tokens (tokens.lower), so
    "u.s." matches the token "U.S." and "united states" two tokens in a row; 'text': a regex over the text
    (word_pattern); 'auto': tokens when the run has tokens.parquet, else text.
    """
    run_dir = Path(run_dir)
    tokens_path = run_dir / FILES.tokens
    if match == "auto":
        match = "tokens" if tokens_path.exists() else "text"
    con = duckdb.connect(":memory:")
    try:
        sentences = str(run_dir / FILES.sentences)
        if match == "text":
            sql = "SELECT sentence_id FROM read_parquet($s) WHERE regexp_matches(text, $re, 'i')"
            ids = con.execute(sql, {"s": sentences, "re": word_pattern(words)}).fetchnumpy()["sentence_id"]
        elif match == "tokens":
            if not tokens_path.exists():
                raise InputError(f"{run_dir}: no {FILES.tokens} (run `miner signatures`), or match words on the text")
            ids = _token_matches(con, str(tokens_path), sentences, [e.split() for e in _entries(words)])
        else:
            raise ConfigError(f"match: {match!r} is not one of auto, tokens, text")
    finally:
        con.close()
    return np.unique(np.asarray(ids, np.int64))


def _token_matches(con: duckdb.DuckDBPyConnection, tokens: str, sentences: str, entries: list[list[str]]) -> np.ndarray:
    params: dict[str, object] = {"tokens": tokens, "sentences": sentences}
    selects = []
    singles = [e[0] for e in entries if len(e) == 1]
    if singles:
        params["singles"] = singles
        selects.append("SELECT sentence_id FROM tok WHERE lower IN (SELECT unnest($singles))")
    for n, entry in enumerate(e for e in entries if len(e) > 1):
        joins = " ".join(f"JOIN tok t{j} ON t{j}.sentence_id = t0.sentence_id AND t{j}.position = t0.position + {j}"
                         for j in range(1, len(entry)))
        where = " AND ".join(f"t{j}.lower = $e{n}_{j}" for j in range(len(entry)))
        params.update({f"e{n}_{j}": part for j, part in enumerate(entry)})
        selects.append(f"SELECT t0.sentence_id FROM tok t0 {joins} WHERE {where}")
    sql = (f"WITH tok AS (SELECT sentence_id, position, lower FROM read_parquet($tokens)) "
           f"SELECT DISTINCT sentence_id FROM ({' UNION ALL '.join(selects)}) "
           f"WHERE sentence_id IN (SELECT sentence_id FROM read_parquet($sentences))")
    return con.execute(sql, params).fetchnumpy()["sentence_id"]


def concept_scores(unit_ids: np.ndarray, sentence_ids: np.ndarray, concept: np.ndarray,
                   n_units: int) -> dict[str, np.ndarray]:
    """Queue-vs-concept overlap of every unit at once from queue entries (unit_ids[i], sentence_ids[i]).

    hits = |queue ∩ concept|, precision = hits / |queue|, recall = hits / |concept|,
    iou = hits / (|queue| + |concept| - hits). It is the sparse (units x sentences) membership matrix times
    the concept's indicator vector, done as a weighted bincount.

    Queues {0: [1, 2], 1: [2, 3, 4]} and the concept [2, 3]:

    >>> s = concept_scores(np.array([0, 0, 1, 1, 1]), np.array([1, 2, 2, 3, 4]), np.array([2, 3]), 2)
    >>> s["hits"].tolist(), s["precision"].round(3).tolist(), s["recall"].tolist(), s["iou"].round(3).tolist()
    ([1, 2], [0.5, 0.667], [0.5, 1.0], [0.333, 0.667])
    """
    member = np.isin(sentence_ids, concept)
    queue = np.bincount(unit_ids, minlength=n_units).astype(np.int64)
    hits = np.bincount(unit_ids, weights=member, minlength=n_units).astype(np.int64)
    size = len(concept)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(queue > 0, hits / np.maximum(queue, 1), 0.0)
        recall = hits / size if size else np.zeros(n_units)
        union = queue + size - hits
        iou = np.where(union > 0, hits / np.maximum(union, 1), 0.0)
    return {"queue_size": queue, "hits": hits, "precision": precision, "recall": recall, "iou": iou}


def concept_sentences(run_dir: Path, words: list[str] | None = None, predicate_sql: str | None = None,
                      match: Match = "auto") -> np.ndarray:
    """The concept's sentence set: run sentences (the sentences table, i.e. sentences held by any queue)
    containing any of `words` AND/OR matching `predicate_sql`; both given = their intersection."""
    if not words and not predicate_sql:
        raise ConfigError("concept: give words (--words) or a predicate (--where)")
    sets = []
    if words:
        sets.append(word_sentences(run_dir, words, match))
    if predicate_sql:
        sets.append(predicate_sentences(run_dir, predicate_sql))
    return sets[0] if len(sets) == 1 else np.intersect1d(sets[0], sets[1])


def concept_search(run_dir: Path, words: list[str] | None = None, predicate_sql: str | None = None,
                   direction: str = "top", top: int | None = 20, match: Match = "auto") -> pa.Table:
    """Units ranked by how well their queue matches a concept (the paper's "United States neuron" workflow).

    The concept's sentence set is drawn from the run's sentences (every sentence in any queue), not from the
    whole corpus: queues can only hold mined sentences and only those are tagged; it makes recall "share of
    the concept's queue sentences that this unit holds". Ranked by iou, then precision, then unit_id; `top`
    rows (None = all). Columns: rank, unit_id, site, layer, idx, direction, queue_size, concept_size, hits,
    precision, recall, iou, lift (precision / the concept's share of the run's sentences).
    Example: concept_search(run, ["united states", "u.s.", "america"]) or
             concept_search(run, predicate_sql="domain = 'social_media' AND sentiment = 'positive'").
    """
    run_dir = Path(run_dir).resolve()
    read_run_manifest(run_dir)
    if direction not in ("top", "bottom"):
        raise ConfigError(f"direction: {direction!r} is not top or bottom")
    concept = concept_sentences(run_dir, words, predicate_sql, match)
    if not len(concept):
        raise MinerError("concept: no sentence of the run matches it")
    units = read_run_table(run_dir, "units").sort_by("unit_id")
    n_units = int(units["unit_id"].to_numpy().max()) + 1
    queues = read_run_table(run_dir, "top_sentences", columns=["unit_id", "sentence_id"],
                            filters=[("direction", "=", direction)])
    scores = concept_scores(queues["unit_id"].to_numpy(), queues["sentence_id"].to_numpy(), concept, n_units)
    ids = units["unit_id"].to_numpy()
    n_sentences = run_table_rows(run_dir, "sentences")
    base = len(concept) / max(n_sentences, 1)
    order = np.lexsort((ids, -scores["precision"][ids], -scores["iou"][ids]))
    order = order[scores["queue_size"][ids][order] > 0]
    if top is not None:
        order = order[:top]
    sel = ids[order]
    return pa.table({
        "rank": pa.array(np.arange(1, len(sel) + 1), pa.int32()), "unit_id": pa.array(sel, pa.int32()),
        "site": units["site"].take(order), "layer": units["layer"].take(order), "idx": units["idx"].take(order),
        "direction": pa.array([direction] * len(sel), pa.string()),
        "queue_size": pa.array(scores["queue_size"][sel]), "concept_size": pa.array(np.full(len(sel), len(concept))),
        "hits": pa.array(scores["hits"][sel]), "precision": pa.array(scores["precision"][sel]),
        "recall": pa.array(scores["recall"][sel]), "iou": pa.array(scores["iou"][sel]),
        "lift": pa.array(scores["precision"][sel] / base)})
