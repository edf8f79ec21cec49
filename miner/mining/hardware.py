"""Correctness guards for mining on GPUs: the hardware a run was mined on, TF32 off, and the device memory check.

A run's queues are exact for the scores its hardware computes; another device type or dtype computes other
scores (and a GPU model, torch or CUDA version may round differently in the last bit), so a resume on other
hardware would merge two different scorings. `HardwareIdentity` records what computed a run; its device type and
dtype (`result_identity`) belong in the run fingerprint, the rest is checked on resume (`check_same_hardware`).

`estimate_mining_memory` adds up what one mining actor holds on its device beyond the model weights, and
`fit_window` checks it against the device's free memory before the first block, shrinking the block's queue
window (which changes speed, never results) or refusing the layout with the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from miner.errors import ConfigError, MinerError
from miner.mining.sketch import BINS as SKETCH_BINS
from miner.model.loading import LoadedModel

log = logging.getLogger(__name__)

GIB = 1 << 30
_RESULT_FIELDS = ("device", "dtype")
"""The fields of an identity that change what is computed: they go into the run fingerprint."""


@dataclass(frozen=True)
class HardwareIdentity:
    """What computed a run's scores.

    Example: a CUDA bf16 actor -> HardwareIdentity("cuda", "bfloat16", "NVIDIA H200", "2.13.0", "12.8");
    the CPU build here -> HardwareIdentity("cpu", "float32", None, "2.13.0+cpu", None).
    """

    device: str
    """Resolved device type: "cpu" or "cuda" (never "auto")."""
    dtype: str
    """Resolved model dtype: "float32", "bfloat16" or "float16" (never "auto")."""
    gpu_name: str | None
    """torch.cuda.get_device_name of the actor's GPU; None on CPU."""
    torch_version: str
    """torch.__version__ (the build tag included, e.g. "2.13.0+cpu")."""
    cuda_version: str | None
    """torch.version.cuda: the CUDA toolkit torch was built with; None for CPU builds."""

    def as_dict(self) -> dict[str, Any]:
        """The identity as a JSON-able dict (manifest, checkpoint)."""
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> HardwareIdentity:
        """Inverse of `as_dict`; ValueError when a field is missing or not a string.

        >>> h = HardwareIdentity("cuda", "bfloat16", "NVIDIA H200", "2.13.0", "12.8")
        >>> HardwareIdentity.from_dict(h.as_dict()) == h
        True
        """
        values: dict[str, Any] = {}
        for f in fields(HardwareIdentity):
            if f.name not in data:
                raise ValueError(f"hardware identity has no {f.name}")
            value = data[f.name]
            if not (isinstance(value, str) or (value is None and f.name in ("gpu_name", "cuda_version"))):
                raise ValueError(f"hardware identity {f.name}: expected a string, found {value!r}")
            values[f.name] = value
        return HardwareIdentity(**values)

    def describe(self) -> str:
        """One phrase for messages.

        >>> HardwareIdentity("cuda", "bfloat16", "NVIDIA H200", "2.13.0", "12.8").describe()
        'cuda bfloat16 on NVIDIA H200 (torch 2.13.0, CUDA 12.8)'
        >>> HardwareIdentity("cpu", "float32", None, "2.13.0+cpu", None).describe()
        'cpu float32 (torch 2.13.0+cpu)'
        """
        where = f" on {self.gpu_name}" if self.gpu_name else ""
        cuda = f", CUDA {self.cuda_version}" if self.cuda_version else ""
        return f"{self.device} {self.dtype}{where} (torch {self.torch_version}{cuda})"


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def identity_of(loaded: LoadedModel) -> HardwareIdentity:
    """The identity of the hardware a loaded model computes on (call it inside the mining actor)."""
    device = loaded.device.type
    gpu = torch.cuda.get_device_name(loaded.device) if device == "cuda" else None
    return HardwareIdentity(device, dtype_name(loaded.dtype), gpu, str(torch.__version__), torch.version.cuda)


def result_identity(identity: HardwareIdentity) -> dict[str, str]:
    """The part of an identity that changes results, for the run fingerprint: device type and dtype.

    The GPU model and the torch and CUDA versions are not in it (a run may move to another node of the same
    kind); `check_same_hardware` compares them on resume instead.
    >>> result_identity(HardwareIdentity("cuda", "bfloat16", "NVIDIA H200", "2.13.0", "12.8"))
    {'device': 'cuda', 'dtype': 'bfloat16'}
    """
    return {name: getattr(identity, name) for name in _RESULT_FIELDS}


