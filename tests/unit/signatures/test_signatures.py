"""Unit signatures on hand-made tagged sentences, and against a brute-force recount on random ones."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from miner.config import SignatureOptions
from miner.errors import ConfigError
from miner.signatures.aggregate import compute_signatures, unit_signatures
from miner.signatures.features import sentence_features

# (sentence_id, words, tags, domain, sentiment, title); unit 0's top queue is 0-3, the background 4-9.
HAND = [
    (0, "lol im happy", "UH PRP JJ", "social", "positive", "t0"),
    (1, "lol so fun", "UH RB JJ", "social", "positive", "t1"),
    (2, "im sad", "PRP JJ", "social", "negative", "t2"),
    (3, "the cat", "DT NN", "news", None, "t3"),
    (4, "the cat sat", "DT NN VBD", "news", None, "t4"),
    (5, "the dog ran", "DT NN VBD", "news", None, "t5"),
    (6, "lol", "UH", "social", "neutral", "t6"),
    (7, "a cat", "DT NN", "news", None, "t7"),
    (8, "im done", "PRP VBN", "social", None, "t8"),
    (9, "im here", "PRP RB", "news", None, "t9"),
]


def tables(rows: list[tuple], queues: dict[tuple[int, str], list[int]]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(top_sentences, sentences, tokens) tables from hand-made rows and queue memberships."""
    top = {"unit_id": [], "direction": [], "rank": [], "sentence_id": []}
    for (unit, direction), ids in queues.items():
        for rank, sid in enumerate(ids, 1):
            top["unit_id"].append(unit)
            top["direction"].append(direction)
            top["rank"].append(rank)
            top["sentence_id"].append(sid)
    tok = {"sentence_id": [], "position": [], "token": [], "lower": [], "pos": []}
    for sid, words, tags, *_ in rows:
        for i, (w, t) in enumerate(zip(words.split(), tags.split())):
            tok["sentence_id"].append(sid)
            tok["position"].append(i)
            tok["token"].append(w)
            tok["lower"].append(w.lower())
            tok["pos"].append(t)
    sentences = pa.table({
        "sentence_id": pa.array([r[0] for r in rows], pa.int64()),
        "text": [r[1] for r in rows],
        "n_tokens": pa.array([len(r[1].split()) for r in rows], pa.int32()),
        "domain": [r[3] for r in rows],
        "sentiment": pa.array([r[4] for r in rows], pa.string()),
        "title": [r[5] for r in rows],
        "doc_id": pa.array([r[0] for r in rows], pa.int64()),
    })
    top_t = pa.table({"unit_id": pa.array(top["unit_id"], pa.int32()), "direction": top["direction"],
                      "rank": pa.array(top["rank"], pa.int32()),
                      "sentence_id": pa.array(top["sentence_id"], pa.int64())})
    tok_t = pa.table({"sentence_id": pa.array(tok["sentence_id"], pa.int64()),
                      "position": pa.array(tok["position"], pa.int32()), "token": tok["token"], "lower": tok["lower"],
                      "pos": tok["pos"]})
    return top_t, sentences, tok_t


@pytest.fixture(scope="module")
def hand() -> dict[str, pa.Table]:
    top, sentences, tokens = tables(HAND, {(0, "top"): [0, 1, 2, 3], (0, "bottom"): [4, 5, 7, 9]})
    opts = SignatureOptions(min_support=2, min_share=0)
    return compute_signatures(top, sentences, tokens, np.arange(4, 10), opts)


def rows_of(table: pa.Table, **where: object) -> list[dict]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]


def test_relative_frequency_hand_example(hand: dict[str, pa.Table]) -> None:
    # 'lol' in 2 of 4 unit sentences, in 1 of 6 background sentences: (2/4) / ((1+1)/(6+1)) = 1.75.
    # 'im' in 2 of 4, background 2 of 6: 0.5 / (3/7) = 1.1667. Other words occur once in the unit: below support.
    words = rows_of(hand["signatures"], unit_id=0, direction="top", kind="word")
    assert [(r["pattern"], r["rank"], r["support"], r["background_support"]) for r in words] == [
        ("lol", 1, 2, 1), ("im", 2, 2, 2)]
    assert words[0]["rel_freq"] == pytest.approx(1.75)
    assert words[1]["rel_freq"] == pytest.approx(0.5 / (3 / 7))
    assert words[0]["share"] == 0.5 and words[0]["background_share"] == pytest.approx(1 / 6)
    assert rows_of(hand["signatures"], unit_id=0, direction="top", kind="word_pattern") == []
    # UH..JJ (one item skipped) in sentences 0 and 1, PRP JJ in 0 and 2; neither in the background: 0.5/(1/7).
    pos = rows_of(hand["signatures"], unit_id=0, direction="top", kind="pos_pattern")
    assert sorted(r["pattern"] for r in pos) == ["PRP JJ", "UH JJ"]
    assert all(r["rel_freq"] == pytest.approx(3.5) and r["length"] == 2 for r in pos)
    assert sorted(r["rank"] for r in pos) == [1, 2]


