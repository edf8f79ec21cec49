"""Fine-tune the bundled MiniLM for sentiment: the third model of Oba et al. (2021), beside pre-trained and
random-init.

    .venv/bin/python examples/finetune_sentiment.py --corpus data/default --source tweets --out models/minilm-sentiment

What it builds: `AutoModelForSequenceClassification` on the bundled all-MiniLM-L6-v2 (a BertModel), i.e.
BertForSequenceClassification: the classifier is a linear layer over the POOLED output (the tanh dense layer over
the [CLS] token, after dropout). The bundled checkpoint ships pooler weights (pooler.dense.*, from the original
MiniLM; sentence-transformers never trains them, as it mean-pools), so only the classifier (classifier.weight,
classifier.bias) is freshly initialised (seeded); every weight is then trained.

Data: the corpus's sentences whose metadata column `sentiment` (--field) holds one of the labels. Binary by
default (negative / positive, as the paper; neutral sentences are left out); --three-way keeps neutral too. On the
default corpus the labelled sentences are tweets and movie reviews; --source tweets keeps the tweets only (the
`source` column). The split is by sentence TEXT, with the project's rule, so the probing stage and `miner ablate`
put a sentence in the same split: `sentence_splits(text_keys(lower-cased texts), seed, dev_share, test_share)`
(0 train, 1 dev, 2 test; the key of the probing stage's metadata concepts). The train sample is class-balanced
(at most --max-train / classes per class, the sentences with the lowest seeded hash); dev and test keep the corpus's
class mix (at most --max-dev / --max-test sentences, lowest hash first). Training is seeded (torch.manual_seed, a
seeded permutation per epoch), AdamW with linear warm-up and decay; the default rate (1e-4) is above the usual
2e-5 - 5e-5 because the run is short (2,000 sentences, one epoch: a few minutes on 2 CPU cores).

Output: a local Hugging Face folder (model.safetensors, config.json with id2label / label2id, the tokenizer) and
miner_finetune.json beside config.json (labels, split rule, seed, shares, caps, sizes, the test sentence ids and
the saved model's predictions for them, dev/test accuracy, majority baseline, seconds). It is written into a
temporary folder beside --out and renamed into place, so a folder with miner_finetune.json is complete. The miner mines such a folder as its base model's units (`model: FOLDER` in a job).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miner.errors import ConfigError, InputError, MinerError
from miner.model.loading import bundled_minilm, validate_model_folder
from miner.outputs import check_output_folder
from miner.probing.examples import DEV, TEST, TRAIN, hash_uniform, sentence_splits, text_keys

log = logging.getLogger("finetune_sentiment")

RECORD = "miner_finetune.json"
"""The fine-tuning record beside config.json: what the ablation stage reads to rebuild the same test split."""


@dataclass
class FinetuneOptions:
    """Everything a fine-tuning run depends on (recorded in miner_finetune.json)."""

    corpus: Path
    out: Path
    model: Path = dataclasses.field(default_factory=bundled_minilm)
    field: str = "sentiment"
    three_way: bool = False
    sources: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    dev_share: float = 0.1
    test_share: float = 0.2
    max_train: int = 2000
    max_dev: int = 500
    max_test: int = 1000
    epochs: int = 1
    batch_size: int = 32
    max_length: int = 64
    learning_rate: float = 1e-4
    warmup_share: float = 0.1
    threads: int = 2
    force: bool = False

    @property
    def labels(self) -> list[str]:
        """Class names in label-id order (0 = negative)."""
        return ["negative", "neutral", "positive"] if self.three_way else ["negative", "positive"]


@dataclass
class LabelledSentences:
    """The labelled corpus sentences: ids, texts, label ids and splits, in corpus order."""

    ids: np.ndarray
    texts: list[str]
    labels: np.ndarray
    splits: np.ndarray


def read_labelled(options: FinetuneOptions) -> LabelledSentences:
    """The corpus sentences labelled with one of the options' labels (optionally of some sources), split by text."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from miner.corpus.prepare import load_corpus

    corpus = load_corpus(options.corpus)
    code = {name: i for i, name in enumerate(options.labels)}
    ids: list[np.ndarray] = []
    texts: list[str] = []
    labels: list[int] = []
    for shard in corpus.shards:
        path = options.corpus / shard.file
        columns = set(pq.read_schema(path).names)
        if options.field not in columns:
            raise ConfigError(f"--field: '{options.field}' is not a metadata column of the corpus {options.corpus}")
        if options.sources and "source" not in columns:
            raise ConfigError(f"--source: the corpus {options.corpus} has no source column")
        part = pq.read_table(path, columns=["sentence_id", "text", options.field]
                             + (["source"] if options.sources else []))
        part = part.filter(pc.is_in(part[options.field], value_set=pa_strings(options.labels)))
        if options.sources:
            part = part.filter(pc.is_in(part["source"], value_set=pa_strings(options.sources)))
        ids.append(part["sentence_id"].to_numpy().astype(np.int64))
        texts += [str(t) for t in part["text"].to_pylist()]
        labels += [code[str(v)] for v in part[options.field].to_pylist()]
    if not texts:
        raise InputError(f"{options.corpus}: no sentence has {options.field} in {options.labels}"
                         + (f" among the sources {options.sources}" if options.sources else ""))
    splits = sentence_splits(text_keys([t.lower() for t in texts]), options.seed, options.dev_share,
                             options.test_share)
    return LabelledSentences(np.concatenate(ids), texts, np.array(labels, np.int64), splits)


