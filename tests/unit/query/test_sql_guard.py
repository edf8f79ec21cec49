"""The read-only SQL guard refuses every statement that writes and allows ordinary reads; results render the
same whether they come whole or in record batches; the docstring examples of miner.query run."""

from __future__ import annotations

import csv
import datetime as dt
import doctest
import importlib
import io
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

import miner.query.formats as formats_module
from miner.errors import ConfigError, MinerError
from miner.query.examples import QUERIES, queries_markdown
from miner.query.formats import _plain, format_csv, format_json, format_table, stream_csv, stream_json, stream_table
from miner.query.guard import ReadOnlyViolation, check_read_only
from miner.query.sql import run_query

REFUSED = [
    "INSERT INTO units VALUES (1, 'hidden', 1, 0)",
    "insert into units select * from units",
    "UPDATE units SET layer = 0",
    "DELETE FROM units",
    "TRUNCATE units",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "create temp table t (a int)",
    "CREATE OR REPLACE MACRO m(x) AS x",
    "CREATE SECRET s (TYPE s3)",
    "DROP TABLE units",
    "DROP VIEW units",
    "ALTER TABLE units ADD COLUMN x INT",
    "ALTER VIEW units RENAME TO u",
    "COMMENT ON TABLE units IS 'x'",
    "COPY units TO '/tmp/units.csv'",
    "COPY (SELECT * FROM units) TO '/tmp/units.parquet' (FORMAT parquet)",
    "copy units from '/tmp/units.csv'",
    "COPY FROM DATABASE a TO b",
    "ATTACH '/tmp/other.duckdb' AS other",
    "DETACH other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "FORCE INSTALL httpfs",
    "PRAGMA enable_profiling",
    "PRAGMA threads = 1",
    "PRAGMA memory_limit = '1GB'",
    "SET threads = 1",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET threads",
    "SET VARIABLE v = 1",
    "USE memory",
    "EXPORT DATABASE '/tmp/dump'",
    "IMPORT DATABASE '/tmp/dump'",
    "CALL checkpoint()",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "ANALYZE",
    "BEGIN TRANSACTION",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "MERGE INTO units USING units u2 ON units.unit_id = u2.unit_id WHEN MATCHED THEN DELETE",
    # smuggling
    "SELECT 1; DROP TABLE units",
    "SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'",
    "select 1;insert into units values (1, 'a', 1, 1)",
    "-- a harmless comment\nDROP TABLE units",
    "/* SELECT */ DELETE FROM units",
    "WITH a AS (SELECT 1) INSERT INTO units SELECT * FROM a",
    "WITH a AS (INSERT INTO units VALUES (1, 'a', 1, 1) RETURNING *) SELECT * FROM a",
    "WITH a AS (DELETE FROM units RETURNING *) SELECT count(*) FROM a",
    "EXPLAIN ANALYZE INSERT INTO units VALUES (1, 'a', 1, 1)",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'",
    "EXPLAIN DROP TABLE units",
    "PIVOT units ON site USING count(*)",  # without IN: DuckDB first creates an ENUM type
    # table functions that run SQL text (the words inside the string escape the word check) or change the session
    "SELECT * FROM query('WITH a AS (DELETE FROM units RETURNING *) SELECT * FROM a')",
    'SELECT * FROM "query"(\'SELECT 1\')',
    "SELECT * FROM main.QUERY ('SELECT 1')",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "SELECT * FROM register_external_resource('duckdb', 'x', map(['a'], ['b']), uri := '/tmp/x.duckdb')",
    "SELECT * FROM enable_logging(storage := 'file', storage_path := '/tmp/logs')",
    "SELECT * FROM truncate_duckdb_logs()",
]

