"""Interventions inside the forward pass: set some dimensions of mined tensors (hidden or mlp) to zero or a value.

Where each site is edited (the tensors mining records, `miner.model.layout.UnitLayout`):

- hidden, layer 0: the input of the first transformer block (a forward pre-hook), which is exactly what
  transformers reports as `hidden_states[0]` (the embedding output; GPT-2 has no single embeddings module).
- hidden, layer k (1..L): the output of block k (a forward hook), i.e. `hidden_states[k]`. Decoders whose base
  model applies a final norm after the last block (GPT-2 `ln_f`, Llama `norm`) report `hidden_states[L]` after
  that norm, so layer L of such a model is edited at the norm's output (what mining recorded for layer L).
- mlp, layer k: the input of block k's FFN down-projection (a forward pre-hook).

Every edit is one out-of-place `torch.where` over the last dimension, so untouched dimensions keep their exact
values, and our hooks run before any hook transformers installs to record hidden states (`prepend=True`): the
reported `hidden_states` show the edited values. An empty edit list registers nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from miner.errors import ConfigError
from miner.model.layout import UnitLayout, down_projection, transformer_blocks

# Attribute paths (from the base model) of a final norm applied to the last block's output.
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "decoder.final_layer_norm", "decoder.norm")
SITES = ("hidden", "mlp")


@dataclass(frozen=True)
class SiteEdit:
    """Set some dimensions of one mined tensor during the forward pass, at every token position."""

    site: str
    """hidden (layer 0 = embedding output, k = output of block k, i.e. hidden_states[k]) or mlp (input of block
    k's FFN down-projection, as miner.model.layout documents)."""
    layer: int
    dims: tuple[int, ...]
    """Dimension indices within that tensor."""
    values: tuple[float, ...] | None = None
    """None: zero; else the value each dim is set to (mean-ablation, clamp), one per dim."""

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"site must be one of {SITES}, not {self.site!r}")
        if self.values is not None and len(self.values) != len(self.dims):
            raise ValueError(f"{len(self.dims)} dims but {len(self.values)} values")
        if self.site == "mlp" and self.layer < 1:
            raise ValueError("site mlp has no layer 0")


def base_model(model: nn.Module) -> nn.Module:
    """The base transformer of a model with or without a head (BertForSequenceClassification -> its BertModel)."""
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module):
        return base
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        dec = get_decoder()
        if isinstance(dec, nn.Module):
            return dec
    return model


def final_norm(base: nn.Module) -> nn.Module | None:
    """The norm a decoder base model applies after its last block (None for encoders such as BERT)."""
    for path in _FINAL_NORMS:
        obj: object = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Module) and not isinstance(obj, nn.ModuleList):
            return obj
    return None


