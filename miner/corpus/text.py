"""Text normalisation and sentence splitting (spaCy's rule-based sentencizer; no model data needed)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language

_REPEATED_SYMBOL = re.compile(r"([^\w\s])\1+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACE = re.compile(r"\s+")
_KEEP = re.compile(
    r"(?:https?://|ftp://|www\.)\S+"  # URLs, up to the next space (a trailing "..." of a cut tweet included)
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail addresses
    r"|\d+(?:[.,:/-]\d+)+"  # numbers, times, dates, ratios: 1,000.50 12:30 2024-01-02 3/4
    r"|(?<!\S)(?:[:;=8xX][-o^']?[()\[\]dDpP/\\|*3oO$@]+|<3+|\^_+\^|[oO]_[oO]|-_+-|T_T)(?!\S)",  # emoticons
)
"""Spans whose symbols carry meaning: left as they are by `normalize` (the repeated-symbol rule skips them)."""


def normalize(text: str) -> str:
    """Normalise a document: NFC, control characters out, runs of one symbol to one, whitespace collapsed.

    The paper collapses repeated symbols ("+++" becomes "+"). Letters and digits are never collapsed, and
    neither are URLs, e-mail addresses, numbers (1,000.50, 12:30, 2024-01-02) and emoticons (":)))", "<3"),
    whose symbols carry meaning (`_KEEP`).

    >>> normalize("Wow!!!  so   good +++ 1000 \\x07")
    'Wow! so good + 1000'
    >>> normalize("see http://t.co/aBc//x... or mail a.b@c.org :))) -- 1,000.50!!")
    'see http://t.co/aBc//x... or mail a.b@c.org :))) - 1,000.50!'
    """
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    parts, at = [], 0
    for m in _KEEP.finditer(text):
        parts.append(_REPEATED_SYMBOL.sub(r"\1", text[at : m.start()]))
        parts.append(m.group())
        at = m.end()
    parts.append(_REPEATED_SYMBOL.sub(r"\1", text[at:]))
    return _SPACE.sub(" ", "".join(parts)).strip()


@dataclass(slots=True, frozen=True)
class Sentence:
    """A sentence cut from a document."""

    text: str
    """Normalised sentence text."""
    n_tokens: int
    """Number of spaCy tokens (punctuation included, whitespace excluded)."""


@lru_cache(maxsize=1)
def sentence_splitter() -> Language:
    """A blank English spaCy pipeline with the rule-based sentencizer (loaded once per process)."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.max_length = 10_000_000
    return nlp


def split_sentences(texts: Iterable[str], batch_size: int = 256) -> Iterator[list[Sentence]]:
    """Split already-normalised documents into sentences, one list per input text, in order.

    Example: ["Mr. Smith went home. He slept."] -> [[Sentence("Mr. Smith went home.", 5),
    Sentence("He slept.", 3)]]
    """
    nlp = sentence_splitter()
    for doc in nlp.pipe(texts, batch_size=batch_size):
        out: list[Sentence] = []
        for span in doc.sents:
            text = span.text.strip()
            if text:
                out.append(Sentence(text, sum(1 for t in span if not t.is_space)))
        yield out
