"""The process tree under a pid, read from /proc (Linux): used to find a run's own Ray mining actors."""

from __future__ import annotations

from pathlib import Path


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    out: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            out[int(proc.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return out


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


def mining_actor_pids(root: int) -> list[int]:
    """Live mining actors (Ray titles them ray::MiningActorImpl) under `root`, never another run's."""
    from miner.mining.executors import MiningActorImpl

    title = MiningActorImpl.__name__.encode()
    pids = []
    for pid in descendants(root):
        try:
            if title in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return sorted(pids)
