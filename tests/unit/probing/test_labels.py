"""Concept file readers: CoNLL-U, word/TAG lines and JSON Lines, with their errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miner.errors import ConfigError, InputError
from miner.probing.labels import (
    LabelledSentence,
    concept_format,
    conllu_column,
    read_concept_file,
    read_conllu,
    read_labels_jsonl,
    read_word_tag,
)

CONLLU = """\
# sent_id = 1
# text = The cat can't sleep.
1\tThe\tthe\tDET\tDT\tDefinite=Def\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\tNN\tNumber=Sing\t4\tnsubj\t_\t_
3-4\tcan't\t_\t_\t_\t_\t_\t_\t_\t_
3\tca\tcan\tAUX\tMD\t_\t5\taux\t_\t_
4\tn't\tnot\tPART\tRB\t_\t5\tadvmod\t_\tSpaceAfter=No
4.1\tsaw\tsee\tVERB\tVBD\t_\t_\t_\t2:ref\t_
5\tsleep\tsleep\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
6\t.\t.\tPUNCT\t.\t_\t5\tpunct\t_\t_

1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_


# sent_id = 3
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_conllu_upos(tmp_path: Path) -> None:
    path = write(tmp_path / "ud.conllu", CONLLU)
    assert read_conllu(path) == [
        LabelledSentence(("The", "cat", "ca", "n't", "sleep", "."), ("DET", "NOUN", "AUX", "PART", "VERB", "PUNCT"), 1),
        LabelledSentence(("Hi",), ("INTJ",), 12),
        LabelledSentence(("Yes",), ("INTJ",), 15),
    ]


@pytest.mark.parametrize("column, first", [("xpos", "DT"), ("XPOS", "DT"), (5, "DT"), ("5", "DT"), ("deprel", "det"),
                                           ("lemma", "the"), ("form", "The"), (1, "1"), ("feats", "Definite=Def")])
def test_conllu_other_columns(tmp_path: Path, column: str | int, first: str) -> None:
    path = write(tmp_path / "ud.conllu", CONLLU.split("\n\n")[0].split("3-4")[0])
    [sentence] = read_conllu(path, column)
    assert sentence.labels[0] == first and sentence.words == ("The", "cat")


def test_conllu_unknown_column() -> None:
    for bad in ("xyz", 0, 11, "pos"):
        with pytest.raises(ConfigError, match=r"not a CoNLL-U column \(one of id, form, lemma, upos"):
            conllu_column(bad)
    with pytest.raises(ConfigError, match="column 'xyz'"):
        conllu_column("xyz")
    assert conllu_column("MISC") == 9


def test_conllu_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conllu", "# c\n1\tThe\tthe\tDET\n")
    with pytest.raises(InputError, match=r"bad\.conllu:2: expected 10 tab-separated fields, got 4"):
        read_conllu(path)
    path = write(tmp_path / "spaces.conllu", "1 The the DET DT _ 2 det _ _\n")
    with pytest.raises(InputError, match=r"spaces\.conllu:1: expected 10 tab-separated fields, got 1"):
        read_conllu(path)


def test_conllu_missing_label(tmp_path: Path) -> None:
    text = "1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_\n\n1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n2\tcat\tcat\t_\tNN\t_\t1\tdep\t_\t_\n"
    path = write(tmp_path / "gaps.conllu", text)
    assert read_conllu(path, "deprel")[1].labels == ("root", "dep")
    with pytest.raises(InputError, match=r"gaps\.conllu:1: no xpos value"):
        read_conllu(path, "xpos")
    with pytest.raises(InputError, match=r"gaps\.conllu:4: no upos value"):
        read_conllu(path)


def test_word_tag(tmp_path: Path) -> None:
    path = write(tmp_path / "pos.txt", "The/DT cat/NN ./.\n\n  \n1/2/CD of/IN U.S./NNP\ta//SYM\n")
    assert read_word_tag(path) == [
        LabelledSentence(("The", "cat", "."), ("DT", "NN", "."), 1),
        LabelledSentence(("1/2", "of", "U.S.", "a/"), ("CD", "IN", "NNP", "SYM"), 4),
    ]
    assert read_word_tag(write(tmp_path / "bar.txt", "cat|NN a/b|X\n"), sep="|")[0].words == ("cat", "a/b")


def test_word_tag_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "pos.txt", "The/DT cat/NN\nThe/DT cat NN\n")
    with pytest.raises(InputError, match=r"pos\.txt:2: item 'cat' has no '/'"):
        read_word_tag(path)
    with pytest.raises(InputError, match=r"empty\.txt:1: item 'cat/' has an empty tag"):
        read_word_tag(write(tmp_path / "empty.txt", "cat/\n"))
    with pytest.raises(InputError, match=r"noword\.txt:1: item '/NN' has an empty word"):
        read_word_tag(write(tmp_path / "noword.txt", "/NN\n"))
    with pytest.raises(ConfigError, match="sep"):
        read_word_tag(path, sep=" ")


