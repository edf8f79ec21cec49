"""Our probing stage against NeuroX 1.0.9 on the same POS-tagged sentences and split; prints JSON.

Usage: python benchmarks/neurox_compare.py [--sentences 1500] [--max-words 50] [--l1 1e-3] [--l2 1e-3]
                                           [--epochs 10] [--threads 2] [--out FILE.json]

Sentences: the first --sentences sentences of at most --max-words words of data/default, tagged with Penn tags
by spaCy's en_core_web_sm and written as word/TAG (no public treebank ships on PyPI; see probe_extract.py's
tagged_file). Model: the bundled MiniLM, the 6 transformer layers' hidden states (2,304 units; NeuroX with
ignore_embeddings=True), the last subword of each word, CPU, --threads torch threads for both.

Ours: build_examples on a `kind: file` concept with no effective class cap (every word kept; classes with
fewer than min_per_class train words dropped), extract_concept on an InlineExecutor (float16 shards), load_rows,
then train_probe with the one fixed (l1, l2) for --epochs epochs on the train split (no early stopping) and
accuracy on the test split. NeuroX (child process, PYTHONPATH=cache/neurox-pkg, this venv's torch and
transformers, `numpy.int = int` patched): extract_representations (batch size 1, JSON output) over the same
sentences, load_activations, load_data + create_tensors on our train and test sentences (split files written
from our split), rows of our dropped classes removed, train_logistic_regression_probe (the same l1, l2 and epochs,
its own batch 32 / lr 1e-3) and evaluate_probe. Dev sentences are used by neither.

Targets: extraction throughput >= 10x NeuroX's, bytes stored per token <= 1/10 of NeuroX's, test accuracy within
1 point, fit seconds per lambda setting no slower than NeuroX's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from json_out import add_out_options, check_out, emit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_extract import CACHE, tagged_file  # noqa: E402

NEUROX_DIR = REPO / "cache" / "neurox-pkg"
NEUROX_PKGS = ["neurox==1.0.9", "h5py", "imbalanced-learn", "sklearn-compat"]


def ensure_neurox(folder: Path = NEUROX_DIR) -> Path:
    """NeuroX 1.0.9 and the modules it imports at load time (h5py, imblearn), without their pinned deps."""
    if not (folder / "neurox" / "__init__.py").exists() or not (folder / "imblearn").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
                        *NEUROX_PKGS], check=True)
    return folder


def pick_sentences(path: Path, n: int, max_words: int) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    from miner.probing.labels import read_word_tag

    out = []
    for s in read_word_tag(path):
        if len(s.words) <= max_words:
            out.append((s.words, s.labels))
        if len(out) == n:
            break
    return out


def ours(concept: Path, work: Path, args: argparse.Namespace) -> tuple[dict, object]:
    """Our examples, extraction and one fixed-lambda probe; returns (figures, examples)."""
    import torch
    from transformers import AutoTokenizer

    from miner.config import ConceptSpec, JobSpec, ProbingOptions
    from miner.mining.executors import InlineExecutor, WorkerConfig
    from miner.model.loading import bundled_minilm
    from miner.probing.concepts import build_examples
    from miner.probing.examples import TEST, TRAIN
    from miner.probing.extraction import extract_concept, load_rows
    from miner.probing.probe import ProbeOptions, accuracy, train_probe

    model = bundled_minilm()
    spec = ConceptSpec(name="pos", kind="file", path=concept, format="word_tag")
    options = ProbingOptions(concepts=[spec], max_per_class=10**9, rare_classes="drop", min_per_class=args.min_per_class)
    tok = AutoTokenizer.from_pretrained(model)
    t = time.perf_counter()
    ex = build_examples(spec, options, work, tok, args.max_length, None)
    examples_s = time.perf_counter() - t
    job = JobSpec(name="cmp", model="minilm", corpus=Path("."), batch_size=args.batch_size,
                  max_length=args.max_length, device="cpu", threads_per_worker=args.threads)
    folder = work / "ours-shards"
    t = time.perf_counter()
    pool = InlineExecutor(WorkerConfig(str(model), job, args.threads))
    load_s = time.perf_counter() - t
    units = pool.miner.layout.n_units
    t = time.perf_counter()
    summary = extract_concept(ex, folder, pool, f"cmp-{time.time()}", units, "last", 256)
    extract_s = time.perf_counter() - t
    pool.close()
    x_train = load_rows(folder, ex, ex.splits == TRAIN, 256)
    x_test = load_rows(folder, ex, ex.splits == TEST, 256)
    y_train, y_test = ex.labels[ex.splits == TRAIN], ex.labels[ex.splits == TEST]
    popts = ProbeOptions(epochs=args.epochs, seed=0, threads=args.threads)
    t = time.perf_counter()
    probe = train_probe(x_train, y_train, len(ex.classes), args.l1, args.l2, popts)
    fit_s = time.perf_counter() - t
    acc, _ = accuracy(y_test, probe.predict(x_test), len(ex.classes))
    return {
        "rows": ex.rows, "train_rows": int(len(y_train)), "test_rows": int(len(y_test)), "classes": len(ex.classes),
        "dropped_classes": ex.dropped_classes, "units": units, "examples_s": round(examples_s, 2),
        "model_load_s": round(load_s, 2), "extract_s": round(extract_s, 2),
        "extract_rows_per_s": round(ex.rows / extract_s, 1),
        "extract_rows_per_s_with_load": round(ex.rows / (extract_s + load_s), 1),
        "bytes_stored": summary.bytes, "bytes_per_token": round(summary.bytes / ex.rows, 1),
        "fit_s": round(fit_s, 2), "epochs": probe.epochs, "test_accuracy": round(acc, 4),
        "zero_weight_fraction": round(float((probe.weights == 0).mean()), 4), "threads": torch.get_num_threads(),
    }, ex


def neurox_child(spec_path: Path) -> None:
    """The NeuroX side, run in a child process with PYTHONPATH=cache/neurox-pkg (see `neurox`)."""
    import numpy

    numpy.int = int  # type: ignore[attr-defined]  # NeuroX 1.0.9 uses the alias numpy 2 removed
    import torch

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    from neurox.data import loader
    from neurox.data.extraction.transformers_extractor import extract_representations
    from neurox.interpretation import linear_probe, utils

    work = Path(spec["work"])
    acts_file = work / "neurox-acts.json"
    t = time.perf_counter()
    extract_representations(spec["model"], spec["input"], str(acts_file), device="cpu", aggregation="last",
                            output_type="json", ignore_embeddings=True)
    extract_s = time.perf_counter() - t
    t = time.perf_counter()
    activations, num_layers = loader.load_activations(str(acts_file))
    load_s = time.perf_counter() - t
    split = spec["split"]  # per input sentence: 0 train, 1 dev, 2 test, -1 unused
    sets = {}
    for name, code in (("train", 0), ("test", 2)):
        idx = [i for i, s in enumerate(split) if s == code]
        acts = [activations[i] for i in idx]
        src, lbl = work / f"neurox-{name}.txt", work / f"neurox-{name}.labels"
        words = spec["words"]
        labels = spec["labels"]
        src.write_text("".join(" ".join(words[i]) + "\n" for i in idx))
        lbl.write_text("".join(" ".join(labels[i]) + "\n" for i in idx))
        sets[name] = (loader.load_data(str(src), str(lbl), acts, 512), acts)
    t = time.perf_counter()
    x_train, y_train, mapping = utils.create_tensors(sets["train"][0], sets["train"][1], spec["majority"])
    x_test, y_test, _ = utils.create_tensors(sets["test"][0], sets["test"][1], spec["majority"], mappings=mapping)
    tensors_s = time.perf_counter() - t
    label2idx = mapping[0]
    keep_names = sorted(spec["classes"])
    remap = {label2idx[c]: j for j, c in enumerate(keep_names) if c in label2idx}

    def restrict(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = np.array([int(v) in remap for v in y], bool)
        return x[mask], np.array([remap[int(v)] for v in y[mask]], np.int64)

    x_train, y_train = restrict(x_train, y_train)
    x_test, y_test = restrict(x_test, y_test)
    t = time.perf_counter()
    probe = linear_probe.train_logistic_regression_probe(x_train, y_train, lambda_l1=spec["l1"], lambda_l2=spec["l2"],
                                                         num_epochs=spec["epochs"])
    fit_s = time.perf_counter() - t
    scores = linear_probe.evaluate_probe(probe, x_test, y_test, idx_to_class=dict(enumerate(keep_names)))
    out = {
        "rows": int(sum(a.shape[0] for a in activations)), "train_rows": int(len(y_train)),
        "test_rows": int(len(y_test)), "classes": len(set(y_train.tolist())), "units": int(x_train.shape[1]),
        "num_layers": num_layers, "extract_s": round(extract_s, 2), "load_activations_s": round(load_s, 2),
        "create_tensors_s": round(tensors_s, 2), "bytes_stored": acts_file.stat().st_size,
        "fit_s": round(fit_s, 2), "epochs": spec["epochs"], "test_accuracy": round(float(scores["__OVERALL__"]), 4),
        "threads": torch.get_num_threads(),
    }
    out["extract_rows_per_s"] = round(out["rows"] / extract_s, 1)
    out["bytes_per_token"] = round(out["bytes_stored"] / out["rows"], 1)
    (work / "neurox-result.json").write_text(json.dumps(out))
    if not spec.get("keep"):
        acts_file.unlink()


def neurox(ex: object, sentences: list, work: Path, args: argparse.Namespace) -> dict:
    """Run the NeuroX side in a child process on the sentences of `ex`, with its split."""
    from miner.model.loading import bundled_minilm

    texts = [" ".join(w) for w, _ in sentences]
    split = [-1] * len(sentences)
    for k, key in enumerate(ex.sentence_keys):  # type: ignore[attr-defined]  # key: the sentence's line in the file
        split[int(key)] = int(ex.splits[ex.row_sentence == k][0])  # type: ignore[attr-defined]
    train_labels = [lab for (_, labs), s in zip(sentences, split) if s == 0 for lab in labs]
    majority = max(set(train_labels), key=train_labels.count)
    (work / "neurox-input.txt").write_text("".join(t + "\n" for t in texts))
    spec = {"model": str(bundled_minilm()), "input": str(work / "neurox-input.txt"), "work": str(work),
            "split": split, "words": [list(w) for w, _ in sentences], "labels": [list(lb) for _, lb in sentences],
            "classes": list(ex.classes), "majority": majority, "l1": args.l1, "l2": args.l2,  # type: ignore[attr-defined]
            "epochs": args.epochs, "threads": args.threads, "keep": args.keep}
    spec_path = work / "neurox-spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ensure_neurox()), str(REPO)]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    log = work / "neurox-stderr.log"
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--neurox-child", str(spec_path)],
                                 cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"NeuroX child failed; see {log}:\n{log.read_text()[-3000:]}")
    result = json.loads((work / "neurox-result.json").read_text())
    result["child_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "default", help="prepared corpus to tag")
    parser.add_argument("--sentences", type=int, default=1500)
    parser.add_argument("--max-words", type=int, default=50, help="skip longer sentences (no truncation either side)")
    parser.add_argument("--l1", type=float, default=1e-3)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--min-per-class", type=int, default=5, help="our rare-class rule (classes dropped)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="our extraction batch size")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--keep", action="store_true", help="keep NeuroX's activation JSON")
    add_out_options(parser)
    parser.add_argument("--neurox-child", type=Path, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    check_out(ns)
    if ns.neurox_child:
        neurox_child(ns.neurox_child)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ensure_neurox()
    sentences = pick_sentences(tagged_file(ns.corpus, 60_000, CACHE), ns.sentences, ns.max_words)
    with tempfile.TemporaryDirectory(prefix="neurox-cmp-", dir=CACHE) as tmp:
        work = Path(tmp)
        concept = work / "pos.txt"
        concept.write_text("".join(" ".join(f"{w}/{t}" for w, t in zip(ws, ts)) + "\n" for ws, ts in sentences))
        mine, ex = ours(concept, work, ns)
        print(json.dumps({"ours": mine}), file=sys.stderr)
        theirs = neurox(ex, sentences, work, ns)
    report = {
        "benchmark": "neurox_compare", "data": "data/default sentences tagged by spaCy en_core_web_sm (word/TAG)",
        "sentences": len(sentences), "l1": ns.l1, "l2": ns.l2, "epochs": ns.epochs, "ours": mine, "neurox": theirs,
        "ratios": {
            "extraction_throughput_x": round(mine["extract_rows_per_s"] / theirs["extract_rows_per_s"], 2),
            "bytes_per_token_share": round(mine["bytes_per_token"] / theirs["bytes_per_token"], 4),
            "test_accuracy_points": round(100 * (mine["test_accuracy"] - theirs["test_accuracy"]), 2),
            "fit_seconds_share": round(mine["fit_s"] / theirs["fit_s"], 3),
        },
        "targets": {"extraction_throughput_x": ">= 10", "bytes_per_token_share": "<= 0.1",
                    "test_accuracy_points": "within +-1", "fit_seconds_share": "<= 1"},
    }
    emit(report, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