def test_pos_ratios_hand_example(hand: dict[str, pa.Table]) -> None:
    stats = rows_of(hand["unit_stats"], unit_id=0, direction="top")[0]
    # Unit tokens: 10, of which NN 1, VB* 0, JJ 3. Background tokens: 13, NN 3, VB* 3, JJ 0.
    assert stats["n_sentences"] == 4
    assert stats["avg_length"] == pytest.approx(2.5)
    assert stats["noun_ratio"] == pytest.approx(0.1)
    assert stats["verb_ratio"] == 0.0
    assert stats["adj_ratio"] == pytest.approx(0.3)
    assert stats["noun_rel"] == pytest.approx(0.1 / (3 / 13))
    assert stats["adj_rel"] is None  # no adjective in the background: undefined
    # The paper's selectivity: max(noun_rel, verb_rel, adj_rel) over the defined ones (adj_rel is undefined).
    assert stats["verb_rel"] == 0.0
    assert stats["pos_selectivity_tag"] == "noun"
    assert stats["pos_selectivity"] == pytest.approx(0.1 / (3 / 13))
    # PTB selectivity over tags in >= 2 unit sentences (UH, PRP, JJ); corpus share smoothed (bg + 1) / (13 + 1).
    assert stats["pos_selectivity_ptb_tag"] == "JJ"
    assert stats["pos_selectivity_ptb"] == pytest.approx(0.3 / (1 / 14))
    assert stats["typical_sentence_id"] is None
    bottom = rows_of(hand["unit_stats"], unit_id=0, direction="bottom")[0]
    assert bottom["noun_ratio"] == pytest.approx(3 / 10)  # 4, 5, 7, 9: 10 tokens, cat dog cat


def test_metadata_hand_example(hand: dict[str, pa.Table]) -> None:
    meta = hand["unit_metadata"]
    assert set(meta["field"].to_pylist()) == {"domain", "sentiment"}  # title excluded by default; text, doc_id never
    dom = {r["value"]: r for r in rows_of(meta, unit_id=0, direction="top", field="domain")}
    assert dom["social"]["count"] == 3 and dom["social"]["share"] == 0.75
    assert dom["social"]["corpus_share"] == pytest.approx(2 / 6)
    assert dom["social"]["rel_share"] == pytest.approx(0.75 / (2 / 6))
    assert dom["news"]["rel_share"] == pytest.approx(0.25 / (4 / 6))
    sent = {r["value"]: r["share"] for r in rows_of(meta, unit_id=0, direction="top", field="sentiment")}
    assert sent == {"positive": 0.5, "negative": 0.25, None: 0.25}
    stats = rows_of(hand["unit_stats"], unit_id=0, direction="top")[0]
    assert stats["dominant_domain"] == "social" and stats["dominant_domain_share"] == 0.75
    assert stats["dominant_sentiment"] == "positive" and stats["dominant_sentiment_share"] == 0.5
    assert stats["sentiment_n"] == 3
    assert stats["sentiment_mean"] == pytest.approx(1 / 3)
    assert stats["sentiment_std"] == pytest.approx(math.sqrt(1 - 1 / 9))
    # No neutral sentence in this queue: the three-way figures are the same.
    assert (stats["sentiment_n_3way"], stats["sentiment_mean_3way"]) == (3, stats["sentiment_mean"])
    assert stats["sentiment_std_3way"] == pytest.approx(stats["sentiment_std"])
    assert "dominant_title" not in hand["unit_stats"].column_names


