"""A block's per-unit sums (moments and the score histogram) and its sampled sentences' score rows, gathered
batch by batch on the scores' device."""

from __future__ import annotations

import numpy as np
import torch

from miner.mining import native
from miner.mining.moments import MomentSums
from miner.mining.sketch import BINS, score_bins_torch


class BatchSums:
    """A block's moment sums accumulated batch by batch on the scores' device (float64 sums of float32 scores)."""

    def __init__(self, n_units: int, device: torch.device, use_native: bool = False) -> None:
        self.count = 0
        self.native = use_native and device.type == "cpu"
        """Sum float32 CPU scores with the compiled pass (`native.batch_sums`)."""
        self.total = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.squares = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.low = torch.full((n_units,), float("inf"), dtype=torch.float32, device=device)  # exact in float32
        self.high = torch.full((n_units,), float("-inf"), dtype=torch.float32, device=device)
        self.positive = torch.zeros(n_units, dtype=torch.float64, device=device)  # counts: exact below 2**53
        # a block's counts fit int32: half the counter memory the compiled pass walks through
        hist_dtype = torch.int32 if self.native else torch.int64
        self.hist = torch.zeros(n_units * BINS, dtype=hist_dtype, device=device)
        """Sentences per (unit, score bin), unit-major (`miner.mining.sketch`)."""
        self._offsets = torch.arange(n_units, dtype=torch.int64, device=device) * BINS
        self._ones: dict[int, torch.Tensor] = {}
        self._one = torch.ones(1, dtype=hist_dtype, device=device)
        self.pending_bytes = 32 << 20
        """The compiled pass sums the batches held until their scores reach this many bytes (it then reads each
        unit's histogram once for all of them, see `native.batch_sums`)."""
        self._pending: list[torch.Tensor] = []
        self._pending_bytes = 0

    def drain(self) -> None:
        """Sum the batches held for the compiled pass."""
        if self._pending:
            native.batch_sums(self._pending, self.total, self.squares, self.low, self.high, self.positive, self.hist)
            self._pending, self._pending_bytes = [], 0

    def add(self, scores: torch.Tensor) -> None:
        """Add a batch of float32 [B, U] scores.

        The column sums are products with a row of ones (a column reduction over a row-major [B, U] tensor is
        several times slower than one matrix-vector product), min and max come from one pass (aminmax). On the
        CPU the compiled twin (`native.batch_sums`) does all of it, histogram included, in one pass.
        """
        if self.native and scores.dtype == torch.float32 and scores.is_contiguous():
            self.count += int(scores.shape[0])
            self._pending.append(scores)  # nothing writes to a batch's scores after they are summed
            self._pending_bytes += scores.numel() * 4
            if self._pending_bytes >= self.pending_bytes:
                self.drain()
            return
        self.drain()  # the sums stay in batch order
        x = scores.to(torch.float64)
        b = int(x.shape[0])
        ones = self._ones.get(b)
        if ones is None:  # made once per batch size (most batches of a block have the same)
            ones = self._ones[b] = torch.ones((1, b), dtype=torch.float64, device=x.device)
        self.count += b
        self.total += (ones @ x)[0]
        self.squares += (ones @ (x * x))[0]
        low, high = torch.aminmax(scores, dim=0)  # NaN propagates, as in MomentSums.add
        torch.minimum(self.low, low, out=self.low)
        torch.maximum(self.high, high, out=self.high)
        self.positive += (ones @ (x > 0).to(torch.float64))[0]  # a batch's counts (< 2**53) are exact in float64
        # integer adds: exact in any order (bincount would read the largest index back: a host sync on CUDA)
        cells = (score_bins_torch(scores) + self._offsets).view(-1)
        self.hist.index_add_(0, cells, self._one.expand(cells.numel()))

    def finite(self) -> bool:
        """Whether every score added was finite (one device read): float64 sums of finite float32 scores never
        overflow, and a NaN or infinite score makes its unit's sum NaN or infinite."""
        self.drain()
        return bool(torch.isfinite(self.total).all())

    def result(self) -> MomentSums:
        self.drain()
        return MomentSums(self.count, self.total.cpu().numpy(), self.squares.cpu().numpy(),
                          self.low.cpu().numpy().astype(np.float64), self.high.cpu().numpy().astype(np.float64),
                          self.positive.cpu().numpy().astype(np.int64),
                          self.hist.view(-1, BINS).to(torch.int32).cpu().numpy())  # a block's counts fit int32


class SampleRows:
    """The scores of a block's sampled sentences, gathered batch by batch (on the scores' device, read once at
    `result`) and returned in request order."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.wanted = np.sort(self.ids)
        self.found_ids: list[np.ndarray] = []
        self.found: list[torch.Tensor] = []

    def rows(self, batch_ids: np.ndarray) -> np.ndarray:
        """int64: the rows of a batch (its sentence ids) holding sampled sentences.

        >>> SampleRows(np.array([9, 4])).rows(np.array([4, 5, 9])).tolist()
        [0, 2]
        """
        return np.flatnonzero(np.isin(batch_ids, self.wanted))

    def add(self, batch_ids: torch.Tensor, scores: torch.Tensor) -> None:
        """Gather a batch's sampled rows (CPU `batch_ids`; the row indices go to the scores' device)."""
        ids = batch_ids.numpy()
        rows = self.rows(ids)
        if len(rows):
            self.add_rows(ids[rows], scores.index_select(0, torch.from_numpy(rows).to(scores.device)))

    def add_rows(self, ids: np.ndarray, rows: torch.Tensor) -> None:
        """Add sampled sentences' ids and their score rows (float32 [k, U], on any device)."""
        self.found_ids.append(ids)
        self.found.append(rows)

    def result(self, n_units: int) -> np.ndarray:
        if not self.found:
            got_ids, got = np.zeros(0, np.int64), np.zeros((0, n_units), np.float32)
        else:
            got_ids, got = np.concatenate(self.found_ids), torch.cat(self.found).cpu().numpy()
        order = np.argsort(got_ids)
        if not np.array_equal(got_ids[order], self.wanted):  # the driver only asks for ids of the block
            raise ValueError("sample ids that are not in the block were requested")
        return np.ascontiguousarray(got[order[np.searchsorted(got_ids[order], self.ids)]], dtype=np.float32)