def hardware_differences(saved: dict[str, Any], current: HardwareIdentity) -> list[str]:
    """The fields of `saved` (an `as_dict`) that differ from `current`, as "name: old -> new"; fields that an
    older record lacks are not compared.

    >>> old = {"device": "cuda", "dtype": "bfloat16", "gpu_name": "NVIDIA A100-SXM4-80GB"}
    >>> hardware_differences(old, HardwareIdentity("cuda", "bfloat16", "NVIDIA H200", "2.13.0", "12.8"))
    ['gpu_name: NVIDIA A100-SXM4-80GB -> NVIDIA H200']
    """
    now = current.as_dict()
    return [f"{name}: {saved[name]} -> {now[name]}" for name in now if name in saved and saved[name] != now[name]]


def check_same_hardware(saved: dict[str, Any] | None, current: HardwareIdentity, where: Path, allow: bool) -> None:
    """Refuse to resume a run on other hardware than it was mined on: one ConfigError line naming the run folder,
    both identities and what differs; with `allow` (--allow-other-hardware) a log warning instead. `saved` is the
    identity the run recorded (`as_dict`); None (a checkpoint written before identities were recorded) passes.
    """
    if saved is None:
        return
    diffs = hardware_differences(saved, current)
    if not diffs:
        return
    try:
        before = HardwareIdentity.from_dict(saved).describe()
    except ValueError:
        before = ", ".join(f"{k} {v}" for k, v in sorted(saved.items()))
    what = "; ".join(diffs)
    if allow:
        log.warning("%s: resuming on other hardware (%s) as --allow-other-hardware asks: mined so far on %s, now on "
                    "%s; scores of the two parts may differ in the last bits", where, what, before, current.describe())
        return
    raise ConfigError(f"{where}: was mined on {before}, this session runs on {current.describe()} ({what}); scores "
                      "may differ in the last bits and the queues would mix both: run on the same hardware, pass "
                      "--allow-other-hardware to resume anyway, or delete the folder to mine from the start")


def check_workers_agree(identities: Sequence[HardwareIdentity]) -> HardwareIdentity:
    """The identity of a session's mining actors: one MinerError line when they compute differently (CPU and GPU
    actors, or different dtypes, in one session). Fields that only differ in the GPU model or versions are
    combined, sorted and comma-joined (so a resume compares the whole fleet), with a log warning.

    >>> h100 = HardwareIdentity("cuda", "bfloat16", "NVIDIA H100", "2.13.0", "12.8")
    >>> check_workers_agree([h100, h100]) == h100
    True
    >>> check_workers_agree([h100, HardwareIdentity("cpu", "float32", None, "2.13.0", None)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    miner.errors.MinerError: workers: the mining actors compute differently (device cpu, cuda; dtype bfloat16, float32): ...
    """
    if not identities:
        raise ValueError("no worker identities")
    first = identities[0]
    mixed = {name: sorted({str(getattr(h, name)) for h in identities}) for name in _RESULT_FIELDS}
    mixed = {k: v for k, v in mixed.items() if len(v) > 1}
    if mixed:
        what = "; ".join(f"{k} {', '.join(v)}" for k, v in mixed.items())
        raise MinerError(f"workers: the mining actors compute differently ({what}): their scores would not be "
                         "comparable; set the job's device and dtype (e.g. device: cuda, dtype: bfloat16) or run on "
                         "nodes of one kind")
    combined: dict[str, Any] = first.as_dict()
    for name in ("gpu_name", "torch_version", "cuda_version"):
        values = sorted({str(getattr(h, name)) for h in identities if getattr(h, name) is not None})
        if len(values) > 1:
            combined[name] = ", ".join(values)
            log.warning("workers: the mining actors differ in %s (%s): results may differ in the last bits from a "
                        "run on one kind of node", name, combined[name])
    return HardwareIdentity.from_dict(combined)


def disable_tf32() -> None:
    """Full float32 precision for CUDA matmuls (the scores' weighted-mean bmm) and cuDNN: no TensorFloat-32.

    Uses the fp32_precision API that torch 2.9+ documents ("ieee" = no lower internal precision; setting the
    legacy allow_tf32 flags as well mixes the two APIs, which torch refuses to read back), and the legacy flags
    on an older torch. Idempotent; a no-op for CPU kernels. Call it in each mining actor before mining.
    """
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]
        torch.backends.cudnn.rnn.fp32_precision = "ieee"  # type: ignore[attr-defined]
    else:  # torch < 2.9
        matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")


