"""Corpus preparation: every input format, compression, metadata, ids, filters, and bad input."""

from __future__ import annotations

import bz2
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner.cli import main
from miner.config import PrepareOptions, RunOptions
from miner.corpus.prepare import load_corpus, prepare_corpus
from miner.errors import InputError, OutputConflictError

DOCS = [
    {"text": "The cat sat on the mat. It was happy!!!", "label": "pos", "topic": "pets"},
    {"text": "Markets fell sharply today. Investors were worried about rates.", "label": "neg", "topic": "news"},
    {"text": "Ok. Short one here indeed.", "label": "neutral", "topic": None},
]
SERIAL = RunOptions(workers=1)


def rows(out: Path) -> list[dict]:
    m = load_corpus(out)
    table = pa.concat_tables([pq.read_table(out / s.file) for s in m.shards])
    return table.to_pylist()


def write_inputs(tmp: Path) -> dict[str, Path]:
    jsonl = tmp / "d.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    csv = tmp / "d.csv"
    csv.write_text("text,label,topic\n" + "".join(f'"{d["text"]}",{d["label"]},{d["topic"] or ""}\n' for d in DOCS))
    tsv = tmp / "d.tsv"
    tsv.write_text("text\tlabel\ttopic\n" + "".join(f'{d["text"]}\t{d["label"]}\t{d["topic"] or ""}\n' for d in DOCS))
    parquet = tmp / "d.parquet"
    pq.write_table(pa.Table.from_pylist(DOCS), parquet)
    txt = tmp / "d.txt"
    txt.write_text("\n\n".join(d["text"] for d in DOCS) + "\n")
    gz = tmp / "d.csv.gz"
    gz.write_bytes(gzip.compress(csv.read_bytes()))
    bz = tmp / "d.jsonl.bz2"
    bz.write_bytes(bz2.compress(jsonl.read_bytes()))
    return {"jsonl": jsonl, "csv": csv, "tsv": tsv, "parquet": parquet, "txt": txt, "gz": gz, "bz2": bz}


EXPECTED = ["The cat sat on the mat.", "It was happy!", "Markets fell sharply today.",
            "Investors were worried about rates.", "Short one here indeed."]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv", "parquet", "gz", "bz2"])
def test_every_tabular_format_gives_same_sentences_and_metadata(tmp_path: Path, kind: str) -> None:
    path = write_inputs(tmp_path)[kind]
    prepare_corpus([path], tmp_path / "out", PrepareOptions(), SERIAL)
    got = rows(tmp_path / "out")
    assert [r["text"] for r in got] == EXPECTED
    assert [r["label"] for r in got] == ["pos", "pos", "neg", "neg", "neutral"]
    assert [r["topic"] for r in got] == ["pets", "pets", "news", "news", None]
    assert [r["sentence_id"] for r in got] == list(range(5))
    assert [r["doc_id"] for r in got] == [0, 0, 1, 1, 2]
    assert {r["source"] for r in got} == {path.name}


def test_plain_text_paragraphs_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("First line of a\nparagraph here. Second sentence now.\n\nNew paragraph is here.\n")
    prepare_corpus([path], tmp_path / "p", PrepareOptions(), SERIAL)
    assert [r["text"] for r in rows(tmp_path / "p")] == [
        "First line of a paragraph here.", "Second sentence now.", "New paragraph is here."]
    prepare_corpus([path], tmp_path / "l", PrepareOptions(txt_mode="lines"), SERIAL)
    assert [r["doc_id"] for r in rows(tmp_path / "l")] == [0, 1, 1, 2]


def test_domain_from_option_column_or_file_stem(tmp_path: Path) -> None:
    a = tmp_path / "news.txt"
    a.write_text("Markets fell sharply today.\n")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"text": "Tweets are short and loud.", "domain": "social"}) + "\n")
    prepare_corpus([a, b], tmp_path / "o", PrepareOptions(), SERIAL)
    assert [r["domain"] for r in rows(tmp_path / "o")] == ["news", "social"]
    m = load_corpus(tmp_path / "o")
    assert m.domains == {"news": 1, "social": 1}
    prepare_corpus([a], tmp_path / "o2", PrepareOptions(domain="finance"), SERIAL)
    assert rows(tmp_path / "o2")[0]["domain"] == "finance"


def test_ids_are_stable_and_parallel_equals_serial(tmp_path: Path) -> None:
    path = write_inputs(tmp_path)["jsonl"]
    big = tmp_path / "big.jsonl"
    lines = path.read_text().splitlines()
    big.write_text("\n".join(lines * 700) + "\n")
    opts = PrepareOptions(shard_size=1000)
    prepare_corpus([big], tmp_path / "a", opts, SERIAL)
    prepare_corpus([big], tmp_path / "b", opts, RunOptions(workers=2))
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert ra == rb and len(ra) == 3500
    ma, mb = load_corpus(tmp_path / "a"), load_corpus(tmp_path / "b")
    assert [s.sha256 for s in ma.shards] == [s.sha256 for s in mb.shards]
    assert len(ma.shards) == 4 and ma.shards[1].first_id == 1000


