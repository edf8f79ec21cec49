"""The CLI's error contract for argument errors and its log levels."""

from __future__ import annotations

import subprocess
import sys

import pytest

from miner.cli import main


@pytest.mark.parametrize(("argv", "expected"), [
    (["corpus", "prepare", "a.txt"], "miner: error: corpus prepare: the following arguments are required: --out"),
    (["mine", "job.yaml", "--workers", "two"], "miner: error: mine: argument --workers: invalid int value: 'two'"),
    (["sql"], "miner: error: sql: the following arguments are required: run, query"),
    (["frobnicate"], "miner: error: argument command: invalid choice: 'frobnicate'"),
    ([], "miner: error: the following arguments are required: command"),
    (["jobs", "logs"], "miner: error: jobs logs: the following arguments are required: submission_id"),
    (["sql", "RUN", "SELECT 1", "--format", "xml"], "miner: error: sql: argument --format: invalid choice: 'xml'"),
])
def test_argument_errors_are_one_line(argv: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), captured.err
    assert "usage:" not in captured.err


def test_help_still_prints_usage(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["sql", "--help"])
    assert stop.value.code == 0 and "usage: miner sql" in capsys.readouterr().out


def test_verbose_keeps_third_party_loggers_at_info() -> None:
    """-v: miner's own loggers at DEBUG, matplotlib's (whose font manager floods job logs) at INFO; -vv: all."""
    probe = ("import logging, sys; from miner.cli import main; main(sys.argv[1:] + ['corpus', 'info', '/nonexistent']); "
             "print(logging.getLogger('miner.mining.driver').getEffectiveLevel(), "
             "logging.getLogger('matplotlib.font_manager').getEffectiveLevel())")
    levels = {}
    for flags in ([], ["-v"], ["-vv"]):
        out = subprocess.run([sys.executable, "-c", probe, *flags], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        levels[len(flags and flags[0]) - 1 if flags else 0] = tuple(int(x) for x in out.stdout.split())
    assert levels == {0: (20, 20), 1: (10, 20), 2: (10, 10)}
