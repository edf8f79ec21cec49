"""Real fastText: training on a few thousand real sentences, loading, bad model paths, the vector stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import VectorOptions
from miner.errors import InputError
from miner.signatures.fasttext import ensure_fasttext, load_fasttext, sample_corpus_texts
from miner.signatures.vectors import compute_vector_tables, sentence_vectors, vectors_from_table, write_vector_tables

pytestmark = pytest.mark.integration


def test_training_is_fast_and_gives_finite_vectors(tiny_fasttext: Path) -> None:
    info = json.loads(Path(str(tiny_fasttext) + ".json").read_text())
    assert info["sentences"] >= 2000
    assert info["seconds"] < 15
    model = load_fasttext(tiny_fasttext)
    assert model.get_dimension() == 100
    vecs = sentence_vectors(model, ["The president spoke to the nation.", "lol im so happy", "!!!"])
    assert vecs.shape == (3, 100) and vecs.dtype == np.float32
    assert np.isfinite(vecs).all()
    assert np.abs(vecs[:2]).sum(axis=1).min() > 0 and not vecs[2].any()  # no word tokens -> zero vector


def test_sample_is_capped_and_deterministic(tiny_corpus: Path, tmp_path: Path) -> None:
    a = sample_corpus_texts(tiny_corpus, 500, seed=3)
    assert len(a) == 500 and a == sample_corpus_texts(tiny_corpus, 500, seed=3)
    assert a != sample_corpus_texts(tiny_corpus, 500, seed=4)


@pytest.mark.parametrize("content", [b"hello, I am not a model\n", b"", bytes(range(256)) * 4])
def test_a_file_that_is_not_a_model_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "vectors.bin"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=str(bad)) as info:
        load_fasttext(bad)
    assert "\n" not in str(info.value)


def test_a_missing_model_or_folder_is_one_clear_error(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.bin", tmp_path):
        with pytest.raises(InputError, match=str(path)):
            load_fasttext(path)


def test_a_truncated_model_is_an_error(tiny_fasttext: Path, tmp_path: Path) -> None:
    data = tiny_fasttext.read_bytes()
    for size in (1000, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut-{size}.bin"
        cut.write_bytes(data[:size])
        with pytest.raises(InputError, match=str(cut)):
            load_fasttext(cut)


def test_vector_stage_on_a_run(tiny_run: Path, tiny_fasttext: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    options = VectorOptions(model=tiny_fasttext)
    assert ensure_fasttext(Path("/nonexistent"), run / "fasttext.bin", options) == tiny_fasttext
    tables = compute_vector_tables(run, options)
    write_vector_tables(run, tables)
    top = pq.read_table(run / "top_sentences.parquet")
    sentences = pq.read_table(run / "sentences.parquet")
    ids, vecs = vectors_from_table(pq.read_table(run / "sentence_vectors.parquet"))
    assert sorted(ids.tolist()) == sorted(sentences["sentence_id"].to_pylist())
    assert vecs.shape == (len(ids), 100) and np.isfinite(vecs).all()
    units = pq.read_table(run / "unit_vectors.parquet")
    assert units.num_rows == len(set(zip(top["unit_id"].to_pylist(), top["direction"].to_pylist())))
    typical = tables.typical.to_pylist()
    queue = {(u, d, s) for u, d, s in zip(top["unit_id"].to_pylist(), top["direction"].to_pylist(),
                                         top["sentence_id"].to_pylist())}
    assert all((t["unit_id"], t["direction"], t["typical_sentence_id"]) in queue for t in typical)


def test_a_diverged_training_is_retried_at_half_the_learning_rate(tiny_corpus: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """fastText's "Encountered NaN" on one thread (a small corpus, seen on CI) is retried at lr / 2, at most
    LR_HALVINGS times; the sidecar records the learning rate that trained the model. The real trainer runs;
    its first call is made to fail, as the divergence did (on CI's machine the real one at lr / 2 diverged too
    once: then the next halving trains it)."""
    import fasttext

    from miner.signatures.fasttext import LR_HALVINGS, train_fasttext

    real = fasttext.train_unsupervised
    calls: list[float] = []

    def diverge_once(*args, **kwargs):
        calls.append(kwargs["lr"])
        if len(calls) == 1:
            raise RuntimeError("Encountered NaN.")
        return real(*args, **kwargs)

    monkeypatch.setattr(fasttext, "train_unsupervised", diverge_once)
    options = VectorOptions(thread=1, epoch=1)
    out = train_fasttext(tiny_corpus, tmp_path / "model.bin", options)
    assert 2 <= len(calls) <= LR_HALVINGS + 1
    assert calls == [options.lr / 2**k for k in range(len(calls))]
    assert json.loads(Path(str(out) + ".json").read_text())["lr"] == calls[-1]

    def always(*args, **kwargs):
        calls.append(kwargs["lr"])
        raise RuntimeError("Encountered NaN.")

    calls.clear()
    monkeypatch.setattr(fasttext, "train_unsupervised", always)
    with pytest.raises(InputError, match="NaN"):
        train_fasttext(tiny_corpus, tmp_path / "again.bin", options)
    assert calls == [options.lr / 2**k for k in range(LR_HALVINGS + 1)]


def test_fasttext_trains_once_per_corpus_and_options(tiny_corpus: Path, tmp_path: Path) -> None:
    """Two runs of one corpus share the cached model: the second links it instead of training; other options
    train another one; a damaged cache entry is trained again."""
    from miner.corpus.prepare import load_corpus
    from miner.signatures.fasttext import cache_key, ensure_fasttext

    options = VectorOptions(max_sentences=3000, cache_dir=tmp_path / "cache", epoch=1)
    fingerprint = load_corpus(tiny_corpus).fingerprint
    cached = tmp_path / "cache" / cache_key(fingerprint, options, frozenset()) / "model.bin"
    first = ensure_fasttext(tiny_corpus, tmp_path / "a" / "fasttext.bin", options)
    trained = cached.stat().st_mtime_ns
    (tmp_path / "b").mkdir()
    second = ensure_fasttext(tiny_corpus, tmp_path / "b" / "fasttext.bin", options)
    assert cached.stat().st_mtime_ns == trained  # not trained again
    assert first.read_bytes() == second.read_bytes() == cached.read_bytes()
    assert json.loads(Path(str(second) + ".json").read_text()) == json.loads(Path(str(cached) + ".json").read_text())
    other = options.model_copy(update={"dim": 20})
    third = ensure_fasttext(tiny_corpus, tmp_path / "c.bin", other)
    assert cache_key(fingerprint, other, frozenset()) != cached.parent.name and third.read_bytes() != cached.read_bytes()
    Path(str(cached) + ".json").write_text("{damaged")
    ensure_fasttext(tiny_corpus, tmp_path / "d.bin", options)
    assert cached.stat().st_mtime_ns != trained and json.loads(Path(str(cached) + ".json").read_text())["options"]
