"""`miner ablate` figures, one JSON document.

1. throughput: held-out sentences per second of the bundled MiniLM's forward pass (sentence embedding) with a
   non-empty edit set (--ablate-share of every layer's hidden units zeroed) against a bare forward of the same
   batches (no hook registered), alternated --repeats times; ratio = best bare time / best edited time (and
   the same of the medians; on a shared machine the spread between passes is larger than the hooks' cost);
   target ratio >= 0.9.
2. curves (with --finetuned FOLDER, a checkpoint of examples/finetune_sentiment.py): a small real pipeline in
   --workdir (mine --sentences corpus sentences, step 2's POS tags, probes of pos and sentiment, then
   `run_ablation` twice): the fine-tuned model's test accuracy (binary tweets of the fine-tuning test split)
   when its top / random / bottom sentiment units (lca) are zeroed, and the test accuracy of a POS probe on
   hidden layer --pos-layer when the top / random / bottom POS units (lca) of the earlier layers are zeroed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from json_out import add_out_options, check_out, emit  # noqa: E402


def corpus_texts(corpus: Path, n: int, skip: int = 0) -> list[str]:
    import numpy as np

    from miner.corpus.prepare import load_corpus
    from miner.corpus.store import read_rows

    info = load_corpus(corpus)
    return [str(t) for t in read_rows(corpus, info, np.arange(skip, skip + n)).column("text").to_pylist()]


def throughput(corpus: Path, n: int, batch_size: int, share: float, repeats: int, device: str) -> dict:
    import numpy as np
    import torch

    from miner.intervene.hooks import edits_for_units, intervening
    from miner.intervene.worker import batch_outputs
    from miner.mining.batches import make_batches
    from miner.model.heads import load_head_model
    from miner.model.layout import unit_layout
    from miner.model.loading import bundled_minilm

    loaded = load_head_model(bundled_minilm(), "embedding", device)
    texts = corpus_texts(corpus, n)
    batches, _ = make_batches(loaded.tokenizer, np.arange(len(texts), dtype=np.int64), texts, 128, batch_size)
    layout = unit_layout(loaded.config, ["hidden"], None)
    rng = np.random.default_rng(0)
    units = np.sort(rng.choice(layout.n_units, size=max(1, int(layout.n_units * share)), replace=False))
    edits = edits_for_units(layout, units)

    def timed(with_edits: bool) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode(), intervening(loaded.model, edits if with_edits else []):
            for batch in batches:
                batch_outputs(loaded, batch)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    timed(False)  # warm-up
    bare, edited = [], []
    for _ in range(repeats):
        bare.append(timed(False))
        edited.append(timed(True))
    return {"model": "bundled all-MiniLM-L6-v2 (embedding task)", "device": str(loaded.device),
            "threads": torch.get_num_threads(), "sentences": len(texts), "batch_size": batch_size,
            "edited_units": int(len(units)), "of_units": layout.n_units, "repeats": repeats,
            "bare_sentences_per_s": round(len(texts) / min(bare), 1),
            "ablated_sentences_per_s": round(len(texts) / min(edited), 1),
            "ratio": round(min(bare) / min(edited), 3),
            "ratio_median": round(float(np.median(bare) / np.median(edited)), 3), "target": 0.9}


def curve_rows(run: Path, metric: str) -> dict:
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(run / "ablation_effects.parquet").to_pylist() if r["metric"] == metric]
    out: dict = {"clean": rows[0]["clean"] if rows else None, "test_rows": rows[0]["sentences"] if rows else None}
    for which in ("top", "random", "bottom"):
        pts = sorted((r["units"], r["units_edited"], r["ablated"]) for r in rows if r["kind"] == f"curve_{which}")
        out[which] = [{"units": u, "units_edited": e, "value": round(v, 4)} for u, e, v in pts]
    sets = [r for r in rows if r["set_name"] != "curve"]
    out["sets"] = [{"variant": r["variant"], "kind": r["kind"], "units": r["units"], "value": round(r["ablated"], 4)}
                   for r in sets]
    return out


def curves(args: argparse.Namespace) -> dict:
    import shutil

    from miner.config import (
        AnnotateOptions,
        JobSpec,
        ProbingOptions,
        validate_model,
    )
    from miner.config.ablate import AblateOptions
    from miner.intervene.stage import run_ablation
    from miner.mining.driver import run_mining
    from miner.probing.stage import run_probing
    from miner.signatures.annotate import annotate_run, write_annotation

    work = Path(args.workdir)
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    timings = {}
    probe = validate_model(ProbingOptions, {
        "concepts": [{"name": "pos", "kind": "tags", "max_sentences": args.pos_sentences},
                     {"name": "sentiment", "kind": "metadata", "field": "sentiment"}],
        "max_per_class": 200, "rare_classes": "drop", "per_layer": False, "rankings": ["lca"],
        "k_percent": [10]}, "probe")
    base = {"name": "bench-ablate", "model": str(args.finetuned), "corpus": str(args.corpus), "output": str(run),
            "sites": ["hidden"], "top_n": 20, "bottom": True, "max_sentences": args.mine_sentences, "block_size": 1000,
            "batch_size": 64, "max_length": 128, "workers": 1, "threads_per_worker": args.threads}
    job = validate_model(JobSpec, {**base, "probe": probe.model_dump(mode="json")}, "job")
    t = time.monotonic()
    run_mining(job, work, executor="inline")
    timings["mine"] = time.monotonic() - t
    t = time.monotonic()
    write_annotation(run, annotate_run(run, AnnotateOptions(background_size=args.pos_sentences), executor="inline"))
    timings["tags"] = time.monotonic() - t
    t = time.monotonic()
    run_probing(run, job, executor="inline")
    timings["probe"] = time.monotonic() - t
    sentiment = validate_model(AblateOptions, {
        "sets": [{"name": "sentiment-top", "ranking": {"probe_id": "sentiment:all", "percent": 2}}],
        "held_out": {"label_field": "sentiment", "labels": ["negative", "positive"], "sources": ["tweets"],
                     "sentences": args.held_out},
        "curve": {"probe_id": "sentiment:all", "counts": args.counts},
        "steering": [{"set": "sentiment-top", "multiple": 5.0}], "block_sentences": 100}, "ablate")
    t = time.monotonic()
    s1 = run_ablation(run, job.model_copy(update={"ablate": sentiment}), executor="inline")
    timings["ablate_sentiment"] = time.monotonic() - t
    acc = curve_rows(run, "accuracy")
    flips = curve_rows(run, "flip_rate")
    pos = validate_model(AblateOptions, {
        "sets": [{"name": "pos-top", "ranking": {"probe_id": "pos:all", "percent": 2}}],
        "held_out": {"sentences": 50}, "curve": {"probe_id": "pos:all", "counts": args.counts},
        "probe_effects": [{"concept": "pos", "site": "hidden", "layer": args.pos_layer}], "block_sentences": 100},
        "ablate")
    t = time.monotonic()
    run_ablation(run, job.model_copy(update={"ablate": pos}), executor="inline")
    timings["ablate_pos_probe"] = time.monotonic() - t
    pos_curve = curve_rows(run, f"probe:pos:hidden:{args.pos_layer}")
    return {"finetuned": str(args.finetuned), "mined_sentences": args.mine_sentences,
            "sentiment_accuracy": acc, "sentiment_flip_rate": flips,
            "steering_flip_share": s1.get("steering_flip_share"),
            f"pos_probe_hidden_{args.pos_layer}_accuracy": pos_curve,
            "seconds": {k: round(v, 1) for k, v in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/default"))
    parser.add_argument("--sentences", type=int, default=256, help="throughput: sentences per pass")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ablate-share", type=float, default=0.1, help="share of the hidden units zeroed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--finetuned", type=Path, help="a fine-tuned sentiment checkpoint: also the curves")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ablate-bench"))
    parser.add_argument("--mine-sentences", dest="mine_sentences", type=int, default=3000)
    parser.add_argument("--pos-sentences", type=int, default=800)
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--pos-layer", type=int, default=6)
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 50, 200, 500])
    add_out_options(parser)
    args = parser.parse_args()
    check_out(args)
    args.corpus = args.corpus.resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    report: dict = {"benchmark": "ablate_throughput",
                    "throughput": throughput(args.corpus, args.sentences, args.batch_size, args.ablate_share,
                                             args.repeats, args.device)}
    if args.finetuned is not None:
        report["curves"] = curves(args)
    emit(report, args)


if __name__ == "__main__":
    main()
