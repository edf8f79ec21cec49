"""Mining-loop overhead vs a bare forward pass over the same batches, in the same run: prints JSON.

Setting (issue 3): bundled MiniLM, all 2,304 hidden units, N=1000 top and bottom, the first 20K sentences of
the default corpus, 2 CPU threads. The full mining loop (`BlockMiner.mine_block`: forward + scores +
candidates + peaks + windowed queues, then the driver's in-order merge) runs block by block; next to each of
its forward passes (before it, then after it, turn about), the bare forward pass (hidden states only) of the
same batch runs and is timed apart, so machine drift hits both alike. Tokenising is excluded from both.
ratio = bare seconds / mining seconds (= mining sentences/s / bare sentences/s); target >= 0.95. The mining
seconds split into the miner's forward passes and the rest (scores, candidates, peaks, queues, merge);
rest_only_ratio = bare / (bare + rest) is the same ratio without the forward-vs-twin drift.
Also: the same with the mlp site added, padded-token efficiency, and a per-unit heapq (the paper's data
structure) maintaining the same queues on the same scores, for comparison.

Usage: python benchmarks/mine_overhead.py [--corpus data/default] [--sentences 20000] [--threads 2]
       [--skip-hidden | --skip-mlp] [--profile 25]   (also: cProfile of the mining loop, top entries by own time, on stderr)
"""

from __future__ import annotations

import argparse
import cProfile
import heapq
import io
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader
from miner.mining.batches import Batch, make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.plan import plan_blocks
from miner.mining.topn import Candidates, TopNQueues
from miner.model.layout import unit_layout
from miner.model.loading import bundled_minilm, load_model


def measure(loaded, sites: list[str], corpus: Path, sentences: int, top_n: int, block: int, batch: int,
            profile: int = 0) -> dict:
    layout = unit_layout(loaded.config, sites, None)
    miner = BlockMiner(loaded, layout, top_n, True, "mean", 128, batch)
    manifest = load_corpus(corpus)
    plans = plan_blocks(manifest, block, sentences)
    reader = CorpusReader(corpus, manifest)
    prof = cProfile.Profile() if profile else None
    queues = {d: TopNQueues(layout.n_units, top_n) for d in ("top", "bottom")}
    twin = {"seconds": 0.0, "batches": 0}
    mining_forward = miner.forward

    def bare_forward(b: Batch) -> None:
        if prof:
            prof.disable()
        t = time.perf_counter()
        with torch.inference_mode():
            loaded.model(input_ids=b.input_ids, attention_mask=b.attention, output_hidden_states=True)
        twin["seconds"] += time.perf_counter() - t
        if prof:
            prof.enable()

    def forward_with_bare_twin(b: Batch) -> list[torch.Tensor]:
        """The bare forward pass of the same batch right before the miner's own or right after it (turn about,
        so neither always finds the caches warm): drift hits both alike."""
        twin["batches"] += 1
        if twin["batches"] % 2:
            bare_forward(b)
            return mining_forward(b)
        out = mining_forward(b)
        bare_forward(b)
        return out

    miner.forward = forward_with_bare_twin
    bare = mining = merge = forward = 0.0
    block_ratios = []
    attended = computed = 0
    for plan in plans:
        ids, texts = reader.block(plan)
        floors = {d: q.threshold().numpy() for d, q in queues.items()}
        twin["seconds"] = 0.0
        if prof:
            prof.enable()
        t = time.perf_counter()
        result = miner.mine_block(plan.index, ids, texts, floors)
        tm = time.perf_counter()
        for d, q in queues.items():
            q.merge(Candidates.from_numpy(result.directions[d]))
        merge += time.perf_counter() - tm
        bare_block = twin["seconds"]
        mining_block = time.perf_counter() - t - result.stats.tokenize_seconds - bare_block
        if prof:
            prof.disable()
        bare += bare_block
        mining += mining_block
        forward += result.stats.forward_seconds - bare_block
        block_ratios.append(round(bare_block / mining_block, 4))
        attended += result.stats.attended_tokens
        computed += result.stats.computed_tokens
    miner.close()
    if prof:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(profile)
        print(f"# cProfile of the mining loop, sites={sites}\n{text.getvalue()}", file=sys.stderr)
    n = sum(p.rows for p in plans)
    return {"sites": sites, "units": layout.n_units, "sentences": n,
            "bare_sentences_per_s": round(n / bare, 1), "mining_sentences_per_s": round(n / mining, 1),
            "ratio": round(bare / mining, 4), "block_ratios": block_ratios,
            "mining_forward_seconds": round(forward, 2), "bare_forward_seconds": round(bare, 2),
            "mining_rest_seconds": round(mining - forward, 2),
            # the ratio again with the miner's own forward passes counted at their bare twins' time (the same
            # calls on the same batches): on a noisy machine the two forward totals drift apart by a few percent
            "rest_only_ratio": round(bare / (bare + mining - forward), 4),
            "median_block_ratio": round(float(np.median(block_ratios)), 4), "driver_merge_seconds": round(merge, 2),
            "padding_efficiency": round(attended / computed, 4)}


