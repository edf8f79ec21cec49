"""bfloat16 against float32 on this CPU: sentences per second of the mining forward + scores, and how far the
bf16 top-K of every unit agrees with the fp32 one; prints JSON.

Issue 18: a plain bf16 forward of MiniLM ran 1.3-1.8x faster than fp32 on a CPU with AMX / AVX512-BF16 and its
top-100 of 2,048 sentences overlapped the fp32 top-100 by 99.5% on average. This measures the same on the machine
it runs on (reporting whether the CPU has those instructions): the first --sentences sentences of the default
corpus, all 2,304 hidden units, `BlockMiner.forward` + `BlockMiner.scores` (float32 scores from bf16 activations),
best of --repeats passes; overlap = |top-K(bf16) & top-K(fp32)| / K per unit.

Usage: python benchmarks/bf16_cpu.py [--sentences 512] [--top 50] [--threads 2] [--repeats 2] [--out F]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from json_out import add_out_options, check_out, emit

from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader
from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.plan import plan_blocks
from miner.model.layout import unit_layout
from miner.model.loading import bundled_minilm, cpu_has_bf16, load_model


def score_all(dtype: str, ids: np.ndarray, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
    loaded = load_model(bundled_minilm(), "cpu", dtype)
    layout = unit_layout(loaded.config, ["hidden"], None)
    miner = BlockMiner(loaded, layout, top_n=1, max_length=128, batch_size=64)
    batches, _ = make_batches(loaded.tokenizer, ids, texts, miner.max_length, 64)
    scores = np.zeros((len(ids), layout.n_units), np.float32)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for batch in batches:
            scores[batch.ids.numpy() - ids[0]] = miner.scores(miner.forward(batch), batch.real).float().numpy()
        best = min(best, time.perf_counter() - t)
    miner.close()
    return scores, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("data/default"))
    ap.add_argument("--sentences", type=int, default=512)
    ap.add_argument("--top", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    torch.set_num_threads(args.threads)
    manifest = load_corpus(args.corpus)
    plan = plan_blocks(manifest, args.sentences, args.sentences)[0]
    ids, texts = CorpusReader(args.corpus, manifest).block(plan)
    ids = np.asarray(ids, np.int64)
    fp32, t32 = score_all("float32", ids, texts, args.repeats)
    bf16, t16 = score_all("bfloat16", ids, texts, args.repeats)
    k = min(args.top, len(ids))
    top32 = np.argpartition(-fp32, k - 1, axis=0)[:k]
    top16 = np.argpartition(-bf16, k - 1, axis=0)[:k]
    overlap = np.array([len(np.intersect1d(top32[:, u], top16[:, u])) / k for u in range(fp32.shape[1])])
    emit({"benchmark": "bf16_cpu", "cpu_has_bf16": cpu_has_bf16(), "sentences": len(ids), "units": fp32.shape[1],
          "threads": args.threads, "fp32_sentences_per_second": round(len(ids) / t32, 1),
          "bf16_sentences_per_second": round(len(ids) / t16, 1), "bf16_speedup": round(t32 / t16, 3),
          "top_k": k, "mean_overlap": round(float(overlap.mean()), 4), "min_overlap": round(float(overlap.min()), 4),
          "max_abs_score_diff": round(float(np.abs(fp32 - bf16).max()), 4)}, args)


if __name__ == "__main__":
    main()
