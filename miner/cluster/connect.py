"""Connecting to Ray: a private local cluster by default, or an existing cluster.

An existing cluster is used when `--address` is given, or when this process runs as a Ray job's
entrypoint (the job supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR and points RAY_ADDRESS at the cluster), so
`miner run` submitted with `miner submit` mines on the cluster's nodes rather than starting a cluster of its own
inside the job. RAY_ADDRESS alone is ignored: users often export it as the dashboard URL for `ray job`.
"""

from __future__ import annotations

import logging
import os

from miner.errors import MinerError, first_line

log = logging.getLogger(__name__)


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: the explicit address, else the job's cluster inside a Ray job, else None (local)."""
    if address:
        return address
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return os.environ.get("RAY_ADDRESS") or "auto"
    return None


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Initialise Ray once per process; returns True when joined to an existing cluster.

    A local cluster gets `num_cpus` logical CPUs (default: the machine's) and no dashboard; `address="local"`
    keeps it from attaching to another cluster that happens to run on the machine.
    """
    import ray

    target = cluster_address(address)
    if target and target.startswith(("http://", "https://")):
        raise MinerError(f"--address {target}: that is a dashboard (Ray Jobs) address; use `miner submit` with it, "
                         "or give the cluster's GCS address HOST:6379 here")
    if ray.is_initialized():
        return target is not None
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": logging.ERROR, "log_to_driver": False}
    if target:
        kwargs["address"] = target
    else:
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--address {target}" if address else f"RAY_ADDRESS {target} (inside a Ray job)"
        raise MinerError(f"{where}: cannot connect to Ray ({first_line(exc)})") from None
    if target:
        log.info("joined Ray cluster at %s (%d node(s))", target, len([n for n in ray.nodes() if n["Alive"]]))
    return target is not None