def pa_strings(values: list[str]) -> Any:
    """A pyarrow string array (the value set of pc.is_in)."""
    import pyarrow as pa

    return pa.array(values, pa.string())


def take(data: LabelledSentences, split: int, cap: int, seed: int, per_class: bool) -> np.ndarray:
    """Indices of at most `cap` sentences of a split (per class when `per_class`), lowest seeded hash first,
    in corpus order.

    The hash is of the sentence id, so the sample is the same whatever other sentences the corpus holds.
    """
    rank = hash_uniform(seed, "finetune", data.ids)
    groups = [np.flatnonzero((data.splits == split) & (data.labels == c)) for c in np.unique(data.labels)] \
        if per_class else [np.flatnonzero(data.splits == split)]
    n_groups = max(1, len(groups))
    chosen = [g[np.lexsort((g, rank[g]))[: cap // n_groups if per_class else cap]] for g in groups]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


@torch.no_grad()
def predict(model: torch.nn.Module, tokenizer: Any, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """Predicted label ids of the texts (eval mode, no dropout)."""
    model.eval()
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        out.append(model(**enc).logits.argmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float | None:
    """Share of correct predictions (None for no examples)."""
    return float((pred == gold).mean()) if len(gold) else None


def finetune(options: FinetuneOptions) -> dict[str, Any]:
    """Fine-tune, evaluate and save the model folder; returns the record written to miner_finetune.json."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    out = options.out
    if out.exists() and out.is_dir():  # any content, not only a model, is replaced only with --force
        check_output_folder(out, [p.name for p in out.iterdir()], options.force)
    else:
        check_output_folder(out, [], options.force)
    validate_model_folder(options.model)
    started = time.perf_counter()
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    data = read_labelled(options)
    train = take(data, TRAIN, options.max_train, options.seed, per_class=True)
    dev = take(data, DEV, options.max_dev, options.seed, per_class=False)
    test = take(data, TEST, options.max_test, options.seed, per_class=False)
    if len(train) == 0 or len(test) == 0:
        raise InputError(f"{options.corpus}: {len(train)} train and {len(test)} test sentences; need some of each")
    log.info("%d labelled sentences; train %d, dev %d, test %d", len(data.texts), len(train), len(dev), len(test))

    labels = options.labels
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        options.model, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, dtype=torch.float32)
    steps_per_epoch = -(-len(train) // options.batch_size)
    total = steps_per_epoch * options.epochs
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimiser, int(options.warmup_share * total), total)
    order_gen = torch.Generator().manual_seed(options.seed)
    texts = [data.texts[i] for i in train]
    gold = torch.from_numpy(data.labels[train])
    history: list[dict[str, Any]] = []
    for epoch in range(options.epochs):
        model.train()
        order = torch.randperm(len(train), generator=order_gen)
        losses = []
        for step in range(steps_per_epoch):
            batch = order[step * options.batch_size:(step + 1) * options.batch_size]
            enc = tokenizer([texts[int(i)] for i in batch], truncation=True, max_length=options.max_length,
                            padding=True, return_tensors="pt")
            loss = model(**enc, labels=gold[batch]).loss
            loss.backward()
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
            losses.append(float(loss.detach()))
            if step % 20 == 0:
                log.info("epoch %d step %d/%d loss %.4f", epoch + 1, step + 1, steps_per_epoch, losses[-1])
        dev_acc = accuracy(predict(model, tokenizer, [data.texts[i] for i in dev], 64, options.max_length),
                           data.labels[dev])
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "dev_accuracy": dev_acc})
        log.info("epoch %d: mean train loss %.4f, dev accuracy %s", epoch + 1, history[-1]["train_loss"], dev_acc)
    train_seconds = time.perf_counter() - started
    test_gold = data.labels[test]
    test_pred = predict(model, tokenizer, [data.texts[i] for i in test], 64, options.max_length)
    test_acc = accuracy(test_pred, test_gold)
    counts = np.bincount(test_gold, minlength=len(labels))
    record: dict[str, Any] = {
        "kind": "neuron-miner-finetune", "task": "sentence sentiment",
        "base_model": str(options.model), "corpus": str(options.corpus.resolve()),
        "field": options.field, "labels": labels, "sources": options.sources or None,
        "split": {"rule": "miner.probing.examples.sentence_splits(text_keys([text.lower()]), seed, dev_share, "
                          "test_share): 0 train, 1 dev, 2 test",
                  "seed": options.seed, "dev_share": options.dev_share, "test_share": options.test_share},
        "sample": {"rule": "per split, the sentences with the lowest hash_uniform(seed, 'finetune', sentence_id); "
                           "train class-balanced", "max_train": options.max_train, "max_dev": options.max_dev,
                   "max_test": options.max_test},
        "training": {k: v for k, v in asdict(options).items()
                     if k in ("epochs", "batch_size", "max_length", "learning_rate", "warmup_share", "threads")},
        "labelled_sentences": len(data.texts),
        "train_size": len(train), "dev_size": len(dev), "test_size": len(test),
        "test_sentence_ids": [int(x) for x in data.ids[test]],
        "test_predictions": [int(x) for x in test_pred],
        "history": history,
        "dev_accuracy": history[-1]["dev_accuracy"] if history else None,
        "test_accuracy": test_acc,
        "test_majority_accuracy": float(counts.max() / counts.sum()),
        "train_seconds": round(train_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_folder(model, tokenizer, record, out)
    log.info("saved %s: test accuracy %.4f (majority %.4f)", out, test_acc, record["test_majority_accuracy"])
    return record


def save_folder(model: torch.nn.Module, tokenizer: Any, record: dict[str, Any], out: Path) -> None:
    """Write the model folder into a temporary folder beside `out`, then rename it into place (the record last);
    an earlier folder at `out` is replaced only once the new one is complete."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise


def parse_args(argv: list[str] | None = None) -> FinetuneOptions:
    """Options from the command line."""
    d = FinetuneOptions(corpus=Path(), out=Path())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path("data/default"), help="prepared corpus folder")
    p.add_argument("--out", type=Path, default=Path("models/minilm-sentiment"), help="model folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--model", type=Path, default=d.model, help="base model folder (default: the bundled MiniLM)")
    p.add_argument("--field", default=d.field, help="corpus metadata column with the sentiment label")
    p.add_argument("--three-way", action="store_true", help="keep neutral: negative / neutral / positive")
    p.add_argument("--source", action="append", default=[], dest="sources",
                   help="keep only sentences of this `source` (repeatable; default: every labelled sentence)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the split, the samples and the training")
    p.add_argument("--dev-share", type=float, default=d.dev_share)
    p.add_argument("--test-share", type=float, default=d.test_share)
    p.add_argument("--max-train", type=int, default=d.max_train, help="train sentences (class-balanced)")
    p.add_argument("--max-dev", type=int, default=d.max_dev)
    p.add_argument("--max-test", type=int, default=d.max_test)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per sentence (truncated)")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    ns = p.parse_args(argv)
    options = FinetuneOptions(**vars(ns))
    for name in ("max_train", "max_dev", "max_test", "epochs", "batch_size", "max_length", "threads"):
        if getattr(options, name) < (0 if name == "max_dev" else 1):
            raise ConfigError(f"--{name.replace('_', '-')}: must be positive, got {getattr(options, name)}")
    if not (0 <= options.dev_share and 0 < options.test_share and options.dev_share + options.test_share < 1):
        raise ConfigError("--dev-share / --test-share: need 0 <= dev, 0 < test and dev + test < 1")
    return options


def main(argv: list[str] | None = None) -> int:
    """Command line: fine-tune, then one JSON summary line on stdout; `miner: error:` lines for bad input."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        record = finetune(parse_args(argv))
    except MinerError as exc:
        sys.stderr.write(f"miner: error: {exc}\n")
        return 2
    summary = {k: record[k] for k in ("train_size", "dev_size", "test_size", "dev_accuracy", "test_accuracy",
                                      "test_majority_accuracy", "seconds")}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
