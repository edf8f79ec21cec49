"""Atomic file writes: write to a hidden temporary name beside the target, then rename over it.

A failed write (disk full, quota, a vanished mount) removes its temporary file and raises an OSError that
names the target, so a reader never sees a half-written file and earlier results stay as they were.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_error(path: Path, exc: OSError) -> OSError:
    """An OSError that names the file being written and the OS's reason (e.g. no space left on device)."""
    reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return OSError(exc.errno, reason, str(path))


def write_with(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary name beside `path`, then rename it over `path`; clean up on failure
    (an error, or Ctrl-C, leaves `path` as it was and no temporary file behind).

    Example: write_with(Path("out.csv"), lambda tmp: tmp.write_text("a,b\\n")) writes .out.csv.tmp-<pid>,
    then renames it to out.csv.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_atomically = write_with  # the earlier private name


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    _atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: object) -> None:
    """Write JSON (indented) atomically."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_table(path: Path, table: pa.Table, compression: str = "zstd") -> None:
    """Write a Parquet file atomically."""
    _atomically(path, lambda tmp: pq.write_table(table, tmp, compression=compression))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files and checkpoint folders a killed process left in a run folder; returns them."""
    import shutil

    stale = [p for p in Path(folder).glob(".*") if ".tmp" in p.name]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale
