"""Cross-unit analysis: Hungarian accuracy, k-means on synthetic layers, rankings, layer distributions and
concept search on a hand-made run, each against a brute-force twin; the stage end to end on that run; the
docstring examples of the pure modules; plot file names and failed plot writes."""

from __future__ import annotations

import doctest
import errno
import importlib
import itertools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydantic
import pytest

from miner.analysis import plots
from miner.analysis.clustering import chance_accuracy, cluster_units, hungarian_accuracy
from miner.analysis.compare import compare_runs
from miner.analysis.rankings import layer_distribution, layer_rankings, rank_values
from miner.analysis.stage import run_analysis
from miner.config import AnalysisOptions
from miner.errors import ConfigError, MinerError
from miner.query.concepts import check_predicate, concept_scores, concept_search, word_pattern, word_sentences


def brute_force_accuracy(true: list, clusters: list) -> float:
    """Best agreement over every one-to-one map of clusters to labels (padding with 'unmatched')."""
    labels, cl = sorted(set(true)), sorted(set(clusters))
    best = 0
    targets = labels + [None] * max(0, len(cl) - len(labels))
    for perm in itertools.permutations(targets, len(cl)):
        mapping = dict(zip(cl, perm))
        best = max(best, sum(mapping[c] == t for t, c in zip(true, clusters)))
    return best / len(true)


def test_hungarian_accuracy_hand_made() -> None:
    assert hungarian_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 2, 2]) == 1.0
    assert hungarian_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2]) == pytest.approx(5 / 6)
    assert hungarian_accuracy([0, 0, 0, 1], [0, 1, 2, 3]) == 0.5  # more clusters than labels: extras are wrong
    assert hungarian_accuracy(["a", "a", "b", "b"], [7, 7, 7, 7]) == 0.5  # one cluster matches one label


def test_hungarian_accuracy_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        n, k_true, k = int(rng.integers(1, 12)), int(rng.integers(1, 4)), int(rng.integers(1, 5))
        true, clusters = rng.integers(0, k_true, n).tolist(), rng.integers(0, k, n).tolist()
        assert hungarian_accuracy(true, clusters) == pytest.approx(brute_force_accuracy(true, clusters))


def test_chance_accuracy_is_above_uniform_and_below_one() -> None:
    layers = np.repeat(np.arange(6), 100)
    chance = chance_accuracy(layers, np.random.default_rng(0).integers(0, 6, 600), permutations=50)
    assert 1 / 6 < chance < 0.25


def test_kmeans_recovers_well_separated_layers() -> None:
    rng = np.random.default_rng(0)
    layers = np.repeat(np.arange(1, 7), 40)
    centres = rng.normal(size=(6, 20)) * 10
    vectors = centres[layers - 1] + rng.normal(size=(len(layers), 20)) * 0.1
    order = rng.permutation(len(layers))
    cluster, matched, summary = cluster_units(vectors[order], layers[order], n_init=3, permutations=20)
    assert summary["accuracy"] == 1.0 and summary["k"] == 6 and summary["n_units"] == 240
    assert (matched == layers[order]).all()
    assert (cluster == layers[order] - 1).all()  # cluster i is the one matched to the i-th layer
    assert summary["chance_accuracy"] < 0.3


def test_rank_values_docstring_example() -> None:
    rank, percentile = rank_values(np.array([0.5, 2.0, 0.5]), np.array([7, 3, 1]))
    assert rank.tolist() == [3, 1, 2] and percentile.tolist() == [0.0, 100.0, 50.0]


UNITS = pa.table({"unit_id": pa.array(range(6), pa.int32()), "site": ["hidden"] * 6,
                  "layer": pa.array([1, 1, 1, 2, 2, 2], pa.int16()), "idx": pa.array([0, 1, 2, 0, 1, 2], pa.int32())})
STATS = pa.table({"unit_id": pa.array(range(6), pa.int32()), "direction": ["top"] * 6,
                  "pos_selectivity": [2.0, 5.0, None, 5.0, 1.0, 3.0],
                  "sentiment_std": [0.1, 0.5, 0.3, float("nan"), 0.2, 0.9],
                  "sentiment_n": pa.array([10, 10, 1, 10, 10, 10], pa.int32()),
                  "pos_selectivity_tag": ["NN"] * 6})


