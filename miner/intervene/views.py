"""Steering and the output view of `miner ablate`, run on the driver with the model and its head.

- Steering (`ablate.steering`): each experiment's set is clamped to `multiple` times each unit's top-queue mean
  (the mean score of its `top` queue in top_sentences). A classifier classifies the held-out sentences before
  and after (`miner.intervene.steering.class_distribution`, table steering_effects); a decoder continues the
  experiment's prompts greedily before and after (`greedy_continuations`, table steering_texts).
- The output view (`ablate.output_view_top_k`): the named sets' units' top output tokens
  (`miner.intervene.logits.unit_logits`, table unit_logits), for a checkpoint with an LM head; otherwise the
  view is skipped and `output_view_skipped` says why (it lands in the manifest).

`check_steering` validates every experiment (task, prompts, top-queue means) before the stage runs anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from miner.config.ablate import AblateOptions
from miner.errors import ConfigError
from miner.intervene.hooks import edits_for_units
from miner.intervene.logits import UNIT_LOGITS_SCHEMA, OutputUnit, unit_logits
from miner.intervene.steering import (
    STEERING_EFFECTS_SCHEMA,
    STEERING_TEXTS_SCHEMA,
    class_distribution,
    effects_table,
    greedy_continuations,
    prompt_ids,
    texts_table,
)
from miner.model.heads import HeadModel
from miner.model.layout import UnitLayout, model_max_length
from miner.run.folder import FILES

_LM_HEADS = ("ForCausalLM", "LMHeadModel", "ForMaskedLM")


@dataclass
class ViewTables:
    """What the driver-side views produce (empty tables with their schema where a view does not apply)."""

    steering_effects: pa.Table = field(default_factory=STEERING_EFFECTS_SCHEMA.empty_table)
    steering_texts: pa.Table = field(default_factory=STEERING_TEXTS_SCHEMA.empty_table)
    unit_logits: pa.Table = field(default_factory=UNIT_LOGITS_SCHEMA.empty_table)
    output_view_skipped: str | None = None
    flip_share: dict[str, float] = field(default_factory=dict)
    """Per steering experiment (set@multiple) of a classifier: the share of held-out predictions it flipped."""
    seconds: float = 0.0


def top_queue_means(run_dir: Path, ids: np.ndarray, field_name: str) -> dict[int, float]:
    """Each unit's mean score over its `top` queue (table top_sentences); a unit without one is a ConfigError."""
    t = pq.read_table(Path(run_dir) / FILES.top_sentences, columns=["unit_id", "direction", "score"])
    t = t.filter(pc.and_(pc.equal(t["direction"], "top"), pc.is_in(t["unit_id"], pa.array(ids.astype(np.int32)))))
    g = t.group_by("unit_id").aggregate([("score", "mean")])
    means = dict(zip(g["unit_id"].to_pylist(), g["score_mean"].to_pylist()))
    missing = [int(u) for u in ids if means.get(int(u)) is None]
    if missing:
        raise ConfigError(f"{field_name}: unit {missing[0]} has no top sentences in {FILES.top_sentences}")
    return {int(u): float(means[int(u)]) for u in ids}


def lm_head_reason(config: dict, task: str) -> str | None:
    """None when the checkpoint has an LM head the output view can read; else why not.

    A decoder checkpoint saved without its head (e.g. GPT2Model) counts when its input embeddings are tied to
    the unembedding (GPT-2's default), since AutoModelForCausalLM then rebuilds the head from them exactly.

    >>> lm_head_reason({"architectures": ["BertModel"]}, "embedding")
    'the checkpoint has no LM head (architectures: BertModel)'
    >>> lm_head_reason({"architectures": ["GPT2Model"], "tie_word_embeddings": True}, "causal_lm") is None
    True
    """
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith(_LM_HEADS) for a in archs):
        return None
    if task == "causal_lm" and config.get("tie_word_embeddings", True):
        return None
    return f"the checkpoint has no LM head (architectures: {', '.join(archs) or 'none'})"


