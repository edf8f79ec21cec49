"""The output view: each unit's top positive and negative output tokens from its direct effect on the logits.

Definition (the logit lens of a unit's write direction). A unit u writes the direction w_u into the residual
stream: an `mlp` unit of layer k (the j-th input of block k's FFN down-projection) writes column j of that
projection's weight (nn.Linear: weight[:, j]; GPT-2's Conv1D stores the transpose: weight[j, :]); the bias is
not the unit's and is left out. A `hidden` unit (layer k, dimension i) is the basis vector e_i. With H the
model's own head as modules, the unit's logit effect is

    delta_logits(u) = H(alpha_u * w_u) - H(0)            (one value per vocabulary token)

where alpha_u > 0 is the activation scale the direction is evaluated at (`OutputUnit.scale`, default 1.0; the
`miner ablate` stage passes the unit's top-queue mean when it is positive, else 1.0). The unit's top-k
`positive` tokens are the k largest entries of delta_logits, its `negative` tokens the k smallest.

H per family, found by documented rules (anything else is one ConfigError line):

- causal LMs (class name ending in ForCausalLM or LMHeadModel: GPT-2, Llama, Mistral, OPT, ...): H = the base
  model's final norm (the first of the attributes ln_f, norm, final_layer_norm, final_layernorm,
  decoder.final_layer_norm of `model.base_model`) followed by `get_output_embeddings()` (lm_head).
  LayerNorm and RMSNorm of a single direction are scale-invariant (up to their eps), so alpha barely matters and
  H(0) is the norm's bias through lm_head (zero for RMSNorm). Hugging Face decoders return the LAST layer's
  hidden state after the final norm (hidden_states[L] = norm(block L output)), so hidden units of layer L skip
  the norm: H = lm_head alone for them.
- masked LMs (class name ending in ForMaskedLM: BERT, RoBERTa, ...): H = the whole prediction head, `cls.predictions`
  (BERT: transform = dense, activation, LayerNorm; then the decoder) or `lm_head` (RoBERTa: dense, gelu,
  layer_norm, decoder). The transform is nonlinear, so alpha matters: H is evaluated at the unit's scale, and
  H(0) (the head's response to a zero vector, i.e. to its biases) is subtracted.

Units are processed in batches: a [batch, hidden] matrix of scaled directions goes through H at once and
`torch.topk` picks the tokens; the tests check this against running the head modules on each nudged vector in
a loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import torch
from torch import nn

from miner.errors import ConfigError
from miner.model.layout import down_projection, get_path, transformer_blocks

_FINAL_NORMS = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "decoder.final_layer_norm")
_MASKED_HEADS = ("cls.predictions", "lm_head")

UNIT_LOGITS_SCHEMA = pa.schema([
    ("unit_id", pa.int32()),
    ("direction", pa.string()),
    ("rank", pa.int16()),
    ("token_id", pa.int32()),
    ("token", pa.string()),
    ("logit", pa.float32()),
])


@dataclass(frozen=True)
class OutputUnit:
    """One unit whose output tokens are wanted."""

    unit_id: int
    """The unit's id in the run (see the units table)."""
    site: str
    """`hidden` or `mlp`."""
    layer: int
    """0 = embeddings (hidden only), k = transformer layer k (1-based)."""
    idx: int
    """Dimension within the site and layer."""
    scale: float = 1.0
    """alpha: the activation value the unit's direction is scaled by before the head (finite, > 0)."""


@dataclass(frozen=True)
class OutputHead:
    """The modules that turn a residual-stream vector into logits, as found in a model with an LM head."""

    head: nn.Module
    """Hidden vector -> logits: lm_head (causal LMs) or the whole prediction head (masked LMs)."""
    norm: nn.Module | None
    """The final norm applied before `head` (causal LMs), or None (masked LMs: the head has its own)."""
    n_layers: int
    """Transformer blocks of the model."""
    blocks: nn.ModuleList
    """The transformer blocks (for the mlp units' down-projections)."""

    def apply(self, x: torch.Tensor, skip_norm: bool = False) -> torch.Tensor:
        """H(x) for a batch of vectors x [B, hidden] -> logits [B, vocab] (float32)."""
        if self.norm is not None and not skip_norm:
            x = self.norm(x)
        return self.head(x).float()



def output_head(model: nn.Module) -> OutputHead:
    """Find the final norm and unembedding of a model with an LM head (the rules are in the module docstring)."""
    name = type(model).__name__
    base = getattr(model, "base_model", model)
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        getter = getattr(model, "get_output_embeddings", None)
        head = getter() if callable(getter) else None
        norm = next((m for p in _FINAL_NORMS if isinstance(m := get_path(base, p), nn.Module)), None)
        if not isinstance(head, nn.Module) or norm is None:
            raise ConfigError(f"model: {name}: cannot find its lm_head and final norm ({', '.join(_FINAL_NORMS)})"
                              " for the output view")
    elif name.endswith("ForMaskedLM"):
        found = next((m for p in _MASKED_HEADS if isinstance(m := get_path(model, p), nn.Module)), None)
        if found is None:
            raise ConfigError(f"model: {name}: cannot find its prediction head ({', '.join(_MASKED_HEADS)})"
                              " for the output view")
        head, norm = found, None
    else:
        raise ConfigError(f"model: {name} has no language-model head; the output view needs a causal LM"
                          " (…ForCausalLM) or a masked LM (…ForMaskedLM)")
    blocks = transformer_blocks(base)
    return OutputHead(head=head, norm=norm, n_layers=len(blocks), blocks=blocks)