def tf32_disabled() -> bool:
    """Whether `disable_tf32` is in effect (matmul, cuDNN conv and RNN all at full float32 precision)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return (matmul.fp32_precision == "ieee" and torch.backends.cudnn.conv.fp32_precision == "ieee"  # type: ignore[attr-defined]
                and torch.backends.cudnn.rnn.fp32_precision == "ieee")  # type: ignore[attr-defined]
    return not matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one mining actor needs on its device beyond the model weights, per component (see
    `estimate_mining_memory`). The batch phase (activations, batch temporaries and a flush of the window) and
    the lane merge after each block do not overlap; the queues live throughout."""

    persistent_queues: int
    """The lane's top-N/bottom-N queues kept across blocks: rows x (N + N spare) int64 keys and payloads (the torch
    path, as on a GPU; the CPU's compiled merge, `native.merge_rows`, needs no spare columns)."""
    window_queue: int
    """The block's windowed queue: rows x (N + window) int64 keys and payloads, plus per-row counters."""
    activations: int
    """The mined tensors of one batch [batch, max_length, width] in the model dtype (+ one float32 copy)."""
    batch: int
    """One batch's scores, signed scores, candidate mask, keys (with their encoding's intermediates) and peaks,
    and the block's score histogram with the batch's bins."""
    flush: int
    """A flush of the window: top-k values and indices and the gathered payloads [rows, N], plus copies of the
    rows being cut [rows, N + window] (keys and payloads) when not every row is, and a few [rows] counters (the
    torch path, as on a GPU; the CPU's compiled cut, `native.cut_rows`, needs one scratch row per thread)."""
    merge: int
    """Merging a block into the lane: the block's entries [rows, N] (keys, payloads), the top-k over
    [rows, 2N] (values, indices, gathered payloads), the masks counting what it gained, a few [rows] counters."""

    @property
    def queues(self) -> int:
        return self.persistent_queues + self.window_queue

    @property
    def total(self) -> int:
        """Peak bytes: the queues, plus the larger of the batch phase and the merge."""
        return self.queues + max(self.activations + self.batch + self.flush, self.merge)

    def components(self) -> dict[str, int]:
        return {"persistent_queues": self.persistent_queues, "window_queue": self.window_queue,
                "activations": self.activations, "batch": self.batch, "flush": self.flush, "merge": self.merge}

    def describe(self) -> str:
        """The components in GiB, for messages."""
        return ", ".join(f"{k.replace('_', ' ')} {v / GIB:.1f}" for k, v in self.components().items())


def estimate_mining_memory(n_units: int, top_n: int, directions: int, window: int, batch_size: int,
                           max_length: int, hidden_widths: list[int], dtype_bytes: int,
                           batch_tokens: int | None = None) -> MemoryEstimate:
    """Device bytes one mining actor needs beyond the model weights (the model's own forward working memory, e.g.
    hidden states it computes but no unit reads, is not counted: `fit_window` keeps a headroom for it).

    Rows: directions x n_units queue rows (top, then bottom). The queues: `TopNQueues(rows, N)` of the lane
    ([rows, 2N] int64 keys + payloads, count [rows]) and the block's `WindowedQueues(rows, N, window)` ([rows,
    N + window], count, floor, thresh int64 and thresh_scores float32 [rows]), exactly their buffers' nbytes.
    Worked example, BERT-base (12 layers x 768 hidden, FFN 3,072), N = 10,000, top and bottom, batch 64 (the
    default window 16 x 64 = 1,024), max_length 128, bfloat16:

    >>> hidden = estimate_mining_memory(9216, 10_000, 2, 1024, 64, 128, [768] * 12, 2)
    >>> round(hidden.persistent_queues / 1e9, 2), round(hidden.window_queue / 1e9, 2), round(hidden.total / 1e9, 1)
    (5.9, 3.25, 17.1)
    >>> both = estimate_mining_memory(9216 + 36864, 10_000, 2, 1024, 64, 128, [768] * 12 + [3072] * 12, 2)
    >>> round(both.queues / 1e9, 1), round(both.flush / 1e9, 1), round(both.merge / 1e9, 1), round(both.total / 1e9, 1)
    (45.8, 38.4, 39.6, 85.4)

    So sites [hidden, mlp] at N = 10,000 need about 85 GB on one GPU (the issue's "about 80 GB"): 29.5 GB of
    lane queues and 16.3 GB of window throughout, then 39.6 GB to merge a block into the lane (38.4 GB for a
    flush that cuts most but not all rows); hidden alone 17 GB. The window is small beside N here: at the
    smallest window (64) the layout still needs 84 GB.
    """
    rows = directions * n_units
    i64, f32 = 8, 4
    persistent = rows * 2 * top_n * 2 * i64 + rows * i64
    width = top_n + window
    window_queue = rows * width * 2 * i64 + rows * (3 * i64 + f32)
    cells = batch_size * max_length  # padded tokens of the largest batch (a token budget caps them)
    if batch_tokens is not None:
        cells = min(cells, max(batch_tokens, max_length))
    tensors = cells * sum(hidden_widths) * dtype_bytes
    upcast = cells * max(hidden_widths, default=0) * f32 if dtype_bytes != f32 else 0
    # scores [B, U] float32; per queue row and batch row: signed score (float32), candidate mask (bool), key and
    # its two int64 encoding intermediates, peak payload (int64)
    batch = batch_size * n_units * f32 + batch_size * rows * (f32 + 1 + 3 * i64 + i64)
    # the score histogram: its counts [U, BINS] int64, and per batch cell a bin (int32, then its int64 index)
    sketch = n_units * SKETCH_BINS * i64 + batch_size * n_units * (4 + i64)
    counters = rows * 8 * i64  # row indices, counts and thresholds of a flush or merge: a few int64 [rows]
    flush = rows * top_n * 3 * i64 + rows * width * 2 * i64 + counters
    # the block's entries (keys, payloads), the top-k (values, indices, payloads) and its gain masks (3 bool)
    merge = rows * top_n * 2 * i64 + rows * top_n * (3 * i64 + 3) + counters
    return MemoryEstimate(persistent, window_queue, tensors + upcast, batch + sketch, flush, merge)


