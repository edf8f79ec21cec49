"""Step 1 driver: dispatch a run's blocks to workers, merge them exactly in block order, checkpoint, resume, finish."""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner import __version__
from miner.config import JobSpec, resolve_job_paths
from miner.corpus.combined import open_corpora
from miner.corpus.store import read_rows
from miner.errors import ConfigError
from miner.mining import append, sample
from miner.mining.checkpoint import LaneFiles, MiningState, load_checkpoint
from miner.mining.context import MiningContext, job_fingerprint
from miner.mining.executors import (
    Executor,
    InlineExecutor,
    RayExecutor,
    WorkerConfig,
)
from miner.mining.exemplars import exemplar_table
from miner.mining.hardware import HardwareIdentity, check_same_hardware, check_workers_agree
from miner.mining.lane_loop import LaneLoop
from miner.mining.lanes import merge_lane_files
from miner.mining.outputs import run_stats, write_outputs
from miner.mining.plan import BlockPlan, auto_block_size, plan_blocks
from miner.model.layout import unit_layout
from miner.model.loading import (
    attention_implementation,
    model_head_info,
    resolve_model_path,
    validate_model_folder,
    weights_sha256,
)
from miner.run.folder import FILES, RunFolder, table_name

# Blocks are fixed, contiguous slices of corpus shards (miner.mining.plan). Each worker's lane keeps its own
# queues (miner.mining.lanes); the final queues are the merge of the lanes' queues, identical for any number of
# workers and after any interruption. The driver accounts for blocks strictly in block order.

log = logging.getLogger(__name__)

