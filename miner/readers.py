"""Streaming readers for corpus inputs: plain text, JSONL, CSV/TSV and Parquet, gzip/bz2/xz or not.

Every reader yields `Document`s one at a time, so memory does not grow with the input's size.
Errors name the file (and line or column) in one line.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from miner.errors import InputError
from miner.schema import PrepareOptions

_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_MAGIC = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\xfd7zXZ": ".xz"}
_FORMATS = {".txt": "txt", ".text": "txt", ".md": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(slots=True)
class Document:
    """One document of raw text with its metadata."""

    text: str
    """The raw text; may hold several sentences."""
    meta: dict[str, str | None] = field(default_factory=dict)
    """Metadata columns of the record (values as strings), passed through to every sentence."""
    where: str = ""
    """Location for error messages, e.g. 'news.csv:17'."""


def detect_format(path: Path, fmt: str = "auto") -> tuple[str, str | None]:
    """Return (format, compression suffix or None) for a path.

    Example: Path("a.csv.gz") -> ("csv", ".gz"); Path("b.txt") -> ("txt", None).
    """
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in _COMPRESSIONS else None
    if compression is None and path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(6)
        compression = next((c for m, c in _MAGIC.items() if head.startswith(m)), None)
        if compression is not None and suffixes and suffixes[-1] == ".parquet":
            compression = None
    if fmt != "auto":
        return fmt, compression
    base = suffixes[:-1] if suffixes and suffixes[-1] in _COMPRESSIONS else suffixes
    if not base or base[-1] not in _FORMATS:
        raise InputError(
            f"{path}: unknown input format '{''.join(suffixes) or '(no suffix)'}'"
            " (expected .txt, .jsonl, .csv, .tsv or .parquet, optionally .gz/.bz2/.xz; or pass --format)"
        )
    return _FORMATS[base[-1]], compression


def _open_binary(path: Path, compression: str | None) -> IO[bytes]:
    if compression is None:
        return open(path, "rb")
    return _COMPRESSIONS[compression](path, "rb")  # type: ignore[operator]


def _open_text(path: Path, compression: str | None, opts: PrepareOptions) -> IO[str]:
    """Open as text; refuse binary content (NUL bytes in the first 8 KiB) with a clear error."""
    raw = _open_binary(path, compression)
    try:
        buffered = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw  # type: ignore[arg-type]
        head = buffered.peek(8192)[:8192]
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raw.close()
        raise InputError(f"{path}: cannot read ({compression or 'uncompressed'}): {exc}") from None
    if b"\x00" in head:
        raw.close()
        raise InputError(f"{path}: looks like a binary file (NUL bytes), not text")
    return io.TextIOWrapper(buffered, encoding=opts.encoding, errors=opts.encoding_errors, newline="")


def _lines(path: Path, stream: IO[str]) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline); decoding errors name the line."""
    lineno = 0
    try:
        for lineno, line in enumerate(stream, start=1):
            yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}:{lineno + 1}: invalid {exc.encoding} bytes ({exc.reason});"
            " pass --encoding-errors replace or --encoding latin-1"
        ) from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"{path}:{lineno + 1}: cannot read: {exc}") from None


def _meta_value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def read_txt(path: Path, compression: str | None, opts: PrepareOptions) -> Iterator[Document]:
    """Plain text: one document per blank-line-separated paragraph, or one per line."""
    with _open_text(path, compression, opts) as stream:
        if opts.txt_mode == "lines":
            for lineno, line in _lines(path, stream):
                if line.strip():
                    yield Document(line, {}, f"{path}:{lineno}")
            return
        buf: list[str] = []
        start = 1
        for lineno, line in _lines(path, stream):
            if line.strip():
                if not buf:
                    start = lineno
                buf.append(line)
            elif buf:
                yield Document(" ".join(buf), {}, f"{path}:{start}")
                buf = []
        if buf:
            yield Document(" ".join(buf), {}, f"{path}:{start}")


def read_jsonl(path: Path, compression: str | None, opts: PrepareOptions) -> Iterator[Document]:
    """JSON Lines: one object per line; `text_column` holds the text, other keys are metadata."""
    with _open_text(path, compression, opts) as stream:
        for lineno, line in _lines(path, stream):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            if opts.text_column not in record:
                raise InputError(f"{path}:{lineno}: no text column '{opts.text_column}' (keys: {', '.join(sorted(record))[:200]})")
            text = record.pop(opts.text_column)
            if text is None:
                continue
            yield Document(str(text), {k: _meta_value(v) for k, v in record.items()}, f"{path}:{lineno}")


def read_csv(path: Path, compression: str | None, opts: PrepareOptions, delimiter: str = ",") -> Iterator[Document]:
    """CSV/TSV with a header row; `text_column` holds the text, other columns are metadata."""
    csv.field_size_limit(sys.maxsize)
    with _open_text(path, compression, opts) as stream:
        reader = csv.reader(stream, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return
            if opts.text_column not in header:
                raise InputError(f"{path}: no text column '{opts.text_column}' (columns: {', '.join(header)[:200]})")
            col = header.index(opts.text_column)
            others = [(i, name) for i, name in enumerate(header) if i != col and name]
            for row in reader:
                if not row:
                    continue
                text = row[col] if col < len(row) else ""
                meta = {name: (row[i] if i < len(row) and row[i] != "" else None) for i, name in others}
                yield Document(text, meta, f"{path}:{reader.line_num}")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}:{reader.line_num + 1}: invalid {exc.encoding} bytes ({exc.reason});"
                " pass --encoding-errors replace or --encoding latin-1"
            ) from None
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def read_parquet(path: Path, opts: PrepareOptions) -> Iterator[Document]:
    """Parquet: `text_column` holds the text, other columns are metadata; read in row batches."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if opts.text_column not in names:
        raise InputError(f"{path}: no text column '{opts.text_column}' (columns: {', '.join(names)[:200]})")
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=4096):
            cols = batch.to_pydict()
            texts = cols.pop(opts.text_column)
            for i, text in enumerate(texts):
                row += 1
                if text is None:
                    continue
                yield Document(str(text), {k: _meta_value(v[i]) for k, v in cols.items()}, f"{path}:row {row}")
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: corrupt Parquet near row {row} ({exc})") from None


def read_documents(path: Path, opts: PrepareOptions) -> Iterator[Document]:
    """Yield the documents of one input file in file order."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    fmt, compression = detect_format(path, opts.format)
    if fmt == "txt":
        yield from read_txt(path, compression, opts)
    elif fmt == "jsonl":
        yield from read_jsonl(path, compression, opts)
    elif fmt in ("csv", "tsv"):
        yield from read_csv(path, compression, opts, "\t" if fmt == "tsv" else ",")
    elif fmt == "parquet":
        yield from read_parquet(path, opts)
    else:  # pragma: no cover - Literal guards this
        raise InputError(f"{path}: unsupported format {fmt}")
