"""Step 2b: each unit's signature (the paper's table 2) for its top and bottom queues, all units at once.

Per-sentence work runs once per distinct sentence (:func:`miner.signatures.features.sentence_features`): word
and POS sequences, their bounded-gap patterns (:mod:`miner.signatures.patterns`), per-sentence tag counts and
metadata codes. Per queue (:func:`unit_signatures`) the rest is aggregation: one gather + bincount per pattern
kind, and sparse matrix products (queues x sentences) for POS ratios, lengths and metadata.

Relative frequency of a word or pattern w for a queue q of n sentences, against a background of B
sentences: ``rel_freq = (support_q(w) / n) / ((support_bg(w) + 1) / (B + 1))``, counting sentences that
contain w (once per sentence). Only w with ``support_q(w) >= max(min_support, ceil(min_share * n))`` (the
minimum support grows with the queue) and ``rel_freq > min_rel_freq`` (default 1: over-represented in the
queue; an item as common in the unit's sentences as in the corpus, like "the .", says nothing of the unit) are
ranked. Example: w in 10 of a unit's 20 sentences and in 9 of 999 background sentences ->
(10 / 20) / (10 / 1000) = 50.0.

The selectivity columns of unit_stats follow the paper (:mod:`miner.signatures.selectivity`): pos_selectivity =
max(noun_rel, verb_rel, adj_rel) and sentiment_std over the binary (positive/negative) polarity; the max over
all PTB tags is pos_selectivity_ptb and the three-way sentiment (neutral = 0) is sentiment_*_3way.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from miner.config import SignatureOptions
from miner.signatures.features import SentenceFeatures, queue_key, sentence_features
from miner.signatures.selectivity import binary_polarity, class_selectivity, polarity_spread

DIRECTIONS = ("top", "bottom")
POS_GROUPS = {"noun": ("NN",), "verb": ("V",), "adj": ("J",)}
"""Tag prefixes of the POS ratios: nouns NN* (NFP, a punctuation tag, is not a noun), verbs V*, adjectives J*."""


def unit_signatures(features: SentenceFeatures, top_sentences: pa.Table,
                    options: SignatureOptions) -> dict[str, pa.Table]:
    """signatures, unit_stats and unit_metadata tables for every (unit, direction) queue in top_sentences."""
    unit, direction, rows, bounds = _queues(features, top_sentences)
    n_queue = len(unit)
    sizes = np.diff(bounds)
    q_of = np.repeat(np.arange(n_queue), sizes)
    member = sp.csr_matrix((np.ones(len(rows), np.int64), (q_of, rows)),
                           shape=(n_queue, len(features.sentence_ids)))
    metadata, dominant = _metadata_table(features, unit, direction, q_of, rows, sizes)
    return {
        "signatures": _pattern_table(features, unit, direction, rows, bounds, options),
        "unit_stats": _stats_table(features, unit, direction, member, sizes, options, dominant),
        "unit_metadata": metadata,
    }


def compute_signatures(top_sentences: pa.Table, sentences: pa.Table, tokens: pa.Table, background_ids: np.ndarray,
                       options: SignatureOptions | None = None) -> dict[str, pa.Table]:
    """All of step 2b in one call: :func:`sentence_features` then :func:`unit_signatures`."""
    options = options or SignatureOptions()
    features = sentence_features(top_sentences, sentences, tokens, background_ids, options)
    return unit_signatures(features, top_sentences, options)



def _queues(features: SentenceFeatures, top: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(unit id, direction per queue; sentence rows of all queues concatenated; CSR bounds), queues sorted
    by unit then direction (top before bottom)."""
    key = queue_key(top)
    sid = top["sentence_id"].to_numpy()
    order = np.argsort(key, kind="stable")
    key, sid = key[order], sid[order]
    rows = np.searchsorted(features.sentence_ids, sid)
    if len(sid) and (rows.max() >= len(features.sentence_ids) or not np.array_equal(features.sentence_ids[rows], sid)):
        raise ValueError("top_sentences: holds sentences that the features were not computed for")
    qkeys, starts = np.unique(key, return_index=True)
    bounds = np.append(starts, len(key)).astype(np.int64)
    return (qkeys // 2).astype(np.int32), np.array(DIRECTIONS, dtype=object)[qkeys % 2], rows, bounds



def _pattern_table(features: SentenceFeatures, unit: np.ndarray, direction: np.ndarray, rows: np.ndarray,
                   bounds: np.ndarray, options: SignatureOptions) -> pa.Table:
    """Top-k words, word patterns and POS patterns per queue, ranked by relative frequency."""
    n_bg = len(features.background_rows)
    kinds = [
        ("word", features.words, features.word_vocab, features.words.lengths == 1),
        ("word_pattern", features.words, features.word_vocab, features.words.lengths >= 2),
        ("pos_pattern", features.pos, features.tag_vocab, np.ones(features.pos.n_patterns, bool)),
    ]
    bg_support = {id(features.words): features.words_background, id(features.pos): features.pos_background}
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("q", "kind", "pid", "support", "rank")}
    for queue in range(len(unit)):
        r = rows[bounds[queue]:bounds[queue + 1]]
        n = len(r)
        need = options.threshold(n)
        counts: dict[int, np.ndarray] = {}
        for ki, (_, ix, _, mask) in enumerate(kinds):
            if id(ix) not in counts:
                counts[id(ix)] = ix.count(r)
            c = counts[id(ix)]
            cand = np.flatnonzero((c >= need) & mask)
            if len(cand) == 0:
                continue
            sup = c[cand]
            rel = (sup / n) / ((bg_support[id(ix)][cand] + 1) / (n_bg + 1))
            keep = rel > options.min_rel_freq  # not over-represented: not characteristic of the unit
            cand, sup, rel = cand[keep], sup[keep], rel[keep]
            top = np.lexsort((cand, -sup, -rel))[: options.top_k]
            out["q"].append(np.full(len(top), queue))
            out["kind"].append(np.full(len(top), ki))
            out["pid"].append(cand[top])
            out["support"].append(sup[top])
            out["rank"].append(np.arange(1, len(top) + 1))
    cols = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in out.items()}
    q, kind, pid = cols["q"], cols["kind"], cols["pid"]
    patterns = np.empty(len(pid), dtype=object)
    lengths = np.zeros(len(pid), np.int8)
    bg = np.zeros(len(pid), np.int64)
    for ki, (_, ix, vocab, _) in enumerate(kinds):
        sel = kind == ki
        uniq, inv = np.unique(pid[sel], return_inverse=True)
        text = np.array([" ".join(vocab[ix.items[p, : ix.lengths[p]]]) for p in uniq], dtype=object)
        patterns[sel] = text[inv] if len(uniq) else text
        lengths[sel] = ix.lengths[pid[sel]]
        bg[sel] = bg_support[id(ix)][pid[sel]]
    n_q = np.diff(bounds)[q] if len(q) else np.zeros(0, np.int64)
    share = cols["support"] / np.maximum(n_q, 1)
    bg_share = bg / max(n_bg, 1)
    return pa.table({
        "unit_id": pa.array(unit[q], pa.int32()),
        "direction": pa.array(direction[q].tolist() if len(q) else [], pa.string()),
        "kind": pa.array(np.array([k[0] for k in kinds], dtype=object)[kind].tolist() if len(q) else [], pa.string()),
        "rank": pa.array(cols["rank"], pa.int32()),
        "pattern": pa.array(patterns.tolist(), pa.string()),
        "length": pa.array(lengths, pa.int8()),
        "support": pa.array(cols["support"], pa.int32()),
        "share": pa.array(share, pa.float64()),
        "background_support": pa.array(bg, pa.int32()),
        "background_share": pa.array(bg_share, pa.float64()),
        "rel_freq": pa.array((share / ((bg + 1) / (n_bg + 1))), pa.float64()),
    })


