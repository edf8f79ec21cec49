"""Query results rendered batch by batch: aligned text tables, CSV, JSON and Parquet (flat memory in rows).

'table' is aligned text with a footer counting the rows, 'csv' has a header row (NULL is an empty field,
lists and structs are JSON), 'json' is an array of row objects, 'parquet' is written to a file in row groups.
The `stream_*` functions take an Arrow schema and an iterable of record batches; `format_*` render a whole
Arrow table to text.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from miner.query.sandbox import BATCH_ROWS

# --format table with every row (--max-rows 0): column widths come from the first batches, at least this many rows.
WIDTH_ROWS = 1_000
# --format parquet: batches are gathered into row groups of about this size.
ROW_GROUP_BYTES = 64 << 20
ROW_GROUP_ROWS = 1 << 20

TextWriter = Callable[[pa.Schema, Iterable[pa.RecordBatch], TextIO, int | None], int]


def _cell(value: object, width: int | None = None) -> str:
    """One value as display text: None -> "NULL", floats to 6 significant digits, lists abbreviated.

    >>> _cell(None), _cell(1 / 3), _cell([1, 2, 3, 4, 5]), _cell("abcdef", width=4)
    ('NULL', '0.333333', '[1, 2, 3, 4, ...] (5)', 'abc…')
    """
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

    >>> _cells(pa.record_batch({"layer": [1, 10], "name": ["a", None]}), 60)
    [['1', 'a'], ['10', 'NULL']]
    """
    columns = [[_cell(v, max_width) for v in column.to_pylist()] for column in batch.columns]
    return [list(row) for row in zip(*columns)]


def _is_numeric(field: pa.Field) -> bool:
    return pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_decimal(field.type)


def _row_line(cells: list[str], widths: list[int], numeric: list[bool]) -> str:
    """One table line: numbers right-aligned, text left-aligned, trailing spaces dropped.

    >>> _row_line(["7", "ab"], [3, 4], [True, False])
    '  7 | ab'
    """
    return " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()


def _header(names: list[str], widths: list[int]) -> str:
    return (" | ".join(name.ljust(w) for name, w in zip(names, widths)).rstrip() + "\n"
            + "-+-".join("-" * w for w in widths) + "\n")


def _widths(names: list[str], rows: list[list[str]]) -> list[int]:
    """Column widths: the widest of the name and every cell.

    >>> _widths(["n"], [["10"], ["3"]])
    [2]
    """
    return [max([len(name)] + [len(r[i]) for r in rows]) for i, name in enumerate(names)]


def _footer(total: int, shown: int) -> str:
    """The table's last line.

    >>> _footer(250, 100), _footer(1, 1)
    ('(250 rows, first 100 shown; use --format csv for all)\\n', '(1 row)\\n')
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
    """A JSON-safe value: NaN/inf -> None, decimals -> float, bytes -> hex, dates and others -> str.

    >>> _plain([float("nan"), Decimal("1.5"), b"\\x01"]), _plain({"d": Path("x")})
    ([None, 1.5, '01'], {'d': 'x'})
    """
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

    NaN becomes None (an empty field), True stays True (written "True"):

    >>> _csv_field([1.5, float("nan")]), _csv_field(float("nan")), _csv_field(True), _csv_field(None)
    ('[1.5, null]', None, True, '')
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


# The text formats by name (`miner sql --format`); parquet is written to a file by stream_parquet.
TEXT_WRITERS: dict[str, TextWriter] = {"table": stream_table, "csv": stream_csv, "json": stream_json}


def _render(table: pa.Table, write: Callable[..., int], **options: object) -> str:
    buf = io.StringIO()
    write(table.schema, table.to_batches(max_chunksize=BATCH_ROWS), buf, **options)
    return buf.getvalue()


def format_table(table: pa.Table, max_rows: int | None = 100, max_width: int = 60) -> str:
    """An aligned text table; numbers right-aligned, cells cut at `max_width` characters.

    >>> print(format_table(pa.table({"layer": [1, 10], "n": [3, 4]})), end="")
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
    """A JSON array of row objects.

    >>> format_json(pa.table({"layer": [1], "n": [3]}))
    '[{"layer": 1, "n": 3}]\\n'
    """
    return _render(table, stream_json)


def format_csv(table: pa.Table) -> str:
    """CSV with a header row; NULL is an empty field, lists are written as JSON arrays.

    >>> format_csv(pa.table({"layer": [1, None], "v": [[1, 2], None]}))
    'layer,v\\n1,"[1, 2]"\\n,\\n'
    """
    return _render(table, stream_csv)
