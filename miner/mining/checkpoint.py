"""Mining checkpoints: the lanes' queues (one file set per lane, written by the actors, see miner.mining.lanes),
the units' moment sums and the block loop's state (JSON), in one folder swapped in atomically."""

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
class LaneFiles:
    """Which lane file sets (miner.mining.lanes.save_lane) hold the queues of a checkpoint's blocks."""

    count: int
    """Lanes of the session that wrote them (block k was mined by lane k mod count)."""
    files: dict[int, list[str]]
    """Lane -> file sets (paths without suffix) whose merge is that lane's queues; every block below the
    checkpoint's next_block is in exactly one of them."""
    seq: dict[int, int]
    """Lane -> the sequence number of its next task."""


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
    lanes: LaneFiles | None = None
    """The lanes' queue files of the checkpoint this state was read from (None: fresh)."""
    hardware: dict | None = None
    """The identity (miner.mining.hardware) of the workers that mined these blocks (None: not recorded)."""
    block_size: int | None = None
    """The block size the blocks were cut with (None: a checkpoint from before it was recorded)."""

    @staticmethod
    def fresh(n_units: int, top_n: int, directions: tuple[str, ...]) -> MiningState:
        """The state before the first block: empty queues, zero counters, empty moment sums."""
        return MiningState({d: TopNQueues(n_units, top_n) for d in directions}, 0, [], dict.fromkeys(COUNTERS, 0),
                           moments=MomentSums.empty(n_units))


def checkpoint_folder(run: RunFolder, cut: int) -> Path:
    """A fresh folder for the checkpoint after block `cut` - 1: the lanes write their files into it, then
    `save_checkpoint` adds the state and swaps it in."""
    tmp = run.path / f".checkpoint.tmp-{os.getpid()}-{cut}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def save_checkpoint(run: RunFolder, state: MiningState, fingerprint: str, tmp: Path,
                    lanes: LaneFiles | None = None) -> None:
    """Write the state into `tmp` (from `checkpoint_folder`, holding the lanes' files), then swap it in for
    RUN/checkpoint (the previous one stays until then)."""
    try:
        _write_checkpoint(tmp, state, fingerprint, lanes)
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


def _write_checkpoint(tmp: Path, state: MiningState, fingerprint: str, lanes: LaneFiles | None) -> None:
    if state.moments is not None:
        np.savez(tmp / "moments.npz", **state.moments.state())  # type: ignore[arg-type]
    atomic.write_json(tmp / "state.json", {
        "fingerprint": fingerprint, "next_block": state.next_block, "convergence": state.convergence,
        "counters": state.counters, "calm_blocks": state.calm_blocks, "stopped_early": state.stopped_early,
        "skipped_shards": state.skipped_shards, "hardware": state.hardware, "block_size": state.block_size,
        "lanes": None if lanes is None else {"count": lanes.count, "files": {str(k): v for k, v in lanes.files.items()},
                                             "seq": {str(k): v for k, v in lanes.seq.items()}},
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
            lanes = _lane_files(folder, meta)
            current = folder / "moments.npz"
            with np.load(current) as z:
                moments = MomentSums.from_state(dict(z))
            current = state_path
            return MiningState({}, meta["next_block"], meta["convergence"], meta["counters"],
                               meta.get("calm_blocks", 0), meta.get("stopped_early", False),
                               meta.get("skipped_shards", {}), moments, lanes, meta.get("hardware"),
                               meta.get("block_size"))
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{current}: damaged checkpoint ({first_line(exc)}); delete {folder} to mine this "
                             "run from the start") from None
    return None


def _lane_files(folder: Path, meta: dict) -> LaneFiles:
    """The lane files of a checkpoint, as absolute paths. A checkpoint written before lanes existed holds the
    merged queues (queues-<direction>.npz): they become one lane file set (lane-legacy) in the same folder."""
    from miner.mining.lanes import save_lane

    info = meta.get("lanes")
    if info is not None:
        return LaneFiles(int(info["count"]), {int(k): [str(folder / f) for f in v] for k, v in info["files"].items()},
                         {int(k): int(v) for k, v in info["seq"].items()})
    parts = []
    for d in DIRECTIONS:
        path = folder / f"queues-{d}.npz"
        if path.exists():
            with np.load(path) as z:
                parts.append(TopNQueues.from_state(dict(z)).state())
    if parts:
        legacy = folder / "lane-legacy"
        if not Path(f"{legacy}.json").exists():
            save_lane(legacy, {k: np.concatenate([p[k] for p in parts]) for k in ("keys", "payload")},
                      {"lane": 0, "seq": 0})
        return LaneFiles(1, {0: [str(legacy)]}, {0: 0})
    return LaneFiles(1, {}, {0: 0})
