"""The mining driver's ceiling at BERT-base scale, with synthetic lane reports: prints JSON.

Issue 19: with queues on the actors (miner.mining.lanes) the driver only sends blocks and accounts for each
block's report (counters, moment sums, convergence counts, score-sample shard). Setting: the BERT-base layout
(12 x 768 = 9,216 hidden units), N = 10,000 top and bottom, 100,000-sentence blocks, a 10,000-sentence score
sample over a 2M-sentence corpus (500 sample rows per block). Measured here, per block:
- bytes sent to an actor (the block's ids and texts, pickled as Ray would) and bytes back (the report);
- driver seconds: reading the block's texts from the corpus (when --corpus is given), pickling both ways,
  and `LaneLoop._account` (the real accounting code, sample shard written to a temp run folder);
- the sentences/s the driver could absorb (block rows / driver seconds; target >= 1,000,000);
- for comparison, the bytes the pre-lane design shipped back per early block (dense candidates of both
  directions: 2 x 9,216 x N keys and payloads);
- one lane checkpoint: seconds and bytes to write one actor's queues (`save_lane`), which actors do in
  parallel (--checkpoint-units 0 skips it).

Usage: python benchmarks/driver_ceiling.py [--block 100000] [--top-n 10000] [--corpus data/default]
       [--blocks 5] [--checkpoint-units 9216]
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from miner.config import JobSpec
from miner.mining.block_miner import BlockResult, BlockStats
from miner.mining.checkpoint import MiningState
from miner.mining.lane_loop import LaneLoop
from miner.mining.lanes import LaneBlock, LaneReport, save_lane
from miner.mining.moments import MomentSums
from miner.mining.plan import BlockPlan
from miner.mining.sketch import BINS
from miner.model.layout import UnitLayout
from miner.run.folder import RunFolder


def synthetic_report(block: int, rows: int, n_units: int, top_n: int, sample_rows: int,
                     rng: np.random.Generator) -> LaneReport:
    stats = BlockStats(sentences=rows, real_tokens=rows * 25, attended_tokens=rows * 27, computed_tokens=rows * 30,
                       batches=rows // 1024 + 1, seconds=2.0, forward_seconds=1.5)
    hist = np.zeros((n_units, BINS), np.int32)  # a block's score histogram, as a worker sends it (int32)
    hist[:, 150:250] = rows // 100
    moments = MomentSums(rows, rng.normal(size=n_units), rng.random(n_units) * rows, rng.normal(size=n_units),
                         rng.normal(size=n_units), rng.integers(0, rows, n_units), hist)
    result = BlockResult(block=block, stats=stats, moments=moments,
                         sample=rng.normal(size=(sample_rows, n_units)).astype(np.float32))
    gains = rng.integers(0, top_n, size=2 * n_units).astype(np.int64)
    return LaneReport(block % 8, 0, block // 8, block=block, result=result, gains=gains, instance="bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--block", type=int, default=100_000)
    ap.add_argument("--top-n", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--sample-rows", type=int, default=500)
    ap.add_argument("--corpus", default=None, help="prepared corpus to read real block texts from (else synthetic)")
    ap.add_argument("--checkpoint-units", type=int, default=9216)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    layers = tuple(("hidden", layer, args.width) for layer in range(1, args.layers + 1))
    layout = UnitLayout(("hidden",), layers)
    n_units = layout.n_units
    out: dict[str, Any] = {"benchmark": "driver_ceiling", "units": n_units, "top_n": args.top_n,
                           "block_sentences": args.block, "blocks": args.blocks}

    reader = plan = None
    if args.corpus:
        from miner.corpus.prepare import load_corpus
        from miner.corpus.store import CorpusReader
        from miner.mining.plan import plan_blocks

        corpus = load_corpus(Path(args.corpus))
        reader, plan = CorpusReader(Path(args.corpus), corpus), plan_blocks(corpus, args.block, None)[0]
    with tempfile.TemporaryDirectory() as tmp:
        job = JobSpec(name="bench", model="minilm", corpus=Path(tmp), top_n=args.top_n)
        run = RunFolder(Path(tmp) / "run")
        run.path.mkdir()
        state = MiningState.fresh(n_units, args.top_n, ("top", "bottom"))
        state.queues = {}
        loop = cast(Any, LaneLoop.__new__(LaneLoop))
        loop.ctx = SimpleNamespace(run=run, layout=layout)
        loop.job, loop.state, loop.layers, loop.directions = job, state, layout.slices(), ("top", "bottom")
        loop.n_lanes, loop.lookahead, loop.mined, loop.total = 8, 15, 0, args.block * args.blocks
        loop.t_loop = time.monotonic()
        plans = [BlockPlan(k, "shard-00000.parquet", 0, args.block, k * args.block) for k in range(args.blocks)]
        loop.plans, loop.end_block = plans, len(plans)
        loop.sampled = {k: np.arange(k * args.block, k * args.block + args.sample_rows) for k in range(args.blocks)}
        read_s, send_s, back_s, account_s, sent_bytes, back_bytes = [], [], [], [], [], []
        for k in range(args.blocks):
            t = time.perf_counter()
            if reader is not None and plan is not None:
                ids, texts = reader.block(plan)
            else:
                ids = np.arange(k * args.block, (k + 1) * args.block)
                texts = [f"synthetic sentence {i} with some twenty five words of text in it for the driver"
                         for i in range(args.block)]
            read_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            request = pickle.dumps(LaneBlock(k % 8, 0, k // 8, k, ids + k * args.block, texts), protocol=5)
            send_s.append(time.perf_counter() - t)
            sent_bytes.append(len(request))
            report = synthetic_report(k, args.block, n_units, args.top_n, args.sample_rows, rng)
            t = time.perf_counter()
            received = pickle.loads(pickle.dumps(report, protocol=5))
            back_s.append(time.perf_counter() - t)
            back_bytes.append(len(pickle.dumps(report, protocol=5)))
            t = time.perf_counter()
            loop._account(received)
            account_s.append(time.perf_counter() - t)
        driver = np.array(read_s) + np.array(send_s) + np.array(back_s) + np.array(account_s)
        per_block = float(np.median(driver))
        out.update({
            "texts": "corpus" if reader is not None else "synthetic",
            "bytes_sent_per_block": int(np.median(sent_bytes)), "bytes_back_per_block": int(np.median(back_bytes)),
            "pre_lane_bytes_back_per_early_block": 2 * n_units * args.top_n * 16,
            "driver_seconds_per_block": round(per_block, 4),
            "of_which": {"read_texts": round(float(np.median(read_s)), 4), "pickle_request": round(float(np.median(send_s)), 4),
                         "pickle_report": round(float(np.median(back_s)), 4),
                         "account": round(float(np.median(account_s)), 4)},
            "driver_sentences_per_second": round(args.block / per_block),
            "target_sentences_per_second": 1_000_000,
        })
        out["meets_target"] = out["driver_sentences_per_second"] >= 1_000_000
        if args.checkpoint_units:
            rows = 2 * args.checkpoint_units
            keys = rng.integers(-2**62, 2**62, size=(rows, args.top_n), dtype=np.int64)
            t = time.perf_counter()
            save_lane(Path(tmp) / "ck" / "lane-000", {"keys": keys, "payload": keys}, {"lane": 0, "seq": 0})
            secs = time.perf_counter() - t
            size = sum(p.stat().st_size for p in (Path(tmp) / "ck").iterdir())
            out["lane_checkpoint"] = {"units": args.checkpoint_units, "seconds": round(secs, 3), "bytes": size,
                                      "note": "one actor's queues; actors write theirs in parallel"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