ALLOWED = [
    "SELECT 1",
    "select * from units where layer = 3 limit 5",
    "  -- leading comment\n/* block */ SELECT count(*) FROM units;",
    "WITH per_layer AS (SELECT layer, count(*) AS n FROM units GROUP BY layer) SELECT * FROM per_layer",
    "SELECT unit_id, rank() OVER (PARTITION BY layer ORDER BY idx DESC) FROM units",
    ("SELECT unit_id, avg(score) OVER w FROM top_sentences WINDOW w AS (PARTITION BY unit_id) "
     "QUALIFY row_number() OVER w = 1"),
    "PIVOT units ON site IN ('hidden', 'mlp') USING count(*) GROUP BY layer",
    "FROM units",
    "VALUES (1, 2)",
    "DESCRIBE units",
    "SHOW TABLES",
    "SHOW ALL TABLES",
    "SUMMARIZE units",
    "EXPLAIN SELECT * FROM units",
    "EXPLAIN ANALYZE SELECT count(*) FROM units",
    "PRAGMA table_info('units')",
    "PRAGMA show_tables",
    "PRAGMA version",
    "CALL pragma_table_info('units')",
    "SELECT 'insert into x; drop table y' AS text, 'COPY' AS word",  # keywords inside strings
    'SELECT "update", "delete" FROM t',  # quoted identifiers
    "SELECT 1 -- DROP TABLE units",
    "SELECT 1; SELECT 2",
    "SELECT * FROM pragma_table_info('units')",
    "SELECT replace(text, 'a', 'b'), regexp_matches(text, 'set') FROM sentences",
    "SELECT query, t.query FROM t WHERE query = 'query(1)'",  # a column named query, not the function
    "SELECT * FROM query_table('units')",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_writing_statements_are_refused(sql: str) -> None:
    with pytest.raises(ReadOnlyViolation, match="refused"):
        check_read_only(sql)


@pytest.mark.parametrize("sql", ALLOWED)
def test_reading_statements_are_allowed(sql: str) -> None:
    statements = check_read_only(sql)
    assert statements


def test_multi_statement_is_refused_before_anything_runs() -> None:
    with pytest.raises(ReadOnlyViolation, match="statement 2"):
        check_read_only("SELECT 1; DROP TABLE units; SELECT 2")


@pytest.mark.parametrize("sql", ["SELEC 1", "", "-- only a comment", "SELECT FROM WHERE"])
def test_bad_sql_is_one_line_error(sql: str) -> None:
    with pytest.raises(MinerError) as info:
        check_read_only(sql)
    assert "\n" not in str(info.value)


def test_unquoted_keyword_column_has_a_helpful_message() -> None:
    with pytest.raises(ReadOnlyViolation, match='"update"'):
        check_read_only("SELECT t.update FROM t")


def test_formats() -> None:
    table = pa.table({"layer": [1, 10], "name": ["a", None], "v": [[1.5, 2.0], [0.0, float("nan")]]})
    text = format_table(table)
    lines = text.splitlines()
    assert lines[0].split(" | ")[0].strip() == "layer" and lines[-1] == "(2 rows)"
    assert lines[2].startswith("    1 |") and "NULL" in lines[3]
    assert format_table(table, max_rows=1).splitlines()[-1].startswith("(2 rows, first 1 shown")
    assert format_csv(table).splitlines() == ["layer,name,v", "1,a,\"[1.5, 2.0]\"", "10,,\"[0.0, null]\""]
    assert format_json(table).strip() == ('[{"layer": 1, "name": "a", "v": [1.5, 2.0]}, '
                                          '{"layer": 10, "name": null, "v": [0.0, null]}]')


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.title[:40])
def test_example_queries_pass_the_guard(query) -> None:
    assert len(check_read_only(query.sql)) == 1
    assert query.tables


def test_queries_markdown_lists_all_ten() -> None:
    text = queries_markdown()
    assert len(QUERIES) == 10 and text.count("```sql") == 10 and text.startswith("1. **")


