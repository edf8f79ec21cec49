"""Exact per-unit top-N queues over (score, sentence_id) keys packed into one int64.

A key orders by score first and, among equal scores, puts the smaller sentence_id first:

    key = (order_preserving_int32(score) << 32) | (0xFFFFFFFF - sentence_id)

so a plain integer top-k is an exact, deterministic top-N with ties broken by sentence_id, and the key
alone stores both the score (bit-exact float32) and the id (< 2**32). Bottom-N queues use the keys of
the negated scores. Queues are merged with one dense top-k over [queue | candidates]; `sorted=False`
is used on the hot path and the final order is produced once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SENTINEL = torch.iinfo(torch.int64).min
"""Key of an empty queue slot; smaller than every real key."""
MAX_SENTENCE_ID = 0xFFFFFFFF


def _order_bits(x: torch.Tensor) -> torch.Tensor:
    """Involution between float32 bit patterns and int32 values that sort like the floats."""
    return x ^ ((x >> 31) & 0x7FFFFFFF)


def encode_keys(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Pack float scores and int64 sentence ids (broadcast) into order-preserving int64 keys.

    Example: scores [0.5, 0.5, -1.0] with ids [7, 3, 1] -> keys ordered 3 (0.5) > 7 (0.5) > 1 (-1.0):
    equal scores rank the smaller sentence_id higher.
    """
    s = scores.to(torch.float32) + 0.0  # -0.0 -> +0.0 so equal scores get equal keys
    hi = _order_bits(s.view(torch.int32)).to(torch.int64) << 32
    return hi | (MAX_SENTENCE_ID - ids.to(torch.int64))


def decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of encode_keys: (float32 scores, int64 sentence ids)."""
    hi = (keys >> 32).to(torch.int32)
    scores = _order_bits(hi).view(torch.float32)
    ids = MAX_SENTENCE_ID - (keys & MAX_SENTENCE_ID)
    return scores, ids


def pack_payload(peak_val: torch.Tensor, peak_pos: torch.Tensor) -> torch.Tensor:
    """Pack a peak activation (float32 bits, high half) and its token position (low half) into int64.

    Example: pack_payload(tensor([1.5]), tensor([3])) -> tensor([(0x3FC00000 << 32) | 3])
    """
    bits = peak_val.to(torch.float32).contiguous().view(torch.int32).to(torch.int64) << 32
    return bits | peak_pos.to(torch.int64)


def unpack_payload(payload: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of pack_payload: (float32 peak values, int64 token positions)."""
    vals = (payload >> 32).to(torch.int32).view(torch.float32)
    return vals, payload & 0xFFFFFFFF


@dataclass
class Candidates:
    """Queue candidates as flat arrays (one row per (unit, sentence) pair)."""

    units: torch.Tensor
    """int64 [K] unit index (row of the queue)."""
    keys: torch.Tensor
    """int64 [K] packed (score, sentence_id) keys, see encode_keys."""
    payload: torch.Tensor
    """int64 [K] packed (peak activation, peak token position), see pack_payload."""

    def __len__(self) -> int:
        return int(self.units.numel())

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f).cpu().numpy() for f in _FIELDS}

    @staticmethod
    def from_numpy(arrays: dict[str, np.ndarray]) -> Candidates:
        return Candidates(*(torch.from_numpy(np.array(arrays[f], copy=True)) for f in _FIELDS))


_FIELDS = ("units", "keys", "payload")


