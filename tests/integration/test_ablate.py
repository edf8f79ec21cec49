"""`miner ablate` on a real tiny run: tables in the catalog, the same result inline and on 1 and 2 Ray workers,
the effect of a zeroed set against a hand-run forward, mean-ablation with the run's means, and every bad ablate
section as one `miner: error:` line that leaves earlier results untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from miner.cli import main
from miner.config import load_job, resolve_job_paths
from miner.intervene.effects import cosine_rows
from miner.intervene.stage import run_ablation
from miner.mining.driver import run_mining
from miner.query.sql import query_arrow
from miner.run.folder import FILES
from tests.support.builders import make_corpus, tiny_model, write_job

pytestmark = pytest.mark.integration
ABLATE = {"sets": [{"name": "a", "units": [1, "2:3", "mlp:1:5"]}], "held_out": {"sentences": 40},
          "block_sentences": 16}


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A mined run (tiny random BERT, hidden and mlp units) over the first 150 of 240 sentences."""
    base = tmp_path_factory.mktemp("ablate")
    corpus = make_corpus(base / "corpus", n=240, shard_size=100)
    model = tiny_model(base / "model", "bert", hidden=32, layers=2)
    fields = {"name": "a", "model": str(model), "corpus": str(corpus), "output": str(base / "run"), "top_n": 5,
              "sites": ["hidden", "mlp"], "threads_per_worker": 1, "max_sentences": 150}
    run_mining(*load_job(write_job(base / "mine.yaml", **fields)), executor="inline")
    return {"base": base, "fields": fields}


def ablate_job(mined: dict, tmp: Path, name: str, **ablate: object) -> tuple[Path, Path]:
    run = tmp / name
    shutil.copytree(mined["base"] / "run", run)
    job = write_job(tmp / f"{name}.yaml", **{**mined["fields"], "output": str(run), "ablate": {**ABLATE, **ablate}})
    return job, run


def ablate(job_file: Path, executor: str = "inline", workers: int | None = None) -> dict:
    job, base = load_job(job_file)
    if workers is not None:
        job = job.model_copy(update={"workers": workers})
    job = resolve_job_paths(job, base, Path.cwd())
    assert job.output is not None
    return run_ablation(job.output, job, executor=executor)


