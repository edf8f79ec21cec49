"""Load run: mine a large corpus on Ray and watch memory and queue convergence; prints JSON.

Runs `miner mine JOB` (the real CLI, Ray executor) in a child process and samples the resident memory of its
whole process tree (driver, Ray's own processes, mining actors) every `--every` seconds. Memory should stay flat
(queues + one shard + a batch per actor, not the corpus) and the convergence table should show the queues settling.

The default job, jobs/load-1m.yaml, mines layer 1 of the bundled MiniLM (384 hidden units, N=1000 top and bottom;
only the blocks that layer needs are computed) over 1,000,000 sentences of the default corpus repeated four times:
    miner corpus prepare data/default/shard-*.parquet (x4) --out data/default-x4 --max-sentences 1000000

Usage: python benchmarks/load_run.py [--job jobs/load-1m.yaml] [--every 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from miner.mining.processes import descendants, mining_actor_pids

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_mb(pid: int) -> float:
    try:
        return int((Path(f"/proc/{pid}/statm").read_text().split())[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def sample(root: int) -> dict[str, float]:
    """RSS (MB) of the driver, the mining actors, and the whole tree under the driver."""
    seen = descendants(root)
    actors = mining_actor_pids(root)
    return {"driver": _rss_mb(root), "actors": sum(_rss_mb(p) for p in actors),
            "tree": sum(_rss_mb(p) for p in seen)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="jobs/load-1m.yaml")
    ap.add_argument("--every", type=float, default=2.0, help="Seconds between memory samples.")
    args = ap.parse_args()
    import yaml

    spec = yaml.safe_load(Path(args.job).read_text())
    run_dir = (Path(args.job).resolve().parent / spec["output"]).resolve()
    log_path = run_dir.parent / f"{run_dir.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "miner.cli", "mine", args.job], stdout=log, stderr=log)
        samples: list[dict] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                s = sample(proc.pid)
                s["t"] = round(time.monotonic() - started, 1)
                samples.append(s)
                stop.wait(args.every)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        rc = proc.wait()
        stop.set()
        watcher.join()
    wall = time.monotonic() - started
    if rc != 0:
        raise SystemExit(f"miner mine exited {rc}; see {log_path}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    conv = pq.read_table(run_dir / "convergence.parquet").to_pandas()
    overall = conv[(conv.site == "all")].pivot_table(index="sentences_seen", columns="direction", values="update_rate")
    sentences = manifest["stats"]["sentences"]
    # Memory by progress decile: the peak tree RSS in each tenth of the run's wall time.
    deciles = []
    for k in range(10):
        lo, hi = wall * k / 10, wall * (k + 1) / 10
        window = [s["tree"] for s in samples if lo <= s["t"] < hi]
        deciles.append(round(max(window), 1) if window else None)
    steady = [d for d in deciles[2:] if d is not None]
    print(json.dumps({
        "benchmark": "load_run", "job": args.job, "sentences": sentences, "units": manifest["units"],
        "top_n": manifest["job"]["top_n"], "workers": manifest["workers"]["count"],
        "wall_seconds": round(wall, 1), "sentences_per_s": round(sentences / wall, 1),
        "mining_seconds": manifest["timings"]["last_session_seconds"],
        "peak_rss_mb": {k: round(max(s[k] for s in samples), 1) for k in ("driver", "actors", "tree")},
        "tree_rss_mb_by_decile": deciles,
        "steady_state_growth": round(max(steady) / min(steady), 3) if steady else None,
        "padding_efficiency": manifest["stats"]["padding_efficiency"],
        "update_rate": {str(int(n)): {d: round(float(v), 5) for d, v in row.items()}
                        for n, row in overall.iterrows()},
        "entries_fixed_in_last_block": {d: round(1 - float(overall[d].iloc[-1]), 5) for d in overall.columns},
        "log": str(log_path),
    }, indent=2))


if __name__ == "__main__":
    main()
