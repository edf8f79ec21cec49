"""Normalisation and sentence splitting."""

from miner.corpus.text import normalize, split_sentences


def test_repeated_symbols_collapse_to_one() -> None:
    assert normalize("+++ wow!!! ... ok ---") == "+ wow! . ok -"


def test_letters_digits_and_whitespace() -> None:
    assert normalize("  Hello\t\tworld  1000 aaa \x07bell\u200b ") == "Hello world 1000 aaa bell"


def test_unicode_nfc() -> None:
    assert normalize("cafe\u0301") == "caf\u00e9"


def test_split_keeps_abbreviations_together() -> None:
    [sents] = list(split_sentences(["Mr. Smith went to Washington. He met Dr. Jones at 3 p.m. today."]))
    assert [s.text for s in sents] == ["Mr. Smith went to Washington.", "He met Dr. Jones at 3 p.m. today."]
    assert sents[0].n_tokens == 6


def test_split_question_and_exclamation() -> None:
    [sents] = list(split_sentences(["Is it true? Yes! It is."]))
    assert [s.text for s in sents] == ["Is it true?", "Yes!", "It is."]


def test_one_list_per_input_in_order() -> None:
    out = list(split_sentences(["Cats eat fish.", "", "Dogs eat food. Grapes have seeds."]))
    assert [[s.text for s in x] for x in out] == [["Cats eat fish."], [], ["Dogs eat food.", "Grapes have seeds."]]


def test_meaningful_symbols_keep_their_form() -> None:
    """URLs, e-mail addresses, numbers and emoticons are not collapsed (issue 16: `http://t.co/...` became
    `http:/t.co` and led a social-media unit's signature); symbols elsewhere still are."""
    cases = {
        "read http://t.co/xYz... now!!!": "read http://t.co/xYz... now!",
        "https://example.org//a//b?x==1 ok": "https://example.org//a//b?x==1 ok",
        "www.example.com/path//x --- ok": "www.example.com/path//x - ok",
        "write to first.last+tag@mail.example.co.uk !!!": "write to first.last+tag@mail.example.co.uk !",
        "it cost 1,000.50 at 12:30 on 2024-01-02, 3/4 of it...": "it cost 1,000.50 at 12:30 on 2024-01-02, 3/4 of it.",
        "so happy :))) <3 ^_^ :-( ;D": "so happy :))) <3 ^_^ :-( ;D",
        "well...: (see)) ((here": "well.: (see) (here",
    }
    for raw, want in cases.items():
        assert normalize(raw) == want, raw
