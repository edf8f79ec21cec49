"""Step 2b's per-sentence work, done once: word and POS patterns, tag counts and metadata codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miner.config import SignatureOptions
from miner.errors import ConfigError
from miner.signatures.patterns import PatternIndex, build_pattern_index

SENTIMENT_POLARITY = {"positive": 1.0, "neutral": 0.0, "negative": -1.0}
NOT_METADATA = frozenset({"sentence_id", "text", "n_tokens", "doc_id", "n_model_tokens", "truncated"})
"""Corpus columns that are never summarised as metadata."""


@dataclass
class SentenceFeatures:
    """Per-sentence work for every queue and background sentence, done once (arrays only: cheap to share)."""

    sentence_ids: np.ndarray
    """(S,) int64, ascending: the row order of everything below."""
    background_rows: np.ndarray
    """Rows of the background sample."""
    n_tokens: np.ndarray
    """(S,) int64 sentence length in tokens."""
    words: PatternIndex
    """Words (length 1) and word patterns (min_len..max_len) over lowercased tokens."""
    words_background: np.ndarray
    """(P_words,) background sentences supporting each word / word pattern."""
    word_vocab: np.ndarray
    """Lowercased token string of each word item id."""
    pos: PatternIndex
    """POS patterns (min_len..max_len) over PTB tags."""
    pos_background: np.ndarray
    """(P_pos,) background sentences supporting each POS pattern."""
    tag_vocab: np.ndarray
    """Tag string of each tag id."""
    tag_counts: np.ndarray
    """(S, T) int32 tokens per tag per sentence."""
    fields: list[str]
    """Metadata fields summarised (<= max_metadata_values distinct values)."""
    field_values: list[np.ndarray]
    """Per field, its values; code len(values) is the null bucket."""
    field_codes: np.ndarray
    """(F, S) int32 value code of each sentence per field."""
    polarity: np.ndarray | None
    """(S,) float64 three-way sentiment polarity (+1/0/-1, NaN when unlabelled), when a sentiment field exists;
    the paper's binary measure leaves the neutral 0 out (:func:`miner.signatures.selectivity.binary_polarity`)."""


def sentence_features(top_sentences: pa.Table, sentences: pa.Table, tokens: pa.Table,
                      background_ids: np.ndarray, options: SignatureOptions,
                      extra_ids: np.ndarray | None = None) -> SentenceFeatures:
    """Per-sentence work for the queue sentences of top_sentences, the background sample and `extra_ids` (the
    held-out sentences that explanation scores simulate: featurised, but counted neither as queue nor background).

    sentences must hold a row (sentence_id, n_tokens, metadata columns) and tokens the tagged tokens of
    every queue and background sentence. Patterns below the smallest queue's support threshold in the
    queue sentences are pruned: no queue could rank them. Example: one queue of sentences 1 and 2, background
    sentence 3 ("a cat", whose "a" no queue holds):

    >>> top = pa.table({"unit_id": [0, 0], "direction": ["top", "top"], "sentence_id": [1, 2]})
    >>> sentences = pa.table({"sentence_id": [1, 2, 3], "n_tokens": [2, 2, 2], "source": ["news", "web", "news"]})
    >>> tokens = pa.table({"sentence_id": [1, 1, 2, 2, 3, 3], "position": [0, 1, 0, 1, 0, 1],
    ...                    "lower": ["the", "cat", "the", "dog", "a", "cat"], "pos": ["DT", "NN"] * 3})
    >>> f = sentence_features(top, sentences, tokens, np.array([3]), SignatureOptions(min_support=1, max_len=2))
    >>> [" ".join(f.word_vocab[list(f.words.pattern(p))]) for p in range(f.words.n_patterns)]
    ['the', 'cat', 'dog', 'the cat', 'the dog']
    >>> f.words.support.tolist(), f.words_background.tolist()
    ([2, 1, 1, 1, 1], [0, 1, 0, 0, 0])
    >>> f.fields, f.field_codes.tolist()
    (['source'], [[0, 1, 0]])
    """
    queue_ids = np.unique(top_sentences["sentence_id"].to_numpy())
    background_ids = np.unique(np.asarray(background_ids, np.int64))
    sids = np.union1d(queue_ids, background_ids)
    if extra_ids is not None:
        sids = np.union1d(sids, np.asarray(extra_ids, np.int64))
    sentences = _rows_of(sentences, sids, "sentences")
    counted = np.isin(sids, queue_ids)
    bg_rows = np.flatnonzero(np.isin(sids, background_ids))

    tokens = tokens.filter(pc.is_in(tokens["sentence_id"], value_set=pa.array(sids))).sort_by(
        [("sentence_id", "ascending"), ("position", "ascending")])
    tok_sid = tokens["sentence_id"].to_numpy()
    offsets = np.searchsorted(tok_sid, np.append(sids, np.iinfo(np.int64).max)).astype(np.int64)
    offsets[-1] = len(tok_sid)
    word_vocab, words = _encode(tokens["lower"])
    tag_vocab, tags = _encode(tokens["pos"])

    sizes = np.unique(queue_key(top_sentences), return_counts=True)[1]
    floor = options.threshold(int(sizes.min())) if len(sizes) else options.min_support
    kw: dict[str, Any] = {"max_len": options.max_len, "max_gap": options.max_gap, "min_support": floor,
                          "counted": counted}
    word_index = build_pattern_index(offsets, words, min_len=1, **kw)
    pos_index = build_pattern_index(offsets, tags, min_len=options.min_len, **kw)
    if options.min_len > 2:
        word_index = _drop_lengths(word_index, 2, options.min_len - 1)

    seq = np.repeat(np.arange(len(sids)), np.diff(offsets))
    n_tags = len(tag_vocab)
    tag_counts = np.bincount(seq * n_tags + tags, minlength=len(sids) * n_tags).reshape(len(sids), n_tags)
    n_tokens = (sentences["n_tokens"].to_numpy().astype(np.int64) if "n_tokens" in sentences.column_names
                else np.diff(offsets))

    fields, values, codes = [], [], []
    for name in _metadata_columns(sentences, options):
        vals, code = _encode(sentences[name].cast(pa.string()), null_code=True)
        if options.metadata_fields is not None or 0 < len(vals) <= options.max_metadata_values:
            fields.append(name)
            values.append(vals)
            codes.append(code)
    polarity = None
    if "sentiment" in sentences.column_names:
        labels = sentences["sentiment"].to_pylist()
        polarity = np.array([SENTIMENT_POLARITY.get(str(v).lower(), np.nan) if v is not None else np.nan
                             for v in labels])
    return SentenceFeatures(
        sentence_ids=sids, background_rows=bg_rows, n_tokens=n_tokens, words=word_index,
        words_background=word_index.count(bg_rows), word_vocab=word_vocab, pos=pos_index,
        pos_background=pos_index.count(bg_rows), tag_vocab=tag_vocab, tag_counts=tag_counts.astype(np.int32), fields=fields,
        field_values=values, field_codes=np.array(codes, np.int32).reshape(len(codes), len(sids)), polarity=polarity)



