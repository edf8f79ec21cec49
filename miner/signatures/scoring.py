"""Step 2's explanation scores: every unit's signature scored on the held-out split (issue 16).

The held-out score-sample sentences (:mod:`miner.explain.held_out`) are tagged and featurised with the queue
and background sentences but count for neither, so their word and POS patterns are those of the same pattern
index. Each held-out sentence gets a feature row (`presence`): 1 for every word, word pattern, POS pattern and
metadata value it holds, and for each POS group (noun, verb, adjective) its share of the sentence's tokens over
the corpus share. Each queue (unit, direction) gets a weight column: log(rel_freq) of its signature items,
log(rel_share) of its over-represented metadata values (count >= the queue's support threshold) and
log(group_rel) of its over-represented POS groups. The simulator is their product
(:func:`miner.explain.scores.simulate`); against the true held-out scores (negated for the bottom direction):

- simulation: Pearson r; simulation_baseline: the same with another unit's weights (seeded, no fixed point);
- detection_auc: ROC AUC of the simulation separating the top band (the ceil((1 - top_band) H) highest of
  the H held-out scores, ties by row) from the other held-out sentences; detection_baseline likewise shuffled.

unit_formulas holds each unit's compositional explanation (:func:`miner.explain.formulas.beam_search`) of its
top band over atoms word:<lowercased token>, pos:<PTB tag> and <field>=<value> of the held-out sentences.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from scipy.stats import rankdata

from miner.cluster.tasks import map_chunks
from miner.config import ScoreOptions, SignatureOptions
from miner.explain.formulas import ConceptTable, beam_search, concept_table
from miner.explain.held_out import HeldOut
from miner.explain.scores import pearson_columns, shuffled_weights
from miner.signatures.aggregate import DIRECTIONS, POS_GROUPS
from miner.signatures.features import SentenceFeatures
from miner.signatures.patterns import PatternIndex

log = logging.getLogger(__name__)

COLUMN_CHUNK = 512
"""Queues simulated at once (bounds the dense [held-out, queues] blocks)."""


def band_size(n: int, top_band: float) -> int:
    """Sentences in the top band of n held-out scores (at least one).

    >>> band_size(2000, 0.99), band_size(10, 0.99), band_size(0, 0.99)
    (20, 1, 0)
    """
    return max(1, math.ceil((1 - top_band) * n - 1e-9)) if n else 0


def top_band(true: np.ndarray, k: int) -> np.ndarray:
    """bool [sentences, queues]: the k highest scores of each column (ties: the lower row).

    >>> top_band(np.array([[1.0], [3.0], [3.0], [2.0]]), 2)[:, 0].tolist()
    [False, True, True, False]
    """
    order = np.argsort(-true, axis=0, kind="stable")[:k]
    band = np.zeros(true.shape, bool)
    np.put_along_axis(band, order, True, axis=0)
    return band


def auc_columns(sim: np.ndarray, band: np.ndarray) -> np.ndarray:
    """ROC AUC per column of `sim` with the band's rows as positives and the rest as negatives (ties half;
    NaN when a side is empty): Mann-Whitney U over ranks, all columns at once."""
    n_pos = band.sum(axis=0).astype(np.float64)
    n_neg = band.shape[0] - n_pos
    ranks = rankdata(sim, axis=0)
    u = (ranks * band).sum(axis=0) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _index_presence(index: PatternIndex, rows: np.ndarray) -> sp.csr_matrix:
    """[rows, patterns] 0/1: the patterns each given sentence holds."""
    counts = np.diff(index.offsets)[rows]
    return sp.csr_matrix((np.ones(int(counts.sum())), index.gather(rows), np.concatenate([[0], np.cumsum(counts)])),
                         shape=(len(rows), index.n_patterns))


def _pattern_ids(index: PatternIndex, vocab: np.ndarray, present: np.ndarray) -> dict[str, int]:
    """Text -> pattern id of the given pattern ids (as the signatures table writes patterns)."""
    return {" ".join(vocab[index.items[p, : index.lengths[p]]]): int(p) for p in present.tolist()}


def _group_shares(features: SentenceFeatures, rows: np.ndarray) -> np.ndarray:
    """float64 [rows, groups]: each sentence's share of tokens of each POS group over the background's share."""
    tags = features.tag_vocab.astype(str)
    counts = features.tag_counts[rows].astype(np.float64)
    bg = features.tag_counts[features.background_rows].sum(axis=0).astype(np.float64)
    out = np.zeros((len(rows), len(POS_GROUPS)))
    for g, prefixes in enumerate(POS_GROUPS.values()):
        sel = np.array([t.startswith(prefixes) for t in tags], bool)
        corpus = bg[sel].sum() / bg.sum() if bg.sum() else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            share = counts[:, sel].sum(axis=1) / counts.sum(axis=1)
        out[:, g] = np.nan_to_num(share / corpus) if corpus else 0.0
    return out


class Simulator:
    """Feature rows of the held-out sentences and the item columns of the signature weights."""

    def __init__(self, features: SentenceFeatures, rows: np.ndarray) -> None:
        self.rows = rows
        words, pos = _index_presence(features.words, rows), _index_presence(features.pos, rows)
        self.word_ids = _pattern_ids(features.words, features.word_vocab, np.unique(words.indices))
        self.pos_ids = _pattern_ids(features.pos, features.tag_vocab, np.unique(pos.indices))
        self.pos_offset = words.shape[1]
        blocks: list[sp.spmatrix] = [words, pos]
        self.value_offset: dict[tuple[str, str], int] = {}
        start = words.shape[1] + pos.shape[1]
        for f, field in enumerate(features.fields):
            values = features.field_values[f]
            codes = features.field_codes[f][rows]
            named = codes < len(values)
            blocks.append(sp.csr_matrix((np.ones(int(named.sum())), (np.flatnonzero(named), codes[named])),
                                        shape=(len(rows), len(values))))
            for v, value in enumerate(values.tolist()):
                self.value_offset[(field, str(value))] = start + v
            start += len(values)
        self.group_offset = start
        blocks.append(sp.csr_matrix(_group_shares(features, rows)))
        self.presence = sp.csr_matrix(sp.hstack(blocks, format="csr"))

    @property
    def n_items(self) -> int:
        return int(self.presence.shape[1])

    def weights(self, tables: dict[str, pa.Table], n_units: int, options: SignatureOptions) -> sp.csc_matrix:
        """[items, 2 * units] weights; column unit * 2 + (direction == "bottom")."""
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        sig = tables["signatures"].to_pydict()
        item, col, w = [], [], []
        for unit, direction, kind, pattern, rel in zip(sig["unit_id"], sig["direction"], sig["kind"], sig["pattern"],
                                                       sig["rel_freq"]):
            pid = (self.pos_ids.get(pattern) if kind == "pos_pattern" else self.word_ids.get(pattern))
            if pid is None or not rel > 1:  # not held by any held-out sentence: a zero column
                continue
            item.append(pid + (self.pos_offset if kind == "pos_pattern" else 0))
            col.append(unit * 2 + DIRECTIONS.index(direction))
            w.append(math.log(rel))
        rows.append(np.array(item, np.int64))
        cols.append(np.array(col, np.int64))
        vals.append(np.array(w))
        stats = tables["unit_stats"].to_pydict()
        size = {(u, d): n for u, d, n in zip(stats["unit_id"], stats["direction"], stats["n_sentences"])}
        meta = tables["unit_metadata"].to_pydict()
        item, col, w = [], [], []
        for unit, direction, field, value, count, rel in zip(meta["unit_id"], meta["direction"], meta["field"],
                                                             meta["value"], meta["count"], meta["rel_share"]):
            at = self.value_offset.get((field, str(value))) if value is not None else None
            if at is None or rel is None or not rel > 1 or count < options.threshold(size.get((unit, direction), 0)):
                continue
            item.append(at)
            col.append(unit * 2 + DIRECTIONS.index(direction))
            w.append(math.log(rel))
        for g, group in enumerate(POS_GROUPS):
            for unit, direction, rel in zip(stats["unit_id"], stats["direction"], stats[f"{group}_rel"]):
                if rel is not None and rel > 1:
                    item.append(self.group_offset + g)
                    col.append(unit * 2 + DIRECTIONS.index(direction))
                    w.append(math.log(rel))
        rows.append(np.array(item, np.int64))
        cols.append(np.array(col, np.int64))
        vals.append(np.array(w))
        r, c, v = (np.concatenate(x) for x in (rows, cols, vals))
        return sp.csc_matrix((v, (r, c)), shape=(self.n_items, 2 * n_units))


def score_queues(presence: sp.csr_matrix, weights: sp.csc_matrix, true: np.ndarray, options: ScoreOptions,
                 queues: np.ndarray) -> dict[str, np.ndarray]:
    """Simulation and detection scores (and their shuffled baselines) of the given queue columns; `true` is
    float32 [held-out, units] (the bottom direction's true score is the negated one)."""
    k = band_size(true.shape[0], options.top_band)
    shuffled = shuffled_weights(weights, options.baseline_seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("simulation", "simulation_baseline", "detection_auc",
                                                        "detection_baseline", "n_items")}
    for lo in range(0, len(queues), COLUMN_CHUNK):
        q = queues[lo : lo + COLUMN_CHUNK]
        t = true[:, q // 2].astype(np.float64) * np.where(q % 2 == 1, -1.0, 1.0)
        band = top_band(t, k)
        for name, w in (("", weights), ("_baseline", shuffled)):
            sim = np.asarray((presence @ w[:, q]).todense(), dtype=np.float64)
            out["simulation" + name].append(pearson_columns(sim, t))
            out[("detection_auc" if not name else "detection_baseline")].append(auc_columns(sim, band))
        out["n_items"].append(np.diff(weights.indptr)[q])
    return {name: np.concatenate(v) if v else np.zeros(0) for name, v in out.items()}


def concept_atoms(features: SentenceFeatures, rows: np.ndarray) -> ConceptTable:
    """Atoms of the held-out sentences: word:<token>, pos:<tag>, <field>=<value> (no minimum yet)."""
    words = _index_presence(features.words, rows)
    single = features.words.lengths == 1
    names: list[list[str]] = [[] for _ in rows]
    for i in range(len(rows)):
        ids = words.indices[words.indptr[i] : words.indptr[i + 1]]
        ids = ids[single[ids]]
        names[i].extend(f"word:{features.word_vocab[features.words.items[p, 0]]}" for p in ids.tolist())
        names[i].extend(f"pos:{t}" for t in features.tag_vocab[np.flatnonzero(features.tag_counts[rows[i]])].tolist())
    for f, field in enumerate(features.fields):
        values = features.field_values[f]
        for i, code in enumerate(features.field_codes[f][rows].tolist()):
            if code < len(values):
                names[i].append(f"{field}={values[code]}")
    return concept_table(names)


def _formula_chunk(units: np.ndarray, table: ConceptTable, band: np.ndarray, length: int,
                   beam: int) -> list[tuple]:
    """(unit, formula, length, iou, precision, recall, support) for the given units (a Ray task, or inline)."""
    out = []
    for j, unit in enumerate(units.tolist()):
        fit = beam_search(table, band[:, j], max_length=length, beam=beam)
        out.append((unit, fit.text, len(fit.formula), fit.iou, fit.precision, fit.recall, fit.support))
    return out


def unit_formulas(features: SentenceFeatures, rows: np.ndarray, true: np.ndarray, units: np.ndarray,
                  options: ScoreOptions, executor: str = "inline", parts: int = 1,
                  address: str | None = None) -> pa.Table:
    """The best formula of each unit's top band (top direction) over the held-out atoms; `true` is [held-out
    rows, all units], `units` the unit ids (columns of `true`) to explain."""
    atoms = concept_atoms(features, rows)
    counts = np.asarray(atoms.matrix.sum(axis=1)).ravel()
    keep = np.flatnonzero(counts >= options.min_concept_count)
    if len(keep) > options.max_concepts:
        names = np.asarray(atoms.names, dtype=object)
        keep = np.sort(keep[np.lexsort((names[keep], -counts[keep]))[: options.max_concepts]])
    table = ConceptTable([atoms.names[k] for k in keep], sp.csr_matrix(atoms.matrix[keep]))
    k = band_size(true.shape[0], options.top_band)
    chunks = [c for c in np.array_split(units, max(parts, 1)) if len(c)]
    bands = [top_band(true[:, c].astype(np.float64), k) for c in chunks]
    results = map_chunks(_formula_band, list(zip(chunks, bands)), (table, options.formula_length, options.beam),
                         executor=executor, address=address)
    found = [row for part in results for row in part]
    cols: list[tuple[Any, ...]] = list(zip(*found)) if found else [() for _ in range(7)]
    return pa.table({
        "unit_id": pa.array(cols[0], pa.int32()),
        "direction": pa.array(["top"] * len(found), pa.string()),
        "formula": pa.array(cols[1], pa.string()),
        "length": pa.array(cols[2], pa.int8()),
        "iou": pa.array(cols[3], pa.float64()),
        "precision": pa.array(cols[4], pa.float64()),
        "recall": pa.array(cols[5], pa.float64()),
        "support": pa.array(cols[6], pa.int32()),
        "band_sentences": pa.array([k] * len(found), pa.int32()),
        "atoms": pa.array([len(table.names)] * len(found), pa.int32()),
    })


def _formula_band(chunk: tuple[np.ndarray, np.ndarray], table: ConceptTable, length: int, beam: int) -> list[tuple]:
    units, band = chunk
    return _formula_chunk(units, table, band, length, beam)


def score_units(features: SentenceFeatures, tables: dict[str, pa.Table], held_out: HeldOut, true: np.ndarray,
                options: ScoreOptions, signature_options: SignatureOptions, executor: str = "inline", parts: int = 1,
                address: str | None = None) -> tuple[dict[str, pa.Table], dict]:
    """unit_scores and unit_formulas for every queue of the signatures' unit_stats, and the manifest's record.

    `true` is the float32 [held-out rows, units] slice of the score sample (held_out.rows of scores.npy)."""
    t0 = time.monotonic()
    rows = np.searchsorted(features.sentence_ids, held_out.sentence_ids)
    if len(rows) and not np.array_equal(features.sentence_ids[np.minimum(rows, len(features.sentence_ids) - 1)],
                                        held_out.sentence_ids):
        raise ValueError("held-out sentences missing from the sentence features")
    sim = Simulator(features, rows)
    n_units = true.shape[1]
    weights = sim.weights(tables, n_units, signature_options)
    stats = tables["unit_stats"]
    unit = stats["unit_id"].to_numpy().astype(np.int64)
    direction = np.array(stats["direction"].to_pylist(), dtype=object)
    queues = unit * 2 + (direction == "bottom")
    got = score_queues(sim.presence, weights, true, options, queues)
    seconds = {"scores": time.monotonic() - t0}
    h, k = true.shape[0], band_size(true.shape[0], options.top_band)
    scores = pa.table({
        "unit_id": pa.array(unit, pa.int32()),
        "direction": pa.array(direction.tolist(), pa.string()),
        "simulation": pa.array(got["simulation"], pa.float64(), from_pandas=True),
        "simulation_baseline": pa.array(got["simulation_baseline"], pa.float64(), from_pandas=True),
        "detection_auc": pa.array(got["detection_auc"], pa.float64(), from_pandas=True),
        "detection_baseline": pa.array(got["detection_baseline"], pa.float64(), from_pandas=True),
        "signature_items": pa.array(got["n_items"], pa.int32()),
        "held_out_sentences": pa.array(np.full(len(unit), h), pa.int32()),
        "top_band_sentences": pa.array(np.full(len(unit), k), pa.int32()),
    })
    out = {"unit_scores": scores}
    if options.formulas:
        t = time.monotonic()
        top_units = np.unique(unit[direction == "top"])
        out["unit_formulas"] = unit_formulas(features, rows, true, top_units, options, executor, parts, address)
        seconds["formulas"] = time.monotonic() - t
    record = {"status": "complete", "options": options.model_dump(mode="json"), "split": held_out.record(),
              "queues": int(len(unit)), "items": sim.n_items,
              "median_simulation": _median(got["simulation"]), "median_detection_auc": _median(got["detection_auc"]),
              "median_simulation_baseline": _median(got["simulation_baseline"]),
              "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    log.info("scored %d queues on %d held-out sentences in %.1f s (median simulation %.3f, AUC %.3f)", len(unit), h,
             seconds["scores"], record["median_simulation"] or float("nan"), record["median_detection_auc"] or
             float("nan"))
    return out, record


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return round(float(np.median(x)), 4) if len(x) else None
