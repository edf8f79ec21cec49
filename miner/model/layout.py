"""Which units a job mines (sites x layers x dimensions), their unit ids, and the model modules they live in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from miner.errors import ConfigError

# Relative module paths (inside one transformer block) of the FFN down-projection, by architecture family; the rule:
# the first path that exists in the block. output.dense: BERT, RoBERTa, ELECTRA, DeBERTa-v2/v3; mlp.c_proj: GPT-2;
# mlp.down_proj: Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3; ffn.lin2: DistilBERT; mlp.dense_4h_to_h: GPT-NeoX;
# fc2: OPT (whose FFN input is [B * T, W]: BlockMiner reshapes it); mlp.Wo: ModernBERT.
_DOWN_PROJ = ("output.dense", "mlp.c_proj", "mlp.down_proj", "ffn.lin2", "mlp.fc2", "mlp.dense_4h_to_h", "feed_forward.w2",
              "fc2", "mlp.Wo")
# Attribute paths (from the base model) of the list of transformer blocks.
_BLOCKS = ("encoder.layer", "h", "layers", "transformer.layer", "decoder.layers", "blocks")
# Model types whose position ids start after padding_idx (fewer usable positions than max_position_embeddings).
_PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"}


def get_path(obj: object, dotted: str) -> object | None:
    """The attribute at a dotted path (e.g. "encoder.layer"), or None where any part is missing."""
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (encoder layers / decoder blocks)."""
    for path in _BLOCKS:
        blocks = get_path(model, path)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return blocks
    raise ConfigError(f"model: cannot find the transformer blocks of {type(model).__name__}")


def truncate_blocks(model: nn.Module, deepest_layer: int) -> int:
    """Drop transformer blocks no mined unit depends on; returns the number of blocks kept.

    Blocks up to `deepest_layer` are needed, plus one: decoders (GPT-2, Llama) apply their final norm to the
    last hidden state, so the deepest mined layer must not be the last block for its values to stay the raw
    block output. Example: MiniLM (6 blocks), deepest layer 1 -> 2 blocks kept; deepest layer 5 or 6 -> 6.
    """
    blocks = transformer_blocks(model)
    keep = min(len(blocks), deepest_layer + 1)
    if keep < len(blocks):
        del blocks[keep:]
    return keep


def down_projection(block: nn.Module) -> nn.Module:
    """The FFN down-projection of one block; its input is the block's mlp units."""
    for path in _DOWN_PROJ:
        mod = get_path(block, path)
        if isinstance(mod, nn.Module):
            return mod
    raise ConfigError(f"model: cannot find the FFN down-projection in {type(block).__name__} (site mlp unsupported)")


def model_max_length(config: object) -> int:
    """Longest input the model's position embeddings allow (unbounded if the config does not say)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(n, int) or n <= 0:
        return 1 << 30
    if getattr(config, "model_type", "") in _PADDING_OFFSET_POSITIONS:  # positions start after padding_idx
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return n


class LayerSlice(NamedTuple):
    """One mined tensor and the unit ids of its dimensions: lo..hi-1."""

    site: str
    layer: int
    lo: int
    hi: int


@dataclass(frozen=True)
class UnitLayout:
    """Which activation tensors a job mines and how their dimensions map to unit ids.

    Units are numbered consecutively: site by site (hidden first), layer by layer, dimension by dimension.
    Layer 0 is the embedding output, layer k (1..L) the output of the k-th transformer block (hidden_states[k]).
    The `mlp` site of layer k is the input of block k's FFN down-projection, i.e. the intermediate neurons after
    the activation function (for gated MLPs, act(gate) * up).
    """

    sites: tuple[str, ...]
    """Sites in unit-id order."""
    layers: tuple[tuple[str, int, int], ...]
    """(site, layer, width) for every mined tensor, in unit-id order."""

    @property
    def n_units(self) -> int:
        return sum(w for _, _, w in self.layers)

    def slices(self) -> list[LayerSlice]:
        """The unit ids of each mined tensor (the one place that numbers units).

        Example: layers (hidden, 1, 384), (mlp, 1, 1536) -> [(hidden, 1, 0, 384), (mlp, 1, 384, 1920)].
        """
        out, acc = [], 0
        for site, layer, width in self.layers:
            out.append(LayerSlice(site, layer, acc, acc + width))
            acc += width
        return out

    def offsets(self) -> list[int]:
        """First unit id of each mined tensor."""
        return [s.lo for s in self.slices()]


def unit_layout(config: object, sites: list[str], layers: list[int] | None) -> UnitLayout:
    """Resolve a job's sites and layers against a model config; unknown layers are one clear error.

    Example: MiniLM (6 layers, hidden 384, FFN 1536), sites [hidden, mlp], layers [1, 6] ->
    (hidden,1,384), (hidden,6,384), (mlp,1,1536), (mlp,6,1536): 3840 units.
    """
    n_layers = _config_int(config, ("num_hidden_layers", "n_layer", "num_layers", "n_layers"))
    hidden = _config_int(config, ("hidden_size", "n_embd", "d_model", "dim"))
    ffn = _config_int(config, ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim", "d_ff"), default=4 * hidden)
    chosen = list(range(1, n_layers + 1)) if layers is None else list(layers)
    for layer in chosen:
        if layer < 0 or layer > n_layers:
            raise ConfigError(f"layers: {layer} is out of range; the model has layers 1..{n_layers} (0 = embeddings)")
    if len(set(chosen)) != len(chosen):
        raise ConfigError("layers: a layer is listed twice")
    chosen.sort()
    out = []
    for site in sites:
        for layer in chosen:
            if site == "mlp" and layer == 0:
                continue
            out.append((site, layer, hidden if site == "hidden" else ffn))
    if not out:
        raise ConfigError("layers: nothing to mine (site mlp has no layer 0; add hidden or a layer >= 1)")
    return UnitLayout(tuple(sites), tuple(out))


def _config_int(config: object, names: tuple[str, ...], default: int | None = None) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    if default is not None:
        return default
    raise ConfigError(f"model: config has none of {', '.join(names)}")