def brute_support(sentences: list[list[str]], pattern: tuple[str, ...], max_gap: int) -> int:
    """Sentences containing the pattern with <= max_gap skipped items between consecutive items (loops)."""
    def contains(seq: list[str]) -> bool:
        def rec(start: int, j: int) -> bool:
            if j == len(pattern):
                return True
            stop = len(seq) if j == 0 else min(len(seq), start + max_gap + 1)
            return any(seq[i] == pattern[j] and rec(i + 1, j + 1) for i in range(start, stop))
        return rec(0, 0)
    return sum(contains(s) for s in sentences)


def test_sentiment_leaves_neutral_out() -> None:
    """Queue 0, 2, 6, 8: positive, negative, neutral, unlabelled. Binary [1, -1]: mean 0, std 1 (the paper);
    three-way [1, -1, 0]: mean 0, std sqrt(2/3)."""
    top, sentences, tokens = tables(HAND, {(1, "top"): [0, 2, 6, 8]})
    stats = compute_signatures(top, sentences, tokens, np.arange(4, 10))["unit_stats"].to_pylist()[0]
    assert (stats["sentiment_n"], stats["sentiment_mean"], stats["sentiment_std"]) == (2, 0.0, 1.0)
    assert (stats["sentiment_n_3way"], stats["sentiment_mean_3way"]) == (3, 0.0)
    assert stats["sentiment_std_3way"] == pytest.approx(math.sqrt(2 / 3))


def test_sentiment_columns_are_null_without_a_sentiment_field() -> None:
    top, sentences, tokens = tables(HAND, {(0, "top"): [0, 1, 2, 3]})
    stats = compute_signatures(top, sentences.drop_columns(["sentiment"]), tokens,
                               np.arange(4, 10))["unit_stats"].to_pylist()[0]
    assert all(stats[f"sentiment_{k}{s}"] is None for k in ("n", "mean", "std") for s in ("", "_3way"))


def random_setup(seed: int, tags: Sequence[str] = ("NN", "VB", "JJ", "DT"),
                 sentiments: Sequence[str | None] = ("positive", None)) -> tuple[pa.Table, pa.Table, pa.Table,
                                                                                np.ndarray, dict]:
    rng = random.Random(seed)
    words = ["a", "b", "c", "d", "e", "f"]
    rows, seqs = [], {}
    for sid in range(60):
        n = rng.randrange(1, 8)
        w = [rng.choice(words) for _ in range(n)]
        t = [rng.choice(list(tags)) for _ in range(n)]
        seqs[sid] = (w, t)
        rows.append((sid, " ".join(w), " ".join(t), rng.choice(["x", "y", "z", None]), rng.choice(list(sentiments)),
                     f"t{sid}"))
    queues = {(u, d): rng.sample(range(60), rng.randrange(5, 25)) for u in range(3) for d in ("top", "bottom")}
    top, sentences, tokens = tables(rows, queues)
    return top, sentences, tokens, np.array(sorted(rng.sample(range(60), 30))), {"seqs": seqs, "queues": queues}


@pytest.mark.parametrize("seed,min_rel", [(0, 1.0), (1, 1.0), (2, 1.0), (0, 0.0), (1, 1.5)])
def test_signatures_equal_brute_force(seed: int, min_rel: float) -> None:
    """Reported supports, background supports and rel_freq equal a loop recount; nothing better was left out;
    only items over-represented beyond min_rel_freq are kept."""
    top, sentences, tokens, bg, info = random_setup(seed)
    opts = SignatureOptions(min_support=2, min_share=0.1, top_k=5, max_len=3, max_gap=1, min_rel_freq=min_rel)
    dropped = 0
    out = compute_signatures(top, sentences, tokens, bg, opts)
    seqs = info["seqs"]
    for (unit, direction), ids in info["queues"].items():
        n = len(ids)
        need = max(2, math.ceil(0.1 * n))
        for kind, which, lo, hi in (("word", 0, 1, 1), ("word_pattern", 0, 2, 3), ("pos_pattern", 1, 2, 3)):
            unit_seqs = [seqs[i][which] for i in ids]
            bg_seqs = [seqs[i][which] for i in bg.tolist()]
            candidates = set()
            for s in unit_seqs:
                for k in range(lo, hi + 1):
                    for idx in itertools.combinations(range(len(s)), k):
                        if all(idx[j + 1] - idx[j] - 1 <= 1 for j in range(k - 1)):
                            candidates.add(tuple(s[i] for i in idx))
            scored = {}
            for p in candidates:
                sup = brute_support(unit_seqs, p, 1)
                if sup >= need:
                    b = brute_support(bg_seqs, p, 1)
                    rel = (sup / n) / ((b + 1) / (len(bg_seqs) + 1))
                    if rel > min_rel:
                        scored[" ".join(p)] = (sup, b, rel)
                    else:
                        dropped += 1
            got = rows_of(out["signatures"], unit_id=unit, direction=direction, kind=kind)
            assert len(got) == min(5, len(scored))
            for r in got:
                sup, b, rel = scored[r["pattern"]]
                assert (r["support"], r["background_support"]) == (sup, b)
                assert r["rel_freq"] == pytest.approx(rel)
            if got:
                worst = min(r["rel_freq"] for r in got)
                better = [p for p, v in scored.items() if v[2] > worst + 1e-9]
                assert set(better) <= {r["pattern"] for r in got}
                assert [r["rank"] for r in got] == list(range(1, len(got) + 1))
                assert all(a["rel_freq"] >= b["rel_freq"] - 1e-12 for a, b in zip(got, got[1:]))
    assert (dropped > 0) == (min_rel > 0)  # the random setup has items at or below the bound


