"""Submitting jobs to a Ray cluster through the Ray Jobs API, and following them.

`miner submit JOB.yaml --address http://HEAD:8265` validates the job here, writes a copy whose relative
paths are made absolute (corpus, model folder, output, fastText model), and submits `sh miner-entrypoint.sh -v
run job.yaml` with a runtime environment that ships the `miner` package, that job file and the entry point
script (caches, virtual environments and run outputs are excluded). The script (miner/cluster/entrypoint.sh) runs
`miner run` under the Python of the cluster's Ray workers, not whatever `python` the head node's PATH finds,
and fails with one line if that Python lacks a dependency. The cluster needs the project's dependencies installed (the
container in deploy/container, or `make venv` on each VM) and the corpus, the model folder and the output
folder on storage mounted at the same path on every node that reads them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

import miner
from miner.config import load_job, resolve_job_paths
from miner.errors import ConfigError, MinerError, first_line

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

# What never travels with a submission (matched by Ray's .gitignore-style runtime_env excludes).
EXCLUDES = ["__pycache__/", "*.pyc", "*.egg-info/", ".venv/", "runs/", "data/", "cache/", ".git/"]
METADATA_KEY = "neuron_miner_job"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
ENTRYPOINT_SCRIPT = "entrypoint.sh"  # beside this module
ENTRYPOINT = "miner-entrypoint.sh"  # its name in the job's working directory


@dataclass(frozen=True)
class JobRecord:
    """One submitted job as the cluster reports it.

    submission_id: the Ray Jobs id (`miner-<name>-<utc timestamp>` unless given);
    name: the neuron-miner job name (empty for jobs not submitted by miner);
    status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED;
    output: the run folder the job writes (absolute, on the cluster's storage);
    entrypoint: the command the cluster runs; message: Ray's status message;
    start_time / end_time: UTC ISO timestamps (end empty while running).
    """

    submission_id: str
    name: str
    status: str
    output: str
    entrypoint: str
    message: str
    start_time: str
    end_time: str


def _client(address: str | None) -> JobSubmissionClient:
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_DASHBOARD_ADDRESS")
    if not address:
        raise ConfigError("--address: give the cluster's dashboard address, e.g. http://HEAD:8265 "
                          "(or set RAY_API_SERVER_ADDRESS)")
    if not re.match(r"^https?://", address):
        address = f"http://{address}"
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, AuthenticationError...
        raise MinerError(f"--address {address}: {_ray_message(exc)}") from None


def _ray_message(exc: BaseException) -> str:
    text = str(exc).strip()
    first = first_line(exc)
    if "authentication" in text.lower() or "unauthorized" in text.lower():
        return (f"{first} — the cluster uses token authentication: set RAY_AUTH_MODE=token and provide the "
                "cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    if "failed to connect" in text.lower() or "connection" in text.lower():
        return f"cannot reach the Ray dashboard ({first})"
    return first


def submit_job(job_path: Path, address: str | None, submission_id: str | None = None,
               entrypoint_num_cpus: float = 0.0, extra_pip: list[str] | None = None) -> str:
    """Validate and submit a job file; returns the submission id."""
    job, base = load_job(job_path)
    resolved = resolve_job_paths(job, base, Path.cwd())
    sid = submission_id or f"miner-{job.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", sid):
        raise ConfigError(f"--submission-id '{sid}': use letters, digits, '_', '.', '-'")
    client = _client(address)
    package = Path(miner.__file__).resolve().parent
    staging = Path(tempfile.mkdtemp(prefix="miner-submit-"))
    try:
        (staging / "job.yaml").write_text(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
        shutil.copyfile(Path(__file__).with_name(ENTRYPOINT_SCRIPT), staging / ENTRYPOINT)
        runtime_env: dict = {"working_dir": str(staging), "py_modules": [str(package)], "excludes": EXCLUDES,
                             "env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}}
        if extra_pip:
            runtime_env["pip"] = list(extra_pip)
        try:
            return client.submit_job(
                entrypoint=f"sh {ENTRYPOINT} -v run job.yaml", submission_id=sid, runtime_env=runtime_env,
                metadata={METADATA_KEY: job.name, "output": str(resolved.output), "job_file": str(job_path.resolve())},
                entrypoint_num_cpus=entrypoint_num_cpus,
            )
        except Exception as exc:  # noqa: BLE001 - see _client
            raise MinerError(f"submitting {job_path}: {_ray_message(exc)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""


def _record(info: JobDetails) -> JobRecord:
    meta = info.metadata or {}
    return JobRecord(submission_id=info.submission_id or info.job_id or "", name=meta.get(METADATA_KEY, ""),
                     status=str(getattr(info.status, "value", info.status)), output=meta.get("output", ""),
                     entrypoint=info.entrypoint or "", message=(info.message or "").strip(),
                     start_time=_iso(info.start_time), end_time=_iso(info.end_time))


def list_jobs(address: str | None, include_all: bool = False) -> list[JobRecord]:
    """Submitted jobs, newest first (only neuron-miner's unless include_all)."""
    client = _client(address)
    try:
        infos = client.list_jobs()
    except Exception as exc:  # noqa: BLE001 - see _client
        raise MinerError(f"listing jobs: {_ray_message(exc)}") from None
    records = [_record(i) for i in infos if i.submission_id and (include_all or METADATA_KEY in (i.metadata or {}))]
    return sorted(records, key=lambda r: r.start_time, reverse=True)


def job_status(address: str | None, submission_id: str, client: JobSubmissionClient | None = None) -> JobRecord:
    """One job's record; an unknown id is a clear error."""
    client = client or _client(address)
    try:
        return _record(client.get_job_info(submission_id))
    except Exception as exc:  # noqa: BLE001 - see _client
        if "does not exist" in str(exc) or "404" in str(exc):
            raise MinerError(f"job '{submission_id}': no such job on the cluster (see `miner jobs list`)") from None
        raise MinerError(f"job '{submission_id}': {_ray_message(exc)}") from None


def _logs(client: JobSubmissionClient, submission_id: str) -> str:
    try:
        return client.get_job_logs(submission_id)
    except Exception as exc:  # noqa: BLE001 - RuntimeError on HTTP errors, requests' errors on connection loss
        raise MinerError(f"job '{submission_id}': cannot read its log ({_ray_message(exc)})") from None


def job_logs(address: str | None, submission_id: str) -> str:
    """The job driver's log so far."""
    client = _client(address)
    job_status(address, submission_id, client)
    return _logs(client, submission_id)


def follow_logs(address: str | None, submission_id: str, poll_seconds: float = 1.0) -> Iterator[str]:
    """Yield new log text until the job ends (polling; works through any HTTP proxy)."""
    client = _client(address)
    seen = 0
    while True:
        status = job_status(address, submission_id, client).status
        text = _logs(client, submission_id)
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        if status in TERMINAL:
            return
        time.sleep(poll_seconds)


def stop_job(address: str | None, submission_id: str) -> bool:
    """Ask the cluster to stop a job; returns False when it had already finished."""
    client = _client(address)
    job_status(address, submission_id, client)
    try:
        return bool(client.stop_job(submission_id))
    except Exception as exc:  # noqa: BLE001 - see _client
        raise MinerError(f"job '{submission_id}': {_ray_message(exc)}") from None

