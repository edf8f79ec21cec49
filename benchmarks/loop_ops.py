"""Operator calls per batch of the mining loops beyond the forward pass (a stand-in for CUDA kernel launches,
measured on any device): prints JSON.

Issue 19, item 3. The bundled MiniLM (or a random BERT-base with --bert-base), sites hidden (and --mlp), N =
--top-n top and bottom, one block of the first --sentences sentences of the default corpus. torch.profiler
records every operator call of `BlockMiner.mine_prepared` with the sync-free loop (CUDA's default) and with
the exact loop, and of the bare forward passes of the same batches; per loop, `ops_per_batch` = (top-level
operator calls of mining - those of the bare forward passes) / batches. Top-level: calls not made inside
another operator (aten::to -> aten::_to_copy -> aten::copy_ counts once), i.e. roughly the launches a GPU sees.
Also: the block's operator calls after the loop (read-back, window finish) are included, spread per batch.

Usage: python benchmarks/loop_ops.py [--sentences 2000] [--top-n 1000] [--batch-size 64] [--mlp] [--out F]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from json_out import add_out_options, check_out, emit
from torch.profiler import ProfilerActivity, profile

from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader
from miner.mining.block_miner import BlockMiner
from miner.mining.plan import plan_blocks
from miner.model.layout import unit_layout
from miner.model.loading import bundled_minilm, load_model

# operators that make views or read metadata: no kernel on a GPU
VIEWS = {"aten::slice", "aten::view", "aten::select", "aten::reshape", "aten::numpy_T", "aten::unsqueeze",
         "aten::squeeze", "aten::detach", "aten::resolve_conj", "aten::resolve_neg", "aten::lift_fresh",
         "aten::alias", "aten::as_strided", "aten::expand", "aten::t", "aten::transpose", "aten::permute",
         "aten::empty", "aten::empty_strided", "aten::_unsafe_view", "aten::split", "aten::unbind", "aten::chunk",
         "aten::narrow", "aten::contiguous", "aten::result_type"}


# operators that make the host wait for a CUDA device (their result's size or value is read on the host)
SYNCING = ("aten::item", "aten::nonzero", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::unique_dim",
           "aten::masked_select", "aten::repeat_interleave")


def batch_ops(prof: profile) -> dict[str, int]:
    """Operator calls inside the loops' per-batch scopes (`miner.batch`) but not in their forward passes
    (`miner.forward`), top-level only (not nested in another operator), by name; view operators and
    no-op conversions (aten::to without a copy) left out."""
    counts: dict[str, int] = {}
    for ev in prof.events():
        if not ev.name.startswith("aten::") or ev.name in VIEWS:
            continue
        if ev.name == "aten::to" and not ev.cpu_children:
            continue
        scopes, parent, nested = [], ev.cpu_parent, False
        while parent is not None:
            nested = nested or parent.name.startswith("aten::")
            scopes.append(parent.name)
            parent = parent.cpu_parent
        if not nested and "miner.batch" in scopes and "miner.forward" not in scopes:
            counts[ev.name] = counts.get(ev.name, 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/default")
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--top-n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mlp", action="store_true", help="mine the mlp site too")
    ap.add_argument("--device", default="cpu")
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    os.environ["MINER_NATIVE"] = "0"  # the exact loop's torch operations, as on a GPU
    loaded = load_model(bundled_minilm(), args.device)
    sites = ["hidden", "mlp"] if args.mlp else ["hidden"]
    layout = unit_layout(loaded.config, sites, None)
    corpus = Path(args.corpus)
    manifest = load_corpus(corpus)
    plan = plan_blocks(manifest, args.sentences, args.sentences)[0]
    ids, texts = CorpusReader(corpus, manifest).block(plan)
    out: dict = {"benchmark": "loop_ops", "device": args.device, "sites": sites, "units": layout.n_units,
                 "top_n": args.top_n, "sentences": len(texts), "loops": {}}
    for name, free in (("sync_free", True), ("exact", False)):
        miner = BlockMiner(loaded, layout, args.top_n, batch_size=args.batch_size, sync_free=free)
        prepared = miner.prepare(ids, texts)
        miner.mine_prepared(0, prepared)  # warm-up: buffers allocated, lazy initialisation done
        with profile(activities=[ProfilerActivity.CPU]) as mined:
            _, result = miner.mine_prepared(0, prepared)
        batches = len(prepared.batches)
        ops = batch_ops(mined)
        out["loops"][name] = {"batches": batches, "ops_per_batch": round(sum(ops.values()) / batches, 1),
                              "syncing_ops_per_batch": round(sum(ops.get(k, 0) for k in SYNCING) / batches, 2),
                              "by_operator": {k: round(v / batches, 2) for k, v in sorted(ops.items(),
                                                                                        key=lambda kv: -kv[1])},
                              "sync_free_batches": result.stats.sync_free_batches}
        miner.close()
    emit(out, args)


if __name__ == "__main__":
    main()