@pytest.mark.parametrize("seed", range(3))
def test_metadata_shares_sum_to_one(seed: int) -> None:
    top, sentences, tokens, bg, info = random_setup(seed)
    out = compute_signatures(top, sentences, tokens, bg, SignatureOptions())
    meta = out["unit_metadata"].to_pylist()
    sums: dict[tuple, float] = {}
    counts: dict[tuple, int] = {}
    for r in meta:
        key = (r["unit_id"], r["direction"], r["field"])
        sums[key] = sums.get(key, 0.0) + r["share"]
        counts[key] = counts.get(key, 0) + r["count"]
    assert len(sums) == len(info["queues"]) * 2  # domain, sentiment
    assert all(s == pytest.approx(1.0) for s in sums.values())
    for (unit, direction, _), c in counts.items():
        assert c == len(info["queues"][(unit, direction)])
    stats = out["unit_stats"]
    assert stats.num_rows == len(info["queues"])
    expected = [len(info["queues"][(u, d)]) for u in range(3) for d in ("top", "bottom")]
    assert stats["n_sentences"].to_pylist() == expected


PTB_TAGS = ("NN", "NNS", "NNP", "VB", "VBD", "VBZ", "JJ", "JJR", "DT", "IN", "NFP", "SYM", "$")
CLASSES = {"noun": {"NN", "NNS", "NNP", "NNPS"}, "verb": {"VB", "VBD", "VBG", "VBN", "VBP", "VBZ"},
           "adj": {"JJ", "JJR", "JJS"}}


@pytest.mark.parametrize("seed", range(4))
def test_selectivity_measures_equal_brute_force(seed: int) -> None:
    """The paper's POS selectivity (max class relative frequency), the PTB one, and the binary / three-way
    sentiment spread equal a recount with loops and np.std over each queue's sentences."""
    top, sentences, tokens, bg, info = random_setup(seed, PTB_TAGS, ("positive", "negative", "neutral", None))
    opts = SignatureOptions(min_support=2, min_share=0.1)
    stats = {(r["unit_id"], r["direction"]): r
             for r in compute_signatures(top, sentences, tokens, bg, opts)["unit_stats"].to_pylist()}
    label = dict(zip(sentences["sentence_id"].to_pylist(), sentences["sentiment"].to_pylist()))
    bg_tags = [t for i in bg.tolist() for t in info["seqs"][i][1]]
    for (unit, direction), ids in info["queues"].items():
        got = stats[(unit, direction)]
        tags = [t for i in ids for t in info["seqs"][i][1]]
        rel = {}
        for name, members in CLASSES.items():
            bg_share = sum(t in members for t in bg_tags) / len(bg_tags)
            if bg_share > 0:
                rel[name] = (sum(t in members for t in tags) / len(tags)) / bg_share
            assert got[f"{name}_rel"] == (pytest.approx(rel[name]) if name in rel else None)
        best = max(rel, key=lambda k: (rel[k], -list(CLASSES).index(k)))
        assert (got["pos_selectivity_tag"], got["pos_selectivity"]) == (best, pytest.approx(rel[best]))
        need = max(2, math.ceil(0.1 * len(ids)))
        ptb = {t: (tags.count(t) / len(tags)) / ((bg_tags.count(t) + 1) / (len(bg_tags) + 1)) for t in set(tags)
               if sum(t in info["seqs"][i][1] for i in ids) >= need}
        if ptb:
            assert got["pos_selectivity_ptb"] == pytest.approx(max(ptb.values()))
            assert ptb[got["pos_selectivity_ptb_tag"]] == pytest.approx(max(ptb.values()))
        else:
            assert got["pos_selectivity_ptb"] is None and got["pos_selectivity_ptb_tag"] is None
        polarity = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}
        for suffix, keep in (("", ("positive", "negative")), ("_3way", ("positive", "negative", "neutral"))):
            values = np.array([polarity[label[i]] for i in ids if label[i] in keep])
            assert got[f"sentiment_n{suffix}"] == len(values)
            if len(values):
                assert got[f"sentiment_mean{suffix}"] == pytest.approx(values.mean())
                assert got[f"sentiment_std{suffix}"] == pytest.approx(values.std(), abs=1e-12)
            else:
                assert got[f"sentiment_mean{suffix}"] is None and got[f"sentiment_std{suffix}"] is None


