"""Effects of ablated sets on probes at later layers (`ablate.probe_effects`).

For each spec (a concept of the job's probe section, a site and a layer): the concept's examples are built as
the probing stage builds them (`miner.probing.concepts.build_examples`, same seeded train/dev/test split by
sentence), the probed tensor's activations are extracted on the mining workers, clean for every sentence and,
for the test sentences only, once more under each set's edits restricted to the units computed BEFORE the
probed tensor (`earlier_units`). A probe is trained on the clean train/dev rows with the project's trainer
(`miner.probing.probe.select_probe`, the probe section's lambda grid and epochs) and its test accuracy is
reported clean and under each set (metric `probe:<concept>:<site>:<layer>` in ablation_effects; column
units_edited says how many of the set's units were earlier ones; a set with none gets no row).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miner.config import JobSpec
from miner.config.ablate import ProbeEffectSpec
from miner.errors import ConfigError
from miner.intervene.hooks import SiteEdit
from miner.intervene.worker import AblateResult, ProbeExtractRequest, probe_extract_task
from miner.mining.executors import Executor, InlineExecutor, RayExecutor, WorkerConfig
from miner.mining.extract import ExtractRequest
from miner.model.layout import UnitLayout
from miner.probing.concepts import ConceptExamples, build_examples

log = logging.getLogger(__name__)
TRAIN, DEV, TEST = 0, 1, 2


@dataclass
class ProbePlan:
    """One probe-effect spec, checked: its examples and the probed tensor's unit ids [lo, hi)."""

    spec: ProbeEffectSpec
    examples: ConceptExamples
    lo: int
    hi: int

    @property
    def metric(self) -> str:
        return f"probe:{self.spec.concept}:{self.spec.site}:{self.spec.layer}"


@dataclass
class ProbeEffect:
    """A probe's test accuracy clean and under each variant (None: the variant has no earlier unit)."""

    metric: str
    clean: float
    ablated: list[float | None]
    edited: list[int]
    test_rows: int


def earlier_units(layout: UnitLayout, units: np.ndarray, site: str, layer: int) -> np.ndarray:
    """The units computed before the (site, layer) tensor: hidden units of layers < layer; mlp units of layers
    <= layer for a hidden probe (block k's FFN runs before hidden_states[k]), < layer for an mlp probe.

    >>> lay = UnitLayout(("hidden", "mlp"), (("hidden", 1, 2), ("hidden", 2, 2), ("mlp", 1, 2), ("mlp", 2, 2)))
    >>> earlier_units(lay, np.arange(8), "hidden", 2).tolist(), earlier_units(lay, np.arange(8), "mlp", 2).tolist()
    ([0, 1, 4, 5, 6, 7], [0, 1, 4, 5])
    """
    keep = np.zeros(len(units), bool)
    for s in layout.slices():
        before = s.layer < layer or (s.site == "mlp" and site == "hidden" and s.layer == layer)
        if before:
            keep |= (units >= s.lo) & (units < s.hi)
    return units[keep]


def plan_probe_effects(job: JobSpec, layout: UnitLayout, run_dir: Path, tokenizer: object, max_length: int,
                       mined: int | None) -> list[ProbePlan]:
    """Check every spec and build its examples before anything runs (one ConfigError naming the field)."""
    assert job.ablate is not None
    plans = []
    for i, spec in enumerate(job.ablate.probe_effects):
        field = f"ablate.probe_effects[{i}]"
        if job.probe is None:
            raise ConfigError(f"{field}: needs the job's probe section (its concept {spec.concept!r} and options)")
        concept = next((c for c in job.probe.concepts if c.name == spec.concept), None)
        if concept is None:
            names = ", ".join(c.name for c in job.probe.concepts)
            raise ConfigError(f"{field}.concept: {spec.concept!r} is not a concept of the probe section ({names})")
        sl = next((s for s in layout.slices() if s.site == spec.site and s.layer == spec.layer), None)
        if sl is None:
            mined_layers = ", ".join(f"{s}:{la}" for s, la, _ in layout.layers)
            raise ConfigError(f"{field}: {spec.site} layer {spec.layer} was not mined (mined: {mined_layers})")
        ex = build_examples(concept, job.probe, run_dir, tokenizer, max_length, mined)
        for split, name in ((TRAIN, "train"), (DEV, "dev"), (TEST, "test")):
            if not (ex.splits == split).any():
                raise ConfigError(f"{field}: concept {spec.concept!r} has no {name} examples")
        plans.append(ProbePlan(spec, ex, sl.lo, sl.hi))
    return plans


