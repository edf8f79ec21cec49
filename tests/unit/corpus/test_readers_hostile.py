"""Corpus readers on hostile input: text fields that are not text, null/empty text, UTF-16/32 and byte order marks.

Every case goes through `miner corpus prepare` (the CLI or prepare_corpus) and checks the exact one-line error,
the manifest's count, or the stored text.
"""

from __future__ import annotations

import codecs
import gzip
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner.cli import main
from miner.config import CorpusManifest, PrepareOptions, RunOptions
from miner.corpus.prepare import load_corpus, prepare_corpus
from miner.errors import InputError

SERIAL = RunOptions(workers=1)
GOOD = "The cat sat on the mat."
OTHER = "Markets fell sharply today."


def texts(out: Path) -> list[str]:
    """Stored sentence texts of a prepared corpus, in id order."""
    m = load_corpus(out)
    return [t for s in m.shards for t in pq.read_table(out / s.file, columns=["text"])["text"].to_pylist()]


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit 2 and exactly one error line; return that line."""
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("miner: error:")]
    assert code == 2 and len(lines) == 1
    return lines[0]


def prepare_cli(path: Path, out: Path, *extra: str) -> list[str]:
    assert main(["corpus", "prepare", str(path), "--out", str(out), "--workers", "1", *extra]) == 0
    return texts(out)


# --- item 5: text values that are not text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [(["a", "b"], "a list"), ({"a": "b"}, "an object"), (5, "a number"), (1.5, "a number"), (True, "a boolean")],
)
def test_jsonl_non_string_text_is_an_error_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object, kind: str
) -> None:
    path = tmp_path / "data.jsonl"
    records = [{"text": GOOD}, {"text": OTHER}, {"text": value}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    line = cli_error(["corpus", "prepare", str(path), "--out", str(tmp_path / "o"), "--workers", "1"], capsys)
    assert line == f"miner: error: {path}:3: field 'text' is {kind}, not a string"
    assert not (tmp_path / "o").exists()


def test_jsonl_non_string_text_names_the_chosen_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"body": ["x"]}) + "\n")
    with pytest.raises(InputError) as info:
        prepare_corpus([path], tmp_path / "o", PrepareOptions(text_column="body"), SERIAL)
    assert str(info.value) == f"{path}:1: field 'body' is a list, not a string"


def test_jsonl_null_and_empty_text_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    records = [{"text": GOOD}, {"text": None}, {"text": ""}, {"text": "   "}, {"text": OTHER}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    m = prepare_corpus([path], tmp_path / "o", PrepareOptions(), SERIAL)
    assert texts(tmp_path / "o") == [GOOD, OTHER]
    assert m.dropped["empty_text"] == 3
    assert load_corpus(tmp_path / "o").dropped["empty_text"] == 3


def test_clean_input_has_no_empty_text_count_and_old_manifests_load(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": GOOD}) + "\n")
    m = prepare_corpus([path], tmp_path / "o", PrepareOptions(), SERIAL)
    assert m.dropped.get("empty_text", 0) == 0
    old = json.loads((tmp_path / "o" / "manifest.json").read_text())
    old["dropped"] = {"too_short": 1}  # a corpus written before the count existed
    assert CorpusManifest.model_validate(old).dropped.get("empty_text", 0) == 0


@pytest.mark.parametrize(
    ("array", "shown"),
    [
        (pa.array([[GOOD], [OTHER]], type=pa.list_(pa.string())), "list<element: string>"),
        (pa.array([1, 2], type=pa.int64()), "int64"),
        (pa.array([b"abc", b"def"], type=pa.binary()), "binary"),
    ],
)
def test_parquet_non_string_text_column_is_an_error_naming_file_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], array: pa.Array, shown: str
) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": array, "label": ["a", "b"]}), path)
    line = cli_error(["corpus", "prepare", str(path), "--out", str(tmp_path / "o"), "--workers", "1"], capsys)
    assert line == f"miner: error: {path}: column 'text' is {shown}, not a string column"


@pytest.mark.parametrize("kind", ["string", "large_string", "dictionary"])
def test_parquet_string_columns_read_and_null_text_counted(tmp_path: Path, kind: str) -> None:
    values = [GOOD, None, "", OTHER]
    array = {
        "string": pa.array(values, type=pa.string()),
        "large_string": pa.array(values, type=pa.large_string()),
        "dictionary": pa.array(values, type=pa.string()).dictionary_encode(),
    }[kind]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": array, "label": ["a", "b", "c", "d"]}), path)
    m = prepare_corpus([path], tmp_path / "o", PrepareOptions(), SERIAL)
    assert texts(tmp_path / "o") == [GOOD, OTHER]
    assert m.dropped["empty_text"] == 2


def test_parquet_all_null_text_column_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": pa.nulls(2), "label": ["a", "b"]}), path)
    other = tmp_path / "ok.jsonl"
    other.write_text(json.dumps({"text": GOOD}) + "\n")
    m = prepare_corpus([path, other], tmp_path / "o", PrepareOptions(), SERIAL)
    assert m.dropped["empty_text"] == 2 and m.sentences == 1


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t")])
def test_csv_empty_text_field_counted(tmp_path: Path, suffix: str, sep: str) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_text(f"text{sep}label\n{GOOD}{sep}a\n{sep}b\n{OTHER}{sep}c\n")
    m = prepare_corpus([path], tmp_path / "o", PrepareOptions(), SERIAL)
    assert texts(tmp_path / "o") == [GOOD, OTHER]
    assert m.dropped["empty_text"] == 1


# --- item 6: UTF-16/UTF-32 and byte order marks ------------------------------------------------------------------

BOMS = {
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}
CAFE = "Le caf\u00e9 est tr\u00e8s bon."


@pytest.mark.parametrize("codec", sorted(BOMS))
def test_bom_with_default_encoding_is_decoded_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, codec: str
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(BOMS[codec] + f"{CAFE}\n\n{GOOD}\n".encode(codec))
    with caplog.at_level(logging.INFO, logger="miner"):
        prepare_corpus([path], tmp_path / "o", PrepareOptions(), SERIAL)
    assert texts(tmp_path / "o") == [CAFE, GOOD]
    label = codec.upper().replace("-LE", " LE").replace("-BE", " BE")
    assert f"{path}: starts with a {label} byte order mark; reading it as {label}" in caplog.messages


@pytest.mark.parametrize("encoding", ["utf-16", "UTF-16", "utf16"])
def test_explicit_utf16_with_bom_is_not_called_binary(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(f"{CAFE}\n".encode("utf-16"))  # Python writes a BOM
    assert prepare_cli(path, tmp_path / "o", "--encoding", encoding) == [CAFE]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_explicit_endian_encoding_without_bom(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(f"{CAFE}\n".encode(codec))
    assert prepare_cli(path, tmp_path / "o", "--encoding", codec) == [CAFE]


def test_explicit_endian_encoding_strips_its_bom_before_a_csv_header(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + f"text,label\n{GOOD},a\n".encode("utf-16-le"))
    assert prepare_cli(path, tmp_path / "o", "--encoding", "utf-16-le") == [GOOD]


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.tsv"])
@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_tabular_readers_with_a_bom(tmp_path: Path, name: str, codec: str) -> None:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        pairs = [(CAFE, "x"), (GOOD, "y")]
        body = "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in pairs)
    else:
        sep = "\t" if name.endswith(".tsv") else ","
        body = f"text{sep}label\n{CAFE}{sep}x\n{GOOD}{sep}y\n"
    data = body.encode(codec)
    if codec == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    path.write_bytes(data)
    prepare_corpus([path], tmp_path / "o", PrepareOptions(), SERIAL)
    assert texts(tmp_path / "o") == [CAFE, GOOD]
    m = load_corpus(tmp_path / "o")
    assert m.labels["label"] == {"x": 1, "y": 1}


def test_utf8_bom_stripped_from_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(f"{GOOD}\n".encode("utf-8-sig"))
    assert prepare_cli(path, tmp_path / "o") == [GOOD]


@pytest.mark.parametrize("encoding", [None, "utf-16"])
def test_gzip_utf16(tmp_path: Path, encoding: str | None) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(f"text,label\n{CAFE},x\n".encode("utf-16")))
    extra = ["--encoding", encoding] if encoding else []
    assert prepare_cli(path, tmp_path / "o", *extra) == [CAFE]


def test_bom_that_contradicts_encoding_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(f"{CAFE}\n".encode("utf-16"))  # little-endian BOM on this platform's Python
    base = ["corpus", "prepare", str(path), "--out", str(tmp_path / "o"), "--workers", "1"]
    line = cli_error([*base, "--encoding", "latin-1"], capsys)
    assert line == (f"miner: error: {path}: starts with a UTF-16 LE byte order mark, but --encoding is latin-1;"
                    " pass --encoding utf-16 (or leave --encoding out)")
    line = cli_error([*base, "--encoding", "utf-16-be"], capsys)
    assert line == (f"miner: error: {path}: starts with a UTF-16 LE byte order mark, but --encoding is utf-16-be;"
                    " pass --encoding utf-16 (or leave --encoding out)")


def test_utf16_without_bom_gets_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(f"{CAFE} {GOOD}\n".encode("utf-16-le"))
    line = cli_error(["corpus", "prepare", str(path), "--out", str(tmp_path / "o")], capsys)
    assert line == (f"miner: error: {path}: looks like UTF-16 LE text without a byte order mark (NUL bytes);"
                    " pass --encoding utf-16-le")


def test_truncated_utf16_names_the_line_without_a_latin1_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(f"{GOOD}\n{OTHER}\n".encode("utf-16") + b"A")  # an odd byte count
    line = cli_error(["corpus", "prepare", str(path), "--out", str(tmp_path / "o"), "--txt-mode", "lines"], capsys)
    assert line == f"miner: error: {path}:3: invalid utf-16-le bytes (truncated data); pass --encoding-errors replace"


def test_truly_binary_file_message_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\x00\x01\x02binary\x00" * 100)
    line = cli_error(["corpus", "prepare", str(path), "--out", str(tmp_path / "o")], capsys)
    assert line == f"miner: error: {path}: looks like a binary file (NUL bytes), not text"


def test_unknown_encoding_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(f"{GOOD}\n")
    line = cli_error(["corpus", "prepare", str(path), "--out", str(tmp_path / "o"), "--encoding", "utf-99"], capsys)
    assert line == f"miner: error: {path}: unknown encoding 'utf-99' (--encoding)"