def test_metadata_field_choice() -> None:
    top, sentences, tokens = tables(HAND, {(0, "top"): [0, 1, 2, 3]})
    bg = np.arange(4, 10)
    few = compute_signatures(top, sentences, tokens, bg, SignatureOptions(max_metadata_values=3, exclude_metadata=[]))
    assert set(few["unit_metadata"]["field"].to_pylist()) == {"domain", "sentiment"}  # title: 10 values > 3
    named = compute_signatures(top, sentences, tokens, bg, SignatureOptions(metadata_fields=["title"]))
    assert set(named["unit_metadata"]["field"].to_pylist()) == {"title"}
    assert named["unit_stats"]["dominant_title_share"].to_pylist() == [0.25]
    with pytest.raises(ConfigError, match="metadata_fields: no column 'party'"):
        compute_signatures(top, sentences, tokens, bg, SignatureOptions(metadata_fields=["party"]))


def test_missing_sentences_are_an_error() -> None:
    top, sentences, tokens = tables(HAND, {(0, "top"): [0, 1]})
    with pytest.raises(ValueError, match="sentences: 1 sentence ids missing"):
        compute_signatures(top, sentences.slice(1), tokens, np.arange(4, 10))


def test_options_validation() -> None:
    with pytest.raises(ValueError, match="min_len"):
        SignatureOptions(min_len=4, max_len=3)
    assert SignatureOptions().threshold(1000) == 20
    assert SignatureOptions().threshold(50) == 3


def test_units_split_across_workers_give_the_same_tables() -> None:
    """sentence_features once, unit_signatures per slice of units (as parallel workers do) == one call."""
    top, sentences, tokens, bg, _ = random_setup(5)
    opts = SignatureOptions(min_support=2)
    features = sentence_features(top, sentences, tokens, bg, opts)
    whole = unit_signatures(features, top, opts)
    parts = [unit_signatures(features, top.filter(pc.is_in(top["unit_id"], pa.array(units, pa.int32()))), opts)
             for units in ([0], [1, 2])]
    for name, table in whole.items():
        assert pa.concat_tables([p[name] for p in parts]).equals(table), name


@pytest.mark.parametrize("parts", [1, 2, 3, 50])
def test_step2_slices_of_units_give_the_same_tables(parts: int) -> None:
    """What step 2 fans out (map_chunks over slices of units, inline here; Ray in test_abstract) == one call."""
    from miner.signatures.stage import signatures_by_slices

    top, sentences, tokens, bg, _ = random_setup(11)
    opts = SignatureOptions(min_support=2)
    features = sentence_features(top, sentences, tokens, bg, opts)
    whole = unit_signatures(features, top, opts)
    sliced = signatures_by_slices(features, top, opts, parts)
    assert sliced.keys() == whole.keys()
    for name, table in whole.items():
        assert sliced[name].equals(table), name


def test_map_chunks_keeps_chunk_order_and_refuses_unknown_executors() -> None:
    from miner.cluster.tasks import map_chunks

    assert map_chunks(divmod, [7, 9, 4], shared=(4,)) == [(1, 3), (2, 1), (1, 0)]
    assert map_chunks(divmod, [], shared=(4,), executor="ray") == []
    assert map_chunks(divmod, [10], shared=(4,), executor="ray") == [(2, 2)]  # one chunk: no Ray needed
    with pytest.raises(ValueError, match="executor"):
        map_chunks(divmod, [1], shared=(1,), executor="dask")
