"""The SQL execution sandbox: a private, locked-down DuckDB holding the run catalog's views, and result streams.

A private in-memory DuckDB holds copies of the catalog's views (database `catalog`); file access is limited
to exactly the files the views read (allowed_paths, enable_external_access=false), extension
auto-install/auto-load is off, and lock_configuration=true forbids changing any of it. The statement
objects the guard (miner.query.guard) classified are the ones executed.

Two things DuckDB would otherwise add to the allow-list when external access is turned off are kept out:
its temporary directory (default `.tmp` under the current directory, so any file there would be readable)
and the files of attached databases (catalog.duckdb and its .wal). So the catalog file is attached only to
copy its view definitions, then detached, and temp_directory is '' (no spilling: a query whose sorts or
joins outgrow memory_limit fails with an out-of-memory error instead of writing to disk). A private mkdtemp
folder would be safe from other users too, but it would still put a readable folder on the list and
outlive a killed process; the results `miner sql` shows stream, so they never needed it.

Results stream from DuckDB in Arrow record batches (`query_batches`), so memory stays flat in the number of
rows; DuckDB errors become one-line MinerErrors, and Ctrl-C a KeyboardInterrupt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from miner.errors import MinerError, first_line
from miner.query.guard import check_read_only
from miner.run.catalog import attach_catalog, catalog_path, catalog_sources

# Rows per record batch DuckDB hands over; results are converted and written one batch at a time.
BATCH_ROWS = 8_192
_CATALOG_COPY = "catalog_file"


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
    starts), OSError('INTERRUPT Error: ...') through the Arrow stream, RuntimeError('Query interrupted').

    >>> _interrupted(OSError("INTERRUPT Error: Interrupted!")), _interrupted(OSError("No space left"))
    (True, False)
    """
    text = first_line(exc).lower()
    return (isinstance(exc, duckdb.InterruptException) or text.startswith("interrupt error")
            or text == "query interrupted")


def _sql_error(exc: BaseException) -> BaseException:
    """A one-line MinerError for a DuckDB error (KeyboardInterrupt for Ctrl-C); an out-of-memory error says
    the sandbox does not spill.

    >>> _sql_error(duckdb.BinderException('Binder Error: Referenced column "nope" not found'))
    MinerError('SQL error: Binder Error: Referenced column "nope" not found')
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