@pytest.fixture(scope="module")
def reference(mined: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    job, run = ablate_job(mined, tmp_path_factory.mktemp("ref"), "ref")
    assert main(["ablate", str(job), "--executor", "inline"]) == 0
    return run


def test_tables_in_catalog_and_effect_matches_hand_forward(mined: dict, reference: Path) -> None:
    eff = query_arrow(reference, "SELECT variant, kind, units, metric, clean, ablated FROM ablation_effects "
                                 "ORDER BY variant").to_pylist()
    assert [r["variant"] for r in eff] == ["a", "a~random"]
    assert all(r["units"] == 3 and r["metric"] == "embedding_cosine" for r in eff)
    sets = query_arrow(reference, "SELECT unit_id FROM ablation_sets WHERE variant = 'a' ORDER BY unit_id")
    assert sets.column("unit_id").to_pylist() == [1, 32 + 3, 64 + 5]  # hidden:1:1, hidden:2:3, mlp:1:5
    # brute-force twin: the held-out sentences (after the 150 mined) one at a time, weights edited by hand
    from transformers import AutoModel, AutoTokenizer

    from miner.corpus.store import read_rows
    from miner.run.folder import run_corpus

    _, corpus_dir, corpus = run_corpus(reference)
    texts = read_rows(corpus_dir, corpus, np.arange(150, 190)).column("text").to_pylist()
    folder = Path(mined["fields"]["model"])
    tok = AutoTokenizer.from_pretrained(folder)
    clean_m = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    edit_m = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        ln1, ln2 = edit_m.encoder.layer[0].output.LayerNorm, edit_m.encoder.layer[1].output.LayerNorm
        ln1.weight[1] = ln1.bias[1] = 0.0
        ln2.weight[3] = ln2.bias[3] = 0.0
        edit_m.encoder.layer[0].output.dense.weight[:, 5] = 0.0

    def embed(m, text):
        enc = tok(text, return_tensors="pt", truncation=True, max_length=64)
        with torch.no_grad():
            return m(**enc).last_hidden_state[0].mean(0).numpy()

    cos = cosine_rows(np.stack([embed(clean_m, t) for t in texts]), np.stack([embed(edit_m, t) for t in texts]))
    assert eff[0]["ablated"] == pytest.approx(float(cos.mean()), abs=1e-4)
    assert eff[0]["ablated"] < 0.999


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_one_and_two_ray_workers_equal_inline(mined: dict, reference: Path, tmp_path: Path, ray_local) -> None:
    for workers in (1, 2):
        job, run = ablate_job(mined, tmp_path, f"ray{workers}")
        ablate(job, "ray", workers=workers)
        for table in (FILES.ablation_sets, FILES.ablation_effects):
            assert pq.read_table(run / table).equals(pq.read_table(reference / table)), (workers, table)


def test_mean_ablation_uses_the_runs_means(mined: dict, tmp_path: Path) -> None:
    """Mean-ablating units to their unit_moments mean equals clamping each to that value."""
    job, run = ablate_job(mined, tmp_path, "mean", mode="mean", sets=[{"name": "m", "units": [2, 70]}])
    ablate(job)
    moments = pq.read_table(run / FILES.unit_moments).to_pandas().set_index("unit_id")["mean"]
    from miner.intervene.stage import unit_values

    loaded, _ = load_job(job)
    assert loaded.ablate is not None
    values = unit_values(run, loaded.ablate, np.array([2, 70]))
    assert values == {2: pytest.approx(float(moments[2])), 70: pytest.approx(float(moments[70]))}
    mean_eff = pq.read_table(run / FILES.ablation_effects).to_pylist()[0]["ablated"]
    job2, run2 = ablate_job(mined, tmp_path, "zero", sets=[{"name": "m", "units": [2, 70]}])
    ablate(job2)
    zero_eff = pq.read_table(run2 / FILES.ablation_effects).to_pylist()[0]["ablated"]
    assert mean_eff != zero_eff


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("miner: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("ablate_section", "needle"), [
    ({"sets": [{"name": "x", "units": [99999]}]}, "unit id 99999 does not exist"),
    ({"sets": [{"name": "x", "units": ["5:1"]}]}, "hidden layer 5 was not mined"),
    ({"sets": [{"name": "x", "sql": "SELECT unit_id FROM units WHERE unit_id < 0"}]}, "selects no units"),
    ({"mode": "clamp", "value": float("inf")}, "not a finite number"),
    ({"task": "classification"}, "has no sequence-classification head"),
    ({"sets": [{"name": "x", "ranking": {"probe_id": "pos:all", "count": 3}}]}, "no neuron rankings"),
])
def test_bad_ablate_sections_are_one_line_and_leave_results_untouched(
        mined: dict, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], ablate_section: dict,
        needle: str) -> None:
    run = tmp_path / "bad-run"
    shutil.copytree(reference, run)
    # (catalog.duckdb is left out: the SQL sandbox rebuilds a stale catalog of the copied folder, atomically)
    state = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "catalog.duckdb"}
    job = write_job(tmp_path / "bad.yaml", **{**mined["fields"], "output": str(run),
                                              "ablate": {**ABLATE, **ablate_section}})
    assert main(["ablate", str(job), "--executor", "inline"]) != 0
    assert needle in _error_line(capsys)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "catalog.duckdb"} == state


# --- heads: a classification checkpoint and a decoder with its LM head; the curve; steering; the output view ---

def _ranking(run: Path, n_units: int, probe_id: str = "sentiment:all") -> np.ndarray:
    """Write a seeded neuron ranking of every unit (table neuron_rankings, as the probing stage writes it)."""
    import pyarrow as pa

    order = np.random.default_rng(3).permutation(n_units)
    pq.write_table(pa.table({
        "probe_id": pa.array([probe_id] * n_units), "method": pa.array(["lca"] * n_units),
        "class": pa.array([None] * n_units, pa.string()), "unit_id": pa.array(order, pa.int32()),
        "rank": pa.array(np.arange(1, n_units + 1), pa.int32()), "score": pa.array(np.arange(n_units), pa.float64())}),
        run / FILES.neuron_rankings)
    return order


