"""A concept's examples: words cut off by truncation are never sampled (the caps fill from words that keep their
tokens), and repeated sentences share one split."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from miner.config import ConceptSpec, ProbingOptions
from miner.model.loading import bundled_minilm
from miner.probing.concepts import build_examples
from miner.probing.examples import DEV, TEST, TRAIN

TAGS = ["NN", "VB", "JJ", "RB", "DT", "IN", "CC", "PRP"]


def _file(path: Path, n: int, seed: int = 0, repeat: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = rng.randint(1, 60)
        lines.append(" ".join(f"w{rng.randint(0, 500)}/{rng.choice(TAGS)}" for _ in range(k)))
    lines += [lines[0]] * repeat
    path.write_text("\n".join(lines) + "\n")
    return path


def _examples(path: Path, max_length: int, **options: object):
    from transformers import AutoTokenizer

    spec = ConceptSpec(name="t", kind="file", path=path, format="word_tag")
    opts = ProbingOptions.model_validate({"concepts": [spec], "max_per_class": 50, "min_per_class": 10, **options})
    tok = AutoTokenizer.from_pretrained(bundled_minilm())
    return build_examples(spec, opts, path.parent, tok, max_length, None)


def test_truncated_words_are_not_sampled(tmp_path: Path) -> None:
    ex = _examples(_file(tmp_path / "t.txt", 3000), max_length=32)
    assert sorted(ex.classes) == sorted(TAGS)
    for c in range(len(ex.classes)):  # every class fills its caps although long sentences lose their tails
        counts = [int(((ex.labels == c) & (ex.splits == s)).sum()) for s in (TRAIN, DEV, TEST)]
        assert counts == [50, 7, 7], (ex.classes[c], counts)
    assert all(s >= 0 and e <= 31 for p in ex.pieces for s, e in p)  # inside the 32 tokens, before [SEP]
    assert ex.truncated_words > 0


def test_repeated_sentences_share_a_split(tmp_path: Path) -> None:
    ex = _examples(_file(tmp_path / "r.txt", 400, repeat=30), max_length=128, max_per_class=1000)
    first = [i for i, t in enumerate(ex.texts) if t == ex.texts[ex.row_sentence[0]]]
    assert len(first) > 1
    splits = {int(ex.splits[r]) for r in np.flatnonzero(np.isin(ex.row_sentence, first))}
    assert len(splits) == 1
