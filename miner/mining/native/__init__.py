"""Compiled hot paths for CPU mining: per-(sentence, unit) score and peaks in one pass (token_stats.c); a batch's
candidates added to a block's queue window, and the cut of top-N queue rows back to their N best (queues.c).

The C sources ship with the package and are compiled on first use with the machine's C compiler
(`cc -O3 -march=native`) into one library in a per-user cache (`$MINER_NATIVE_CACHE`, default
~/.cache/neuron-miner), one per source text, compiler and CPU, written atomically so concurrent Ray workers
share it. Where no
compiler is found, or the build fails, or `MINER_NATIVE=0`, `available()` is False and mining uses the
torch operations (`BlockMiner.torch_scores` / `dense_peaks`, torch.topk in `TopNQueues.settle`), which stay as
the test oracle either way.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCES = (Path(__file__).with_name("token_stats.c"), Path(__file__).with_name("queues.c"))
FLAGS = ["-O3", "-march=native", "-std=c11", "-shared", "-fPIC"]
OPENMP = ["-fopenmp"]
"""Tried first: the kernel then runs on torch's own OpenMP threads (see token_stats.c); without OpenMP support
it is built single-threaded."""


def _cpu_signature() -> str:
    """The CPU's model and feature flags (a library built with -march=native runs only where they match)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def _cache_dir() -> Path:
    return Path(os.environ.get("MINER_NATIVE_CACHE") or Path.home() / ".cache" / "neuron-miner")


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler found: mining uses the (slower) torch operations for scores and peaks")
        return None
    errors: list[str] = []
    for flags in ([*FLAGS, *OPENMP], FLAGS):
        dll = _build_and_load(compiler, flags, errors)
        if dll is not None:
            fn = dll.miner_token_stats
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            fn.argtypes = [i64, ptr, ptr, ptr, i64, i64, i64, ptr, ctypes.c_int, ctypes.c_int, ptr, ptr, ptr,
                           ctypes.c_int]
            fn.restype = ctypes.c_int64
            hist = dll.miner_score_histogram
            hist.argtypes = [ptr, i64, i64, ctypes.c_int, ptr]
            hist.restype = None
            sums = dll.miner_batch_sums
            sums.argtypes = [ptr, ptr, i64, i64, ctypes.c_int, ptr, ptr, ptr, ptr, ptr, ptr, ctypes.c_int]
            sums.restype = None
            cut = dll.miner_cut_rows
            cut.argtypes = [i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ctypes.c_int]
            cut.restype = i64
            add = dll.miner_window_add
            add.argtypes = [ptr, ptr, i64, i64, i64, ptr, ptr, ptr, ptr, i64, i64, ptr, ptr, ptr, ctypes.c_int]
            add.restype = i64
            merge = dll.miner_merge_rows
            merge.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ctypes.c_int]
            merge.restype = i64
            return dll
    log.warning("building %s with %s failed (%s): mining uses the (slower) torch operations",
                " + ".join(p.name for p in SOURCES), compiler, errors[-1])
    return None


def _build_and_load(compiler: str, flags: list[str], errors: list[str]) -> ctypes.CDLL | None:
    """The cached library for these flags, compiled first if missing; None if compiling or loading fails (the
    reason appended to `errors`)."""
    tag = hashlib.sha256(b"\0".join([*(p.read_bytes() for p in SOURCES), compiler.encode(), " ".join(flags).encode(),
                                     platform.machine().encode(), _cpu_signature().encode()])).hexdigest()[:16]
    lib = _cache_dir() / f"token_stats-{tag}.so"
    if not lib.exists():
        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
                out = Path(tmp) / lib.name
                subprocess.run([compiler, *flags, *map(str, SOURCES), "-o", str(out)], check=True, capture_output=True,
                               text=True, timeout=120)
                os.replace(out, lib)  # atomic: a concurrent worker sees no library or a whole one
        except (OSError, subprocess.SubprocessError) as e:
            if isinstance(e, subprocess.CalledProcessError):
                detail = (e.stderr or "").strip() or f"exit status {e.returncode}"
            else:
                detail = str(e)
            errors.append(detail.splitlines()[-1][:300])
            return None
    try:
        return ctypes.CDLL(str(lib))
    except OSError as e:
        errors.append(f"loading {lib}: {e}")
        return None


def available() -> bool:
    """Whether the compiled kernel is to be used: not switched off (`MINER_NATIVE=0`, read at each call), and
    built (or buildable) and loaded on this machine."""
    return os.environ.get("MINER_NATIVE", "1") != "0" and _library() is not None


