"""The run catalog: RUN/catalog.duckdb holds only VIEWS over the run's Parquet tables (absolute paths)."""

from __future__ import annotations

import logging
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from miner import __version__
from miner.errors import InputError, MinerError, first_line
from miner.run.folder import (
    FILES,
    TABLE_SUFFIX,
    read_manifest_json,
    repair_hint,
    skipped_shards,
    table_file,
    table_name,
)

# Every `RUN/<table>.parquet` becomes a view `<table>`; `corpus` is a view over the whole corpus's shards (from the
# run manifest); `unit_top` joins each queue entry with its unit and sentence; `catalog_info` says which run and
# tables the catalog was built for. The catalog stores no data, so it is small and cheap to rebuild; it is rebuilt
# whenever a Parquet table is added, replaced or removed, or the run folder moved.
#
# Open it from Python (`open_catalog(run)`), pandas/polars (`duckdb.connect(path, read_only=True)`) or the duckdb
# shell (`duckdb -readonly RUN/catalog.duckdb`). Queries always open it read-only: DuckDB lets only one process
# hold a database file for writing, so the builder writes a temporary file and renames it (open readers keep the
# old file; new ones see the new views).

log = logging.getLogger(__name__)

STORAGE_VERSION = "v1.5.0"
"""The catalog file's storage format: the one the duckdb shell on PyPI (duckdb-cli 1.5) reads; DuckDB 2.0 would
write a newer one by default that no released shell opens."""

# Views the catalog adds itself; a run Parquet file with one of these names is not exposed.
CORPUS_VIEW = "corpus"
UNIT_TOP_VIEW = "unit_top"
INFO_VIEW = "catalog_info"
RESERVED = (CORPUS_VIEW, UNIT_TOP_VIEW, INFO_VIEW)
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def catalog_path(run_dir: Path) -> Path:
    """Where a run keeps its catalog."""
    return Path(run_dir) / FILES.catalog


def _quote_literal(text: str) -> str:
    """SQL string literal: "it's" -> "'it''s'"."""
    return "'" + text.replace("'", "''") + "'"


def read_run_table(run_dir: Path, name: str, **options: object) -> pa.Table:
    """RUN/<name>.parquet as an Arrow table (`options` go to pyarrow.parquet.read_table); a missing or
    damaged file is one InputError naming it and what to do."""
    path = Path(run_dir) / table_file(name)
    if not path.exists():
        raise InputError(f"{path}: missing; {repair_hint(path)}")
    try:
        return pq.read_table(path, **options)  # type: ignore[arg-type]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: damaged table ({first_line(exc)}); {repair_hint(path)}") from None


def run_table_rows(run_dir: Path, name: str) -> int:
    """The number of rows of RUN/<name>.parquet (from its footer); damaged -> one InputError."""
    path = Path(run_dir) / table_file(name)
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: damaged table ({first_line(exc)}); {repair_hint(path)}") from None


def check_run_tables(run_dir: Path, rewritten: frozenset[str] | tuple[str, ...] = ()) -> None:
    """Read the footer of every run table except those the caller is about to rewrite; a damaged one is one
    InputError naming it, raised before the caller writes anything (a stage must not half-finish and then fail
    on building the catalog)."""
    for name in run_tables(run_dir):
        if name not in rewritten:
            run_table_rows(run_dir, name)


