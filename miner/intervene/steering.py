"""Steering: a model's output with some units clamped (miner.intervene.hooks edits) against its output without.

Two views, both deterministic (the model runs in eval mode, no sampling):

- `class_distribution`: a sequence-classification model's softmax over its classes and its predicted class for
  each held-out sentence; the stage calls it with `edits=[]` (before) and with the clamp (after), and reports
  the predicted class distribution and the share of flipped predictions.
- `greedy_continuations`: a causal LM's greedy continuation of each prompt. The decoding loop is written out
  (argmax of the last position's logits, KV cache, stop at the tokenizer's EOS or after max_new_tokens), so no
  generation config of the checkpoint (repetition penalty, sampling defaults) changes what "greedy" means. The
  edits are active on every forward pass: the first one over the prompt's positions, then one per new token,
  so a clamped unit is clamped at the prompt's positions (their keys and values in the cache are computed from
  the edited states) and at every generated position.

The stage decides the clamp value (a multiple of the unit's top-queue mean) and builds the SiteEdits;
`effects_table` and `texts_table` turn the before/after results into the `steering_effects` and
`steering_texts` tables (schemas/tables.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from miner.errors import ConfigError
from miner.intervene.hooks import SiteEdit, intervening
from miner.model.layout import model_max_length


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout) without gradients; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def class_distribution(model: nn.Module, tokenizer: object, texts: Sequence[str], edits: Sequence[SiteEdit],
                       batch_size: int = 32, max_length: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [N, C] (float32, softmax of the logits) and predicted classes [N] (int64, argmax) of a
    sequence-classification model for each text, with `edits` active during the forward pass.

    Texts are cut to max_length model tokens and padded per batch (the attention mask hides the padding).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size} must be at least 1")
    probs: list[np.ndarray] = []
    device = _device(model)
    with _eval_mode(model), intervening(model, edits):
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,  # type: ignore[operator]
                            max_length=max_length, return_tensors="pt")
            out = model(**{k: v.to(device) for k, v in enc.items()})
            probs.append(torch.softmax(out.logits.float(), dim=-1).cpu().numpy())
    n_classes = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
    p = np.concatenate(probs) if probs else np.zeros((0, n_classes), dtype=np.float32)
    return p.astype(np.float32, copy=False), p.argmax(axis=1).astype(np.int64)


def prompt_ids(tokenizer: object, prompts: Sequence[str], max_length: int, max_new_tokens: int,
               positions: int) -> list[list[int]]:
    """Token ids of each prompt (the tokenizer's special tokens included); a prompt longer than max_length, or
    one whose continuation would run past the model's positions, is one ConfigError naming it."""
    out = []
    for i, prompt in enumerate(prompts):
        ids = list(tokenizer(prompt)["input_ids"])  # type: ignore[operator]
        if not ids:
            raise ConfigError(f"steering.prompts[{i}]: the prompt has no tokens")
        if len(ids) > max_length:
            raise ConfigError(f"steering.prompts[{i}]: {len(ids)} tokens, longer than max_length {max_length}")
        if len(ids) + max_new_tokens > positions:
            raise ConfigError(f"steering.prompts[{i}]: {len(ids)} tokens + max_new_tokens {max_new_tokens} run past"
                              f" the model's {positions} positions")
        out.append(ids)
    return out


def greedy_ids(model: nn.Module, ids: list[int], max_new_tokens: int, eos: int | None) -> list[int]:
    """Greedy decoding with the KV cache: the new token ids (EOS included when it ends the continuation)."""
    device = _device(model)
    inputs = torch.tensor([ids], device=device)
    out = model(input_ids=inputs, use_cache=True)
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        new.append(token)
        if token == eos or len(new) == max_new_tokens:
            break
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=out.past_key_values,
                    use_cache=True)
    return new


