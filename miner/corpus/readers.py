"""Streaming readers for corpus inputs: plain text, JSONL, CSV/TSV and Parquet, gzip/bz2/xz or not.

Every reader yields `Document`s one at a time, so memory does not grow with the input's size.
Errors name the file (and line or column) in one line.

Text inputs are decoded with `PrepareOptions.encoding`, except that a byte order mark decides when the encoding is
UTF-8 (the default): a UTF-8 mark is stripped, a UTF-16/UTF-32 mark switches to that encoding (logged). A mark that
contradicts an explicit other encoding is an error. Records (JSONL, CSV/TSV, Parquet) whose text is null, empty or
blank are skipped and counted as `empty_text`; a text value that is not a string is an error.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import logging
import lzma
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import PrepareOptions
from miner.errors import InputError

log = logging.getLogger(__name__)

EMPTY_TEXT = "empty_text"
"""Key in the corpus manifest's `dropped` counts: records skipped because their text is null, empty or blank."""

_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_MAGIC = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\xfd7zXZ": ".xz"}
_FORMATS = {".txt": "txt", ".text": "txt", ".md": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
# (mark, codec that decodes what follows it, name in messages); UTF-32 LE first: its mark starts like UTF-16 LE's
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
_WIDE = {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"}
"""Encodings (codecs' canonical names) whose text holds NUL bytes, so the binary-file check does not apply."""


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


def _family(codec: str) -> str:
    """'utf-16-le' -> 'utf-16'; 'utf-8-sig' -> 'utf-8'; other names unchanged."""
    return codec.removesuffix("-le").removesuffix("-be").removesuffix("-sig")


def _choose_encoding(path: Path, head: bytes, requested: str) -> tuple[str, int]:
    """Return (codec to decode with, number of byte order mark bytes to skip) for a file starting with `head`.

    Examples: (b"\\xff\\xfeH\\x00", "utf-8") -> ("utf-16-le", 2) (logged); (b"Hi", "utf-8") -> ("utf-8", 0);
    (b"\\xef\\xbb\\xbfHi", "utf-8") -> ("utf-8", 3); (b"\\xff\\xfeH\\x00", "latin-1") -> InputError.
    """
    try:
        name = codecs.lookup(requested).name
    except LookupError:
        raise InputError(f"{path}: unknown encoding '{requested}' (--encoding)") from None
    found = next((b for b in _BOMS if head.startswith(b[0])), None)
    if found is None:
        return name, 0
    mark, codec, label = found
    if _family(name) == "utf-8":
        if codec != "utf-8":
            log.info("%s: starts with a %s byte order mark; reading it as %s", path, label, label)
        return codec, len(mark)
    if name in (codec, _family(codec)):
        return codec, len(mark)
    if codec == "utf-8" and name not in _WIDE:
        return name, 0  # e.g. --encoding latin-1: the three bytes are valid text in it, as the user asked
    raise InputError(
        f"{path}: starts with a {label} byte order mark, but --encoding is {requested};"
        f" pass --encoding {_family(codec)} (or leave --encoding out)"
    )


def _utf16_without_bom(head: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' when NUL-bearing bytes look like mostly-ASCII UTF-16 text, else None.

    Example: "Hello".encode("utf-16-le") -> "utf-16-le"; b"\\x00\\x01\\x02binary\\x00" * 100 -> None.
    """
    n = len(head) // 2
    if n < 4:
        return None
    even, odd = head[0 : 2 * n : 2], head[1 : 2 * n : 2]
    for codec, low, high in (("utf-16-le", even, odd), ("utf-16-be", odd, even)):
        if high.count(0) >= 0.5 * n and low.count(0) <= 0.02 * n:
            return codec
    return None


def _open_text(path: Path, compression: str | None, opts: PrepareOptions) -> IO[str]:
    """Open as text in the chosen encoding (see the module docstring) without any byte order mark.

    Refuses binary content (NUL bytes in the first 8 KiB, unless the encoding is UTF-16/UTF-32) with a clear error.
    """
    raw = _open_binary(path, compression)
    try:
        buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
        head = buffered.peek(8192)[:8192]
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raw.close()
        raise InputError(f"{path}: cannot read ({compression or 'uncompressed'}): {exc}") from None
    try:
        encoding, skip = _choose_encoding(path, head, opts.encoding)
    except InputError:
        raw.close()
        raise
    if encoding not in _WIDE and b"\x00" in head:
        raw.close()
        guess = _utf16_without_bom(head) if _family(encoding) == "utf-8" else None
        if guess is not None:
            raise InputError(
                f"{path}: looks like {guess.upper().replace('-LE', ' LE').replace('-BE', ' BE')} text without a"
                f" byte order mark (NUL bytes); pass --encoding {guess}"
            )
        raise InputError(f"{path}: looks like a binary file (NUL bytes), not text")
    buffered.read(skip)
    return io.TextIOWrapper(buffered, encoding=encoding, errors=opts.encoding_errors, newline="")


def _decode_problem(exc: UnicodeDecodeError) -> str:
    """The message for undecodable bytes; latin-1 is suggested only where it can help (a UTF-8 reading).

    Example: utf-8 -> "invalid utf-8 bytes (invalid start byte); pass --encoding-errors replace or --encoding latin-1"
    """
    hint = " or --encoding latin-1" if _family(exc.encoding.lower().replace("_", "-")) in ("utf-8", "utf8") else ""
    return f"invalid {exc.encoding} bytes ({exc.reason}); pass --encoding-errors replace{hint}"


def _lines(path: Path, stream: IO[str]) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline); decoding errors name the line."""
    lineno = 0
    try:
        for lineno, line in enumerate(stream, start=1):
            yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}:{lineno + 1}: {_decode_problem(exc)}") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"{path}:{lineno + 1}: cannot read: {exc}") from None


def _json_kind(value: object) -> str:
    """How a JSON value is named in messages. Example: [1] -> 'a list'; {} -> 'an object'; 2.5 -> 'a number'."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


class _EmptyCounter:
    """Counts one file's records without text into the shared counts and logs the file's total when it ends."""

    def __init__(self, path: Path, counts: Counter[str] | None) -> None:
        self.path = path
        self.counts = counts
        self.n = 0

    def empty(self, text: str | None) -> bool:
        """True (and counted) when a record's text is None, empty or only whitespace."""
        if text is not None and text.strip():
            return False
        self.n += 1
        if self.counts is not None:
            self.counts[EMPTY_TEXT] += 1
        return True

    def done(self) -> None:
        if self.n:
            log.info("%s: skipped %d record(s) with null, empty or blank text", self.path, self.n)


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


def read_jsonl(
    path: Path, compression: str | None, opts: PrepareOptions, counts: Counter[str] | None = None
) -> Iterator[Document]:
    """JSON Lines: one object per line; `text_column` holds the text, other keys are metadata.

    A null or blank text skips the record (counted as `empty_text` in `counts`); any other non-string text
    (list, object, number, boolean) is an error naming the file and line.
    """
    empty = _EmptyCounter(path, counts)
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
                keys = ", ".join(sorted(record))[:200]
                raise InputError(f"{path}:{lineno}: no text column '{opts.text_column}' (keys: {keys})")
            text = record.pop(opts.text_column)
            if text is not None and not isinstance(text, str):
                raise InputError(f"{path}:{lineno}: field '{opts.text_column}' is {_json_kind(text)}, not a string")
            if empty.empty(text) or text is None:  # empty() counts a None text
                continue
            yield Document(text, {k: _meta_value(v) for k, v in record.items()}, f"{path}:{lineno}")
    empty.done()


def read_csv(
    path: Path, compression: str | None, opts: PrepareOptions, delimiter: str = ",", counts: Counter[str] | None = None
) -> Iterator[Document]:
    """CSV/TSV with a header row; `text_column` holds the text, other columns are metadata.

    A row whose text field is empty, blank or absent (CSV cannot tell empty from null) is skipped and counted as
    `empty_text` in `counts`.
    """
    empty = _EmptyCounter(path, counts)
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
                if empty.empty(text):
                    continue
                meta = {name: (row[i] if i < len(row) and row[i] != "" else None) for i, name in others}
                yield Document(text, meta, f"{path}:{reader.line_num}")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}:{reader.line_num + 1}: {_decode_problem(exc)}") from None
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    empty.done()


def _is_text_type(dtype: pa.DataType) -> bool:
    """True for Arrow types whose values are str or None: (large) string, string view, null, dictionary of those."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)
            or pa.types.is_null(dtype))


def read_parquet(path: Path, opts: PrepareOptions, counts: Counter[str] | None = None) -> Iterator[Document]:
    """Parquet: `text_column` holds the text, other columns are metadata; read in row batches.

    The text column must be a string column (else an error naming file and column); null or blank values skip
    the row (counted as `empty_text` in `counts`).
    """
    empty = _EmptyCounter(path, counts)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if opts.text_column not in names:
        raise InputError(f"{path}: no text column '{opts.text_column}' (columns: {', '.join(names)[:200]})")
    dtype = pf.schema_arrow.field(names.index(opts.text_column)).type
    if not _is_text_type(dtype):
        raise InputError(f"{path}: column '{opts.text_column}' is {dtype}, not a string column")
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=4096):
            cols = batch.to_pydict()
            texts = cols.pop(opts.text_column)
            for i, text in enumerate(texts):
                row += 1
                if empty.empty(text):
                    continue
                yield Document(text, {k: _meta_value(v[i]) for k, v in cols.items()}, f"{path}:row {row}")
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: corrupt Parquet near row {row} ({exc})") from None
    empty.done()


def read_documents(path: Path, opts: PrepareOptions, counts: Counter[str] | None = None) -> Iterator[Document]:
    """Yield the documents of one input file in file order.

    Records skipped for lack of text (null, empty or blank) are added to `counts` under EMPTY_TEXT.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    fmt, compression = detect_format(path, opts.format)
    if fmt == "txt":
        yield from read_txt(path, compression, opts)
    elif fmt == "jsonl":
        yield from read_jsonl(path, compression, opts, counts)
    elif fmt in ("csv", "tsv"):
        yield from read_csv(path, compression, opts, "\t" if fmt == "tsv" else ",", counts)
    elif fmt == "parquet":
        yield from read_parquet(path, opts, counts)
    else:  # pragma: no cover - Literal guards this
        raise InputError(f"{path}: unsupported format {fmt}")
