"""Per-batch candidate search and peak tokens: which (sentence, unit) cells enter the queues, and where they peak."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from miner.mining.topn import SENTINEL, encode_keys, pack_payload


def signed_rows(scores: torch.Tensor, n_rows: int) -> torch.Tensor:
    """float32 [R, B]: a batch's scores [B, U] per queue row: the top rows (R = U), then, when R = 2U, the bottom
    rows (the negated scores, whose keys rank the lowest scores first).

    Example: scores [[1.0, -2.0]] (B=1, U=2), R=4 -> [[1.0], [-2.0], [-1.0], [2.0]].
    """
    return scores.T if n_rows == scores.shape[1] else torch.cat([scores.T, -scores.T])


def candidate_superset(scores: torch.Tensor, floor: torch.Tensor, finite: bool = False,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed [R, B], superset [R, B]): the scores per queue row (negated for bottom rows, when `floor` has
    2U rows) and the cells whose score is at least the row's threshold score `floor`.

    A key beats a threshold key only if its score is at least the threshold's score (-inf for an empty
    row; NaN scores are kept, their keys decide), so one float comparison over the batch finds a superset
    of the candidates, and keys are built only where needed. `finite`: the caller knows every score is
    finite (one comparison instead of two).
    """
    signed = signed_rows(scores, floor.shape[0])
    if finite:
        return signed, signed >= floor[:, None]
    return signed, torch.logical_not(signed < floor[:, None])