def test_jsonl(tmp_path: Path) -> None:
    text = '{"tokens": ["The", "cat"], "labels": ["DET", "NOUN"]}\n\n{"tokens": [], "labels": []}\n' \
           '{"words": ["Hi"], "tags": ["INTJ"], "id": 3}\n'
    path = write(tmp_path / "pos.jsonl", text)
    with pytest.raises(InputError, match=r"pos\.jsonl:4: no 'tokens' key"):
        read_labels_jsonl(path)
    path = write(tmp_path / "good.jsonl", "".join(text.splitlines(keepends=True)[:3]))
    assert read_labels_jsonl(path) == [LabelledSentence(("The", "cat"), ("DET", "NOUN"), 1)]
    path = write(tmp_path / "other.jsonl", "\n\n" + text.splitlines()[-1] + "\n")
    assert read_labels_jsonl(path, "words", "tags") == [LabelledSentence(("Hi",), ("INTJ",), 3)]


@pytest.mark.parametrize("line, message", [
    ('{"tokens": ["a", "b", "c"], "labels": ["X", "Y"]}', "3 tokens but 2 labels"),
    ('{"tokens": "a b", "labels": ["X", "Y"]}', "'tokens' is not a list"),
    ('{"tokens": ["a", 2], "labels": ["X", "Y"]}', "'tokens' item 1 is not a string"),
    ('{"tokens": ["a"], "labels": [null]}', "'labels' item 0 is not a string"),
    ('{"tokens": ["a"], "labels": ["X"]', "not valid JSON"),
    ('["a", "X"]', "expected a JSON object, got list"),
])
def test_jsonl_errors(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"tokens": ["ok"], "labels": ["X"]}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"bad\.jsonl:2: .*{message}"):
        read_labels_jsonl(path)


def test_jsonl_count_message(tmp_path: Path) -> None:
    path = write(tmp_path / "n.jsonl", json.dumps({"tokens": ["w"] * 12, "labels": ["L"] * 11}) + "\n")
    with pytest.raises(InputError) as info:
        read_labels_jsonl(path)
    assert str(info.value) == f"{path}:1: 12 tokens but 11 labels"


def test_concept_format_by_suffix() -> None:
    assert [concept_format(Path(n)) for n in ("a.conllu", "a.CONLL", "a.jsonl", "a.json", "a.txt", "a")] == \
        ["conllu", "conllu", "jsonl", "jsonl", "word_tag", "word_tag"]
    assert concept_format(Path("a.txt"), "jsonl") == "jsonl"
    with pytest.raises(ConfigError, match="format 'csv'.*one of auto, conllu, word_tag, jsonl"):
        concept_format(Path("a.csv"), "csv")


def test_read_concept_file_dispatches(tmp_path: Path) -> None:
    conllu = write(tmp_path / "ud.conll", CONLLU)
    assert read_concept_file(conllu, column="xpos")[0].labels[:2] == ("DT", "NN")
    jsonl = write(tmp_path / "pos.json", '{"tokens": ["a"], "labels": ["X"]}\n')
    assert read_concept_file(jsonl) == [LabelledSentence(("a",), ("X",), 1)]
    word_tag = write(tmp_path / "pos.data", "a/X\n")
    assert read_concept_file(word_tag) == read_concept_file(word_tag, "word_tag")
    assert read_concept_file(word_tag)[0].labels == ("X",)
    with pytest.raises(InputError, match=r"pos\.data:1: not valid JSON"):
        read_concept_file(word_tag, "jsonl")
    with pytest.raises(ConfigError, match="column 'nope'"):
        read_concept_file(conllu, column="nope")


def test_read_concept_file_bom_and_utf8(tmp_path: Path) -> None:
    path = tmp_path / "pos.txt"
    path.write_bytes("\ufeffCafé/NN naïve/JJ\n".encode())
    assert read_concept_file(path) == [LabelledSentence(("Café", "naïve"), ("NN", "JJ"), 1)]
    path.write_bytes("\ufeff1\tCafé\t_\tNOUN\t_\t_\t0\troot\t_\t_\n".encode())
    assert read_concept_file(path, "conllu")[0].words == ("Café",)
    path.write_bytes(b"caf\xe9/NN\n")
    with pytest.raises(InputError, match=r"pos\.txt: not UTF-8"):
        read_concept_file(path)


def test_read_concept_file_missing_unreadable_and_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere\.conllu: no such file"):
        read_concept_file(tmp_path / "nothere.conllu")
    with pytest.raises(InputError, match="cannot read"):
        read_concept_file(tmp_path)  # a folder
    for name, text in (("empty.conllu", "# only a comment\n\n"), ("blank.txt", "\n  \n"), ("e.jsonl", "")):
        path = write(tmp_path / name, text)
        with pytest.raises(InputError) as info:
            read_concept_file(path)
        assert str(info.value) == f"{path}: no labelled sentences"
