"""GPU mining throughput through the real driver and Ray path (issue 19, item 7): prints JSON.

A BERT-base-size model with random weights (BertConfig(), the bundled MiniLM tokenizer) is saved to a temporary
folder and mined with `miner.mining.driver.run_mining` (executor "ray", a local cluster) over the default corpus
(or --corpus): at least --blocks blocks (10), sites hidden (--sites hidden mlp for both), N = 10,000 top and
bottom, bfloat16 on CUDA. Targets on one H100/H200: >= 20,000 sentences/s, then >= 50,000.

Figures: `sentences_per_s` = sentences / `mining_seconds` (from the moment the actors are ready, model loaded,
to the end of run_mining: every block, checkpoints, the final lane merge and the tables), `end_to_end` the same
over `wall_seconds` (Ray start and model loading included); the manifest's stats and timings (forward, tokenise,
merge, moments and sample seconds as the driver records them: null where it records none); the GPU name, torch
and CUDA versions; the device memory estimate of miner.mining.hardware beside the peak device memory in use
during the run (sampled from torch.cuda.mem_get_info: every process on the GPU, the model and CUDA contexts and
the caching allocator's reserve included, less what was in use before).

`--demo` runs `miner run jobs/demo.yaml` (every stage) with device cuda into a temporary output instead and
reports its wall time. Without a CUDA device (for --device cuda) or without a corpus the script prints a JSON
error and exits non-zero. CPU smoke test: `--device cpu --sentences 2000 --top-n 100` (about a minute here).

Usage: python benchmarks/gpu_throughput.py [--sentences 300000] [--batch-size 1024] [--batch-tokens 65536]
       [--top-n 10000]
       [--sites hidden mlp] [--workers 1] [--device cuda|cpu] [--dtype bfloat16] [--corpus data/default]
       python benchmarks/gpu_throughput.py --demo
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from json_out import add_out_options, check_out, emit

from miner.config import JobSpec, load_job, resolve_job_paths
from miner.errors import MinerError
from miner.mining.hardware import GIB, estimate_mining_memory

DEMO_JOB = Path(__file__).resolve().parents[1] / "jobs" / "demo.yaml"
STAGE_TIMINGS = ("forward_seconds", "tokenize_seconds", "merge_seconds", "moments_seconds", "sample_seconds",
                 "worker_seconds", "checkpoint_seconds", "last_session_seconds")


def fail(message: str, status: int) -> None:
    """A JSON error on stdout and a non-zero exit."""
    print(json.dumps({"benchmark": "gpu_throughput", "error": message}, indent=2))
    sys.exit(status)


def environment(device: str) -> dict[str, Any]:
    cuda = device == "cuda" and torch.cuda.is_available()
    return {"device": device, "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / GIB, 1) if cuda else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count()}


def corpus_sentences(corpus: Path) -> int:
    """Sentences of a prepared corpus (its manifest), or a JSON error naming what to run."""
    manifest = corpus / "manifest.json"
    if not manifest.is_file():
        fail(f"{corpus}: no prepared corpus (no manifest.json); build it with "
             f"`miner corpus fetch default --out {corpus}` or pass --corpus", 2)
    return int(json.loads(manifest.read_text())["sentences"])


class DeviceMemory:
    """Peak bytes in use on GPU 0 (all processes) while running, sampled from torch.cuda.mem_get_info."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.active = torch.cuda.is_available()
        self.baseline = self._used() if self.active else 0
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _used() -> int:
        free, total = torch.cuda.mem_get_info(0)
        return int(total - free)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> DeviceMemory:
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self._stop.set()
            self._thread.join()

    def report(self) -> float | None:
        return round((self.peak - self.baseline) / GIB, 2) if self.active else None


class ActorsReady(logging.Handler):
    """Records when the Ray executor logs that its mining actors are up (model loaded on every actor)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and record.name == "miner.mining.executors" and str(record.msg).startswith("mining on"):
            self.at = time.perf_counter()


def save_bert_base(folder: Path) -> Path:
    """A BERT-base-size model with random weights (seeded) and the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from miner.model.loading import bundled_minilm

    AutoTokenizer.from_pretrained(bundled_minilm()).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(folder)
    return folder


def timings(manifest: dict) -> dict[str, Any]:
    got = manifest.get("timings", {})
    return {**{k: got.get(k) for k in STAGE_TIMINGS}, **{k: v for k, v in got.items() if k not in STAGE_TIMINGS}}


def folder_bytes(path: Path) -> int | None:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else None


