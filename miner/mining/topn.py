"""Exact per-unit top-N queues over (score, sentence_id) keys packed into one int64 (the one place that knows keys)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from miner.mining import native

# A key orders by score first and, among equal scores, puts the smaller sentence_id first:
#
#     key = (order_preserving_int32(score) << 32) | (0xFFFFFFFF - sentence_id)
#
# so a plain integer top-k is an exact, deterministic top-N with ties broken by sentence_id, and the key alone
# stores both the score (bit-exact float32) and the id (< 2**32). Bottom-N queues use the keys of the negated
# scores. Queues are merged with one dense top-k over [queue | candidates]; `sorted=False` is used on the hot
# path and the final order is produced once at the end. On the CPU compiled twins of the merge, the cut and the
# window's batch add (miner/mining/native/queues.c) do the same selections; the torch operations stay their oracle.

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


def decode_queue_keys(keys: torch.Tensor, bottom: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, sentence ids) of a queue's keys; a bottom queue's keys hold the negated scores, negated back here.

    Example: a bottom entry of score -2.0 has the key encode_keys(2.0, id); decode_queue_keys of it -> (-2.0, id).
    """
    scores, ids = decode_keys(keys)
    return (-scores if bottom else scores), ids


def threshold_scores(thresh: torch.Tensor) -> torch.Tensor:
    """float32 lower bounds on the scores of keys above `thresh`: the threshold keys' scores, -inf for SENTINEL
    (an empty queue admits everything) and for NaN scores (a negated NaN sorts below every number; the keys
    decide), so `score >= bound` holds for every finite score whose key can beat the threshold.

    Example: [encode_keys(0.5, 8), SENTINEL] -> [0.5, -inf].
    """
    scores, _ = decode_keys(thresh)
    return torch.where((thresh == SENTINEL) | torch.isnan(scores), float("-inf"), scores)


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
    """Queue candidates: flat arrays (one row per (unit, sentence) pair), or dense per-unit rows.

    The dense form (`units` None) holds keys and payloads as [units, W] rows with SENTINEL in empty slots: it
    carries a block whose rows are mostly full (early in a run) without a unit index per entry, and merges
    as one slab copy.
    """

    units: torch.Tensor | None
    """int64 [K] unit index (row of the queue), ascending or not; None for the dense form."""
    keys: torch.Tensor
    """int64 [K] (dense: [units, W]) packed (score, sentence_id) keys, see encode_keys."""
    payload: torch.Tensor
    """int64 [K] (dense: [units, W]) packed (peak activation, peak token position), see pack_payload."""

    @property
    def dense(self) -> bool:
        return self.units is None

    def __len__(self) -> int:
        """Number of entries (dense: slots that are not SENTINEL)."""
        return int((self.keys != SENTINEL).sum()) if self.units is None else int(self.units.numel())

    def sparse(self) -> Candidates:
        """The flat form (unit-major)."""
        if not self.dense:
            return self
        units, slots = (self.keys != SENTINEL).nonzero(as_tuple=True)
        return Candidates(units, self.keys[units, slots], self.payload[units, slots])

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f).cpu().numpy() for f in _FIELDS if getattr(self, f) is not None}

    @staticmethod
    def from_numpy(arrays: dict[str, np.ndarray]) -> Candidates:
        """From `to_numpy` output, flat when it has "units", dense otherwise; no copy: the tensors share the
        arrays' memory (read-only ones too, such as Ray's zero-copy results: nothing writes to candidates)."""
        with warnings.catch_warnings():  # torch warns about read-only arrays; candidates are only read
            warnings.simplefilter("ignore", UserWarning)
            units = torch.from_numpy(np.asarray(arrays["units"])) if "units" in arrays else None
            return Candidates(units, torch.from_numpy(np.asarray(arrays["keys"])),
                              torch.from_numpy(np.asarray(arrays["payload"])))


_FIELDS = ("units", "keys", "payload")


