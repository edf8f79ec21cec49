"""Where commands that read may write: never into a run or corpus folder, never over a file unless forced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miner.errors import OutputConflictError
from miner.outputs import check_output_file, check_output_folder, data_folder_kind, enclosing_data_folder


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    run = tmp_path / "runs" / "demo"
    (run / "checkpoint").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"status": "running", "fingerprint": "abc", "job": {"name": "demo"}}))
    corpus = tmp_path / "data" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "manifest.json").write_text(json.dumps({"fingerprint": "f", "shards": [], "sentences": 0}))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "a web app manifest"}))
    return {"run": run, "corpus": corpus, "other": other, "tmp": tmp_path}


def test_kinds(folders: dict[str, Path]) -> None:
    assert data_folder_kind(folders["run"]) == "run"
    assert data_folder_kind(folders["corpus"]) == "corpus"
    assert data_folder_kind(folders["other"]) is None
    assert data_folder_kind(folders["tmp"]) is None
    bare = folders["tmp"] / "mined"
    bare.mkdir()
    (bare / "top_sentences.parquet").write_bytes(b"PAR1")  # a run whose manifest was lost is still a run
    assert data_folder_kind(bare) == "run"


@pytest.mark.parametrize("target", ["run/units.parquet", "run/manifest.json", "run/checkpoint/state.json",
                                    "run/new.csv", "corpus/shard-00000.parquet", "corpus/x.json"])
def test_files_inside_data_folders_are_refused(folders: dict[str, Path], target: str) -> None:
    key, _, rest = target.partition("/")
    path = folders[key] / rest
    with pytest.raises(OutputConflictError, match=f"inside the {key} folder"):
        check_output_file(path, force=True)  # --force never makes a run folder writable


def test_symlinks_and_relative_paths_into_a_run_are_refused(folders: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    link = folders["tmp"] / "link"
    link.symlink_to(folders["run"])
    with pytest.raises(OutputConflictError, match="inside the run folder"):
        check_output_file(link / "out.csv")
    file_link = folders["tmp"] / "units-link.parquet"
    file_link.symlink_to(folders["run"] / "units.parquet")
    with pytest.raises(OutputConflictError, match="inside the run folder"):
        check_output_file(file_link, force=True)
    monkeypatch.chdir(folders["run"] / "checkpoint")
    with pytest.raises(OutputConflictError, match="inside the run folder"):
        check_output_file(Path("../x.json"))
    with pytest.raises(OutputConflictError, match="inside the run folder"):
        check_output_folder(Path("."))


def test_existing_files_need_force(folders: dict[str, Path]) -> None:
    target = folders["other"] / "result.csv"
    assert check_output_file(target) == target
    target.write_text("old")
    with pytest.raises(OutputConflictError, match="exists; pass --force"):
        check_output_file(target)
    assert check_output_file(target, force=True) == target
    with pytest.raises(OutputConflictError, match="is a folder"):
        check_output_file(folders["other"], force=True)
    with pytest.raises(OutputConflictError, match="no such folder"):
        check_output_file(folders["other"] / "missing" / "r.csv")


def test_folders(folders: dict[str, Path]) -> None:
    out = folders["tmp"] / "reports" / "demo"
    assert check_output_folder(out, ["model.html"]) == out  # need not exist yet
    out.mkdir(parents=True)
    (out / "model.html").write_text("x")
    assert check_output_folder(out, ["unit-1.html"]) == out  # adding pages beside others is fine
    with pytest.raises(OutputConflictError, match="model.html: exists"):
        check_output_folder(out, ["unit-1.html", "model.html"])
    assert check_output_folder(out, ["model.html"], force=True) == out
    with pytest.raises(OutputConflictError, match="is a file"):
        check_output_folder(out / "model.html")
    assert enclosing_data_folder(out) is None
    assert enclosing_data_folder(folders["run"] / "plots" / "x") == ("run", folders["run"].resolve())


def test_corpus_prepare_never_writes_into_or_over_a_run(folders: dict[str, Path], tmp_path: Path) -> None:
    from miner.config import PrepareOptions, RunOptions
    from miner.corpus.prepare import prepare_corpus

    docs = tmp_path / "docs.txt"
    docs.write_text("The cat sat on the mat and looked around.\n\nA second paragraph with a few more words.\n")
    before = sorted(p.name for p in folders["run"].iterdir())
    for out in (folders["run"], folders["run"] / "corpus", folders["corpus"] / "nested"):
        with pytest.raises(OutputConflictError, match="inside the (run|corpus) folder"):
            prepare_corpus([docs], out, PrepareOptions(), RunOptions(workers=1, force=True))
    assert sorted(p.name for p in folders["run"].iterdir()) == before
    assert not (folders["corpus"] / "nested").exists()
