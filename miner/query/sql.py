"""Read-only SQL over a run's catalog (`miner sql RUN "SELECT ..."`), with a guard in three layers.

1. Statement kinds (DuckDB's own parser, `duckdb.extract_statements`): only SELECT (which covers WITH,
   VALUES, FROM-first, DESCRIBE, SHOW, SUMMARIZE, PIVOT's SELECT form), EXPLAIN, and read-only PRAGMA/CALL
   (table_info, show_tables, version, ...) pass. Every statement of a multi-statement text is checked
   before any runs, so "SELECT 1; DROP TABLE x" runs nothing.
2. Words (DuckDB's own tokenizer, `duckdb.tokenize`): a passing statement may not contain a bare keyword
   that writes (INSERT, UPDATE, DELETE, COPY, CREATE, ...) outside string literals, comments and quoted
   identifiers. DuckDB 2.0 parses a data-modifying CTE, `WITH a AS (INSERT ... RETURNING *) SELECT ...`,
   as a SELECT statement, and `EXPLAIN ANALYZE` executes its statement: this layer refuses both.
   (A column named like such a keyword must be double-quoted: SELECT "update" FROM t.) Nor may it call a
   table function that runs SQL given as text (query(), json_execute_serialized_sql(): the words inside a
   string escape this layer) or changes the session (logging, profiling, external resources).
3. Execution sandbox: a private in-memory DuckDB holds copies of the catalog's views (database `catalog`);
   file access is limited to exactly the files the views read (allowed_paths, enable_external_access=false),
   extension auto-install/auto-load is off, and lock_configuration=true forbids changing any of it. The
   statement objects the guard classified are the ones executed.

   Two things DuckDB would otherwise add to the allow-list when external access is turned off are kept
   out: its temporary directory (default `.tmp` under the current directory, so any file there would be
   readable) and the files of attached databases (catalog.duckdb and its .wal). So the catalog file is
   attached only to copy its view definitions, then detached, and temp_directory is '' (no spilling:
   a query whose sorts or joins outgrow memory_limit fails with an out-of-memory error instead of
   writing to disk). A private mkdtemp folder would be safe from other users too, but it would still put
   a readable folder on the list and outlive a killed process; the results `miner sql` shows stream, so
   they never needed it.

PIVOT without an IN list is refused (DuckDB runs it as two statements, the first creating an ENUM type):
write `PIVOT t ON c IN ('a', 'b') USING ...`.

Results stream from DuckDB in Arrow record batches and are written batch by batch, so memory stays flat
in the number of rows: 'table' (aligned text), 'csv', 'json' (an array of row objects) or 'parquet' (needs
an out path). An --out file is checked first (miner.outputs: never inside a run or corpus folder, never
over an existing file without force) and written atomically (a temporary name, renamed at the end), so
an error or Ctrl-C mid-stream leaves no partial file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Literal, TextIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from miner.atomic import write_with
from miner.errors import ConfigError, MinerError, first_line
from miner.outputs import check_output_file
from miner.run.catalog import attach_catalog, catalog_path, catalog_sources

OutputFormat = Literal["table", "csv", "json", "parquet"]

# Statement kinds that read. DESCRIBE/SHOW/SUMMARIZE/WITH parse as SELECT.
_READ_KINDS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# PRAGMAs (and their CALL pragma_<name>() forms) that only report.
READ_PRAGMAS = frozenset({
    "table_info", "show_tables", "show_tables_expanded", "show", "version", "platform", "database_list",
    "database_size", "storage_info", "metadata_info", "functions", "collations", "user_agent",
})
# Bare keywords that write or change configuration; refused anywhere in a statement.
WRITE_WORDS = frozenset({
    "insert", "update", "delete", "merge", "upsert", "truncate", "copy", "create", "drop", "alter",
    "attach", "detach", "install", "load", "force", "checkpoint", "vacuum", "export", "import", "set",
    "reset", "pragma", "call", "prepare", "execute", "deallocate", "begin", "commit", "rollback",
    "abort", "use", "grant", "revoke",
})
# Table functions that run SQL given as a string (hidden from the word check) or change the session.
REFUSED_FUNCTIONS = frozenset({
    "query", "json_execute_serialized_sql", "force_checkpoint", "enable_logging", "disable_logging",
    "truncate_duckdb_logs", "enable_profiling", "disable_profiling", "create_external_resource",
    "destroy_external_resource", "register_external_resource", "deregister_external_resource",
    "register_external_resource_type",
})
# Rows per record batch DuckDB hands over; results are converted and written one batch at a time.
BATCH_ROWS = 8_192
# --format table with every row (--max-rows 0): column widths come from the first batches, at least this many rows.
WIDTH_ROWS = 1_000
# --format parquet: batches are gathered into row groups of about this size.
ROW_GROUP_BYTES = 64 << 20
ROW_GROUP_ROWS = 1 << 20
_CATALOG_COPY = "catalog_file"


class ReadOnlyViolation(MinerError):
    """A statement that would write, or change the session, was refused."""


def _words(sql: str) -> list[tuple[str, str]]:
    """(token text, token kind) of a SQL text via DuckDB's tokenizer, comments dropped.

    Example: "SELECT 'x' -- hi" -> [("SELECT", "keyword"), ("'x'", "string_const")]
    """
    tokens = duckdb.tokenize(sql)
    out = []
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        if kind.name != "comment":
            out.append((sql[start:end].strip(), kind.name))
    return out


def _bare_words(sql: str) -> list[str]:
    """Lower-cased keywords and unquoted identifiers (no strings, comments or "quoted" names)."""
    return [text.lower() for text, kind in _words(sql)
            if kind in ("keyword", "identifier") and not text.startswith('"')]


def _refused_calls(sql: str) -> str | None:
    """The first call of a function in REFUSED_FUNCTIONS (quoted or schema-qualified names too), else None.

    Example: "SELECT * FROM query('SELECT 1')" -> "query"; "SELECT query FROM t" -> None (a column, not a call)
    """
    words = _words(sql)
    for (text, kind), (after, _) in pairwise(words):
        name = text.strip('"').lower()
        if kind in ("keyword", "identifier") and name in REFUSED_FUNCTIONS and after.startswith("("):
            return name
    return None


def check_read_only(sql: str) -> list[duckdb.Statement]:
    """Parse `sql` and return its statements if every one only reads; raise ReadOnlyViolation otherwise.

    Example: "SELECT 1; DROP TABLE x" -> ReadOnlyViolation("statement 2 refused: DROP statements are not
    allowed; ..."); "WITH a AS (SELECT 1) SELECT * FROM a" -> [<SELECT statement>]
    """
    try:
        statements = duckdb.extract_statements(sql)
    except (duckdb.Error, ValueError) as exc:  # ValueError: a statement kind the binding does not know
        raise MinerError(f"SQL error: {first_line(exc)}") from None
    if not statements:
        raise MinerError("SQL error: no statement given")
    for number, statement in enumerate(statements, 1):
        where = f"statement {number}" if len(statements) > 1 else "statement"
        words = _bare_words(statement.query)
        kind = statement.type
        first = words[0] if words else ""
        if kind in (duckdb.StatementType.PRAGMA, duckdb.StatementType.CALL):
            name = words[1] if len(words) > 1 else ""
            allowed = first == "pragma" and name in READ_PRAGMAS
            allowed |= first == "call" and name.removeprefix("pragma_") in READ_PRAGMAS and name.startswith("pragma_")
            if not allowed and first in ("pragma", "call"):
                raise ReadOnlyViolation(f"{where} refused: {first.upper()} {name} is not a read-only PRAGMA/CALL "
                                        f"(allowed: {', '.join(sorted(READ_PRAGMAS))})")
            if not allowed:
                raise ReadOnlyViolation(f"{where} refused: {first.upper()} statements are not allowed; the catalog "
                                        "is read-only")
            words = words[2:]
        elif kind == duckdb.StatementType.MULTI and first == "pivot":
            raise ReadOnlyViolation(f"{where} refused: PIVOT without an IN list creates a type; "
                                    "list the values: PIVOT t ON c IN ('a', 'b') USING ...")
        elif kind not in _READ_KINDS:
            raise ReadOnlyViolation(f"{where} refused: {kind.name} statements are not allowed; "
                                    "the catalog is read-only (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)")
        called = _refused_calls(statement.query)
        if called:
            raise ReadOnlyViolation(f"{where} refused: {called}() runs SQL text the guard cannot check, or changes "
                                    "the session; write the query itself")
        bad = [w for w in words if w in WRITE_WORDS]
        if bad:
            raise ReadOnlyViolation(f"{where} refused: it contains {bad[0].upper()}, which writes or changes the "
                                    'session (double-quote a column of that name: "' + bad[0] + '")')
    return statements


def sandboxed_connection(run_dir: Path) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB whose current database `catalog` holds the run catalog's views, able to
    read only the files those views name, with no temporary directory, extension loading off and its
    configuration locked.

    A private instance keeps the lock-down from leaking into other connections of the process (DuckDB
    shares one instance among connections to the same database file). The views are copied from
    RUN/catalog.duckdb (rebuilt first if stale), which is detached again before the lock-down, so
    neither it nor its .wal is on the allow-list.
    """
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        views = _catalog_views(con, run_dir)
        con.execute("ATTACH ':memory:' AS catalog")
        con.execute("USE catalog")
        _create_views(con, views)
        con.execute("SET temp_directory = ''")
        con.execute("SET allowed_directories = []")
        con.execute("SET allowed_paths = $paths", {"paths": [str(p) for p in catalog_sources(run_dir)]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise MinerError(f"{catalog_path(run_dir)}: cannot open the catalog: {first_line(exc)}") from None
    except BaseException:
        con.close()
        raise
    return con


def _catalog_views(con: duckdb.DuckDBPyConnection, run_dir: Path) -> list[str]:
    """The CREATE VIEW statements of the run's catalog (built or refreshed first), in the file's order;
    the catalog file is detached again afterwards."""
    attach_catalog(con, run_dir, _CATALOG_COPY)
    try:
        rows = con.sql("SELECT sql FROM duckdb_views() WHERE database_name = $db AND NOT internal "
                       "ORDER BY view_oid", params={"db": _CATALOG_COPY}).fetchall()
    finally:
        con.execute(f"DETACH {_CATALOG_COPY}")
    return [sql for (sql,) in rows]


def _create_views(con: duckdb.DuckDBPyConnection, views: list[str]) -> None:
    """Create `views` in the current database; a view whose inputs do not exist yet is retried after the
    others (DuckDB binds a view when it is created), until no more can be made."""
    pending = list(views)
    while pending:
        failed: list[str] = []
        error: duckdb.Error | None = None
        for sql in pending:
            try:
                con.execute(sql)
            except duckdb.CatalogException as exc:
                failed.append(sql)
                error = exc
        if len(failed) == len(pending) and error is not None:
            raise error
        pending = failed


@dataclass
class QueryResult:
    """A result being streamed: its Arrow schema and its record batches (read once, while the query's
    connection is open). DuckDB errors that surface mid-stream are raised as MinerError."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


def _interrupted(exc: BaseException) -> bool:
    """Did DuckDB stop because of Ctrl-C? It says so in three ways: InterruptException (while a query
    starts), OSError('INTERRUPT Error: ...') through the Arrow stream, RuntimeError('Query interrupted')."""
    text = first_line(exc).lower()
    return (isinstance(exc, duckdb.InterruptException) or text.startswith("interrupt error")
            or text == "query interrupted")


def _sql_error(exc: BaseException) -> BaseException:
    """A one-line MinerError for a DuckDB error (KeyboardInterrupt for Ctrl-C); an out-of-memory error says
    the sandbox does not spill.

    Example: BinderException('Binder Error: Referenced column "nope" not found ...') ->
    MinerError('SQL error: Binder Error: Referenced column "nope" not found ...')
    """
    if _interrupted(exc):
        return KeyboardInterrupt()
    text = first_line(exc)
    if "out of memory" in text.lower():
        text += (" (miner sql does not spill to disk: filter, aggregate or LIMIT the query, or open "
                 "RUN/catalog.duckdb with duckdb yourself)")
    return MinerError(f"SQL error: {text}")


def _checked_batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The reader's batches; an error DuckDB reports through the Arrow stream (pyarrow raises it as an
    OSError or ArrowException) becomes a MinerError, so it is not mistaken for a failed write."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (OSError, pa.ArrowException, duckdb.Error) as exc:
            raise _sql_error(exc) from None
        yield batch


def _drain(relation: duckdb.DuckDBPyRelation | None) -> None:
    """Run a statement whose result is not shown, reading its batches and dropping them (flat memory)."""
    if relation is not None:
        for _ in _checked_batches(relation.to_arrow_reader(BATCH_ROWS)):
            pass


def _execute(con: duckdb.DuckDBPyConnection, statements: list[duckdb.Statement],
             batch_rows: int = BATCH_ROWS) -> QueryResult:
    """Run every statement in order; the last one's result as a stream (the others are read and dropped)."""
    for statement in statements[:-1]:
        _drain(con.sql(statement))
    relation = con.sql(statements[-1])
    if relation is None:
        return QueryResult(pa.schema([]), iter(()))
    reader = relation.to_arrow_reader(batch_rows)
    return QueryResult(reader.schema, _checked_batches(reader))


@contextmanager
def query_batches(run_dir: Path, sql: str, batch_rows: int = BATCH_ROWS) -> Iterator[QueryResult]:
    """Run read-only SQL against the run's catalog and stream the last statement's result.

    Every statement is checked before any runs; the connection closes when the block ends. Example:
        with query_batches(run, "SELECT layer, count(*) AS n FROM units GROUP BY layer") as result:
            for batch in result.batches: ...
    """
    statements = check_read_only(sql)
    con = sandboxed_connection(run_dir)
    try:
        yield _execute(con, statements, batch_rows)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    except RuntimeError as exc:
        if _interrupted(exc):
            raise KeyboardInterrupt from None
        raise
    finally:
        con.close()


def query_arrow(run_dir: Path, sql: str) -> pa.Table:
    """Run read-only SQL against the run's catalog; the last statement's result as an Arrow table."""
    with query_batches(run_dir, sql) as result:
        return pa.Table.from_batches(list(result.batches), result.schema)


def _check_max_rows(max_rows: int | None) -> None:
    """Refuse a negative row limit. Example: -1 -> ConfigError("--max-rows must be 0 (every row) or ...")"""
    if max_rows is not None and max_rows < 0:
        raise ConfigError(f"--max-rows must be 0 (every row) or a positive number of rows, not {max_rows}")


def run_query(run_dir: Path, sql: str, fmt: OutputFormat = "table", out: Path | None = None,
              max_rows: int | None = 100, force: bool = False, stream: TextIO | None = None) -> str | None:
    """Run read-only SQL and render the result: written to `out` (atomically), else to `stream`, else
    returned as text (None is returned when it was written).

    Several read-only statements may be given (all are checked before any runs); the last one's result
    is rendered. 'table' shows at most `max_rows` rows (None = all) with a footer saying how many there are; csv,
    json and parquet hold every row. parquet needs `out`. `out` is refused inside a run or corpus folder,
    and if it exists unless `force`. The result streams batch by batch into `out` or `stream`.
    A failed write (disk full) raises the OSError of miner.atomic, naming `out`.
    Example: run_query(run, "SELECT layer FROM units LIMIT 2", "csv") -> "layer\\n1\\n1\\n"
    """
    _check_max_rows(max_rows)
    if fmt == "parquet" and out is None:
        raise MinerError("--format parquet needs an output file (--out FILE.parquet)")
    if fmt not in _TEXT_WRITERS and fmt != "parquet":
        raise ConfigError(f"unknown format {fmt!r}: choose table, csv, json or parquet")
    if out is not None:
        out = check_output_file(Path(out), force)
    with query_batches(run_dir, sql) as result:
        if out is not None:
            _write_file(result, fmt, out, max_rows)
            return None
        if stream is not None:
            _TEXT_WRITERS[fmt](result.schema, result.batches, stream, max_rows)
            return None
        buf = io.StringIO()
        _TEXT_WRITERS[fmt](result.schema, result.batches, buf, max_rows)
        return buf.getvalue()


def _write_file(result: QueryResult, fmt: OutputFormat, out: Path, max_rows: int | None) -> None:
    """Stream `result` into `out` through a temporary file renamed at the end (miner.atomic): an error or
    Ctrl-C mid-stream leaves `out` as it was and no temporary file behind."""
    def write(tmp: Path) -> None:
        if fmt == "parquet":
            stream_parquet(result.schema, result.batches, tmp)
            return
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            _TEXT_WRITERS[fmt](result.schema, result.batches, fh, max_rows)

    write_with(out, write)


def _cell(value: object, width: int | None = None) -> str:
    """One value as display text: None -> "NULL", floats to 6 significant digits, lists abbreviated."""
    if value is None:
        text = "NULL"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, list):
        shown = ", ".join(_cell(v) for v in value[:4])
        text = f"[{shown}{', ...' if len(value) > 4 else ''}]" + (f" ({len(value)})" if len(value) > 4 else "")
    else:
        text = str(value).replace("\n", " ")
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _cells(batch: pa.RecordBatch, max_width: int) -> list[list[str]]:
    """A batch's rows as display cells, column by column (duplicate column names keep their own cells).

    Example: a batch {layer: [1, 10], name: ["a", None]} -> [["1", "a"], ["10", "NULL"]]
    """
    columns = [[_cell(v, max_width) for v in column.to_pylist()] for column in batch.columns]
    return [list(row) for row in zip(*columns)]


def _is_numeric(field: pa.Field) -> bool:
    return pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_decimal(field.type)


def _row_line(cells: list[str], widths: list[int], numeric: list[bool]) -> str:
    """One table line: numbers right-aligned, text left-aligned, trailing spaces dropped."""
    return " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()


def _header(names: list[str], widths: list[int]) -> str:
    return (" | ".join(name.ljust(w) for name, w in zip(names, widths)).rstrip() + "\n"
            + "-+-".join("-" * w for w in widths) + "\n")


def _widths(names: list[str], rows: list[list[str]]) -> list[int]:
    """Column widths: the widest of the name and every cell. Example: (["n"], [["10"], ["3"]]) -> [2]"""
    return [max([len(name)] + [len(r[i]) for r in rows]) for i, name in enumerate(names)]


def _footer(total: int, shown: int) -> str:
    """The table's last line. Example: (250, 100) -> "(250 rows, first 100 shown; use --format csv for all)\\n";
    (1, 1) -> "(1 row)\\n"
    """
    footer = f"({total:,} row{'s' if total != 1 else ''}"
    footer += f", first {shown:,} shown; use --format csv for all)" if shown < total else ")"
    return footer + "\n"


def stream_table(schema: pa.Schema, batches: Iterable[pa.RecordBatch], fh: TextIO, max_rows: int | None = 100,
                 max_width: int = 60) -> int:
    """Write an aligned text table of the batches to `fh`; returns the number of rows.

    With `max_rows` N only the first N rows are kept (the rest are only counted, for the footer), so the
    table is laid out exactly as if it were whole. With `max_rows` None every row is written as it comes:
    column widths are set by the first batches (at least WIDTH_ROWS rows), and a later cell wider than its
    column pushes its own line out of alignment rather than being cut (cells are cut at `max_width` in
    either case). An EXPLAIN result prints its plan as DuckDB draws it.
    """
    names = schema.names
    if names == ["explain_key", "explain_value"]:
        return _stream_explain(batches, fh)
    numeric = [_is_numeric(f) for f in schema]
    if max_rows is not None:
        return _table_first_rows(names, numeric, batches, fh, max_rows, max_width)
    batches = iter(batches)
    head: list[list[str]] = []
    for batch in batches:
        head += _cells(batch, max_width)
        if len(head) >= WIDTH_ROWS:
            break
    widths = _widths(names, head)
    fh.write(_header(names, widths))
    total = _write_rows(head, widths, numeric, fh)
    for batch in batches:
        total += _write_rows(_cells(batch, max_width), widths, numeric, fh)
    fh.write(_footer(total, total))
    return total


def _table_first_rows(names: list[str], numeric: list[bool], batches: Iterable[pa.RecordBatch], fh: TextIO,
                      max_rows: int, max_width: int) -> int:
    """The table of the first `max_rows` rows, with a footer counting them all; returns the row count."""
    kept: list[list[str]] = []
    total = 0
    for batch in batches:
        if len(kept) < max_rows:
            kept += _cells(batch.slice(0, max_rows - len(kept)), max_width)
        total += batch.num_rows
    widths = _widths(names, kept)
    fh.write(_header(names, widths))
    _write_rows(kept, widths, numeric, fh)
    fh.write(_footer(total, len(kept)))
    return total


def _write_rows(rows: list[list[str]], widths: list[int], numeric: list[bool], fh: TextIO) -> int:
    if rows:
        fh.write("\n".join(_row_line(r, widths, numeric) for r in rows) + "\n")
    return len(rows)


def _stream_explain(batches: Iterable[pa.RecordBatch], fh: TextIO) -> int:
    """An EXPLAIN result: each (key, plan) as "key:\nplan\n"."""
    rows = 0
    for batch in batches:
        for key, value in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            fh.write(f"{key}:\n{value}\n")
            rows += 1
    return rows


def _plain(value: object) -> object:
    """A JSON-safe value: NaN/inf -> None, decimals -> float, bytes -> hex, dates and others -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _csv_field(value: object) -> object:
    """A value as csv.writer should write it: None -> "", lists and structs -> JSON, others as _plain.

    Example: [1.5, nan] -> "[1.5, null]"; nan -> None (an empty field); True -> True ("True")
    """
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(_plain(value))
    return _plain(value)


def _passes_as_is(kind: pa.DataType) -> bool:
    """Arrow types whose Python values _plain and _csv_field leave unchanged (None aside: csv writes it empty)."""
    return (pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)
            or pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def _columns(batch: pa.RecordBatch, convert: Callable[[object], object]) -> list[list]:
    """A batch's columns as Python lists, each value passed through `convert` unless its type needs none."""
    out = []
    for column in batch.columns:
        values = column.to_pylist()
        out.append(values if _passes_as_is(column.type) else [convert(v) for v in values])
    return out


def stream_csv(schema: pa.Schema, batches: Iterable[pa.RecordBatch], fh: TextIO, max_rows: int | None = None) -> int:
    """Write CSV with a header row to `fh`, batch by batch; returns the number of rows. NULL (and NaN) is an
    empty field, lists and structs are JSON. `max_rows` is ignored: CSV holds every row."""
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(schema.names)
    rows = 0
    for batch in batches:
        writer.writerows(zip(*_columns(batch, _csv_field)))
        rows += batch.num_rows
    return rows


def stream_json(schema: pa.Schema, batches: Iterable[pa.RecordBatch], fh: TextIO,
                max_rows: int | None = None) -> int:
    """Write a JSON array of row objects to `fh`, batch by batch; returns the number of rows. The text is
    the same as json.dumps of the whole list: [{"layer": 1, "n": 3}, {"layer": 2, "n": 4}]. `max_rows` is
    ignored: JSON holds every row."""
    names = schema.names
    fh.write("[")
    rows = 0
    for batch in batches:
        objects = [dict(zip(names, row)) for row in zip(*_columns(batch, _plain))]
        if objects:
            fh.write((", " if rows else "") + json.dumps(objects, ensure_ascii=False)[1:-1])
            rows += len(objects)
    fh.write("]\n")
    return rows


def stream_parquet(schema: pa.Schema, batches: Iterable[pa.RecordBatch], path: Path) -> int:
    """Write the batches to a Parquet file, gathered into row groups of at most ROW_GROUP_BYTES and
    ROW_GROUP_ROWS rows (a single bigger batch is a row group of its own); returns the number of rows.
    Memory holds one row group at most."""
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        group: list[pa.RecordBatch] = []
        size = count = 0
        for batch in batches:
            if group and (size + batch.nbytes > ROW_GROUP_BYTES or count + batch.num_rows > ROW_GROUP_ROWS):
                writer.write_table(pa.Table.from_batches(group, schema), row_group_size=count)
                rows += count
                group, size, count = [], 0, 0
            group.append(batch)
            size += batch.nbytes
            count += batch.num_rows
        if group:
            writer.write_table(pa.Table.from_batches(group, schema), row_group_size=count)
            rows += count
    return rows


_TEXT_WRITERS: dict[str, Callable[[pa.Schema, Iterable[pa.RecordBatch], TextIO, int | None], int]] = {
    "table": stream_table, "csv": stream_csv, "json": stream_json,
}


def _render(table: pa.Table, write: Callable[..., int], **options: object) -> str:
    buf = io.StringIO()
    write(table.schema, table.to_batches(max_chunksize=BATCH_ROWS), buf, **options)
    return buf.getvalue()


def format_table(table: pa.Table, max_rows: int | None = 100, max_width: int = 60) -> str:
    """An aligned text table; numbers right-aligned, cells cut at `max_width` characters.

    Example: a table {layer: [1, 10], n: [3, 4]} ->
        layer | n
        ------+--
            1 | 3
           10 | 4
        (2 rows)

    The table is whole, so with `max_rows` None the widths fit every row (unlike a streamed result).
    """
    shown = table.num_rows if max_rows is None else max_rows
    return _render(table, stream_table, max_rows=shown, max_width=max_width)


def format_json(table: pa.Table) -> str:
    """A JSON array of row objects: [{"layer": 1, "n": 3}, ...]."""
    return _render(table, stream_json)


def format_csv(table: pa.Table) -> str:
    """CSV with a header row; NULL is an empty field, lists are written as JSON arrays."""
    return _render(table, stream_csv)
