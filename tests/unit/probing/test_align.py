"""Word-to-subword alignment with real tokenizers: MiniLM WordPiece, byte-level BPE without and with BOS."""

from __future__ import annotations

import doctest
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import AutoTokenizer

from miner.errors import ConfigError
from miner.mining.batches import tokenize_sentences
from miner.model.loading import bundled_minilm
from miner.probing import align
from miner.probing.align import (
    WordAlignment,
    align_words,
    token_positions,
    word_char_spans,
    words_text,
)
from tests.support.builders import tiny_model

SENTENCES = [
    ["Tokenization", "is", "unbelievably", "hard", ",", "isn't", "it", "?"],
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["Photosynthesis", "converts", "light", "energy", "into", "chemical", "energy", "."],
    ["Stocks", "fell", "sharply", "(", "again", ")", "after", "1/2", "hours", "!"],
]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("tokenizers")
    return {
        "bert": AutoTokenizer.from_pretrained(bundled_minilm()),
        "gpt2": AutoTokenizer.from_pretrained(tiny_model(folder / "gpt2", "gpt2")),
        "llama": AutoTokenizer.from_pretrained(tiny_model(folder / "llama", "llama")),
    }


def normal(text: str, arch: str) -> str:
    """A word as the tokenizer gives it back: no whitespace, lowercase for MiniLM (an uncased model)."""
    text = "".join(text.split())
    return text.lower() if arch == "bert" else text


def aligned(tok: Any, sentences: list[list[str]], max_length: int = 64) -> list[WordAlignment]:
    texts = [words_text(words) for words in sentences]
    return align_words(tok, texts, [word_char_spans(t, w) for t, w in zip(texts, sentences)], max_length)


def test_doctests() -> None:
    assert doctest.testmod(align).failed == 0


def test_words_text_and_spans() -> None:
    words = ["1/2", "of", "U.S.", "."]
    text = words_text(words)
    assert text == "1/2 of U.S. ."
    spans = word_char_spans(text, words)
    assert [text[s:e] for s, e in spans] == words


def test_word_char_spans_in_order_and_not_found() -> None:
    # the second "the" is found after the first, not at the same place
    assert word_char_spans("the cat and the dog", ["the", "cat", "and", "the", "dog"])[3] == (12, 15)
    assert word_char_spans("a  b", ["a", "  ", "b", ""]) == [(0, 1), (-1, -1), (3, 4), (-1, -1)]
    with pytest.raises(ValueError, match="'dog'"):
        word_char_spans("the cat", ["the", "dog"])
    with pytest.raises(ValueError, match="'the'"):  # the only "the" is before the cursor
        word_char_spans("the cat", ["the", "cat", "the"])


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_ids_are_exactly_those_of_mining(tokenizers: dict[str, Any], arch: str) -> None:
    tok = tokenizers[arch]
    texts = [words_text(words) for words in SENTENCES]
    for max_length in (64, 9, 5):
        ids, special, long_rows = tokenize_sentences(tok, texts, max_length)
        got = aligned(tok, SENTENCES, max_length)
        assert [a.input_ids for a in got] == ids
        assert [a.special for a in got] == special
        assert [i for i, a in enumerate(got) if a.truncated] == long_rows


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_pieces_decode_to_their_words(tokenizers: dict[str, Any], arch: str) -> None:
    tok = tokenizers[arch]
    for words, a in zip(SENTENCES, aligned(tok, SENTENCES)):
        assert not a.truncated
        assert len(a.pieces) == len(words)
        for word, (start, end) in zip(words, a.pieces):
            assert 0 <= start < end <= len(a.input_ids)
            assert not any(a.special[start:end])
            assert normal(tok.decode(a.input_ids[start:end]), arch) == normal(word, arch)
        # pieces are in order and do not overlap
        assert all(p[1] <= q[0] for p, q in zip(a.pieces, a.pieces[1:]))


