"""Benchmark step 2 (POS tagging + per-sentence patterns + per-unit signatures) on a run folder; prints JSON.

    python benchmarks/signatures.py RUN                     # the run's own queues (all units, top + bottom)
    python benchmarks/signatures.py RUN --synthetic-units 2304 --n 1000 --pool 80000
                                                            # queues of n random sentences from the first
                                                            # `pool` corpus sentences (scale without mining)
    python benchmarks/signatures.py RUN --one-unit 10000    # one unit whose queue is 10,000 corpus sentences

--cache DIR keeps tagged tokens between invocations (tagging time is then reported from the first run).
Targets (issue 4): whole step 2 for 2,304 units at N=1,000 <= 10 min on 2 cores; per unit after the
per-sentence work <= 0.1 s; one unit at N=10,000 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.config import AnnotateOptions, CorpusManifest, SignatureOptions  # noqa: E402
from miner.corpus.store import read_rows  # noqa: E402
from miner.run.folder import run_corpus  # noqa: E402
from miner.signatures.aggregate import unit_signatures  # noqa: E402
from miner.signatures.annotate import background_ids, load_tagger, tokens_table  # noqa: E402
from miner.signatures.features import sentence_features  # noqa: E402


def tagged(corpus_dir: Path, corpus: CorpusManifest, ids: np.ndarray, cache: Path | None,
           batch_size: int) -> tuple[pa.Table, pa.Table, dict]:
    """(corpus rows, tokens, tagging facts) of sorted ids; tags only the ids not in the cache.

    With a cache, the tagging time of all ids is estimated from the cache's measured rate."""
    rows = read_rows(corpus_dir, corpus, ids)
    old_tokens, totals = None, {"seconds": 0.0, "sentences": 0}
    have = pa.array([], pa.int64())
    if cache and (cache / "tokens.parquet").exists():
        old_tokens = pq.read_table(cache / "tokens.parquet")
        totals = json.loads((cache / "tagging.json").read_text())
        have = pa.array(np.unique(old_tokens["sentence_id"].to_numpy()))
    todo = rows.filter(pc.invert(pc.is_in(rows["sentence_id"], value_set=have)))
    started = time.monotonic()
    new = tokens_table(todo["sentence_id"].to_numpy(), todo["text"].to_pylist(), load_tagger(), batch_size)
    seconds = time.monotonic() - started
    tokens = new if old_tokens is None else pa.concat_tables([old_tokens, new])
    totals = {"seconds": totals["seconds"] + seconds, "sentences": totals["sentences"] + todo.num_rows}
    if cache and todo.num_rows:
        cache.mkdir(parents=True, exist_ok=True)
        pq.write_table(tokens, cache / "tokens.parquet")
        (cache / "tagging.json").write_text(json.dumps(totals))
    rate = totals["sentences"] / totals["seconds"] if totals["seconds"] else None
    facts = {
        "sentences_tagged": len(ids),
        "tagging_seconds": round(seconds if todo.num_rows == len(ids) else len(ids) / rate, 2),
        "tagging_estimated_from_cache": todo.num_rows != len(ids),
        "tagging_sentences_per_second": round(rate, 1) if rate else None,
    }
    return rows, tokens, facts