class TopNQueues:
    """One exact top-N queue per unit, stored as dense [units, N] key and payload tensors.

    Example (N=2, one unit): merge keys of scores {s0: 1.0, s1: 3.0, s2: 2.0} -> queue holds s1, s2;
    merging {s3: 2.0} next changes nothing (2.0 ties s2 but s3 > s2), so the gain is [0].
    """

    def __init__(self, n_units: int, n: int, device: torch.device | str = "cpu") -> None:
        self.n = n
        self.keys = torch.full((n_units, n), SENTINEL, dtype=torch.int64, device=device)
        self.payload = torch.zeros((n_units, n), dtype=torch.int64, device=device)

    @property
    def n_units(self) -> int:
        return int(self.keys.shape[0])

    def threshold(self) -> torch.Tensor:
        """int64 [units]: a candidate enters a unit's queue only if its key is greater than this."""
        return self.keys.min(dim=1).values

    def merge(self, cand: Candidates) -> torch.Tensor:
        """Merge candidates exactly; returns int64 [units]: how many entries each queue gained."""
        n_units = self.n_units
        gained_all = torch.zeros(n_units, dtype=torch.int64)
        if len(cand) == 0:
            return gained_all
        dev = self.keys.device
        units = cand.units.to(dev, torch.int64)
        if bool((units[1:] >= units[:-1]).all()):  # unit-major already (entries() output): no sort needed
            order = torch.arange(units.numel(), device=dev)
            units_sorted = units
        else:
            order = torch.argsort(units, stable=True)
            units_sorted = units[order]
        counts = torch.bincount(units_sorted, minlength=n_units)
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        col = torch.arange(units_sorted.numel(), device=dev) - starts[units_sorted]
        rows = counts.nonzero().squeeze(1)
        row_of_unit = torch.full((n_units,), -1, dtype=torch.int64, device=dev)
        row_of_unit[rows] = torch.arange(rows.numel(), device=dev)
        r = row_of_unit[units_sorted]

        def dense(values: torch.Tensor, fill: int) -> torch.Tensor:
            out = torch.full((rows.numel(), width), fill, dtype=torch.int64, device=dev)
            out[r, col] = values.to(dev)[order]
            return out

        all_keys = torch.cat([self.keys[rows], dense(cand.keys, SENTINEL)], dim=1)
        all_payload = torch.cat([self.payload[rows], dense(cand.payload, 0)], dim=1)
        gained = self._select(all_keys, all_payload)
        self.keys[rows] = all_keys[:, : self.n]
        self.payload[rows] = all_payload[:, : self.n]
        gained_all[rows.cpu()] = gained.cpu()
        return gained_all

    def _select(self, keys: torch.Tensor, payload: torch.Tensor) -> torch.Tensor:
        """In place: move each row's N best keys (and their payloads) into the first N columns."""
        top = torch.topk(keys, self.n, dim=1, sorted=False)
        gained = ((top.indices >= self.n) & (top.values != SENTINEL)).sum(dim=1)
        moved = torch.gather(payload, 1, top.indices)
        keys[:, : self.n] = top.values
        payload[:, : self.n] = moved
        return gained

    def entries(self, above: torch.Tensor | None = None) -> Candidates:
        """All filled entries (optionally only keys > `above` per unit) as flat candidates, unit-major."""
        mask = self.keys != SENTINEL
        if above is not None:
            mask &= self.keys > above.to(self.keys.device)[:, None]
        units, slots = mask.nonzero(as_tuple=True)
        return Candidates(units.cpu(), self.keys[units, slots].cpu(), self.payload[units, slots].cpu())

    def sorted_entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(units, ranks, keys, payload) of all filled entries, best first per unit; ranks start at 1."""
        keys, order = torch.sort(self.keys, dim=1, descending=True, stable=True)
        payload = torch.gather(self.payload, 1, order)
        mask = keys != SENTINEL
        units, slots = mask.nonzero(as_tuple=True)
        return units.cpu(), (slots + 1).cpu(), keys[units, slots].cpu(), payload[units, slots].cpu()

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for a checkpoint."""
        return {"keys": self.keys.cpu().numpy(), "payload": self.payload.cpu().numpy()}

    @staticmethod
    def from_state(state: dict[str, np.ndarray], device: torch.device | str = "cpu") -> TopNQueues:
        keys = state["keys"]
        q = TopNQueues(keys.shape[0], keys.shape[1], device)
        q.keys = torch.from_numpy(np.array(keys, copy=True)).to(device)
        q.payload = torch.from_numpy(np.array(state["payload"], copy=True)).to(device)
        return q


class WindowedQueues(TopNQueues):
    """Top-N queues with a dense candidate window: batches write their keys into spare columns and a
    single top-k per window folds them in. This is the worker's hot path (no sorting, no scatter of keys).
    """

    def __init__(self, n_units: int, n: int, window: int, floor: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__(n_units, n, device)
        self.window = window
        self.buf_keys = torch.full((n_units, n + window), SENTINEL, dtype=torch.int64, device=device)
        self.buf_payload = torch.zeros((n_units, n + window), dtype=torch.int64, device=device)
        self.keys = self.buf_keys[:, :n]
        self.payload = self.buf_payload[:, :n]
        self.floor = (floor.to(device) if floor is not None else torch.full((n_units,), SENTINEL, device=device))
        self.fill = 0
        self.thresh = self.floor.clone()

    def room(self) -> int:
        return self.window - self.fill

    def add_batch(self, keys: torch.Tensor, mask: torch.Tensor, units: torch.Tensor, cols: torch.Tensor,
                  payload: torch.Tensor) -> None:
        """Add one batch: keys [U, B] with candidate mask [U, B]; payload for the candidates (units, cols)."""
        b = keys.shape[1]
        lo = self.n + self.fill
        self.buf_keys[:, lo : lo + b] = torch.where(mask, keys, SENTINEL)
        self.buf_payload[units, lo + cols] = payload
        self.fill += b

    def flush(self) -> torch.Tensor:
        """Fold the window into the queues; returns the per-unit gain."""
        if self.fill == 0:
            return torch.zeros(self.n_units, dtype=torch.int64)
        width = self.n + self.fill
        keys = self.buf_keys[:, :width]
        gained = self._select(keys, self.buf_payload[:, :width])
        self.buf_keys[:, self.n : width] = SENTINEL
        self.fill = 0
        self.thresh = torch.maximum(self.floor, self.keys.min(dim=1).values)
        return gained.cpu()
