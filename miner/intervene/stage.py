"""`miner ablate`: the intervention stage of a run, from the job's ablate section to the ablation tables.

Every unit set (and, for each, as many seeded random units of the same tensors and as many bottom-ranked
units) is ablated inside the forward pass on held-out sentences, on the mining workers; the effect on the
model's own output is compared with the clean run (`miner.intervene.effects`). The ablation curve ablates the
top / random / bottom k units of a ranking for each k. Steering and the output view run on the driver.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from miner import atomic
from miner.config import JobSpec, validate_model
from miner.config.ablate import AblateOptions
from miner.errors import ConfigError, InputError
from miner.intervene.effects import output_metrics
from miner.intervene.hooks import SiteEdit, edits_for_units
from miner.intervene.plots import remove_stale_curve_plots, write_curve_plots
from miner.intervene.probe_effects import ProbeEffect, plan_probe_effects, run_probe_effects
from miner.intervene.units import control_sets, pick_from_ranking, ranked_units, resolve_set
from miner.intervene.views import ViewTables, check_steering, lm_head_reason, output_task, run_views, top_queue_means
from miner.intervene.worker import AblateRequest, AblateResult, ablate_task, ablate_task_name, build_ablate_worker
from miner.mining.executors import Executor, InlineExecutor, RayExecutor, WorkerConfig
from miner.model.layout import UnitLayout, model_max_length, unit_layout
from miner.probing.examples import TEST, sentence_splits, text_keys
from miner.run.catalog import build_catalog, check_run_tables
from miner.run.folder import ABLATE_TABLES, FILES, RunFolder, read_manifest_json, repair_hint, run_corpus

log = logging.getLogger(__name__)
MANIFEST_KEY = "ablate"
TABLES = ABLATE_TABLES
"""ablation_sets, ablation_effects, steering_effects, steering_texts, unit_logits: all five are written every
time (empty where a view does not apply), so no table of an earlier ablate section is left behind."""


@dataclass(frozen=True)
class Variant:
    """One ablated unit set: a named set, a control of it, or a point of the curve."""

    name: str
    set: str
    kind: str
    """set, random, bottom (controls of a set), or curve_top / curve_random / curve_bottom."""
    units: np.ndarray


@dataclass
class HeldOut:
    texts: list[str]
    sentence_ids: np.ndarray
    labels: np.ndarray | None


def _mined_job(manifest: dict, job: JobSpec, run_dir: Path) -> JobSpec:
    """The mining job the run recorded (its units), with this job's execution settings and ablate section."""
    recorded = dict(manifest.get("job") or {})
    for key in ("probe", "ablate"):
        recorded.pop(key, None)
    try:
        mined = validate_model(JobSpec, {**recorded, "corpus": recorded.get("corpus") or "."}, "job")
    except ConfigError as exc:
        raise InputError(f"{run_dir / FILES.manifest}: damaged, the recorded {exc}; "
                         f"{repair_hint(run_dir / FILES.manifest)}") from None
    return mined.model_copy(update={"ablate": job.ablate, **{k: getattr(job, k) for k in (
        "workers", "threads_per_worker", "gpus_per_worker", "device", "dtype", "batch_size")}})


FINETUNE_RECORD = "miner_finetune.json"
"""What examples/finetune_sentiment.py records beside a fine-tuned checkpoint (its split among others)."""


def check_finetune_split(model_folder: Path, options: AblateOptions) -> None:
    """A checkpoint fine-tuned by the example script records its train/dev/test split: labelled held-out
    sentences must use the same split (else training sentences would be measured as held out)."""
    ho = options.held_out
    path = model_folder / FINETUNE_RECORD
    if not ho.label_field or not path.exists():
        return
    try:
        split = json.loads(path.read_text()).get("split") or {}
    except (OSError, ValueError, AttributeError):
        raise ConfigError(f"{path}: not a valid fine-tuning record (JSON); fine-tune again or remove it") from None
    ours = {"seed": ho.split_seed, "dev_share": ho.dev_share, "test_share": ho.test_share}
    theirs = {k: split.get(k) for k in ours}
    if any(theirs[k] is not None and theirs[k] != v for k, v in ours.items()):
        raise ConfigError(f"ablate.held_out: split_seed/dev_share/test_share {ours['seed']}/{ours['dev_share']}/"
                          f"{ours['test_share']} differ from the split the model was fine-tuned with "
                          f"({theirs['seed']}/{theirs['dev_share']}/{theirs['test_share']}, {path}): its training "
                          "sentences would be measured as held out")


