"""The committed job schema is generated from JobSpec; the shipped job files validate."""

from pathlib import Path

import pytest

from miner.config import load_job
from miner.config_export import SCHEMA_PATH, job_schema_text
from miner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_schema_file_matches_model() -> None:
    assert SCHEMA_PATH.read_text() == job_schema_text(), "schemas/job.schema.json drifted: run `make schema`"


@pytest.mark.parametrize("name", ["demo.yaml", "demo-random.yaml", "bert-base.yaml"])
def test_shipped_jobs_validate(name: str) -> None:
    job, base = load_job(ROOT / "jobs" / name)
    assert base == ROOT / "jobs" and job.top_n > 0


def test_unknown_key_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("name: x\nmodel: minilm\ncorpus: c\nlayerz: [1]\n")
    with pytest.raises(ConfigError, match="layerz"):
        load_job(path)
