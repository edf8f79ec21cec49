"""On-demand token activations of one unit over a few sentences, exactly as the miner computed them.

The model is loaded as the job loaded it (same folder, `init` and `init_seed`, max_length), batched with the
miner's own `make_batches` and run through `BlockMiner.forward` for the unit's site and layer only; the
activations of real tokens (special tokens and padding excluded) are returned with their character spans,
so a page can colour the sentence text itself. The aggregated value equals the stored sentence score.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miner.errors import InputError
from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.model.layout import UnitLayout, unit_layout
from miner.model.loading import LoadedModel, load_model
from miner.report.records import TokenActivation, UnitRef, WordActivation

log = logging.getLogger(__name__)

_MODELS: dict[tuple, LoadedModel] = {}


def cached_model(path: Path, init: str, init_seed: int, device: str = "cpu") -> LoadedModel:
    """Load a model once per process (float32; reports of several units reuse it)."""
    key = (str(path), init, init_seed, device)
    if key not in _MODELS:
        if not Path(path).is_dir():
            raise InputError(f"{path}: the run's model folder is gone; cannot compute token activations "
                             "(use --no-activations)")
        _MODELS[key] = load_model(Path(path), device, "float32", init, init_seed)
    return _MODELS[key]


def _spans(tokenizer: Any, texts: list[str], max_length: int) -> list[tuple[list, list] | None]:
    """Per text, tokenised as the miner does: (character span, word id) of every model token, special
    tokens included; None when the tokenizer gives no offsets (slow tokenizers)."""
    if not getattr(tokenizer, "is_fast", False):
        return [None] * len(texts)
    out: list[tuple[list, list] | None] = []
    for text in texts:
        enc = tokenizer(text, add_special_tokens=True, truncation=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) > max_length:
            enc = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length,
                            return_offsets_mapping=True)
        out.append(([tuple(span) for span in enc["offset_mapping"]], enc.word_ids()))
    return out


def _words(text: str, tokens: list[TokenActivation], word_ids: list[int | None] | None) -> list[WordActivation]:
    """Merge word pieces back into words (by the tokenizer's word ids; else by adjacent spans).

    Example: "unbelievable!" with pieces un, ##bel, ##ievable (0.1, 0.9, -0.2) and ! (0.3)
    -> [unbelievable (0.9; un ##bel ##ievable), ! (0.3)].
    """
    groups: list[list[TokenActivation]] = []
    last_key = None
    for i, tok in enumerate(tokens):
        if tok.start is None:
            return []
        key = word_ids[i] if word_ids is not None else None
        joined = groups and (key is not None and key == last_key
                             or key is None and groups[-1][-1].end == tok.start and tok.token.startswith("##"))
        if joined:
            groups[-1].append(tok)
        else:
            groups.append([tok])
        last_key = key
    words = []
    for group in groups:  # every token has offsets here (checked above)
        start, end = group[0].start or 0, max(t.end or 0 for t in group)
        peak = max(group, key=lambda t: abs(t.activation))
        words.append(WordActivation(text[start:end], start, end, peak.activation, [t.token for t in group]))
    return words


def token_activations(loaded: LoadedModel, unit: UnitRef, ids: list[int], texts: list[str], max_length: int,
                      batch_size: int = 32) -> dict[int, tuple[list[TokenActivation], list[WordActivation]]]:
    """Per sentence id: the unit's activation on each real model token, and the words they form.

    Example: unit hidden 3:232 of MiniLM on "how much money" -> tokens how (1.1), much (1.3), money (2.32)
    ([CLS] and [SEP] excluded); their mean is the stored score of the sentence.
    """
    widths = {(site, layer): width for site, layer, width in
              unit_layout(loaded.config, [unit.site], [unit.layer]).layers}
    width = widths.get((unit.site, unit.layer))
    if width is None or unit.idx >= width:
        raise InputError(f"unit {unit.label}: not in the model at {loaded.folder}")
    layout = UnitLayout((unit.site,), ((unit.site, unit.layer, width),))
    miner = BlockMiner(loaded, layout, top_n=1, max_length=max_length, batch_size=batch_size)
    try:
        batches, _ = make_batches(loaded.tokenizer, np.asarray(ids, dtype=np.int64), texts, miner.max_length,
                                  batch_size)
        row = {sid: i for i, sid in enumerate(ids)}
        tokenizer: Any = loaded.tokenizer
        spans = _spans(tokenizer, texts, miner.max_length)
        out = {}
        for batch in batches:
            acts = miner.forward(batch)[0][:, :, unit.idx].to(torch.float32).cpu().numpy()
            lengths = batch.attention.sum(1).tolist()
            real_mask = batch.real.numpy()
            input_ids = batch.input_ids.tolist()
            for k, sid in enumerate(batch.ids.tolist()):
                i = row[sid]
                n = lengths[k]
                pieces = tokenizer.convert_ids_to_tokens(input_ids[k][:n])
                found = spans[i]
                span, word_id = found if found is not None and len(found[0]) == n else (None, None)
                real = np.flatnonzero(real_mask[k, :n]).tolist()
                toks = [TokenActivation(p, pieces[p], span[p][0] if span else None, span[p][1] if span else None,
                                        float(acts[k, p])) for p in real]
                word_ids = [word_id[p] for p in real] if word_id is not None else None
                out[sid] = (toks, _words(texts[i], toks, word_ids))
        return out
    finally:
        miner.close()


def aggregate(tokens: list[TokenActivation], aggregation: str) -> float | None:
    """The sentence score the miner stores, from token activations: mean (or max) over real tokens."""
    if not tokens:
        return None
    values = np.array([t.activation for t in tokens], dtype=np.float64)
    return float(values.mean() if aggregation == "mean" else values.max())
