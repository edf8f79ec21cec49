"""Vectorised batches equal a per-sentence loop (their brute-force twin); token budgets are kept and filled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from miner.mining.batches import Batch, allow_tokenizer_threads, batch_bounds, make_batches, tokenize_sentences
from tests.support.builders import SENTENCES, tiny_model


def loop_batches(tokenizer, ids: np.ndarray, texts: list[str], max_length: int,
                 bounds: list[tuple[int, int]]) -> list[Batch]:
    """Batches filled sentence by sentence (the loop `make_batches` replaced), for the given bounds."""
    input_ids, special, _ = tokenize_sentences(tokenizer, texts, max_length)
    lengths = np.array([len(r) for r in input_ids], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for a, b in bounds:
        rows = order[a:b]
        t = int(lengths[rows].max())
        arr = np.full((len(rows), t), pad, dtype=np.int64)
        att = np.zeros((len(rows), t), dtype=np.int64)
        real = np.zeros((len(rows), t), dtype=bool)
        for k, i in enumerate(rows):
            n = len(input_ids[i])
            arr[k, :n] = input_ids[i]
            att[k, :n] = 1
            real[k, :n] = np.asarray(special[i], dtype=bool) == 0
            if not real[k].any():
                real[k, :n] = True
        out.append(Batch(torch.from_numpy(ids[rows]), torch.from_numpy(arr), torch.from_numpy(att),
                         torch.from_numpy(real), int(real.sum()), int(lengths[rows].sum())))
    return out


def loop_bounds(lengths: np.ndarray, batch_size: int, budget: int | None) -> list[tuple[int, int]]:
    """Greedy bounds row by row: a row joins the batch while the batch stays within both limits."""
    bounds, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths):
            bounds.append((start, i))
        elif i - start == batch_size or (budget is not None and (i + 1 - start) * lengths[i] > budget):
            bounds.append((start, i))
            start = i
    return bounds


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tok")
    return {arch: AutoTokenizer.from_pretrained(tiny_model(root / arch, arch)) for arch in ("bert", "gpt2", "llama")}


TEXTS = SENTENCES + ["", "ok", " ".join(SENTENCES[:4]), "a b c d e f g h i j k l m n o p q r s t u v w x y z" * 3]


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("batch_size,budget", [(3, None), (64, None), (64, 40), (5, 70), (8, 1)])
def test_vectorised_batches_equal_the_loop(tokenizers: dict, arch: str, batch_size: int, budget: int | None) -> None:
    tok = tokenizers[arch]
    texts = [t for t in TEXTS if t or arch == "bert"]  # an empty text: only special tokens (BERT), none (GPT-2)
    ids = np.arange(100, 100 + len(texts), dtype=np.int64)
    got, truncated = make_batches(tok, ids, texts, 24, batch_size, budget)
    rows, _, long_rows = tokenize_sentences(tok, texts, 24)
    lengths = np.sort([len(r) for r in rows], kind="stable")
    bounds = loop_bounds(lengths, batch_size, budget)
    assert batch_bounds(lengths, batch_size, budget) == bounds
    want = loop_batches(tok, ids, texts, 24, bounds)
    assert truncated == len(long_rows) >= 2 and len(got) == len(want)
    for g, w in zip(got, want):
        for f in ("ids", "input_ids", "attention", "real"):
            assert torch.equal(getattr(g, f), getattr(w, f)), f
            assert getattr(g, f).dtype == getattr(w, f).dtype
        assert (g.real_tokens, g.attended_tokens) == (w.real_tokens, w.attended_tokens)


def test_token_budget_is_kept_and_filled() -> None:
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(3, 120, size=2000))
    for batch_size, budget in [(64, 2048), (1024, 65536), (16, 100), (7, 3)]:
        bounds = batch_bounds(lengths, batch_size, budget)
        assert [a for a, _ in bounds[1:]] == [b for _, b in bounds[:-1]] and bounds[0][0] == 0
        assert bounds[-1][1] == len(lengths)
        for a, b in bounds:
            cells = (b - a) * int(lengths[b - 1])
            assert b - a <= batch_size and (cells <= budget or b - a == 1)
            if b < len(lengths) and b - a < batch_size:  # the next row would break the budget
                assert (b + 1 - a) * int(lengths[b]) > budget


def test_tokenizer_threads_give_the_same_tokens(tokenizers: dict) -> None:
    tok = tokenizers["bert"]
    texts = TEXTS * 50
    try:
        allow_tokenizer_threads(True)
        parallel = tokenize_sentences(tok, texts, 24)
    finally:
        allow_tokenizer_threads(False)
    assert parallel == tokenize_sentences(tok, texts, 24)
