"""What preparing a block (tokenise, sort, pad into batches) costs, and what a token budget saves: prints JSON.

Issue 19, item 2. The bundled MiniLM tokenizer on the first --sentences of the default corpus (one block):
  * tokenize_us_per_sentence: `tokenize_sentences` alone (the Rust tokenizer), one thread, then with the
    tokenizer's thread pool (`allow_tokenizer_threads`, as mining actors run it; --threads, default all cores);
  * batches_us_per_sentence: what `make_batches` adds on top of tokenising (sorting, the vectorised gather into
    padded arrays), i.e. the Python/numpy cost the mining loop waits for beyond the tokenizer;
  * per batching rule (batch_size sentences, or batch_size with a --batch-tokens budget): batches, padded
    cells, the padding efficiency (attended / padded tokens) and the largest batch in cells (what bounds the
    device memory of a forward pass).
Each timing is the best of --repeat runs.

Usage: python benchmarks/tokenize_blocks.py [--corpus data/default] [--sentences 20000] [--batch-size 64]
       [--batch-tokens 4096] [--threads 0] [--repeat 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from json_out import add_out_options, check_out, emit

from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader
from miner.mining.batches import allow_tokenizer_threads, make_batches, tokenize_sentences
from miner.mining.plan import plan_blocks
from miner.model.loading import bundled_minilm


def best(fn, repeat: int) -> float:
    """Fastest of `repeat` wall times of fn()."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="tokenizer threads (0: one per core)")
    ap.add_argument("--repeat", type=int, default=3)
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_minilm())
    corpus = Path(args.corpus)
    manifest = load_corpus(corpus)
    plan = plan_blocks(manifest, args.sentences, args.sentences)[0]
    ids, texts = CorpusReader(corpus, manifest).block(plan)
    n = len(texts)
    allow_tokenizer_threads(False)
    serial = best(lambda: tokenize_sentences(tok, texts, args.max_length), args.repeat)
    build = best(lambda: make_batches(tok, ids, texts, args.max_length, args.batch_size), args.repeat)
    allow_tokenizer_threads(True, args.threads)
    parallel = best(lambda: tokenize_sentences(tok, texts, args.max_length), args.repeat)
    allow_tokenizer_threads(False)
    rules = {}
    for name, budget in (("batch_size", None), ("batch_tokens", args.batch_tokens)):
        batches, _ = make_batches(tok, ids, texts, args.max_length, args.batch_size, budget)
        cells = sum(b.input_ids.numel() for b in batches)
        rules[name] = {"batch_tokens": budget, "batches": len(batches), "padded_cells": cells,
                       "padding_efficiency": round(sum(b.attended_tokens for b in batches) / cells, 4),
                       "largest_batch_cells": max(b.input_ids.numel() for b in batches),
                       "mean_rows": round(n / len(batches), 1)}
    emit({"benchmark": "tokenize_blocks", "sentences": n, "cores": os.cpu_count(),
          "tokenizer_threads": args.threads or os.cpu_count(), "batch_size": args.batch_size,
          "tokenize_us_per_sentence": round(serial / n * 1e6, 1),
          "tokenize_threads_us_per_sentence": round(parallel / n * 1e6, 1),
          "batches_us_per_sentence": round(max(build - serial, 0.0) / n * 1e6, 1),
          "make_batches_us_per_sentence": round(build / n * 1e6, 1),
          "rules": rules}, args)


if __name__ == "__main__":
    main()