def run_mining(job: JobSpec, base: Path, address: str | None = None, executor: str = "ray",
               stop_after_blocks: int | None = None, allow_other_hardware: bool = False) -> dict:
    """Mine a job to completion (resuming from a checkpoint when one matches); returns the run manifest.

    `stop_after_blocks` ends the run early after merging that many blocks (for tests of resume).
    A resume on other hardware (device type, dtype, GPU, torch or CUDA version) is refused unless
    `allow_other_hardware`.
    """
    started = time.monotonic()
    paths = resolve_job_paths(job, base, Path.cwd())  # the job as given is what the manifest records
    corpus_dir, corpus = open_corpora(paths.corpus_folders)
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
    appending = None
    if existing and existing.get("fingerprint") != fingerprint:  # a longer corpus list, or another job: refused
        appending = append.plan_append(run, existing, job, corpus_dir, corpus, weights)
    elif existing and existing.get("appending"):  # an append interrupted while it was finishing
        appending = existing["appending"]
    created_folder = not out.exists()
    run.claim(fingerprint, job, appending=appending is not None)
    ctx = MiningContext(job=job, run=run, fingerprint=fingerprint, corpus_dir=corpus_dir, corpus=corpus, layout=layout,
                        model_folder=model_folder, model_config=config, config_dict=config_dict, weights=weights,
                        address=address, executor=executor, stop_after_blocks=stop_after_blocks, started=started,
                        allow_other_hardware=allow_other_hardware, attention=attention_implementation(config),
                        append=appending)
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
    state = load_checkpoint(ctx.run, ctx.fingerprint)
    total = ctx.corpus.sentences if job.max_sentences is None else min(ctx.corpus.sentences, job.max_sentences)
    size = (state.block_size if state is not None and state.block_size
            else ctx.append["block_size"] if ctx.append else job.block_size or auto_block_size(total))
    plans = plan_blocks(ctx.corpus, size, job.max_sentences)
    sampled = sample.plan_sample(plans, job.sample)
    if state is not None:
        _check_skips(list(state.skipped_shards), job, ctx.run.path)
        log.info("resuming %s at block %d/%d", ctx.run.path, state.next_block, len(plans))
    elif ctx.append:
        state = append.start_state(ctx.run, ctx.append, plans, sampled)
        log.info("appending to %s: blocks %d-%d of %d are new (%d sentences)", ctx.run.path, state.next_block,
                 len(plans) - 1, len(plans), sum(p.rows for p in plans[state.next_block:]))
    else:
        state = MiningState.fresh(ctx.layout.n_units, job.top_n, ("top", "bottom") if job.bottom else ("top",))
        state.queues = {}  # the queues live in the lanes until _finish merges them
        sample.clear_shards(ctx.run)  # shards of an attempt that never checkpointed are rewritten anyway
    state.block_size = size
    for stale in ctx.run.path.glob(".checkpoint.tmp-*"):  # a checkpoint a killed session left half-written
        shutil.rmtree(stale, ignore_errors=True)
    threads = job.threads_per_worker or max(1, (os.cpu_count() or 1) // job.workers)
    cfg = WorkerConfig(str(ctx.model_folder), job, threads)
    pool: Executor = InlineExecutor(cfg) if ctx.executor == "inline" else RayExecutor(cfg, job.workers, ctx.address)
    nodes = getattr(pool, "nodes", [])
    try:
        found = [n.get("hardware") for n in nodes] if nodes else [getattr(pool, "hardware", None)]
        hardware = check_workers_agree([HardwareIdentity.from_dict(h) for h in found if h is not None])
        check_same_hardware(state.hardware, hardware, ctx.run.path, ctx.allow_other_hardware)
        state.hardware = hardware.as_dict()
        LaneLoop(ctx, state, plans, pool, sampled).run()
    finally:
        pool.close()
    if state.next_block < len(plans) and not state.stopped_early:
        return {"status": "incomplete", "next_block": state.next_block, "blocks": len(plans)}
    return _finish(ctx, state, plans, nodes, sampled)


def _finish(ctx: MiningContext, state: MiningState, plans: list[BlockPlan], nodes: list,
            sampled: dict[int, Any]) -> dict:
    """Write the run's tables, the score sample and its complete manifest; returns the manifest."""
    from transformers import AutoTokenizer

    job, run, config = ctx.job, ctx.run, ctx.model_config
    directions = ("top", "bottom") if job.bottom else ("top",)
    removed: list[str] = []
    if ctx.append:  # from here the run is the longer one: unfinished until its manifest says complete again
        run.write_json(run.manifest, {"status": "running", "fingerprint": ctx.fingerprint, "appending": ctx.append,
                                      "job": job.model_dump(mode="json"), "code_version": __version__})
        removed = append.remove_later_outputs(run)
    t_merge = time.monotonic()
    lanes = state.lanes if state.lanes is not None else LaneFiles(1, {}, {})
    files = [Path(f) if Path(f).is_absolute() else run.checkpoint / f for v in lanes.files.values() for f in v]
    state.queues = merge_lane_files(files, directions, ctx.layout.n_units, job.top_n)
    state.counters["lane_merge_seconds"] = time.monotonic() - t_merge
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_folder, trust_remote_code=job.trust_remote_code)
    manifest = write_outputs(run, job, ctx.layout, state, ctx.corpus_dir, ctx.corpus, tokenizer, config)
    merged = [p.index for p in plans[: state.next_block] if p.index in sampled and p.shard not in state.skipped_shards]
    t_sample = time.monotonic()
    def texts(ids: np.ndarray) -> pa.Array:
        rows = read_rows(ctx.corpus_dir, ctx.corpus, ids)
        assert np.array_equal(rows["sentence_id"].to_numpy(), ids)
        return rows["text"].combine_chunks()

    manifest["sample"] = sample.finish_sample(run, merged, ctx.layout.n_units, job.sample, texts)
    if manifest["sample"]["rows"] and job.sample.exemplars:
        ids = pq.read_table(run.file(FILES.sample_sentences), columns=["sentence_id"])["sentence_id"].to_numpy()
        scores = np.load(run.file(FILES.sample) / sample.SCORES_FILE, mmap_mode="r")
        run.write_table(run.file(FILES.unit_exemplars),
                        exemplar_table(ids, scores, job.sample.exemplar_bands, job.sample.exemplars, job.sample.seed))
        manifest["tables"].append(table_name(FILES.unit_exemplars))
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
                  "attention": ctx.attention, **model_head_info(ctx.config_dict)},
        "corpus": {"path": str(ctx.corpus_dir.resolve()), "fingerprint": ctx.corpus.fingerprint,
                   **({"paths": [p["path"] for p in parts]} if (parts := (ctx.corpus.model_extra or {}).get("parts"))
                      else {}),
                   "sentences": ctx.corpus.sentences,
                   "shards": [{"file": s.file, "sha256": s.sha256} for s in ctx.corpus.shards]},
        "blocks": {"planned": len(plans), "merged": state.next_block, "stopped_early": state.stopped_early,
                   "size": state.block_size},
        "skipped_shards": [{"file": f, "reason": r} for f, r in sorted(state.skipped_shards.items())],
        "hardware": state.hardware,
        "workers": {"count": job.workers, "executor": ctx.executor, "nodes": nodes,
                    "lanes": lanes.count,
                    "lane_blocks": {str(k): sum(1 for p in plans[: state.next_block] if p.index % lanes.count == k)
                                    for k in range(lanes.count)}},
        "stats": run_stats(state.counters),
        "timings": {"last_session_seconds": round(time.monotonic() - ctx.started, 3),
                    "forward_seconds": round(state.counters["forward_seconds"], 3),
                    "worker_seconds": round(state.counters["worker_seconds"], 3),
                    # of these: the unit moments' sums and the score sample (gathering on the workers, shards)
                    "moments_seconds": round(state.counters.get("moments_seconds", 0.0), 3),
                    "sample_seconds": round(state.counters.get("sample_seconds", 0.0), 3),
                    "tokenize_seconds": round(state.counters.get("tokenize_seconds", 0.0), 3),
                    # checkpoints: from asking the lanes to save to the swap (includes waiting for blocks in
                    # flight before the cut), their count and the size of the last one
                    "checkpoints": int(state.counters.get("checkpoints", 0)),
                    "checkpoint_seconds": round(state.counters.get("checkpoint_seconds", 0.0), 3),
                    "checkpoint_bytes": int(state.counters.get("checkpoint_bytes", 0)),
                    "lane_merge_seconds": round(state.counters.get("lane_merge_seconds", 0.0), 3),
                    # the block loop (actors started), and of it the time the driver waited for the lanes
                    "loop_seconds": round(state.counters.get("loop_seconds", 0.0), 3),
                    "driver_wait_seconds": round(state.counters.get("driver_wait_seconds", 0.0), 3)},
        "completed": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(run.path.resolve()),
    })
    if ctx.append:
        manifest["append"] = {**ctx.append, "removed": removed,
                              "added_sentences": int(state.counters["sentences"]) - ctx.append["from_sentences"]}
        if removed:
            log.warning("%s: the later stages' outputs were made from the shorter corpus and were removed (%s)",
                        run.path, ", ".join(removed))
    run.write_json(run.manifest, manifest)
    sample.remove_shards(run)
    shutil.rmtree(run.checkpoint_old, ignore_errors=True)
    return manifest