def _sentence_split(ex: ConceptExamples) -> np.ndarray:
    """int8 per sentence: the split of its examples (splits are by sentence)."""
    out = np.full(len(ex.texts), -1, np.int8)
    out[ex.row_sentence] = ex.splits
    return out


def run_probe_effects(plans: list[ProbePlan], layout: UnitLayout, variants_units: list[np.ndarray],
                      values: dict[int, float] | None, job: JobSpec, model_folder: Path, executor: str,
                      address: str | None, threads: int, block_sentences: int) -> list[ProbeEffect]:
    """Extract, train and evaluate every planned probe (see the module docstring)."""
    if not plans:
        return []
    from miner.intervene.hooks import edits_for_units
    from miner.probing.probe import probe_device, select_probe
    from miner.probing.train import probe_options

    assert job.probe is not None
    cfg = WorkerConfig(str(model_folder), job, threads)
    pool: Executor = InlineExecutor(cfg) if executor == "inline" else RayExecutor(cfg, job.workers, address)
    out = []
    try:
        for plan in plans:
            ex, spec = plan.examples, plan.spec
            earlier = [earlier_units(layout, u, spec.site, spec.layer) for u in variants_units]
            edits: list[list[SiteEdit]] = [
                edits_for_units(layout, e, None if values is None else {int(k): values[int(k)] for k in e})
                for e in earlier if len(e)]
            used = [i for i, e in enumerate(earlier) if len(e)]
            clean, edited = _extract(pool, ex, edits, (plan.lo, plan.hi), job.probe.subword, block_sentences)
            popts = probe_options(job.probe, probe_device(job.device), None)
            tr, dv, te = (ex.splits == TRAIN), (ex.splits == DEV), (ex.splits == TEST)
            sel = select_probe(clean[tr], ex.labels[tr], clean[dv], ex.labels[dv], len(ex.classes), popts)
            y = ex.labels[te]
            acc_clean = float((sel.probe.predict(clean[te]) == y).mean())
            ablated: list[float | None] = [None] * len(variants_units)
            for j, x in zip(used, edited):
                ablated[j] = float((sel.probe.predict(x) == y).mean())
            log.info("%s: test accuracy %.4f clean", plan.metric, acc_clean)
            out.append(ProbeEffect(plan.metric, acc_clean, ablated, [len(e) for e in earlier], int(te.sum())))
    finally:
        pool.close()
    return out


def _extract(pool: Executor, ex: ConceptExamples, edits: list[list[SiteEdit]], columns: tuple[int, int],
             subword: str, per_block: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Clean activations [rows, width] of every example, and per edit set those of the test rows [test, width]."""
    split = _sentence_split(ex)
    test_s = np.flatnonzero(split == TEST)
    other_s = np.flatnonzero(split != TEST)
    blocks: list[tuple[np.ndarray, bool]] = []
    for sents, is_test in ((other_s, False), (test_s, True)):
        blocks += [(sents[a:a + per_block], is_test) for a in range(0, len(sents), per_block)]
    results: dict[int, AblateResult] = {}
    queue = list(range(len(blocks)))
    while queue or pool.in_flight():
        while queue and pool.in_flight() < pool.capacity:
            b = queue.pop(0)
            sents, is_test = blocks[b]
            req = ExtractRequest(b, [ex.texts[i] for i in sents], [ex.pieces[i] for i in sents],
                                 ex.level == "sentence", subword)
            pool.submit_task(probe_extract_task, b, ProbeExtractRequest(b, req, [[], *edits] if is_test else [[]],
                                                                        columns))
        res: AblateResult = pool.next_result()
        results[res.block] = res
    width = columns[1] - columns[0]
    clean = np.zeros((ex.rows, width), np.float32)
    test_rows = np.flatnonzero(ex.splits == TEST)
    edited = [np.zeros((len(test_rows), width), np.float32) for _ in edits]
    pos_in_test = np.full(ex.rows, -1, np.int64)
    pos_in_test[test_rows] = np.arange(len(test_rows))
    for b, (sents, is_test) in enumerate(blocks):
        rows = np.flatnonzero(np.isin(ex.row_sentence, sents))  # example rows of these sentences, in order
        outs = results[b].outputs
        if outs[0].shape[0] != len(rows):
            raise RuntimeError(f"probe extraction block {b}: {outs[0].shape[0]} rows, expected {len(rows)}")
        clean[rows] = outs[0]
        if is_test:
            for k in range(len(edits)):
                edited[k][pos_in_test[rows]] = outs[k + 1]
    return clean, edited