def output_task(task: str) -> str:
    """The head task the output view loads: the stage's own when it has an LM head, else masked_lm.

    >>> output_task("causal_lm"), output_task("embedding")
    ('causal_lm', 'masked_lm')
    """
    return task if task in ("causal_lm", "masked_lm") else "masked_lm"


def check_steering(options: AblateOptions, task: str, tokenizer: object, model_config: object, max_length: int,
                   set_units: dict[str, np.ndarray], run_dir: Path) -> dict[int, dict[int, float]]:
    """Validate every steering experiment before anything runs; returns each one's clamp value per unit."""
    values: dict[int, dict[int, float]] = {}
    for i, spec in enumerate(options.steering):
        name = f"ablate.steering[{i}]"
        if task not in ("classification", "causal_lm"):
            raise ConfigError(f"{name}: steering needs a classification checkpoint or a decoder (task is {task})")
        if task == "causal_lm":
            if not spec.prompts:
                raise ConfigError(f"{name}.prompts: a decoder is steered on prompts; give at least one")
            try:
                prompt_ids(tokenizer, spec.prompts, max_length, spec.max_new_tokens, model_max_length(model_config))
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        ids = set_units[spec.set]
        means = top_queue_means(run_dir, ids, f"{name} (set {spec.set})")
        values[i] = {u: spec.multiple * m for u, m in means.items()}
    return values


def run_views(loaded: HeadModel | None, options: AblateOptions, layout: UnitLayout, texts: Sequence[str],
              steer_values: dict[int, dict[int, float]], output_units: np.ndarray, output_scale: dict[int, float],
              output_model: HeadModel | None, skipped: str | None, batch_size: int, max_length: int) -> ViewTables:
    """Run the steering experiments on `loaded` and the output view on `output_model` (see the module doc)."""
    out = ViewTables(output_view_skipped=skipped)
    if options.steering:
        assert loaded is not None
        effects, prompts = [], []
        before_probs = None
        before_texts: dict[tuple[tuple[str, ...], int], list[str]] = {}
        for i, spec in enumerate(options.steering):
            edits = edits_for_units(layout, np.array(sorted(steer_values[i]), np.int64), steer_values[i])
            if loaded.task == "classification":
                if before_probs is None:
                    before_probs, _ = class_distribution(loaded.model, loaded.tokenizer, texts, [], batch_size,
                                                         max_length)
                after, _ = class_distribution(loaded.model, loaded.tokenizer, texts, edits, batch_size, max_length)
                t = effects_table(spec.set, spec.multiple, loaded.labels or [], before_probs, after)
                effects.append(t)
                n = max(len(texts), 1)
                out.flip_share[f"{spec.set}@{spec.multiple:g}"] = sum(t["flipped_out"].to_pylist()) / n
            else:
                key = (tuple(spec.prompts), spec.max_new_tokens)
                if key not in before_texts:
                    before_texts[key] = greedy_continuations(loaded.model, loaded.tokenizer, spec.prompts, [],
                                                             spec.max_new_tokens, max_length)
                after_t = greedy_continuations(loaded.model, loaded.tokenizer, spec.prompts, edits,
                                               spec.max_new_tokens, max_length)
                prompts.append(texts_table(spec.set, spec.multiple, spec.prompts, before_texts[key], after_t))
        if effects:
            out.steering_effects = pa.concat_tables(effects)
        if prompts:
            out.steering_texts = pa.concat_tables(prompts)
    if options.output_view_top_k > 0 and output_model is not None and len(output_units):
        units = []
        for s in layout.slices():
            for u in output_units[(output_units >= s.lo) & (output_units < s.hi)]:
                scale = output_scale.get(int(u), 1.0)
                units.append(OutputUnit(int(u), s.site, s.layer, int(u - s.lo), scale if scale > 0 else 1.0))
        out.unit_logits = unit_logits(output_model.model, output_model.tokenizer, units, options.output_view_top_k)
    return out
