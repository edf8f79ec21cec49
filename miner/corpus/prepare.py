"""Corpus preparation: raw documents -> normalised, filtered sentences with stable ids -> Parquet shards.

The output folder is built under a temporary name and renamed into place when complete, so a folder
named like the target always holds a whole corpus; its manifest.json is written last.
Memory stays flat: documents stream through a bounded window of worker tasks, sentences go to disk a
shard at a time (only the optional exact de-duplication keeps 8 bytes per distinct sentence).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from miner import __version__
from miner.config import (
    CorpusManifest,
    CorpusShard,
    PrepareOptions,
    RunOptions,
    corpus_manifest_path,
)
from miner.corpus.readers import Document, detect_format, read_documents
from miner.corpus.text import normalize, split_sentences
from miner.errors import InputError, OutputConflictError
from miner.outputs import enclosing_data_folder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CORE_COLUMNS = ("sentence_id", "text", "n_tokens", "source", "domain", "doc_id")
MAX_LABEL_VALUES = 50
_CHUNK_CHARS = 200_000
_CHUNK_DOCS = 1000


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def corpus_fingerprint(opts: PrepareOptions, input_hashes: list[str], after: dict | None = None) -> str:
    """Identity of a corpus: the options that shape it and the bytes of its inputs, in order (and, for a corpus
    prepared `--after` another, where its ids start)."""
    fields: dict = {"options": opts.model_dump(mode="json"), "inputs": input_hashes}
    if after is not None:  # corpora prepared without --after keep their fingerprint
        fields["after"] = {"first_id": after["first_id"], "first_doc_id": after["first_doc_id"]}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def ids_after(corpus_dir: Path) -> dict:
    """Where a corpus prepared `--after corpus_dir` starts: the sentence id and document id after its last ones.

    The record is kept in the new corpus's manifest (`after`), with the folder and fingerprint it follows.
    """
    before = load_corpus(corpus_dir)
    last = before.shards[-1]
    path = corpus_dir / last.file
    try:
        doc_ids = pq.read_table(path, columns=["doc_id"])["doc_id"]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: corrupt or unreadable shard ({exc})") from None
    top = pc.max(doc_ids).as_py()
    return {"path": str(corpus_dir.resolve()), "fingerprint": before.fingerprint,
            "first_id": last.first_id + last.sentences, "first_doc_id": 0 if top is None else int(top) + 1}


def split_chunk(texts: list[str], min_tokens: int, max_chars: int) -> tuple[list[list[tuple[str, int]]], Counter[str]]:
    """Normalise, split and filter a chunk of documents (runs in worker processes).

    Returns, per document, its kept (sentence, n_tokens) pairs, and counts of dropped sentences.
    Example: (["Hi. The cat sat down !!!"], 3, 1000) -> ([[("The cat sat down !", 5)]], {"too_short": 1})
    """
    dropped: Counter[str] = Counter()
    out: list[list[tuple[str, int]]] = []
    for sentences in split_sentences(normalize(t) for t in texts):
        kept = []
        for s in sentences:
            if s.n_tokens < min_tokens:
                dropped["too_short"] += 1
            elif len(s.text) > max_chars:
                dropped["too_long"] += 1
            else:
                kept.append((s.text, s.n_tokens))
        out.append(kept)
    return out, dropped


@dataclass
class _ShardWriter:
    """Buffers sentence rows and writes them as numbered Parquet shards into a folder."""

    folder: Path
    shard_size: int
    columns: list[str] = field(default_factory=lambda: list(CORE_COLUMNS))
    rows: list[dict] = field(default_factory=list)
    shards: list[CorpusShard] = field(default_factory=list)
    shard_columns: list[list[str]] = field(default_factory=list)

    def add(self, row: dict) -> None:
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        self.rows.append(row)
        if len(self.rows) >= self.shard_size:
            self.flush()

    def _table(self, rows: list[dict], columns: list[str]) -> pa.Table:
        data = {c: [r.get(c) for r in rows] for c in columns}
        types = {"sentence_id": pa.int64(), "n_tokens": pa.int32(), "doc_id": pa.int64()}
        return pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in data.items()})

    def flush(self) -> None:
        if not self.rows:
            return
        name = f"shard-{len(self.shards):05d}.parquet"
        cols = [c for c in self.columns if any(c in r for r in self.rows) or c in CORE_COLUMNS]
        table = self._table(self.rows, cols)
        pq.write_table(table, self.folder / name, compression="zstd", row_group_size=8192)
        self.shards.append(
            CorpusShard(
                file=name,
                sentences=table.num_rows,
                tokens=int(pc.sum(table["n_tokens"]).as_py()),
                first_id=self.rows[0]["sentence_id"],
                sha256="",
            )
        )
        self.shard_columns.append(cols)
        self.rows = []

    def finish(self) -> list[CorpusShard]:
        """Write the last shard, give every shard the full column set, and hash the files."""
        self.flush()
        for shard, cols in zip(self.shards, self.shard_columns):
            path = self.folder / shard.file
            if cols != self.columns:
                table = pq.read_table(path)
                full = pa.table(
                    {c: table[c] if c in cols else pa.nulls(table.num_rows, pa.string()) for c in self.columns}
                )
                pq.write_table(full, path, compression="zstd", row_group_size=8192)
            shard.sha256 = file_sha256(path)
        return self.shards


class _Assembler:
    """Turns per-document sentence lists into rows: ids, de-duplication, caps, counts."""

    def __init__(self, opts: PrepareOptions, writer: _ShardWriter, first_id: int = 0) -> None:
        self.opts = opts
        self.writer = writer
        self.first_id = first_id
        self.next_id = first_id
        self.tokens = 0
        self.domains: Counter[str] = Counter()
        self.labels: dict[str, Counter[str]] = {}
        self.high_cardinality: set[str] = set()
        self.dropped: Counter[str] = Counter()
        self.seen: set[int] = set()

    @property
    def full(self) -> bool:
        return self.opts.max_sentences is not None and self.next_id - self.first_id >= self.opts.max_sentences

    def _count_labels(self, meta: dict[str, str | None]) -> None:
        for key, value in meta.items():
            if key in self.high_cardinality or value is None:
                continue
            counter = self.labels.setdefault(key, Counter())
            counter[value] += 1
            if len(counter) > MAX_LABEL_VALUES:
                self.high_cardinality.add(key)
                del self.labels[key]

    def add_document(self, doc_id: int, source: str, domain: str, meta: dict, sentences: list[tuple[str, int]]) -> None:
        cap = self.opts.max_per_domain
        for text, n_tokens in sentences:
            if self.full:
                self.dropped["over_max_sentences"] += 1
                continue
            if cap is not None and self.domains[domain] >= cap:
                self.dropped["over_domain_cap"] += 1
                continue
            if self.opts.dedup:
                key = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
                if key in self.seen:
                    self.dropped["duplicate"] += 1
                    continue
                self.seen.add(key)
            row = {"sentence_id": self.next_id, "text": text, "n_tokens": n_tokens, "source": source,
                   "domain": domain, "doc_id": doc_id, **meta}
            self.writer.add(row)
            self.next_id += 1
            self.tokens += n_tokens
            self.domains[domain] += 1
            self._count_labels(meta)


def _file_documents(path: Path, opts: PrepareOptions, dropped: Counter[str]) -> Iterator[tuple[str, str, dict, str]]:
    """Yield (source, domain, metadata, text) for every document of one input, in file order."""
    doc: Document
    for doc in read_documents(path, opts, dropped):
        if len(doc.text) > opts.max_document_chars:
            if opts.skip_long_documents:
                dropped["long_document"] += 1
                log.warning("%s: skipped a document of %d characters", doc.where, len(doc.text))
                continue
            raise InputError(
                f"{doc.where}: document of {len(doc.text):,} characters exceeds max_document_chars="
                f"{opts.max_document_chars:,} (no usable sentence boundaries?); pass --skip-long-documents"
                " or raise --max-document-chars"
            )
        meta = {k if k not in CORE_COLUMNS else f"input_{k}": v for k, v in doc.meta.items()}
        source = meta.pop("input_source", None) or path.name
        domain = meta.pop("input_domain", None) or opts.domain or path.name.split(".")[0]
        yield source, domain, meta, doc.text


def _document_stream(inputs: list[Path], opts: PrepareOptions, dropped: Counter[str]) -> Iterator[tuple[str, str, dict, str]]:
    """All documents of all inputs: file after file, or interleaved so that every input has contributed about
    the same number of characters at any point (the next document comes from the input that has given the
    least text so far; ties go to the earlier input). Deterministic.

    Example (interleave): a = [a1 (10 chars), a2 (10), a3 (10)], b = [b1 (25)] -> a1 b1 a2 a3
    """
    streams = [_file_documents(p, opts, dropped) for p in inputs]
    if not opts.interleave:
        for stream in streams:
            yield from stream
        return
    heap = [(0, i) for i in range(len(streams))]
    while heap:
        given, i = heapq.heappop(heap)
        item = next(streams[i], None)
        if item is not None:
            yield item
            heapq.heappush(heap, (given + len(item[3]), i))


def _chunks(docs: Iterator[tuple[str, str, dict, str]]) -> Iterator[list[tuple[str, str, dict, str]]]:
    chunk: list[tuple[str, str, dict, str]] = []
    size = 0
    for item in docs:
        chunk.append(item)
        size += len(item[3])
        if size >= _CHUNK_CHARS or len(chunk) >= _CHUNK_DOCS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _split_results(chunks: Iterator[list], opts: PrepareOptions, workers: int) -> Iterator[tuple[list, list, Counter]]:
    """Yield (chunk, per-document sentences, dropped counts) in input order; at most 2 x workers in flight."""
    args = (opts.min_tokens, opts.max_sentence_chars)
    if workers <= 1:
        for chunk in chunks:
            sentences, dropped = split_chunk([c[3] for c in chunk], *args)
            yield chunk, sentences, dropped
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        window: deque[tuple[list, Future]] = deque()
        try:
            for chunk in chunks:
                window.append((chunk, pool.submit(split_chunk, [c[3] for c in chunk], *args)))
                if len(window) >= 2 * workers:
                    done_chunk, fut = window.popleft()
                    yield done_chunk, *fut.result()
            while window:
                done_chunk, fut = window.popleft()
                yield done_chunk, *fut.result()
        finally:
            for _, fut in window:
                fut.cancel()


def refuse_data_folder(out: Path) -> None:
    """Refuse a corpus --out inside a run or another corpus (even with --force: a corpus never replaces a run)."""
    found = enclosing_data_folder(out)
    if found is not None:
        kind, folder = found
        if kind == "run" or folder != out.resolve():
            raise OutputConflictError(f"{out}: inside the {kind} folder {folder}; choose another --out (a corpus is "
                                      "never written into or over a run or another corpus)")


def _check_output(out: Path, fingerprint: str, force: bool) -> CorpusManifest | None:
    """Return the existing manifest if `out` already holds this very corpus; refuse a different one, and any
    folder inside a run or another corpus (even with --force: a corpus never replaces a run)."""
    refuse_data_folder(out)
    if not out.exists():
        return None
    manifest_path = corpus_manifest_path(out)
    if manifest_path.exists():
        try:
            existing = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
        if existing.get("fingerprint") == fingerprint and not force:
            return CorpusManifest.model_validate(existing)
        if not force:
            raise OutputConflictError(
                f"{out}: already holds a different corpus (other inputs or options); choose another --out or pass --force"
            )
        return None
    if out.is_dir() and not any(out.iterdir()):
        return None
    if not force:
        raise OutputConflictError(f"{out}: exists and is not a prepared corpus; choose another --out or pass --force")
    return None


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished folder into place; an older folder is removed only after the swap."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_corpus(inputs: list[Path], out: Path, opts: PrepareOptions, run: RunOptions | None = None,
                   after: Path | None = None) -> CorpusManifest:
    """Prepare a corpus folder from input files; returns its manifest.

    Re-running with the same inputs and options is a no-op that returns the existing manifest. `after`: a prepared
    corpus this one continues: its sentence and document ids start after that corpus's, so a job can list both
    (`corpus: [after, out]`), e.g. to append it to a run mined on `after`.
    """
    run = run or RunOptions()
    started = time.monotonic()
    if not inputs:
        raise InputError("no input files given")
    for path in inputs:
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a folder; pass the files inside it")
        detect_format(path, opts.format)
    hashes = [file_sha256(p) for p in inputs]
    input_info = [{"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": h} for p, h in zip(inputs, hashes)]
    follows = None
    if after is not None:
        if out.resolve() == after.resolve():
            raise InputError(f"--after {after}: is the output folder itself; prepare the new text into another --out")
        follows = ids_after(after)
    fingerprint = corpus_fingerprint(opts, hashes, follows)
    existing = _check_output(out, fingerprint, run.force)
    if existing is not None:
        log.info("%s already holds this corpus (%d sentences); nothing to do", out, existing.sentences)
        return existing

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        writer = _ShardWriter(tmp, opts.shard_size)
        assembler = _Assembler(opts, writer, 0 if follows is None else follows["first_id"])
        docs = _document_stream(inputs, opts, assembler.dropped)
        workers = run.workers or os.cpu_count() or 1
        doc_id = 0 if follows is None else follows["first_doc_id"]
        for chunk, per_doc, dropped in _split_results(_chunks(docs), opts, workers):
            assembler.dropped.update(dropped)
            for (source, domain, meta, _text), sentences in zip(chunk, per_doc):
                assembler.add_document(doc_id, source, domain, meta, sentences)
                doc_id += 1
            if assembler.full:
                break
        if assembler.next_id == assembler.first_id:
            names = ", ".join(str(p) for p in inputs)
            raise InputError(f"{names}: no sentences left (empty input, or every sentence filtered out)")
        shards = writer.finish()
        manifest = CorpusManifest(
            kind="neuron-miner-corpus",
            format_version=FORMAT_VERSION,
            fingerprint=fingerprint,
            options=opts,
            inputs=input_info,
            shards=shards,
            columns=writer.columns,
            sentences=assembler.next_id - assembler.first_id,
            tokens=assembler.tokens,
            domains=dict(sorted(assembler.domains.items())),
            labels={k: dict(v.most_common()) for k, v in sorted(assembler.labels.items())},
            dropped=dict(sorted(assembler.dropped.items())),
            code_version=__version__,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=round(time.monotonic() - started, 3),
            **({} if follows is None else {"after": follows}),
        )
        corpus_manifest_path(tmp).write_text(manifest.model_dump_json(indent=2))
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("prepared %s: %d sentences in %d shards", out, manifest.sentences, len(manifest.shards))
    return manifest


def load_corpus(corpus_dir: Path) -> CorpusManifest:
    """Open a prepared corpus folder; one clear error if it is not one or is incomplete."""
    path = corpus_manifest_path(corpus_dir)
    if not corpus_dir.exists():
        raise InputError(f"{corpus_dir}: no such corpus folder")
    if not path.exists():
        raise InputError(f"{corpus_dir}: not a prepared corpus (no manifest.json); run `miner corpus prepare` first")
    try:
        manifest = CorpusManifest.model_validate_json(path.read_text())
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: not a valid corpus manifest ({first})") from None
    for shard in manifest.shards:
        if not (corpus_dir / shard.file).exists():
            raise InputError(f"{corpus_dir / shard.file}: shard listed in the manifest is missing")
    return manifest
