"""Step 1 driver: dispatch a run's blocks to workers, merge them exactly in block order, checkpoint, resume, finish."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from miner import __version__
from miner.config import CorpusManifest, JobSpec, resolve_job_paths
from miner.corpus.prepare import load_corpus
from miner.corpus.store import CorpusReader, DamagedShardError
from miner.errors import ConfigError, InputError
from miner.mining import sample
from miner.mining.block_miner import BlockResult
from miner.mining.checkpoint import MiningState, load_checkpoint, save_checkpoint
from miner.mining.executors import Executor, InlineExecutor, MineRequest, RayExecutor, WorkerConfig, mine_task
from miner.mining.outputs import run_stats, write_outputs
from miner.mining.plan import BlockPlan, plan_blocks
from miner.mining.topn import Candidates
from miner.model.layout import LayerSlice, UnitLayout, unit_layout
from miner.model.loading import model_head_info, resolve_model_path, validate_model_folder, weights_sha256
from miner.run.folder import FILES, RunFolder, table_name

# Blocks are fixed, contiguous slices of corpus shards (miner.mining.plan), so the merged queues are identical
# for any number of workers and after any interruption: the driver merges block k only after blocks 0..k-1.

log = logging.getLogger(__name__)

# Fields that do not change a run's result (excluded from its fingerprint).
# skip_corrupt_shards is one too: a run stopped by a corrupt shard resumes with the option turned on.
_EXECUTION_FIELDS = {"workers", "threads_per_worker", "gpus_per_worker", "checkpoint_seconds", "output", "name",
                     "annotate", "signatures", "vectors", "analysis", "probe", "ablate", "skip_corrupt_shards"}
# Per-block counters summed into the run's counters (BlockStats fields).
_BLOCK_COUNTERS = ("sentences", "real_tokens", "attended_tokens", "computed_tokens", "truncated", "batches",
                   "kernel_batches")


@dataclass(frozen=True)
class MiningContext:
    """Everything one mining session works from, resolved once by run_mining."""

    job: JobSpec
    run: RunFolder
    fingerprint: str
    """job_fingerprint: identifies the run's result (checkpoints of another job are never resumed)."""
    corpus_dir: Path
    corpus: CorpusManifest
    layout: UnitLayout
    model_folder: Path
    model_config: Any
    """The transformers config of the model."""
    config_dict: dict
    """The model's config.json."""
    weights: str
    """SHA-256 of the weight files."""
    address: str | None = None
    """Ray cluster address (None: the local or current cluster)."""
    executor: str = "ray"
    stop_after_blocks: int | None = None
    started: float = 0.0
    """time.monotonic() when the session started."""


def job_fingerprint(job: JobSpec, corpus_fp: str, weights: str) -> str:
    """Identity of a run's result: result-shaping job fields, corpus and model weights."""
    fields = job.model_dump(mode="json", exclude=_EXECUTION_FIELDS)
    fields["corpus"] = corpus_fp
    fields["model"] = weights
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def convergence_rows(block: BlockPlan, seen: int, gains: dict[str, torch.Tensor], layers: list[LayerSlice],
                     n: int) -> list[dict]:
    """Per direction: entries the block changed, overall (site 'all', layer -1) and per (site, layer)."""
    rows = []
    for d, gain in gains.items():
        total = int(gain.sum())
        rows.append({"block": block.index, "first_sentence_id": block.first_id, "sentences": block.rows,
                     "sentences_seen": seen, "direction": d, "site": "all", "layer": -1, "updates": total,
                     "entries": int(gain.numel()) * n, "update_rate": total / (gain.numel() * n)})
        for site, layer, lo, hi in layers:
            upd = int(gain[lo:hi].sum())
            rows.append({"block": block.index, "first_sentence_id": block.first_id, "sentences": block.rows,
                         "sentences_seen": seen, "direction": d, "site": site, "layer": layer, "updates": upd,
                         "entries": (hi - lo) * n, "update_rate": upd / ((hi - lo) * n)})
    return rows


