"""Read token-level concept labels (CoNLL-U, word/TAG lines, JSON Lines) into labelled sentences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from miner.errors import ConfigError, InputError

CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
"""The ten CoNLL-U columns, in file order (column 1 is id)."""

FORMATS = ("auto", "conllu", "word_tag", "jsonl")
"""Concept file formats `read_concept_file` accepts; auto picks one by the file's suffix."""

_SUFFIXES = {".conllu": "conllu", ".conll": "conllu", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class LabelledSentence:
    """One sentence of a concept file: its words and one label per word."""

    words: tuple[str, ...]
    """The sentence's words, in order (CoNLL-U FORM, the word of word/TAG, the JSON tokens)."""
    labels: tuple[str, ...]
    """One label per word (same length as words)."""
    line: int
    """1-based line of the file where the sentence starts (for CoNLL-U, the first line of its block,
    comments included)."""


def _lines(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8 (a BOM is dropped); one InputError naming the file if unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def conllu_column(column: str | int) -> int:
    """0-based index of a CoNLL-U column given by name (case-insensitive) or 1-based number.

    Example: "UPOS" -> 3; 2 -> 1; "10" -> 9
    """
    text = str(column).strip().lower()
    if text.isdigit() and 1 <= int(text) <= len(CONLLU_COLUMNS):
        return int(text) - 1
    if text in CONLLU_COLUMNS:
        return CONLLU_COLUMNS.index(text)
    raise ConfigError(f"column {str(column)!r}: not a CoNLL-U column (one of {', '.join(CONLLU_COLUMNS)},"
                      f" or a number 1-{len(CONLLU_COLUMNS)})")


def read_conllu(path: Path, column: str | int = "upos") -> list[LabelledSentence]:
    """Sentences of a CoNLL-U file labelled by one column; words are the FORM column.

    Comment lines (#), multiword token ranges (1-2) and empty nodes (1.1) are skipped; blank lines end
    sentences. A '_' label is an error, except in the FORM column where '_' is a word.
    """
    index = conllu_column(column)
    name = CONLLU_COLUMNS[index]
    sentences: list[LabelledSentence] = []
    words: list[str] = []
    labels: list[str] = []
    start = 0

    def close() -> None:
        if words:
            sentences.append(LabelledSentence(tuple(words), tuple(labels), start))
        words.clear()
        labels.clear()

    for number, raw in enumerate(_lines(path), start=1):
        if not raw.strip():
            close()
            start = 0
            continue
        if start == 0:
            start = number
        if raw.startswith("#"):
            continue
        fields = raw.split("\t")
        if len(fields) != len(CONLLU_COLUMNS):
            raise InputError(f"{path}:{number}: expected {len(CONLLU_COLUMNS)} tab-separated fields, got {len(fields)}")
        token_id = fields[0]
        if "-" in token_id or "." in token_id:
            continue
        label = fields[index]
        if (label == "_" and index != 1) or not label:
            raise InputError(f"{path}:{number}: no {name} value for word {fields[1]!r}")
        words.append(fields[1])
        labels.append(label)
    close()
    return sentences


def read_word_tag(path: Path, sep: str = "/") -> list[LabelledSentence]:
    """Sentences written one per line as whitespace-separated word/TAG items; blank lines are skipped.

    Each item is split on its last sep: "1/2/CD" -> word "1/2", tag "CD".
    """
    if not sep or sep.isspace():
        raise ConfigError(f"sep {sep!r}: must be a non-whitespace string")
    sentences: list[LabelledSentence] = []
    for number, raw in enumerate(_lines(path), start=1):
        items = raw.split()
        if not items:
            continue
        words: list[str] = []
        labels: list[str] = []
        for item in items:
            word, found, tag = item.rpartition(sep)
            if not found:
                raise InputError(f"{path}:{number}: item {item!r} has no {sep!r} between word and tag")
            if not word or not tag:
                raise InputError(f"{path}:{number}: item {item!r} has an empty {'word' if not word else 'tag'}")
            words.append(word)
            labels.append(tag)
        sentences.append(LabelledSentence(tuple(words), tuple(labels), number))
    return sentences


def _strings(value: object, key: str, where: str) -> list[str]:
    """A JSON value that must be a list of strings; InputError naming the key otherwise."""
    if not isinstance(value, list):
        raise InputError(f"{where}: {key!r} is not a list (got {type(value).__name__})")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InputError(f"{where}: {key!r} item {i} is not a string (got {type(item).__name__})")
    return value


def read_labels_jsonl(path: Path, tokens_key: str = "tokens", labels_key: str = "labels") -> list[LabelledSentence]:
    """Sentences of a JSON Lines file: one object per line with equal-length lists of tokens and labels.

    Example line: {"tokens": ["The", "cat"], "labels": ["DET", "NOUN"]}. Blank lines and objects with no
    tokens are skipped.
    """
    sentences: list[LabelledSentence] = []
    for number, raw in enumerate(_lines(path), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key in (tokens_key, labels_key):
            if key not in row:
                raise InputError(f"{where}: no {key!r} key")
        tokens = _strings(row[tokens_key], tokens_key, where)
        labels = _strings(row[labels_key], labels_key, where)
        if len(tokens) != len(labels):
            raise InputError(f"{where}: {len(tokens)} tokens but {len(labels)} labels")
        if tokens:
            sentences.append(LabelledSentence(tuple(tokens), tuple(labels), number))
    return sentences


def concept_format(path: Path, format: str = "auto") -> str:
    """The concrete format of a concept file: format itself, or for auto one chosen by the suffix.

    Example: ("ud.conllu", "auto") -> "conllu"; ("pos.jsonl", "auto") -> "jsonl"; ("pos.txt", "auto") -> "word_tag"
    """
    if format not in FORMATS:
        raise ConfigError(f"format {format!r}: not a concept file format (one of {', '.join(FORMATS)})")
    if format != "auto":
        return format
    return _SUFFIXES.get(Path(path).suffix.lower(), "word_tag")


def read_concept_file(path: Path, format: str = "auto", column: str | int = "upos") -> list[LabelledSentence]:
    """Labelled sentences of a concept file in any supported format; column applies to CoNLL-U only.

    A missing or unreadable file, a malformed line, or a file with no labelled sentence is an InputError.
    """
    kind = concept_format(path, format)
    if kind == "conllu":
        sentences = read_conllu(path, column)
    elif kind == "jsonl":
        sentences = read_labels_jsonl(path)
    else:
        sentences = read_word_tag(path)
    if not sentences:
        raise InputError(f"{path}: no labelled sentences")
    return sentences