class TopNQueues:
    """One exact top-N queue per unit, stored as dense [units, N + spare] key and payload buffers.

    Row u's entries fill slots 0..count[u]-1 (the worker's dense `WindowedQueues.add_slab` may leave empty
    SENTINEL slots among them); every slot from count[u] on holds SENTINEL. New candidates are appended
    after a row's entries (a few writes per candidate), and only rows that then hold more than N entries are
    cut back to their N best with one top-k over the columns in use (`settle`). Between public calls every
    row holds at most N entries, so `keys`/`payload` ([units, N] views) are the queues.
    Example (N=2, one unit): merge keys of scores {s0: 1.0, s1: 3.0, s2: 2.0} -> queue holds s1, s2;
    merging {s3: 2.0} next changes nothing (2.0 ties s2 but s3 > s2), so the gain is [0].
    """

    def __init__(self, n_units: int, n: int, device: torch.device | str = "cpu", spare: int | None = None) -> None:
        self.n = n
        if spare is None:  # room to append a block's N candidates per row before the top-k; the compiled merge
            spare = 0 if self._compiled(torch.device(device)) else n  # needs none
        self._keys = torch.full((n_units, n + spare), SENTINEL, dtype=torch.int64, device=device)
        # payloads of empty slots are never read (every reader masks them by their SENTINEL keys): no fill
        self._payload = torch.empty(self._keys.shape, dtype=torch.int64, device=device)
        self.count = torch.zeros(n_units, dtype=torch.int64, device=device)
        """int64 [units]: filled slots per row."""
        self._used = 0
        """Columns that may hold entries (the largest count since the last settle or reset)."""

    @property
    def n_units(self) -> int:
        return int(self._keys.shape[0])

    @property
    def keys(self) -> torch.Tensor:
        """int64 [units, N] keys (SENTINEL in empty slots), unordered within a row."""
        return self._keys[:, : self.n]

    @property
    def payload(self) -> torch.Tensor:
        """int64 [units, N] payloads of `keys`."""
        return self._payload[:, : self.n]

    def threshold(self) -> torch.Tensor:
        """int64 [units]: a candidate enters a unit's queue only if its key is greater than this."""
        return self.keys.min(dim=1).values

    @staticmethod
    def _compiled(device: torch.device) -> bool:
        """Whether the compiled queue kernels (`miner.mining.native`) run for buffers on this device."""
        return device.type == "cpu" and native.available()

    def merge(self, cand: Candidates) -> torch.Tensor:
        """Merge candidates exactly; returns int64 [units]: how many entries each queue gained.

        On the CPU one compiled pass per row (`native.merge_rows`: a selection over the row's entries and its
        candidates) does it; elsewhere the candidates are appended and the rows over N cut by a top-k (`settle`).
        """
        if self._compiled(self._keys.device):
            return self._merge_compiled(cand)
        if cand.dense:
            if cand.keys.shape[1] and bool((self.count == self.count[0]).all()):
                return self._merge_slab(cand.keys.to(self._keys.device), cand.payload.to(self._keys.device))
            cand = cand.sparse()
        assert cand.units is not None
        if len(cand) == 0:
            return torch.zeros(self.n_units, dtype=torch.int64)
        dev = self._keys.device
        units, keys, payload = cand.units.to(dev, torch.int64), cand.keys.to(dev), cand.payload.to(dev)
        if not bool((units[1:] >= units[:-1]).all()):  # unit-major already (entries() output): no sort needed
            order = torch.argsort(units, stable=True)
            units, keys, payload = units[order], keys[order], payload[order]
        before = self.count.clone()
        gained = self.append(units, keys, payload).clone()
        rows, kept = self.settle(before)
        if rows is not None and kept is not None:
            gained[rows] = kept
        return gained.cpu()

    def _merge_compiled(self, cand: Candidates) -> torch.Tensor:
        """`merge` by `native.merge_rows`: dense candidate rows as they are, flat ones grouped by unit."""
        rows = self.n_units
        if cand.dense:
            keys, payload = cand.keys.contiguous(), cand.payload.contiguous()
            if keys.shape[0] != rows:
                raise ValueError(f"dense candidates: {rows} rows expected, got {keys.shape[0]}")
            starts = torch.arange(rows + 1, dtype=torch.int64) * keys.shape[1]
            keys, payload = keys.view(-1), payload.view(-1)
        else:
            assert cand.units is not None
            units, keys, payload = cand.units.to(torch.int64), cand.keys, cand.payload
            if units.numel() and not (0 <= int(units.min()) and int(units.max()) < rows):
                raise ValueError(f"candidate units must lie in [0, {rows})")
            if not bool((units[1:] >= units[:-1]).all()):
                order = torch.argsort(units, stable=True)
                units, keys, payload = units[order], keys[order], payload[order]
            starts = torch.zeros(rows + 1, dtype=torch.int64)
            torch.cumsum(torch.bincount(units, minlength=rows), 0, out=starts[1:])
            keys, payload = keys.to(torch.int64).contiguous(), payload.to(torch.int64).contiguous()
        gained = native.merge_rows(self._keys, self._payload, self.count, self.n, keys, payload, starts)
        self._used = int(self.count.max()) if rows else 0
        return gained

    def _merge_slab(self, keys: torch.Tensor, payload: torch.Tensor) -> torch.Tensor:
        """Merge dense candidate rows [units, W] (SENTINEL = empty) when every row holds the same count: one
        slab copy after the entries, then `settle`."""
        before = self.count.clone()
        self._write_level(keys, payload)
        gained = (keys != SENTINEL).sum(dim=1)
        rows, kept = self.settle(before)
        if rows is not None and kept is not None:
            gained[rows] = kept
        return gained.cpu()

    def append(self, units: torch.Tensor, keys: torch.Tensor, payload: torch.Tensor,
               added: torch.Tensor | None = None) -> torch.Tensor:
        """Append candidates (units ascending) after each row's entries, growing the spare columns if a row
        would overflow; returns int64 [units]: how many each row received (`added`, if already counted).

        Example: counts [2, 0], units [0, 0, 1] -> slots (0, 2), (0, 3), (1, 0); counts become [4, 1].
        """
        if added is None:
            added = torch.bincount(units, minlength=self.n_units)
        width = int(added[0]) if added.numel() else 0
        if units.numel() == width * self.n_units and self._uniform(added, width):
            # every row is as full as the others and gets as many: one slab copy, no scatter
            self._write_level(keys.view(self.n_units, width), payload.view(self.n_units, width))
            return added
        starts = torch.cumsum(added, 0) - added
        slot = self.count[units] + torch.arange(units.numel(), device=units.device) - starts[units]
        self.count += added
        self._used = max(self._used, int(self.count.max()))
        if self._used > self._keys.shape[1]:
            self._grow(self._used)
        at = units * self._keys.shape[1] + slot  # flat positions: 1-D indexing is the cheaper scatter
        self._keys.view(-1)[at] = keys
        self._payload.view(-1)[at] = payload
        return added

    def _write_level(self, keys: torch.Tensor, payload: torch.Tensor) -> None:
        """Copy [units, W] rows after the entries of rows that all hold the same count."""
        at, w = int(self.count[0]), keys.shape[1]
        if at + w > self._keys.shape[1]:
            self._grow(at + w)
        self._keys[:, at : at + w] = keys
        self._payload[:, at : at + w] = payload
        self.count += w
        self._used = max(self._used, at + w)

    def _uniform(self, added: torch.Tensor, width: int) -> bool:
        """Whether every row holds the same count and receives `width` candidates."""
        return bool((added == width).all()) and bool((self.count == self.count[0]).all())

    def _grow(self, width: int) -> None:
        width = max(width, self._keys.shape[1] + self.n // 2)
        keys = torch.full((self.n_units, width), SENTINEL, dtype=torch.int64, device=self._keys.device)
        payload = torch.empty(keys.shape, dtype=torch.int64, device=keys.device)
        keys[:, : self._keys.shape[1]] = self._keys
        payload[:, : self._keys.shape[1]] = self._payload
        self._keys, self._payload = keys, payload

    def settle(self, before: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Cut every row holding more than N entries back to its N best (a selection over the columns in use);
        returns (those rows, how many of their N best lie at or after `before` [units], the first slot of
        what was just added) or (None, None) if no row had to be cut.
        """
        rows, fresh, _ = self._cut(before)
        return rows, fresh

    def _cut(self, before: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                                 torch.Tensor | None]:
        """`settle`, also returning the cut rows' smallest key over their N slots (SENTINEL where fewer than N
        are filled): (rows, fresh or None without `before`, low) or (None, None, None).

        On the CPU the compiled cut (`native.cut_rows`: a selection over each row's filled slots) runs; torch.topk
        elsewhere, and as its test oracle (`MINER_NATIVE=0`). Both keep the same entries (keys are distinct in a
        row); the slot order within a row may differ, which nothing reads (`keys` is unordered).
        """
        width = self._used
        if width <= self.n:
            return None, None, None
        if self._compiled(self._keys.device):
            cut, fresh, low = native.cut_rows(self._keys, self._payload, self.count, self.n, width, before)
            if cut == 0:
                self._used = int(self.count.max())
                return None, None, None
            self._used = self.n
            rows = fresh.ge(0).nonzero().squeeze(1)
            return rows, (fresh[rows] if before is not None else None), low[rows]
        full = self.count > self.n
        rows = full.nonzero().squeeze(1)
        if rows.numel() == 0:
            self._used = int(self.count.max())
            return None, None, None
        every = rows.numel() == self.n_units
        keys = self._keys[:, :width] if every else self._keys[rows, :width]
        top = torch.topk(keys, self.n, dim=1, sorted=False)
        moved = torch.gather(self._payload[:, :width] if every else self._payload[rows, :width], 1, top.indices)
        if every:
            self._keys[:, : self.n] = top.values
            self._payload[:, : self.n] = moved
            self._keys[:, self.n : width] = SENTINEL
        else:
            self._keys[rows, : self.n] = top.values
            self._payload[rows, : self.n] = moved
            self._keys[rows, self.n : width] = SENTINEL
        self.count[rows] = self.n
        self._used = self.n
        low = top.values.min(dim=1).values
        if before is None:
            return rows, None, low
        fresh = (top.indices >= before[rows, None]) & (top.values != SENTINEL)
        return rows, fresh.sum(dim=1), low

    def entries(self) -> Candidates:
        """All filled entries as flat candidates, unit-major."""
        keys = self._keys[:, : self._used]
        units, slots = (keys != SENTINEL).nonzero(as_tuple=True)
        return Candidates(units.cpu(), keys[units, slots].cpu(), self._payload[units, slots].cpu())

    def sorted_entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(units, ranks, keys, payload) of all filled entries, best first per unit; ranks start at 1."""
        keys, order = torch.sort(self.keys, dim=1, descending=True, stable=True)
        payload = torch.gather(self.payload, 1, order)
        mask = keys != SENTINEL
        units, slots = mask.nonzero(as_tuple=True)
        return units.cpu(), (slots + 1).cpu(), keys[units, slots].cpu(), payload[units, slots].cpu()

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for a checkpoint: keys and payload, [units, N] each (payload 0 in empty slots)."""
        keys = self.keys
        return {"keys": keys.cpu().numpy().copy(), "payload": self.payload.masked_fill(keys == SENTINEL, 0).cpu().numpy()}

    @staticmethod
    def from_state(state: dict[str, np.ndarray], device: torch.device | str = "cpu") -> TopNQueues:
        keys = torch.from_numpy(np.array(state["keys"], copy=True))
        payload = torch.from_numpy(np.array(state["payload"], copy=True))
        q = TopNQueues(keys.shape[0], keys.shape[1], device)
        filled = keys != SENTINEL
        q.count = filled.sum(dim=1).to(device)
        q._used = int(q.count.max()) if q.count.numel() else 0
        # entries first in each row (a stable sort of the filled flags), the invariant append relies on
        order = torch.argsort((~filled).to(torch.int8), dim=1, stable=True)
        q._keys[:, : q.n] = torch.gather(keys, 1, order).to(device)
        q._payload[:, : q.n] = torch.gather(payload, 1, order).to(device)
        return q


class WindowedQueues(TopNQueues):
    """The worker's per-block queues: a floor per row (the driver's threshold when the block was dispatched),
    a threshold that rises as rows fill, and room for `window` candidates per row between top-k passes.

    Batches append only their candidates (keys above the threshold), so a batch with few candidates costs a
    few writes; the top-k runs when some row would overflow, over the rows holding more than N. The buffers
    are reused from block to block (`reset`).

    A batch added densely (`add_slab`, or `open_slab` + `close_slab`) leaves every row with the same count, which
    the host then knows (`level`): while only dense batches come, `flush` and `needs_flush` read nothing from
    the device (the sync-free loop of `BlockMiner`). Example (N=2, window 4): slabs of 3 columns, 3 more (6 > 2 +
    4: flush first, every row cut to its 2 best, the threshold raised on the device), ... -> level 2, 5, 2, 5.
    """

    def __init__(self, n_units: int, n: int, window: int, floor: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__(n_units, n, device, spare=window)
        self.window = window
        self.reset(floor)

    def reset(self, floor: torch.Tensor | None = None) -> None:
        """Empty every row and set the floors (SENTINEL: anything may enter)."""
        if self._used:
            self._keys[:, : self._used] = SENTINEL
        self.count.zero_()
        self._used = 0
        self.level: int | None = 0
        """The count every row holds, when the host knows it is the same for all (None: unknown, rows differ)."""
        dev = self._keys.device
        self.floor = floor.to(dev) if floor is not None else torch.full((self.n_units,), SENTINEL, device=dev)
        self.thresh = self.floor.clone()
        """int64 [units]: the key a candidate must beat (the floor, or the row's N-th best once it has N)."""
        self.thresh_scores = threshold_scores(self.thresh)
        """float32 [units]: the scores of `thresh` (-inf where empty): a candidate's score is at least this."""

    def append(self, units: torch.Tensor, keys: torch.Tensor, payload: torch.Tensor,
               added: torch.Tensor | None = None) -> torch.Tensor:
        self.level = None
        return super().append(units, keys, payload, added)

    def _cut(self, before: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                                 torch.Tensor | None]:
        self.level = None
        return super()._cut(before)

    def add(self, units: torch.Tensor, keys: torch.Tensor, payload: torch.Tensor) -> None:
        """Add one batch's candidates (units ascending, keys above `thresh`) with their payloads."""
        if units.numel() == 0:
            return
        added = torch.bincount(units, minlength=self.n_units)
        if int((self.count + added).max()) > self._keys.shape[1]:
            self.flush()
        self.append(units, keys, payload, added)

    def add_scored(self, scores: torch.Tensor, ids: torch.Tensor, top: torch.Tensor,
                   bottom: torch.Tensor | None) -> None:
        """Add one batch of finite CPU scores [B, U] (rows: U top rows, then U bottom rows when `bottom` is
        given) with the cells' peaks [B, U], in one compiled pass (`native.window_add`): each cell whose key
        beats its row's threshold enters the row; a full row is cut to its N best on the spot, raising its
        threshold. The same entries as `add` of the batch's candidates (then `flush`)."""
        most = native.window_add(scores, ids, top, bottom, self._keys, self._payload, self.n, self.count,
                                 self.thresh, self.thresh_scores)
        self.level = None
        self._used = max(self._used, most)

    def needs_flush(self, b: int) -> bool:
        """Whether `b` more columns after the longest row overflow the buffers (known on the host)."""
        return self._used + b > self._keys.shape[1]

    def open_slab(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (keys, payload) [units, b] of the `b` columns after the longest row, flushing first if they do
        not fit: write a dense batch into them, then `close_slab(b)` (every column must be written: SENTINEL
        keys where a cell is no candidate)."""
        if self.needs_flush(b):
            self.flush()
        at = self._used
        return self._keys[:, at : at + b], self._payload[:, at : at + b]

    def close_slab(self, b: int) -> None:
        """Count the `b` columns of `open_slab` as every row's entries."""
        self._used += b
        self.count.fill_(self._used)
        self.level = self._used

    def add_slab(self, keys: torch.Tensor, *payload: torch.Tensor) -> None:
        """Add one batch densely: keys [units, B] (SENTINEL where a cell is no candidate) and payloads [units, B]
        (or consecutive row blocks of them, written in place) go to the same B columns of every row, after the
        longest row; the SENTINEL slots left in rows are empty slots (a top-k ranks them last, `entries` skips
        them)."""
        b = keys.shape[1]
        slab_keys, slab_payload = self.open_slab(b)
        slab_keys.copy_(keys)
        row = 0
        for part in payload:
            slab_payload[row : row + part.shape[0]] = part
            row += part.shape[0]
        self.close_slab(b)

    def flush(self) -> None:
        """Cut full rows back to N entries and raise their thresholds to their N-th best key."""
        if self.level is not None:  # every row holds `level` entries: all are cut, or none, no device read
            if self.level > self.n:
                self._cut_every_row()
            return
        rows, _, low = self._cut()
        if rows is not None and low is not None:
            self.thresh[rows] = torch.maximum(self.floor[rows], low)
            self.thresh_scores = threshold_scores(self.thresh)

    def _cut_every_row(self) -> None:
        """`settle` + the threshold update of `flush` when every row holds the same count (> N): one top-k over
        all rows, with no device read (the same operations as `settle`'s all-rows case; on the CPU its compiled
        cut, which reads the counts on the host anyway)."""
        width = self._used
        if self._compiled(self._keys.device):
            _, _, low = native.cut_rows(self._keys, self._payload, self.count, self.n, width)
            self._used = self.level = self.n
            self.thresh = torch.maximum(self.floor, low)
            self.thresh_scores = threshold_scores(self.thresh)
            return
        top = torch.topk(self._keys[:, :width], self.n, dim=1, sorted=False)
        moved = torch.gather(self._payload[:, :width], 1, top.indices)
        self._keys[:, : self.n] = top.values
        self._payload[:, : self.n] = moved
        self._keys[:, self.n : width] = SENTINEL
        self.count.fill_(self.n)
        self._used = self.level = self.n
        self.thresh = torch.maximum(self.floor, top.values.min(dim=1).values)
        self.thresh_scores = threshold_scores(self.thresh)

    def finish(self) -> Candidates:
        """The block's entries (each row's best, at most N, all above the floor), copied out of the buffers:
        dense rows when at least half the slots in use are filled (early in a run), else flat, unit-major."""
        self.flush()
        used = self._used
        if used and self.n_units:
            keys = self._keys[:, :used]
            empty = keys == SENTINEL
            holes = int(torch.count_nonzero(empty))
            if 2 * holes <= used * self.n_units:
                payload = self._payload[:, :used]
                return Candidates(None, keys.clone(), payload.masked_fill(empty, 0) if holes else payload.clone())
        return self.entries()