def _format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_mining(job: JobSpec, base: Path, address: str | None = None, executor: str = "ray",
               stop_after_blocks: int | None = None) -> dict:
    """Mine a job to completion (resuming from a checkpoint when one matches); returns the run manifest.

    `stop_after_blocks` ends the run early after merging that many blocks (for tests of resume).
    """
    started = time.monotonic()
    paths = resolve_job_paths(job, base, Path.cwd())  # the job as given is what the manifest records
    corpus_dir = paths.corpus
    corpus = load_corpus(corpus_dir)
    model_folder = resolve_model_path(paths.model)
    config_dict = validate_model_folder(model_folder, job.allow_pickle)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_folder, trust_remote_code=job.trust_remote_code)
    layout = unit_layout(config, list(job.sites), job.layers)
    weights = weights_sha256(model_folder, job.allow_pickle)
    fingerprint = job_fingerprint(job, corpus.fingerprint, weights)
    out = paths.output
    assert out is not None  # resolve_job_paths always sets it
    run = RunFolder(out)
    existing = run.status()
    if existing and existing.get("fingerprint") == fingerprint and existing.get("status") == "complete":
        _check_skips([s["file"] for s in existing.get("skipped_shards", [])], job, out)
        log.info("%s: already complete; nothing to do", out)
        return existing
    created_folder = not out.exists()
    run.claim(fingerprint, job)
    ctx = MiningContext(job=job, run=run, fingerprint=fingerprint, corpus_dir=corpus_dir, corpus=corpus, layout=layout,
                        model_folder=model_folder, model_config=config, config_dict=config_dict, weights=weights,
                        address=address, executor=executor, stop_after_blocks=stop_after_blocks, started=started)
    try:
        return _mine(ctx)
    except BaseException:
        if existing is None:
            run.discard_unstarted(created_folder)
        raise
    finally:
        run.release()


def _check_skips(skipped: list[str], job: JobSpec, out: Path) -> None:
    """A run that skipped corrupt shards is only reused (or resumed) by a job that allows skipping."""
    if skipped and not job.skip_corrupt_shards:
        raise ConfigError(f"{out}: was mined with corrupt shard(s) skipped ({', '.join(sorted(skipped))}); set "
                          "skip_corrupt_shards: true to keep that result, or delete the folder to mine the repaired corpus")


