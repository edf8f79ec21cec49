"""Interventions inside the forward pass are exact: an empty edit list is bit-identical to no hook; an edit sets
the reported hidden_states (and what later layers see) exactly as a hand-edited forward does, and matches models
whose weights were edited to the same effect (BERT, GPT-2, Llama tiny models; hidden and mlp sites)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from miner.errors import ConfigError
from miner.intervene.hooks import SiteEdit, base_model, edits_for_units, final_norm, intervening
from miner.model.layout import UnitLayout, down_projection, transformer_blocks
from tests.support.builders import tiny_model

TEXTS = ["The cat sat on the mat and looked at the bird.", "lol im so happy", "Water boils at sea level."]
ARCHS = ("bert", "gpt2", "llama")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {a: tiny_model(root / a, a, layers=3) for a in ARCHS}


def _load(folder: Path, device: str, head: bool = False) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    cls = AutoModelForCausalLM if head else AutoModel
    model = cls.from_pretrained(folder, attn_implementation="eager").to(device).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    return model, {k: v.to(device) for k, v in enc.items()}


def _run(model: torch.nn.Module, enc: dict[str, torch.Tensor]):
    with torch.inference_mode():
        return model(**enc, output_hidden_states=True)


def _set(x: torch.Tensor, dims: tuple[int, ...], values: tuple[float, ...] | None) -> torch.Tensor:
    """The brute-force edit: a copy with each dim assigned its value (0 without values)."""
    y = x.clone()
    for i, d in enumerate(dims):
        y[..., d] = 0.0 if values is None else values[i]
    return y


def _wrap_output(module: torch.nn.Module, dims, values) -> None:
    """Hand-edited forward: the module's own forward, then the edit (no hooks involved)."""
    orig = module.forward

    def forward(*args, **kwargs):
        out = orig(*args, **kwargs)
        if isinstance(out, tuple):
            return (_set(out[0], dims, values), *out[1:])
        return _set(out, dims, values)

    module.forward = forward  # type: ignore[method-assign]


def _wrap_input(module: torch.nn.Module, dims, values) -> None:
    orig = module.forward

    def forward(x, *args, **kwargs):
        return orig(_set(x, dims, values), *args, **kwargs)

    module.forward = forward  # type: ignore[method-assign]


@pytest.mark.parametrize("arch", ARCHS)
def test_empty_edits_are_bit_identical(folders, arch, device) -> None:
    model, enc = _load(folders[arch], device)
    clean = _run(model, enc)
    for _site in ("hidden", "mlp"):
        with intervening(model, []):
            out = _run(model, enc)
        assert torch.equal(out.last_hidden_state, clean.last_hidden_state)
        assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, clean.hidden_states))
    # and a non-empty edit leaves no hook behind
    with intervening(model, [SiteEdit("hidden", 1, (0,)), SiteEdit("mlp", 2, (3,))]):
        _run(model, enc)
    after = _run(model, enc)
    assert all(torch.equal(a, b) for a, b in zip(after.hidden_states, clean.hidden_states))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer", [0, 1, 3])
@pytest.mark.parametrize("values", [None, (2.5, -1.0, 0.75)])
def test_hidden_edit_equals_hand_edited_forward(folders, arch, layer, values, device) -> None:
    dims = (1, 4, 30)
    model, enc = _load(folders[arch], device)
    clean = _run(model, enc)
    with intervening(model, [SiteEdit("hidden", layer, dims, values)]):
        out = _run(model, enc)
    hs = out.hidden_states
    # the reported hidden state holds the values exactly, the other dims are untouched
    assert torch.equal(hs[layer], _set(clean.hidden_states[layer], dims, values))
    for k in range(layer):
        assert torch.equal(hs[k], clean.hidden_states[k])
    if layer < 3:  # what later layers see changed
        assert not torch.allclose(hs[layer + 1], clean.hidden_states[layer + 1], atol=1e-4)
    # brute-force twin: the same edit done inside the module's forward
    twin = copy.deepcopy(model)
    base = base_model(twin)
    blocks = transformer_blocks(base)
    norm = final_norm(base)
    if layer == 0:
        _wrap_input(blocks[0], dims, values)
    elif layer == len(blocks) and norm is not None:
        _wrap_output(norm, dims, values)
    else:
        _wrap_output(blocks[layer - 1], dims, values)
    ref = _run(twin, enc)
    # (the twin's recorded hidden_states[0] is the unedited block input: transformers records it outside forward)
    assert all(torch.equal(a, b) for a, b in zip(hs[layer + 1:], ref.hidden_states[layer + 1:]))
    assert torch.equal(out.last_hidden_state, ref.last_hidden_state)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer", [1, 3])