def test_wordpiece_splits_words_into_several_pieces(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["bert"]
    [a] = aligned(tok, [SENTENCES[0]])
    pieces = [tok.convert_ids_to_tokens(a.input_ids[s:e]) for s, e in a.pieces]
    assert pieces[0] == ["token", "##ization"]
    assert pieces[2] == ["un", "##bel", "##ie", "##va", "##bly"]
    assert pieces[4] == [","]
    assert pieces[5] == ["isn", "'", "t"]
    assert a.pieces[0] == (1, 3)  # position 0 is [CLS]


def test_bos_shifts_every_position_by_one(tokenizers: dict[str, Any]) -> None:
    gpt2, llama = aligned(tokenizers["gpt2"], SENTENCES), aligned(tokenizers["llama"], SENTENCES)
    bos = tokenizers["llama"].bos_token_id
    for g, ll in zip(gpt2, llama):
        assert ll.input_ids == [bos] + g.input_ids
        assert ll.special == [1] + g.special
        assert ll.pieces == [(s + 1, e + 1) for s, e in g.pieces]


def test_lone_space_pieces_belong_to_no_word(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["gpt2"]
    [a] = aligned(tok, [SENTENCES[0]])
    tokens = tok.convert_ids_to_tokens(a.input_ids)
    owned = {p for s, e in a.pieces for p in range(s, e)}
    lone = [i for i, t in enumerate(tokens) if t == "Ġ"]
    assert lone and not owned & set(lone)
    assert owned | set(lone) == set(range(len(tokens)))


def test_spacy_tokens_inside_a_normal_sentence(tokenizers: dict[str, Any]) -> None:
    text = "I don't live in the U.S. anymore."
    words = ["I", "do", "n't", "live", "in", "the", "U.S.", "anymore", "."]
    spans = word_char_spans(text, words)
    assert [text[s:e] for s, e in spans] == words
    expected = {
        # WordPiece splits "don't" as don ' t: "don" starts inside "do", so it is do's piece
        "bert": ["i", "don", "' t", "live", "in", "the", "u. s.", "anymore", "."],
        "gpt2": ["I", "don", "'t", " live", " in", " the", "U.S.", " anymore", "."],
    }
    for arch, want in expected.items():
        tok = tokenizers[arch]
        [a] = align_words(tok, [text], [spans], 64)
        assert [tok.decode(a.input_ids[s:e]) for s, e in a.pieces] == want


def test_truncation_drops_cut_off_and_partly_cut_words(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["bert"]
    words = ["The", "cat", "saw", "Tokenization", "happen", "."]  # [CLS] the cat saw token ##ization happen . [SEP]
    [full] = aligned(tok, [words], 64)
    assert full.pieces[3][1] - full.pieces[3][0] == 2 and not full.truncated
    [a] = aligned(tok, [words], 6)  # [CLS] the cat saw token [SEP]: "Tokenization" lost "##ization"
    assert a.truncated and len(a.input_ids) == 6
    assert a.input_ids[-1] == tok.sep_token_id and a.special[-1] == 1
    assert a.pieces[:3] == full.pieces[:3]
    assert a.pieces[3:] == [(-1, -1)] * 3
    [b] = aligned(tok, [words], 7)  # the whole of "Tokenization" fits
    assert b.pieces[:4] == full.pieces[:4] and b.pieces[4:] == [(-1, -1)] * 2
    assert a.input_ids == tokenize_sentences(tok, [words_text(words)], 6)[0][0]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_truncation_without_closing_token(tokenizers: dict[str, Any], arch: str) -> None:
    tok = tokenizers[arch]
    words = SENTENCES[0]
    [full] = aligned(tok, [words], 64)
    cut = full.pieces[2][0] + 2  # inside "unbelievably"
    [a] = aligned(tok, [words], cut)
    assert a.truncated and a.input_ids == full.input_ids[:cut]
    assert a.pieces[:2] == full.pieces[:2] and a.pieces[2:] == [(-1, -1)] * (len(words) - 2)


def test_whitespace_words_and_unaligned_spans(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["bert"]
    text = "a  cat"
    [a] = align_words(tok, [text], [word_char_spans(text, ["a", "  ", "cat"])], 64)
    assert a.pieces == [(1, 2), (-1, -1), (2, 3)]
    assert align_words(tok, [], [], 64) == []
    with pytest.raises(ValueError, match="2 texts but 1"):
        align_words(tok, ["a", "b"], [[(0, 1)]], 64)


def test_slow_tokenizer_is_refused() -> None:
    with pytest.raises(ConfigError, match="no offset mapping"):
        align_words(SimpleNamespace(is_fast=False), ["a cat"], [[(0, 1), (2, 5)]], 64)


def test_token_positions() -> None:
    assert token_positions((4, 7), "first") == [4]
    assert token_positions((4, 7), "last") == [6]
    assert token_positions((4, 7)) == [6]  # last is the default, as in NeuroX
    assert token_positions((4, 7), "mean") == [4, 5, 6]
    assert token_positions((4, 5), "mean") == [4]
    assert token_positions((-1, -1), "first") == []
    with pytest.raises(ConfigError, match="'middle'"):
        token_positions((4, 7), "middle")


def test_positions_pick_the_right_wordpiece(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["bert"]
    [a] = aligned(tok, [SENTENCES[0]])
    piece = a.pieces[2]  # un ##bel ##ie ##va ##bly
    name = {c: tok.convert_ids_to_tokens([a.input_ids[p] for p in token_positions(piece, c)]) for c in ("first", "last")}
    assert name == {"first": ["un"], "last": ["##bly"]}
    assert len(token_positions(piece, "mean")) == 5



@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_pieces_match_a_brute_force_scan(tokenizers: dict[str, Any], arch: str) -> None:
    """Every token against every word, with no search: the owner is the word holding its first visible char."""
    tok = tokenizers[arch]
    for words, a in zip(SENTENCES, aligned(tok, SENTENCES)):
        text = words_text(words)
        spans = word_char_spans(text, words)
        enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        want = []
        for s, e in spans:
            owned = []
            for position, ((ts, te), is_special) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"])):
                visible = [c for c in range(ts, te) if not text[c].isspace()]
                if not is_special and visible and s <= visible[0] < e:
                    owned.append(position)
            want.append((owned[0], owned[-1] + 1) if owned else (-1, -1))
        assert a.pieces == want
