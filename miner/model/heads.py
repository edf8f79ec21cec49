"""Loading a model WITH its output head (classifier, LM head), for interventions whose effect is measured on the
model's own output; mining loads the base model only (`miner.model.loading.load_model`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from miner.errors import ConfigError, first_line
from miner.model.loading import (
    DECODERS,
    pick_device,
    pick_dtype,
    reinitialize_except_embeddings,
    validate_model_folder,
)

log = logging.getLogger(__name__)
TASKS = ("classification", "causal_lm", "masked_lm", "embedding")


@dataclass
class HeadModel:
    """A model with its head, ready for interventions."""

    model: nn.Module
    tokenizer: object
    folder: Path
    config: object
    device: torch.device
    dtype: torch.dtype
    task: str
    """classification, causal_lm, masked_lm or embedding (no head: the sentence embedding is the output)."""
    is_decoder: bool
    labels: list[str] | None = None
    """Class names of a classification head, by class index."""


def head_task(config: dict) -> str:
    """The task a model folder's config.json implies: its head, else causal_lm for decoders, else embedding.

    >>> head_task({"architectures": ["BertForSequenceClassification"], "model_type": "bert"})
    'classification'
    >>> head_task({"architectures": ["GPT2Model"], "model_type": "gpt2"}), head_task({"model_type": "bert"})
    ('causal_lm', 'embedding')
    """
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "classification"
    if config.get("model_type") in DECODERS or any(a.endswith(("ForCausalLM", "LMHeadModel"))
                                                    for a in archs):
        return "causal_lm"
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "masked_lm"
    return "embedding"


def check_task(folder: Path, config: dict, task: str) -> None:
    """A task the checkpoint's head cannot serve is one ConfigError line."""
    archs = [str(a) for a in config.get("architectures") or []]
    if task not in TASKS:
        raise ConfigError(f"ablate.task: {task!r} is not one of {', '.join(TASKS)}")
    if task == "classification" and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(f"model: {folder} has no sequence-classification head (architectures: "
                          f"{', '.join(archs) or 'none'})")
    if task == "causal_lm" and config.get("model_type") not in DECODERS and not any(
            a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ConfigError(f"model: {folder} is not a decoder; causal_lm needs one (architectures: "
                          f"{', '.join(archs) or 'none'})")


def load_head_model(folder: Path, task: str, device: str = "cpu", dtype: str = "auto", allow_pickle: bool = False,
                    trust_remote_code: bool = False, init: str = "pretrained", init_seed: int = 0) -> HeadModel:
    """Load model + head + tokenizer from a local folder (offline, SDPA where supported, eval mode).

    classification -> AutoModelForSequenceClassification, causal_lm -> AutoModelForCausalLM, masked_lm ->
    AutoModelForMaskedLM, embedding -> AutoModel. A random-init job re-initialises the base model exactly as
    mining does (`reinitialize_except_embeddings` on the base), so the units are the mined ones.
    """
    folder = Path(folder)
    validate_model_folder(folder, allow_pickle)
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot read {folder / 'config.json'}: {first_line(exc)}") from None
    check_task(folder, raw, task)
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    cls = {"classification": AutoModelForSequenceClassification, "causal_lm": AutoModelForCausalLM,
           "masked_lm": AutoModelForMaskedLM, "embedding": AutoModel}[task]
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    part = "config"
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        part = "tokenizer (tokenizer.json / vocab files)"
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        part = "weights"
        kwargs = {"dtype": dt, "trust_remote_code": trust_remote_code, "use_safetensors": not allow_pickle or None}
        try:
            model = cls.from_pretrained(folder, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError) as exc:  # the class does not support SDPA
            log.debug("%s: no SDPA (%s); eager attention", folder, first_line(exc))
            model = cls.from_pretrained(folder, attn_implementation="eager", **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, SafetensorError, ...: one line
        raise ConfigError(f"model: cannot load the {part} of {folder} with its {task} head: {first_line(exc)}"
                          ) from None
    if init == "random":
        base = getattr(model, "base_model", model)  # the mined units live in the base model
        reinitialize_except_embeddings(base, init_seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # classification heads of decoders pool the last real token
    is_decoder = config.model_type in DECODERS or bool(getattr(config, "is_decoder", False))
    labels = None
    if task == "classification":
        id2label = getattr(config, "id2label", None) or {}
        labels = [str(id2label[k]) for k in sorted(id2label)]
    model.eval().to(dev)
    return HeadModel(model, tokenizer, folder, config, dev, dt, task, is_decoder, labels)
