"""Text helpers shared by the parsers: whitespace cleaning, decoding, CSV rows, sentence chunks, names."""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator
from pathlib import Path

_WS_RE = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")


def _clean(text: str) -> str:
    """Normalise whitespace: trim lines, collapse spaces, drop empty lines."""
    lines = (_WS_RE.sub(" ", ln).strip() for ln in text.replace("\r", "\n").split("\n"))
    return "\n".join(ln for ln in lines if ln)


def _read_text(path: Path) -> str:
    """Read a text file as UTF-8 (BOM tolerated), falling back to latin-1."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])[\"'\u2019\u201d)\]]*\s+(?=[\"'\u2018\u201c(\[]?[A-Z0-9])")


def _split_sentences(text: str) -> list[str]:
    """Rough sentence split on terminal punctuation followed by a capital."""
    return [s.strip() for s in _SENT_SPLIT_RE.split(text) if s.strip()]


def _chunk_sentences(text: str, max_chars: int) -> Iterator[str]:
    """Group consecutive sentences of ``text`` into chunks of about ``max_chars``."""
    chunk: list[str] = []
    size = 0
    for sent in _split_sentences(text):
        if chunk and size + len(sent) > max_chars:
            yield " ".join(chunk)
            chunk, size = [], 0
        chunk.append(sent)
        size += len(sent) + 1
    if chunk:
        yield " ".join(chunk)


def _norm_party(value: str | None) -> str | None:
    """Lower-case a party label; ``Democratic`` -> ``democrat``; none/moderator -> None."""
    if not value:
        return None
    party = value.strip().lower()
    if party in {"", "none", "moderator", "n/a"}:
        return None
    if party == "democratic":
        return "democrat"
    return party


def _title_name(name: str) -> str:
    """``BARACK OBAMA`` -> ``Barack Obama``; leaves mixed-case names alone."""
    name = _WS_RE.sub(" ", name).strip()
    return name.title() if name.isupper() else name


def _open_csv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a (possibly .gz / .bz2 compressed) UTF-8 CSV file."""
    csv.field_size_limit(1 << 30)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    elif path.suffix == ".bz2":
        import bz2

        raw = bz2.decompress(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    yield from csv.DictReader(io.StringIO(text, newline=""))

