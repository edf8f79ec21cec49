"""A concept's labelled examples, from the run's POS tags, a labelled file or a corpus metadata column: candidates
read, split by sentence, sampled per class, aligned to the model's tokens, and checked for rare classes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miner.config import ConceptSpec, ProbingOptions
from miner.corpus.store import read_rows
from miner.errors import ConfigError, InputError
from miner.probing.align import align_words, word_char_spans, words_text
from miner.probing.examples import (
    balanced_sample,
    check_classes,
    hash_uniform,
    sentence_splits,
    split_caps,
    text_keys,
)
from miner.probing.labels import read_concept_file
from miner.run.catalog import read_run_table
from miner.run.folder import FILES, run_corpus, table_name

log = logging.getLogger(__name__)


@dataclass
class ConceptExamples:
    """The examples one concept's probes train and test on (rows in sentence order, then word order)."""

    name: str
    kind: str
    """Where the labels came from: tags, file or metadata (the concept's kind)."""
    level: Literal["token", "sentence"]
    classes: list[str]
    """Class names; labels index into it."""
    texts: list[str]
    """Model input of each sentence holding an example."""
    sentence_keys: np.ndarray
    """int64 per sentence: its corpus sentence_id (tags, metadata) or its 0-based index in the file (file)."""
    pieces: list[list[tuple[int, int]]]
    """Per sentence, the [start, end) token positions of each example word (empty for sentence-level concepts)."""
    row_sentence: np.ndarray
    """int64 per example: index into texts."""
    row_word: np.ndarray
    """int64 per example: the word's index in its sentence (-1 for sentence-level concepts)."""
    row_text: list[str]
    """Per example: the word ('' for sentence-level concepts); control labels are drawn per lower-cased type."""
    labels: np.ndarray
    """int64 per example, 0..len(classes)-1."""
    splits: np.ndarray
    """int8 per example: 0 train, 1 dev, 2 test."""
    candidates: int = 0
    """Labelled examples read, before sampling."""
    dropped_classes: dict[str, int] = field(default_factory=dict)
    truncated_words: int = 0
    """Sampled words that truncation at max_length cut off (not examples)."""

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class _Candidates:
    """Labelled words (or sentences) before sampling."""

    keys: np.ndarray          # int64 per sentence
    words: list[list[str]]    # per sentence (token level)
    labels: list[list[str]]   # per sentence: a label per word, or [label] for a sentence
    texts: list[str] | None   # per sentence, None: read from the corpus by key when sampled
    split_texts: list[str] | None = None  # per sentence, what the split hashes when not the words (metadata)


def _from_tags(run_dir: Path, spec: ConceptSpec, seed: int) -> _Candidates:
    """Words and Penn Treebank tags of the sentences step 2 tagged (RUN/tokens.parquet): every one, or the
    `max_sentences` with the lowest seeded hash (chosen on the ids, before any token is read into Python)."""
    if not (run_dir / FILES.tokens).exists():
        raise ConfigError(f"probe.concepts '{spec.name}': kind tags needs step 2's POS tags ({run_dir / FILES.tokens} "
                          f"is missing); run `miner signatures {run_dir}` first")
    table = read_run_table(run_dir, table_name(FILES.tokens), columns=["sentence_id", "position", "token", "pos"])
    if spec.max_sentences is not None:
        ids = pc.unique(table["sentence_id"]).to_numpy().astype(np.int64)
        if len(ids) > spec.max_sentences:
            take = ids[np.argsort(hash_uniform(seed, "take", ids), kind="stable")[: spec.max_sentences]]
            table = table.filter(pc.is_in(table["sentence_id"], value_set=pa.array(take)))
    table = table.sort_by([("sentence_id", "ascending"), ("position", "ascending")])
    sid = table["sentence_id"].to_numpy()
    tokens, tags = table["token"].to_pylist(), table["pos"].to_pylist()
    bounds = np.flatnonzero(np.diff(sid)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [len(sid)]]).astype(np.int64)
    keys = sid[starts] if len(sid) else np.zeros(0, np.int64)
    words = [tokens[a:b] for a, b in zip(starts, ends)]
    labels = [tags[a:b] for a, b in zip(starts, ends)]
    return _Candidates(keys.astype(np.int64), words, labels, None)


