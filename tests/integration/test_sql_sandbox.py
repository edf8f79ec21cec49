"""`miner sql` end to end on small hand-made runs: the file sandbox lets a query read the run's own files and
nothing else (every DuckDB table function that reads files, every way of naming a path), results stream to
--out atomically, and --out never lands in a run or corpus folder or over a file without --force."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import miner.query.formats as formats_module
from miner.cli import main
from miner.errors import MinerError
from miner.query.formats import stream_csv
from miner.query.sandbox import sandboxed_connection
from miner.query.sql import query_arrow, run_query
from miner.run.catalog import catalog_sources, ensure_catalog
from tests.support.builders import make_corpus

pytestmark = pytest.mark.integration

# Table functions whose first parameter names a file but that read none.
NOT_FILE_READERS = {"which_secret"}
# The readers the sandbox must cover at the least (read_xlsx too, where the excel extension is loaded).
REQUIRED_READERS = {
    "read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_json_objects", "read_ndjson", "read_text",
    "read_blob", "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema", "parquet_file_metadata",
    "parquet_kv_metadata", "glob", "sniff_csv",
}
# Positional arguments some readers need after the path.
EXTRA_ARGS = {"parquet_bloom_probe": ", 'a', 1"}
SECRET = "the secret is 42"


def make_run(folder: Path, corpus: Path | None = None) -> Path:
    """A complete run folder as the catalog sees one (manifest, units, sentences, top_sentences), catalog built."""
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"unit_id": pa.array([0, 1, 2], pa.int32()), "site": ["hidden"] * 3,
                             "layer": [1, 1, 2], "idx": [0, 1, 0]}), folder / "units.parquet")
    pq.write_table(pa.table({"sentence_id": [0, 1], "text": ["a cat", "a dog"], "domain": ["wiki", "news"]}),
                   folder / "sentences.parquet")
    pq.write_table(pa.table({"unit_id": pa.array([0, 1], pa.int32()), "direction": ["top", "top"], "rank": [1, 1],
                             "score": [0.5, 0.25], "sentence_id": [0, 1], "peak_position": [1, 1],
                             "peak_token": ["cat", "dog"], "peak_score": [0.5, 0.25]}),
                   folder / "top_sentences.parquet")
    manifest: dict = {"status": "complete", "fingerprint": "test", "job": {"name": folder.name}}
    if corpus is not None:
        shards = json.loads((corpus / "manifest.json").read_text())["shards"]
        manifest["corpus"] = {"path": str(corpus), "shards": shards}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ensure_catalog(folder)
    return folder


def write_secrets(folder: Path) -> None:
    """secret.csv/.json/.ndjson/.txt/.parquet/.duckdb: one of each format a reader could parse."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret.csv").write_text(f"secret\n{SECRET}\n")
    (folder / "secret.json").write_text(json.dumps([{"secret": SECRET}]))
    (folder / "secret.ndjson").write_text(json.dumps({"secret": SECRET}) + "\n")
    (folder / "secret.txt").write_text(SECRET)
    pq.write_table(pa.table({"secret": [SECRET]}), folder / "secret.parquet")
    con = duckdb.connect(str(folder / "secret.duckdb"))
    con.execute(f"CREATE TABLE secret AS SELECT '{SECRET}' AS secret")
    con.close()


