"""Fanning work out over chunks: in this process, or as Ray tasks reading one shared copy of the common data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from miner.cluster.connect import connect

C = TypeVar("C")
R = TypeVar("R")

EXECUTORS = ("inline", "ray")


def cluster_cpus(address: str | None = None) -> int:
    """Join Ray (see :func:`miner.cluster.connect.connect`) and return its logical CPUs: the default fan-out."""
    import ray

    connect(address)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def map_chunks(fn: Callable[..., R], chunks: Sequence[C], shared: Sequence[Any] = (), *, executor: str = "inline",
               address: str | None = None) -> list[R]:
    """``[fn(chunk, *shared) for chunk in chunks]``, in chunk order, inline or as one Ray task per chunk.

    With ``executor="ray"`` and more than one chunk, Ray is joined (``address`` as for ``connect``), each
    object of ``shared`` is put in the object store once and every task reads that one copy; a single chunk
    runs in this process (shipping it would gain nothing). ``fn`` must be a module-level function: Ray
    pickles it by name. Arrays a task receives from the object store are read-only.

    >>> map_chunks(pow, [1, 2, 3], shared=(2,))
    [1, 4, 9]
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    chunks = list(chunks)
    if executor == "inline" or len(chunks) <= 1:
        return [fn(chunk, *shared) for chunk in chunks]
    import ray

    connect(address)
    refs = [ray.put(obj) for obj in shared]
    task = ray.remote(fn)
    return ray.get([task.remote(chunk, *refs) for chunk in chunks])