def sparse_candidates(signed: torch.Tensor, superset: torch.Tensor, ids: torch.Tensor, thresh: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cells whose key beats their row's threshold key: (rows [K] ascending, batch rows [K], keys [K]),
    keys built for the `candidate_superset` cells only.

    Example: scores [[0.5], [0.2]] (signed [[0.5, 0.2]]), ids [7, 9], thresh [key(0.5, id 8)] -> superset
    [[1, 0]] (0.5 >= 0.5); key(0.5, 7) beats key(0.5, 8) (smaller id) -> candidate (row 0, batch row 0).
    """
    rows, cols = superset.nonzero(as_tuple=True)
    keys = encode_keys(signed[rows, cols], ids[cols])
    beat = keys > thresh[rows]
    if not bool(beat.all()):
        rows, cols, keys = rows[beat], cols[beat], keys[beat]
    return rows, cols, keys


def candidate_slab(signed: torch.Tensor, ids: torch.Tensor, thresh: torch.Tensor, out: torch.Tensor | None = None,
                   ) -> torch.Tensor:
    """int64 [R, B]: every cell's key where it beats its row's threshold, SENTINEL elsewhere (for batches
    where most cells are candidates, one dense pass beats gathering them); written into `out` (an [R, B] view,
    e.g. a queue window's next columns) when given.

    Example: signed [[0.5, 0.2]], ids [7, 9], thresh [key(0.3, id 1)] -> [[key(0.5, 7), SENTINEL]].
    """
    keys = encode_keys(signed, ids[None, :])
    if out is None:
        return keys.masked_fill_(keys <= thresh[:, None], SENTINEL)
    sentinel = torch.full((), SENTINEL, dtype=torch.int64, device=keys.device)
    return torch.where(keys > thresh[:, None], keys, sentinel, out=out)


@dataclass
class RealTokens:
    """Where a batch's real tokens lie, worked out once per batch for the scores and both peak searches.

    The `span` is the range of positions real in some row; `holes` are the cells that are not real in their
    row (special tokens and padding: in a length-sorted batch, a few per row).
    Example: real rows [0 1 1 1 0], [0 1 1 0 0] -> span lo 1, width 3; holes rows [0 0 1 1 1], positions
    [0 4 0 3 4].
    """

    real: torch.Tensor
    """bool [B, T] tokens that count, on the device."""
    mask: torch.Tensor
    """bool [B, width] real tokens inside the span."""
    lo: int
    """Position of the span's first column."""
    width: int
    """Span width (0 when no token is real)."""
    holes: tuple[torch.Tensor, torch.Tensor]
    """int64 [H] rows and [H] positions of the cells that are not real."""

    @staticmethod
    def of(real: torch.Tensor, device: torch.device | str | None = None) -> RealTokens:
        """Work out the layout on `real`'s device (a CPU copy needs no device syncs), then move it."""
        device = device if device is not None else real.device
        lo, hi = real_span(real)
        rows, cols = (~real).nonzero(as_tuple=True)
        return RealTokens(real.to(device), real[:, lo:hi].to(device), lo, hi - lo, (rows.to(device), cols.to(device)))


@torch.inference_mode()
def dense_peaks(tensors: list[torch.Tensor], offsets: list[int], n_units: int, tokens: RealTokens,
                largest: bool, restore: bool = True) -> torch.Tensor:
    """int64 [B, U]: packed (peak activation, token position) of every unit over each row's real tokens: the
    maximum (`largest`) or the minimum, at the first real position among equal peaks (as torch.max(dim)), for
    finite activations (with NaN the max-pool takes the last NaN; see `BlockMiner.peaks`).

    Overwrites the tensors' non-real cells with -inf or +inf, so call it after the scores (those cells count
    for nothing); real cells are left as they were. Index-returning reductions over the token axis (torch.max(dim)) are slow on
    CPU, but a max-pool over it with one window per row returns the first position of each maximum in one
    vectorised pass as fast as a plain amax: [B, T, W] activations seen as an image batch [B, W, T, 1] (W
    channels) are already in the channels-last layout the pooling kernel vectorises over (`channels_last`),
    with no copy. Minima are the maxima of the tensor negated in place (and negated back, exactly, unless
    `restore` is False: for a last use of the tensors).
    Example: a unit's row [8, 2, 7, 7, 9] with real [0 1 1 1 0] -> [-inf, 2, 7, 7, -inf] -> max-pool: 7 at
    position 2 (the first of the tied 7s).
    """
    b, t = tokens.real.shape
    dev = tokens.real.device
    if tokens.width == 0:
        return torch.empty((b, n_units), dtype=torch.int64, device=dev)
    vals = torch.empty((b, n_units), dtype=torch.float32, device=dev)
    idx = torch.empty((b, n_units), dtype=torch.int64, device=dev)
    hole_rows, hole_cols = tokens.holes
    for x, off in zip(tensors, offsets):
        if hole_rows.numel():
            x[hole_rows, hole_cols] = float("-inf") if largest else float("inf")
        if not largest:  # minima: maxima of the negated tensor, negated in place and back (no allocation)
            x.neg_()
        v, i = F.max_pool2d(channels_last(x), (t, 1), return_indices=True)
        if not largest and restore:
            x.neg_()
        vals[:, off : off + x.shape[2]] = v[:, :, 0, 0]
        idx[:, off : off + x.shape[2]] = i[:, :, 0, 0]
    return pack_payload(vals if largest else vals.neg_(), idx)


@torch.inference_mode()
def dense_peak_pair(tensors: list[torch.Tensor], offsets: list[int], n_units: int, tokens: RealTokens,
                    bottom: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(maxima, minima or None) int64 [B, U]: `dense_peaks` of both directions in a fixed number of operations.

    The layers' activations are copied once into one [B, T, U] buffer (their common dtype, float32 if they
    differ), so each direction is one fill of the non-real cells, one max-pool and one packing, whatever the
    number of layers (`dense_peaks` runs per layer: on a GPU each is a kernel launch). Maxima and minima are
    exact, so the payloads are `dense_peaks`'s bit for bit for finite activations; the tensors are only read.
    Costs one extra activation-sized buffer.
    Example: a unit's row [8, 2, 7, 7, 9] with real [0 1 1 1 0] -> maximum 7 at 2, minimum 2 at 1.
    """
    b, t = tokens.real.shape
    dev = tokens.real.device
    if tokens.width == 0 or not tensors:
        empty = torch.empty((b, n_units), dtype=torch.int64, device=dev)
        return empty, (empty.clone() if bottom else None)
    dtype = tensors[0].dtype if all(x.dtype == tensors[0].dtype for x in tensors) else torch.float32
    widths = [x.shape[2] for x in tensors]
    if list(offsets[: len(tensors)]) == [sum(widths[:k]) for k in range(len(tensors))] and sum(widths) == n_units:
        x = torch.cat([y.to(dtype) for y in tensors], dim=2) if len(tensors) > 1 else tensors[0].to(dtype, copy=True)
    else:  # units not numbered layer after layer (not a layout's order): copy each layer to its columns
        x = torch.empty((b, t, n_units), dtype=dtype, device=dev)
        for y, off in zip(tensors, offsets):
            x[:, :, off : off + y.shape[2]] = y
    holes = tokens.holes
    fill = torch.full((), float("-inf"), dtype=dtype, device=dev)
    pooled = channels_last(x)

    def pool() -> tuple[torch.Tensor, torch.Tensor]:
        v, i = F.max_pool2d(pooled, (t, 1), return_indices=True)
        return v[:, :, 0, 0], i[:, :, 0, 0]

    if holes[0].numel():
        x.index_put_(holes, fill)
    top = pack_payload(*pool())
    if not bottom:
        return top, None
    if holes[0].numel():  # +inf, so that the negation below makes them -inf
        x.index_put_(holes, fill.neg())
    x.neg_()
    vals, idx = pool()
    return top, pack_payload(vals.neg(), idx)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B, T, W] activations (last dimension contiguous) as a [B, W, T, 1] channels-last image batch, no copy.

    Example: a contiguous [2, 3, 4] tensor (strides 12, 4, 1) -> size [2, 4, 3, 1], strides [12, 1, 4, 4].
    """
    return x.as_strided((x.shape[0], x.shape[2], x.shape[1], 1), (x.stride(0), x.stride(2), x.stride(1), x.stride(1)))


def candidate_peaks(tensors: list[torch.Tensor], offsets: list[int], tokens: RealTokens, units: torch.Tensor,
                    cols: torch.Tensor, largest: bool) -> torch.Tensor:
    """int64 [K]: packed (peak activation, token position) of the candidate cells (units[k], cols[k]) only.

    `units` must be ascending (the order of `mask.nonzero()` over a unit-major [U, B] mask). Per layer the
    candidates' token rows are gathered as a [k, width] tile (x[b, span, u] for each candidate), non-real
    tokens are filled with -inf (+inf for minima) and one reduction over the contiguous last dimension gives
    the peak: the same value and first-on-ties position as `dense_peaks` at those cells, at a cost
    proportional to the candidates instead of B x U.
    Example: one unit, x[0, :, 0] = [9, 4, 7, 7, 1] with real [0 1 1 1 0], candidate (unit 0, row 0)
    -> tile over the span [4, 7, 7] -> peak 7.0 at position 1 + 1 = 2 (the first of the tied 7s).
    """
    lo, width = tokens.lo, tokens.width
    if units.numel() == 0 or width == 0:
        return torch.zeros(units.shape, dtype=torch.int64, device=units.device)
    fill = float("-inf") if largest else float("inf")
    bounds = torch.tensor([off + x.shape[2] for x, off in zip(tensors, offsets)], device=units.device)
    ends = torch.searchsorted(units, bounds).tolist()  # units are ascending: one slice per layer
    vals, idx = [], []
    start = 0
    for x, off, end in zip(tensors, offsets, ends):
        if end == start:
            continue
        b = cols[start:end]
        tile = x[:, lo : lo + width].transpose(1, 2)[b, units[start:end] - off]  # [k, width]
        tile.masked_fill_(~tokens.mask[b], fill)
        red = tile.max(1) if largest else tile.min(1)
        vals.append(red.values)
        idx.append(red.indices)
        start = end
    return pack_payload(torch.cat(vals), torch.cat(idx) + lo)


def real_span(real: torch.Tensor) -> tuple[int, int]:
    """(lo, hi): the token positions that are real in at least one row lie in lo..hi-1.

    Example: real rows [0 1 1 0 0], [0 1 1 1 0] -> (1, 4).
    """
    cols = real.any(0).nonzero()
    return (int(cols[0]), int(cols[-1]) + 1) if cols.numel() else (0, 0)
