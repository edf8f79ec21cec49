"""Cost of the score sample during mining: mining seconds with sample.sentences 0 vs N, prints JSON.

Setting (issue 15): the bundled MiniLM, hidden and mlp sites (every unit), the first `--sentences` sentences of
the default corpus, one inline worker (the real driver: dispatch, in-order merge, checkpoints, the sample's
shards and its final matrix). Runs alternate A (sample 0) and B (sample N) `--repeats` times, each into a fresh
folder, so machine drift hits both alike. With N >= --sentences every mined sentence is sampled: an upper
bound on the cost. ratio = median B seconds / median A seconds - 1 (target <= 0.02), for the whole session (model
load and finish included) and for the blocks' worker seconds alone. On a shared machine these ratios drift with
the load, so the cost is also measured inside each B run, where drift cannot reach it: the seconds mining spends
on the sample (gathering rows on the worker, the shards, the final matrix: manifest timings.sample_seconds +
sample.finish_seconds) as a share of the session (`in_run_share`, target <= 0.02). The unit moments (always
on) are timed the same way (timings.moments_seconds, as a share of the worker seconds).

Usage: python benchmarks/sample_cost.py [--corpus data/default] [--sentences 3000] [--sample 10000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from json_out import add_out_options, check_out, emit

from miner.config import load_job
from miner.mining.driver import run_mining


def mine_once(folder: Path, corpus: Path, sentences: int, sample: int, threads: int, batch: int) -> dict:
    """One fresh run; (session seconds, worker seconds, forward seconds, batches, units, sample rows)."""
    job = {"name": f"cost-{sample}", "model": "minilm", "corpus": str(corpus.resolve()), "output": str(folder),
           "sites": ["hidden", "mlp"], "top_n": 100, "max_sentences": sentences, "batch_size": batch,
           "threads_per_worker": threads, "sample": {"sentences": sample, "seed": 0}}
    path = folder.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(job))
    t0 = time.perf_counter()
    manifest = run_mining(*load_job(path), executor="inline")
    seconds = time.perf_counter() - t0
    shutil.rmtree(folder)
    timings = manifest["timings"]
    return {"seconds": seconds, "worker_seconds": timings["worker_seconds"],
            "forward_seconds": timings["forward_seconds"], "batches": manifest["stats"]["batches"],
            "units": manifest["units"], "sample_rows": manifest["sample"]["rows"],
            "sample_seconds": timings["sample_seconds"] + manifest["sample"].get("finish_seconds", 0.0),
            "moments_seconds": timings["moments_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/default"))
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--sample", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    add_out_options(parser)
    ns = parser.parse_args()
    check_out(ns)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(ns.threads)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="sample-cost-") as tmp:
        for k in range(ns.repeats):
            for label, n in (("off", 0), ("on", ns.sample)):
                runs[label].append(mine_once(Path(tmp) / f"{label}-{k}", ns.corpus, ns.sentences, n, ns.threads,
                                             ns.batch_size))
    med = {label: {f: statistics.median(r[f] for r in rs) for f in ("seconds", "worker_seconds", "forward_seconds")}
           for label, rs in runs.items()}
    units = runs["on"][0]["units"]
    emit({
        "benchmark": "sample_cost", "model": "minilm", "sites": ["hidden", "mlp"], "units": units,
        "sentences": ns.sentences, "sample_sentences": ns.sample, "sample_rows": runs["on"][0]["sample_rows"],
        "repeats": ns.repeats, "threads": ns.threads, "order": "A B A B (A: sample 0, B: sample on)",
        "seconds_off": [round(r["seconds"], 3) for r in runs["off"]],
        "seconds_on": [round(r["seconds"], 3) for r in runs["on"]],
        "worker_seconds_off": [round(r["worker_seconds"], 3) for r in runs["off"]],
        "worker_seconds_on": [round(r["worker_seconds"], 3) for r in runs["on"]],
        "ratio": round(med["on"]["seconds"] / med["off"]["seconds"] - 1, 4),
        "worker_ratio": round(med["on"]["worker_seconds"] / med["off"]["worker_seconds"] - 1, 4),
        "target_ratio": 0.02,
        "sample_seconds_on": [round(r["sample_seconds"], 3) for r in runs["on"]],
        "in_run_share": round(statistics.median(r["sample_seconds"] / r["seconds"] for r in runs["on"]), 5),
        "moments_seconds": [round(r["moments_seconds"], 3) for rs in runs.values() for r in rs],
        "moments_share_of_worker": round(statistics.median(r["moments_seconds"] / r["worker_seconds"]
                                                           for rs in runs.values() for r in rs), 5),
    }, ns)


if __name__ == "__main__":
    main()
