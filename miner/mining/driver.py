"""Step 1 driver: plan blocks, dispatch them to workers, merge results exactly in block order,
checkpoint, resume, record convergence, and write the run's tables.

Blocks are fixed, contiguous slices of corpus shards, so the merged queues are identical for any number
of workers and after any interruption: the driver merges block k only after blocks 0..k-1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from miner import __version__, atomic
from miner.config import CorpusManifest, JobSpec, resolve_job_paths
from miner.corpus.prepare import load_corpus
from miner.errors import ConfigError, InputError, OutputConflictError, first_line
from miner.mining.block_miner import BlockResult, model_max_length, tokenize_sentences
from miner.mining.executors import Executor, InlineExecutor, RayExecutor, WorkerConfig
from miner.mining.topn import Candidates, TopNQueues, decode_keys, unpack_payload
from miner.model.loading import (
    resolve_model_path,
    unit_layout,
    validate_model_folder,
    weights_sha256,
)
from miner.run.catalog import read_manifest_json

log = logging.getLogger(__name__)

# Fields that do not change a run's result (excluded from its fingerprint).
# skip_corrupt_shards is one too: a run stopped by a corrupt shard resumes with the option turned on.
_EXECUTION_FIELDS = {"workers", "threads_per_worker", "gpus_per_worker", "checkpoint_seconds", "output", "name",
                     "annotate", "signatures", "vectors", "analysis", "skip_corrupt_shards"}


@dataclass(frozen=True)
class BlockPlan:
    """A contiguous slice of one corpus shard: the unit of scheduling, checkpointing and convergence."""

    index: int
    shard: str
    row_start: int
    rows: int
    first_id: int


def auto_block_size(total: int) -> int:
    """Default block size: about 20 blocks, between 1,000 and 100,000 sentences (deterministic).

    Example: 20,000 sentences -> 1,000; 1,000,000 -> 50,000; 10,000,000 -> 100,000.
    """
    return int(min(100_000, max(1_000, -(-total // 20))))


def plan_blocks(manifest: CorpusManifest, block_size: int | None, max_sentences: int | None) -> list[BlockPlan]:
    """Cut the corpus into blocks that never cross a shard boundary."""
    total = manifest.sentences if max_sentences is None else min(manifest.sentences, max_sentences)
    size = block_size or auto_block_size(total)
    plans: list[BlockPlan] = []
    remaining = total
    for shard in manifest.shards:
        for start in range(0, shard.sentences, size):
            if remaining <= 0:
                return plans
            rows = min(size, shard.sentences - start, remaining)
            plans.append(BlockPlan(len(plans), shard.file, start, rows, shard.first_id + start))
            remaining -= rows
    return plans


class CorpusReader:
    """Reads block texts from shards, keeping the current shard in memory.

    Each shard is checked against the SHA-256 in the corpus manifest when first read, so a damaged file is
    reported by name instead of feeding wrong or partial text into the queues.
    """

    def __init__(self, corpus_dir: Path, corpus: CorpusManifest) -> None:
        self.dir = corpus_dir
        self._sha = {s.file: s.sha256 for s in corpus.shards}
        self._name: str | None = None
        self._table: pa.Table | None = None

    def _load(self, shard: str) -> pa.Table:
        path = self.dir / shard
        try:  # an I/O error (a vanished mount) is not corruption: it stops the run and is never skipped
            data = path.read_bytes()
        except OSError as exc:
            raise OSError(exc.errno, f"cannot read corpus shard ({exc.strerror or exc})", str(path)) from None
        if hashlib.sha256(data).hexdigest() != self._sha.get(shard):
            raise InputError(f"{path}: corrupt shard (SHA-256 differs from the corpus manifest); "
                             "re-prepare the corpus or set skip_corrupt_shards: true")
        try:
            return pq.read_table(pa.BufferReader(data), columns=["sentence_id", "text"])
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: corrupt or unreadable shard ({exc})") from None

    def block(self, plan: BlockPlan) -> tuple[np.ndarray, list[str]]:
        if plan.shard != self._name:
            self._table = None
            self._name = None
            self._table = self._load(plan.shard)
            self._name = plan.shard
        part = self._table.slice(plan.row_start, plan.rows)
        if part.num_rows != plan.rows:
            raise InputError(f"{self.dir / plan.shard}: corrupt shard (fewer rows than the corpus manifest says)")
        return part["sentence_id"].to_numpy(), part["text"].to_pylist()


def job_fingerprint(job: JobSpec, corpus_fp: str, weights: str) -> str:
    """Identity of a run's result: result-shaping job fields, corpus and model weights."""
    fields = job.model_dump(mode="json", exclude=_EXECUTION_FIELDS)
    fields["corpus"] = corpus_fp
    fields["model"] = weights
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass
class MiningState:
    """What a checkpoint holds: merged queues after blocks [0, next_block), convergence and counters."""

    queues: dict[str, TopNQueues]
    next_block: int
    convergence: list[dict]
    counters: dict[str, float]
    calm_blocks: int = 0
    stopped_early: bool = False
    skipped_shards: dict[str, str] = field(default_factory=dict)
    """Corrupt shards skipped (file -> reason); their blocks contribute nothing."""


