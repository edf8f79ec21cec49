"""The one way a benchmark hands back its figures: JSON on stdout and, with --out, the same JSON in a file.

The file is checked like every --out of neuron-miner (never inside a run or corpus folder; an existing file is
replaced only with --force) before the benchmark runs, and written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from miner import atomic
from miner.errors import MinerError
from miner.outputs import check_output_file


def add_out_options(parser: argparse.ArgumentParser) -> None:
    """--out FILE.json and --force, declared once for every benchmark."""
    parser.add_argument("--out", type=Path, help="also write the JSON here (never inside a run or corpus folder)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")


def check_out(ns: argparse.Namespace) -> None:
    """Refuse a bad --out before any work: one `error:` line and exit status 2."""
    if ns.out is not None:
        try:
            check_output_file(ns.out, ns.force)
        except MinerError as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.exit(2)


def emit(report: dict, ns: argparse.Namespace) -> None:
    """Print the report as indented JSON, and write it to --out (atomically) when given."""
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if ns.out is not None:
        atomic.write_text(ns.out, text + "\n")