def heapq_comparison(loaded, corpus: Path, top_n: int, batch: int, sentences: int) -> dict:
    """Per-unit heapq (push until N, then pushpop) for top and bottom on the same scores as the miner."""
    layout = unit_layout(loaded.config, ["hidden"], None)
    miner = BlockMiner(loaded, layout, top_n, True, "mean", 128, batch)
    manifest = load_corpus(corpus)
    plan = plan_blocks(manifest, sentences, sentences)[0]
    ids, texts = CorpusReader(corpus, manifest).block(plan)
    batches, _ = make_batches(loaded.tokenizer, ids, texts, miner.max_length, batch)
    scores = []
    for b in batches:
        scores.append((b.ids, miner.scores(miner.forward(b), b.real)))
    miner.close()
    heaps_top: list[list] = [[] for _ in range(layout.n_units)]
    heaps_bottom: list[list] = [[] for _ in range(layout.n_units)]
    convert = maintain = 0.0
    steady = []
    for k, (bid, sc) in enumerate(scores):
        t = time.perf_counter()
        cols = sc.T.tolist()
        idl = bid.tolist()
        convert += time.perf_counter() - t
        t = time.perf_counter()
        for u in range(layout.n_units):
            ht, hb, col = heaps_top[u], heaps_bottom[u], cols[u]
            for s, i in zip(col, idl):
                if len(ht) < top_n:
                    heapq.heappush(ht, (s, -i))
                    heapq.heappush(hb, (-s, -i))
                else:
                    heapq.heappushpop(ht, (s, -i))
                    heapq.heappushpop(hb, (-s, -i))
        dt = time.perf_counter() - t
        maintain += dt
        if (k + 1) * batch > top_n:
            steady.append(dt)
    return {"sentences": sum(len(b) for b, _ in scores), "batches": len(scores),
            "heapq_ms_per_batch": round(1000 * maintain / len(scores), 1),
            "heapq_ms_per_batch_after_fill": round(1000 * float(np.mean(steady)), 1) if steady else None,
            "tensor_to_list_ms_per_batch": round(1000 * convert / len(scores), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top-n", type=int, default=1000)
    ap.add_argument("--block", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-hidden", action="store_true", help="measure only the hidden+mlp setting")
    ap.add_argument("--skip-mlp", action="store_true")
    ap.add_argument("--skip-heapq", action="store_true")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="print the K costliest functions of the mining loop (cProfile, own time) to stderr")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    loaded = load_model(bundled_minilm())
    out = {"benchmark": "mine_overhead", "model": "all-MiniLM-L6-v2", "threads": args.threads, "top_n": args.top_n,
           "bottom": True, "block": args.block, "batch": args.batch}
    if not args.skip_hidden:
        out["hidden"] = measure(loaded, ["hidden"], corpus, args.sentences, args.top_n, args.block, args.batch,
                                args.profile)
    if not args.skip_mlp:
        out["hidden_mlp"] = measure(loaded, ["hidden", "mlp"], corpus, args.sentences, args.top_n, args.block,
                                    args.batch, args.profile)
    if not args.skip_heapq:
        out["heapq"] = heapq_comparison(loaded, corpus, args.top_n, args.batch, 2000)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
