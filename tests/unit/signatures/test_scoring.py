"""Step 2's explanation scores on synthetic sentences: a unit that is a word's presence is explained and a random
unit is not; AUC matches scikit-learn; the top band and the formulas are what their definitions say."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from miner.config import ScoreOptions, SignatureOptions
from miner.explain.formulas import iou_of
from miner.explain.held_out import HeldOut, held_out_mask
from miner.signatures.aggregate import unit_signatures
from miner.signatures.features import sentence_features
from miner.signatures.scoring import auc_columns, band_size, score_units, top_band

WORDS = [f"w{i}" for i in range(20)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_columns_equal_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 4, size=(60, 5)).astype(float)  # many ties
    band = rng.random((60, 5)) < 0.2
    got = auc_columns(sim, band)
    for j in range(5):
        assert got[j] == pytest.approx(roc_auc_score(band[:, j], sim[:, j]))
    assert np.isnan(auc_columns(sim[:, :1], np.zeros((60, 1), bool))[0])


def test_top_band_takes_the_k_highest_and_breaks_ties_by_row() -> None:
    true = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert top_band(true, 2).tolist() == [[False, True], [True, True], [False, False], [True, False]]
    assert band_size(2000, 0.99) == 20 and band_size(10, 0.99) == 1 and band_size(0, 0.9) == 0


def synthetic(n: int = 600, seed: int = 0) -> tuple:
    """Sentences of 6 random words, a third also holding "cat"; unit 0 scores cat's presence, unit 1 is noise."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    cat = rng.random(n) < 0.33
    sentences, toks = [], []
    for i in ids.tolist():
        words = list(rng.choice(WORDS, size=6))
        if cat[i]:
            words.insert(int(rng.integers(0, 6)), "cat")
        toks.append(words)
        sentences.append({"sentence_id": i, "n_tokens": len(words), "domain": ["news", "web"][i % 2]})
    tokens = pa.table({
        "sentence_id": pa.array([i for i, w in enumerate(toks) for _ in w], pa.int64()),
        "position": pa.array([p for w in toks for p in range(len(w))], pa.int32()),
        "lower": [t for w in toks for t in w],
        "pos": ["NN" if t == "cat" or int(t[1:]) % 3 == 0 else "DT" for w in toks for t in w],
    })
    true = np.column_stack([cat, rng.normal(size=n)]).astype(np.float32)
    return ids, pa.Table.from_pylist(sentences), tokens, true, cat


def test_a_word_unit_is_explained_a_random_unit_is_not() -> None:
    ids, sentences, tokens, true, cat = synthetic()
    held = held_out_mask(ids, 0, 0.3)
    seen = ids[~held]
    rows = []  # each unit's top and bottom 60 among the sentences signatures may see (mining's queues, filtered)
    for unit in range(2):
        order = seen[np.argsort(-true[seen, unit], kind="stable")]
        rows += [(unit, "top", r, int(s)) for r, s in enumerate(order[:60], 1)]
        rows += [(unit, "bottom", r, int(s)) for r, s in enumerate(order[::-1][:60], 1)]
    top = pa.table({"unit_id": pa.array([r[0] for r in rows], pa.int32()), "direction": [r[1] for r in rows],
                    "rank": pa.array([r[2] for r in rows], pa.int32()), "sentence_id": [r[3] for r in rows]})
    options = SignatureOptions(max_len=2)
    features = sentence_features(top, sentences, tokens, seen, options, extra_ids=ids[held])
    tables = unit_signatures(features, top, options)
    split = HeldOut(fraction=0.3, seed=0, rows=np.arange(int(held.sum())), sentence_ids=ids[held],
                    sample_rows=int(held.sum()))
    band_share = cat[held].mean()  # unit 0's top band: exactly its held-out cat sentences
    scores_opts = ScoreOptions(held_out=0.3, top_band=1 - band_share, formula_length=2, beam=5, min_concept_count=2)
    out, record = score_units(features, tables, split, true[held], scores_opts, options)
    s = out["unit_scores"].to_pandas().set_index(["unit_id", "direction"])
    # cat's weight dominates; its patterns ("cat w3"), POS patterns and the noun share add a little noise
    assert s.loc[(0, "top"), "simulation"] > 0.9 and s.loc[(0, "top"), "detection_auc"] > 0.99
    assert abs(s.loc[(1, "top"), "simulation"]) < 0.3 and abs(s.loc[(1, "top"), "detection_auc"] - 0.5) < 0.3
    assert (s.held_out_sentences == held.sum()).all() and record["split"]["held_out"] == 0.3
    formulas = out["unit_formulas"].to_pandas().set_index("unit_id")
    assert formulas.loc[0, "formula"] == "word:cat" and formulas.loc[0, "iou"] == 1.0  # one atom explains it
    band = top_band(true[held].astype(np.float64), band_size(int(held.sum()), 1 - band_share))
    assert band[:, 0].tolist() == cat[held].tolist()
    assert formulas.loc[1, "iou"] == pytest.approx(iou_of(formulas_set(features, ids[held], formulas.loc[1]),
                                                         band[:, 1]))


def formulas_set(features, held_ids: np.ndarray, fit) -> np.ndarray:  # noqa: ANN001
    """Brute force: where a left-to-right formula of word:/pos:/field= atoms holds on the held-out sentences."""
    rows = np.searchsorted(features.sentence_ids, held_ids)
    vocab = features.word_vocab
    words = [set(vocab[features.words.items[p, 0]] for p in features.words.ids[features.words.offsets[r]:
                                                                              features.words.offsets[r + 1]]
                 if features.words.lengths[p] == 1) for r in rows]
    tags = [set(features.tag_vocab[np.flatnonzero(features.tag_counts[r])]) for r in rows]
    domain = features.field_values[0][features.field_codes[0][rows]]

    def atom(name: str) -> np.ndarray:
        kind, _, value = name.partition(":")
        if kind == "word":
            return np.array([value in w for w in words])
        if kind == "pos":
            return np.array([value in t for t in tags])
        return domain == name.split("=", 1)[1]

    tokens = fit["formula"].replace("(", "").replace(")", "").replace("AND NOT", "ANDNOT").split()
    out = atom(tokens[0])
    for op, name in zip(tokens[1::2], tokens[2::2]):
        a = atom(name)
        out = out & a if op == "AND" else out | a if op == "OR" else out & ~a
    return out
