"""examples/finetune_sentiment.py on a tiny corpus: the folder it saves reloads with the same predictions, keeps
the project's split by text, and the miner mines its base model's units (checked against a manual forward of the
fine-tuned BertForSequenceClassification's `.bert`); bad input is one `miner: error:` line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from miner.corpus.prepare import load_corpus
from miner.corpus.store import read_rows
from miner.model.loading import bundled_minilm
from miner.probing.examples import TEST, sentence_splits, text_keys
from tests.support.builders import make_corpus

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--max-train", "60", "--max-dev", "10", "--max-test", "40", "--max-length", "32", "--batch-size", "16",
         "--epochs", "1", "--threads", "2"]


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finetune_sentiment", REPO / "examples" / "finetune_sentiment.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("ft-corpus"), n=200, shard_size=80)


@pytest.fixture(scope="module")
def finetuned(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ft") / "model"
    assert script().main(["--corpus", str(corpus), "--out", str(out), *SMALL]) == 0
    return out, json.loads((out / "miner_finetune.json").read_text())


def test_folder_reloads_with_the_saved_predictions(corpus: Path, finetuned: tuple[Path, dict]) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, record = finetuned
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"] == {"negative": 0,
                                                                                             "positive": 1}
    assert record["train_size"] == 60 and record["test_size"] == len(record["test_sentence_ids"]) > 0
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    rows = read_rows(corpus, load_corpus(corpus), np.array(record["test_sentence_ids"], np.int64))
    texts = [str(t) for t in rows["text"].to_pylist()]
    with torch.no_grad():
        enc = tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1).numpy()
    assert pred.tolist() == record["test_predictions"]
    gold = np.array([["negative", "positive"].index(v) for v in rows["sentiment"].to_pylist()])
    assert record["test_accuracy"] == pytest.approx(float((pred == gold).mean()))


def test_seeded_run_is_reproducible(corpus: Path, finetuned: tuple[Path, dict], tmp_path: Path) -> None:
    out, record = finetuned
    again = tmp_path / "again"
    assert script().main(["--corpus", str(corpus), "--out", str(again), *SMALL]) == 0
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    second = json.loads((again / "miner_finetune.json").read_text())
    assert second["test_predictions"] == record["test_predictions"] and second["history"] == record["history"]


def test_test_split_is_the_projects_split_by_text(corpus: Path, finetuned: tuple[Path, dict]) -> None:
    _, record = finetuned
    table = pq.read_table(corpus / load_corpus(corpus).shards[0].file).to_pylist()
    for shard in load_corpus(corpus).shards[1:]:
        table += pq.read_table(corpus / shard.file).to_pylist()
    split = sentence_splits(text_keys([r["text"].lower() for r in table]), 0, 0.1, 0.2)
    test_ids = {r["sentence_id"] for r, s in zip(table, split) if s == TEST}
    assert set(record["test_sentence_ids"]) <= test_ids
    assert len(record["test_sentence_ids"]) == min(40, len(test_ids))
    assert record["split"]["seed"] == 0 and record["split"]["test_share"] == 0.2


def test_miner_mines_the_finetuned_base_units(corpus: Path, finetuned: tuple[Path, dict], tmp_path: Path) -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from miner.config import JobSpec
    from miner.mining.driver import run_mining

    out, _ = finetuned
    job = JobSpec(name="ft", model=str(out), corpus=corpus, output=tmp_path / "run", top_n=3, max_sentences=40,
                  block_size=20, batch_size=8, threads_per_worker=2)
    run = Path(run_mining(job, tmp_path, executor="inline")["run_dir"])
    top = pq.read_table(run / "top_sentences.parquet").to_pandas()
    units = pq.read_table(run / "units.parquet").to_pandas().set_index("unit_id")
    tokenizer = AutoTokenizer.from_pretrained(out)
    finetuned_bert = AutoModelForSequenceClassification.from_pretrained(out).bert.eval()
    pretrained = AutoModel.from_pretrained(bundled_minilm()).eval()
    rows = read_rows(corpus, load_corpus(corpus), np.unique(top.sentence_id.to_numpy()))
    text_of = dict(zip(rows["sentence_id"].to_pylist(), rows["text"].to_pylist()))

    def score(model: torch.nn.Module, text: str, layer: int, idx: int) -> float:
        enc = tokenizer(text, truncation=True, max_length=job.max_length, return_tensors="pt",
                        return_special_tokens_mask=True)
        real = enc.pop("special_tokens_mask")[0] == 0
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True).hidden_states[layer][0]
        return float(hidden[real, idx].mean())

    sample = top[top.unit_id.isin(units[units.layer >= 1].index[::97])]
    assert len(sample) > 40
    got, want, base = [], [], []
    for r in sample.itertuples():
        layer, idx = int(units.loc[r.unit_id, "layer"]), int(units.loc[r.unit_id, "idx"])
        got.append(r.score)
        want.append(score(finetuned_bert, text_of[r.sentence_id], layer, idx))
        base.append(score(pretrained, text_of[r.sentence_id], layer, idx))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(np.array(got) - np.array(base)).max() > 1e-3  # the fine-tuned weights, not the pre-trained ones


def test_bad_input_is_one_error_line_and_nothing_written(corpus: Path, finetuned: tuple[Path, dict], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = finetuned
    before = (out / "model.safetensors").read_bytes()
    module = script()
    cases = [(["--corpus", str(corpus), "--out", str(out), *SMALL], "pass --force to replace"),
             (["--corpus", str(corpus), "--out", str(corpus / "m"), *SMALL], "inside the corpus folder"),
             (["--corpus", str(corpus), "--out", str(tmp_path / "a"), "--field", "mood", *SMALL], "'mood'"),
             (["--corpus", str(corpus), "--out", str(tmp_path / "b"), "--source", "tweets", *SMALL], "among the sources"),
             (["--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "c"), *SMALL], "no such corpus folder")]
    for argv, match in cases:
        assert module.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("miner: error:") and match in err[-1], err
    assert (out / "model.safetensors").read_bytes() == before
    assert not any((tmp_path / n).exists() for n in "abc") and not (corpus / "m").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