def test_layer_rankings_tiny_table() -> None:
    out = layer_rankings(STATS, UNITS, ["pos_selectivity", "sentiment_std"], ["top", "bottom"], min_sentiment_n=5)
    pos = out.filter(pc.equal(out["metric"], "pos_selectivity")).to_pydict()
    assert pos["unit_id"] == [1, 3, 5, 0, 4]  # None left out; the 5.0 tie goes to the smaller unit_id
    assert pos["rank"] == [1, 2, 3, 4, 5] and pos["percentile"] == [100.0, 75.0, 50.0, 25.0, 0.0]
    assert pos["layer"] == [1, 2, 2, 1, 2]
    sent = out.filter(pc.equal(out["metric"], "sentiment_std")).to_pydict()
    assert sent["unit_id"] == [0, 4, 1, 5]  # lowest std first; unit 2 has 1 labelled sentence, unit 3 NaN
    with pytest.raises(ConfigError, match="metrics: 'pos_selectivity_tag'"):
        layer_rankings(STATS, UNITS, ["pos_selectivity_tag"], ["top"])


def test_three_way_sentiment_is_filtered_by_its_own_count() -> None:
    stats = STATS.append_column("sentiment_std_3way", pa.array([0.4, 0.1, 0.2, 0.3, 0.6, 0.5])).append_column(
        "sentiment_n_3way", pa.array([10, 10, 10, 2, 10, None], pa.int32()))
    out = layer_rankings(stats, UNITS, ["sentiment_std", "sentiment_std_3way"], ["top"], min_sentiment_n=5)
    three = out.filter(pc.equal(out["metric"], "sentiment_std_3way"))
    assert three["unit_id"].to_pylist() == [1, 2, 0, 4]  # lowest first; unit 3: 2 sentences, unit 5: no count
    binary = out.filter(pc.equal(out["metric"], "sentiment_std"))
    assert binary["unit_id"].to_pylist() == [0, 4, 1, 5]  # filtered by sentiment_n, as before


def test_default_rankings_are_the_papers_measures_per_layer() -> None:
    """Signatures of random tagged sentences, ranked with the default metrics: each layer's median equals numpy's
    median of max(noun, verb, adj relative frequency) and of np.std of the +1/-1 polarity (neutral left out)."""
    from miner.config import SignatureOptions
    from miner.signatures.aggregate import compute_signatures

    rng = np.random.default_rng(7)
    tags = np.array(["NN", "NNS", "VB", "VBD", "JJ", "DT", "IN", "SYM"])
    labels = np.array(["positive", "negative", "neutral", None], dtype=object)
    n_sent, n_units = 80, 12
    lengths = rng.integers(1, 8, n_sent)
    sent_tags = [rng.choice(tags, n).tolist() for n in lengths]
    sentiment = rng.choice(labels, n_sent).tolist()
    queues = {u: rng.choice(n_sent, int(rng.integers(8, 20)), replace=False).tolist() for u in range(n_units)}
    background = np.arange(40, 80)
    top = pa.table({"unit_id": pa.array([u for u, q in queues.items() for _ in q], pa.int32()),
                    "direction": ["top"] * sum(map(len, queues.values())),
                    "rank": pa.array([r for q in queues.values() for r in range(1, len(q) + 1)], pa.int32()),
                    "sentence_id": pa.array([s for q in queues.values() for s in q], pa.int64())})
    sentences = pa.table({"sentence_id": pa.array(range(n_sent), pa.int64()), "n_tokens": pa.array(lengths, pa.int32()),
                          "sentiment": pa.array(sentiment, pa.string())})
    tok = [(sid, i, t) for sid, ts in enumerate(sent_tags) for i, t in enumerate(ts)]
    tokens = pa.table({"sentence_id": pa.array([t[0] for t in tok], pa.int64()),
                       "position": pa.array([t[1] for t in tok], pa.int32()), "lower": ["w"] * len(tok),
                       "pos": [t[2] for t in tok]})
    stats = compute_signatures(top, sentences, tokens, background, SignatureOptions())["unit_stats"]
    units = pa.table({"unit_id": pa.array(range(n_units), pa.int32()),
                      "layer": pa.array(np.arange(n_units) % 3, pa.int16())})
    options = AnalysisOptions()
    dist = layer_distribution(layer_rankings(stats, units, options.metrics, ["top"], options.min_sentiment_n))
    bg_tags = [t for s in background for t in sent_tags[s]]
    classes = {"noun": ("NN", "NNS"), "verb": ("VB", "VBD"), "adj": ("JJ",)}
    expected: dict[tuple[str, int], list[float]] = {}
    for u, q in queues.items():
        unit_tags = [t for s in q for t in sent_tags[s]]
        rel = [(sum(t in c for t in unit_tags) / len(unit_tags)) / (sum(t in c for t in bg_tags) / len(bg_tags))
               for c in classes.values()]
        expected.setdefault(("pos_selectivity", u % 3), []).append(max(rel))
        polarity = [{"positive": 1.0, "negative": -1.0}[sentiment[s]] for s in q
                    if sentiment[s] in ("positive", "negative")]
        if len(polarity) >= options.min_sentiment_n:
            expected.setdefault(("sentiment_std", u % 3), []).append(float(np.std(polarity)))
    got = {(r["metric"], r["layer"]): r for r in dist.to_pylist()}
    assert options.metrics == ["pos_selectivity", "sentiment_std"]
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert got[key]["n"] == len(values)
        assert got[key]["median"] == pytest.approx(float(np.median(values))), key


