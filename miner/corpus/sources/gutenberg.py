"""Project Gutenberg texts: header/footer stripping, stage directions, verse paragraphs, works by title."""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from miner.corpus.sources.text import _WS_RE, _read_text
from miner.errors import SourceError

_MAX_VERSE_LINES = 40
_MIN_VERSE_BREAK_LINES = 16

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
    if play_start is not None:
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

