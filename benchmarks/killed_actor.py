"""Time lost to a killed mining actor: the same job with and without killing one actor mid-run; prints JSON.

Both runs use the real CLI (`miner mine`, Ray executor, 2 actors) on the bundled MiniLM over a slice of the
default corpus. In the second run one actor's process is SIGKILLed once the driver has merged `--kill-after`
blocks; Ray restarts the actor and the driver resubmits its block. Reported: both wall times, the difference
(time lost), and whether the two runs' tables are identical (they must be).

Usage: python benchmarks/killed_actor.py [--corpus data/default] [--sentences 6000] [--kill-after 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from miner.mining.processes import mining_actor_pids

TABLES = ("top_sentences", "sentences", "units", "convergence")


def run(tmp: Path, name: str, spec: dict, kill_after: int | None) -> dict:
    job = tmp / f"{name}.yaml"
    job.write_text(yaml.safe_dump({**spec, "name": name, "output": str(tmp / name)}))
    state = tmp / name / "checkpoint" / "state.json"
    t = time.monotonic()
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - closed after the child exits
    proc = subprocess.Popen([sys.executable, "-m", "miner.cli", "mine", str(job)], stdout=subprocess.DEVNULL,
                            stderr=log)
    killed = None
    while proc.poll() is None:
        if kill_after is not None and killed is None and state.exists():
            try:
                merged = json.loads(state.read_text())["next_block"]
            except (OSError, ValueError):
                merged = 0
            if merged >= kill_after and (pids := mining_actor_pids(proc.pid)):
                os.kill(pids[0], signal.SIGKILL)
                killed = {"pid": pids[0], "at_seconds": round(time.monotonic() - t, 1), "blocks_merged": merged}
        time.sleep(0.2)
    log.close()
    if proc.returncode != 0:
        raise SystemExit(f"{name}: miner mine exited {proc.returncode}; see {tmp / f'{name}.log'}")
    return {"wall_seconds": round(time.monotonic() - t, 1), "killed": killed,
            "resubmitted": "died on block" in (tmp / f"{name}.log").read_text()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=6000)
    ap.add_argument("--block-size", type=int, default=500)
    ap.add_argument("--kill-after", type=int, default=2, help="Kill an actor once this many blocks are merged.")
    args = ap.parse_args()
    spec = {"model": "minilm", "corpus": str(Path(args.corpus).resolve()), "top_n": 1000, "workers": 2,
            "max_sentences": args.sentences, "block_size": args.block_size, "checkpoint_seconds": 0}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clean = run(tmp, "clean", spec, None)
        killed = run(tmp, "killed", spec, args.kill_after)
        identical = all(pq.read_table(tmp / "clean" / f"{t}.parquet").equals(pq.read_table(tmp / "killed" / f"{t}.parquet"))
                        for t in TABLES)
    if killed["killed"] is None:
        raise SystemExit("the run finished before an actor could be killed; use more sentences")
    print(json.dumps({"benchmark": "killed_actor", "sentences": args.sentences, "workers": 2,
                      "block_size": args.block_size, "clean": clean, "with_kill": killed,
                      "time_lost_seconds": round(killed["wall_seconds"] - clean["wall_seconds"], 1),
                      "identical": identical}, indent=2))


if __name__ == "__main__":
    main()
