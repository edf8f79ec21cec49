"""Read-only SQL over a run's catalog (`miner sql RUN "SELECT ..."`), with a guard in three layers.

1. Statement kinds (DuckDB's own parser, `duckdb.extract_statements`): only SELECT (which covers WITH,
   VALUES, FROM-first, DESCRIBE, SHOW, SUMMARIZE, PIVOT's SELECT form), EXPLAIN, and read-only PRAGMA/CALL
   (table_info, show_tables, version, ...) pass. Every statement of a multi-statement text is checked
   before any runs, so "SELECT 1; DROP TABLE x" runs nothing.
2. Words (DuckDB's own tokenizer, `duckdb.tokenize`): a passing statement may not contain a bare keyword
   that writes (INSERT, UPDATE, DELETE, COPY, CREATE, ...) outside string literals, comments and quoted
   identifiers. DuckDB 2.0 parses a data-modifying CTE, `WITH a AS (INSERT ... RETURNING *) SELECT ...`,
   as a SELECT statement, and `EXPLAIN ANALYZE` executes its statement: this layer refuses both.
   (A column named like such a keyword must be double-quoted: SELECT "update" FROM t.)
3. Execution sandbox: the catalog is attached READ_ONLY to a private in-memory DuckDB; file access is
   limited to exactly the files the views read (allowed_paths, enable_external_access=false), extension
   auto-install/auto-load is off, and lock_configuration=true forbids changing any of it. The statement
   objects the guard classified are the ones executed.

PIVOT without an IN list is refused (DuckDB runs it as two statements, the first creating an ENUM type):
write `PIVOT t ON c IN ('a', 'b') USING ...`.

Results: 'table' (aligned text), 'csv', 'json' (an array of row objects) or 'parquet' (needs an out path).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from miner.catalog import attach_catalog, catalog_path, catalog_sources, first_line
from miner.errors import MinerError

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
        bad = [w for w in words if w in WRITE_WORDS]
        if bad:
            raise ReadOnlyViolation(f"{where} refused: it contains {bad[0].upper()}, which writes or changes the "
                                    'session (double-quote a column of that name: "' + bad[0] + '")')
    return statements


def sandboxed_connection(run_dir: Path) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB with the run's catalog attached READ_ONLY (and made current), able to
    read only the files its views name, with extension loading off and its configuration locked.

    A private instance keeps the lock-down from leaking into other connections of the process (DuckDB
    shares one instance among connections to the same database file).
    """
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        attach_catalog(con, run_dir, "catalog")
        con.execute("USE catalog")
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


def query_arrow(run_dir: Path, sql: str) -> pa.Table:
    """Run read-only SQL against the run's catalog; the last statement's result as an Arrow table."""
    statements = check_read_only(sql)
    con = sandboxed_connection(run_dir)
    try:
        result = pa.table({})
        for statement in statements:
            relation = con.sql(statement)
            result = relation.to_arrow_table() if relation is not None else pa.table({})
        return result
    except duckdb.Error as exc:
        raise MinerError(f"SQL error: {first_line(exc)}") from None
    finally:
        con.close()


def run_query(run_dir: Path, sql: str, fmt: OutputFormat = "table", out: Path | None = None,
              max_rows: int | None = 100) -> str | None:
    """Run read-only SQL and render the result; returns the text, or None when written to `out`.

    Several read-only statements may be given (all are checked before any runs); the last one's result
    is rendered. 'table' shows at most `max_rows` rows (None = all) with a footer saying how many there are; csv,
    json and parquet hold every row. parquet needs `out`.
    """
    if fmt == "parquet" and out is None:
        raise MinerError("--format parquet needs an output file (--out FILE.parquet)")
    table = query_arrow(run_dir, sql)
    if fmt == "parquet":
        _atomic_write(Path(out), lambda p: pq.write_table(table, p))  # type: ignore[arg-type]
        return None
    text = {"table": lambda: format_table(table, max_rows), "csv": lambda: format_csv(table),
            "json": lambda: format_json(table)}[fmt]()
    if out is None:
        return text
    _atomic_write(Path(out), lambda p: p.write_text(text))
    return None


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise MinerError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


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


def format_table(table: pa.Table, max_rows: int | None = 100, max_width: int = 60) -> str:
    """An aligned text table; numbers right-aligned, cells cut at `max_width` characters.

    Example: a table {layer: [1, 10], n: [3, 4]} ->
        layer | n
        ------+--
            1 | 3
           10 | 4
        (2 rows)
    """
    names = table.column_names
    if names == ["explain_key", "explain_value"]:  # EXPLAIN: the plan as DuckDB draws it
        return "".join(f"{key}:\n{value}\n" for key, value in zip(*table.to_pydict().values()))
    n = table.num_rows
    shown = table if max_rows is None else table.slice(0, max_rows)
    rows = [[_cell(v, max_width) for v in row.values()] for row in shown.to_pylist()]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]
    widths = [max([len(name)] + [len(r[i]) for r in rows]) for i, name in enumerate(names)]
    lines = [" | ".join(name.ljust(w) for name, w in zip(names, widths)).rstrip(),
             "-+-".join("-" * w for w in widths)]
    for r in rows:
        lines.append(" | ".join(c.rjust(w) if num else c.ljust(w)
                                for c, w, num in zip(r, widths, numeric)).rstrip())
    footer = f"({n:,} row{'s' if n != 1 else ''}"
    footer += f", first {len(rows):,} shown; use --format csv for all)" if len(rows) < n else ")"
    lines.append(footer)
    return "\n".join(lines) + "\n"


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


def format_json(table: pa.Table) -> str:
    """A JSON array of row objects: [{"layer": 1, "n": 3}, ...]."""
    return json.dumps([_plain(r) for r in table.to_pylist()], ensure_ascii=False) + "\n"


def format_csv(table: pa.Table) -> str:
    """CSV with a header row; NULL is an empty field, lists are written as JSON arrays."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else json.dumps(_plain(v)) if isinstance(v, (list, dict)) else _plain(v)
                         for v in row.values()])
    return buf.getvalue()
