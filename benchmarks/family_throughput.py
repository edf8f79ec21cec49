"""Mining throughput per model family (hidden + mlp sites) vs the bare forward of the same batches: prints JSON.

Setting (issue 18): for every family the tests build from config (tests/support/builders.py: BERT, RoBERTa,
DistilBERT, GPT-2, Llama, ELECTRA, DeBERTa-v2, ModernBERT, GPT-NeoX, OPT, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3,
Phi-3), a random model of `--layers` layers and width `--hidden`, mined on the first `--sentences` sentences of
the default corpus with `benchmarks/mine_overhead.py`'s measurement (each mining forward next to a bare forward of
the same batch, turn about). ratio = bare seconds / mining seconds; tokenising is excluded from both.

Usage: python benchmarks/family_throughput.py [--sentences 2000] [--layers 4] [--hidden 256] [--threads 2]
       [--families bert,opt] [--out F.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from json_out import add_out_options, check_out, emit
from mine_overhead import measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' model builders
from miner.model.loading import load_model  # noqa: E402
from tests.support.builders import FAMILY_CONFIGS, tiny_model  # noqa: E402

FAMILIES = ["bert", "roberta", "distilbert", "gpt2", "llama", *FAMILY_CONFIGS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/default"))
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--families", default=",".join(FAMILIES))
    add_out_options(parser)
    ns = parser.parse_args()
    check_out(ns)
    torch.set_num_threads(ns.threads)
    families = [f for f in ns.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"--families: unknown {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="miner-families-") as tmp:
        for family in families:
            folder = tiny_model(Path(tmp) / family, family, layers=ns.layers, hidden=ns.hidden)
            loaded = load_model(folder)
            got = measure(loaded, ["hidden", "mlp"], ns.corpus, ns.sentences, ns.top_n, 1000, 64)
            rows[family] = {k: got[k] for k in ("units", "bare_sentences_per_s", "mining_sentences_per_s", "ratio",
                                                "rest_only_ratio", "padding_efficiency")}
    emit({"benchmark": "family_throughput", "sites": ["hidden", "mlp"], "layers": ns.layers, "hidden": ns.hidden,
          "sentences": ns.sentences, "threads": ns.threads, "top_n": ns.top_n, "families": rows}, ns)


if __name__ == "__main__":
    main()
