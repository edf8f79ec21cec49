"""A compiled hot path for CPU mining: per-(sentence, unit) score and peaks in one pass (token_stats.c).

The C source ships with the package and is compiled on first use with the machine's C compiler
(`cc -O3 -march=native`) into a per-user cache (`$MINER_NATIVE_CACHE`, default ~/.cache/neuron-miner),
one library per source, compiler and CPU, written atomically so concurrent Ray workers share it. Where no
compiler is found, or the build fails, or `MINER_NATIVE=0`, `available()` is False and mining uses the
torch operations (`BlockMiner.torch_scores` / `dense_peaks`), which stay as the test oracle either way.
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

SOURCE = Path(__file__).with_name("token_stats.c")
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
            return dll
    log.warning("building %s with %s failed (%s): mining uses the (slower) torch operations", SOURCE.name, compiler,
                errors[-1])
    return None


def _build_and_load(compiler: str, flags: list[str], errors: list[str]) -> ctypes.CDLL | None:
    """The cached library for these flags, compiled first if missing; None if compiling or loading fails (the
    reason appended to `errors`)."""
    tag = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), compiler.encode(), " ".join(flags).encode(),
                                     platform.machine().encode(), _cpu_signature().encode()])).hexdigest()[:16]
    lib = _cache_dir() / f"token_stats-{tag}.so"
    if not lib.exists():
        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
                out = Path(tmp) / lib.name
                subprocess.run([compiler, *flags, str(SOURCE), "-o", str(out)], check=True, capture_output=True,
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


__all__ = ["TokenStats", "available", "score_histogram", "takes", "token_stats"]