@dataclass
class TokenStats:
    """One batch's per-cell statistics from the compiled kernel."""

    scores: torch.Tensor
    """float32 [B, U] sentence scores."""
    top: torch.Tensor
    """int64 [B, U] packed (maximum, its first position)."""
    bottom: torch.Tensor | None
    """int64 [B, U] packed (minimum, its first position), if asked for."""
    finite: bool
    """Every score is finite (so no activation was NaN or infinite, and the peaks are exact)."""


KERNEL_DTYPES = (torch.float32, torch.bfloat16)
"""Activation dtypes the kernel reads (bfloat16 widened exactly to float32 as it is read)."""


def takes(tensors: list[torch.Tensor]) -> bool:
    """Whether the kernel takes these activations: contiguous float32 or bfloat16 (all one dtype) on the CPU."""
    if not tensors or tensors[0].dtype not in KERNEL_DTYPES:
        return False
    dtype = tensors[0].dtype
    return all(x.device.type == "cpu" and x.dtype == dtype and x.is_contiguous() for x in tensors)


def token_stats(tensors: list[torch.Tensor], offsets: list[int], n_units: int, real: torch.Tensor, mean: bool,
                bottom: bool, threads: int | None = None) -> TokenStats:
    """Scores and both peaks of every (sentence, unit) cell for activations [B, T, W_l] (layer l's units at
    columns offsets[l]..): the mean (or, with mean=False, the maximum) over each row's real tokens, and the
    packed (value, first position) of the maximum and the minimum (see `pack_payload`), as
    `BlockMiner.torch_scores` and `dense_peaks` give them for finite activations (peaks are meaningful only
    when `TokenStats.finite`). bfloat16 activations give the bits their float32 copy gives. Rows are split over `threads` OpenMP threads (default: torch's intra-op
    count); the tensors are only read.

    Example: one unit, one row [8, 2, 7, 7, 9] with real [0 1 1 1 0] -> score 16/3, top (7.0, 2), bottom
    (2.0, 1).
    """
    lib = _library()
    if lib is None or not takes(tensors):
        raise RuntimeError("the compiled token statistics are not available for these tensors")
    b, t = real.shape
    if any(x.dim() != 3 or tuple(x.shape[:2]) != (b, t) for x in tensors) or len(offsets) < len(tensors):
        raise ValueError(f"activations must be [B, T, W] with B, T = {b}, {t}, one offset per tensor")
    real_u8 = real.to("cpu", torch.uint8).contiguous()
    scores = torch.empty((b, n_units), dtype=torch.float32)
    top = torch.empty((b, n_units), dtype=torch.int64)
    low = torch.empty((b, n_units), dtype=torch.int64) if bottom else None
    n = len(tensors)
    xs = (ctypes.c_void_p * n)(*[x.data_ptr() for x in tensors])
    widths = (ctypes.c_int64 * n)(*[x.shape[2] for x in tensors])
    offs = (ctypes.c_int64 * n)(*offsets[:n])
    code = lib.miner_token_stats(n, xs, widths, offs, b, t, n_units, real_u8.data_ptr(), int(mean),
                                 threads or torch.get_num_threads(), scores.data_ptr(), top.data_ptr(),
                                 low.data_ptr() if low is not None else None, int(tensors[0].dtype == torch.bfloat16))
    if code < 0:
        raise MemoryError("token statistics: out of memory")
    return TokenStats(scores, top, low, code == 0)


def score_histogram(scores: torch.Tensor, hist: torch.Tensor, threads: int | None = None) -> None:
    """Add the bins of a contiguous float32 [B, U] CPU score matrix to `hist` (int64 [U * sketch.BINS],
    unit-major), as `miner.mining.sketch.score_bins_torch` and an index_add_ would (their compiled twin)."""
    from miner.mining.sketch import BINS

    lib = _library()
    if lib is None:
        raise RuntimeError("the compiled kernel is not available")
    b, u = scores.shape
    if not (scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.is_contiguous()):
        raise ValueError("scores: contiguous float32 on the CPU")
    if not (hist.dtype == torch.int64 and hist.is_contiguous() and hist.numel() == u * BINS):
        raise ValueError(f"hist: contiguous int64 [{u} * {BINS}]")
    lib.miner_score_histogram(scores.data_ptr(), b, u, threads or torch.get_num_threads(), hist.data_ptr())


