"""Compositional explanations: the beam search finds planted formulas, equals exhaustive search on short
formulas, and reports the IoU, precision and recall of a brute-force evaluation of what it returns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from miner.errors import ConfigError
from miner.explain.formulas import OPS, ConceptTable, Formula, beam_search, concept_table, iou_of


def random_table(seed: int, concepts: int = 25, sentences: int = 600) -> ConceptTable:
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.02, 0.4, size=concepts)
    atoms = [[f"c{k:02d}" for k in range(concepts) if rng.random() < rates[k]] for _ in range(sentences)]
    return concept_table(atoms)


def test_concept_table_counts_each_sentence_once_and_keeps_the_frequent() -> None:
    atoms = [["the", "cat", "the"], ["the", "dog"], ["a", "cat"], []]
    table = concept_table(atoms)
    assert table.names == ["a", "cat", "dog", "the"] and table.n_sentences == 4
    assert table.matrix.toarray().tolist() == [[0, 0, 1, 0], [1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]]
    assert concept_table(atoms, min_count=2).names == ["cat", "the"]
    assert concept_table(atoms, max_concepts=3).names == ["a", "cat", "the"]  # ties at 1: by name


@pytest.mark.parametrize("seed", range(3))
def test_planted_formula_is_found(seed: int) -> None:
    table = random_table(seed)
    rng = np.random.default_rng(100 + seed)
    a, b, c = (int(x) for x in rng.choice(len(table.names), size=3, replace=False))
    # reachable left to right: a and b each cover much of the target, c cuts some of a | b away
    planted = Formula((a, b, c), ("OR", "AND NOT"))
    target = planted.evaluate(table)
    fit = beam_search(table, target, max_length=3, beam=10)
    assert fit.iou == 1.0 and np.array_equal(fit.formula.evaluate(table), target)
    assert (fit.precision, fit.recall, fit.support) == (1.0, 1.0, int(target.sum()))


@pytest.mark.parametrize("seed", range(4))
def test_reported_scores_equal_a_brute_force_evaluation(seed: int) -> None:
    table = random_table(seed)
    rng = np.random.default_rng(seed)
    target = rng.random(table.n_sentences) < 0.15  # no formula explains noise exactly
    fit = beam_search(table, target, max_length=3, beam=5)
    got = fit.formula.evaluate(table)
    inter = int(np.count_nonzero(got & target))
    assert fit.iou == pytest.approx(iou_of(got, target), abs=1e-12)
    assert fit.precision == pytest.approx(inter / got.sum()) and fit.recall == pytest.approx(inter / target.sum())
    assert fit.support == int(got.sum()) and fit.text == fit.formula.render(table.names)


@pytest.mark.parametrize("seed", range(3))
def test_wide_beam_equals_exhaustive_search_up_to_two_atoms(seed: int) -> None:
    table = random_table(seed, concepts=12, sentences=300)
    rng = np.random.default_rng(50 + seed)
    target = table.column(3) & (rng.random(table.n_sentences) < 0.7) | (rng.random(table.n_sentences) < 0.05)
    best = 0.0
    for k in range(len(table.names)):
        best = max(best, iou_of(table.column(k), target))
    for a, b in itertools.product(range(len(table.names)), repeat=2):
        for op in OPS:
            best = max(best, iou_of(Formula((a, b), (op,)).evaluate(table), target))
    fit = beam_search(table, target, max_length=2, beam=len(table.names))
    assert fit.iou == pytest.approx(best, abs=1e-12)


def test_rendering_and_edges() -> None:
    names = ["a", "b", "c"]
    assert Formula((0, 1, 2), ("AND", "OR")).render(names) == "(a AND b) OR c"
    assert Formula((2,)).render(names) == "c"
    table = concept_table([["a"], ["b"], ["c"]])
    empty = beam_search(table, np.zeros(3, bool))
    assert (empty.text, empty.iou, empty.support) == ("", 0.0, 0)
    with pytest.raises(ConfigError, match="max_length"):
        beam_search(table, np.ones(3, bool), max_length=0)
    with pytest.raises(ConfigError, match="beam"):
        beam_search(table, np.ones(3, bool), beam=0)
    with pytest.raises(ValueError, match="target"):
        beam_search(table, np.ones(4, bool))
