"""Per-unit moments of the sentence scores over everything mined: float64 running sums, merged block by block,
and the scores' histogram (`miner.mining.sketch`: exact counts in fixed bins).

A worker accumulates one block's sums (`MomentSums.of_batch` per batch, `add`), the driver adds the blocks in
block order, so the sums are the same for any number of workers and after a resume (they are checkpointed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from miner.mining.sketch import BINS, histogram

_FIELDS = ("count", "total", "squares", "low", "high", "positive")


@dataclass
class MomentSums:
    """Running sums of each unit's scores (one entry per unit, float64 sums of the float32 scores)."""

    count: int
    """Sentences added (the same for every unit)."""
    total: np.ndarray
    """float64 [U]: sum of the scores."""
    squares: np.ndarray
    """float64 [U]: sum of the squared scores."""
    low: np.ndarray
    """float64 [U]: smallest score (+inf before the first sentence)."""
    high: np.ndarray
    """float64 [U]: largest score (-inf before the first sentence)."""
    positive: np.ndarray
    """int64 [U]: sentences whose score is > 0."""
    hist: np.ndarray | None = None
    """int64 (int32 from a worker) [U, sketch.BINS]: sentences per score bin; None where a run's sums began
    before mining kept histograms (a checkpoint of an older version): its histogram stays unknown."""

    @staticmethod
    def empty(n_units: int) -> MomentSums:
        """The sums of no sentence."""
        return MomentSums(0, np.zeros(n_units), np.zeros(n_units), np.full(n_units, np.inf),
                          np.full(n_units, -np.inf), np.zeros(n_units, np.int64), np.zeros((n_units, BINS), np.int64))

    @staticmethod
    def of_scores(scores: np.ndarray) -> MomentSums:
        """The sums of a [sentences, units] score matrix.

        >>> m = MomentSums.of_scores(np.array([[1.0, -2.0], [3.0, 0.0]], np.float32))
        >>> m.count, m.total.tolist(), m.squares.tolist(), m.low.tolist(), m.high.tolist(), m.positive.tolist()
        (2, [4.0, -2.0], [10.0, 4.0], [1.0, -2.0], [3.0, 0.0], [2, 0])
        """
        x = np.asarray(scores, np.float64)
        if len(x) == 0:
            return MomentSums.empty(x.shape[1])
        return MomentSums(len(x), x.sum(0), (x * x).sum(0), x.min(0), x.max(0), (x > 0).sum(0).astype(np.int64),
                          histogram(np.asarray(scores, np.float32)))

    def add(self, other: MomentSums) -> None:
        """Add another set of sentences' sums in place (the order of additions fixes the float64 result).

        >>> m = MomentSums.of_scores(np.array([[1.0]])); m.add(MomentSums.of_scores(np.array([[-1.0], [5.0]])))
        >>> m.count, m.total.tolist(), m.low.tolist(), m.high.tolist(), m.positive.tolist()
        (3, [5.0], [-1.0], [5.0], [2])
        """
        self.count += other.count
        self.total = self.total + other.total
        self.squares = self.squares + other.squares
        self.low = np.minimum(self.low, other.low)  # a NaN score makes the unit's min and max NaN (as torch's)
        self.high = np.maximum(self.high, other.high)
        self.positive = self.positive + other.positive
        # integer counts: the same sum in any order; unknown once either side is
        if self.hist is not None and other.hist is not None:
            self.hist = self.hist.astype(np.int64) + other.hist.astype(np.int64)
        else:
            self.hist = None

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for a checkpoint (npz); `from_state` restores them bit for bit."""
        out = {f: np.asarray(getattr(self, f)) for f in _FIELDS}
        if self.hist is not None:
            out["hist"] = np.asarray(self.hist, np.int64)
        return out

    @staticmethod
    def from_state(arrays: dict[str, np.ndarray]) -> MomentSums:
        hist = np.asarray(arrays["hist"], np.int64) if "hist" in arrays else None
        total, squares, low, high, positive = (np.asarray(arrays[f]) for f in _FIELDS[1:])
        return MomentSums(int(arrays["count"]), total, squares, low, high, positive, hist)

    def table(self) -> pa.Table:
        """The `unit_moments` table: unit_id, sentences, mean, std (population), min, max, positive_share.

        With no sentence mined, every statistic is NaN (sentences 0).

        >>> t = MomentSums.of_scores(np.array([[1.0, -2.0], [3.0, 0.0]])).table()
        >>> t["mean"].to_pylist(), t["std"].to_pylist(), t["positive_share"].to_pylist()
        ([2.0, -1.0], [1.0, 1.0], [1.0, 0.0])
        """
        n = self.count
        u = len(self.total)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.total / n if n else np.full(u, np.nan)
            # population variance from the sums, clamped at 0 against rounding (float64 sums of float32 scores)
            var = np.maximum(self.squares / n - mean * mean, 0.0) if n else np.full(u, np.nan)
            share = self.positive / n if n else np.full(u, np.nan)
        nan = np.full(u, np.nan)
        return pa.table({
            "unit_id": pa.array(np.arange(u, dtype=np.int32)),
            "sentences": pa.array(np.full(u, n, np.int64)),
            "mean": pa.array(mean, pa.float64()),
            "std": pa.array(np.sqrt(var), pa.float64()),
            "min": pa.array(self.low if n else nan, pa.float64()),
            "max": pa.array(self.high if n else nan, pa.float64()),
            "positive_share": pa.array(share, pa.float64())})
