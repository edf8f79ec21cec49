"""Generate schemas/job.schema.json from the JobSpec model (never edited by hand).

Run `python -m miner.config_export` (or `make schema`); a test fails when the committed file drifts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from miner.config import JobSpec

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "job.schema.json"


def job_schema_text() -> str:
    """The job file's JSON schema as committed (stable key order, trailing newline)."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/neuron-miner/neuron-miner/schemas/job.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(job_schema_text())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
