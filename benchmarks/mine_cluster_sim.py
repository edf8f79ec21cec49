"""A simulated cluster: 1, 2, 4 and 8 mining actors of a tiny model on logical Ray resources here; prints JSON.

Issue 19: shows whether the driver bounds the cluster and that the tables are identical for any actor
count. The actors share this machine's cores (Ray's CPU resources are logical here), so throughput does not
scale with actors; what matters is the driver's share of the wall time: driver_busy_share = 1 - (time
the driver waited for lanes) / (mining loop time). A driver that bounds the cluster shows a share near 1.

Setting: a random BERT of hidden 64 and 2 layers (hidden + mlp units), N = 100 top and bottom, the first
--sentences of the default corpus in 500-sentence blocks, one torch thread per actor.

Usage: python benchmarks/mine_cluster_sim.py [--sentences 12000] [--workers 1 2 4 8] [--corpus data/default]
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

TABLES = ("top_sentences", "sentences", "units", "unit_moments")


def tiny_bert(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from miner.model.loading import bundled_minilm

    AutoTokenizer.from_pretrained(bundled_minilm()).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                         vocab_size=30522)).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=12_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    args = ap.parse_args()
    import ray

    ray.init(address="local", num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False)
    out: dict = {"benchmark": "mine_cluster_sim", "sentences": args.sentences, "runs": []}
    first: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_bert(Path(tmp) / "model")
        for w in args.workers:
            job = JobSpec(name=f"sim{w}", model=str(model), corpus=Path(args.corpus).resolve(), sites=["hidden", "mlp"],
                          output=Path(tmp) / f"w{w}", top_n=100, max_sentences=args.sentences, workers=w,
                          block_size=500, threads_per_worker=1, checkpoint_seconds=30)
            t = time.perf_counter()
            m = run_mining(job, Path.cwd())
            wall = time.perf_counter() - t
            loop = m["timings"]["loop_seconds"]
            wait = m["timings"]["driver_wait_seconds"]
            same = True
            for name in TABLES:
                got = pq.read_table(Path(tmp) / f"w{w}" / f"{name}.parquet")
                if name in first:
                    same = same and got.equals(first[name])
                else:
                    first[name] = got
            out["runs"].append({"workers": w, "wall_seconds": round(wall, 1),
                                "sentences_per_s": round(m["stats"]["sentences"] / wall, 1),
                                "driver_busy_share": round(1 - wait / loop, 3) if loop else None,
                                "checkpoints": m["timings"]["checkpoints"],
                                "checkpoint_seconds": m["timings"]["checkpoint_seconds"],
                                "tables_identical_to_first": same})
    ray.shutdown()
    out["identical_results"] = all(r["tables_identical_to_first"] for r in out["runs"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
