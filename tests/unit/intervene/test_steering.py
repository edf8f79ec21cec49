"""Steering against brute force: model.generate / a plain forward without edits; with a clamp, a decoding loop
without KV cache (the whole sequence recomputed each step) and a hand-written hook that sets the dimensions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from miner.errors import ConfigError
from miner.intervene.hooks import SiteEdit
from miner.intervene.steering import class_distribution, greedy_continuations
from miner.model.layout import down_projection
from miner.model.loading import bundled_minilm
from tests.support.builders import SENTENCES, byte_bpe_tokenizer

PROMPTS = ["The cat sat on", "Stocks fell sharply after", "lol im so"]
NEW = 8
DIMS = tuple(range(0, 32, 3))
CLAMP = 40.0


def _decoder(arch: str, folder: Path) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

    byte_bpe_tokenizer(folder, bos=arch == "llama")
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(5)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=400, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    else:
        cfg = LlamaConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return AutoModelForCausalLM.from_config(cfg).eval(), tok


def _blocks(model: nn.Module) -> nn.ModuleList:
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


def _set_dims(x: torch.Tensor, dims: tuple[int, ...], value: float) -> torch.Tensor:
    x = x.clone()
    x[..., list(dims)] = value
    return x


def _hand_hook(model: nn.Module, site: str, layer: int) -> Callable[[], None]:
    """Register a hook of our own that sets DIMS to CLAMP: hidden layer k = output of block k, mlp layer k = input
    of block k's down-projection; returns its remover."""
    block = _blocks(model)[layer - 1]
    if site == "hidden" and layer == len(_blocks(model)):  # hidden_states[L] of a decoder: the final norm's output
        block = model.base_model.get_submodule("ln_f" if hasattr(model, "transformer") else "norm")
    if site == "hidden":
        def out_hook(_m: nn.Module, _a: tuple, out: object) -> object:
            if isinstance(out, tuple):
                return (_set_dims(out[0], DIMS, CLAMP), *out[1:])
            return _set_dims(out, DIMS, CLAMP)
        return block.register_forward_hook(out_hook).remove
    def in_hook(_m: nn.Module, args: tuple) -> tuple:
        return (_set_dims(args[0], DIMS, CLAMP), *args[1:])
    return down_projection(block).register_forward_pre_hook(in_hook).remove


def _no_cache_greedy(model: nn.Module, tok: object, prompt: str, eos: int) -> str:
    ids = tok(prompt)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(NEW):
            logits = model(input_ids=torch.tensor([ids + new]), use_cache=False).logits
            new.append(int(logits[0, -1].argmax()))
            if new[-1] == eos:
                break
    return tok.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_no_edits_is_the_models_own_greedy_output(tmp_path: Path, arch: str) -> None:
    model, tok = _decoder(arch, tmp_path)
    got = greedy_continuations(model, tok, PROMPTS, [], max_new_tokens=NEW, max_length=32)
    for prompt, text in zip(PROMPTS, got, strict=True):
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=False, max_new_tokens=NEW, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        assert text == tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert greedy_continuations(model, tok, PROMPTS, [], max_new_tokens=NEW, max_length=32) == got


@pytest.mark.parametrize(("arch", "site", "layer"), [("gpt2", "hidden", 1), ("gpt2", "mlp", 2),
                                                     ("gpt2", "hidden", 2), ("llama", "hidden", 1),
                                                     ("llama", "mlp", 1)])
def test_a_clamp_changes_the_continuation_like_a_no_cache_loop(tmp_path: Path, arch: str, site: str,
                                                                layer: int) -> None:
    model, tok = _decoder(arch, tmp_path)
    edits = [SiteEdit(site, layer, DIMS, (CLAMP,) * len(DIMS))]
    before = greedy_continuations(model, tok, PROMPTS, [], max_new_tokens=NEW, max_length=32)
    after = greedy_continuations(model, tok, PROMPTS, edits, max_new_tokens=NEW, max_length=32)
    assert after != before
    remove = _hand_hook(model, site, layer)
    try:
        brute = [_no_cache_greedy(model, tok, p, tok.eos_token_id) for p in PROMPTS]
    finally:
        remove()
    assert after == brute
    # the hooks are gone afterwards: the model is its own again
    assert greedy_continuations(model, tok, PROMPTS, [], max_new_tokens=NEW, max_length=32) == before


def test_prompt_too_long_is_one_config_error(tmp_path: Path) -> None:
    model, tok = _decoder("gpt2", tmp_path)
    n = len(tok(SENTENCES[1])["input_ids"])
    with pytest.raises(ConfigError, match=rf"^steering.prompts\[1\]: {n} tokens, longer than max_length 4$"):
        greedy_continuations(model, tok, ["a", SENTENCES[1]], [], max_new_tokens=2, max_length=4)
    with pytest.raises(ConfigError, match=r"steering.prompts\[0\]: .* run past the model's 64 positions"):
        greedy_continuations(model, tok, [SENTENCES[1]], [], max_new_tokens=60, max_length=64)


def _classifier() -> tuple[nn.Module, object]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    tok = AutoTokenizer.from_pretrained(bundled_minilm())
    torch.manual_seed(7)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, num_labels=3)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    with torch.no_grad():  # a random head (std 0.02) predicts nearly uniform classes; make it decisive
        model.classifier.weight.mul_(100.0)
    return model, tok