def read_run_manifest(run_dir: Path) -> dict:
    """The manifest of a complete mining run; one clear InputError if the folder holds none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder")
    if not (run_dir / FILES.manifest).exists() or not (run_dir / FILES.top_sentences).exists():
        raise InputError(f"{run_dir}: not a mining run (no {FILES.manifest} or {FILES.top_sentences}); "
                         "run `miner mine` first")
    data = read_manifest_json(run_dir)
    if data.get("status") != "complete":
        raise InputError(f"{run_dir}: mining is not complete (status: {data.get('status')}); "
                         "finish or resume `miner mine` first")
    return data


def run_tables(run_dir: Path) -> dict[str, Path]:
    """The run's Parquet tables by view name (absolute paths), in name order.

    Only top-level `<name>.parquet` files with a lower-case SQL-safe name count (checkpoints live in a
    subfolder); names reserved for the catalog's own views are skipped.
    """
    run_dir = Path(run_dir).resolve()
    tables = {}
    for path in sorted(run_dir.glob("*" + TABLE_SUFFIX)):
        name = path.stem
        if not _TABLE_NAME.match(name):
            log.warning("%s: not exposed in the catalog (name is not a plain SQL identifier)", path)
        elif name in RESERVED:
            log.warning("%s: not exposed in the catalog (%s is a reserved view name)", path, name)
        else:
            tables[name] = path
    return tables


def corpus_shards(manifest: dict) -> list[Path]:
    """Absolute paths of the corpus shards named in a run manifest (empty if any is missing)."""
    corpus = manifest.get("corpus") or {}
    folder = corpus.get("path")
    if not folder:
        return []
    skipped = skipped_shards(manifest)  # corrupt shards the miner skipped
    shards = [Path(folder) / s["file"] for s in corpus.get("shards", []) if s["file"] not in skipped]
    missing = [p for p in shards if not p.exists()]
    if missing:
        log.warning("%s: corpus shard missing; the catalog has no 'corpus' view", missing[0])
        return []
    return shards


def catalog_sources(run_dir: Path) -> list[Path]:
    """Every file the catalog's views read (run tables and corpus shards): the sandbox's allow-list."""
    manifest = read_run_manifest(run_dir)
    return [*run_tables(run_dir).values(), *corpus_shards(manifest)]


def _view_statements(run_dir: Path, manifest: dict) -> list[tuple[str, str]]:
    """(view name, CREATE VIEW statement) for every view of the catalog, in creation order."""
    tables = run_tables(run_dir)
    views = [(name, f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_quote_literal(str(path))})")
             for name, path in tables.items()]
    shards = corpus_shards(manifest)
    if shards:
        files = "[" + ", ".join(_quote_literal(str(p)) for p in shards) + "]"
        views.append((CORPUS_VIEW, f"CREATE VIEW {CORPUS_VIEW} AS SELECT * FROM read_parquet({files}, "
                                   "union_by_name = true)"))
    if {table_name(FILES.top_sentences), table_name(FILES.units), table_name(FILES.sentences)} <= tables.keys():
        views.append((UNIT_TOP_VIEW, f"""CREATE VIEW {UNIT_TOP_VIEW} AS
            SELECT t.unit_id, u.site, u.layer, u.idx, t.direction, t.rank, t.score, t.sentence_id, s.text,
                   t.peak_position, t.peak_token, t.peak_score, s.* EXCLUDE (sentence_id, text)
            FROM top_sentences t JOIN units u USING (unit_id) JOIN sentences s USING (sentence_id)"""))
    names = [name for name, _ in views]
    info = (f"CREATE VIEW {INFO_VIEW} AS SELECT {_quote_literal(str(Path(run_dir).resolve()))} AS run_dir, "
            f"{_quote_literal(datetime.now(UTC).isoformat(timespec='seconds'))} AS built_at, "
            f"{_quote_literal(__version__)} AS code_version, "
            f"{_quote_literal(duckdb.__version__)} AS duckdb_version, "
            f"[{', '.join(_quote_literal(n) for n in names)}]::VARCHAR[] AS views")
    return [*views, (INFO_VIEW, info)]


def build_catalog(run_dir: Path) -> Path:
    """Write RUN/catalog.duckdb (views only) atomically: a temporary file, then os.replace.

    Readers that hold the old catalog open keep reading it; new readers see the new one.
    """
    run_dir = Path(run_dir).resolve()
    manifest = read_run_manifest(run_dir)
    target = catalog_path(run_dir)
    tmp = run_dir / f".catalog-{os.getpid()}-{uuid.uuid4().hex[:8]}.duckdb"
    try:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"ATTACH {_quote_literal(str(tmp))} AS catalog (STORAGE_VERSION '{STORAGE_VERSION}')")
            con.execute("USE catalog")
            for name, statement in _view_statements(run_dir, manifest):
                try:
                    con.execute(statement)
                except duckdb.Error as exc:
                    raise MinerError(_view_error(run_dir, name, manifest, exc)) from None
        finally:
            con.close()
        os.replace(tmp, target)
    except (OSError, duckdb.IOException) as exc:
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise MinerError(f"{target}: cannot write the catalog ({reason})") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return target


def _view_error(run_dir: Path, name: str, manifest: dict, exc: duckdb.Error) -> str:
    """One line for a view that cannot be created: the damaged file it reads, and what to do."""
    reason = first_line(exc)
    if name == CORPUS_VIEW:
        shard = next((p for p in corpus_shards(manifest) if str(p) in reason), None)
        where = shard or Path(manifest.get("corpus", {}).get("path", run_dir))
        return (f"{where}: damaged corpus shard ({reason}); restore the corpus (re-run `miner corpus prepare` with "
                "the same inputs and options gives the same shards)")
    path = run_tables(run_dir).get(name)
    if path is None:
        return f"{run_dir}: cannot create view {name}: {reason}"
    return f"{path}: damaged table ({reason}); {repair_hint(path)}"


def _matches(info: tuple, run_dir: Path) -> bool:
    """Is a catalog_info row (run_dir, views) the current one for this run?"""
    tables = run_tables(run_dir)
    built = catalog_path(run_dir).stat().st_mtime
    if any(p.stat().st_mtime > built for p in tables.values()):
        return False
    return info[0] == str(run_dir) and set(info[1]) - {CORPUS_VIEW, UNIT_TOP_VIEW} == set(tables)


def catalog_is_current(run_dir: Path) -> bool:
    """True if the catalog exists, is newer than every run table, and covers exactly the run's tables
    of this very folder (a moved run folder needs a new catalog: the views hold absolute paths)."""
    run_dir = Path(run_dir).resolve()
    path = catalog_path(run_dir)
    if not path.exists():
        return False
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {_quote_literal(str(path))} AS catalog (READ_ONLY)")
        return _matches(con.sql(f"SELECT run_dir, views FROM catalog.{INFO_VIEW}").fetchall()[0], run_dir)
    except (duckdb.Error, IndexError):
        return False
    finally:
        con.close()


def ensure_catalog(run_dir: Path) -> Path:
    """The run's catalog, (re)built first if it is missing or stale."""
    read_run_manifest(run_dir)
    if catalog_is_current(run_dir):
        return catalog_path(Path(run_dir).resolve())
    return build_catalog(run_dir)


