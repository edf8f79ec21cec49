"""Extraction of word and sentence activations equals its brute-force twin: each sentence alone through the
model, unpadded, and the words' pieces picked by hand (BERT WordPiece, GPT-2 without and Llama with a BOS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miner.mining.batches import tokenize_sentences
from miner.mining.block_miner import BlockMiner
from miner.mining.extract import ExtractRequest, extract_block
from miner.model.layout import down_projection, transformer_blocks, unit_layout
from miner.model.loading import load_model
from miner.probing.align import align_words, word_char_spans
from tests.support.builders import tiny_model

TEXTS = ["The senator promised unbelievably large tax cuts.", "Cats sat.",
         "She quickly ran to the station but missed the last train, again and again and again."]


def _words(text: str) -> list[str]:
    return text.replace(",", " ,").replace(".", " .").split()


def brute(loaded, layout, text: str, max_length: int) -> torch.Tensor:
    """[T, U] activations of every unit at every token of one sentence, computed alone (no padding)."""
    ids, _, _ = tokenize_sentences(loaded.tokenizer, [text], max_length)
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    if any(site == "mlp" for site, _, _ in layout.layers):
        blocks = transformer_blocks(loaded.model)
        for site, layer, _ in layout.layers:
            if site == "mlp":
                hooks.append(down_projection(blocks[layer - 1]).register_forward_pre_hook(
                    lambda _m, args, layer=layer: captured.__setitem__(layer, args[0])))
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor(ids), output_hidden_states=True)
    for h in hooks:
        h.remove()
    cols = [out.hidden_states[layer][0] if site == "hidden" else captured[layer][0]
            for site, layer, _ in layout.layers]
    return torch.cat(cols, dim=1).float()


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("subword", ["first", "last", "mean"])
def test_word_rows_equal_brute_force(tmp_path: Path, arch: str, subword: str) -> None:
    loaded = load_model(tiny_model(tmp_path / arch, arch))
    sites = ["hidden", "mlp"] if arch != "gpt2" else ["hidden"]
    layout = unit_layout(loaded.config, sites, None)
    max_length = 12  # the third sentence is truncated: its last words have no pieces and are not requested
    miner = BlockMiner(loaded, layout, top_n=1, max_length=max_length, batch_size=2)
    spans = [word_char_spans(t, _words(t)) for t in TEXTS]
    aligned = align_words(loaded.tokenizer, TEXTS, spans, max_length)
    pieces = [[p for p in a.pieces if p[0] >= 0] for a in aligned]
    assert any(len(p) < len(_words(t)) for p, t in zip(pieces, TEXTS)), "no word was truncated"
    assert any(e - s > 1 for p in pieces for s, e in p), "no word has several pieces"
    if arch == "llama":
        assert all(a.special[0] == 1 for a in aligned)  # the BOS token comes first
    res = extract_block(miner, ExtractRequest(0, TEXTS, pieces, False, subword))
    expected = []
    for text, ps in zip(TEXTS, pieces):
        acts = brute(loaded, layout, text, max_length)
        for s, e in ps:
            pos = {"first": [s], "last": [e - 1], "mean": list(range(s, e))}[subword]
            expected.append(acts[pos].mean(0))
    np.testing.assert_allclose(res.values, torch.stack(expected).numpy(), rtol=1e-4, atol=1e-5)
    assert res.values.shape == (sum(map(len, pieces)), layout.n_units)


def test_sentence_rows_are_mean_scores(tmp_path: Path) -> None:
    loaded = load_model(tiny_model(tmp_path / "bert", "bert"))
    layout = unit_layout(loaded.config, ["hidden", "mlp"], None)
    miner = BlockMiner(loaded, layout, top_n=1, max_length=12, batch_size=2)
    res = extract_block(miner, ExtractRequest(3, TEXTS, [[] for _ in TEXTS], True))
    assert res.block == 3
    for i, text in enumerate(TEXTS):
        ids, special, _ = tokenize_sentences(loaded.tokenizer, [text], 12)
        real = ~torch.tensor(special[0], dtype=torch.bool)
        want = brute(loaded, layout, text, 12)[real].mean(0)
        np.testing.assert_allclose(res.values[i], want.numpy(), rtol=1e-4, atol=1e-5)


def test_empty_requests(tmp_path: Path) -> None:
    loaded = load_model(tiny_model(tmp_path / "bert", "bert"))
    layout = unit_layout(loaded.config, ["hidden"], None)
    miner = BlockMiner(loaded, layout, top_n=1)
    res = extract_block(miner, ExtractRequest(0, ["No words wanted here."], [[]], False))
    assert res.values.shape == (0, layout.n_units)
