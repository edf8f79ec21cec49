"""The output view against a brute force: the head modules run on each nudged vector, one unit at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from miner.errors import ConfigError
from miner.intervene.logits import UNIT_LOGITS_SCHEMA, OutputUnit, unit_logits
from miner.model.layout import down_projection, transformer_blocks
from miner.model.loading import bundled_minilm
from tests.support.builders import byte_bpe_tokenizer

TOP_K = 5
FFN = {"gpt2": 128, "llama": 96, "bert": 128}  # FFN widths of the models below


def _tokenizer(folder: Path, arch: str) -> object:
    from transformers import AutoTokenizer

    if arch == "bert":
        return AutoTokenizer.from_pretrained(bundled_minilm())
    byte_bpe_tokenizer(folder, bos=arch == "llama")
    return AutoTokenizer.from_pretrained(folder)


def _head_model(arch: str, vocab: int) -> nn.Module:
    """A tiny seeded model WITH its LM head, built from config."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig, GPT2Config, LlamaConfig

    torch.manual_seed(3)
    if arch == "gpt2":
        return AutoModelForCausalLM.from_config(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4,
                                                           n_positions=64)).eval()
    if arch == "llama":
        return AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                                            num_attention_heads=4, num_key_value_heads=2,
                                                            intermediate_size=96, max_position_embeddings=64)).eval()
    return AutoModelForMaskedLM.from_config(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, intermediate_size=128,
                                                       max_position_embeddings=64)).eval()


def _brute_head(model: nn.Module, arch: str, x: torch.Tensor, last_hidden: bool) -> torch.Tensor:
    """The model's own head modules, named by hand per family, on one vector."""
    if arch == "bert":
        return model.cls(x)
    norm = model.transformer.ln_f if arch == "gpt2" else model.model.norm
    return model.lm_head(x if last_hidden else norm(x))


def _brute_force(model: nn.Module, arch: str, unit: OutputUnit, k: int) -> tuple[list[int], list[float], list[int],
                                                                                 list[float]]:
    """delta_logits of one unit: the nudged vector (for mlp units: the down-projection run on a scaled one-hot
    activation, minus its bias) through the head, minus the head of zero; then a full sort."""
    hidden = model.config.hidden_size
    with torch.no_grad():
        if unit.site == "hidden":
            vec = torch.zeros(1, hidden)
            vec[0, unit.idx] = unit.scale
        else:
            proj = down_projection(transformer_blocks(model.base_model)[unit.layer - 1])
            act = torch.zeros(1, FFN[arch])
            act[0, unit.idx] = unit.scale
            vec = proj(act) - proj(torch.zeros_like(act))
        last = arch != "bert" and unit.site == "hidden" and unit.layer == model.config.num_hidden_layers
        delta = (_brute_head(model, arch, vec, last) - _brute_head(model, arch, torch.zeros(1, hidden), last))[0]
    order = sorted(range(delta.numel()), key=lambda t: -float(delta[t]))
    top, bottom = order[:k], order[::-1][:k]
    return top, [float(delta[t]) for t in top], bottom, [float(delta[t]) for t in bottom]


def _units(model: nn.Module, arch: str) -> list[OutputUnit]:
    units, uid = [], 0
    for layer in range(model.config.num_hidden_layers + 1):
        for idx in (0, 5, 31):
            units.append(OutputUnit(uid, "hidden", layer, idx, scale=1.0 if idx else 2.5))
            uid += 1
    for layer in (1, 2):
        for idx in (0, 17, FFN[arch] - 1):
            units.append(OutputUnit(uid, "mlp", layer, idx, scale=0.7 if idx else 3.0))
            uid += 1
    return units


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_unit_logits_match_brute_force(tmp_path: Path, arch: str, device: str) -> None:
    tok = _tokenizer(tmp_path, arch)
    model = _head_model(arch, 400 if arch != "bert" else tok.vocab_size)
    units = _units(model, arch)
    table = unit_logits(model.to(device), tok, units, top_k=TOP_K, batch_size=4)
    model.to("cpu")  # the brute force runs on the CPU
    assert table.schema == UNIT_LOGITS_SCHEMA
    assert table.num_rows == len(units) * 2 * TOP_K
    rows = table.to_pylist()
    for n, unit in enumerate(units):
        top, top_v, bottom, bottom_v = _brute_force(model, arch, unit, TOP_K)
        mine = rows[n * 2 * TOP_K:(n + 1) * 2 * TOP_K]
        assert {r["unit_id"] for r in mine} == {unit.unit_id}
        assert [r["direction"] for r in mine] == ["positive"] * TOP_K + ["negative"] * TOP_K
        assert [r["rank"] for r in mine] == list(range(1, TOP_K + 1)) * 2
        assert [r["token_id"] for r in mine] == top + bottom, unit
        assert [r["logit"] for r in mine] == pytest.approx(top_v + bottom_v, rel=1e-4, abs=1e-5)
        size = len(tok)
        assert [r["token"] for r in mine] == [tok.decode([t]) if t < size else None for t in top + bottom]