@dataclass
class Place:
    """The folders of a sandbox test: a run (with a corpus), another run, files outside, the working folder."""

    base: Path
    run: Path
    other: Path
    corpus: Path
    outside: Path
    work: Path


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """The runs and secrets, with the working folder `work` (holding DuckDB's default temp folder .tmp) as CWD."""
    base = tmp_path_factory.mktemp("sandbox")
    corpus = make_corpus(base / "docs", n=60, shard_size=30)
    run = make_run(base / "run", corpus)
    other = make_run(base / "other")
    outside, work = base / "outside", base / "work"
    for folder in (outside, work / ".tmp", run / ".tmp", run / "catalog.duckdb.tmp", other):
        write_secrets(folder)
    for ext in ("csv", "json", "ndjson", "txt", "parquet", "duckdb"):
        (run / f"link-secret.{ext}").symlink_to(outside / f"secret.{ext}")  # not a table name: not exposed
    (outside / "units_link.parquet").symlink_to(run / "units.parquet")
    (base / "run_link").symlink_to(run, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        yield Place(base, run, other, corpus, outside, work)


# (name, path template): every way of naming a file the query may not read. {ext} is the reader's format.
TARGETS = [
    ("absolute", "{outside}/secret.{ext}"),
    ("relative", "../outside/secret.{ext}"),
    ("dotdot from the run", "{run}/../outside/secret.{ext}"),
    ("dotdot through a run file", "{run}/units.parquet/../../outside/secret.{ext}"),
    ("symlink in the run to outside", "{run}/link-secret.{ext}"),
    ("duckdb temp folder, relative", ".tmp/secret.{ext}"),
    ("duckdb temp folder, absolute", "{work}/.tmp/secret.{ext}"),
    ("temp folder in the run", "{run}/.tmp/secret.{ext}"),
    ("temp folder of the catalog", "{run}/catalog.duckdb.tmp/secret.{ext}"),
    ("another run's table", "{other}/units.parquet"),
    ("another run's file", "{other}/secret.{ext}"),
    ("another run's manifest", "{other}/manifest.json"),
    ("another run's catalog", "{other}/catalog.duckdb"),
    ("own catalog", "{run}/catalog.duckdb"),
    ("own manifest", "{run}/manifest.json"),
    ("corpus manifest", "{corpus}/manifest.json"),
    ("run folder", "{run}"),
    ("outside folder", "{outside}"),
    ("glob of run tables", "{run}/*.parquet"),
    ("glob around a run table", "{run}/units.parquet*"),
    ("recursive glob", "{run}/**"),
    ("glob outside", "{outside}/*"),
    ("glob of the temp folder", ".tmp/*"),
    ("file URL", "file://{outside}/secret.{ext}"),
    ("home folder", "~/secret.{ext}"),
]


def _format(function: str) -> str:
    """Which secret file a reader could parse. Example: "read_ndjson_auto" -> "ndjson"; "glob" -> "txt"."""
    if "parquet" in function:
        return "parquet"
    if "ndjson" in function:
        return "ndjson"
    if "json" in function:
        return "json"
    if "csv" in function:
        return "csv"
    if "duckdb" in function:
        return "duckdb"
    return "txt"


def _literal(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _path(template: str, place: Place, ext: str) -> str:
    return template.format(ext=ext, **{k: str(v) for k, v in vars(place).items()})


@pytest.fixture(scope="module")
def sandbox(place: Place) -> Iterator[duckdb.DuckDBPyConnection]:
    con = sandboxed_connection(place.run)
    yield con
    con.close()


@pytest.fixture(scope="module")
def readers(sandbox: duckdb.DuckDBPyConnection) -> dict[str, bool]:
    """Every table function of the sandbox whose first parameter is a path -> whether it takes a list too."""
    rows = sandbox.sql("SELECT function_name, parameters[1], parameter_types[1] FROM duckdb_functions() "
                       "WHERE function_type = 'table' AND len(parameters) > 0").fetchall()
    found: dict[str, bool] = {}
    for name, first, kind in rows:
        if first in ("path", "paths", "file", "pattern") and name not in NOT_FILE_READERS:
            found[name] = found.get(name, False) or kind.endswith("[]")
    return found


def test_the_sandbox_enumerates_every_file_reader(readers: dict[str, bool]) -> None:
    assert REQUIRED_READERS <= readers.keys()
    assert {"read_duckdb", "parquet_bloom_probe", "read_ndjson_objects"} & readers.keys()


def test_the_allow_list_is_the_run_files_and_nothing_else(place: Place, sandbox: duckdb.DuckDBPyConnection) -> None:
    temp, dirs, paths = sandbox.sql("SELECT current_setting('temp_directory'), current_setting('allowed_directories'), "
                                    "current_setting('allowed_paths')").fetchall()[0]
    assert temp == "" and dirs == []
    assert sorted(paths) == sorted(str(p) for p in catalog_sources(place.run))
    assert any("docs/corpus/shard-" in p for p in paths) and not any("catalog.duckdb" in p for p in paths)
    assert sandbox.sql("SELECT current_setting('enable_external_access'), "
                       "current_setting('lock_configuration')").fetchall()[0] == (False, True)


def test_every_reader_is_refused_every_path_outside_the_run(place: Place, sandbox: duckdb.DuckDBPyConnection,
                                                            readers: dict[str, bool]) -> None:
    leaks = []
    for function, takes_list in sorted(readers.items()):
        ext = _format(function)
        args = [_literal(_path(t, place, ext)) for _, t in TARGETS]
        if takes_list:  # an allowed file in a list does not let the others through
            own, secret = _literal(str(place.run / "units.parquet")), _literal(str(place.outside / f"secret.{ext}"))
            args.append(f"[{own}, {secret}]")
        for arg in args:
            query = f"SELECT * FROM {function}({arg}{EXTRA_ARGS.get(function, '')})"
            try:
                sandbox.sql(query).to_arrow_table()
            except duckdb.PermissionException:
                continue
            except duckdb.Error as exc:
                leaks.append(f"{query}: not a permission error: {str(exc).splitlines()[0]}")
                continue
            leaks.append(f"{query}: read")
    assert leaks == [], "\n".join(leaks)


@pytest.mark.parametrize("name,template", TARGETS, ids=[name for name, _ in TARGETS])
def test_miner_sql_refuses_the_path_with_one_line(place: Place, name: str, template: str) -> None:
    for function in ("read_text", "read_blob"):
        with pytest.raises(MinerError, match="Permission Error") as info:
            run_query(place.run, f"SELECT count(*) FROM {function}({_literal(_path(template, place, 'txt'))})")
        assert "\n" not in str(info.value)


def test_every_reader_fails_on_the_duckdb_temp_folder_through_miner_sql(place: Place,
                                                                        readers: dict[str, bool]) -> None:
    for function in sorted(readers):
        path = _literal(f".tmp/secret.{_format(function)}")
        with pytest.raises(MinerError, match="Permission Error"):
            run_query(place.run, f"SELECT * FROM {function}({path}{EXTRA_ARGS.get(function, '')})", "csv")


def test_the_views_and_the_allowed_files_still_read(place: Place, sandbox: duckdb.DuckDBPyConnection) -> None:
    counts = {name: sandbox.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
              for (name,) in sandbox.sql("SHOW TABLES").fetchall()}
    assert counts == {"units": 3, "sentences": 2, "top_sentences": 2, "unit_top": 2, "catalog_info": 1, "corpus": 60}
    units = _literal(str(place.run / "units.parquet"))
    for function in ("read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema", "read_blob", "read_text"):
        assert sandbox.sql(f"SELECT count(*) FROM {function}({units})").fetchall()[0][0] > 0, function
    relative = os.path.relpath(place.run / "units.parquet")  # ../run/units.parquet from `work`: the same file
    assert sandbox.sql(f"SELECT count(*) FROM read_parquet({_literal(relative)})").fetchall() == [(3,)]
    assert query_arrow(place.run, "SELECT count(*) AS n FROM corpus")["n"][0].as_py() == 60
    assert query_arrow(place.run, f"SELECT count(*) AS n FROM read_parquet({units})")["n"][0].as_py() == 3


def test_other_names_of_a_run_file_read_that_file_only(place: Place, sandbox: duckdb.DuckDBPyConnection) -> None:
    """DuckDB resolves symlinks on both sides (the allow-list and the path asked for), so the allow-list is of
    files, not names: a link outside to a run file, or a run file through a linked folder, reads that run
    file (its own bytes) and nothing else; a link in the run to a file outside is refused (see TARGETS)."""
    own = sandbox.sql(f"SELECT content FROM read_blob({_literal(str(place.run / 'units.parquet'))})").fetchall()
    for alias in (place.outside / "units_link.parquet", place.base / "run_link" / "units.parquet"):
        assert sandbox.sql(f"SELECT content FROM read_blob({_literal(str(alias))})").fetchall() == own
        assert sandbox.sql(f"SELECT count(*) FROM read_parquet({_literal(str(alias))})").fetchall() == [(3,)]
        with pytest.raises(duckdb.PermissionException):
            sandbox.sql(f"SELECT * FROM glob({_literal(str(alias.parent / '*'))})").fetchall()


def test_sql_running_functions_are_refused(place: Place) -> None:
    for sql in ("SELECT * FROM query('SELECT * FROM read_text(''.tmp/secret.txt'')')",
                "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))"):
        with pytest.raises(MinerError, match="refused"):
            run_query(place.run, sql)


# --- streaming results ---------------------------------------------------------------------------------------------

BIG = "SELECT i, i * 0.5 AS x, 'text ' || i AS s FROM range({n}) t(i)"


def test_results_stream_to_out_in_every_format(place: Place, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats_module, "ROW_GROUP_ROWS", 10_000)
    n = 50_000
    run_query(place.run, BIG.format(n=n), "csv", tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert len(lines) == n + 1 and lines[:2] == ["i,x,s", "0,0.0,text 0"] and lines[-1] == "49999,24999.5,text 49999"
    run_query(place.run, BIG.format(n=n), "json", tmp_path / "r.json")
    rows = json.loads((tmp_path / "r.json").read_text())
    assert len(rows) == n and rows[-1] == {"i": 49999, "x": 24999.5, "s": "text 49999"}
    run_query(place.run, BIG.format(n=n), "parquet", tmp_path / "r.parquet")
    meta = pq.read_metadata(tmp_path / "r.parquet")
    groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert meta.num_rows == n and len(groups) > 1 and max(groups) <= 10_000
    assert pq.read_table(tmp_path / "r.parquet")["i"].to_pylist() == list(range(n))
    run_query(place.run, BIG.format(n=n), "table", tmp_path / "r.txt", max_rows=None)
    table = (tmp_path / "r.txt").read_text().splitlines()
    assert len(table) == n + 3 and table[-1] == "(50,000 rows)"
    run_query(place.run, BIG.format(n=n), "table", tmp_path / "r100.txt")
    assert (tmp_path / "r100.txt").read_text().splitlines()[-1] == \
        "(50,000 rows, first 100 shown; use --format csv for all)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json", "r.parquet", "r.txt", "r100.txt"]


def test_the_last_statement_is_shown_and_every_one_runs(place: Place) -> None:
    assert run_query(place.run, "SELECT 1 AS a; SELECT 2 AS b", "csv") == "b\n2\n"
    with pytest.raises(MinerError, match="nope"):
        run_query(place.run, "SELECT nope FROM units; SELECT 1", "csv")


def test_an_error_mid_stream_leaves_no_file(place: Place, tmp_path: Path) -> None:
    failing = "SELECT CASE WHEN i < 100000 THEN i ELSE error('boom') END AS v FROM range(200000) t(i)"
    out = tmp_path / "out.csv"
    for fmt in ("csv", "json", "parquet", "table"):
        with pytest.raises(MinerError, match="boom") as info:
            run_query(place.run, failing, fmt, out)  # type: ignore[arg-type]
        assert str(info.value).startswith("SQL error")
        assert list(tmp_path.iterdir()) == []
    out.write_text("earlier result\n")
    with pytest.raises(MinerError, match="boom"):
        run_query(place.run, failing, "csv", out, force=True)
    assert out.read_text() == "earlier result\n" and list(tmp_path.iterdir()) == [out]


def test_ctrl_c_mid_stream_leaves_no_file(place: Place, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.csv"
    out.write_text("earlier result\n")

    def interrupted(schema: pa.Schema, batches, fh, max_rows) -> int:
        batches = iter(batches)
        stream_csv(schema, [next(batches)], fh)
        fh.flush()
        assert any(p.name.startswith(".out.csv.tmp") and p.stat().st_size > 0 for p in tmp_path.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setitem(formats_module.TEXT_WRITERS, "csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_query(place.run, BIG.format(n=100_000), "csv", out, force=True)
    assert out.read_text() == "earlier result\n" and list(tmp_path.iterdir()) == [out]


# --- the command line ----------------------------------------------------------------------------------------------

def _sql(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["sql", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_out_is_refused_inside_a_run_or_corpus_folder(place: Place, capsys: pytest.CaptureFixture) -> None:
    (place.run / "sub").mkdir(exist_ok=True)
    before = {p: p.read_bytes() for p in (place.run / "units.parquet", place.run / "manifest.json")}
    targets = [place.run / "units.parquet", place.run / "manifest.json", place.run / "sub" / "x.csv",
               place.run / "new.csv", place.corpus / "x.csv", place.corpus / "shard-00000.parquet",
               place.base / "run_link" / "units.parquet"]
    for target in targets:
        code, out, err = _sql(capsys, str(place.run), "SELECT 1 AS a", "--format", "parquet", "--out", str(target),
                              "--force")
        assert code == 2 and out == "" and err.startswith("miner: error: ") and len(err.splitlines()) == 1, err
        assert "folder" in err
    assert {p: p.read_bytes() for p in before} == before
    assert not (place.run / "sub" / "x.csv").exists() and not (place.run / "new.csv").exists()
    assert not (place.corpus / "x.csv").exists()


def test_an_existing_out_needs_force(place: Place, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "result.csv"
    out.write_text("keep me\n")
    code, _, err = _sql(capsys, str(place.run), "SELECT 1 AS a", "--format", "csv", "--out", str(out))
    assert code == 2 and "--force" in err and len(err.splitlines()) == 1 and out.read_text() == "keep me\n"
    code, _, err = _sql(capsys, str(place.run), "SELECT 1 AS a", "--format", "csv", "--out", str(out), "--force")
    assert code == 0 and err == "" and out.read_text() == "a\n1\n"
    assert os.listdir(tmp_path) == ["result.csv"]


def test_negative_max_rows_is_one_error_line(place: Place, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _sql(capsys, str(place.run), "SELECT 1", "--max-rows", "-5")
    assert code == 2 and out == "" and err.startswith("miner: error: --max-rows") and len(err.splitlines()) == 1


def test_results_stream_to_stdout(place: Place, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _sql(capsys, str(place.run), "SELECT i FROM range(20000) t(i)", "--format", "csv")
    assert code == 0 and out.splitlines()[1:3] == ["0", "1"] and len(out.splitlines()) == 20001
    code, out, _ = _sql(capsys, str(place.run), "SELECT i FROM range(20000) t(i)", "--max-rows", "0")
    assert code == 0 and out.splitlines()[-1] == "(20,000 rows)" and len(out.splitlines()) == 20003
    code, out, _ = _sql(capsys, str(place.run), "SELECT layer, count(*) AS n FROM units GROUP BY layer ORDER BY 1")
    assert out == "layer | n\n------+--\n    1 | 2\n    2 | 1\n(2 rows)\n"
    code, out, err = _sql(capsys, str(place.run), "SELECT 1", "--format", "parquet")
    assert code == 2 and "--out" in err


def test_a_failed_write_is_one_line_and_leaves_no_file(place: Place, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(schema: pa.Schema, batches, fh, max_rows) -> int:
        fh.write("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(formats_module.TEXT_WRITERS, "csv", disk_full)
    out = tmp_path / "out.csv"
    code, _, err = _sql(capsys, str(place.run), "SELECT 1 AS a", "--format", "csv", "--out", str(out))
    assert code == 1 and len(err.splitlines()) == 1 and f"{out}: No space left on device" in err
    assert list(tmp_path.iterdir()) == []