def greedy_continuations(model: nn.Module, tokenizer: object, prompts: Sequence[str], edits: Sequence[SiteEdit],
                         max_new_tokens: int = 20, max_length: int = 128) -> list[str]:
    """Each prompt's greedy continuation (the new text only, special tokens dropped) with `edits` active at the
    prompt's positions and at every generated one. Prompts run one at a time (no padding)."""
    if max_new_tokens < 1:
        raise ConfigError(f"steering.max_new_tokens: {max_new_tokens} must be at least 1")
    all_ids = prompt_ids(tokenizer, prompts, max_length, max_new_tokens,
                         model_max_length(getattr(model, "config", None)))
    eos = getattr(tokenizer, "eos_token_id", None)
    out = []
    with _eval_mode(model), intervening(model, edits):
        for ids in all_ids:
            new = greedy_ids(model, ids, max_new_tokens, eos if isinstance(eos, int) else None)
            out.append(tokenizer.decode(new, skip_special_tokens=True))  # type: ignore[attr-defined]
    return out


STEERING_EFFECTS_SCHEMA = pa.schema([
    ("set_name", pa.string()),
    ("multiple", pa.float32()),
    ("class_id", pa.int16()),
    ("label", pa.string()),
    ("n_sentences", pa.int32()),
    ("share_before", pa.float32()),
    ("share_after", pa.float32()),
    ("prob_before", pa.float32()),
    ("prob_after", pa.float32()),
    ("flipped_in", pa.int32()),
    ("flipped_out", pa.int32()),
])
STEERING_TEXTS_SCHEMA = pa.schema([
    ("set_name", pa.string()),
    ("multiple", pa.float32()),
    ("prompt_index", pa.int32()),
    ("prompt", pa.string()),
    ("before", pa.string()),
    ("after", pa.string()),
    ("changed", pa.bool_()),
])


def effects_table(set_name: str, multiple: float, labels: Sequence[str], probs_before: np.ndarray,
                  probs_after: np.ndarray) -> pa.Table:
    """One row per class: its share of the predictions and its mean probability before and after the clamp,
    and how many predictions moved into it (flipped_in) and out of it (flipped_out).

    The set's flip rate is sum(flipped_out) / n_sentences. Example: 3 sentences, 2 classes, predictions
    [0, 0, 1] -> [1, 0, 1]: class 0 share 2/3 -> 1/3, flipped_out 1; class 1 share 1/3 -> 2/3, flipped_in 1.

    >>> before = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> after = np.array([[0.4, 0.6], [0.7, 0.3], [0.1, 0.9]])
    >>> t = effects_table("s", 5.0, ["negative", "positive"], before, after).to_pydict()
    >>> [round(x, 3) for x in t["share_after"]], t["flipped_in"], t["flipped_out"]
    ([0.333, 0.667], [0, 1], [1, 0])
    """
    before = np.asarray(probs_before, dtype=np.float64)
    after = np.asarray(probs_after, dtype=np.float64)
    n, n_classes = before.shape
    pred_b, pred_a = before.argmax(axis=1), after.argmax(axis=1)
    moved = pred_b != pred_a
    classes = range(n_classes)
    count_b, count_a = np.bincount(pred_b, minlength=n_classes), np.bincount(pred_a, minlength=n_classes)
    denominator = max(n, 1)  # no sentences: shares and probabilities 0
    return pa.table({
        "set_name": [set_name] * n_classes,
        "multiple": [multiple] * n_classes,
        "class_id": list(classes),
        "label": [labels[c] if c < len(labels) else str(c) for c in classes],
        "n_sentences": [n] * n_classes,
        "share_before": count_b / denominator,
        "share_after": count_a / denominator,
        "prob_before": before.sum(axis=0) / denominator,
        "prob_after": after.sum(axis=0) / denominator,
        "flipped_in": np.bincount(pred_a[moved], minlength=n_classes),
        "flipped_out": np.bincount(pred_b[moved], minlength=n_classes),
    }, schema=STEERING_EFFECTS_SCHEMA)


def texts_table(set_name: str, multiple: float, prompts: Sequence[str], before: Sequence[str],
                after: Sequence[str]) -> pa.Table:
    """One row per prompt: its greedy continuation before and after the clamp, side by side.

    >>> texts_table("s", 5.0, ["The cat"], [" sat"], [" ran"]).to_pydict()["changed"]
    [True]
    """
    return pa.table({
        "set_name": [set_name] * len(prompts),
        "multiple": [multiple] * len(prompts),
        "prompt_index": list(range(len(prompts))),
        "prompt": list(prompts),
        "before": list(before),
        "after": list(after),
        "changed": [b != a for b, a in zip(before, after, strict=True)],
    }, schema=STEERING_TEXTS_SCHEMA)
