"""Align words to the model's subword tokens (as mining tokenises the text) and pick one token per word."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Literal

from miner.errors import ConfigError

SubwordChoice = Literal["first", "last", "mean"]
"""Which subword token stands for a word: its first piece, its last piece (NeuroX's default), or the mean
of all its pieces."""

SUBWORD_CHOICES: tuple[str, ...] = ("first", "last", "mean")
"""The accepted SubwordChoice values."""

DEFAULT_SUBWORD: SubwordChoice = "last"
"""NeuroX takes the last subword of a word by default; so do we."""

NO_PIECES = (-1, -1)
"""The span of a word with no token (whitespace-only, or dropped by truncation)."""


def words_text(words: list[str] | tuple[str, ...]) -> str:
    """The model input for a sentence of a concept file: its words joined by single spaces.

    Example: ["The", "cat", "."] -> "The cat ."
    """
    return " ".join(words)


def word_char_spans(text: str, words: list[str] | tuple[str, ...]) -> list[tuple[int, int]]:
    """Character spans [start, end) of words found in order in text, each searched from the end of the last.

    A whitespace-only (or empty) word gets (-1, -1); a word not found raises ValueError naming it.

    >>> word_char_spans("I don't live in the U.S.", ["I", "do", "n't", " ", "live", "in", "the", "U.S."])
    [(0, 1), (2, 4), (4, 7), (-1, -1), (8, 12), (13, 15), (16, 19), (20, 24)]
    """
    spans: list[tuple[int, int]] = []
    cursor = 0
    for word in words:
        if not word.strip():
            spans.append(NO_PIECES)
            continue
        start = text.find(word, cursor)
        if start < 0:
            raise ValueError(f"word {word!r} not found in the text after character {cursor}: {text!r}")
        cursor = start + len(word)
        spans.append((start, cursor))
    return spans


@dataclass
class WordAlignment:
    """The tokens of one text and, for each of its words, the positions of that word's subword pieces."""

    input_ids: list[int]
    """Token ids exactly as mining gives them (miner.mining.batches.tokenize_sentences), special tokens included."""
    special: list[int]
    """1 for special tokens (BOS, [CLS], [SEP], ...), 0 otherwise; same length as input_ids."""
    pieces: list[tuple[int, int]]
    """Per word: [start, end) positions in input_ids of its subword pieces; (-1, -1) if the word has no token,
    including a word that truncation at max_length cut off or cut in two (partially truncated words are
    dropped, never represented by the pieces that were left)."""
    truncated: bool
    """Whether the text was longer than max_length tokens and was cut."""


def _first_visible(text: str, start: int, end: int) -> int:
    """Index of the first non-whitespace character of text[start:end], or -1 if there is none."""
    for i in range(start, min(end, len(text))):
        if not text[i].isspace():
            return i
    return -1


def _owners(text: str, offsets: list[tuple[int, int]], special: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """Per token, the index of the word it belongs to, or -1 (special, empty offset, or outside every word).

    A token belongs to the word whose span contains the token's first non-whitespace character.
    """
    order = sorted((s, i) for i, s in enumerate(spans) if s[0] >= 0 and s[1] > s[0])
    starts = [s[0] for s, _ in order]
    owners = []
    for (start, end), is_special in zip(offsets, special):
        owner = -1
        char = _first_visible(text, start, end) if not is_special and end > start else -1
        if char >= 0:
            k = bisect_right(starts, char) - 1
            if k >= 0 and char < order[k][0][1]:
                owner = order[k][1]
        owners.append(owner)
    return owners


def _pieces(owners: list[int], words: int) -> list[tuple[int, int]]:
    """Per word, [first, last + 1) of the tokens it owns; (-1, -1) for a word with none.

    Example: owners [-1, 0, 0, 2, -1] for 3 words -> [(1, 3), (-1, -1), (3, 4)]
    """
    first = [-1] * words
    last = [-1] * words
    for position, owner in enumerate(owners):
        if owner >= 0:
            if first[owner] < 0:
                first[owner] = position
            last[owner] = position
    return [(f, e + 1) if f >= 0 else NO_PIECES for f, e in zip(first, last)]


def _counts(owners: list[int], words: int) -> list[int]:
    """Number of tokens each word owns."""
    counts = [0] * words
    for owner in owners:
        if owner >= 0:
            counts[owner] += 1
    return counts


def align_words(tokenizer: Any, texts: list[str], spans: list[list[tuple[int, int]]], max_length: int,
                ) -> list[WordAlignment]:
    """Tokenise texts as mining does and map each word (given by its character span) to its subword tokens.

    One tokenizer call for the batch, plus one for the rows longer than max_length (re-tokenised with
    truncation, keeping the closing special token), like tokenize_sentences. Each non-special token with a
    non-empty offset belongs to the word whose span contains the token's first non-whitespace character;
    a token inside no word (a lone space piece) is ignored. Needs a fast tokenizer (offset mapping).
    """
    if len(texts) != len(spans):
        raise ValueError(f"{len(texts)} texts but {len(spans)} span lists")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("the model's tokenizer has no offset mapping (a fast tokenizer is needed for word alignment)")
    if not texts:
        return []
    options: dict[str, Any] = {"add_special_tokens": True, "return_special_tokens_mask": True,
                               "return_offsets_mapping": True}
    enc = tokenizer(texts, truncation=False, **options)
    input_ids: list[list[int]] = enc["input_ids"]
    special: list[list[int]] = enc["special_tokens_mask"]
    offsets: list[list[tuple[int, int]]] = enc["offset_mapping"]
    owners = [_owners(texts[i], offsets[i], special[i], spans[i]) for i in range(len(texts))]
    result = [WordAlignment(input_ids[i], special[i], _pieces(owners[i], len(spans[i])), False)
              for i in range(len(texts))]
    long_rows = [i for i, row in enumerate(input_ids) if len(row) > max_length]
    if long_rows:
        cut = tokenizer([texts[i] for i in long_rows], truncation=True, max_length=max_length, **options)
        for j, i in enumerate(long_rows):
            kept = _owners(texts[i], cut["offset_mapping"][j], cut["special_tokens_mask"][j], spans[i])
            full, left = _counts(owners[i], len(spans[i])), _counts(kept, len(spans[i]))
            pieces = [p if left[w] == full[w] else NO_PIECES for w, p in enumerate(_pieces(kept, len(spans[i])))]
            result[i] = WordAlignment(cut["input_ids"][j], cut["special_tokens_mask"][j], pieces, True)
    return result


def token_positions(piece: tuple[int, int], choice: str = DEFAULT_SUBWORD) -> list[int]:
    """Token positions that stand for a word with pieces [start, end): first, last, or all (for a mean).

    A word without pieces, (-1, -1), gives []; an unknown choice is a ConfigError.

    >>> token_positions((3, 6), "first"), token_positions((3, 6), "last"), token_positions((3, 6), "mean")
    ([3], [5], [3, 4, 5])
    >>> token_positions((-1, -1))
    []
    """
    if choice not in SUBWORD_CHOICES:
        raise ConfigError(f"subword {choice!r}: not a subword choice (one of {', '.join(SUBWORD_CHOICES)})")
    start, end = piece
    if start < 0 or end <= start:
        return []
    if choice == "first":
        return [start]
    if choice == "last":
        return [end - 1]
    return list(range(start, end))