def test_mlp_zero_equals_zeroed_down_projection_columns(folders, arch, layer, device) -> None:
    """Zeroing mlp units = zeroing their columns of the down-projection weight (an independent twin)."""
    dims = (0, 7, 20)
    model, enc = _load(folders[arch], device)
    with intervening(model, [SiteEdit("mlp", layer, dims)]):
        out = _run(model, enc)
    twin = copy.deepcopy(model)
    proj = down_projection(transformer_blocks(base_model(twin))[layer - 1])
    with torch.no_grad():
        if type(proj).__name__ == "Conv1D":  # GPT-2: weight [in, out]
            proj.weight[list(dims), :] = 0.0
        else:
            proj.weight[:, list(dims)] = 0.0
    ref = _run(twin, enc)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    clean = _run(model, enc)
    assert not torch.allclose(out.last_hidden_state, clean.last_hidden_state, atol=1e-4)


def test_mlp_clamp_equals_shifted_bias(folders, device) -> None:
    """Clamping mlp units to v = zeroed columns plus v times those columns in the bias (BERT)."""
    dims, values = (2, 9), (1.5, -0.5)
    model, enc = _load(folders["bert"], device)
    with intervening(model, [SiteEdit("mlp", 2, dims, values)]):
        out = _run(model, enc)
    twin = copy.deepcopy(model)
    proj = down_projection(transformer_blocks(twin)[1])
    with torch.no_grad():
        for d, v in zip(dims, values):
            proj.bias += v * proj.weight[:, d]
            proj.weight[:, d] = 0.0
    ref = _run(twin, enc)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_bert_hidden_edit_equals_layernorm_weights(folders, device) -> None:
    """BERT's block output is a LayerNorm: gamma = 0, beta = v on a dim sets it to v (an independent twin)."""
    dims, values = (3, 11), (0.0, 2.0)
    model, enc = _load(folders["bert"], device)
    with intervening(model, [SiteEdit("hidden", 2, dims, values)]):
        out = _run(model, enc)
    twin = copy.deepcopy(model)
    ln = transformer_blocks(twin)[1].output.LayerNorm
    with torch.no_grad():
        for d, v in zip(dims, values):
            ln.weight[d], ln.bias[d] = 0.0, v
    ref = _run(twin, enc)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gpt2_layer0_equals_zeroed_embeddings(folders, device) -> None:
    dims = (5, 6)
    model, enc = _load(folders["gpt2"], device)
    with intervening(model, [SiteEdit("hidden", 0, dims)]):
        out = _run(model, enc)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.wte.weight[:, list(dims)] = 0.0
        twin.wpe.weight[:, list(dims)] = 0.0
    ref = _run(twin, enc)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_model_with_head_is_edited_in_its_base(folders, arch, device) -> None:
    model, enc = _load(folders[arch], device, head=True)
    base, _ = _load(folders[arch], device)
    edit = [SiteEdit("mlp", 1, (1, 2)), SiteEdit("hidden", 2, (0,), (3.0,))]
    with intervening(model, edit):
        out = _run(model, enc)
    with intervening(base, edit):
        ref = _run(base, enc)
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, ref.hidden_states))
    clean = _run(model, enc)
    assert not torch.allclose(out.logits, clean.logits, atol=1e-4)


def test_bad_layers_and_hooks_removed_on_error(folders, device) -> None:
    model, enc = _load(folders["bert"], device)
    _run(model, enc)  # transformers installs its own recording hooks on the first run

    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    before = hooks()
    with pytest.raises(ConfigError, match="layer 4 does not exist"):
        with intervening(model, [SiteEdit("hidden", 1, (0,)), SiteEdit("hidden", 4, (0,))]):
            pass
    assert hooks() == before
    with pytest.raises(ConfigError, match="out of range"):
        with intervening(model, [SiteEdit("hidden", 1, (999,))]):
            _run(model, enc)
    assert hooks() == before
    with pytest.raises(ValueError):
        SiteEdit("mlp", 0, (1,))
    with pytest.raises(ValueError):
        SiteEdit("hidden", 1, (1, 2), (0.0,))


def test_edits_for_units_maps_ids_to_tensors() -> None:
    layout = UnitLayout(("hidden", "mlp"), (("hidden", 1, 4), ("hidden", 2, 4), ("mlp", 1, 8)))
    assert edits_for_units(layout, [9, 1, 5, 8]) == [
        SiteEdit("hidden", 1, (1,)), SiteEdit("hidden", 2, (1,)), SiteEdit("mlp", 1, (0, 1))]
    assert edits_for_units(layout, [2, 10], {2: 0.5, 10: -1.0}) == [
        SiteEdit("hidden", 1, (2,), (0.5,)), SiteEdit("mlp", 1, (2,), (-1.0,))]
    assert edits_for_units(layout, []) == []
    with pytest.raises(ConfigError, match="unit id 16 does not exist"):
        edits_for_units(layout, [3, 16])
    with pytest.raises(ConfigError, match="no value for unit 3"):
        edits_for_units(layout, [3], {})