def _plain_probs(model: nn.Module, tok: object) -> np.ndarray:
    """One unpadded forward per sentence."""
    rows = []
    with torch.no_grad():
        for text in SENTENCES:
            logits = model(**tok(text, truncation=True, max_length=32, return_tensors="pt")).logits
            rows.append(torch.softmax(logits, dim=-1)[0].numpy())
    return np.stack(rows)


def test_class_distribution_without_edits_is_a_plain_forward() -> None:
    model, tok = _classifier()
    probs, preds = class_distribution(model, tok, SENTENCES, [], batch_size=4, max_length=32)
    assert probs.dtype == np.float32 and probs.shape == (len(SENTENCES), 3)
    expected = _plain_probs(model, tok)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(preds, expected.argmax(axis=1))


@pytest.mark.parametrize(("site", "layer"), [("hidden", 1), ("mlp", 2)])
def test_a_clamp_changes_probabilities_like_a_forward_with_the_dims_set(site: str, layer: int) -> None:
    model, tok = _classifier()
    before, _ = class_distribution(model, tok, SENTENCES, [], batch_size=4, max_length=32)
    edits = [SiteEdit(site, layer, DIMS, (CLAMP,) * len(DIMS))]
    after, preds = class_distribution(model, tok, SENTENCES, edits, batch_size=4, max_length=32)
    assert np.abs(after - before).max() > 1e-2
    remove = _hand_hook_bert(model, site, layer)
    try:
        expected = _plain_probs(model, tok)
    finally:
        remove()
    np.testing.assert_allclose(after, expected, atol=1e-5)
    np.testing.assert_array_equal(preds, expected.argmax(axis=1))
    np.testing.assert_allclose(class_distribution(model, tok, SENTENCES, [], batch_size=4, max_length=32)[0],
                               before, atol=0)


def _hand_hook_bert(model: nn.Module, site: str, layer: int) -> Callable[[], None]:
    block = model.bert.encoder.layer[layer - 1]
    if site == "hidden":
        def out_hook(_m: nn.Module, _a: tuple, out: object) -> object:
            if isinstance(out, tuple):
                return (_set_dims(out[0], DIMS, CLAMP), *out[1:])
            return _set_dims(out, DIMS, CLAMP)
        return block.register_forward_hook(out_hook).remove
    def in_hook(_m: nn.Module, args: tuple) -> tuple:
        return (_set_dims(args[0], DIMS, CLAMP), *args[1:])
    return block.output.dense.register_forward_pre_hook(in_hook).remove


@pytest.mark.parametrize(("arch", "site", "layer"), [("gpt2", "hidden", 2), ("llama", "hidden", 1), ("llama", "mlp", 2)])
def test_generated_positions_are_edited_too(tmp_path: Path, arch: str, site: str, layer: int) -> None:
    """With the KV cache each new token is its own forward pass: editing only the prompt's pass gives another
    continuation (in these cases), so the equality with the no-cache loop above is not a coincidence."""
    model, tok = _decoder(arch, tmp_path)
    edits = [SiteEdit(site, layer, DIMS, (CLAMP,) * len(DIMS))]
    after = greedy_continuations(model, tok, PROMPTS, edits, max_new_tokens=NEW, max_length=32)
    if site == "hidden":  # layer L of a decoder is hidden_states[L], the final norm's output
        module = _blocks(model)[layer - 1] if layer == 1 else model.base_model.get_submodule(
            "ln_f" if arch == "gpt2" else "norm")

        def out_hook(_m: nn.Module, _a: tuple, out: object) -> object:
            first = out[0] if isinstance(out, tuple) else out
            if first.shape[1] == 1:  # a generated token's pass: left alone
                return None
            return (_set_dims(first, DIMS, CLAMP), *out[1:]) if isinstance(out, tuple) else _set_dims(first, DIMS, CLAMP)
        handle = module.register_forward_hook(out_hook)
    else:
        def in_hook(_m: nn.Module, args: tuple) -> tuple | None:
            return None if args[0].shape[1] == 1 else (_set_dims(args[0], DIMS, CLAMP), *args[1:])
        handle = down_projection(_blocks(model)[layer - 1]).register_forward_pre_hook(in_hook)
    try:
        prompt_only = greedy_continuations(model, tok, PROMPTS, [], max_new_tokens=NEW, max_length=32)
    finally:
        handle.remove()
    assert after != prompt_only


def test_effects_table_against_loops() -> None:
    from miner.intervene.steering import STEERING_EFFECTS_SCHEMA, effects_table

    rng = np.random.default_rng(0)
    before, after = rng.dirichlet(np.ones(4), 50), rng.dirichlet(np.ones(4), 50)
    t = effects_table("up", 5.0, ["a", "b", "c"], before, after)
    assert t.schema == STEERING_EFFECTS_SCHEMA
    rows = t.to_pylist()
    pb, pa_ = before.argmax(1).tolist(), after.argmax(1).tolist()
    for c, row in enumerate(rows):
        assert row["label"] == ["a", "b", "c", "3"][c] and row["n_sentences"] == 50
        assert row["share_before"] == pytest.approx(sum(p == c for p in pb) / 50)
        assert row["share_after"] == pytest.approx(sum(p == c for p in pa_) / 50)
        assert row["prob_after"] == pytest.approx(sum(r[c] for r in after) / 50)
        assert row["flipped_in"] == sum(b != a and a == c for b, a in zip(pb, pa_, strict=True))
        assert row["flipped_out"] == sum(b != a and b == c for b, a in zip(pb, pa_, strict=True))
    assert sum(r["flipped_out"] for r in rows) == sum(b != a for b, a in zip(pb, pa_, strict=True)) > 0