def test_mlp_direction_orientation_differs_between_conv1d_and_linear(tmp_path: Path) -> None:
    """Row j of the write matrix is what the down-projection adds for activation j = 1 (Conv1D and nn.Linear)."""
    from miner.intervene.logits import write_matrix

    for arch in ("gpt2", "llama", "bert"):
        model = _head_model(arch, 400)
        block = transformer_blocks(model.base_model)[0]
        w = write_matrix(block)
        assert w.shape == (FFN[arch], model.config.hidden_size)
        proj = down_projection(block)
        with torch.no_grad():
            one_hot = torch.zeros(1, w.shape[0])
            one_hot[0, 7] = 1.0
            assert torch.allclose(proj(one_hot) - proj(torch.zeros_like(one_hot)), w[7:8], atol=1e-6)


def test_scale_matters_for_bert_but_not_for_normed_decoders(tmp_path: Path) -> None:
    # LayerNorm of a direction is scale-invariant once its variance dwarfs eps (1e-5): a random column at scale 1
    # is not far enough above it, so compare 10 and 100.
    tok = _tokenizer(tmp_path, "gpt2")
    gpt2 = _head_model("gpt2", 400)
    small = unit_logits(gpt2, tok, [OutputUnit(0, "mlp", 1, 3, scale=10.0)], top_k=3)
    big = unit_logits(gpt2, tok, [OutputUnit(0, "mlp", 1, 3, scale=100.0)], top_k=3)
    assert small.column("token_id").to_pylist() == big.column("token_id").to_pylist()
    assert small.column("logit").to_pylist() == pytest.approx(big.column("logit").to_pylist(), rel=1e-3)
    bert_tok = _tokenizer(tmp_path, "bert")
    bert = _head_model("bert", bert_tok.vocab_size)
    a = unit_logits(bert, bert_tok, [OutputUnit(0, "hidden", 1, 3, scale=1.0)], top_k=3)
    b = unit_logits(bert, bert_tok, [OutputUnit(0, "hidden", 1, 3, scale=8.0)], top_k=3)
    assert a.column("logit").to_pylist() != pytest.approx(b.column("logit").to_pylist(), rel=1e-3)


def test_bad_input_is_one_config_error(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    tok = _tokenizer(tmp_path, "gpt2")
    model = _head_model("gpt2", 400)
    with pytest.raises(ConfigError, match="no language-model head"):
        unit_logits(GPT2Model(GPT2Config(vocab_size=400, n_embd=32, n_layer=1, n_head=4)), tok,
                    [OutputUnit(0, "hidden", 1, 0)])
    with pytest.raises(ConfigError, match=r"unit 9: \(mlp, layer 0"):
        unit_logits(model, tok, [OutputUnit(9, "mlp", 0, 0)])
    with pytest.raises(ConfigError, match=r"unit 4: \(hidden, layer 1, idx 32\)"):
        unit_logits(model, tok, [OutputUnit(4, "hidden", 1, 32)])
    with pytest.raises(ConfigError, match="unit 2: output-view scale nan"):
        unit_logits(model, tok, [OutputUnit(2, "hidden", 1, 0, scale=float("nan"))])
    with pytest.raises(ConfigError, match="top_k"):
        unit_logits(model, tok, [OutputUnit(2, "hidden", 1, 0)], top_k=0)
