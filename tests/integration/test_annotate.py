"""Annotation with the real spaCy tagger, the background sample, and signatures of a real tiny run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import AnnotateOptions, SignatureOptions
from miner.corpus.prepare import load_corpus
from miner.errors import InputError
from miner.signatures.aggregate import compute_signatures
from miner.signatures.annotate import (
    TOKENS_SCHEMA,
    annotate_run,
    background_ids,
    load_tagger,
    signature_inputs,
    tag_texts,
    tokens_table,
    write_annotation,
)

pytestmark = pytest.mark.integration


def test_tagger_gives_penn_treebank_tags() -> None:
    (tokens, lower, tags), (tokens2, _, tags2) = tag_texts(["The cat sat on the mat.", "She  quickly ran home"])
    assert tokens == ["The", "cat", "sat", "on", "the", "mat", "."]
    assert lower[0] == "the"
    assert tags == ["DT", "NN", "VBD", "IN", "DT", "NN", "."]
    assert tokens2 == ["She", "quickly", "ran", "home"]  # the double space is not a token
    assert tags2[:3] == ["PRP", "RB", "VBD"]
    assert load_tagger().pipe_names == ["tok2vec", "tagger"]


def test_tokens_table_rows() -> None:
    table = tokens_table(np.array([7, 3]), ["Stocks fell sharply.", "lol so very happy"])
    assert table.schema == TOKENS_SCHEMA
    assert table["sentence_id"].to_pylist() == [7, 7, 7, 7, 3, 3, 3, 3]
    assert table["position"].to_pylist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert table["pos"].to_pylist()[:3] == ["NNS", "VBD", "RB"]


def test_background_sample_is_seeded_and_bounded(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    a = background_ids(corpus, 100, seed=0)
    assert len(a) == 100 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, background_ids(corpus, 100, seed=0))
    assert not np.array_equal(a, background_ids(corpus, 100, seed=1))
    limited = background_ids(corpus, 100, seed=0, limit=300)
    assert len(limited) == 100 and limited.max() < 300
    everything = background_ids(corpus, 10**9, seed=0, limit=300)
    np.testing.assert_array_equal(everything, np.arange(300))
    # A larger sample contains the smaller one (smallest hashes first).
    assert set(a.tolist()) <= set(background_ids(corpus, 500, seed=0).tolist())


def test_annotate_run_tags_each_sentence_once(tiny_run: Path, tmp_path: Path) -> None:
    options = AnnotateOptions(background_size=200)
    ann = annotate_run(tiny_run, options)
    queue_ids = pq.read_table(tiny_run / "sentences.parquet")["sentence_id"].to_numpy()
    bg_ids = ann.background["sentence_id"].to_numpy()
    assert len(bg_ids) == 200 and bg_ids.max() < 300  # only sentences the miner saw
    expected = np.union1d(queue_ids, bg_ids)
    assert ann.tagged == len(expected)
    tok_ids = ann.tokens["sentence_id"].to_numpy()
    np.testing.assert_array_equal(np.unique(tok_ids), expected)
    pairs = tok_ids * 10_000 + ann.tokens["position"].to_numpy()
    assert len(np.unique(pairs)) == len(pairs)  # each sentence tagged once
    assert "domain" in ann.background.column_names

    top, sentences, tokens, bg = signature_inputs(tiny_run, ann)
    np.testing.assert_array_equal(bg, bg_ids)
    out = compute_signatures(top, sentences, tokens, bg, SignatureOptions(min_support=2))
    units = pq.read_table(tiny_run / "units.parquet").num_rows
    assert out["unit_stats"].num_rows == 2 * units
    assert out["signatures"].num_rows > 0
    assert set(out["signatures"]["kind"].to_pylist()) >= {"word", "pos_pattern"}
    assert "dominant_domain" in out["unit_stats"].column_names
    sums = out["unit_metadata"].group_by(["unit_id", "direction", "field"]).aggregate([("share", "sum")])
    assert np.allclose(sums["share_sum"].to_numpy(), 1.0)

    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy)
    write_annotation(run_copy, ann)
    assert pq.read_table(run_copy / "tokens.parquet").num_rows == ann.tokens.num_rows
    assert pq.read_table(run_copy / "background.parquet").num_rows == 200
    again = compute_signatures(*signature_inputs(run_copy), SignatureOptions(min_support=2))
    assert again["signatures"].equals(out["signatures"])


def test_run_without_mining_output(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no mining output"):
        annotate_run(tmp_path)


def test_unannotated_run(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("tokens.parquet", "background.parquet"))
    with pytest.raises(InputError, match="not annotated"):
        signature_inputs(run)
