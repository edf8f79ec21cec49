"""Where commands that read may write their results: never into a run or corpus folder, never over a file
unless asked.

`miner sql --out`, `miner report --out`, `miner compare --out` and `miner concepts --out` write results of
reading a run. Their targets pass through here first: a path inside a run folder (a folder whose
manifest.json is a run manifest, or a checkpoint) or a corpus folder (manifest.json listing shards) is
refused, so a query can never replace `RUN/units.parquet`; an existing file is replaced only with `force`.
The writes themselves go through miner.atomic (temporary name, then rename).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from miner.errors import OutputConflictError


def data_folder_kind(folder: Path) -> str | None:
    """'run' or 'corpus' if `folder` is a neuron-miner run or prepared corpus, else None.

    A run folder has a manifest.json with the job (any status), a checkpoint folder or top_sentences.parquet;
    a corpus folder has a manifest.json that lists shards. An unreadable manifest.json counts as the folder's own data.
    """
    manifest = folder / "manifest.json"
    if (folder / "checkpoint").is_dir() or (folder / "top_sentences.parquet").is_file():
        return "run"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "run or corpus"
    if not isinstance(data, dict):
        return None
    if "job" in data:  # a run manifest, any status (a corpus manifest has a fingerprint too, but no job)
        return "run"
    if "shards" in data:
        return "corpus"
    return None


def enclosing_data_folder(path: Path) -> tuple[str, Path] | None:
    """(kind, folder) of the run or corpus folder that `path` lies in (the path itself included), else None.

    Symlinks are resolved, so a link pointing into a run folder is caught as well.
    """
    target = Path(path).expanduser().resolve()
    for folder in (target, *target.parents):
        if folder.is_dir():
            kind = data_folder_kind(folder)
            if kind is not None:
                return kind, folder
    return None


def check_output_file(path: Path, force: bool = False) -> Path:
    """Refuse `path` as an output file if it lies in a run or corpus folder, is a folder, or exists (unless
    `force`); returns it. The parent folder must exist.

    Example: check_output_file(Path("runs/demo/units.parquet")) -> OutputConflictError("runs/demo/units.parquet:
    inside the run folder runs/demo; results are never written into a run or corpus folder ...")
    """
    path = Path(path)
    _refuse_data_folder(path)
    if path.is_dir():
        raise OutputConflictError(f"{path}: is a folder; give a file name for --out")
    if path.exists() and not force:
        raise OutputConflictError(f"{path}: exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise OutputConflictError(f"{path.parent}: no such folder for --out")
    return path


def check_output_folder(folder: Path, names: Iterable[str] = (), force: bool = False) -> Path:
    """Refuse `folder` as an output folder if it lies in a run or corpus folder, is a file, or already holds
    one of `names` (unless `force`); returns it (it may not exist yet).
    """
    folder = Path(folder)
    _refuse_data_folder(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputConflictError(f"{folder}: is a file, not a folder")
    if not force:
        existing = sorted(n for n in set(names) if (folder / n).exists())
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise OutputConflictError(f"{folder / existing[0]}: exists{more}; pass --force to replace")
    return folder


def _refuse_data_folder(path: Path) -> None:
    found = enclosing_data_folder(path)
    if found is not None:
        kind, folder = found
        raise OutputConflictError(f"{path}: inside the {kind} folder {folder}; results are never written into a "
                                  "run or corpus folder (its data would be lost): choose a path outside it")