def _top_means(run: Path) -> dict[int, float]:
    rows = query_arrow(run, "SELECT unit_id, avg(score) AS m FROM top_sentences WHERE direction = 'top' "
                            "GROUP BY unit_id").to_pylist()
    return {r["unit_id"]: float(r["m"]) for r in rows}


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A mined tiny random BertForSequenceClassification (negative/positive) with a hand-written ranking."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from miner.model.loading import bundled_minilm

    base = tmp_path_factory.mktemp("cls")
    corpus = make_corpus(base / "corpus", n=240, shard_size=100)
    folder = base / "model"
    AutoTokenizer.from_pretrained(bundled_minilm()).save_pretrained(folder)
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, num_labels=2,
                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(cfg).save_pretrained(folder)
    fields = {"name": "c", "model": str(folder), "corpus": str(corpus), "output": str(base / "run"), "top_n": 5,
              "sites": ["hidden", "mlp"], "threads_per_worker": 1, "max_sentences": 150, "max_length": 64}
    run_mining(*load_job(write_job(base / "mine.yaml", **fields)), executor="inline")
    order = _ranking(base / "run", 32 * 2 + 128 * 2)  # hidden 1-2, mlp 1-2
    return {"base": base, "fields": fields, "order": order, "model": folder}


CLS_ABLATE = {
    "sets": [{"name": "hand", "units": ["1:2", "2:5", "mlp:1:7"]},
             {"name": "rank", "ranking": {"probe_id": "sentiment:all", "percent": 5}}],
    "held_out": {"label_field": "sentiment"}, "curve": {"probe_id": "sentiment:all", "counts": [2, 8, 32]},
    "steering": [{"set": "hand", "multiple": 20.0}], "output_view_top_k": 3, "block_sentences": 32}


