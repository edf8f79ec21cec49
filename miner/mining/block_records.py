"""The records of one mined block: what it cost (`BlockStats`), its batches ready for the forward passes
(`PreparedBlock`) and what it found (`BlockResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from miner.mining.batches import Batch
from miner.mining.moments import MomentSums


@dataclass
class BlockStats:
    """What one block cost and contained."""

    sentences: int = 0
    real_tokens: int = 0
    """Tokens that count for scores (special tokens and padding excluded)."""
    attended_tokens: int = 0
    """Tokens the model attends to (real + special tokens); padding efficiency = attended / computed."""
    computed_tokens: int = 0
    truncated: int = 0
    batches: int = 0
    kernel_batches: int = 0
    """Batches whose scores and peaks came from the compiled kernel (`miner.mining.native`); the others from torch."""
    seconds: float = 0.0
    forward_seconds: float = 0.0
    """The forward passes: GPU time (CUDA events) in the sync-free loop on CUDA, else wall time."""
    tokenize_seconds: float = 0.0
    merge_seconds: float = 0.0
    moments_seconds: float = 0.0
    """Of `seconds`: accumulating the moment sums (on a GPU outside the sync-free loop, only the time to queue
    the operations)."""
    sample_seconds: float = 0.0
    """Of `seconds`: gathering the sample sentences' scores."""
    scores_seconds: float = 0.0
    """Computing the scores from the activations (with the compiled kernel: its peaks too)."""
    window_seconds: float = 0.0
    """Candidates: keys, peaks and the window writes (in the exact loop: the window's top-k passes too)."""
    flush_seconds: float = 0.0
    """The window's top-k passes in the sync-free loop (in the exact loop they are part of `window_seconds`).
    Stage times are GPU times (CUDA events read once per block) in the sync-free loop on CUDA, else wall times."""
    sync_free_batches: int = 0
    """Batches mined by the sync-free loop (0 for a block it mined again with the exact loop, see `BlockMiner`)."""


@dataclass
class PreparedBlock:
    """A block tokenised and cut into batches, ready for the forward passes (`BlockMiner.prepare`)."""

    ids: np.ndarray
    """int64 [n] the block's sentence ids."""
    batches: list[Batch]
    truncated: int
    """Sentences cut to max_length."""
    seconds: float
    """Time spent tokenising and building the batches."""


@dataclass
class BlockResult:
    """A block's queue candidates per direction (numpy arrays: flat and unit-major, or dense rows, see
    `Candidates`), its stats, the moment sums of its scores and the scores of its sampled sentences."""

    block: int
    directions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    stats: BlockStats = field(default_factory=BlockStats)
    moments: MomentSums | None = None
    """Sums of every unit's scores over the block's sentences (see `miner.mining.moments`)."""
    sample: np.ndarray | None = None
    """float32 [k, U]: the scores of the requested sample sentences, in request order (None: none requested)."""
