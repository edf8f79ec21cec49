"""`python -m miner.cli ...`: the command line (Ray jobs run it this way)."""

import sys

from miner.cli.main import main

sys.exit(main())