def batch_sums(scores: list[torch.Tensor], total: torch.Tensor, squares: torch.Tensor, low: torch.Tensor,
               high: torch.Tensor, positive: torch.Tensor, hist: torch.Tensor, threads: int | None = None) -> None:
    """Add contiguous float32 [B_k, U] CPU score matrices (in order) to a block's sums in place, in one pass (the
    compiled twin of `BatchSums.add`'s torch operations): total, squares, positive (float64 [U]) += the column
    sums of the scores, their squares and their positive cells; low, high (float32 [U]) the running minimum and
    maximum (NaN propagates); hist (int32 or int64 [U * sketch.BINS]) += their bins. Column sums run row by row
    in float64 (a matrix product sums in another order: the same to about 1e-15, relative). Several batches at
    once read each unit's histogram once for all of them.

    Example: scores [[[1.0], [-2.0]]] onto zeros, +inf, -inf -> total [-1.0], squares [5.0], low [-2.0],
    high [1.0], positive [1.0].
    """
    from miner.mining.sketch import BINS

    lib = _library()
    if lib is None:
        raise RuntimeError("the compiled kernel is not available")
    u = int(total.shape[0])
    for x in scores:
        if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and x.dim() == 2
                and x.shape[1] == u):
            raise ValueError(f"scores: contiguous float32 [B, {u}] on the CPU")
    for name, t, dtype in (("total", total, torch.float64), ("squares", squares, torch.float64),
                           ("low", low, torch.float32), ("high", high, torch.float32),
                           ("positive", positive, torch.float64)):
        if not (t.dtype == dtype and t.is_contiguous() and t.device.type == "cpu" and tuple(t.shape) == (u,)):
            raise ValueError(f"{name}: contiguous {dtype} [{u}] on the CPU")
    if not (hist.dtype in (torch.int32, torch.int64) and hist.is_contiguous() and hist.numel() == u * BINS):
        raise ValueError(f"hist: contiguous int32 or int64 [{u} * {BINS}]")
    k = len(scores)
    ptrs = (ctypes.c_void_p * k)(*[x.data_ptr() for x in scores])
    rows = (ctypes.c_int64 * k)(*[x.shape[0] for x in scores])
    lib.miner_batch_sums(ptrs, rows, k, u, threads or torch.get_num_threads(), total.data_ptr(), squares.data_ptr(),
                         low.data_ptr(), high.data_ptr(), positive.data_ptr(), hist.data_ptr(),
                         int(hist.dtype == torch.int32))


def cut_rows(keys: torch.Tensor, payload: torch.Tensor, count: torch.Tensor, n: int, width: int,
             before: torch.Tensor | None = None, threads: int | None = None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Cut every row r of contiguous int64 CPU buffers keys, payload [rows, stride] with count[r] > n back to its
    n best keys among slots 0..width-1, in place (the compiled twin of the torch.topk cut in `TopNQueues.settle`):
    the kept entries move to slots 0.. in their slot order, SENTINEL after them, count[r] = n. Returns (rows cut,
    fresh, low), int64 [rows] each: fresh[r] how many kept entries came from slots >= before[r] (0 without
    `before`), -1 for a row not cut; low[r] the smallest key of the row's n slots after the cut (SENTINEL when
    fewer than n are filled), undefined for a row not cut.

    Example (n = 2): a row [5, SENTINEL, 9, 7] with count 4 and before [2] -> [9, 7, SENTINEL, SENTINEL],
    count 2, fresh 2, low 7.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the compiled kernel is not available")
    rows, stride = keys.shape
    for name, t in (("keys", keys), ("payload", payload), ("count", count)):
        if not (t.device.type == "cpu" and t.dtype == torch.int64 and t.is_contiguous()):
            raise ValueError(f"{name}: contiguous int64 on the CPU")
    if payload.shape != keys.shape or count.shape != (rows,) or not 0 <= width <= stride:
        raise ValueError(f"payload [{rows}, {stride}], count [{rows}] and width <= {stride} expected")
    if before is not None:
        before = before.to("cpu", torch.int64).contiguous()
    fresh = torch.empty(rows, dtype=torch.int64)
    low = torch.empty(rows, dtype=torch.int64)
    got = lib.miner_cut_rows(rows, stride, width, n, keys.data_ptr(), payload.data_ptr(), count.data_ptr(),
                             before.data_ptr() if before is not None else None, fresh.data_ptr(), low.data_ptr(),
                             threads or torch.get_num_threads())
    if got < 0:
        raise MemoryError("queue cut: out of memory")
    return int(got), fresh, low


