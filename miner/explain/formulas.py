"""Compositional explanations (Mu & Andreas 2020): the logical formula of atomic concepts whose sentence set
best matches a unit's top band, found by beam search.

Atoms are binary concepts over a fixed set of sentences (a word occurs, a POS tag occurs, a metadata field has
a value), held as one sparse concepts x sentences matrix (`ConceptTable`). A formula joins atoms left to right
with AND, OR and AND NOT: ``((a0 op1 a1) op2 a2)``, up to `max_length` atoms. Its score is the IoU (Jaccard
index) of its sentence set F with the unit's set M (e.g. the held-out sentences in the unit's top band):
|F & M| / |F | M|.

The search never materialises a candidate's sentence set: for a formula f and every atom a at once, two sparse
matrix-vector products give |a & f| and |a & f & M|, and with the atoms' |a| and |a & M| they give the
intersection and size of f AND a, f OR a and f AND NOT a for every a:

    AND:      |f&a&M|,             |f&a|
    OR:       |f&M| + |a&M| - |f&a&M|,   |f| + |a| - |f&a|
    AND NOT:  |f&M| - |f&a&M|,     |f| - |f&a|
    IoU = inter / (size + |M| - inter)

Each of the `beam` best formulas of one length is extended by every atom and operator; the `beam` best of
those (ties: shorter, then by atom and operator indices) form the next length. The best formula of any length
is returned. With beam >= the number of atoms and max_length 2 the search is exhaustive.

Example: atoms "cat" in sentences {0, 1}, "dog" in {2}, "pet" in {0, 1, 2, 3}; the unit's set {0, 1, 2}:
"cat" has IoU 2/3, "pet" 3/4, "cat OR dog" 3/3.

>>> table = concept_table([["cat", "pet"], ["cat", "pet"], ["dog", "pet"], ["pet"]])
>>> fit = beam_search(table, np.array([True, True, True, False]), max_length=3, beam=5)
>>> fit.text, fit.iou, fit.precision, fit.recall
('cat OR dog', 1.0, 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from miner.errors import ConfigError

OPS = ("AND", "OR", "AND NOT")


@dataclass(frozen=True)
class ConceptTable:
    """Binary atomic concepts over a fixed list of sentences."""

    names: list[str]
    """Concept names, e.g. "word:the", "pos:NN", "domain=social_media"."""
    matrix: sp.csr_matrix
    """[concepts, sentences] with 1 where the concept holds (CSR, float64: products count exactly)."""

    @property
    def n_sentences(self) -> int:
        return int(self.matrix.shape[1])

    def column(self, k: int) -> np.ndarray:
        """bool [sentences]: where concept k holds."""
        return self.matrix.getrow(k).toarray()[0] > 0


def concept_table(sentence_atoms: Sequence[Iterable[str]], min_count: int = 1,
                  max_concepts: int | None = None) -> ConceptTable:
    """The concepts of each sentence (an iterable of names, repeats counted once) as a `ConceptTable`; only
    concepts holding for at least `min_count` sentences, at most `max_concepts` of them (the most frequent;
    ties by name), in name order.

    >>> t = concept_table([["a", "b"], ["b"], ["b", "c", "c"]], min_count=2)
    >>> t.names, t.matrix.toarray().tolist()
    (['b'], [[1.0, 1.0, 1.0]])
    """
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(sparse_output=True)
    rows = binarizer.fit_transform([set(atoms) for atoms in sentence_atoms])  # [sentences, concepts], sorted names
    names = np.asarray(binarizer.classes_, dtype=object)
    matrix = sp.csr_matrix(rows.T, dtype=np.float64)
    counts = np.asarray(matrix.sum(axis=1)).ravel()
    keep = np.flatnonzero(counts >= min_count)
    if max_concepts is not None and len(keep) > max_concepts:
        keep = np.sort(keep[np.lexsort((names[keep], -counts[keep]))[:max_concepts]])
    return ConceptTable([str(n) for n in names[keep]], matrix[keep])


@dataclass(frozen=True)
class Formula:
    """Atoms joined left to right: atoms[0] ops[0] atoms[1] ops[1] atoms[2] ..."""

    atoms: tuple[int, ...]
    ops: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.atoms)

    def render(self, names: Sequence[str]) -> str:
        """The formula as text; inner parts are parenthesised: "(a AND b) OR c"."""
        text = names[self.atoms[0]]
        for i, (op, atom) in enumerate(zip(self.ops, self.atoms[1:])):
            text = f"({text}) {op} {names[atom]}" if i else f"{text} {op} {names[atom]}"
        return text

    def evaluate(self, table: ConceptTable) -> np.ndarray:
        """bool [sentences]: where the formula holds (the brute-force definition)."""
        out = table.column(self.atoms[0])
        for op, atom in zip(self.ops, self.atoms[1:]):
            a = table.column(atom)
            out = out & a if op == "AND" else out | a if op == "OR" else out & ~a
        return out


@dataclass(frozen=True)
class FormulaFit:
    """The best formula for one unit and how well its sentence set matches the unit's."""

    formula: Formula
    text: str
    iou: float
    precision: float
    """|F & M| / |F| (0 for an empty F)."""
    recall: float
    """|F & M| / |M|."""
    support: int
    """|F|: sentences where the formula holds."""


def iou_of(formula_set: np.ndarray, target: np.ndarray) -> float:
    """IoU of two bool sets (0 when both are empty)."""
    union = int(np.count_nonzero(formula_set | target))
    return int(np.count_nonzero(formula_set & target)) / union if union else 0.0


def beam_search(table: ConceptTable, target: np.ndarray, max_length: int = 3, beam: int = 10) -> FormulaFit:
    """The formula of at most `max_length` atoms with the highest IoU against `target` (bool [sentences]),
    by beam search (see the module docstring). A target with no sentence, or a table with no concept, gives
    an empty formula (text "", IoU 0)."""
    if max_length < 1:
        raise ConfigError(f"max_length: a formula holds at least 1 atom, got {max_length}")
    if beam < 1:
        raise ConfigError(f"beam: must be at least 1, got {beam}")
    target = np.asarray(target, dtype=bool)
    if target.shape != (table.n_sentences,):
        raise ValueError(f"target: {target.shape} for {table.n_sentences} sentences")
    n_target = int(target.sum())
    if n_target == 0 or not table.names:
        return FormulaFit(Formula(()), "", 0.0, 0.0, 0.0, 0)
    a = table.matrix
    size_a = np.asarray(a.sum(axis=1)).ravel()
    inter_a = a @ target.astype(np.float64)

    def ranked(inter: np.ndarray, size: np.ndarray) -> np.ndarray:
        union = size + n_target - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, 0.0)

    # a beam entry: (iou, formula, |F & M|, |F|, F as float vector)
    iou1 = ranked(inter_a, size_a)
    order = np.lexsort((np.arange(len(iou1)), -iou1))[:beam]
    entries = [(float(iou1[k]), Formula((int(k),)), float(inter_a[k]), float(size_a[k])) for k in order]
    best = entries[0]
    for _ in range(max_length - 1):
        cands: list[tuple[float, int, int, int, float, float]] = []  # iou, entry, op, atom, inter, size
        for e, (_, formula, f_inter, f_size) in enumerate(entries):
            f = formula.evaluate(table).astype(np.float64)
            both = a @ f  # |a & f|
            both_m = a @ (f * target)  # |a & f & M|
            sides = ((both_m, both),
                     (f_inter + inter_a - both_m, f_size + size_a - both),
                     (f_inter - both_m, f_size - both))
            for op, (inter, size) in enumerate(sides):
                scores = ranked(inter, size)
                top = np.lexsort((np.arange(len(scores)), -scores))[:beam]
                cands.extend((float(scores[k]), e, op, int(k), float(inter[k]), float(size[k])) for k in top)
        cands.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))
        entries = [(iou, Formula(entries[e][1].atoms + (k,), entries[e][1].ops + (OPS[op],)), inter, size)
                   for iou, e, op, k, inter, size in cands[:beam]]
        if entries and entries[0][0] > best[0]:
            best = entries[0]
    iou, formula, inter, size = best
    return FormulaFit(formula, formula.render(table.names), iou, inter / size if size else 0.0, inter / n_target,
                      int(size))
