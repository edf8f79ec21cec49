"""Brute-force twin of mining: score every sentence of the job, sort everything, keep N per unit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from miner.config import JobSpec
from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader
from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.plan import plan_blocks
from miner.model.layout import unit_layout
from miner.model.loading import load_model, resolve_model_path


def all_scores(job: JobSpec, base: Path) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]],
                                                list[tuple[np.ndarray, np.ndarray]]]:
    """(ids [S], scores [S, U], per-batch max and min peaks as (values [b, U], positions [b, U])) from the same
    blocks and batches the miner uses; a position is the first real token holding the extreme (torch.max)."""
    corpus_dir = job.corpus if job.corpus.is_absolute() else base / job.corpus
    loaded = load_model(resolve_model_path(job.model, base), "cpu", "float32", job.init, job.init_seed)
    layout = unit_layout(loaded.config, list(job.sites), job.layers)
    bm = BlockMiner(loaded, layout, job.top_n, job.bottom, job.aggregation, job.max_length, job.batch_size)
    corpus = load_corpus(corpus_dir)
    reader = CorpusReader(corpus_dir, corpus)
    ids, scores, peak_max, peak_min = [], [], [], []
    for plan in plan_blocks(corpus, job.block_size, job.max_sentences):
        block_ids, texts = reader.block(plan)
        batches, _ = make_batches(loaded.tokenizer, block_ids, texts, bm.max_length, job.batch_size)
        for batch in batches:
            tensors = bm.forward(batch)
            ids.append(batch.ids.numpy())
            scores.append(bm.scores(tensors, batch.real).numpy())
            x = torch.cat([t.float() for t in tensors], dim=2)
            m = batch.real[:, :, None]
            hi, lo = x.masked_fill(~m, float("-inf")).max(1), x.masked_fill(~m, float("inf")).min(1)
            peak_max.append((hi.values.numpy(), hi.indices.numpy()))
            peak_min.append((lo.values.numpy(), lo.indices.numpy()))
    bm.close()
    return np.concatenate(ids), np.concatenate(scores), peak_max, peak_min


def expected_queues(ids: np.ndarray, scores: np.ndarray, n: int, direction: str) -> list[np.ndarray]:
    """Per unit: sentence ids of the n best scores (top: highest; bottom: lowest), ties by smaller id."""
    out = []
    for u in range(scores.shape[1]):
        s = scores[:, u] + 0.0
        primary = -s if direction == "top" else s
        order = np.lexsort((ids, primary))
        out.append(ids[order[:n]])
    return out
