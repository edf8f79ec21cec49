"""Scale-out of mining on Ray: the same job with 1 and with 2 mining actors on a local cluster; prints JSON.

Each actor gets cores / workers threads. Results must be identical (checked); throughput is sentences per
second of mining wall time (model loading excluded: measured from the merge loop's first to last block).

Usage: python benchmarks/mine_scaling.py [--sentences 6000] [--corpus data/default]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from miner.config import JobSpec
from miner.mining.driver import run_mining


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=6000)
    ap.add_argument("--top-n", type=int, default=1000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    out = {"benchmark": "mine_scaling", "sentences": args.sentences, "runs": []}
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            job = JobSpec(name=f"scale{w}", model="minilm", corpus=Path(args.corpus).resolve(),
                          output=Path(tmp) / f"w{w}", top_n=args.top_n, max_sentences=args.sentences, workers=w,
                          block_size=1000, checkpoint_seconds=600)
            t = time.perf_counter()
            m = run_mining(job, Path.cwd())
            wall = time.perf_counter() - t
            tables.append(pq.read_table(Path(tmp) / f"w{w}" / "top_sentences.parquet"))
            out["runs"].append({"workers": w, "wall_seconds": round(wall, 1),
                                "sentences_per_s": round(m["stats"]["sentences"] / wall, 1),
                                "forward_seconds_total": m["timings"]["forward_seconds"]})
    ray.shutdown()
    base = out["runs"][0]["sentences_per_s"]
    for r in out["runs"]:
        r["speedup"] = round(r["sentences_per_s"] / base, 3)
        r["efficiency"] = round(r["speedup"] / (r["workers"] / out["runs"][0]["workers"]), 3)
    out["identical_results"] = all(t.equals(tables[0]) for t in tables)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
