"""load_model on checkpoints with a head: the base model's weights load (prefix stripped), a checkpoint lacking
base weights is refused instead of mined with random ones, and the head is described for the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from miner.errors import ConfigError
from miner.model.loading import check_base_weights, load_model, model_head_info
from tests.support.builders import tiny_model


def classifier_folder(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny random BertForSequenceClassification saved with safetensors (weights under `bert.`)."""
    from transformers import AutoModelForSequenceClassification

    base = tiny_model(tmp_path / "base", "bert")
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2,
                                                               id2label={0: "negative", 1: "positive"},
                                                               label2id={"negative": 0, "positive": 1})
    with torch.no_grad():  # move the base weights away from the plain base folder's
        for p in model.bert.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path / "clf"
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (base / name).exists():
            (out / name).write_bytes((base / name).read_bytes())
    return out, model.eval()


def test_classifier_checkpoint_loads_its_base_weights(tmp_path: Path) -> None:
    folder, model = classifier_folder(tmp_path)
    keys = load_file(str(folder / "model.safetensors")).keys()
    assert any(k.startswith("bert.encoder.") for k in keys) and "classifier.weight" in keys
    loaded = load_model(folder, "cpu", "float32")
    assert type(loaded.model).__name__ == "BertModel"
    want = model.bert.state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        a = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
        b = model.bert(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_checkpoint_lacking_base_weights_is_refused(tmp_path: Path) -> None:
    folder, _ = classifier_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["bert.encoder.layer.0.output.dense.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"lack encoder\.layer\.0\.output\.dense\.weight"):
        load_model(folder, "cpu", "float32")


def test_missing_pooler_is_allowed() -> None:
    check_base_weights(Path("m"), ["pooler.dense.weight", "pooler.dense.bias"])
    with pytest.raises(ConfigError, match=r"embeddings\.word_embeddings\.weight and 1 more"):
        check_base_weights(Path("m"), ["pooler.dense.bias", "embeddings.word_embeddings.weight", "encoder.x"])


def test_head_info_from_config(tmp_path: Path) -> None:
    folder, _ = classifier_folder(tmp_path)
    info = model_head_info(json.loads((folder / "config.json").read_text()))
    assert info == {"architectures": ["BertForSequenceClassification"], "head": "sequence_classification",
                    "num_labels": 2, "labels": ["negative", "positive"]}
    plain = model_head_info(json.loads((tmp_path / "base" / "config.json").read_text()))
    assert plain["head"] is None and plain["num_labels"] is None


def test_compare_reports_the_mined_checkpoints_head(tmp_path: Path) -> None:
    from miner.analysis.compare import model_head

    folder, _ = classifier_folder(tmp_path)
    assert model_head({"path": str(folder)}) == {"architectures": ["BertForSequenceClassification"],
                                                 "head": "sequence_classification", "num_labels": 2,
                                                 "labels": ["negative", "positive"]}
    assert model_head({"path": str(tmp_path / "base")})["head"] is None  # type: ignore[index]
    recorded = {"path": "/gone", "architectures": ["X"], "head": "masked_lm", "num_labels": None, "labels": None}
    assert model_head(recorded) == {k: recorded[k] for k in ("architectures", "head", "num_labels", "labels")}
    assert model_head({"path": str(tmp_path / "missing")}) is None and model_head({}) is None


def test_bfloat16_on_a_cpu_without_bf16_instructions_warns_with_the_measured_cost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import torch

    from miner.model.loading import cpu_has_bf16, load_model, warn_slow_bf16

    with caplog.at_level(logging.WARNING, logger="miner.model.loading"):
        loaded = load_model(tiny_model(tmp_path / "m", "bert"), dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16  # a warning, not a failure
    warned = [r.getMessage() for r in caplog.records if "bfloat16 matrix product took" in r.getMessage()]
    assert len(warned) == (0 if cpu_has_bf16() else 1)
    assert warn_slow_bf16(torch.device("cpu"), torch.float32) is None
    ratio = warn_slow_bf16(torch.device("cpu"), torch.bfloat16)
    assert (ratio is None) == cpu_has_bf16() and (ratio is None or ratio > 0)