def attach_catalog(con: duckdb.DuckDBPyConnection, run_dir: Path, alias: str = "catalog") -> Path:
    """ATTACH the run's catalog READ_ONLY to `con` as `alias`, rebuilding it first if missing or stale.

    One open of the catalog instead of two (check, then use): DuckDB instances are not free to start.
    """
    run_dir = Path(run_dir).resolve()
    read_run_manifest(run_dir)
    path = catalog_path(run_dir)
    attach = f"ATTACH {_quote_literal(str(path))} AS {alias} (READ_ONLY)"
    if path.exists():
        try:
            con.execute(attach)
            if _matches(con.sql(f"SELECT run_dir, views FROM {alias}.{INFO_VIEW}").fetchall()[0], run_dir):
                return path
        except (duckdb.Error, IndexError):
            pass
        con.execute(f"DETACH DATABASE IF EXISTS {alias}")
    build_catalog(run_dir)
    try:
        con.execute(attach)
    except duckdb.Error as exc:
        raise MinerError(f"{path}: cannot open the catalog: {first_line(exc)}") from None
    return path


def open_catalog(run_dir: Path) -> duckdb.DuckDBPyConnection:
    """A connection with the run's catalog attached READ_ONLY as `catalog` and made current (built or
    refreshed first when needed).

    A private in-memory DuckDB attaches the file, rather than duckdb.connect(path): DuckDB caches one
    instance per path in a process, which would keep serving the old views after a rebuild.
    Example: open_catalog(run).sql("SELECT layer, count(*) FROM units GROUP BY layer").fetchall()
    """
    con = duckdb.connect(":memory:")
    try:
        attach_catalog(con, run_dir, "catalog")
        con.execute("USE catalog")
    except BaseException:
        con.close()
        raise
    return con


