"""Corpus preparation throughput and memory: prints JSON.

- sentences/s for `prepare` on the default corpus's documents (fetched first if missing);
- peak RSS of the preparing process and of its largest worker for 1x and 5x the input (the same document
  files listed 5 times): it must stay flat, because documents stream and shards are flushed as they fill.

Usage: python benchmarks/prepare.py [--workers 2] [--cache cache/sources] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from miner.corpus.prepare import prepare_corpus
from miner.config import PrepareOptions, RunOptions
inputs = [Path(p) for p in json.loads(sys.argv[1])]
t = time.perf_counter()
m = prepare_corpus(inputs, Path(sys.argv[2]), PrepareOptions(format="jsonl", interleave=True), RunOptions(workers=int(sys.argv[3])))
print(json.dumps({"sentences": m.sentences, "tokens": m.tokens, "seconds": time.perf_counter() - t,
                  "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run(inputs: list[Path], workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([str(p) for p in inputs]), f"{tmp}/c", str(workers)],
                             capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    result["sentences_per_s"] = round(result["sentences"] / result["seconds"], 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="cache/sources")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from miner.corpus.sources import write_default_sources

    docs = write_default_sources(Path(args.cache), Path(args.cache) / "documents-v2")
    one = run(docs, args.workers)
    many = run(docs * args.repeat, args.workers)
    print(json.dumps({
        "benchmark": "prepare", "workers": args.workers, "input_files": len(docs),
        "x1": one, f"x{args.repeat}": many,
        "sentences_per_s": one["sentences_per_s"],
        "driver_rss_ratio": round(many["driver_peak_rss_mb"] / one["driver_peak_rss_mb"], 3),
        "worker_rss_ratio": round(many["worker_peak_rss_mb"] / one["worker_peak_rss_mb"], 3),
        "benchmark_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=2))


if __name__ == "__main__":
    main()
