"""`miner sql RUN "SELECT ..."`: read-only SQL over a run's catalog, rendered as a table, CSV, JSON or Parquet.

The statements are checked by miner.query.guard and run in the sandbox of miner.query.sandbox; results
stream batch by batch (miner.query.formats), so memory stays flat in the number of rows. An --out file is
checked first (miner.outputs: never inside a run or corpus folder, never over an existing file without
force) and written atomically (miner.atomic: a temporary name, renamed at the end), so an error or Ctrl-C
mid-stream leaves no partial file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, TextIO

import pyarrow as pa

from miner.atomic import write_with
from miner.errors import ConfigError, MinerError
from miner.outputs import check_output_file
from miner.query.formats import TEXT_WRITERS, stream_parquet
from miner.query.sandbox import QueryResult, query_batches

OutputFormat = Literal["table", "csv", "json", "parquet"]


def query_arrow(run_dir: Path, sql: str) -> pa.Table:
    """Run read-only SQL against the run's catalog; the last statement's result as an Arrow table."""
    with query_batches(run_dir, sql) as result:
        return pa.Table.from_batches(list(result.batches), result.schema)


def _check_max_rows(max_rows: int | None) -> None:
    """Refuse a negative row limit.

    >>> _check_max_rows(-1)
    Traceback (most recent call last):
    miner.errors.ConfigError: --max-rows must be 0 (every row) or a positive number of rows, not -1
    """
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
    if fmt not in TEXT_WRITERS and fmt != "parquet":
        raise ConfigError(f"unknown format {fmt!r}: choose table, csv, json or parquet")
    if out is not None:
        out = check_output_file(Path(out), force)
    with query_batches(run_dir, sql) as result:
        if out is not None:
            _write_file(result, fmt, out, max_rows)
            return None
        if stream is not None:
            TEXT_WRITERS[fmt](result.schema, result.batches, stream, max_rows)
            return None
        buf = io.StringIO()
        TEXT_WRITERS[fmt](result.schema, result.batches, buf, max_rows)
        return buf.getvalue()


def _write_file(result: QueryResult, fmt: OutputFormat, out: Path, max_rows: int | None) -> None:
    """Stream `result` into `out` through a temporary file renamed at the end (miner.atomic): an error or
    Ctrl-C mid-stream leaves `out` as it was and no temporary file behind."""
    def write(tmp: Path) -> None:
        if fmt == "parquet":
            stream_parquet(result.schema, result.batches, tmp)
            return
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            TEXT_WRITERS[fmt](result.schema, result.batches, fh, max_rows)

    write_with(out, write)
