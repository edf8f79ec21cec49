"""The `miner` command line. Options come from the pydantic models in miner.config (declared once).

User errors print one line, `miner: error: ...`, and exit with status 2. `python -m miner.cli` runs it too
(the entry point of Ray jobs).
"""

from miner.cli.main import main
from miner.cli.options import REPORT_FORMATS
from miner.cli.parser import build_parser

__all__ = ["REPORT_FORMATS", "build_parser", "main"]