def _metadata_table(features: SentenceFeatures, unit: np.ndarray, direction: np.ndarray, q_of: np.ndarray,
                    rows: np.ndarray, sizes: np.ndarray) -> tuple[pa.Table, dict[str, pa.Array]]:
    """Counts and shares of every value (and the null bucket) of every summarised field, per queue, rows
    ordered by queue, field, count (descending), value; and the dominant_<field>(_share) columns: the most
    frequent non-null value (ties: the first by value) and its share of all the queue's sentences."""
    n_queue, n_bg = len(unit), len(features.background_rows)
    cols: dict[str, list] = {k: [] for k in ("q", "f", "v", "count", "corpus")}
    value_text: list[np.ndarray] = []
    dominant: dict[str, pa.Array] = {}
    for field, name in enumerate(features.fields):
        values = features.field_values[field]
        m = len(values) + 1
        codes = features.field_codes[field]
        counts = np.bincount(q_of * m + codes[rows], minlength=n_queue * m).reshape(n_queue, m)
        corpus = np.bincount(codes[features.background_rows], minlength=m) / n_bg if n_bg else np.full(m, np.nan)
        qi, vi = np.nonzero(counts)
        for key, arr in (("q", qi), ("f", np.full(len(qi), field)), ("v", vi), ("count", counts[qi, vi]),
                         ("corpus", corpus[vi])):
            cols[key].append(arr)
        value_text.append(np.append(values, np.array([None], dtype=object))[vi])
        named = counts[:, : m - 1]
        best = named.argmax(axis=1) if m > 1 else np.zeros(n_queue, np.int64)
        has = named[np.arange(n_queue), best] > 0 if m > 1 else np.zeros(n_queue, bool)
        dominant[f"dominant_{name}"] = pa.array([values[b] if h else None for b, h in zip(best, has)], pa.string())
        share = np.where(has, named[np.arange(n_queue), best] / np.maximum(sizes, 1), np.nan) if m > 1 else \
            np.full(n_queue, np.nan)
        dominant[f"dominant_{name}_share"] = pa.array(share, pa.float64(), from_pandas=True)
    q, f, v, count, corpus = (np.concatenate(cols[k]) if cols[k] else np.zeros(0, np.int64)
                              for k in ("q", "f", "v", "count", "corpus"))
    order = np.lexsort((v, -count, f, q))
    q, f, count, corpus = q[order], f[order], count[order], corpus[order].astype(np.float64)
    text = np.concatenate(value_text)[order] if value_text else np.zeros(0, object)
    share = count / np.maximum(sizes[q], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(corpus > 0, share / corpus, np.nan)
    table = pa.table({
        "unit_id": pa.array(unit[q], pa.int32()),
        "direction": pa.array(direction[q].tolist(), pa.string()),
        "field": pa.array(np.array(features.fields + [""], dtype=object)[f].tolist(), pa.string()),
        "value": pa.array(text.tolist(), pa.string()),
        "count": pa.array(count, pa.int32()),
        "share": pa.array(share, pa.float64()),
        "corpus_share": pa.array(corpus, pa.float64(), from_pandas=True),
        "rel_share": pa.array(rel, pa.float64(), from_pandas=True),
    })
    return table, dominant


def _stats_table(features: SentenceFeatures, unit: np.ndarray, direction: np.ndarray, member: sp.csr_matrix,
                 sizes: np.ndarray, options: SignatureOptions, dominant: dict[str, pa.Array]) -> pa.Table:
    """One row per queue: size, length, POS ratios, POS selectivity (the paper's, over noun/verb/adj, and the
    PTB-tag one), sentiment (binary and three-way), dominant metadata values."""
    n_queue = len(unit)
    tags = features.tag_vocab.astype(str)
    counts = np.asarray(member @ features.tag_counts.astype(np.int64))
    present = np.asarray(member @ (features.tag_counts > 0).astype(np.int64))
    tokens = counts.sum(axis=1)
    bg_counts = features.tag_counts[features.background_rows].sum(axis=0).astype(np.int64)
    bg_tokens = int(bg_counts.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        freq = counts / tokens[:, None]
    cols: dict[str, pa.Array] = {
        "unit_id": pa.array(unit, pa.int32()),
        "direction": pa.array(direction.tolist(), pa.string()),
        "n_sentences": pa.array(sizes, pa.int32()),
        "avg_length": pa.array(np.asarray(member @ features.n_tokens) / np.maximum(sizes, 1), pa.float64()),
    }
    rels = []
    for group, prefixes in POS_GROUPS.items():
        sel = np.array([t.startswith(prefixes) for t in tags], bool)
        ratio = freq[:, sel].sum(axis=1) if len(tags) else np.full(n_queue, np.nan)
        corpus = bg_counts[sel].sum() / bg_tokens if bg_tokens else np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = ratio / corpus if corpus else np.full(n_queue, np.nan)
        rels.append(rel)
        cols[f"{group}_ratio"] = pa.array(ratio, pa.float64(), from_pandas=True)
        cols[f"{group}_rel"] = pa.array(rel, pa.float64(), from_pandas=True)
    value, winner = class_selectivity(np.column_stack(rels))
    cols["pos_selectivity"] = pa.array(value, pa.float64(), from_pandas=True)
    cols["pos_selectivity_tag"] = pa.array([list(POS_GROUPS)[w] if w >= 0 else None for w in winner], pa.string())
    # PTB selectivity: max over tags (present in >= threshold sentences) of unit tag share / smoothed corpus share.
    corpus_freq = (bg_counts + 1) / (bg_tokens + 1)
    need = np.array([options.threshold(int(s)) for s in sizes])
    sel = np.where(present >= need[:, None], freq / corpus_freq, -np.inf)
    best = sel.argmax(axis=1) if len(tags) else np.zeros(n_queue, np.int64)
    best_val = sel[np.arange(n_queue), best] if len(tags) else np.full(n_queue, -np.inf)
    ok = np.isfinite(best_val)
    cols["pos_selectivity_ptb"] = pa.array(np.where(ok, best_val, np.nan), pa.float64(), from_pandas=True)
    cols["pos_selectivity_ptb_tag"] = pa.array([tags[b] if o else None for b, o in zip(best, ok)], pa.string())
    cols.update(_sentiment_columns(features, member))
    cols.update(dominant)
    cols["typical_sentence_id"] = pa.nulls(n_queue, pa.int64())
    return pa.table(cols)


def _sentiment_columns(features: SentenceFeatures, member: sp.csr_matrix) -> dict[str, pa.Array]:
    """Sentiment per queue (null columns without a sentiment field). The paper's measure: sentiment_n,
    sentiment_mean and sentiment_std over the positive (+1) and negative (-1) sentences, neutral left out;
    the three-way variant (neutral = 0) as sentiment_n_3way, sentiment_mean_3way, sentiment_std_3way."""
    n_queue = member.shape[0]
    if features.polarity is None:
        return {f"sentiment_{k}{suffix}": pa.nulls(n_queue, pa.int32() if k == "n" else pa.float64())
                for suffix in ("", "_3way") for k in ("n", "mean", "std")}
    cols: dict[str, pa.Array] = {}
    for suffix, polarity in (("", binary_polarity(features.polarity)), ("_3way", features.polarity)):
        n, mean, std = polarity_spread(member, polarity)
        cols[f"sentiment_n{suffix}"] = pa.array(n, pa.int32())
        cols[f"sentiment_mean{suffix}"] = pa.array(mean, pa.float64(), from_pandas=True)
        cols[f"sentiment_std{suffix}"] = pa.array(std, pa.float64(), from_pandas=True)
    return cols
