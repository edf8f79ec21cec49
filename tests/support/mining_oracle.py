"""Brute-force twin of mining: score every sentence of the job, sort everything, keep N per unit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from miner.config import JobSpec, load_job
from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader
from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.driver import run_mining
from miner.mining.plan import plan_blocks
from miner.model.layout import unit_layout
from miner.model.loading import load_model, resolve_model_path


def all_scores(job: JobSpec, base: Path, device: str = "cpu", dtype: str = "float32",
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """(ids [S], scores [S, U], per-batch max and min peaks as (values [b, U], positions [b, U])) from the same
    blocks and batches the miner uses, computed on `device` in `dtype`; a position is the first real token
    holding the extreme (torch.max)."""
    corpus_dir = job.corpus if job.corpus.is_absolute() else base / job.corpus
    loaded = load_model(resolve_model_path(job.model, base), device, dtype, job.init, job.init_seed)
    layout = unit_layout(loaded.config, list(job.sites), job.layers)
    bm = BlockMiner(loaded, layout, job.top_n, job.bottom, job.aggregation, job.max_length, job.batch_size)
    corpus = load_corpus(corpus_dir)
    reader = CorpusReader(corpus_dir, corpus)
    ids, scores, peak_max, peak_min = [], [], [], []
    for plan in plan_blocks(corpus, job.block_size, job.max_sentences):
        block_ids, texts = reader.block(plan)
        batches, _ = make_batches(loaded.tokenizer, block_ids, texts, bm.max_length, job.batch_size,
                                  job.batch_tokens)
        for batch in batches:
            tensors = bm.forward(batch)
            ids.append(batch.ids.numpy())
            real = batch.real.to(loaded.device)
            scores.append(bm.scores(tensors, real).cpu().numpy())
            x = torch.cat([t.float() for t in tensors], dim=2)
            m = real[:, :, None]
            hi, lo = x.masked_fill(~m, float("-inf")).max(1), x.masked_fill(~m, float("inf")).min(1)
            peak_max.append((hi.values.cpu().numpy(), hi.indices.cpu().numpy()))
            peak_min.append((lo.values.cpu().numpy(), lo.indices.cpu().numpy()))
    bm.close()
    return np.concatenate(ids), np.concatenate(scores), peak_max, peak_min


def check_against_oracle(job_path: Path, device: str = "cpu", dtype: str = "float32") -> dict:
    """Mine a job in this process and check every queue (ids, order, bit-exact scores) against `all_scores` on
    `device` in `dtype` (the job's own device and dtype: the oracle is exact only for the same hardware)."""
    job, base = load_job(job_path)
    manifest = run_mining(job, base, executor="inline")
    run = Path(manifest["run_dir"])
    top = pq.read_table(run / "top_sentences.parquet").to_pandas()
    ids, scores, _, _ = all_scores(job, base, device, dtype)
    assert len(ids) == manifest["stats"]["sentences"]
    for direction in ("top", "bottom") if job.bottom else ("top",):
        expected = expected_queues(ids, scores, job.top_n, direction)
        got = top[top.direction == direction]
        for unit in range(scores.shape[1]):
            rows = got[got.unit_id == unit].sort_values("rank")
            assert rows.sentence_id.tolist() == expected[unit].tolist(), (direction, unit)
            pos = {int(s): i for i, s in enumerate(ids)}
            want = np.array([scores[pos[int(s)], unit] for s in rows.sentence_id], dtype=np.float32)
            assert np.array_equal(rows.score.to_numpy(), want)
    return manifest


def expected_queues(ids: np.ndarray, scores: np.ndarray, n: int, direction: str) -> list[np.ndarray]:
    """Per unit: sentence ids of the n best scores (top: highest; bottom: lowest), ties by smaller id."""
    out = []
    for u in range(scores.shape[1]):
        s = scores[:, u] + 0.0
        primary = -s if direction == "top" else s
        order = np.lexsort((ids, primary))
        out.append(ids[order[:n]])
    return out


def lane_updates(ids: np.ndarray, scores: np.ndarray, first_ids: list[int], lanes: int, n: int,
                 direction: str) -> list[int]:
    """Per block (blocks start at `first_ids`, block k mined by lane k mod `lanes`): how many entries, summed
    over units, the block brings into its lane's top-n of the lane's blocks so far (the convergence count)."""
    block_of = np.searchsorted(np.asarray(first_ids), ids, side="right") - 1
    out = []
    for k in range(len(first_ids)):
        before = (block_of < k) & (block_of % lanes == k % lanes)
        upto = before | (block_of == k)
        total = 0
        for u in range(scores.shape[1]):
            old = set(expected_queues(ids[before], scores[before, u : u + 1], n, direction)[0].tolist())
            new = set(expected_queues(ids[upto], scores[upto, u : u + 1], n, direction)[0].tolist())
            total += len(new - old)
        out.append(total)
    return out