def held_out_sentences(run_dir: Path, options: AblateOptions, mined: int, labels: list[str] | None) -> HeldOut:
    """The sentences effects are measured on: the first `held_out.sentences` labelled TEST-split sentences of
    `held_out.label_field` (of its `labels` and `sources` when given), or the first `held_out.sentences` corpus
    sentences after the mined prefix."""
    _, corpus_dir, corpus = run_corpus(run_dir)
    ho = options.held_out
    texts: list[str] = []
    ids: list[int] = []
    raw: list[str] = []
    cols = ["sentence_id", "text"] + ([ho.label_field] if ho.label_field else []) + (
        ["source"] if ho.label_field and ho.sources else [])
    if ho.label_field and ho.label_field not in corpus.columns:
        raise ConfigError(f"ablate.held_out.label_field: '{ho.label_field}' is not a column of the corpus {corpus_dir}")
    if ho.label_field and ho.sources and "source" not in corpus.columns:
        raise ConfigError(f"ablate.held_out.sources: the corpus {corpus_dir} has no source column")
    for shard in corpus.shards:
        part = pq.read_table(corpus_dir / shard.file, columns=cols)
        if ho.label_field:
            part = part.filter(pc.is_valid(part[ho.label_field]))
            if ho.labels is not None:
                part = part.filter(pc.is_in(part[ho.label_field], value_set=pa.array(ho.labels, pa.string())))
            if ho.sources:
                part = part.filter(pc.is_in(part["source"], value_set=pa.array(ho.sources, pa.string())))
            t = [str(x) for x in part["text"].to_pylist()]
            split = sentence_splits(text_keys([x.lower() for x in t]), ho.split_seed, ho.dev_share, ho.test_share)
            keep = np.flatnonzero(split == TEST)
            texts += [t[i] for i in keep]
            ids += part["sentence_id"].to_numpy()[keep].tolist()
            raw += [str(part[ho.label_field][int(i)]) for i in keep]
            if len(texts) >= ho.sentences:
                break
        else:
            part = part.filter(pc.greater_equal(part["sentence_id"], mined))
            texts += [str(x) for x in part["text"].to_pylist()]
            ids += part["sentence_id"].to_numpy().tolist()
            if len(texts) >= ho.sentences:
                break
    texts, ids, raw = texts[: ho.sentences], ids[: ho.sentences], raw[: ho.sentences]
    if not texts:
        what = (f"labelled test-split sentences of '{ho.label_field}'" if ho.label_field
                else f"corpus sentences after the {mined} mined ones")
        raise ConfigError(f"ablate.held_out: no {what}")
    lab = None
    if ho.label_field:
        if labels is None:
            raise ConfigError("ablate.held_out.label_field: needs a classification checkpoint (task classification)")
        index = {name.lower(): i for i, name in enumerate(labels)}
        unknown = sorted({r for r in raw if r.lower() not in index})
        if unknown:
            raise ConfigError(f"ablate.held_out.label_field: label {unknown[0]!r} is not a class of the model "
                              f"({', '.join(labels)})")
        lab = np.array([index[r.lower()] for r in raw], np.int64)
    return HeldOut(texts, np.asarray(ids, np.int64), lab)


def unit_values(run_dir: Path, options: AblateOptions, ids: np.ndarray) -> dict[int, float] | None:
    """The value each unit is set to: None (zero), its corpus mean (table unit_moments), or the clamp value."""
    if options.mode == "zero":
        return None
    if options.mode == "clamp":
        assert options.value is not None
        return {int(u): float(options.value) for u in ids}
    aggregation = (read_manifest_json(run_dir).get("job") or {}).get("aggregation", "mean")
    if aggregation != "mean":
        raise ConfigError(f"ablate.mode: mean sets a unit to its mean activation, which unit_moments holds only for "
                          f"runs scored by the mean over tokens; this run used aggregation {aggregation} (use zero "
                          "or clamp)")
    path = run_dir / FILES.unit_moments
    if not path.exists():
        raise ConfigError(f"ablate.mode: mean needs the table unit_moments, which this run lacks ({path.name}); "
                          "mine the run again with this version")
    t = pq.read_table(path, columns=["unit_id", "mean"])
    means = dict(zip(t["unit_id"].to_pylist(), t["mean"].to_pylist()))
    missing = [int(u) for u in ids if means.get(int(u)) is None]
    if missing:
        raise ConfigError(f"ablate.mode: unit {missing[0]} has no mean in {path.name}; mine the run again")
    return {int(u): float(means[int(u)]) for u in ids}