def merge_rows(keys: torch.Tensor, payload: torch.Tensor, count: torch.Tensor, n: int, cand_keys: torch.Tensor,
               cand_payload: torch.Tensor, starts: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """Merge candidates into top-N queue rows in place (the compiled twin of `TopNQueues.merge`'s append and
    top-k): row r of contiguous int64 CPU buffers keys, payload [rows, stride] (entries in slots 0..count[r]-1,
    at most n) takes its candidates cand_keys/cand_payload[starts[r]:starts[r + 1]] (flat int64; SENTINEL keys
    are empty slots) and keeps the n best of both, compacted to slots 0.., count[r] = how many it keeps. Returns
    int64 [rows]: how many of each row's kept entries are candidates.

    Example (n = 2): a row [9, 4] with candidates [7, SENTINEL, 1] -> [9, 7], count 2, gained [1].
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the compiled kernel is not available")
    rows, stride = keys.shape
    for name, t in (("keys", keys), ("payload", payload), ("count", count), ("cand_keys", cand_keys),
                    ("cand_payload", cand_payload), ("starts", starts)):
        if not (t.device.type == "cpu" and t.dtype == torch.int64 and t.is_contiguous()):
            raise ValueError(f"{name}: contiguous int64 on the CPU")
    if (payload.shape != keys.shape or count.shape != (rows,) or starts.shape != (rows + 1,) or not 0 < n <= stride
            or cand_keys.shape != cand_payload.shape or cand_keys.dim() != 1):
        raise ValueError(f"payload [{rows}, {stride}], count [{rows}], starts [{rows + 1}], n <= {stride} and flat "
                         "candidates of one length expected")
    if rows and not (int(starts[0]) == 0 and int(starts[-1]) == cand_keys.numel() and bool((starts.diff() >= 0).all())):
        raise ValueError("starts: row offsets into the candidates, from 0 to their number, ascending")
    gained = torch.empty(rows, dtype=torch.int64)
    got = lib.miner_merge_rows(rows, stride, n, keys.data_ptr(), payload.data_ptr(), count.data_ptr(),
                               cand_keys.data_ptr(), cand_payload.data_ptr(), starts.data_ptr(), gained.data_ptr(),
                               threads or torch.get_num_threads())
    if got < 0:
        raise MemoryError("queue merge: out of memory")
    return gained


def window_add(scores: torch.Tensor, ids: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor | None,
               keys: torch.Tensor, payload: torch.Tensor, n: int, count: torch.Tensor, thresh: torch.Tensor,
               thresh_scores: torch.Tensor, threads: int | None = None) -> int:
    """Add one batch's candidates to a block's window in place (the compiled twin of `candidate_superset`,
    `sparse_candidates`, the peaks and `WindowedQueues.add` / `flush`): for queue row r (R = U top rows, then U
    bottom rows when `bottom` is given) and batch row b in order, the key of (scores[b, u], ids[b]) (bottom rows:
    of -scores[b, u]) enters row r of keys/payload [R, stride] at slot count[r], with the cell's peak top[b, u]
    (bottom[b, u]), when it beats thresh[r]; a full row is first cut to its n best, raising thresh[r] and
    thresh_scores[r] to its n-th best. The scores must be finite. Returns the largest count over the rows.

    Example (n = 1, stride 2, one unit, no bottom): scores [[0.5], [0.9], [0.2]], ids [4, 5, 6], thresh SENTINEL
    -> 0.5 and 0.9 fill the row; 0.2 finds it full: the row is cut to 0.9, whose key 0.2 does not beat; the row
    holds key(0.9, 5) and thresh is that key.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the compiled kernel is not available")
    b, u = scores.shape
    d = 1 if bottom is None else 2
    rows, stride = keys.shape
    if not (scores.dtype == torch.float32 and scores.is_contiguous() and scores.device.type == "cpu"):
        raise ValueError("scores: contiguous float32 on the CPU")
    dense = [("ids", ids, (b,)), ("top", top, (b, u)), ("keys", keys, (d * u, stride)),
             ("payload", payload, (d * u, stride)), ("count", count, (d * u,)), ("thresh", thresh, (d * u,))]
    if bottom is not None:
        dense.append(("bottom", bottom, (b, u)))
    for name, t, shape in dense:
        if not (t.dtype == torch.int64 and t.is_contiguous() and t.device.type == "cpu" and tuple(t.shape) == shape):
            raise ValueError(f"{name}: contiguous int64 {list(shape)} on the CPU")
    if not (thresh_scores.dtype == torch.float32 and thresh_scores.is_contiguous()
            and tuple(thresh_scores.shape) == (d * u,)) or not 0 <= n < stride:
        raise ValueError(f"thresh_scores: contiguous float32 [{d * u}]; n below the row stride {stride}")
    most = lib.miner_window_add(scores.data_ptr(), ids.data_ptr(), b, u, d, top.data_ptr(),
                                bottom.data_ptr() if bottom is not None else None, keys.data_ptr(),
                                payload.data_ptr(), stride, n, count.data_ptr(), thresh.data_ptr(),
                                thresh_scores.data_ptr(), threads or torch.get_num_threads())
    if most < 0:
        raise MemoryError("window add: out of memory")
    return int(most)


__all__ = ["TokenStats", "available", "batch_sums", "cut_rows", "merge_rows", "score_histogram", "takes", "token_stats", "window_add"]