def test_layer_boxes_name_the_papers_measures() -> None:
    dist = layer_distribution(layer_rankings(STATS, UNITS, ["pos_selectivity", "sentiment_std"], ["top"], 5))
    assert "noun / verb / adj" in plots.svg_text(plots.layer_boxes_figure(dist, "pos_selectivity"))
    assert "binary polarity" in plots.svg_text(plots.layer_boxes_figure(dist, "sentiment_std"))


def test_layer_distribution_equals_numpy_percentiles() -> None:
    rng = np.random.default_rng(3)
    n = 50
    rankings = pa.table({"unit_id": pa.array(range(n), pa.int32()), "direction": ["top"] * n,
                         "layer": pa.array(rng.integers(1, 4, n), pa.int16()), "metric": ["m"] * n,
                         "value": rng.normal(size=n), "rank": pa.array(rng.permutation(n) + 1, pa.int32()),
                         "percentile": np.zeros(n)})
    dist = layer_distribution(rankings).to_pylist()
    assert len(dist) == 3
    layers = rankings["layer"].to_numpy()
    for row in dist:
        v = rankings["value"].to_numpy()[layers == row["layer"]]
        assert row["n"] == len(v)
        expected = [v.min(), *np.percentile(v, [25, 50, 75]), v.max(), v.mean()]
        assert [row[k] for k in ("min", "q1", "median", "q3", "max", "mean")] == pytest.approx(expected)
    simple = layer_distribution(pa.table({
        "unit_id": pa.array([1, 2, 3, 4], pa.int32()), "direction": ["top"] * 4, "layer": pa.array([1] * 4, pa.int16()),
        "metric": ["m"] * 4, "value": [1.0, 2.0, 3.0, 4.0], "rank": pa.array([4, 3, 2, 1], pa.int32()),
        "percentile": [0.0] * 4}))
    row = simple.to_pylist()[0]
    assert (row["min"], row["q1"], row["median"], row["q3"], row["max"]) == (1.0, 1.75, 2.5, 3.25, 4.0)


# --- a hand-made run folder -------------------------------------------------------------------------------