def free_device_bytes(device: torch.device | str) -> int | None:
    """Free bytes on a CUDA device (torch.cuda.mem_get_info); None for other devices (not checked)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)


def fit_window(n_units: int, top_n: int, directions: int, window: int, batch_size: int, max_length: int,
               hidden_widths: list[int], dtype_bytes: int, device: torch.device | str = "cpu",
               free_bytes: int | None = None, share: float = 1.0, headroom: float = 0.1,
               batch_tokens: int | None = None) -> int:
    """The queue window one actor can afford: `window` if the layout fits the device's free memory, else the
    largest smaller multiple of batch_size that fits, with a log warning (a smaller window flushes more
    often: slower, same results); a ConfigError line with the numbers when even batch_size does not fit.

    Free memory is `free_bytes` when given, else torch.cuda.mem_get_info on a CUDA `device` (call it after the
    model is on the device, so the weights are already taken); on CPU without `free_bytes` nothing is checked.
    Of it, this actor counts `share` (its fraction of the GPU when several actors share one, e.g. the job's
    gpus_per_worker) less a `headroom` fraction for the model's forward, cuBLAS workspaces and fragmentation.

    >>> args = (9216 + 36864, 10_000, 2, 1024, 64, 128, [768] * 12 + [3072] * 12, 2)
    >>> fit_window(*args, free_bytes=139 * GIB)
    1024
    >>> fit_window(*args, free_bytes=88 * GIB)
    768
    >>> fit_window(*args, free_bytes=80 * GIB)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    miner.errors.ConfigError: memory: mining 46080 units (N = 10000, ...) needs 79.5 GiB ... run fewer workers per GPU
    """
    window = max(window, batch_size)
    free = free_bytes if free_bytes is not None else free_device_bytes(device)
    if free is None:
        return window
    usable = int(free * share * (1.0 - headroom))

    def need(w: int) -> MemoryEstimate:
        return estimate_mining_memory(n_units, top_n, directions, w, batch_size, max_length, hidden_widths,
                                      dtype_bytes, batch_tokens)

    wanted = need(window)
    if wanted.total <= usable:
        return window
    smallest = need(batch_size)
    if smallest.total > usable:
        raise ConfigError(
            f"memory: mining {n_units} units (N = {top_n}, {directions} direction(s), batch_size {batch_size}, "
            f"window {window}) needs {wanted.total / GIB:.1f} GiB on {torch.device(device)} beyond the model "
            f"({wanted.describe()} GiB), {usable / GIB:.1f} GiB of {free / GIB:.1f} GiB free is usable (even the "
            f"smallest window, {batch_size}, needs {smallest.total / GIB:.1f} GiB): lower top_n, mine fewer sites "
            "or layers, lower batch_size, or run fewer workers per GPU")
    lo, hi = 1, -(-window // batch_size)  # in batches: need(lo) fits, need(hi) does not; need grows with the window
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(mid * batch_size).total <= usable else (lo, mid)
    lo *= batch_size
    log.warning("memory: queue window lowered from %d to %d so that %d units (N = %d) fit the %.1f GiB usable on %s "
                "(%.1f GiB needed at window %d: %s GiB); same results, more frequent flushes", window, lo, n_units,
                top_n, usable / GIB, torch.device(device), wanted.total / GIB, window, wanted.describe())
    return lo