def _mine(ctx: MiningContext) -> dict:
    """The body of run_mining, run while holding the run folder's lock."""
    job = ctx.job
    plans = plan_blocks(ctx.corpus, job.block_size, job.max_sentences)
    state = load_checkpoint(ctx.run, ctx.fingerprint)
    if state is not None:
        _check_skips(list(state.skipped_shards), job, ctx.run.path)
        log.info("resuming %s at block %d/%d", ctx.run.path, state.next_block, len(plans))
    else:
        state = MiningState.fresh(ctx.layout.n_units, job.top_n, ("top", "bottom") if job.bottom else ("top",))
        sample.clear_shards(ctx.run)  # shards of an attempt that never checkpointed are rewritten anyway
    sampled = sample.plan_sample(plans, job.sample)
    threads = job.threads_per_worker or max(1, (os.cpu_count() or 1) // job.workers)
    cfg = WorkerConfig(str(ctx.model_folder), job, threads)
    pool: Executor = InlineExecutor(cfg) if ctx.executor == "inline" else RayExecutor(cfg, job.workers, ctx.address)
    nodes = getattr(pool, "nodes", [])
    try:
        _BlockLoop(ctx, state, plans, pool, sampled).run()
    finally:
        pool.close()
    if state.next_block < len(plans) and not state.stopped_early:
        return {"status": "incomplete", "next_block": state.next_block, "blocks": len(plans)}
    return _finish(ctx, state, plans, nodes, sampled)


class _BlockLoop:
    """Dispatch blocks while workers have room, merge results strictly in block order, checkpoint, stop early."""

    def __init__(self, ctx: MiningContext, state: MiningState, plans: list[BlockPlan], pool: Executor,
                 sampled: dict[int, Any]) -> None:
        self.ctx, self.job, self.state, self.plans, self.pool = ctx, ctx.job, state, plans, pool
        self.sampled = sampled
        """Block index -> ids of its sentences in the score sample (see miner.mining.sample)."""
        self.reader = CorpusReader(ctx.corpus_dir, ctx.corpus)
        self.layers = ctx.layout.slices()
        self.pending: dict[int, BlockResult | None] = {}  # None: a block of a skipped (corrupt) shard
        self.next_dispatch = state.next_block
        stop = ctx.stop_after_blocks
        self.end_block = len(plans) if stop is None else min(len(plans), state.next_block + stop)
        self.total = sum(p.rows for p in plans)
        self.mined = 0  # sentences mined in this session
        self.t_loop = self.last_ckpt = time.monotonic()

    def run(self) -> None:
        state = self.state
        while state.next_block < self.end_block and not state.stopped_early:
            while self.next_dispatch < self.end_block and self.pool.in_flight() < self.pool.capacity:
                self._dispatch(self.plans[self.next_dispatch])
                self.next_dispatch += 1
            if state.next_block not in self.pending:
                result = self.pool.next_result()
                self.pending[result.block] = result
            while state.next_block in self.pending:
                if self._merge(self.pending.pop(state.next_block)):
                    break

    def _dispatch(self, plan: BlockPlan) -> None:
        """Send one block to a worker (with the queues' current thresholds), or mark it skipped."""
        state = self.state
        if plan.shard not in state.skipped_shards:
            try:
                ids, texts = self.reader.block(plan)
            except DamagedShardError as exc:
                if not self.job.skip_corrupt_shards:
                    raise
                if any(p.shard == plan.shard for p in self.plans[: state.next_block]):
                    raise InputError(f"{exc.reason}; part of this shard was already mined, so it cannot be "
                                     "skipped: restore it or delete the run folder") from None
                log.warning("skipping %s (skip_corrupt_shards): %s", plan.shard, exc)
                state.skipped_shards[plan.shard] = exc.reason
        if plan.shard in state.skipped_shards:
            self.pending[plan.index] = None
        else:
            floors = {d: q.threshold().numpy() for d, q in state.queues.items()}
            request = MineRequest(plan.index, ids, texts, floors, self.sampled.get(plan.index))
            self.pool.submit_task(mine_task, plan.index, request)

    def _merge(self, res: BlockResult | None) -> bool:
        """Merge the next block in order; True when the queues converged (stop early)."""
        state, job = self.state, self.job
        plan = self.plans[state.next_block]
        if res is None:  # nothing merged, no convergence row, early stop unaffected
            state.next_block += 1
            state.counters["skipped_sentences"] = state.counters.get("skipped_sentences", 0) + plan.rows
            if state.next_block == self.end_block:
                save_checkpoint(self.ctx.run, state, self.ctx.fingerprint)
            return False
        gains = {d: state.queues[d].merge(Candidates.from_numpy(res.directions[d])) for d in state.queues}
        assert state.moments is not None and res.moments is not None
        state.moments.add(res.moments)
        if plan.index in self.sampled:  # written before the checkpoint that covers this block
            assert res.sample is not None
            t_shard = time.monotonic()
            sample.write_shard(self.ctx.run, plan.index, self.sampled[plan.index], res.sample)
            res.stats.sample_seconds += time.monotonic() - t_shard
        for k in ("moments_seconds", "sample_seconds"):  # the cost of the moments and the sample, for the manifest
            state.counters[k] = state.counters.get(k, 0.0) + getattr(res.stats, k)
        s = res.stats
        for k in _BLOCK_COUNTERS:
            state.counters[k] = state.counters.get(k, 0) + getattr(s, k)
        state.counters["forward_seconds"] += s.forward_seconds
        state.counters["worker_seconds"] += s.seconds
        state.next_block += 1
        self.mined += plan.rows
        rows = convergence_rows(plan, int(state.counters["sentences"]), gains, self.layers, job.top_n)
        state.convergence.extend(rows)
        overall = [r for r in rows if r["site"] == "all"]
        rate = sum(r["updates"] for r in overall) / sum(r["entries"] for r in overall)
        if job.early_stop is not None:
            calm = rate < job.early_stop.max_update_rate
            state.calm_blocks = state.calm_blocks + 1 if calm else 0
            if (state.calm_blocks >= job.early_stop.patience
                    and state.counters["sentences"] >= job.early_stop.min_sentences):
                state.stopped_early = True
        elapsed = time.monotonic() - self.t_loop
        speed = self.mined / elapsed if elapsed > 0 else 0.0
        left = self.total - state.counters["sentences"] - state.counters.get("skipped_sentences", 0)
        log.info("block %d/%d  %s sentences  %.0f sent/s  ETA %s  update rate %.2f%%",
                 state.next_block, len(self.plans), f"{int(state.counters['sentences']):,}", speed,
                 _format_eta(left / speed if speed else 0), 100 * rate)
        if (time.monotonic() - self.last_ckpt >= job.checkpoint_seconds or state.next_block == self.end_block
                or state.stopped_early):
            save_checkpoint(self.ctx.run, state, self.ctx.fingerprint)
            self.last_ckpt = time.monotonic()
        if state.stopped_early:
            assert job.early_stop is not None
            log.info("queues converged (update rate < %.3g for %d blocks); stopping early",
                     job.early_stop.max_update_rate, job.early_stop.patience)
        return state.stopped_early


def _finish(ctx: MiningContext, state: MiningState, plans: list[BlockPlan], nodes: list,
            sampled: dict[int, Any]) -> dict:
    """Write the run's tables, the score sample and its complete manifest; returns the manifest."""
    from transformers import AutoTokenizer

    job, run, config = ctx.job, ctx.run, ctx.model_config
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_folder, trust_remote_code=job.trust_remote_code)
    manifest = write_outputs(run, job, ctx.layout, state, ctx.corpus_dir, ctx.corpus, tokenizer, config)
    merged = [p.index for p in plans[: state.next_block] if p.index in sampled and p.shard not in state.skipped_shards]
    t_sample = time.monotonic()
    manifest["sample"] = sample.finish_sample(run, merged, ctx.layout.n_units, job.sample)
    manifest["sample"]["finish_seconds"] = round(time.monotonic() - t_sample, 3)
    planned = int(sum(len(v) for v in sampled.values()))
    manifest["sample"]["planned_rows"] = planned
    if manifest["sample"]["rows"] < planned:
        log.warning("score sample: %d of its %d planned sentences were mined (early stop or skipped shards): the "
                    "sample covers the mined prefix only, and runs stopped elsewhere share fewer sentences",
                    manifest["sample"]["rows"], planned)
    if manifest["sample"]["file"] is not None:
        manifest["tables"].append(table_name(FILES.sample_sentences))
    manifest.update({
        "fingerprint": ctx.fingerprint, "status": "complete", "code_version": __version__,
        "job": job.model_dump(mode="json"),
        "model": {"path": str(ctx.model_folder), "weights_sha256": ctx.weights,
                  "model_type": ctx.config_dict.get("model_type"), "init": job.init, "init_seed": job.init_seed,
                  "layers": config.num_hidden_layers if hasattr(config, "num_hidden_layers") else None,
                  **model_head_info(ctx.config_dict)},
        "corpus": {"path": str(ctx.corpus_dir.resolve()), "fingerprint": ctx.corpus.fingerprint,
                   "shards": [{"file": s.file, "sha256": s.sha256} for s in ctx.corpus.shards]},
        "blocks": {"planned": len(plans), "merged": state.next_block, "stopped_early": state.stopped_early},
        "skipped_shards": [{"file": f, "reason": r} for f, r in sorted(state.skipped_shards.items())],
        "workers": {"count": job.workers, "executor": ctx.executor, "nodes": nodes},
        "stats": run_stats(state.counters),
        "timings": {"last_session_seconds": round(time.monotonic() - ctx.started, 3),
                    "forward_seconds": round(state.counters["forward_seconds"], 3),
                    "worker_seconds": round(state.counters["worker_seconds"], 3),
                    # of these: the unit moments' sums and the score sample (gathering on the workers, shards)
                    "moments_seconds": round(state.counters.get("moments_seconds", 0.0), 3),
                    "sample_seconds": round(state.counters.get("sample_seconds", 0.0), 3)},
        "completed": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(run.path.resolve()),
    })
    run.write_json(run.manifest, manifest)
    sample.remove_shards(run)
    shutil.rmtree(run.checkpoint_old, ignore_errors=True)
    return manifest