def build_variants(options: AblateOptions, layout: UnitLayout, run_dir: Path) -> list[Variant]:
    """Every ablated set: each named set and its random / bottom controls, then the curve's points."""
    out: list[Variant] = []
    curve_order = None
    if options.curve is not None:
        c = options.curve
        curve_order = ranked_units(run_dir, c.probe_id, c.method, c.class_, "ablate.curve")
    for i, spec in enumerate(options.sets):
        ids = resolve_set(spec, layout, run_dir, options.seed, i)
        out.append(Variant(spec.name, spec.name, "set", ids))
        if options.controls:
            order = curve_order
            if spec.ranking is not None:
                r = spec.ranking
                order = ranked_units(run_dir, r.probe_id, r.method, r.class_, f"ablate.sets[{i}].ranking")
            for kind, units in control_sets(ids, layout, order, options.seed, spec.name).items():
                out.append(Variant(f"{spec.name}~{kind}", spec.name, kind, units))
    if options.curve is not None and curve_order is not None:
        for k in options.curve.counts:
            for which in ("top", "random", "bottom"):
                units = np.sort(pick_from_ranking(curve_order, which, k, options.seed, "curve"))
                out.append(Variant(f"curve:{which}:{k}", "curve", f"curve_{which}", units))
    return out


def ablation_fingerprint(options: AblateOptions, manifest: dict, execution: dict) -> str:
    data = json.dumps([options.model_dump(mode="json"), manifest.get("fingerprint"), manifest.get("probe", {}).get(
        "fingerprint"), execution], sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def run_ablation(run_dir: Path, job: JobSpec, executor: str = "ray", address: str | None = None,
                 redo: bool = False) -> dict:
    """Run the job's ablate section on the mined run in `run_dir`; returns the summary recorded in the manifest.

    Every set is resolved and checked (and the held-out sentences read) before anything is written; block
    results are kept under RUN/ablation/ (an interrupted stage resumes); the tables are written atomically while
    the manifest says `writing`, then the summary and the catalog.
    """
    if job.ablate is None:
        raise ConfigError("ablate: the job has no ablate section")
    options = job.ablate
    run_dir = Path(run_dir).resolve()
    manifest, _, _ = run_corpus(run_dir)
    model_folder = Path((manifest.get("model") or {}).get("path") or job.model)
    worker_job = _mined_job(manifest, job, run_dir)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_folder, trust_remote_code=worker_job.trust_remote_code)
    layout = unit_layout(config, list(worker_job.sites), worker_job.layers)
    task = ablate_task_name(options.task, model_folder)
    from miner.model.heads import check_task

    raw_config = json.loads((model_folder / "config.json").read_text())
    check_task(model_folder, raw_config, task)
    threads = worker_job.threads_per_worker or max(1, (os.cpu_count() or 1) // worker_job.workers)
    execution = {"device": worker_job.device, "dtype": worker_job.dtype, "batch_size": worker_job.batch_size,
                 "threads": threads, "task": task,
                 "probe": job.probe.model_dump(mode="json") if options.probe_effects and job.probe else None}
    fingerprint = ablation_fingerprint(options, manifest, execution)
    recorded = read_manifest_json(run_dir).get(MANIFEST_KEY) or {}
    if (not redo and recorded.get("fingerprint") == fingerprint and recorded.get("status") == "complete"
            and all((run_dir / f"{t}.parquet").exists() for t in TABLES)):
        log.info("%s: ablation already complete; nothing to do", run_dir)
        return recorded
    check_run_tables(run_dir, rewritten=TABLES)
    stats = manifest.get("stats") or {}
    mined = int(stats.get("sentences") or 0) + int(stats.get("skipped_sentences") or 0)
    variants = build_variants(options, layout, run_dir)  # every bad set is named before any work
    all_ids = np.unique(np.concatenate([v.units for v in variants])) if variants else np.zeros(0, np.int64)
    values = unit_values(run_dir, options, all_ids)
    labels = None
    if task == "classification":
        id2label = getattr(config, "id2label", None) or {}
        labels = [str(id2label[k]) for k in sorted(id2label)]
    check_finetune_split(model_folder, options)
    held = held_out_sentences(run_dir, options, mined, labels)
    edits = [edits_for_units(layout, v.units, values) for v in variants]
    max_length = min(worker_job.max_length, model_max_length(config))
    named = {v.set: v.units for v in variants if v.kind == "set"}
    steer_values = {}
    plans = []
    if options.steering or options.probe_effects:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_folder, trust_remote_code=worker_job.trust_remote_code)
        steer_values = check_steering(options, task, tokenizer, config, max_length, named, run_dir)
        probe_job = worker_job.model_copy(update={"probe": job.probe})
        plans = plan_probe_effects(probe_job, layout, run_dir, tokenizer, max_length,
                                   mined or worker_job.max_sentences)
    output_units = np.unique(np.concatenate(list(named.values()))) if named else np.zeros(0, np.int64)
    skipped = None
    output_scale: dict[int, float] = {}
    if options.output_view_top_k > 0:
        skipped = lm_head_reason(raw_config, task)
        if skipped is None and len(output_units):
            output_scale = top_queue_means(run_dir, output_units, "ablate.output_view_top_k")
    run = RunFolder(run_dir)
    run.lock(wait_seconds=0)
    try:
        t0 = time.monotonic()
        outputs = _run_blocks(run, worker_job, model_folder, held, edits, fingerprint, executor, address, threads,
                              options.block_sentences)
        probes = run_probe_effects(plans, layout, [v.units for v in variants], values,
                                   worker_job.model_copy(update={"probe": job.probe}), model_folder, executor,
                                   address, threads, options.block_sentences)
        seconds = time.monotonic() - t0
        views = _views(model_folder, worker_job, task, options, layout, held, steer_values, output_units,
                       output_scale, skipped, max_length)
        sets_t, effects_t = _tables(variants, outputs, held, task, options.mode, probes)
        run.update_manifest(MANIFEST_KEY, {"status": "writing", "fingerprint": fingerprint})
        run.write_table(run.file(FILES.ablation_sets), sets_t)
        run.write_table(run.file(FILES.ablation_effects), effects_t)
        run.write_table(run.file(FILES.steering_effects), views.steering_effects)
        run.write_table(run.file(FILES.steering_texts), views.steering_texts)
        run.write_table(run.file(FILES.unit_logits), views.unit_logits)
        ranking = (f"{options.curve.probe_id} {options.curve.method}"
                   + (f" {options.curve.class_}" if options.curve.class_ else "")) if options.curve else ""
        plots = write_curve_plots(run.path, effects_t, ranking) if options.curve else []
        remove_stale_curve_plots(run.path, plots)
        summary = {"status": "complete", "fingerprint": fingerprint, "task": task, "mode": options.mode,
                   "sentences": len(held.texts), "variants": len(variants), "tables": list(TABLES),
                   "plots": plots, "steering_flip_share": views.flip_share,
                   "output_view": (f"skipped: {views.output_view_skipped}" if views.output_view_skipped
                                   else f"{views.unit_logits.num_rows} rows" if options.output_view_top_k
                                   else "off"),
                   "seconds": round(seconds + views.seconds, 2)}
        run.update_manifest(MANIFEST_KEY, summary)
        build_catalog(run.path)
        return summary
    finally:
        run.release()