def mine(args: argparse.Namespace) -> dict[str, Any]:
    """The throughput run: a temporary BERT-base-size model and run folder, run_mining on Ray."""
    from miner.mining.driver import run_mining

    corpus = Path(args.corpus).resolve()
    available = corpus_sentences(corpus)
    sentences = min(args.sentences, available)
    if sentences < args.blocks:
        fail(f"{corpus}: {available} sentences, too few for {args.blocks} blocks", 2)
    block_size = math.ceil(sentences / args.blocks)
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    batch = args.batch_size or (1024 if args.device == "cuda" else 64)
    budget = args.batch_tokens if args.batch_tokens is not None else (65_536 if args.device == "cuda" else None)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-throughput-"))
    try:
        model = save_bert_base(tmp / "bert-base-random")
        job = JobSpec(name="gpu-throughput", model=str(model), corpus=corpus, output=tmp / "run",
                      sites=list(args.sites), top_n=args.top_n, bottom=True, max_sentences=sentences,
                      block_size=block_size, batch_size=batch, batch_tokens=budget or None,
                      max_length=args.max_length, workers=args.workers,
                      device=args.device, dtype=dtype, checkpoint_seconds=args.checkpoint_seconds)
        from transformers import AutoConfig

        from miner.model.layout import unit_layout

        layout = unit_layout(AutoConfig.from_pretrained(model), list(args.sites), None)
        widths = [w for _, _, w in layout.layers]
        estimate = estimate_mining_memory(layout.n_units, args.top_n, 2, 16 * batch, batch, args.max_length, widths,
                                          torch.empty((), dtype=getattr(torch, dtype)).element_size(), budget or None)
        ready = ActorsReady()
        miner_log = logging.getLogger("miner")
        miner_log.addHandler(ready)
        miner_log.setLevel(logging.INFO)
        with DeviceMemory() as memory:
            t0 = time.perf_counter()
            manifest = run_mining(job, Path.cwd(), executor="ray")
            wall = time.perf_counter() - t0
        miner_log.removeHandler(ready)
        mined = int(manifest.get("stats", {}).get("sentences", 0))
        mining = wall - (ready.at - t0) if ready.at is not None else None
        return {
            "benchmark": "gpu_throughput", **environment(args.device), "dtype": dtype, "sites": list(args.sites),
            "units": layout.n_units, "top_n": args.top_n, "batch_size": batch, "batch_tokens": budget or None,
            "max_length": args.max_length,
            "workers": args.workers, "sentences": mined, "blocks": manifest.get("blocks"), "block_size": block_size,
            "wall_seconds": round(wall, 2),
            "startup_seconds": round(ready.at - t0, 2) if ready.at is not None else None,
            "mining_seconds": round(mining, 2) if mining else None,
            "sentences_per_s": round(mined / mining, 1) if mining else None,
            "sentences_per_s_end_to_end": round(mined / wall, 1) if wall > 0 else None,
            "stats": manifest.get("stats"), "timings": timings(manifest),
            "hardware": manifest.get("hardware"),
            "checkpoint_bytes": folder_bytes(tmp / "run" / "checkpoint"),
            "memory_estimate_gib": {"total": round(estimate.total / GIB, 2),
                                    **{k: round(v / GIB, 2) for k, v in estimate.components().items()}},
            "peak_device_memory_in_use_gib": memory.report(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def demo(args: argparse.Namespace) -> dict[str, Any]:
    """`miner run jobs/demo.yaml` (every stage) on `--device`, into a temporary output; its wall time."""
    job, base = load_job(DEMO_JOB)
    job = resolve_job_paths(job, base, Path.cwd())
    corpus_sentences(job.corpus)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-demo-"))
    try:
        data = job.model_dump(mode="json")
        data.update(output=str(tmp / "demo"), device=args.device, dtype=args.dtype or "auto")
        path = tmp / "demo.yaml"
        path.write_text(json.dumps(data))  # JSON is YAML
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "miner.cli", "run", str(path)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            fail(f"miner run {DEMO_JOB.name} exited {done.returncode}: "
                 f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}", 1)
        manifest = json.loads((tmp / "demo" / "manifest.json").read_text())
        return {"benchmark": "gpu_throughput", "mode": "demo", "job": str(DEMO_JOB), **environment(args.device),
                "dtype": manifest.get("job", {}).get("dtype"), "sentences": manifest.get("stats", {}).get("sentences"),
                "wall_seconds": round(wall, 1), "stats": manifest.get("stats"), "timings": timings(manifest)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/default", help="prepared corpus [data/default]")
    ap.add_argument("--sentences", type=int, default=300_000, help="sentences to mine (at most the corpus')")
    ap.add_argument("--blocks", type=int, default=10, help="blocks the sentences are cut into [10]")
    ap.add_argument("--sites", nargs="+", choices=["hidden", "mlp"], default=["hidden"])
    ap.add_argument("--top-n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=None, help="[1024 on CUDA, 64 on CPU]")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="padded tokens per batch at most [65536 on CUDA, none on CPU]; 0: none")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1, help="mining actors (one per GPU)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                    help="[bfloat16 on CUDA, float32 on CPU]")
    ap.add_argument("--checkpoint-seconds", type=float, default=60)
    ap.add_argument("--demo", action="store_true", help="time `miner run jobs/demo.yaml` on --device instead")
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("no CUDA device (torch.cuda.is_available() is False); use --device cpu for a smoke test", 1)
    try:
        report = demo(args) if args.demo else mine(args)
    except MinerError as exc:
        fail(str(exc), 2)
    emit(report, args)


if __name__ == "__main__":
    main()
