"""GPU mining throughput for a BERT-base-size model (random weights from config): prints JSON.

Issue 3's GPU figure: bf16, all 9,216 hidden units (12 x 768), N=10,000 top and bottom, big batches; target
>= 20,000 sentences/s on one H100. Sentences come from the default corpus (repeated to --sentences).
Needs CUDA; exits with a JSON error otherwise.

Usage: python benchmarks/gpu_throughput.py [--sentences 300000] [--batch 1024] [--top-n 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from miner.mining.block_miner import BlockMiner
from miner.mining.topn import Candidates, TopNQueues
from miner.model.layout import unit_layout
from miner.model.loading import bundled_minilm, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=300_000)
    ap.add_argument("--block", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--top-n", type=int, default=10_000)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu_throughput", "error": "no CUDA device"}))
        sys.exit(1)
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(tempfile.mkdtemp()) / "bert-base-random"
    AutoTokenizer.from_pretrained(bundled_minilm()).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(folder)
    loaded = load_model(folder, device="cuda", dtype="bfloat16")
    layout = unit_layout(loaded.config, ["hidden"], None)
    miner = BlockMiner(loaded, layout, args.top_n, True, "mean", 128, args.batch, window=4 * args.batch)
    texts = pa.concat_tables([pq.read_table(p, columns=["text"]) for p in sorted(Path(args.corpus).glob("shard-*.parquet"))])["text"].to_pylist()
    texts = (texts * (args.sentences // len(texts) + 1))[: args.sentences]
    queues = {d: TopNQueues(layout.n_units, args.top_n, "cuda") for d in ("top", "bottom")}
    warm = miner.mine_block(0, np.arange(args.batch), texts[: args.batch], None)  # CUDA init, kernels
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fwd = tok = 0.0
    for k, lo in enumerate(range(0, len(texts), args.block)):
        part = texts[lo : lo + args.block]
        floors = {d: q.threshold().cpu().numpy() for d, q in queues.items()}
        res = miner.mine_block(k, np.arange(lo, lo + len(part)), part, floors)
        for d, q in queues.items():
            q.merge(Candidates.from_numpy(res.directions[d]))
        fwd += res.stats.forward_seconds
        tok += res.stats.tokenize_seconds
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    print(json.dumps({"benchmark": "gpu_throughput", "device": torch.cuda.get_device_name(0), "dtype": "bfloat16",
                      "units": layout.n_units, "top_n": args.top_n, "batch": args.batch, "sentences": len(texts),
                      "seconds": round(wall, 2), "sentences_per_s": round(len(texts) / wall, 1),
                      "forward_seconds": round(fwd, 2), "tokenize_seconds": round(tok, 2),
                      "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      "warmup_block_sentences": warm.stats.sentences}, indent=2))


if __name__ == "__main__":
    main()