def synthetic_top(units: int, n: int, pool: np.ndarray, seed: int = 0) -> pa.Table:
    """Queues of n distinct random pool sentences per unit and direction."""
    rng = np.random.default_rng(seed)
    parts = {"unit_id": [], "direction": [], "rank": [], "sentence_id": []}
    for u in range(units):
        for d in ("top", "bottom"):
            parts["unit_id"].append(np.full(n, u, np.int32))
            parts["direction"].append(np.full(n, d, dtype=object))
            parts["rank"].append(np.arange(1, n + 1, dtype=np.int32))
            parts["sentence_id"].append(rng.choice(pool, n, replace=False))
    return pa.table({k: pa.array(np.concatenate(v).tolist() if k == "direction" else np.concatenate(v))
                     for k, v in parts.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--background", type=int, default=50_000, help="background sample size")
    ap.add_argument("--cache", type=Path, default=None, help="folder keeping tagged tokens between invocations")
    ap.add_argument("--synthetic-units", type=int, default=0, help="synthesise this many units' queues")
    ap.add_argument("--n", type=int, default=1000, help="queue size of synthetic units")
    ap.add_argument("--pool", type=int, default=80_000,
                    help="synthetic queues draw from the first POOL corpus sentences (the background too)")
    ap.add_argument("--one-unit", type=int, default=0, help="time one unit whose queue is this many corpus sentences")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--min-support", type=int, default=SignatureOptions().min_support)
    ap.add_argument("--min-share", type=float, default=SignatureOptions().min_share)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    started = time.monotonic()
    manifest, corpus_dir, corpus = run_corpus(args.run)
    mined = manifest.get("stats", {}).get("sentences")
    annotate = AnnotateOptions(background_size=args.background)
    if args.synthetic_units and not args.one_unit:
        mined = min(max(args.pool, mined or 0), corpus.sentences)  # synthetic queues: the pool counts as mined
    bg = background_ids(corpus, annotate.background_size, annotate.background_seed, mined)
    if args.one_unit:
        pool = background_ids(corpus, args.one_unit, seed=12345)
        top = pa.table({"unit_id": pa.array(np.zeros(len(pool), np.int32)), "direction": ["top"] * len(pool),
                        "rank": pa.array(np.arange(1, len(pool) + 1, dtype=np.int32)), "sentence_id": pa.array(pool)})
        mode = f"one unit, N={len(pool)}"
    elif args.synthetic_units:
        pool = np.arange(min(args.pool, corpus.sentences), dtype=np.int64)
        top = synthetic_top(args.synthetic_units, args.n, pool)
        mode = f"{args.synthetic_units} synthetic units x 2 directions, N={args.n}, pool {len(pool)}"
    else:
        top = pq.read_table(args.run / "top_sentences.parquet", columns=["unit_id", "direction", "rank", "sentence_id"])
        mode = "run queues"
    ids = np.union1d(np.unique(top["sentence_id"].to_numpy()), bg)
    rows, tokens, tagging = tagged(corpus_dir, corpus, ids, args.cache, args.batch_size)
    options = SignatureOptions(min_support=args.min_support, min_share=args.min_share)

    t0 = time.monotonic()
    features = sentence_features(top, rows, tokens, bg, options)
    t1 = time.monotonic()
    tables = unit_signatures(features, top, options)
    t2 = time.monotonic()
    queues = tables["unit_stats"].num_rows
    units = len(np.unique(top["unit_id"].to_numpy()))
    wall = time.monotonic() - started
    print(json.dumps({
        "mode": mode,
        "run": str(args.run),
        "units": units,
        "queues": queues,
        "queue_sentences": int(top.num_rows),
        "distinct_sentences": int(len(ids)),
        "background_sentences": int(len(bg)),
        **tagging,
        "signature_options": options.model_dump(),
        "pattern_extraction_seconds": round(t1 - t0, 2),
        "patterns": {"word": int(features.words.n_patterns), "pos": int(features.pos.n_patterns),
                     "word_ids_per_sentence": round(len(features.words.ids) / len(features.sentence_ids), 1),
                     "pos_ids_per_sentence": round(len(features.pos.ids) / len(features.sentence_ids), 1)},
        "unit_signature_seconds": round(t2 - t1, 2),
        "seconds_per_unit": round((t2 - t1) / units, 4),
        "seconds_per_queue": round((t2 - t1) / queues, 4),
        "rows": {k: v.num_rows for k, v in tables.items()},
        "total_seconds": round(tagging["tagging_seconds"] + (t2 - t0), 2),
        "wall_seconds_this_invocation": round(wall, 2),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
