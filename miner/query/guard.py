"""The read-only SQL guard: which statements, words and table functions `miner sql` lets through.

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

The third layer, the execution sandbox, is miner.query.sandbox. PIVOT without an IN list is refused
(DuckDB runs it as two statements, the first creating an ENUM type): write
`PIVOT t ON c IN ('a', 'b') USING ...`.
"""

from __future__ import annotations

from itertools import pairwise

import duckdb

from miner.errors import MinerError, first_line

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


class ReadOnlyViolation(MinerError):
    """A statement that would write, or change the session, was refused."""


def _words(sql: str) -> list[tuple[str, str]]:
    """(token text, token kind) of a SQL text via DuckDB's tokenizer, comments dropped.

    >>> _words("SELECT 'x' -- hi")
    [('SELECT', 'keyword'), ("'x'", 'string_const')]
    """
    tokens = duckdb.tokenize(sql)
    out = []
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        if kind.name != "comment":
            out.append((sql[start:end].strip(), kind.name))
    return out


def _bare_words(sql: str) -> list[str]:
    """Lower-cased keywords and unquoted identifiers (no strings, comments or "quoted" names).

    >>> _bare_words('SELECT "update", n FROM t WHERE s = \\'drop\\'')
    ['select', 'n', 'from', 't', 'where', 's']
    """
    return [text.lower() for text, kind in _words(sql)
            if kind in ("keyword", "identifier") and not text.startswith('"')]


def _refused_calls(sql: str) -> str | None:
    """The first call of a function in REFUSED_FUNCTIONS (quoted or schema-qualified names too), else None.

    A column of that name is no call:

    >>> _refused_calls("SELECT * FROM query('SELECT 1')"), _refused_calls("SELECT query FROM t")
    ('query', None)
    """
    words = _words(sql)
    for (text, kind), (after, _) in pairwise(words):
        name = text.strip('"').lower()
        if kind in ("keyword", "identifier") and name in REFUSED_FUNCTIONS and after.startswith("("):
            return name
    return None


def check_read_only(sql: str) -> list[duckdb.Statement]:
    """Parse `sql` and return its statements if every one only reads; raise ReadOnlyViolation otherwise.

    >>> [s.type.name for s in check_read_only("WITH a AS (SELECT 1) SELECT * FROM a")]
    ['SELECT']
    >>> check_read_only("SELECT 1; DROP TABLE x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    miner.query.guard.ReadOnlyViolation: statement 2 refused: DROP statements are not allowed; ...
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