@pytest.fixture(scope="module")
def classified(classifier_run: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cls-ablate")
    run = tmp / "run"
    shutil.copytree(classifier_run["base"] / "run", run)
    job = write_job(tmp / "job.yaml", **{**classifier_run["fields"], "output": str(run), "ablate": CLS_ABLATE})
    assert main(["ablate", str(job), "--executor", "inline"]) == 0
    return job, run


def _test_split(run: Path) -> tuple[list[str], np.ndarray]:
    from miner.corpus.store import read_rows
    from miner.probing.examples import TEST, sentence_splits, text_keys
    from miner.run.folder import run_corpus

    _, corpus_dir, corpus = run_corpus(run)
    rows = read_rows(corpus_dir, corpus, np.arange(240)).to_pylist()
    rows = [r for r in rows if r["sentiment"] is not None]
    split = sentence_splits(text_keys([r["text"].lower() for r in rows]), 0, 0.1, 0.2)
    keep = [r for r, s in zip(rows, split) if s == TEST]
    return [r["text"] for r in keep], np.array([r["sentiment"] == "positive" for r in keep], np.int64)


def test_classifier_accuracy_and_flip_rate_match_a_hand_edited_model(classifier_run: dict,
                                                                      classified: tuple[Path, Path]) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, run = classified
    texts, labels = _test_split(run)
    eff = {(r["variant"], r["metric"]): r for r in pq.read_table(run / FILES.ablation_effects).to_pylist()}
    assert eff[("hand", "accuracy")]["sentences"] == len(texts) > 10
    folder = classifier_run["model"]
    tok = AutoTokenizer.from_pretrained(folder)
    clean_m = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    edit_m = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():  # hidden:1:2, hidden:2:5 (LayerNorm outputs), mlp:1:7 (down-projection input)
        ln1, ln2 = edit_m.bert.encoder.layer[0].output.LayerNorm, edit_m.bert.encoder.layer[1].output.LayerNorm
        ln1.weight[2] = ln1.bias[2] = 0.0
        ln2.weight[5] = ln2.bias[5] = 0.0
        edit_m.bert.encoder.layer[0].output.dense.weight[:, 7] = 0.0

    def predict(m: torch.nn.Module) -> np.ndarray:
        with torch.no_grad():
            return np.array([int(m(**tok(t, return_tensors="pt", truncation=True, max_length=64)).logits.argmax())
                             for t in texts])

    clean_p, edit_p = predict(clean_m), predict(edit_m)
    assert eff[("hand", "accuracy")]["clean"] == pytest.approx(float((clean_p == labels).mean()))
    assert eff[("hand", "accuracy")]["ablated"] == pytest.approx(float((edit_p == labels).mean()))
    assert eff[("hand", "flip_rate")]["ablated"] == pytest.approx(float((clean_p != edit_p).mean()))
    # every set is measured against as many random units (same tensors) and bottom-ranked units
    order = classifier_run["order"]
    sets = query_arrow(run, "SELECT variant, list(unit_id ORDER BY unit_id) AS u FROM ablation_sets GROUP BY variant"
                       ).to_pylist()
    units = {r["variant"]: r["u"] for r in sets}
    k = round(len(order) * 0.05)
    assert units["rank"] == sorted(order[:k].tolist())
    assert units["rank~bottom"] == sorted(order[-k:].tolist())
    assert len(units["rank~random"]) == k and not set(units["rank~random"]) & set(units["rank"])
    assert units["hand~bottom"] == sorted(order[-3:].tolist()) and len(units["hand~random"]) == 3
    # the unit page's query: a set's value next to its random and bottom controls
    row = query_arrow(run, """
        SELECT set_name, max(ablated) FILTER (kind = 'set') AS value, max(ablated) FILTER (kind = 'random') AS random,
               max(ablated) FILTER (kind = 'bottom') AS bottom
        FROM ablation_effects WHERE metric = 'accuracy' AND set_name = 'hand' GROUP BY set_name""").to_pylist()[0]
    assert row["value"] == eff[("hand", "accuracy")]["ablated"]
    assert row["random"] == eff[("hand~random", "accuracy")]["ablated"]
    assert row["bottom"] == eff[("hand~bottom", "accuracy")]["ablated"]


def test_curve_points_plots_and_overview(classifier_run: dict, classified: tuple[Path, Path]) -> None:
    _, run = classified
    order = classifier_run["order"]
    curve = query_arrow(run, "SELECT variant, kind, units FROM ablation_effects WHERE set_name = 'curve' "
                             "AND metric = 'accuracy' ORDER BY units, kind").to_pylist()
    assert [(r["units"], r["kind"]) for r in curve] == [
        (k, kind) for k in (2, 8, 32) for kind in ("curve_bottom", "curve_random", "curve_top")]
    top8 = query_arrow(run, "SELECT unit_id FROM ablation_sets WHERE variant = 'curve:top:8' ORDER BY unit_id")
    assert top8.column("unit_id").to_pylist() == sorted(order[:8].tolist())
    manifest = json.loads((run / FILES.manifest).read_text())["ablate"]
    assert sorted(manifest["plots"]) == ["plots/ablation_curve_accuracy.svg", "plots/ablation_curve_flip_rate.svg"]
    assert (run / "plots" / "ablation_curve_accuracy.svg").read_text().lstrip().startswith("<?xml")
    from miner.report.plots import ablation_plots

    shown = ablation_plots(run)
    assert [p.name for p in shown] == ["ablation_curve_accuracy", "ablation_curve_flip_rate"]
    import duckdb

    from miner.report.plots import overview_plots

    plots, _ = overview_plots(run, duckdb.connect(), set())  # the model overview's plot list
    assert [p.name for p in plots if p.source == "ablate"] == ["ablation_curve_accuracy", "ablation_curve_flip_rate"]


def test_classifier_steering_and_skipped_output_view(classifier_run: dict, classified: tuple[Path, Path]) -> None:
    from miner.intervene.hooks import SiteEdit
    from miner.intervene.steering import class_distribution
    from miner.model.heads import load_head_model

    _, run = classified
    texts, _ = _test_split(run)
    means = _top_means(run)
    loaded = load_head_model(classifier_run["model"], "classification")
    edits = [SiteEdit("hidden", 1, (2,), (20.0 * means[2],)), SiteEdit("hidden", 2, (5,), (20.0 * means[32 + 5],)),
             SiteEdit("mlp", 1, (7,), (20.0 * means[64 + 7],))]
    _, before = class_distribution(loaded.model, loaded.tokenizer, texts, [], 32, 64)
    _, after = class_distribution(loaded.model, loaded.tokenizer, texts, edits, 32, 64)
    rows = pq.read_table(run / FILES.steering_effects).to_pylist()
    assert [r["label"] for r in rows] == ["negative", "positive"]
    for r in rows:
        assert r["share_before"] == pytest.approx(float((before == r["class_id"]).mean()), abs=1e-6)
        assert r["share_after"] == pytest.approx(float((after == r["class_id"]).mean()), abs=1e-6)
    manifest = json.loads((run / FILES.manifest).read_text())["ablate"]
    assert manifest["steering_flip_share"]["hand@20"] == pytest.approx(float((before != after).mean()))
    assert manifest["output_view"].startswith("skipped: the checkpoint has no LM head")
    assert pq.read_table(run / FILES.unit_logits).num_rows == 0
    assert pq.read_table(run / FILES.steering_texts).num_rows == 0


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A mined tiny random GPT2LMHeadModel (hidden and mlp units)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tests.support.builders import byte_bpe_tokenizer

    base = tmp_path_factory.mktemp("dec")
    corpus = make_corpus(base / "corpus", n=200, shard_size=100)
    folder = base / "model"
    byte_bpe_tokenizer(folder, bos=False)
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(2)
    GPT2LMHeadModel(GPT2Config(vocab_size=400, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)).save_pretrained(folder)
    fields = {"name": "d", "model": str(folder), "corpus": str(corpus), "output": str(base / "run"), "top_n": 5,
              "sites": ["hidden", "mlp"], "threads_per_worker": 1, "max_sentences": 120, "max_length": 40}
    run_mining(*load_job(write_job(base / "mine.yaml", **fields)), executor="inline")
    return {"base": base, "fields": fields, "model": folder}


PROMPTS = ["The cat sat on", "Stocks fell sharply after"]
DEC_ABLATE = {"sets": [{"name": "s", "units": ["2:4", "mlp:2:9"]}], "held_out": {"sentences": 30},
              "steering": [{"set": "s", "multiple": 30.0, "prompts": PROMPTS, "max_new_tokens": 6}],
              "output_view_top_k": 4}


def test_decoder_loss_steering_texts_and_output_view(decoder_run: dict, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from miner.intervene.logits import OutputUnit, unit_logits

    run = tmp_path / "run"
    shutil.copytree(decoder_run["base"] / "run", run)
    job = write_job(tmp_path / "job.yaml", **{**decoder_run["fields"], "output": str(run), "ablate": DEC_ABLATE})
    assert main(["ablate", str(job), "--executor", "inline"]) == 0
    folder = decoder_run["model"]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    # next-token loss of the clean model, sentence by sentence (held out: the 30 sentences after the mined 120)
    from miner.corpus.store import read_rows
    from miner.run.folder import run_corpus

    _, corpus_dir, corpus = run_corpus(run)
    texts = read_rows(corpus_dir, corpus, np.arange(120, 150)).column("text").to_pylist()
    losses = []
    with torch.no_grad():
        for t in texts:
            ids = tok(t, return_tensors="pt", truncation=True, max_length=40)["input_ids"]
            if ids.shape[1] > 1:
                losses.append(float(model(input_ids=ids, labels=ids).loss))
    eff = pq.read_table(run / FILES.ablation_effects).to_pylist()[0]
    assert eff["metric"] == "next_token_loss" and eff["clean"] == pytest.approx(float(np.mean(losses)), rel=1e-4)
    assert eff["ablated"] != eff["clean"]
    # steering: before = the model's own greedy decoding (generate, no edits), side by side with after
    rows = pq.read_table(run / FILES.steering_texts).to_pylist()
    assert [r["prompt"] for r in rows] == PROMPTS
    for r in rows:
        ids = tok(r["prompt"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        assert r["before"] == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert r["changed"] == (r["before"] != r["after"])
    assert any(r["changed"] for r in rows)
    # the output view of the set's units, at their top-queue means
    means = _top_means(run)
    got = pq.read_table(run / FILES.unit_logits)
    want = unit_logits(model, tok, [OutputUnit(32 + 4, "hidden", 2, 4, means[36] if means[36] > 0 else 1.0),
                                    OutputUnit(64 + 128 + 9, "mlp", 2, 9, means[64 + 128 + 9]
                                               if means[64 + 128 + 9] > 0 else 1.0)], 4)
    assert got.column("unit_id").to_pylist() == want.column("unit_id").to_pylist()
    assert got.column("token_id").to_pylist() == want.column("token_id").to_pylist()
    assert got.num_rows == 2 * 2 * 4


def test_steering_prompt_longer_than_max_length_is_one_error_line(
        decoder_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(decoder_run["base"] / "run", run)
    state = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "catalog.duckdb"}
    long_prompt = " ".join(["the movie was great"] * 30)
    bad = {**DEC_ABLATE, "steering": [{"set": "s", "prompts": ["ok", long_prompt]}]}
    job = write_job(tmp_path / "job.yaml", **{**decoder_run["fields"], "output": str(run), "ablate": bad})
    assert main(["ablate", str(job), "--executor", "inline"]) != 0
    line = _error_line(capsys)
    assert "ablate.steering[0]: steering.prompts[1]:" in line and "longer than max_length 40" in line
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "catalog.duckdb"} == state
    assert not (run / FILES.ablation).exists()


PROBE = {"concepts": [{"name": "sent", "kind": "metadata", "field": "sentiment"}], "dev_share": 0.2,
         "test_share": 0.3, "epochs": 5, "l1_grid": [0.0], "l2_grid": [0.0], "per_layer": False}


def test_probe_effect_matches_a_probe_trained_and_tested_by_hand(mined: dict, tmp_path: Path) -> None:
    """A probe on hidden layer 2, its test accuracy clean and with hidden layer 1's dims 0-15 zeroed, against
    features computed by hand (mean over real tokens) and the same trainer."""
    from transformers import AutoModel, AutoTokenizer

    from miner.config import ConceptSpec, ProbingOptions
    from miner.probing.concepts import build_examples
    from miner.probing.probe import select_probe
    from miner.probing.train import probe_options

    run = tmp_path / "run"
    shutil.copytree(mined["base"] / "run", run)
    ablate_section = {**ABLATE, "sets": [{"name": "e", "units": [f"1:{i}" for i in range(16)]},
                                         {"name": "late", "units": ["2:1"]}],
                      "probe_effects": [{"concept": "sent", "site": "hidden", "layer": 2}]}
    job = write_job(tmp_path / "job.yaml", **{**mined["fields"], "output": str(run), "probe": PROBE,
                                              "ablate": ablate_section})
    assert main(["ablate", str(job), "--executor", "inline"]) == 0
    rows = query_arrow(run, "SELECT variant, units, units_edited, clean, ablated, sentences FROM ablation_effects "
                            "WHERE metric = 'probe:sent:hidden:2' ORDER BY variant").to_pylist()
    assert [r["variant"] for r in rows] == ["e", "e~random"]  # 'late' has no unit before layer 2
    assert rows[0]["units_edited"] == 16
    assert rows[0]["ablated"] != rows[0]["clean"]  # zeroing half of layer 1 moves the layer-2 probe
    folder = Path(mined["fields"]["model"])
    tok = AutoTokenizer.from_pretrained(folder)
    options = ProbingOptions(**PROBE)
    ex = build_examples(ConceptSpec(name="sent", kind="metadata", field="sentiment"), options, run, tok, 64, 150)
    clean_m = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    edit_m = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        ln = edit_m.encoder.layer[0].output.LayerNorm
        ln.weight[:16] = 0.0
        ln.bias[:16] = 0.0

    def feats(m: torch.nn.Module, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=64, return_special_tokens_mask=True)
            real = enc.pop("special_tokens_mask")[0] == 0
            with torch.no_grad():
                out.append(m(**enc, output_hidden_states=True).hidden_states[2][0][real].mean(0).numpy())
        return np.stack(out)

    x = feats(clean_m, ex.texts)[ex.row_sentence]
    tr, dv, te = ex.splits == 0, ex.splits == 1, ex.splits == 2
    assert rows[0]["sentences"] == int(te.sum()) > 5
    sel = select_probe(x[tr], ex.labels[tr], x[dv], ex.labels[dv], len(ex.classes), probe_options(options, "cpu", None))
    x_edit = feats(edit_m, [ex.texts[i] for i in ex.row_sentence[te]])
    assert rows[0]["clean"] == pytest.approx(float((sel.probe.predict(x[te]) == ex.labels[te]).mean()))
    assert rows[0]["ablated"] == pytest.approx(float((sel.probe.predict(x_edit) == ex.labels[te]).mean()))


def test_probe_effect_of_an_unknown_concept_is_one_error_line(mined: dict, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(mined["base"] / "run", run)
    bad = {**ABLATE, "probe_effects": [{"concept": "pos", "layer": 2}]}
    job = write_job(tmp_path / "job.yaml", **{**mined["fields"], "output": str(run), "probe": PROBE, "ablate": bad})
    assert main(["ablate", str(job), "--executor", "inline"]) != 0
    assert "ablate.probe_effects[0].concept: 'pos' is not a concept of the probe section (sent)" in _error_line(capsys)
    assert not (run / FILES.ablation_effects).exists()


def test_ablation_tables_are_documented(classified: tuple[Path, Path]) -> None:
    """Every column of the five ablate tables (written, empty where a view does not apply) is in schemas/tables.md."""
    from miner.run.folder import ABLATE_TABLES
    from tests.integration.test_catalog import DOCS, _catalog_columns, parse_table_docs, undocumented

    _, run = classified
    columns = {t: c for t, c in _catalog_columns(run).items() if t in ABLATE_TABLES}
    assert sorted(columns) == sorted(ABLATE_TABLES)
    assert undocumented(columns, parse_table_docs(DOCS.read_text())) == []
