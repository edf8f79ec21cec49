"""Appending a corpus to a finished run vs mining the concatenation from scratch: prints JSON.

Setting (issue 18, item 5): the first 2 x `--sentences` sentences of the default corpus become two prepared corpora
(the second prepared `--after` the first), the bundled MiniLM mines the first one, then the job's corpus list
grows by the second one (the append); a second run mines the list from scratch with the same block size. Reports
the wall time of each mining session (model loading and the workers' start included: what a user waits for),
the append's share of the scratch time, and whether the two runs' tables are identical.

Usage: python benchmarks/append_time.py [--corpus data/default] [--sentences 20000] [--workers 1] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from json_out import add_out_options, check_out, emit

from miner.config import PrepareOptions, RunOptions, load_job
from miner.corpus.prepare import load_corpus, prepare_corpus
from miner.corpus.store import read_rows
from miner.mining.driver import run_mining

TABLES = ("top_sentences", "sentences", "units", "unit_moments", "unit_distribution", "unit_histograms",
          "sample_sentences", "convergence")


def split_corpus(source: Path, sentences: int, tmp: Path) -> tuple[Path, Path]:
    """Two corpora from the source's first 2 x `sentences` sentences (texts and metadata), the second after
    the first."""
    import numpy as np

    manifest = load_corpus(source)
    rows = read_rows(source, manifest, np.arange(2 * sentences, dtype=np.int64)).to_pylist()
    keep = [c for c in manifest.columns if c not in ("sentence_id", "n_tokens", "doc_id")]
    parts = []
    for k, chunk in enumerate((rows[:sentences], rows[sentences:])):
        src = tmp / f"part{k}.jsonl"
        src.write_text("".join(json.dumps({c: r[c] for c in keep}) + "\n" for r in chunk))
        out = tmp / f"corpus{k}"
        prepare_corpus([src], out, PrepareOptions(min_tokens=1, shard_size=10_000),
                       RunOptions(workers=1), after=parts[0] if parts else None)
        parts.append(out)
    return parts[0], parts[1]


def mine(tmp: Path, name: str, corpus: list[Path], workers: int, block: int) -> tuple[float, dict]:
    import yaml

    job = tmp / f"{name}-{len(corpus)}.yaml"
    job.write_text(yaml.safe_dump({"name": name, "model": "minilm", "corpus": [str(c) for c in corpus],
                                   "output": str(tmp / name), "top_n": 1000, "bottom": True, "workers": workers,
                                   "block_size": block, "sample": {"sentences": 10_000}}))
    t = time.perf_counter()
    manifest = run_mining(*load_job(job))
    return time.perf_counter() - t, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/default"))
    parser.add_argument("--sentences", type=int, default=20_000, help="sentences of each of the two corpora")
    parser.add_argument("--workers", type=int, default=1)
    add_out_options(parser)
    ns = parser.parse_args()
    check_out(ns)
    block = max(1_000, ns.sentences // 10)
    with tempfile.TemporaryDirectory(prefix="miner-append-") as name:
        tmp = Path(name)
        first, second = split_corpus(ns.corpus, ns.sentences, tmp)
        t_first, _ = mine(tmp, "grown", [first], ns.workers, block)
        t_append, grown = mine(tmp, "grown", [first, second], ns.workers, block)
        t_scratch, scratch = mine(tmp, "scratch", [first, second], ns.workers, block)
        identical = {t: pq.read_table(tmp / "grown" / f"{t}.parquet").equals(pq.read_table(tmp / "scratch" /
                                                                                         f"{t}.parquet"))
                     for t in TABLES}
        identical["sample_scores"] = ((tmp / "grown" / "sample" / "scores.npy").read_bytes()
                                      == (tmp / "scratch" / "sample" / "scores.npy").read_bytes())
    emit({"benchmark": "append_time", "model": "all-MiniLM-L6-v2", "sentences_each": ns.sentences,
          "workers": ns.workers, "block_size": block,
          "first_run_seconds": round(t_first, 1), "append_seconds": round(t_append, 1),
          "scratch_seconds": round(t_scratch, 1), "append_vs_scratch": round(t_append / t_scratch, 3),
          "appended_sentences": grown["append"]["added_sentences"],
          "append_session_seconds": grown["timings"]["last_session_seconds"],
          "scratch_session_seconds": scratch["timings"]["last_session_seconds"],
          "identical_tables": identical}, ns)


if __name__ == "__main__":
    main()