class RunFolder:
    """Layout of runs/<job>/ and its atomic writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest = path / "manifest.json"
        self.checkpoint = path / "checkpoint"

    def status(self) -> dict | None:
        """The folder's manifest, None if it has none; a damaged one is an InputError naming it."""
        if not self.manifest.exists():
            return None
        return read_manifest_json(self.path)

    def claim(self, fingerprint: str, job: JobSpec) -> None:
        """Refuse a folder that holds another job; mark it as ours (status: running) otherwise."""
        existing = self.status()
        if existing is None and self.path.exists() and any(self.path.iterdir()):
            raise OutputConflictError(f"{self.path}: exists and is not a neuron-miner run; choose another output")
        if existing is not None and existing.get("fingerprint") != fingerprint:
            raise OutputConflictError(
                f"{self.path}: holds a different job ('{existing.get('job', {}).get('name')}', other settings, corpus "
                "or model); choose another output or delete it"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        atomic.remove_stale_temporaries(self.path)  # left by a killed driver; we hold the lock now
        if existing is None:
            self.write_json(self.manifest, {"status": "running", "fingerprint": fingerprint,
                                            "job": job.model_dump(mode="json"), "code_version": __version__})

    def lock(self) -> None:
        """Hold an exclusive lock on the run folder until release(): two drivers never write one run."""
        import fcntl

        if getattr(self, "_lock", None) is not None:
            return
        handle = open(self.path / ".lock", "a")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputConflictError(f"{self.path}: in use by another running miner process (wait for it, or "
                                      "stop it: `miner jobs stop` / kill the driver)") from None
        self._lock = handle

    def release(self) -> None:
        handle = getattr(self, "_lock", None)
        if handle is not None:
            handle.close()
            self._lock = None

    write_json = staticmethod(atomic.write_json)
    write_table = staticmethod(atomic.write_table)

    def save_checkpoint(self, state: MiningState, fingerprint: str) -> None:
        tmp = self.path / f".checkpoint.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            self._write_checkpoint(tmp, state, fingerprint)
        except OSError as exc:  # e.g. disk full: the previous checkpoint stays as it was
            shutil.rmtree(tmp, ignore_errors=True)
            raise atomic.write_error(self.checkpoint, exc) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = self.path / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint.exists():
            self.checkpoint.rename(old)
        tmp.rename(self.checkpoint)
        shutil.rmtree(old, ignore_errors=True)

    def _write_checkpoint(self, tmp: Path, state: MiningState, fingerprint: str) -> None:
        for d, q in state.queues.items():
            np.savez(tmp / f"queues-{d}.npz", **q.state())
        self.write_json(tmp / "state.json", {
            "fingerprint": fingerprint, "next_block": state.next_block, "convergence": state.convergence,
            "counters": state.counters, "calm_blocks": state.calm_blocks, "stopped_early": state.stopped_early,
            "skipped_shards": state.skipped_shards,
            "saved": datetime.now(UTC).isoformat(timespec="seconds"),
        })

    def load_checkpoint(self, fingerprint: str) -> MiningState | None:
        """The saved state of this job, or None; a damaged checkpoint is one InputError naming the file."""
        for folder in (self.checkpoint, self.path / "checkpoint.old"):
            state_path = folder / "state.json"
            if not state_path.exists():
                continue
            current = state_path
            try:
                meta = json.loads(state_path.read_text())
                if meta.get("fingerprint") != fingerprint:
                    return None
                queues = {}
                for d in ("top", "bottom"):
                    current = folder / f"queues-{d}.npz"
                    if current.exists():
                        with np.load(current) as z:
                            queues[d] = TopNQueues.from_state(dict(z))
                current = state_path
                return MiningState(queues, meta["next_block"], meta["convergence"], meta["counters"],
                                   meta.get("calm_blocks", 0), meta.get("stopped_early", False),
                                   meta.get("skipped_shards", {}))
            except (ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as exc:
                raise InputError(f"{current}: damaged checkpoint ({first_line(exc)}); delete {folder} to mine this "
                                 "run from the start") from None
        return None

    def discard_unstarted(self, created_folder: bool) -> None:
        """Remove what claim() wrote if nothing was mined yet (no checkpoint, no tables), so a run that fails
        before its first block leaves no manifest saying `running`. Call while holding the lock."""
        if self.checkpoint.exists() or (self.path / "checkpoint.old").exists() or any(self.path.glob("*.parquet")):
            return
        self.manifest.unlink(missing_ok=True)
        (self.path / ".lock").unlink(missing_ok=True)
        if created_folder:
            with contextlib.suppress(OSError):  # not empty: something else lives there; leave it
                self.path.rmdir()


def _layer_slices(layout_layers: tuple) -> list[tuple[str, int, int, int]]:
    out, acc = [], 0
    for site, layer, width in layout_layers:
        out.append((site, layer, acc, acc + width))
        acc += width
    return out


def convergence_rows(block: BlockPlan, seen: int, gains: dict[str, torch.Tensor], layers: list, n: int) -> list[dict]:
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
    try:
        return _mine(job, run, fingerprint, corpus_dir, corpus, layout, model_folder, config, config_dict, weights,
                     address, executor, stop_after_blocks, started)
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


def _mine(job: JobSpec, run: RunFolder, fingerprint: str, corpus_dir: Path, corpus: CorpusManifest, layout,
          model_folder: Path, config, config_dict: dict, weights: str, address: str | None, executor: str,
          stop_after_blocks: int | None, started: float) -> dict:
    """The body of run_mining, run while holding the run folder's lock."""
    out = run.path

    plans = plan_blocks(corpus, job.block_size, job.max_sentences)
    directions = ("top", "bottom") if job.bottom else ("top",)
    state = run.load_checkpoint(fingerprint)
    if state is not None:
        _check_skips(list(state.skipped_shards), job, out)
        log.info("resuming %s at block %d/%d", out, state.next_block, len(plans))
    else:
        state = MiningState({d: TopNQueues(layout.n_units, job.top_n) for d in directions}, 0, [],
                            {k: 0 for k in ("sentences", "real_tokens", "attended_tokens", "computed_tokens", "truncated",
                                            "forward_seconds", "worker_seconds")})
    layers = _layer_slices(layout.layers)
    n_workers = job.workers
    threads = job.threads_per_worker or max(1, (os.cpu_count() or 1) // n_workers)
    cfg = WorkerConfig(str(model_folder), job, threads)
    pool: Executor = InlineExecutor(cfg) if executor == "inline" else RayExecutor(cfg, n_workers, address)
    reader = CorpusReader(corpus_dir, corpus)
    pending: dict[int, BlockResult | None] = {}  # None: a block of a skipped (corrupt) shard
    next_dispatch = state.next_block
    last_ckpt = time.monotonic()
    t_loop = time.monotonic()
    mined_this_session = 0
    total = sum(p.rows for p in plans)
    end_block = len(plans) if stop_after_blocks is None else min(len(plans), state.next_block + stop_after_blocks)
    nodes = getattr(pool, "nodes", [])
    try:
        while state.next_block < end_block and not state.stopped_early:
            while next_dispatch < end_block and pool.in_flight() < pool.capacity:
                plan = plans[next_dispatch]
                if plan.shard not in state.skipped_shards:
                    try:
                        ids, texts = reader.block(plan)
                    except InputError as exc:
                        if not job.skip_corrupt_shards:
                            raise
                        if any(p.shard == plan.shard for p in plans[: state.next_block]):
                            raise InputError(f"{exc}; part of this shard was already mined, so it cannot be "
                                             "skipped: restore it or delete the run folder") from None
                        log.warning("skipping %s (skip_corrupt_shards): %s", plan.shard, exc)
                        state.skipped_shards[plan.shard] = str(exc).split("; re-prepare")[0]
                if plan.shard in state.skipped_shards:
                    pending[next_dispatch] = None
                else:
                    floors = {d: q.threshold().numpy() for d, q in state.queues.items()}
                    pool.submit(next_dispatch, ids, texts, floors)
                next_dispatch += 1
            if state.next_block not in pending:
                result = pool.next_result()
                pending[result.block] = result
            while state.next_block in pending:
                res = pending.pop(state.next_block)
                plan = plans[state.next_block]
                if res is None:  # nothing merged, no convergence row, early stop unaffected
                    state.next_block += 1
                    state.counters["skipped_sentences"] = state.counters.get("skipped_sentences", 0) + plan.rows
                    if state.next_block == end_block:
                        run.save_checkpoint(state, fingerprint)
                    continue
                gains = {d: state.queues[d].merge(Candidates.from_numpy(res.directions[d])) for d in directions}
                s = res.stats
                for k in ("sentences", "real_tokens", "attended_tokens", "computed_tokens", "truncated", "batches",
                          "kernel_batches"):
                    state.counters[k] = state.counters.get(k, 0) + getattr(s, k)
                state.counters["forward_seconds"] += s.forward_seconds
                state.counters["worker_seconds"] += s.seconds
                state.next_block += 1
                mined_this_session += plan.rows
                rows = convergence_rows(plan, int(state.counters["sentences"]), gains, layers, job.top_n)
                state.convergence.extend(rows)
                rate = sum(r["updates"] for r in rows if r["site"] == "all") / sum(
                    r["entries"] for r in rows if r["site"] == "all")
                if job.early_stop is not None:
                    calm = rate < job.early_stop.max_update_rate
                    state.calm_blocks = state.calm_blocks + 1 if calm else 0
                    if state.calm_blocks >= job.early_stop.patience and state.counters["sentences"] >= job.early_stop.min_sentences:
                        state.stopped_early = True
                elapsed = time.monotonic() - t_loop
                speed = mined_this_session / elapsed if elapsed > 0 else 0.0
                left = total - state.counters["sentences"] - state.counters.get("skipped_sentences", 0)
                log.info("block %d/%d  %s sentences  %.0f sent/s  ETA %s  update rate %.2f%%",
                         state.next_block, len(plans), f"{int(state.counters['sentences']):,}", speed,
                         _format_eta(left / speed if speed else 0), 100 * rate)
                if time.monotonic() - last_ckpt >= job.checkpoint_seconds or state.next_block == end_block or state.stopped_early:
                    run.save_checkpoint(state, fingerprint)
                    last_ckpt = time.monotonic()
                if state.stopped_early:
                    log.info("queues converged (update rate < %.3g for %d blocks); stopping early",
                             job.early_stop.max_update_rate, job.early_stop.patience)
                    break
    finally:
        pool.close()
    if state.next_block < len(plans) and not state.stopped_early:
        return {"status": "incomplete", "next_block": state.next_block, "blocks": len(plans)}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=job.trust_remote_code)
    manifest = write_outputs(run, job, layout, state, corpus_dir, corpus, tokenizer, config)
    manifest.update({
        "fingerprint": fingerprint, "status": "complete", "code_version": __version__,
        "job": job.model_dump(mode="json"),
        "model": {"path": str(model_folder), "weights_sha256": weights, "model_type": config_dict.get("model_type"),
                  "init": job.init, "init_seed": job.init_seed, "layers": config.num_hidden_layers
                  if hasattr(config, "num_hidden_layers") else None},
        "corpus": {"path": str(corpus_dir.resolve()), "fingerprint": corpus.fingerprint,
                   "shards": [{"file": s.file, "sha256": s.sha256} for s in corpus.shards]},
        "blocks": {"planned": len(plans), "merged": state.next_block, "stopped_early": state.stopped_early},
        "skipped_shards": [{"file": f, "reason": r} for f, r in sorted(state.skipped_shards.items())],
        "workers": {"count": n_workers, "executor": executor, "nodes": nodes},
        "stats": _stats(state.counters),
        "timings": {"last_session_seconds": round(time.monotonic() - started, 3),
                    "forward_seconds": round(state.counters["forward_seconds"], 3),
                    "worker_seconds": round(state.counters["worker_seconds"], 3)},
        "completed": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(run.path.resolve()),
    })
    RunFolder.write_json(run.manifest, manifest)
    shutil.rmtree(run.path / "checkpoint.old", ignore_errors=True)
    return manifest


def _stats(c: dict) -> dict:
    computed = c["computed_tokens"]
    return {"sentences": int(c["sentences"]), "real_tokens": int(c["real_tokens"]),
            "attended_tokens": int(c["attended_tokens"]), "computed_tokens": int(computed),
            "truncated": int(c["truncated"]),
            "skipped_sentences": int(c.get("skipped_sentences", 0)),
            "batches": int(c.get("batches", 0)),
            # batches scored by the compiled kernel (miner.mining.native); the rest by torch (scores agree to rounding)
            "kernel_batches": int(c.get("kernel_batches", 0)),
            "padding_efficiency": round(c["attended_tokens"] / computed, 4) if computed else None,
            "scored_token_share": round(c["real_tokens"] / computed, 4) if computed else None}


def write_outputs(run: RunFolder, job: JobSpec, layout, state: MiningState, corpus_dir: Path,
                  corpus: CorpusManifest, tokenizer, tokenizer_config) -> dict:
    """Write units, top_sentences, sentences and convergence tables; returns manifest fields."""
    unit_rows = {"unit_id": [], "site": [], "layer": [], "idx": []}
    uid = 0
    for site, layer, width in layout.layers:
        unit_rows["unit_id"].extend(range(uid, uid + width))
        unit_rows["site"].extend([site] * width)
        unit_rows["layer"].extend([layer] * width)
        unit_rows["idx"].extend(range(width))
        uid += width
    run.write_table(run.path / "units.parquet", pa.table({
        "unit_id": pa.array(unit_rows["unit_id"], pa.int32()), "site": pa.array(unit_rows["site"]),
        "layer": pa.array(unit_rows["layer"], pa.int16()), "idx": pa.array(unit_rows["idx"], pa.int32())}))

    parts = []
    for d, q in state.queues.items():
        units, ranks, keys, payload = q.sorted_entries()
        scores, ids = decode_keys(keys)
        if d == "bottom":
            scores = -scores
        peak_val, peak_pos = unpack_payload(payload)
        parts.append(pa.table({
            "unit_id": pa.array(units.numpy().astype(np.int32)), "direction": pa.array([d] * len(units)),
            "rank": pa.array(ranks.numpy().astype(np.int32)), "sentence_id": pa.array(ids.numpy()),
            "score": pa.array(scores.numpy()), "peak_position": pa.array(peak_pos.numpy().astype(np.int32)),
            "peak_score": pa.array(peak_val.numpy())}))
    top = pa.concat_tables(parts)
    used = np.unique(top["sentence_id"].to_numpy())
    sentences = _collect_sentences(corpus_dir, corpus, used)
    max_len = min(job.max_length, model_max_length(tokenizer_config))
    n_model, truncated, peak_tokens = _peak_tokens(tokenizer, sentences, top, max_len)
    sentences = sentences.append_column("n_model_tokens", pa.array(n_model, pa.int32()))
    sentences = sentences.append_column("truncated", pa.array(truncated))
    top = top.add_column(top.schema.get_field_index("peak_score"), "peak_token", pa.array(peak_tokens, pa.string()))
    run.write_table(run.path / "top_sentences.parquet", top)
    run.write_table(run.path / "sentences.parquet", sentences)
    conv = pa.Table.from_pylist(state.convergence) if state.convergence else pa.table({"block": pa.array([], pa.int64())})
    run.write_table(run.path / "convergence.parquet", conv)
    return {"tables": ["units", "top_sentences", "sentences", "convergence"], "units": layout.n_units,
            "distinct_sentences": int(len(used))}


def _collect_sentences(corpus_dir: Path, corpus: CorpusManifest, ids: np.ndarray) -> pa.Table:
    """The corpus rows of the given sentence ids (read shard by shard, only shards that hold some)."""
    parts = []
    wanted = pa.array(ids)
    for shard in corpus.shards:
        lo, hi = shard.first_id, shard.first_id + shard.sentences
        if not ((ids >= lo) & (ids < hi)).any():
            continue
        try:
            table = pq.read_table(corpus_dir / shard.file)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{corpus_dir / shard.file}: corrupt or unreadable shard ({exc})") from None
        parts.append(table.filter(pc.is_in(table["sentence_id"], value_set=wanted)))
    return pa.concat_tables(parts, promote_options="permissive").sort_by("sentence_id")


def _peak_tokens(tokenizer, sentences: pa.Table, top: pa.Table, max_len: int,
                 chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_model_tokens, truncated) per sentence and the peak token's text per queue entry.

    Sentences (sorted by id) are re-tokenised exactly as the miner saw them, a chunk at a time, so memory
    stays bounded by the chunk rather than the number of distinct queue sentences.
    """
    vocab = np.array(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=object)
    ids = sentences["sentence_id"].to_numpy()
    sid = top["sentence_id"].to_numpy()
    pos = top["peak_position"].to_numpy().astype(np.int64)
    order = np.argsort(sid, kind="stable")
    sid_sorted = sid[order]
    n_model = np.zeros(len(ids), dtype=np.int32)
    truncated = np.zeros(len(ids), dtype=bool)
    peak = np.full(len(sid), None, dtype=object)
    for lo in range(0, len(ids), chunk):
        texts = sentences["text"].slice(lo, chunk).to_pylist()
        rows, _special, long_rows = tokenize_sentences(tokenizer, texts, max_len)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        n_model[lo : lo + len(rows)] = lengths
        truncated[lo + np.asarray(long_rows, dtype=np.int64)] = True
        padded = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
        for k, r in enumerate(rows):
            padded[k, : len(r)] = r
        first = np.searchsorted(sid_sorted, ids[lo], side="left")
        last = np.searchsorted(sid_sorted, ids[lo + len(rows) - 1], side="right")
        entries = order[first:last]
        local = np.searchsorted(ids[lo : lo + len(rows)], sid[entries])
        p = pos[entries]
        ok = p < lengths[local]
        peak[entries[ok]] = vocab[padded[local[ok], p[ok]]]
    return n_model, truncated, peak
