"""The job entry point `miner submit` ships (miner/cluster/entrypoint.sh): which Python it picks, and its one-line failure."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import miner

SCRIPT = Path(miner.__file__).parent / "cluster" / "entrypoint.sh"
BIN = Path(sys.executable).parent


def _bare_path() -> str:
    """PATH without this test's virtualenv (as on a head node where it is not activated)."""
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN)


@pytest.fixture(scope="module")
def empty_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bin folder whose python3 has none of the project's packages."""
    folder = tmp_path_factory.mktemp("empty-venv")
    venv.create(folder, with_pip=False, symlinks=True)
    return folder / "bin"


def test_runs_under_the_python_named_by_a_raylet_ancestor(empty_python: Path) -> None:
    """An ancestor with --python_worker_command (the raylet) decides, even if PATH has another python3."""
    parent = ("import subprocess, sys; sys.exit(subprocess.call(['sh', sys.argv[1], '--help']))")
    env = {**os.environ, "PATH": f"{empty_python}{os.pathsep}{_bare_path()}"}
    proc = subprocess.run([sys.executable, "-c", parent, str(SCRIPT),
                           f"--python_worker_command={sys.executable} /x/default_worker.py --flag"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: miner" in proc.stdout


def test_a_python_without_the_dependencies_fails_in_one_line(empty_python: Path) -> None:
    env = {**os.environ, "PATH": f"{empty_python}{os.pathsep}{_bare_path()}"}
    proc = subprocess.run(["sh", str(SCRIPT), "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("miner: error: "), proc.stderr
    assert str(empty_python / "python3") in lines[0] and "duckdb" in lines[0] and "miner" in lines[0]