def _encode(col: pa.ChunkedArray | pa.Array, null_code: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary-encode strings: (values, int64 code per row) in first-seen order (tokens, tags).

    With null_code (metadata) the values are sorted and a null gets code len(values):

    >>> _encode(pa.array(["b", "a", "b"]))
    (array(['b', 'a'], dtype=object), array([0, 1, 0]))
    >>> _encode(pa.array(["b", "a", "b", None]), null_code=True)
    (array(['a', 'b'], dtype=object), array([1, 0, 1, 2]))
    """
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    enc = pc.dictionary_encode(arr)
    values = np.array(enc.dictionary.to_pylist(), dtype=object)
    codes = enc.indices.fill_null(len(values)) if null_code else enc.indices
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    if null_code:  # metadata: values in sorted order, so ties and row order follow the value
        order = np.argsort(values.astype(str), kind="stable")
        rank = np.empty(len(values) + 1, np.int64)
        rank[order] = np.arange(len(values))
        rank[-1] = len(values)
        values, codes = values[order], rank[codes]
    return values, codes


def _metadata_columns(sentences: pa.Table, options: SignatureOptions) -> list[str]:
    """Columns to summarise: the named ones (each must exist), else string columns not excluded."""
    names = sentences.column_names
    if options.metadata_fields is not None:
        missing = [f for f in options.metadata_fields if f not in names]
        if missing:
            raise ConfigError(f"metadata_fields: no column {', '.join(map(repr, missing))} in the corpus "
                              f"(columns: {', '.join(names)})")
        return list(options.metadata_fields)

    def is_text(name: str) -> bool:
        kind = sentences.schema.field(name).type
        return pa.types.is_string(kind) or pa.types.is_large_string(kind)

    return [n for n in names if n not in NOT_METADATA and n not in options.exclude_metadata and is_text(n)]


def _rows_of(table: pa.Table, ids: np.ndarray, name: str) -> pa.Table:
    """Rows of table for exactly the sorted ids (one each); error naming the table if any is missing.

    >>> _rows_of(pa.table({"sentence_id": [9, 4, 7]}), np.array([4, 9]), "sentences")["sentence_id"].to_pylist()
    [4, 9]
    >>> _rows_of(pa.table({"sentence_id": [9, 4]}), np.array([4, 5]), "sentences")
    Traceback (most recent call last):
    ValueError: sentences: 1 sentence ids missing (e.g. [5]) or duplicated
    """
    table = table.filter(pc.is_in(table["sentence_id"], value_set=pa.array(ids))).sort_by("sentence_id")
    got = table["sentence_id"].to_numpy()
    if len(got) != len(ids) or not np.array_equal(got, ids):
        missing = np.setdiff1d(ids, got)
        raise ValueError(f"{name}: {len(missing)} sentence ids missing (e.g. {missing[:3].tolist()}) or duplicated")
    return table


def queue_key(top: pa.Table) -> np.ndarray:
    """The queue of each row of a top_sentences table, unit_id * 2 + (direction == 'bottom'): sorts queues by
    unit, top before bottom.

    >>> queue_key(pa.table({"unit_id": [3, 3, 0], "direction": ["bottom", "top", "top"]}))
    array([7, 6, 0])
    """
    bottom = pc.equal(top["direction"], "bottom").to_numpy(zero_copy_only=False).astype(np.int64)
    return top["unit_id"].to_numpy().astype(np.int64) * 2 + bottom


def _drop_lengths(index: PatternIndex, lo: int, hi: int) -> PatternIndex:
    """The index without patterns of length lo..hi (ids renumbered).

    >>> ix = build_pattern_index(np.array([0, 3]), np.array([1, 2, 3]), min_len=1, max_len=3, max_gap=0)
    >>> [ix.pattern(p) for p in range(ix.n_patterns)]
    [(1,), (2,), (3,), (1, 2), (2, 3), (1, 2, 3)]
    >>> short = _drop_lengths(ix, 2, 2)
    >>> [short.pattern(p) for p in short.ids]
    [(1,), (2,), (3,), (1, 2, 3)]
    """
    keep = (index.lengths < lo) | (index.lengths > hi)
    new_id = np.cumsum(keep) - 1
    ids_keep = keep[index.ids]
    seq = np.repeat(np.arange(len(index.offsets) - 1), np.diff(index.offsets))[ids_keep]
    offsets = np.zeros(len(index.offsets), np.int64)
    np.cumsum(np.bincount(seq, minlength=len(index.offsets) - 1), out=offsets[1:])
    return PatternIndex(items=index.items[keep], lengths=index.lengths[keep], support=index.support[keep],
                        offsets=offsets, ids=new_id[index.ids[ids_keep]].astype(np.int32))