TEXTS = [
    ("The U.S. team won gold", "news", None),
    ("United States troops landed", "news", None),
    ("The united states of mind", "drama_poetry", None),
    ("lol im so happy", "social_media", "positive"),
    ("America is big", "encyclopedia", None),
    ("Trusted sources say", "news", None),
    ("us and them", "social_media", "negative"),
    ("unitedstates is one word", "social_media", "positive"),
    ("The states united", "drama_poetry", None),
    ("I love the USA", "social_media", "positive"),
]
WORDS = ["u.s.", "United  States", "america", "us"]
EXPECTED_CONCEPT = {0, 1, 2, 4, 6}
# (unit, direction) -> queue
QUEUES = {(0, "top"): [0, 1, 2, 4], (1, "top"): [0, 3, 5], (2, "top"): [3, 5, 7, 8, 9], (3, "top"): [6, 4],
          (4, "top"): [1, 2, 3, 4, 5, 6, 7, 8, 9, 0], (5, "top"): [9],
          (0, "bottom"): [5, 7], (1, "bottom"): [0, 1], (2, "bottom"): [2, 3], (3, "bottom"): [4, 9],
          (4, "bottom"): [6, 8], (5, "bottom"): [3, 4]}


def make_run(folder: Path, dim: int = 4) -> Path:
    """A complete run folder with hand-made tables (units in 2 layers, queues, sentences, tokens, step-2 tables)."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"status": "complete", "job": {"name": folder.name, "top_n": 10},
                                                       "model": {"init": "pretrained", "init_seed": 0}}))
    pq.write_table(UNITS, folder / "units.parquet")
    top = {"unit_id": [], "direction": [], "rank": [], "sentence_id": []}
    for (unit, direction), ids in QUEUES.items():
        for rank, sid in enumerate(ids, 1):
            for key, value in zip(top, (unit, direction, rank, sid)):
                top[key].append(value)
    pq.write_table(pa.table({"unit_id": pa.array(top["unit_id"], pa.int32()), "direction": top["direction"],
                             "rank": pa.array(top["rank"], pa.int32()),
                             "sentence_id": pa.array(top["sentence_id"], pa.int64()),
                             "score": pa.array([1.0 / r for r in top["rank"]], pa.float32()),
                             "peak_position": pa.array([1] * len(top["rank"]), pa.int32()),
                             "peak_token": ["x"] * len(top["rank"]),
                             "peak_score": pa.array([1.0] * len(top["rank"]), pa.float32())}),
                   folder / "top_sentences.parquet")
    pq.write_table(pa.table({"sentence_id": pa.array(range(len(TEXTS)), pa.int64()), "text": [t for t, _, _ in TEXTS],
                             "domain": [d for _, d, _ in TEXTS], "sentiment": [s for _, _, s in TEXTS]}),
                   folder / "sentences.parquet")
    rows = [(sid, pos, tok) for sid, (text, _, _) in enumerate(TEXTS) for pos, tok in enumerate(text.split())]
    rows += [(100, 0, "America"), (100, 1, "rocks")]  # a background sentence: never part of a concept
    pq.write_table(pa.table({"sentence_id": pa.array([r[0] for r in rows], pa.int64()),
                             "position": pa.array([r[1] for r in rows], pa.int32()), "token": [r[2] for r in rows],
                             "lower": [r[2].lower() for r in rows], "pos": ["NN"] * len(rows)}),
                   folder / "tokens.parquet")
    rng = np.random.default_rng(0)
    vectors = np.repeat(np.eye(dim)[:2] * 5, 3, axis=0) + rng.normal(size=(6, dim)) * 0.01
    vec = np.concatenate([vectors, vectors[::-1]]).astype(np.float32)
    pq.write_table(pa.table({"unit_id": pa.array(list(range(6)) * 2, pa.int32()),
                             "direction": ["top"] * 6 + ["bottom"] * 6,
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), dim)}),
                   folder / "unit_vectors.parquet")
    stats = pa.concat_tables([STATS, STATS.set_column(1, "direction", pa.array(["bottom"] * 6))])
    pq.write_table(stats, folder / "unit_stats.parquet")
    conv = {"block": [0, 1, 0, 1], "sentences_seen": [5, 10, 5, 10], "direction": ["top", "top", "bottom", "bottom"],
            "site": ["all"] * 4, "layer": [-1] * 4, "updates": [60, 6, 60, 3], "entries": [60] * 4,
            "update_rate": [1.0, 0.1, 1.0, 0.05]}
    pq.write_table(pa.table(conv), folder / "convergence.parquet")
    return folder


def brute_force_concept(words: list[str]) -> set[int]:
    """Sentences whose whitespace tokens contain an entry's tokens consecutively (case-insensitive)."""
    found = set()
    for sid, (text, _, _) in enumerate(TEXTS):
        tokens = text.lower().split()
        for entry in words:
            parts = entry.lower().split()
            if any(tokens[i:i + len(parts)] == parts for i in range(len(tokens))):
                found.add(sid)
    return found