def _from_file(spec: ConceptSpec) -> _Candidates:
    assert spec.path is not None
    try:
        sents = read_concept_file(spec.path, spec.format, spec.column)
    except ConfigError as exc:
        raise ConfigError(f"probe.concepts '{spec.name}': {exc}") from None
    return _Candidates(np.arange(len(sents), dtype=np.int64), [list(s.words) for s in sents],
                       [list(s.labels) for s in sents], [words_text(s.words) for s in sents])


def _from_metadata(run_dir: Path, spec: ConceptSpec, mined: int | None) -> _Candidates:
    """One label per corpus sentence the run mined, from the metadata column `spec.field` (nulls skipped)."""
    import pyarrow.parquet as pq

    _, corpus_dir, corpus = run_corpus(run_dir)
    assert spec.field is not None
    if spec.field not in corpus.columns or spec.field in ("sentence_id", "text", "n_tokens"):
        meta = [c for c in corpus.columns if c not in ("sentence_id", "text", "n_tokens")]
        raise ConfigError(f"probe.concepts '{spec.name}': field '{spec.field}' is not a metadata column of the "
                          f"corpus {corpus_dir} (columns: {', '.join(meta)})")
    keys: list[np.ndarray] = []
    labels: list[str] = []
    split_texts: list[str] = []
    for shard in corpus.shards:
        if mined is not None and shard.first_id >= mined:
            break
        part = pq.read_table(corpus_dir / shard.file, columns=["sentence_id", "text", spec.field])
        if mined is not None:
            part = part.filter(pc.less(part["sentence_id"], mined))
        part = part.filter(pc.is_valid(part[spec.field]))
        keys.append(part["sentence_id"].to_numpy().astype(np.int64))
        labels += [str(v) for v in part[spec.field].to_pylist()]
        split_texts += [str(t).lower() for t in part["text"].to_pylist()]
    key_arr = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    return _Candidates(key_arr, [[] for _ in labels], [[lab] for lab in labels], None, split_texts)