def test_dedup_and_caps(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("The same sentence here. The same sentence here. Another one is here. And a third one.\n")
    m = prepare_corpus([path], tmp_path / "d", PrepareOptions(dedup=True), SERIAL)
    assert m.sentences == 3 and m.dropped["duplicate"] == 1
    m = prepare_corpus([path], tmp_path / "c", PrepareOptions(max_sentences=2), SERIAL)
    assert m.sentences == 2
    m = prepare_corpus([path], tmp_path / "e", PrepareOptions(max_per_domain=1), SERIAL)
    assert m.sentences == 1 and m.dropped["over_domain_cap"] == 3


def test_short_sentences_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("Hi. Yes. This one is long enough.\n")
    m = prepare_corpus([path], tmp_path / "o", PrepareOptions(), SERIAL)
    assert m.sentences == 1 and m.dropped["too_short"] == 2


def test_labels_counted_in_manifest(tmp_path: Path) -> None:
    m = prepare_corpus([write_inputs(tmp_path)["jsonl"]], tmp_path / "o", PrepareOptions(), SERIAL)
    assert m.labels["label"] == {"pos": 2, "neg": 2, "neutral": 1}


def test_rerun_is_noop_and_different_corpus_refused(tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path)
    out = tmp_path / "o"
    first = prepare_corpus([inputs["jsonl"]], out, PrepareOptions(), SERIAL)
    again = prepare_corpus([inputs["jsonl"]], out, PrepareOptions(), SERIAL)
    assert again.created == first.created
    with pytest.raises(OutputConflictError, match="different corpus"):
        prepare_corpus([inputs["csv"]], out, PrepareOptions(), SERIAL)
    assert load_corpus(out).fingerprint == first.fingerprint  # untouched
    replaced = prepare_corpus([inputs["csv"]], out, PrepareOptions(), RunOptions(workers=1, force=True))
    assert replaced.fingerprint != first.fingerprint


def test_metadata_columns_unified_across_shards(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"text": "First file sentence here.", "x": "1"}) + "\n")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"text": "Second file sentence here.", "y": "2"}) + "\n")
    m = prepare_corpus([a, b], tmp_path / "o", PrepareOptions(shard_size=1), SERIAL)
    schemas = [pq.read_schema(tmp_path / "o" / s.file).names for s in m.shards]
    assert schemas[0] == schemas[1] == m.columns
    assert rows(tmp_path / "o")[1]["x"] is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "no such file"),
        ("data.xyz", b"hello world here", "unknown input format"),
        ("bin.txt", b"\x00\x01\x02binary\x00" * 100, "binary"),
        ("latin.txt", "caf\u00e9 au lait is nice.\n".encode("latin-1"), "invalid utf-8"),
        ("empty.txt", b"", "no sentences"),
        ("nocol.csv", b"body,label\nhello there friend,1\n", "no text column 'text'"),
        ("long.txt", b"a" * 1_048_576 + b"\n", "exceeds max_document_chars"),
        ("bad.jsonl", b'{"text": "ok fine good"}\n{broken\n', "not valid JSON"),
        ("corrupt.parquet", b"PAR1 this is not parquet", "not a readable Parquet"),
    ],
)
def test_bad_input_one_clear_error_and_nothing_left(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message) as info:
        prepare_corpus([path], out, PrepareOptions(), SERIAL)
    assert name in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_replace_errors_decodes_latin1(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\u00e9 au lait is nice.\n".encode("latin-1"))
    prepare_corpus([path], tmp_path / "r", PrepareOptions(encoding_errors="replace"), SERIAL)
    assert rows(tmp_path / "r")[0]["text"] == "caf\ufffd au lait is nice."
    prepare_corpus([path], tmp_path / "l", PrepareOptions(encoding="latin-1"), SERIAL)
    assert rows(tmp_path / "l")[0]["text"] == "caf\u00e9 au lait is nice."


def test_long_document_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("a" * 300_000 + "\n\nThis short paragraph survives.\n")
    m = prepare_corpus([path], tmp_path / "o", PrepareOptions(skip_long_documents=True), SERIAL)
    assert m.sentences == 1 and m.dropped["long_document"] == 1


def test_existing_corpus_survives_a_failed_rerun(tmp_path: Path) -> None:
    good = write_inputs(tmp_path)["jsonl"]
    out = tmp_path / "o"
    first = prepare_corpus([good], out, PrepareOptions(), SERIAL)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(InputError):
        prepare_corpus([bad], out, PrepareOptions(), RunOptions(workers=1, force=True))
    assert load_corpus(out).fingerprint == first.fingerprint


def test_cli_error_is_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["corpus", "prepare", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.txt: no such file" in err[0]
    code = main(["corpus", "prepare", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), "--shard-size", "0"])
    assert code == 2 and "shard_size" in capsys.readouterr().err


def test_cli_prepare_and_info(tmp_path: Path) -> None:
    path = write_inputs(tmp_path)["csv"]
    out = tmp_path / "o"
    exe = [sys.executable, "-m", "miner.cli"]
    done = subprocess.run([*exe, "corpus", "prepare", str(path), "--out", str(out), "--workers", "1"],
                          capture_output=True, text=True, check=True)
    assert "5 sentences" in done.stdout
    info = subprocess.run([*exe, "corpus", "info", str(out), "--json"], capture_output=True, text=True, check=True)
    summary = json.loads(info.stdout)
    assert summary["sentences"] == 5 and summary["labels"]["label"]["pos"] == 2
    bad = subprocess.run([*exe, "corpus", "info", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a prepared corpus" in bad.stderr


def test_interleave_balances_text_across_inputs(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("Alpha one is here.\n\nAlpha two is here.\n\nAlpha three is here.\n")
    b = tmp_path / "b.txt"
    b.write_text("Beta one is here and it is a much longer document than the others.\n")
    prepare_corpus([a, b], tmp_path / "o", PrepareOptions(interleave=True), SERIAL)
    assert [r["text"].split()[:2] for r in rows(tmp_path / "o")] == [
        ["Alpha", "one"], ["Beta", "one"], ["Alpha", "two"], ["Alpha", "three"]]
    m = prepare_corpus([b, a], tmp_path / "o2", PrepareOptions(interleave=True), SERIAL)
    assert m.sentences == 4
