"""The read-only SQL guard refuses every statement that writes and allows ordinary reads."""

from __future__ import annotations

import pyarrow as pa
import pytest

from miner.errors import MinerError
from miner.queries import QUERIES, queries_markdown
from miner.sql import (
    ReadOnlyViolation,
    check_read_only,
    format_csv,
    format_json,
    format_table,
)

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
]

ALLOWED = [
    "SELECT 1",
    "select * from units where layer = 3 limit 5",
    "  -- leading comment\n/* block */ SELECT count(*) FROM units;",
    "WITH per_layer AS (SELECT layer, count(*) AS n FROM units GROUP BY layer) SELECT * FROM per_layer",
    "SELECT unit_id, rank() OVER (PARTITION BY layer ORDER BY idx DESC) FROM units",
    "SELECT unit_id, avg(score) OVER w FROM top_sentences WINDOW w AS (PARTITION BY unit_id) "
    "QUALIFY row_number() OVER w = 1",
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