def build_examples(spec: ConceptSpec, options: ProbingOptions, run_dir: Path, tokenizer: Any, max_length: int,
                   mined: int | None) -> ConceptExamples:
    """The concept's examples: candidates split by sentence text (seeded), sampled per class and split (at most
    `split_caps(max_per_class)`, words of the sentences with the lowest seeded hash first) among the words that
    keep their tokens after truncation at max_length (sampled sentences are aligned, words cut off are excluded
    and the sample is drawn again until every sampled word has tokens), then the rare-class rule
    (`check_classes`)."""
    level: Literal["token", "sentence"] = "sentence" if spec.kind == "metadata" else "token"
    if spec.kind == "tags":
        cand = _from_tags(run_dir, spec, options.seed)
    elif spec.kind == "file":
        cand = _from_file(spec)
    else:
        cand = _from_metadata(run_dir, spec, mined)
    if spec.max_sentences is not None and len(cand.keys) > spec.max_sentences:
        order = np.argsort(hash_uniform(options.seed, "take", cand.keys), kind="stable")
        take = np.sort(order[: spec.max_sentences])
        cand = _Candidates(cand.keys[take], [cand.words[i] for i in take], [cand.labels[i] for i in take],
                           None if cand.texts is None else [cand.texts[i] for i in take],
                           None if cand.split_texts is None else [cand.split_texts[i] for i in take])
    n_per = np.fromiter((len(lab) for lab in cand.labels), np.int64, len(cand.labels))
    ex_sent = np.repeat(np.arange(len(cand.labels), dtype=np.int64), n_per)
    ex_word = np.concatenate([np.arange(n) for n in n_per]).astype(np.int64) if len(n_per) else np.zeros(0, np.int64)
    ex_label = [lab for labs in cand.labels for lab in labs]
    if not ex_label:
        raise InputError(f"probe.concepts '{spec.name}': no labelled examples found")
    # split by the sentence's text (a hash), so repeated sentences (boilerplate, a corpus without dedup) never
    # sit in two splits
    sent_split = sentence_splits(_text_keys(cand), options.seed, options.dev_share, options.test_share)
    ex_split = sent_split[ex_sent]
    # one rank per sentence (ties: word order): each class keeps the words of the same lowest-ranked sentences,
    # so the sample fills from few sentences and extraction runs few forward passes
    rank = hash_uniform(options.seed, "sample", cand.keys[ex_sent])
    code_of = {n: i for i, n in enumerate(sorted(set(ex_label)))}
    codes = np.array([code_of[x] for x in ex_label], np.int64)
    caps = split_caps(options.max_per_class, options.dev_share, options.test_share)
    texts_of: dict[int, str] = {}
    pieces_of: dict[int, list[tuple[int, int]]] = {}  # candidate sentence -> its words' token spans
    dead = np.zeros(len(ex_label), bool)  # words that truncation (or a text mismatch) leaves without tokens
    while True:  # sample, align what is new, drop the dead words and sample again until none is left
        sel = np.flatnonzero(balanced_sample(codes, ex_split, np.where(dead, np.inf, rank), caps) & ~dead)
        new = [int(x) for x in np.unique(ex_sent[sel]) if int(x) not in texts_of]
        if new:
            texts_of.update(zip(new, _texts(cand, np.array(new, np.int64), run_dir)))
        if level == "sentence":
            break
        spans: list[list[tuple[int, int]]] = []
        for x in new:
            try:
                spans.append(word_char_spans(texts_of[x], cand.words[x]))
            except ValueError:  # the sentence text does not hold its tagged words in order: leave it out
                spans.append([(-1, -1)] * len(cand.words[x]))
        if new:
            for x, al in zip(new, align_words(tokenizer, [texts_of[x] for x in new], spans, max_length)):
                pieces_of[x] = al.pieces
        died = np.array([pieces_of[int(ex_sent[e])][int(ex_word[e])][0] < 0 for e in sel], bool)
        if not died.any():
            break
        dead[sel[died]] = True
    truncated = int(dead.sum())
    check = check_classes(spec.name, [ex_label[e] for e in sel], ex_split[sel], options)
    class_index = {c: i for i, c in enumerate(check.classes)}
    sel = np.array([e for e in sel if ex_label[e] in class_index], np.int64)
    final = np.unique(ex_sent[sel])
    index = {int(x): j for j, x in enumerate(final)}
    pieces: list[list[tuple[int, int]]] = [[] for _ in final]
    if level == "token":
        for e in sel:  # sel is in sentence order, then word order
            pieces[index[int(ex_sent[e])]].append(pieces_of[int(ex_sent[e])][int(ex_word[e])])
    return ConceptExamples(
        name=spec.name, kind=spec.kind, level=level, classes=check.classes, texts=[texts_of[int(x)] for x in final],
        sentence_keys=cand.keys[final], pieces=pieces,
        row_sentence=np.array([index[int(ex_sent[e])] for e in sel], np.int64),
        row_word=ex_word[sel] if level == "token" else np.full(len(sel), -1, np.int64),
        row_text=[cand.words[ex_sent[e]][ex_word[e]] for e in sel] if level == "token" else [""] * len(sel),
        labels=np.array([class_index[ex_label[e]] for e in sel], np.int64), splits=ex_split[sel].astype(np.int8),
        candidates=len(ex_label), dropped_classes=check.dropped, truncated_words=truncated)


def _text_keys(cand: _Candidates) -> np.ndarray:
    """int64 per candidate sentence: a hash of its lower-cased words (token concepts) or its text (metadata
    concepts, read from the corpus column), the key of the train/dev/test split."""
    if cand.split_texts is not None:
        texts = cand.split_texts
    else:
        texts = [" ".join(words).lower() for words in cand.words]
    return text_keys(texts)


def _texts(cand: _Candidates, sentences: np.ndarray, run_dir: Path) -> list[str]:
    """Model input of the chosen candidate sentences (from the file, or the corpus rows by sentence_id)."""
    if cand.texts is not None:
        return [cand.texts[int(s)] for s in sentences]
    _, corpus_dir, corpus = run_corpus(run_dir)
    ids = cand.keys[sentences]
    rows = read_rows(corpus_dir, corpus, ids)
    got = rows["sentence_id"].to_numpy()
    if len(got) != len(ids) or not np.array_equal(got, ids):
        raise InputError(f"{corpus_dir}: the corpus lacks sentences the run holds; was it changed after mining?")
    return [str(t) for t in rows["text"].to_pylist()]