def _old_csv(table: pa.Table) -> str:
    """format_csv as it was before results streamed (the whole table at once): the reference."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else json.dumps(_plain(v)) if isinstance(v, (list, dict)) else _plain(v)
                         for v in row.values()])
    return buf.getvalue()


def _old_json(table: pa.Table) -> str:
    return json.dumps([_plain(r) for r in table.to_pylist()], ensure_ascii=False) + "\n"


def _mixed_table() -> pa.Table:
    return pa.table({
        "i": pa.array([1, None, -3, 2**40], pa.int64()),
        "x": [0.5, float("nan"), float("inf"), None],
        "s": ["plain", 'a "quoted", comma', "line\nbreak", None],
        "b": [True, False, None, True],
        "v": [[1.5, 2.0], [0.0, float("nan")], None, []],
        "st": [{"a": 1, "b": "x"}, None, {"a": None, "b": "ü"}, {"a": 2, "b": ""}],
        "d": pa.array([Decimal("1.25"), None, Decimal("-2.50"), Decimal(0)], pa.decimal128(6, 2)),
        "day": [dt.date(2024, 1, 2), None, dt.date(1999, 12, 31), dt.date(2000, 2, 29)],
        "ts": [dt.datetime(2024, 1, 2, 3, 4, 5), None, dt.datetime(2024, 1, 2), dt.datetime(1970, 1, 1, 0, 0, 1)],
        "raw": [b"\x00\xff", None, b"", b"ab"],
        "e": pa.array(["red", "blue", None, "red"]).dictionary_encode(),
    })


def _in_batches(table: pa.Table, size: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=size)


@pytest.mark.parametrize("size", [1, 3, 100])
def test_streamed_csv_and_json_match_the_whole_table(size: int) -> None:
    table = _mixed_table()
    for write, old in ((stream_csv, _old_csv), (stream_json, _old_json)):
        buf = io.StringIO()
        assert write(table.schema, _in_batches(table, size), buf) == table.num_rows
        assert buf.getvalue() == old(table), write.__name__
    assert json.loads(format_json(table))[0]["x"] == 0.5 and json.loads(format_json(table))[1]["x"] is None


def test_empty_results_render() -> None:
    table = pa.table({"a": pa.array([], pa.int64())})
    assert format_csv(table) == "a\n" and format_json(table) == "[]\n"
    assert format_table(table).splitlines() == ["a", "-", "(0 rows)"]


def test_duplicate_column_names_keep_their_cells() -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    assert format_csv(table) == "a,a\n1,2\n"
    assert format_table(table).splitlines()[2] == "1 | 2"


def _counting_batches(n_batches: int, rows: int) -> tuple[pa.Schema, object, list[int]]:
    """Batches made on demand, with a record of how many were made (to see a writer stream them)."""
    made: list[int] = []
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])

    def gen():
        for b in range(n_batches):
            made.append(b)
            start = b * rows
            yield pa.record_batch([pa.array(range(start, start + rows)), pa.array([f"t{k}" for k in range(rows)])],
                                  schema=schema)
    return schema, gen(), made


def test_table_with_max_rows_counts_every_row_but_keeps_only_the_first() -> None:
    schema, batches, made = _counting_batches(50, 1000)
    buf = io.StringIO()
    assert stream_table(schema, batches, buf, max_rows=10) == 50_000
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 + 10 + 1 and len(made) == 50
    assert lines[-1] == "(50,000 rows, first 10 shown; use --format csv for all)"
    assert lines[2].split("|")[0].strip() == "0" and lines[11].split("|")[0].strip() == "9"


def test_table_with_every_row_takes_widths_from_the_first_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats_module, "WIDTH_ROWS", 3)
    schema = pa.schema([("n", pa.int64()), ("word", pa.string())])
    first = pa.record_batch([pa.array([1, 2, 3]), pa.array(["a", "bb", "c"])], schema=schema)
    later = pa.record_batch([pa.array([123456]), pa.array(["a much longer word"])], schema=schema)
    buf = io.StringIO()
    assert stream_table(schema, iter([first, later]), buf, max_rows=None) == 4
    lines = buf.getvalue().splitlines()
    assert lines[:5] == ["n | word", "--+-----", "1 | a", "2 | bb", "3 | c"]
    assert lines[5] == "123456 | a much longer word"  # out of line, not cut
    assert lines[-1] == "(4 rows)"
    whole = pa.Table.from_batches([first, later])
    assert format_table(whole, max_rows=None).splitlines()[2] == "     1 | a"  # whole: widths from every row


def test_format_table_is_unchanged_for_small_results() -> None:
    table = pa.table({"layer": [1, 10], "name": ["a", None]})
    assert format_table(table) == "layer | name\n------+-----\n    1 | a\n   10 | NULL\n(2 rows)\n"


def test_negative_max_rows_is_refused() -> None:
    with pytest.raises(ConfigError, match="--max-rows"):
        run_query(Path("no-such-run"), "SELECT 1", max_rows=-1)


def test_duckdb_errors_become_one_line_or_an_interrupt() -> None:
    import duckdb

    from miner.query.sandbox import _sql_error

    for exc in (duckdb.InterruptException("INTERRUPT Error: Interrupted!"), OSError("INTERRUPT Error: Interrupted!"),
                RuntimeError("Query interrupted")):
        assert isinstance(_sql_error(exc), KeyboardInterrupt), exc
    error = _sql_error(duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate\nmore"))
    assert isinstance(error, MinerError) and "does not spill" in str(error) and "\n" not in str(error)
    assert str(_sql_error(OSError("Invalid Input Error: boom"))) == "SQL error: Invalid Input Error: boom"


@pytest.mark.parametrize("module", ["miner.query.guard", "miner.query.sandbox", "miner.query.formats", "miner.query.sql"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed
