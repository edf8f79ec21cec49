"""Which labelled examples a concept's probe sees: a split by sentence, a seeded class-balanced sample of frequent
classes, and the rule for classes too rare to train and test on."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from miner.config import ProbingOptions
from miner.errors import ConfigError
from miner.hashing import hash_uniform, text_keys, unit_hash

__all__ = ["hash_uniform", "text_keys", "unit_hash"]  # re-exported: the probing split's hashes

TRAIN, DEV, TEST = 0, 1, 2
SPLITS = ("train", "dev", "test")


def sentence_splits(keys: np.ndarray, seed: int, dev_share: float, test_share: float) -> np.ndarray:
    """int8 split of each sentence (0 train, 1 dev, 2 test) by a seeded hash of its key: a sentence's words are
    never in two splits, and a sentence keeps its split whatever else the concept holds.

    >>> s = sentence_splits(np.arange(10_000), 0, 0.1, 0.1)
    >>> [round(float((s == k).mean()), 1) for k in (0, 1, 2)]
    [0.8, 0.1, 0.1]
    """
    u = hash_uniform(seed, "split", np.asarray(keys, np.int64))
    out = np.zeros(len(keys), np.int8)
    out[u < test_share + dev_share] = DEV
    out[u < test_share] = TEST
    return out


def split_caps(max_per_class: int, dev_share: float, test_share: float) -> tuple[int, int, int]:
    """Examples kept per class in train, dev and test: train gets max_per_class, dev and test in proportion.

    >>> split_caps(2000, 0.1, 0.1)
    (2000, 250, 250)
    """
    train = 1.0 - dev_share - test_share
    return (max_per_class, max(1, math.ceil(max_per_class * dev_share / train)),
            max(1, math.ceil(max_per_class * test_share / train)))


def balanced_sample(labels: np.ndarray, splits: np.ndarray, rank: np.ndarray, caps: tuple[int, int, int],
                    ) -> np.ndarray:
    """bool mask of the examples kept: per split and class, the `caps[split]` examples with the lowest `rank`
    (a seeded hash), all of them for rarer classes.

    >>> labels = np.array([0, 0, 0, 1]); splits = np.zeros(4, np.int8); rank = np.array([.4, .1, .3, .9])
    >>> balanced_sample(labels, splits, rank, (2, 1, 1)).tolist()
    [False, True, True, True]
    """
    keep = np.zeros(len(labels), bool)
    for s in (TRAIN, DEV, TEST):
        for c in np.unique(labels[splits == s]):
            idx = np.flatnonzero((splits == s) & (labels == c))
            if len(idx) > caps[s]:
                idx = idx[np.lexsort((idx, rank[idx]))[: caps[s]]]
            keep[idx] = True
    return keep


@dataclass
class ClassCheck:
    """The classes a concept keeps after the rare-class rule, and those it drops (with their example counts)."""

    classes: list[str]
    dropped: dict[str, int] = field(default_factory=dict)


def check_classes(concept: str, labels: list[str], splits: np.ndarray, options: ProbingOptions) -> ClassCheck:
    """Classes with at least min_per_class train examples and one in each of dev and test; the others are an
    error naming the concept (rare_classes: error) or dropped (rare_classes: drop). Fewer than 2 classes left
    is always an error.

    >>> from miner.config import ConceptSpec
    >>> opts = ProbingOptions(concepts=[ConceptSpec(name="x", kind="tags")], min_per_class=3, rare_classes="drop")
    >>> check_classes("x", list("aaaaabbbbbc"), np.array([0, 0, 0, 1, 2, 0, 0, 0, 1, 2, 0]), opts)
    ClassCheck(classes=['a', 'b'], dropped={'c': 1})
    """
    counts = {s: Counter(lab for lab, sp in zip(labels, splits) if sp == s) for s in (TRAIN, DEV, TEST)}
    total = Counter(labels)
    ok, rare = [], {}
    for c in sorted(total):
        n_train, n_dev, n_test = counts[TRAIN][c], counts[DEV][c], counts[TEST][c]
        if n_train >= options.min_per_class and n_dev >= 1 and n_test >= 1:
            ok.append(c)
        else:
            rare[c] = (n_train, n_dev, n_test)
    if rare and options.rare_classes == "error":
        shown = ", ".join(f"'{c}' ({a} train / {b} dev / {t} test)" for c, (a, b, t) in list(rare.items())[:5])
        more = f" and {len(rare) - 5} more" if len(rare) > 5 else ""
        raise ConfigError(f"probe.concepts '{concept}': too few examples for the split in {len(rare)} class(es): "
                          f"{shown}{more}; need {options.min_per_class} train and 1 dev and 1 test example each "
                          "(more data, a lower min_per_class, or rare_classes: drop)")
    if len(ok) < 2:
        raise ConfigError(f"probe.concepts '{concept}': {len(ok)} class(es) with enough examples "
                          f"({', '.join(ok) or 'none'}); a probe needs at least 2")
    return ClassCheck(ok, {c: total[c] for c in rare})
