"""The catalog over a real mining run (MiniLM): views, read-only access, the SQL guard end to end, and
schemas/tables.md covering every column of every table and view."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner.errors import InputError, MinerError
from miner.query.examples import QUERIES
from miner.query.guard import ReadOnlyViolation
from miner.query.sql import query_arrow, run_query
from miner.run.catalog import (
    build_catalog,
    catalog_is_current,
    catalog_path,
    ensure_catalog,
    open_catalog,
)
from miner.signatures.vectors import VectorOptions

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "schemas" / "tables.md"
# Tables and views the docs must describe whether or not this run has them (step 2 adds some).
EXPECTED_DOCS = {"units", "sentences", "top_sentences", "convergence", "corpus", "unit_top", "catalog_info",
                 "tokens", "signatures", "unit_stats", "unit_metadata", "sentence_vectors", "unit_vectors"}


def parse_table_docs(text: str) -> dict[str, dict]:
    """{table: {"columns": [regex, ...], "includes": [table, ...]}} from `## table` headings and
    `- column (TYPE): meaning` items; `<field>` in a name matches any identifier part."""
    docs: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"^## (\w+)\s*$", line)
        if heading:
            current = docs.setdefault(heading.group(1), {"columns": [], "includes": []})
            continue
        if current is None:
            continue
        include = re.match(r"^- columns of (\w+)", line)
        column = re.match(r"^- ([\w<>]+) \(([^)]+)\): \S", line)
        if include:
            current["includes"].append(include.group(1))
        elif column:
            pattern = "^" + re.sub(r"<\w+>", "[a-z0-9_]+", column.group(1)) + "$"
            current["columns"].append(pattern)
    return docs


def undocumented(columns: dict[str, list[str]], docs: dict[str, dict]) -> list[str]:
    """'table.column' for every catalog column the docs do not describe (following `columns of`)."""
    def patterns(table: str, seen: frozenset = frozenset()) -> list[str]:
        entry = docs.get(table, {"columns": [], "includes": []})
        out = list(entry["columns"])
        for other in entry["includes"]:
            if other not in seen:
                out += patterns(other, seen | {table})
        return out

    missing = []
    for table, names in columns.items():
        if table not in docs:
            missing.append(f"{table} (no '## {table}' section)")
            continue
        pats = patterns(table)
        missing += [f"{table}.{name}" for name in names if not any(re.match(p, name) for p in pats)]
    return missing


@pytest.fixture(scope="module")
def run(tiny_run: Path, tiny_fasttext: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny mining run with the whole of step 2 (real spaCy, real fastText) and its catalog."""
    from miner.config import AnnotateOptions
    from miner.signatures.stage import run_abstract

    out = tmp_path_factory.mktemp("catalog") / "run"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    run_abstract(out, AnnotateOptions(background_size=2000), vectors=VectorOptions(model=tiny_fasttext),
                 executor="inline")
    return out


def _catalog_columns(run_dir: Path) -> dict[str, list[str]]:
    con = open_catalog(run_dir)
    try:
        rows = con.sql("SELECT table_name, column_name FROM information_schema.columns "
                       "WHERE table_catalog = current_database() ORDER BY table_name, ordinal_position").fetchall()
    finally:
        con.close()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def test_every_catalog_column_is_documented(run: Path) -> None:
    docs = parse_table_docs(DOCS.read_text())
    assert EXPECTED_DOCS <= docs.keys(), f"schemas/tables.md lacks sections: {EXPECTED_DOCS - docs.keys()}"
    columns = _catalog_columns(run)
    assert {"units", "sentences", "top_sentences", "convergence", "corpus", "unit_top", "catalog_info",
            "sentence_vectors", "unit_vectors"} <= columns.keys()
    assert undocumented(columns, docs) == []


def test_the_docs_check_catches_a_missing_column() -> None:
    docs = parse_table_docs("## units\n\n- unit_id (INTEGER): id.\n- dominant_<field> (VARCHAR): x.\n"
                            "## unit_top\n- columns of units\n- text (VARCHAR): t.\n")
    assert undocumented({"units": ["unit_id", "dominant_domain", "layer"]}, docs) == ["units.layer"]
    assert undocumented({"unit_top": ["unit_id", "text"], "other": ["a"]}, docs) == ["other (no '## other' section)"]


def test_views_hold_absolute_paths_and_work_from_any_directory(run: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    con = duckdb.connect(str(catalog_path(run)), read_only=True)
    try:
        views = dict(con.sql("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall())
        assert str(run.resolve() / "units.parquet") in views["units"]
        top = con.sql("SELECT count(*) FROM top_sentences").fetchall()[0][0]
        assert top == pq.read_metadata(run / "top_sentences.parquet").num_rows == 2304 * 2 * 5
        assert con.sql("SELECT count(*) FROM unit_top").fetchall()[0][0] == top
        manifest = json.loads((run / "manifest.json").read_text())
        corpus_rows = sum(pq.read_metadata(Path(manifest["corpus"]["path"]) / s["file"]).num_rows
                          for s in manifest["corpus"]["shards"])
        assert con.sql("SELECT count(*) FROM corpus").fetchall()[0][0] == corpus_rows
        info = con.sql("SELECT run_dir, views FROM catalog_info").fetchall()[0]
        assert info[0] == str(run.resolve()) and "unit_top" in info[1]
    finally:
        con.close()


def test_catalog_is_read_only(run: Path) -> None:
    con = open_catalog(run)
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("CREATE TABLE t AS SELECT 1")
    finally:
        con.close()


def test_queries_return_rows(run: Path) -> None:
    table = query_arrow(run, "SELECT layer, count(*) AS units FROM units GROUP BY layer ORDER BY layer")
    assert table.to_pydict() == {"layer": [1, 2, 3, 4, 5, 6], "units": [384] * 6}
    window = query_arrow(run, """WITH s AS (SELECT unit_id, direction, score,
            rank() OVER (PARTITION BY unit_id, direction ORDER BY score DESC) AS r FROM top_sentences)
        SELECT count(*) AS n FROM s JOIN top_sentences t USING (unit_id, direction, score)
        WHERE direction = 'top' AND s.r = t.rank""")
    assert window["n"][0].as_py() >= 2304 * 5  # ranks agree with scores (ties may add pairs)
    typical = query_arrow(run, "SELECT count(*) AS n FROM unit_vectors")
    assert typical["n"][0].as_py() == 2304 * 2


def test_the_ten_queries_run(run: Path) -> None:
    present = set(_catalog_columns(run))
    ran = 0
    for query in QUERIES:
        if set(query.tables) <= present:
            table = query_arrow(run, query.sql)
            assert table.num_columns > 0, query.title
            ran += 1
    assert ran >= 3


def test_output_formats(run: Path, tmp_path: Path) -> None:
    sql = "SELECT unit_id, layer, site FROM units ORDER BY unit_id LIMIT 3"
    assert run_query(run, sql, "csv").splitlines() == ["unit_id,layer,site", "0,1,hidden", "1,1,hidden", "2,1,hidden"]
    assert json.loads(run_query(run, sql, "json"))[0] == {"unit_id": 0, "layer": 1, "site": "hidden"}
    assert run_query(run, sql, "table").splitlines()[-1] == "(3 rows)"
    out = tmp_path / "units.parquet"
    assert run_query(run, sql, "parquet", out) is None
    assert pq.read_table(out).num_rows == 3
    with pytest.raises(MinerError, match="--out"):
        run_query(run, sql, "parquet")
    vectors = json.loads(run_query(run, "SELECT vector FROM sentence_vectors LIMIT 1", "json"))
    assert len(vectors[0]["vector"]) == 100


def test_writes_are_refused_end_to_end(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "leak.csv"
    for sql in (f"COPY (SELECT * FROM units) TO '{target}'", "SELECT 1; DROP VIEW units",
                "WITH a AS (INSERT INTO units VALUES (1, 'x', 1, 1) RETURNING *) SELECT * FROM a"):
        with pytest.raises(ReadOnlyViolation):
            run_query(run, sql)
    assert not target.exists()
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(MinerError, match="Permission"):  # the sandbox: no file outside the catalog's own
        run_query(run, "SELECT * FROM read_csv('/etc/hostname')")
    assert sorted(p.name for p in run.iterdir()) == before


def test_sql_errors_are_one_line(run: Path) -> None:
    for sql in ("SELECT no_such_column FROM units", "SELECT * FROM no_such_table", "SELEC 1"):
        with pytest.raises(MinerError) as info:
            run_query(run, sql)
        assert "\n" not in str(info.value) and str(info.value).startswith("SQL error")


def test_a_folder_without_mining_output_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such run folder"):
        build_catalog(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a mining run"):
        run_query(tmp_path / "empty", "SELECT 1")


def test_catalog_follows_new_tables(run: Path) -> None:
    assert catalog_is_current(run)
    extra = run / "clusters.parquet"
    pq.write_table(pa.table({"unit_id": pa.array([0, 1], pa.int32()), "cluster": [0, 1]}), extra)
    try:
        assert not catalog_is_current(run)
        assert query_arrow(run, "SELECT count(*) AS n FROM clusters")["n"][0].as_py() == 2  # rebuilt on use
        assert catalog_is_current(run)
    finally:
        extra.unlink()
        ensure_catalog(run)
    assert "clusters" not in _catalog_columns(run)


def test_two_readers_at_once(run: Path) -> None:
    a, b = open_catalog(run), open_catalog(run)
    try:
        assert a.sql("SELECT count(*) FROM units").fetchall() == b.sql("SELECT count(*) FROM units").fetchall()
        assert query_arrow(run, "SELECT count(*) AS n FROM units")["n"][0].as_py() == 2304
    finally:
        a.close()
        b.close()


def test_the_duckdb_shell_make_demo_installs_opens_the_catalog(run: Path) -> None:
    import subprocess
    import sys

    shell = Path(sys.executable).parent / "duckdb"
    assert shell.exists(), "duckdb-cli is a dependency: .venv/bin/duckdb"
    done = subprocess.run([str(shell), "-readonly", "-csv", str(run / "catalog.duckdb"), "-c",
                           "SELECT count(*) AS n FROM units; SELECT count(*) AS n FROM unit_top"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["n", "2304", "n", str(2 * 2304 * 5)]
    refused = subprocess.run([str(shell), "-readonly", str(run / "catalog.duckdb"), "-c", "CREATE TABLE x AS SELECT 1"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "read-only" in (refused.stdout + refused.stderr).lower()
