"""Seconds and test accuracy of examples/finetune_sentiment.py (the fine-tuned MiniLM of the demo comparison); JSON.

    .venv/bin/python benchmarks/finetune.py --corpus data/default --source tweets

The model folder goes into a temporary folder (removed after) unless --keep FOLDER.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from json_out import add_out_options, check_out, emit

from miner.errors import MinerError

REPO = Path(__file__).resolve().parents[1]


def finetune_script() -> ModuleType:
    """examples/finetune_sentiment.py, imported by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("finetune_sentiment", REPO / "examples" / "finetune_sentiment.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    script = finetune_script()
    d = script.FinetuneOptions(corpus=Path(), out=Path())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "default")
    parser.add_argument("--source", action="append", default=[], dest="sources")
    parser.add_argument("--max-train", type=int, default=d.max_train)
    parser.add_argument("--max-test", type=int, default=d.max_test)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--max-length", type=int, default=d.max_length)
    parser.add_argument("--threads", type=int, default=d.threads)
    parser.add_argument("--keep", type=Path, default=None, help="save the model folder here instead of a temp folder")
    add_out_options(parser)
    ns = parser.parse_args()
    check_out(ns)
    with tempfile.TemporaryDirectory() as tmp:
        out = ns.keep if ns.keep is not None else Path(tmp) / "model"
        options = script.FinetuneOptions(corpus=ns.corpus, out=out, sources=ns.sources, max_train=ns.max_train,
                                         max_test=ns.max_test, epochs=ns.epochs, max_length=ns.max_length,
                                         threads=ns.threads)
        try:
            record = script.finetune(options)
        except MinerError as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.exit(2)
    emit({"benchmark": "finetune", "model": "bundled all-MiniLM-L6-v2 + BertForSequenceClassification head",
          "labels": record["labels"], "sources": record["sources"], "threads": torch.get_num_threads(),
          "cpu_count": os.cpu_count(), "epochs": ns.epochs, "max_length": ns.max_length,
          "labelled_sentences": record["labelled_sentences"], "train_size": record["train_size"],
          "dev_size": record["dev_size"], "test_size": record["test_size"],
          "train_seconds": record["train_seconds"], "seconds": record["seconds"],
          "dev_accuracy": record["dev_accuracy"], "test_accuracy": record["test_accuracy"],
          "test_majority_accuracy": record["test_majority_accuracy"]}, ns)


if __name__ == "__main__":
    main()
