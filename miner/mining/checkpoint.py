"""Mining checkpoints: the merged queues (one npz per direction) and the block loop's state (JSON)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from miner import atomic
from miner.errors import InputError, first_line
from miner.mining.moments import MomentSums
from miner.mining.topn import TopNQueues
from miner.run.folder import RunFolder

COUNTERS = ("sentences", "real_tokens", "attended_tokens", "computed_tokens", "truncated", "forward_seconds",
            "worker_seconds")
"""The counters a fresh run starts with (others, such as batches, appear when first counted)."""
DIRECTIONS = ("top", "bottom")


@dataclass
class MiningState:
    """What a checkpoint holds: merged queues after blocks [0, next_block), convergence, counters and the units'
    moment sums (the sample's rows are in RUN/sample/, one shard per merged block)."""

    queues: dict[str, TopNQueues]
    next_block: int
    convergence: list[dict]
    counters: dict[str, float]
    calm_blocks: int = 0
    stopped_early: bool = False
    skipped_shards: dict[str, str] = field(default_factory=dict)
    """Corrupt shards skipped (file -> reason); their blocks contribute nothing."""
    moments: MomentSums | None = None
    """Sums of every unit's scores over the merged blocks (None only in a state built by hand)."""

    @staticmethod
    def fresh(n_units: int, top_n: int, directions: tuple[str, ...]) -> MiningState:
        """The state before the first block: empty queues, zero counters, empty moment sums."""
        return MiningState({d: TopNQueues(n_units, top_n) for d in directions}, 0, [], dict.fromkeys(COUNTERS, 0),
                           moments=MomentSums.empty(n_units))


def save_checkpoint(run: RunFolder, state: MiningState, fingerprint: str) -> None:
    """Write the state into a fresh folder, then swap it in for RUN/checkpoint (the previous one stays until then)."""
    tmp = run.path / f".checkpoint.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_checkpoint(tmp, state, fingerprint)
    except OSError as exc:  # e.g. disk full: the previous checkpoint stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise atomic.write_error(run.checkpoint, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(run.checkpoint_old, ignore_errors=True)
    if run.checkpoint.exists():
        run.checkpoint.rename(run.checkpoint_old)
    tmp.rename(run.checkpoint)
    shutil.rmtree(run.checkpoint_old, ignore_errors=True)


def _write_checkpoint(tmp: Path, state: MiningState, fingerprint: str) -> None:
    for d, q in state.queues.items():
        np.savez(tmp / f"queues-{d}.npz", **q.state())  # type: ignore[arg-type]  # numpy's stub: keyword arrays
    if state.moments is not None:
        np.savez(tmp / "moments.npz", **state.moments.state())  # type: ignore[arg-type]
    atomic.write_json(tmp / "state.json", {
        "fingerprint": fingerprint, "next_block": state.next_block, "convergence": state.convergence,
        "counters": state.counters, "calm_blocks": state.calm_blocks, "stopped_early": state.stopped_early,
        "skipped_shards": state.skipped_shards,
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
    })


def load_checkpoint(run: RunFolder, fingerprint: str) -> MiningState | None:
    """The saved state of this job, or None; a damaged checkpoint is one InputError naming the file."""
    for folder in (run.checkpoint, run.checkpoint_old):
        state_path = folder / "state.json"
        if not state_path.exists():
            continue
        current = state_path
        try:
            meta = json.loads(state_path.read_text())
            if meta.get("fingerprint") != fingerprint:
                return None
            queues = {}
            for d in DIRECTIONS:
                current = folder / f"queues-{d}.npz"
                if current.exists():
                    with np.load(current) as z:
                        queues[d] = TopNQueues.from_state(dict(z))
            current = folder / "moments.npz"
            with np.load(current) as z:
                moments = MomentSums.from_state(dict(z))
            current = state_path
            return MiningState(queues, meta["next_block"], meta["convergence"], meta["counters"],
                               meta.get("calm_blocks", 0), meta.get("stopped_early", False),
                               meta.get("skipped_shards", {}), moments)
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{current}: damaged checkpoint ({first_line(exc)}); delete {folder} to mine this "
                             "run from the start") from None
    return None
