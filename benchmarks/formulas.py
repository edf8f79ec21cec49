"""Compositional explanations: beam-search seconds per unit at the held-out sample's size; prints JSON.

Issue 16 (target <= 0.2 s per unit on 2 cores). The first --sentences sentences of the default corpus stand in
for the held-out sample; their concepts are lowercased words (whitespace tokens) held by at least --min-count
sentences. A unit's top band is simulated by a planted formula with noise: sentences holding word A or word B,
without word C, 80% of them kept, plus 1% of all sentences at random. Reported: concepts, the table's build
time, beam-search seconds per unit (mean and max over --units units), the IoU found, and whether the search
recovered the planted formula's words.

Usage: python benchmarks/formulas.py [--sentences 20000] [--units 20] [--max-length 3] [--beam 10] [--out F]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from json_out import add_out_options, check_out, emit

from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader
from miner.explain.formulas import Formula, beam_search, concept_table
from miner.mining.plan import plan_blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=20_000)
    ap.add_argument("--units", type=int, default=20)
    ap.add_argument("--min-count", type=int, default=10)
    ap.add_argument("--max-length", type=int, default=3)
    ap.add_argument("--beam", type=int, default=10)
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    corpus = Path(args.corpus)
    manifest = load_corpus(corpus)
    plan = plan_blocks(manifest, args.sentences, args.sentences)[0]
    _, texts = CorpusReader(corpus, manifest).block(plan)
    t = time.perf_counter()
    table = concept_table([text.lower().split() for text in texts], min_count=args.min_count)
    build = time.perf_counter() - t
    rng = np.random.default_rng(0)
    counts = np.asarray(table.matrix.sum(axis=1)).ravel()
    common = np.flatnonzero((counts > 0.01 * len(texts)) & (counts < 0.2 * len(texts)))
    seconds, ious, recovered = [], [], 0
    for _ in range(args.units):
        a, b, c = (int(x) for x in rng.choice(common, size=3, replace=False))
        planted = Formula((a, b, c), ("OR", "AND NOT")).evaluate(table)
        target = (planted & (rng.random(len(texts)) < 0.8)) | (rng.random(len(texts)) < 0.01)
        t = time.perf_counter()
        fit = beam_search(table, target, args.max_length, args.beam)
        seconds.append(time.perf_counter() - t)
        ious.append(fit.iou)
        recovered += set(fit.formula.atoms) == {a, b, c}
    emit({"benchmark": "formulas", "sentences": len(texts), "concepts": len(table.names),
          "max_length": args.max_length, "beam": args.beam, "table_seconds": round(build, 3),
          "seconds_per_unit": round(float(np.mean(seconds)), 4), "max_seconds_per_unit": round(max(seconds), 4),
          "target_seconds_per_unit": 0.2, "mean_iou": round(float(np.mean(ious)), 4),
          "planted_words_recovered": f"{recovered}/{args.units}"}, args)


if __name__ == "__main__":
    main()