def _views(model_folder: Path, job: JobSpec, task: str, options: AblateOptions, layout: UnitLayout, held: HeldOut,
           steer_values: dict[int, dict[int, float]], output_units: np.ndarray, output_scale: dict[int, float],
           skipped: str | None, max_length: int) -> ViewTables:
    """Steering and the output view on the driver (the model with its head loaded here, once per head task)."""
    t0 = time.monotonic()
    want_output = options.output_view_top_k > 0 and skipped is None and len(output_units) > 0
    if not options.steering and not want_output:
        return ViewTables(output_view_skipped=skipped)
    from miner.model.heads import load_head_model

    def load(head: str):
        return load_head_model(model_folder, head, job.device, job.dtype, job.allow_pickle, job.trust_remote_code,
                               job.init, job.init_seed)

    loaded = load(task) if options.steering else None
    output_model = None
    if want_output:
        head = output_task(task)
        output_model = loaded if loaded is not None and loaded.task == head else load(head)
    views = run_views(loaded, options, layout, held.texts, steer_values, output_units, output_scale, output_model,
                      skipped, job.batch_size, max_length)
    views.seconds = time.monotonic() - t0
    return views


def _run_blocks(run: RunFolder, job: JobSpec, model_folder: Path, held: HeldOut, edits: list[list[SiteEdit]],
                fingerprint: str, executor: str, address: str | None, threads: int, per_block: int,
                ) -> list[np.ndarray]:
    """Per edit set (0 = clean, then the variants) the outputs of every held-out sentence, in order; block
    results are stored under RUN/ablation/ and reused by a resumed run of the same fingerprint."""
    folder = run.file(FILES.ablation)
    stamp = folder / "ablation.json"
    if folder.exists():
        try:
            same = json.loads(stamp.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temporaries(folder)
    atomic.write_json(stamp, {"fingerprint": fingerprint})
    bounds = [(a, min(a + per_block, len(held.texts))) for a in range(0, len(held.texts), per_block)]
    n_sets = len(edits) + 1
    results: dict[int, list[np.ndarray]] = {}
    for b in range(len(bounds)):
        loaded = _load_block(folder / f"block-{b:05d}.npz", n_sets)
        if loaded is not None:
            results[b] = loaded
    todo = [b for b in range(len(bounds)) if b not in results]
    if todo:
        cfg = WorkerConfig(str(model_folder), job, threads, builder=build_ablate_worker)
        pool: Executor = InlineExecutor(cfg) if executor == "inline" else RayExecutor(cfg, job.workers, address)
        try:
            queue = list(todo)
            while queue or pool.in_flight():
                while queue and pool.in_flight() < pool.capacity:
                    b = queue.pop(0)
                    s0, s1 = bounds[b]
                    pool.submit_task(ablate_task, b, AblateRequest(b, held.texts[s0:s1], [[], *edits]))
                res: AblateResult = pool.next_result()
                _save_block(folder / f"block-{res.block:05d}.npz", res.outputs)
                results[res.block] = res.outputs
        finally:
            pool.close()
    return [np.concatenate([results[b][s] for b in range(len(bounds))]) for s in range(n_sets)]


def _save_block(path: Path, outputs: list[np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, *outputs)
    atomic.write_with(path, write)


def _load_block(path: Path, n_sets: int) -> list[np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[f"arr_{i}"] for i in range(n_sets)]
    except (OSError, ValueError, KeyError):
        return None
    return arrays


def _tables(variants: list[Variant], outputs: list[np.ndarray], held: HeldOut, task: str, mode: str,
            probes: list[ProbeEffect] | None = None) -> tuple[pa.Table, pa.Table]:
    """ablation_sets (one row per variant and unit) and ablation_effects (one row per variant and metric: the
    model-output metrics, then each probe's accuracy)."""
    sets: dict[str, list] = {"variant": [], "set_name": [], "kind": [], "units": [], "unit_id": []}
    eff: dict[str, list] = {"variant": [], "set_name": [], "kind": [], "units": [], "units_edited": [], "mode": [],
                            "metric": [], "clean": [], "ablated": [], "change": [], "sentences": []}

    def add(v: Variant, edited: int, metric: str, c: float, a: float, n: int) -> None:
        row = {"variant": v.name, "set_name": v.set, "kind": v.kind, "units": len(v.units), "units_edited": edited,
               "mode": mode, "metric": metric, "clean": c, "ablated": a, "change": a - c, "sentences": n}
        for name, cell in row.items():
            eff[name].append(cell)

    clean = outputs[0]
    for v, out in zip(variants, outputs[1:]):
        for u in v.units:
            for col, val in (("variant", v.name), ("set_name", v.set), ("kind", v.kind), ("units", len(v.units)),
                             ("unit_id", int(u))):
                sets[col].append(val)
        for metric, c, a in output_metrics(task, clean, out, held.labels):
            add(v, len(v.units), metric, c, a, len(held.texts))
    for p in probes or []:
        for v, a_p, edited in zip(variants, p.ablated, p.edited):
            if a_p is not None:
                add(v, edited, p.metric, p.clean, a_p, p.test_rows)
    sets_t = pa.table({"variant": pa.array(sets["variant"], pa.string()),
                       "set_name": pa.array(sets["set_name"], pa.string()),
                       "kind": pa.array(sets["kind"], pa.string()), "units": pa.array(sets["units"], pa.int32()),
                       "unit_id": pa.array(sets["unit_id"], pa.int32())})
    eff_t = pa.table({
        "variant": pa.array(eff["variant"], pa.string()), "set_name": pa.array(eff["set_name"], pa.string()),
        "kind": pa.array(eff["kind"], pa.string()), "units": pa.array(eff["units"], pa.int32()),
        "units_edited": pa.array(eff["units_edited"], pa.int32()),
        "mode": pa.array(eff["mode"], pa.string()), "metric": pa.array(eff["metric"], pa.string()),
        "clean": pa.array(eff["clean"], pa.float64()), "ablated": pa.array(eff["ablated"], pa.float64()),
        "change": pa.array(eff["change"], pa.float64()), "sentences": pa.array(eff["sentences"], pa.int64())})
    return sets_t, eff_t