def write_matrix(block: nn.Module) -> torch.Tensor:
    """The write directions of a block's mlp units: row j = what unit j adds per unit of activation, [ffn, hidden].

    nn.Linear(ffn -> hidden) stores weight [hidden, ffn] (transpose it); GPT-2's Conv1D stores [ffn, hidden].
    """
    proj = down_projection(block)
    weight = proj.weight
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"model: the FFN down-projection of {type(block).__name__} has no weight")
    if type(proj).__name__ == "Conv1D":
        return weight.detach()
    return weight.detach().T


def unit_directions(head: OutputHead, units: Sequence[OutputUnit], hidden: int) -> torch.Tensor:
    """The scaled write directions alpha_u * w_u of units, [len(units), hidden], on the head's device and dtype."""
    param = next(head.head.parameters())
    out = torch.zeros(len(units), hidden, dtype=param.dtype, device=param.device)
    cache: dict[int, torch.Tensor] = {}
    for row, unit in enumerate(units):
        if unit.site == "hidden":
            out[row, unit.idx] = unit.scale
        else:
            if unit.layer not in cache:
                cache[unit.layer] = write_matrix(head.blocks[unit.layer - 1]).to(out)
            out[row] = cache[unit.layer][unit.idx] * unit.scale
    return out


def check_units(head: OutputHead, units: Sequence[OutputUnit], hidden: int, ffn: int) -> None:
    """One ConfigError for a unit outside the model or a scale that is not a finite positive number."""
    for unit in units:
        width = hidden if unit.site == "hidden" else ffn
        low = 0 if unit.site == "hidden" else 1
        if unit.site not in ("hidden", "mlp") or not low <= unit.layer <= head.n_layers or not 0 <= unit.idx < width:
            raise ConfigError(f"unit {unit.unit_id}: ({unit.site}, layer {unit.layer}, idx {unit.idx}) is not a unit"
                              f" of this model ({head.n_layers} layers, hidden {hidden}, ffn {ffn})")
        if not (math.isfinite(unit.scale) and unit.scale > 0):
            raise ConfigError(f"unit {unit.unit_id}: output-view scale {unit.scale} is not a finite positive number")


def unit_logits(model: nn.Module, tokenizer: object, units: Sequence[OutputUnit], top_k: int = 10,
                batch_size: int = 256) -> pa.Table:
    """Each unit's top_k positive and negative output tokens by delta_logits (see the module docstring).

    Returns the `unit_logits` table: unit_id, direction ('positive' / 'negative'), rank (1 = strongest),
    token_id, token (the token decoded alone; NULL for an id the tokenizer does not know), logit (the token's
    delta_logit, float32). Rows are ordered by unit (input order), direction (positive first), rank.
    """
    if top_k < 1:
        raise ConfigError(f"top_k: {top_k} must be at least 1")
    head = output_head(model)
    ffn = write_matrix(head.blocks[0]).shape[0] if any(u.site == "mlp" for u in units) else 0
    probe = next(head.head.parameters())
    hidden = _hidden_size(model)
    check_units(head, units, hidden, ffn)
    cols: dict[str, list] = {name: [] for name in UNIT_LOGITS_SCHEMA.names}
    with torch.no_grad():
        zero = torch.zeros(1, hidden, dtype=probe.dtype, device=probe.device)
        base = {False: head.apply(zero), True: head.apply(zero, skip_norm=True)}
        vocab = base[False].shape[1]
        k = min(top_k, vocab)
        for start in range(0, len(units), batch_size):
            chunk = list(units[start:start + batch_size])
            directions = unit_directions(head, chunk, hidden)
            skip = torch.tensor([_skips_norm(head, u) for u in chunk], device=probe.device)
            delta = head.apply(directions) - base[False]
            if bool(skip.any()):
                delta[skip] = head.apply(directions[skip], skip_norm=True) - base[True]
            pos = torch.topk(delta, k, dim=1)
            neg = torch.topk(-delta, k, dim=1)
            _append(cols, chunk, (pos.values.cpu(), pos.indices.cpu()), (-neg.values.cpu(), neg.indices.cpu()))
    tokens = _token_strings(tokenizer, set(cols["token_id"]))
    cols["token"] = [tokens[i] for i in cols["token_id"]]
    return pa.table(cols, schema=UNIT_LOGITS_SCHEMA)


def _skips_norm(head: OutputHead, unit: OutputUnit) -> bool:
    """Decoders' hidden_states[L] is already normalised: their last layer's hidden units skip the final norm."""
    return head.norm is not None and unit.site == "hidden" and unit.layer == head.n_layers


def _append(cols: dict[str, list], chunk: list[OutputUnit], positive: tuple[torch.Tensor, torch.Tensor],
            negative: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Rows of a batch of units: per unit its positive tokens by rank, then its negative ones."""
    k = positive[0].shape[1]
    for row, unit in enumerate(chunk):
        for direction, (values, ids) in (("positive", positive), ("negative", negative)):
            cols["unit_id"].extend([unit.unit_id] * k)
            cols["direction"].extend([direction] * k)
            cols["rank"].extend(range(1, k + 1))
            cols["token_id"].extend(ids[row].tolist())
            cols["logit"].extend(values[row].tolist())


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for name in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"model: {type(model).__name__}: config has no hidden size")


def _token_strings(tokenizer: object, ids: set[int]) -> dict[int, str | None]:
    """Each token id decoded alone (byte-level BPE keeps its leading space); None for ids past the tokenizer."""
    size = len(tokenizer)  # type: ignore[arg-type]
    decode = tokenizer.decode  # type: ignore[attr-defined]
    return {i: (decode([i]) if i < size else None) for i in ids}
