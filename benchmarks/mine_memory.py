"""Peak RSS of mining for a small and a 10x larger slice of the default corpus: prints JSON.

Memory should be queues + one batch + one shard, not the corpus: the target is ratio <= 1.15.
Each size runs `miner mine` in a fresh process (inline executor, so the whole miner is one process) on the
bundled MiniLM, all 2,304 hidden units, N=1000 top and bottom.

Usage: python benchmarks/mine_memory.py [--small 20000] [--large 200000] [--corpus data/default]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def run(corpus: Path, sentences: int, top_n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump({"name": f"mem{sentences}", "model": "minilm", "corpus": str(corpus.resolve()),
                                       "output": str(Path(tmp) / "run"), "top_n": top_n, "max_sentences": sentences,
                                       "checkpoint_seconds": 600}))
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "miner.cli", "mine", str(job), "--executor", "inline"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        manifest = json.loads((Path(tmp) / "run" / "manifest.json").read_text())
    if peak <= before:
        raise RuntimeError("peak RSS of a later child was below an earlier one; run sizes in increasing order")
    return {"sentences": manifest["stats"]["sentences"], "seconds": round(seconds, 1),
            "sentences_per_s": round(manifest["stats"]["sentences"] / seconds, 1), "peak_rss_mb": round(peak / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=200_000)
    ap.add_argument("--top-n", type=int, default=1000)
    args = ap.parse_args()
    small = run(Path(args.corpus), args.small, args.top_n)
    large = run(Path(args.corpus), args.large, args.top_n)
    print(json.dumps({"benchmark": "mine_memory", "small": small, "large": large,
                      "rss_ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)}, indent=2))


if __name__ == "__main__":
    main()