class _Setter:
    """Sets dims of the last axis of a tensor [..., width]: x -> where(mask, values, x), cached per device/dtype.

    Example: width 4, dims (1, 3) to (0, 5): [a, b, c, d] -> [a, 0, c, 5] at every position.
    """

    def __init__(self, dims: dict[int, float]) -> None:
        self.dims = dims
        self._cache: dict[tuple[torch.device, torch.dtype, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype, x.shape[-1])
        if key not in self._cache:
            width = x.shape[-1]
            bad = [d for d in self.dims if not 0 <= d < width]
            if bad:
                raise ConfigError(f"ablate: dimension {bad[0]} is out of range for a tensor of width {width}")
            mask = torch.zeros(width, dtype=torch.bool)
            vals = torch.zeros(width, dtype=torch.float32)
            idx = torch.tensor(sorted(self.dims), dtype=torch.int64)
            mask[idx] = True
            vals[idx] = torch.tensor([self.dims[int(i)] for i in idx], dtype=torch.float32)
            self._cache[key] = (mask.to(x.device), vals.to(device=x.device, dtype=x.dtype))
        mask, vals = self._cache[key]
        return torch.where(mask, vals, x)


def _merge(edits: Sequence[SiteEdit]) -> dict[tuple[str, int], dict[int, float]]:
    """Edits grouped by (site, layer): dim -> value (a later edit of the same dim wins)."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for e in edits:
        target = out.setdefault((e.site, e.layer), {})
        for i, d in enumerate(e.dims):
            target[int(d)] = 0.0 if e.values is None else float(e.values[i])
    return out


def _output_hook(setter: _Setter):
    def hook(_module: nn.Module, _args: tuple, output: object) -> object:
        if isinstance(output, torch.Tensor):
            return setter(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (setter(output[0]), *output[1:])
        raise TypeError(f"cannot edit a module output of type {type(output).__name__}")
    return hook


def _input_hook(setter: _Setter):
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if args:
            return (setter(args[0]), *args[1:]), kwargs
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": setter(kwargs["hidden_states"])}
        raise TypeError("cannot find the input tensor of the hooked module")
    return hook


@contextmanager
def intervening(model: nn.Module, edits: Sequence[SiteEdit]) -> Iterator[None]:
    """Apply `edits` to every forward pass of `model` inside the block (generation included); hooks are removed
    on exit, also after an error.

    `model` is a base model (AutoModel) or one with a head. An empty `edits` registers nothing, so outputs are
    bit-identical to a model without hooks. A layer the model does not have is one ConfigError.
    """
    if not edits:
        yield
        return
    base = base_model(model)
    blocks = transformer_blocks(base)
    n_blocks = len(blocks)
    norm = final_norm(base)
    handles = []
    try:
        for (site, layer), dims in _merge(edits).items():
            if not 0 <= layer <= n_blocks or (site == "mlp" and layer == 0):
                raise ConfigError(f"ablate: {site} layer {layer} does not exist; the model has layers 1..{n_blocks}")
            setter = _Setter(dims)
            if site == "mlp":
                handles.append(down_projection(blocks[layer - 1]).register_forward_pre_hook(
                    _input_hook(setter), prepend=True, with_kwargs=True))
            elif layer == 0:
                handles.append(blocks[0].register_forward_pre_hook(_input_hook(setter), prepend=True,
                                                                   with_kwargs=True))
            elif layer == n_blocks and norm is not None:
                handles.append(norm.register_forward_hook(_output_hook(setter), prepend=True))
            else:
                handles.append(blocks[layer - 1].register_forward_hook(_output_hook(setter), prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()


def edits_for_units(layout: UnitLayout, unit_ids: Sequence[int] | np.ndarray,
                    values_by_unit: Mapping[int, float] | None = None) -> list[SiteEdit]:
    """The edits that set the given units (ids of `layout`) to zero, or to `values_by_unit[unit]`.

    Example: layout (hidden,1,4), (mlp,1,8); units [1, 5, 6] -> [SiteEdit(hidden, 1, (1,)),
    SiteEdit(mlp, 1, (1, 2))]. Unknown ids (or ids without a value) are one ConfigError.
    """
    ids = sorted({int(u) for u in unit_ids})
    n = layout.n_units
    bad = [u for u in ids if not 0 <= u < n]
    if bad:
        raise ConfigError(f"ablate: unit id {bad[0]} does not exist (the run has units 0..{n - 1})")
    if values_by_unit is not None:
        missing = [u for u in ids if u not in values_by_unit]
        if missing:
            raise ConfigError(f"ablate: no value for unit {missing[0]}")
    out = []
    arr = np.asarray(ids, dtype=np.int64)
    for s in layout.slices():
        sel = arr[(arr >= s.lo) & (arr < s.hi)]
        if sel.size == 0:
            continue
        vals = None if values_by_unit is None else tuple(float(values_by_unit[int(u)]) for u in sel)
        out.append(SiteEdit(s.site, s.layer, tuple(int(u - s.lo) for u in sel), vals))
    return out
