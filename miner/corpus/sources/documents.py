"""Documents of a source: normalised, de-duplicated, shuffled in a seeded order, written as JSONL.gz."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from miner.atomic import write_with
from miner.corpus.sources.spec import METADATA_KEYS, SENTIMENTS, SourceSpec
from miner.corpus.sources.text import _WS_RE, _clean


def _norm_meta(value: Any) -> str | None:
    """Metadata value as a stripped non-empty ``str`` or ``None``."""
    if value is None:
        return None
    text = _WS_RE.sub(" ", str(value)).strip()
    return text or None


def iter_documents(spec: SourceSpec, root: Path, max_docs: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield the documents of ``spec`` from its unpacked package folder ``root``.

    Each document has exactly the keys :data:`DOC_KEYS`: non-empty ``text``,
    ``domain`` (``spec.domain``), ``source`` (``spec.name``) and the metadata
    keys (``str`` or ``None``; ``sentiment`` in :data:`SENTIMENTS` or ``None``).
    Texts are whitespace-normalised; empty or letter-less texts and exact
    duplicates within the source are skipped.

    Args:
        spec: the source.
        root: folder returned by :func:`fetch_package` for ``spec``.
        max_docs: stop after this many documents (``None``: all).

    Raises:
        SourceError: the expected files are missing or unreadable.
    """
    if max_docs is not None and max_docs <= 0:
        return
    seen: set[bytes] = set()
    count = 0
    for raw in spec.parser(Path(root)):
        text = _clean(str(raw.get("text") or ""))
        if not re.search(r"[A-Za-z]", text):
            continue
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()
        if digest in seen:
            continue
        seen.add(digest)
        doc: dict[str, Any] = {"text": text, "domain": spec.domain, "source": spec.name}
        for key in METADATA_KEYS:
            doc[key] = _norm_meta(raw.get(key))
        if doc["sentiment"] not in (None, *SENTIMENTS):
            doc["sentiment"] = None
        yield doc
        count += 1
        if max_docs is not None and count >= max_docs:
            return


def _write_jsonl_gz(docs: Iterable[dict[str, Any]], path: Path) -> int:
    """Write ``docs`` as gzipped JSON lines to ``path`` atomically (see miner.atomic); return the count.

    The gzip header holds no file name and no time stamp: the same documents always give the same bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with tmp.open("wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0
        ) as gz, io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
            for doc in docs:
                fh.write(json.dumps(doc, ensure_ascii=False))
                fh.write("\n")
                count += 1

    write_with(path, write)
    return count


def shuffled(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The documents of one source in a fixed pseudo-random order (seeded by the source's name).

    Several packages store their documents sorted by label (tweets by sentiment, reviews by verdict, news by
    topic); shuffling makes any prefix of a source, and so any prefix of the interleaved corpus, a fair sample.
    Example: the same docs and name always give the same order.
    """
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    order = np.random.default_rng(seed).permutation(len(docs))
    return [docs[i] for i in order]