def test_concept_words_tokens_and_text_agree_with_brute_force(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    assert brute_force_concept(WORDS) == EXPECTED_CONCEPT
    assert set(word_sentences(run, WORDS, "tokens").tolist()) == EXPECTED_CONCEPT
    assert set(word_sentences(run, WORDS, "text").tolist()) == EXPECTED_CONCEPT
    pattern = word_pattern(["u.s.", "united states"])
    assert pattern == r"(^|[^\pL\pN_])(?:u\.s\.|united\s+states)([^\pL\pN_]|$)"
    python = re.compile(r"(?<![^\W_])(?:u\.s\.|united\s+states)(?![^\W_])", re.IGNORECASE)
    assert set(word_sentences(run, ["u.s.", "united states"], "text").tolist()) == {
        i for i, (t, _, _) in enumerate(TEXTS) if python.search(t)}


def test_concept_scores_equal_sets() -> None:
    rng = np.random.default_rng(5)
    n_units, n_sentences = 7, 40
    queues = {u: set(rng.choice(n_sentences, int(rng.integers(1, 15)), replace=False).tolist()) for u in range(n_units)}
    concept = set(rng.choice(n_sentences, 9, replace=False).tolist())
    unit_ids = np.array([u for u, q in queues.items() for _ in q])
    sentence_ids = np.array([s for q in queues.values() for s in q])
    scores = concept_scores(unit_ids, sentence_ids, np.array(sorted(concept)), n_units)
    for u, q in queues.items():
        hits = len(q & concept)
        assert scores["hits"][u] == hits and scores["queue_size"][u] == len(q)
        assert scores["precision"][u] == pytest.approx(hits / len(q))
        assert scores["recall"][u] == pytest.approx(hits / len(concept))
        assert scores["iou"][u] == pytest.approx(hits / len(q | concept))


def test_concept_search_hand_made_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    result = concept_search(run, WORDS, top=None).to_pylist()
    assert [r["rank"] for r in result] == list(range(1, 7))
    by_unit = {r["unit_id"]: r for r in result}
    for (unit, direction), queue in QUEUES.items():
        if direction != "top":
            continue
        q = set(queue)
        row = by_unit[unit]
        assert row["hits"] == len(q & EXPECTED_CONCEPT) and row["concept_size"] == 5
        assert row["precision"] == pytest.approx(len(q & EXPECTED_CONCEPT) / len(q))
        assert row["iou"] == pytest.approx(len(q & EXPECTED_CONCEPT) / len(q | EXPECTED_CONCEPT))
        assert row["lift"] == pytest.approx(row["precision"] / 0.5)
    keys = [(-r["iou"], -r["precision"], r["unit_id"]) for r in result]
    assert keys == sorted(keys) and result[0]["unit_id"] == 0  # unit 0's queue is all United States
    assert concept_search(run, WORDS, top=2).num_rows == 2
    social = concept_search(run, predicate_sql="domain = 'social_media' AND sentiment = 'positive'", top=None)
    assert social["concept_size"][0].as_py() == 3  # sentences 3, 7, 9
    assert social["unit_id"][0].as_py() == 2 and social["hits"][0].as_py() == 3
    both = concept_search(run, ["us", "lol"], predicate_sql="domain = 'social_media'", direction="bottom", top=None)
    assert both["concept_size"][0].as_py() == 2  # sentences 3 and 6
    with pytest.raises(MinerError, match="no sentence"):
        concept_search(run, ["zebra"])
    with pytest.raises(ConfigError):
        concept_search(run)


@pytest.mark.parametrize("bad", ["1 = 1) UNION SELECT (1", "true; DROP VIEW units", "(domain = 'news'",
                                 "domain = 'news' ORDER BY 1", "true LIMIT 1", "  "])
def test_check_predicate_refuses(bad: str) -> None:
    with pytest.raises(ConfigError, match="predicate"):
        check_predicate(bad)


def test_check_predicate_passes_expressions() -> None:
    assert check_predicate(" domain = 'news' AND text LIKE '%;)%' ") == "domain = 'news' AND text LIKE '%;)%'"
    check_predicate("sentence_id IN (SELECT sentence_id FROM tokens WHERE lower = 'lol')")


def test_predicate_cannot_write(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    with pytest.raises(MinerError):
        concept_search(run, predicate_sql="sentence_id IN (SELECT 1 FROM (DELETE FROM units RETURNING *))")


def test_run_analysis_on_hand_made_run(tmp_path: Path) -> None:
    from miner.run.catalog import open_catalog

    run = make_run(tmp_path / "run")
    options = AnalysisOptions(n_init=2, chance_permutations=10, tsne_iterations=250, map_directions=["top", "bottom"])
    summary = run_analysis(run, options)
    assert summary["accuracy"] == 1.0 and summary["k"] == 2 and summary["n_units"] == 6
    assert json.loads((run / "manifest.json").read_text())["analysis"]["accuracy"] == 1.0
    con = open_catalog(run)
    try:
        assert con.execute("SELECT count(*) FROM unit_clusters").fetchone()[0] == 12
        assert con.execute("SELECT count(*) FROM unit_map").fetchone()[0] == 12
        views = {r[0] for r in con.execute("SELECT unnest(views) FROM catalog_info").fetchall()}
    finally:
        con.close()
    assert {"unit_clusters", "unit_map", "layer_rankings", "layer_distribution"} <= views
    for name in summary["plots"]:
        assert ET.parse(run / name).getroot().tag.endswith("svg")
    assert not list(run.glob(".*tmp*"))
    with pytest.raises(pydantic.ValidationError, match="colour"):
        AnalysisOptions(colour="red")


def test_compare_runs(tmp_path: Path) -> None:
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "x" / "a")
    run_analysis(a, AnalysisOptions(n_init=2, chance_permutations=5, map_directions=[]))
    out = compare_runs([a, b], AnalysisOptions(n_init=2, chance_permutations=5, map_directions=[]))
    json.dumps(out)
    assert [r["label"] for r in out["runs"]] == ["a", "a (2)"]
    assert [r["accuracy"] for r in out["runs"]] == [1.0, 1.0]
    row = next(r for r in out["layers"]
               if (r["metric"], r["direction"], r["layer"]) == ("pos_selectivity", "top", 1))
    assert row["median"] == {"a": 3.5, "a (2)": 3.5}
    assert out["convergence"]["a"]["top"] == {"sentences_seen": [5, 10], "update_rate": [1.0, 0.1]}
    with pytest.raises(ConfigError):
        compare_runs([a])


@pytest.mark.parametrize("module", ["miner.analysis.clustering", "miner.analysis.rankings", "miner.analysis.plots",
                                    "miner.analysis.compare", "miner.query.concepts", "miner.report.plots"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed


def test_svg_names_read_back() -> None:
    for kind, metric, direction in [("unit_map", None, "top"), ("unit_map", None, "bottom"), ("convergence", None, None),
                                    ("layer_boxes", "pos_selectivity", "top"), ("layer_boxes", "x_top", "bottom")]:
        name = plots.svg_name(kind, metric, direction)
        assert plots.svg_kind(name) == (kind, metric, direction)
    for other in ("unit_map.svg", "layer_boxes_top.svg", "tsne_map.svg", "convergence.png", "unit_map_left.svg"):
        assert plots.svg_kind(other) is None
    with pytest.raises(ValueError):
        plots.svg_name("layer_boxes", direction="top")


def test_a_failed_plot_write_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def disk_full(self: Figure, target: object, **options: object) -> None:
        Path(str(target)).write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    out = tmp_path / "plots" / "convergence.svg"
    curves = {"run": {"top": {"sentences_seen": [5, 10], "update_rate": [1.0, 0.1]}}}
    with pytest.raises(OSError, match="No space left") as caught:
        plots.plot_convergence(curves, out)
    assert caught.value.filename == str(out) and caught.value.errno == errno.ENOSPC
    assert list((tmp_path / "plots").iterdir()) == []
