"""Entry point of the `miner` console script: logging, and the error contract (one `miner: error:` line, one exit
status per kind of failure: 2 input, 1 environment, 130 interrupted)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from miner.cli.parser import build_parser
from miner.errors import MinerError, first_line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `miner` console script."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    # INFO by default; -v: DEBUG for miner's own loggers, third-party ones (matplotlib, Ray, urllib3) stay at
    # INFO; -vv: DEBUG everywhere.
    logging.basicConfig(level=logging.DEBUG if ns.verbose >= 2 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("miner").setLevel(logging.DEBUG if ns.verbose >= 1 else logging.INFO)
    try:
        return int(ns.func(ns) or 0)
    except MinerError as exc:
        print(f"miner: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, a vanished mount: one line, earlier results are kept
        where = f"{exc.filename}: " if exc.filename else ""
        reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"miner: error: {where}{reason} (completed work is kept; fix this and re-run to resume)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("miner: interrupted; completed work is kept (re-run to resume)", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_damaged_input(exc):
            raise
        print(f"miner: error: {first_line(exc)} (a damaged or unreadable input file; restore it and re-run)",
              file=sys.stderr)
        return 2


def _is_damaged_input(exc: BaseException) -> bool:
    """A reader library's error about a file's content that no stage turned into a MinerError (a safety net:
    the stages name the file and what to do; this keeps the one-line contract for any they miss)."""
    import json
    import zipfile

    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, (json.JSONDecodeError, zipfile.BadZipFile, EOFError)) or module in {
        "pyarrow", "duckdb", "_duckdb", "safetensors"}

