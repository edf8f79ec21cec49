"""What the per-unit score histogram and the exemplars cost (issue 16, target <= 3% of the mining time):
prints JSON.

The bundled MiniLM, all 2,304 hidden units, the first --sentences sentences of the default corpus in batches of
--batch, --threads CPU threads. Per batch: the forward pass and its scores (the mining loop's own calls), then
the histogram update timed apart, with the compiled kernel (as mining runs on CPU) and with the torch
operations (as on GPU), A B A B per batch. `sketch_share` = compiled histogram seconds / (forward + scores)
seconds. Then the exemplars of a --sample x 2,304 float16 score sample (as `miner mine` picks them when a run
finishes), timed once.

Usage: python benchmarks/sketch_cost.py [--sentences 4000] [--batch 64] [--threads 2] [--sample 10000] [--out F]
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
from miner.mining import native
from miner.mining.block_miner import BlockMiner
from miner.mining.exemplars import exemplar_table
from miner.mining.plan import plan_blocks
from miner.mining.sketch import BINS, score_bins_torch
from miner.model.layout import unit_layout
from miner.model.loading import bundled_minilm, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample", type=int, default=10_000)
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    torch.set_num_threads(args.threads)
    loaded = load_model(bundled_minilm())
    layout = unit_layout(loaded.config, ["hidden"], None)
    miner = BlockMiner(loaded, layout, 100, batch_size=args.batch)
    corpus = Path(args.corpus)
    manifest = load_corpus(corpus)
    plan = plan_blocks(manifest, args.sentences, args.sentences)[0]
    ids, texts = CorpusReader(corpus, manifest).block(plan)
    prepared = miner.prepare(ids, texts)
    u = layout.n_units
    hist = torch.zeros(u * BINS, dtype=torch.int64)
    offsets = torch.arange(u, dtype=torch.int64) * BINS
    one = torch.ones(1, dtype=torch.int64)
    forward = compiled = torched = 0.0
    with torch.inference_mode():
        for batch in prepared.batches:
            t = time.perf_counter()
            scores = miner.scores(miner.forward(batch), batch.real)
            forward += time.perf_counter() - t
            t = time.perf_counter()
            if native.available():
                native.score_histogram(scores, hist)
            compiled += time.perf_counter() - t
            t = time.perf_counter()
            cells = (score_bins_torch(scores) + offsets).view(-1)
            hist.index_add_(0, cells, one.expand(cells.numel()))
            torched += time.perf_counter() - t
    miner.close()
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(args.sample, u)).astype(np.float16)
    t = time.perf_counter()
    table = exemplar_table(np.arange(args.sample, dtype=np.int64), sample, [0.5, 0.9, 0.99, 0.999], 5, 0)
    exemplar_seconds = time.perf_counter() - t
    emit({"benchmark": "sketch_cost", "units": u, "sentences": len(texts), "batches": len(prepared.batches),
          "threads": args.threads, "compiled_kernel": native.available(),
          "forward_and_scores_seconds": round(forward, 3), "sketch_seconds": round(compiled, 4),
          "sketch_torch_seconds": round(torched, 4),
          "sketch_share": round(compiled / forward, 4) if native.available() else None,
          "sketch_torch_share": round(torched / forward, 4), "target_share": 0.03,
          "exemplar_sample_rows": args.sample, "exemplar_rows": table.num_rows,
          "exemplar_seconds": round(exemplar_seconds, 2)}, args)


if __name__ == "__main__":
    main()
