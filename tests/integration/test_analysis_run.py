"""The analysis stage on a real run (MiniLM, step 2 with real spaCy and fastText): tables in the catalog and
documented in schemas/tables.md, valid SVG plots, concept search against a brute force, run comparison."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from miner.analysis.compare import compare_runs, write_comparison
from miner.analysis.stage import run_analysis
from miner.config import AnalysisOptions, AnnotateOptions, VectorOptions
from miner.query.concepts import concept_search
from miner.run.catalog import open_catalog
from miner.run.folder import ANALYSIS_TABLES
from miner.signatures.stage import run_abstract

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "schemas" / "tables.md"
FAST = AnalysisOptions(n_init=2, chance_permutations=20, tsne_iterations=250)


@pytest.fixture(scope="module")
def analysed(tiny_run: Path, tiny_fasttext: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the tiny run with step 2 and the analysis stage done (`miner analyze`'s clustering, map,
    rankings and redundancy), and the analysis summary."""
    from miner.correlate.stage import run_redundancy

    run = tmp_path_factory.mktemp("analysis") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    run_abstract(run, AnnotateOptions(background_size=1500), vectors=VectorOptions(model=tiny_fasttext),
                 executor="inline")
    summary = run_analysis(run, FAST)
    run_redundancy(run)
    return run, summary


def documented_columns(text: str) -> dict[str, set[str]]:
    """{table: {column, ...}} from the `## table` / `- column (TYPE): meaning` format of schemas/tables.md."""
    docs: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"^## (\w+)\s*$", line):
            current = docs.setdefault(m.group(1), set())
        elif current is not None and (m := re.match(r"^- ([\w<>]+) \(([^)]+)\): \S", line)):
            current.add(m.group(1))
    return docs


def test_tables_in_catalog_and_documented(analysed: tuple[Path, dict]) -> None:
    run, summary = analysed
    assert summary["k"] == 6 and summary["n_units"] == 2304 and 0 < summary["accuracy"] <= 1
    assert 1 / 6 < summary["chance_accuracy"] < 0.3
    assert json.loads((run / "manifest.json").read_text())["analysis"]["accuracy"] == summary["accuracy"]
    docs = documented_columns(DOCS.read_text())
    con = open_catalog(run)
    try:
        views = {r[0] for r in con.execute("SELECT unnest(views) FROM catalog_info").fetchall()}
        assert set(ANALYSIS_TABLES) <= views
        for table in ANALYSIS_TABLES:
            columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            missing = set(columns) - docs.get(table, set())
            assert not missing, f"{table}: columns not in schemas/tables.md: {missing}"
        counts = dict(con.execute("""SELECT direction, count(*) FROM unit_clusters GROUP BY direction""").fetchall())
        assert counts == {"top": 2304, "bottom": 2304}
        assert con.execute("SELECT count(*) FROM unit_map WHERE direction = 'top'").fetchone()[0] == 2304
        ranked = con.execute("""SELECT count(*), min(rank), max(rank) FROM layer_rankings
                                WHERE direction = 'top' AND metric = 'pos_selectivity'""").fetchone()
        assert ranked == (2304, 1, 2304)
        boxes = con.execute("""SELECT count(*), sum(n) FROM layer_distribution
                               WHERE direction = 'top' AND metric = 'pos_selectivity'""").fetchone()
        assert boxes == (6, 2304)
    finally:
        con.close()
    assert {Path(p).name for p in summary["plots"]} >= {"unit_map_top.svg", "convergence.svg",
                                                         "layer_boxes_pos_selectivity_top.svg"}
    for name in summary["plots"]:
        root = ET.parse(run / name).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_concept_search_matches_brute_force(analysed: tuple[Path, dict]) -> None:
    run, _ = analysed
    sentences = pq.read_table(run / "sentences.parquet").to_pandas()
    tokens = pq.read_table(run / "tokens.parquet").to_pandas()
    tokens = tokens[tokens.sentence_id.isin(set(sentences.sentence_id))].sort_values(["sentence_id", "position"])
    words = ["the", "of the", "u.s."]
    concept = set()
    for sid, group in tokens.groupby("sentence_id"):
        low = group["lower"].tolist()
        if "the" in low or "u.s." in low or any(low[i:i + 2] == ["of", "the"] for i in range(len(low) - 1)):
            concept.add(sid)
    top = pq.read_table(run / "top_sentences.parquet").to_pandas()
    queues = {u: set(g.sentence_id) for u, g in top[top.direction == "top"].groupby("unit_id")}
    result = concept_search(run, words, top=10).to_pylist()
    assert result[0]["concept_size"] == len(concept)
    for row in result:
        hits = len(queues[row["unit_id"]] & concept)
        assert row["hits"] == hits
        assert row["iou"] == pytest.approx(hits / len(queues[row["unit_id"]] | concept))
    best = max(len(q & concept) / len(q | concept) for q in queues.values())
    assert result[0]["iou"] == pytest.approx(best)
    domain = sentences.domain.value_counts().index[0]
    by_domain = concept_search(run, predicate_sql=f"domain = '{domain}'", top=3)
    assert by_domain["concept_size"][0].as_py() == int((sentences.domain == domain).sum())


def test_compare_runs(analysed: tuple[Path, dict], tmp_path: Path) -> None:
    run, summary = analysed
    other = tmp_path / "random-init"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("catalog.duckdb", "plots", *[f"{t}.parquet"
                                                                                         for t in ANALYSIS_TABLES]))
    manifest = json.loads((other / "manifest.json").read_text())
    del manifest["analysis"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    out = write_comparison([run, other], tmp_path / "cmp", FAST)
    assert out["runs"][0]["accuracy"] == summary["accuracy"]
    assert out["runs"][1]["accuracy"] == pytest.approx(summary["accuracy"])  # same vectors, same seed
    pos = [r for r in out["layers"] if r["metric"] == "pos_selectivity"]
    assert len(pos) == 2 * 6 and set(pos[0]["median"]) == {"run", "random-init"}
    assert set(out["convergence"]) == {"run", "random-init"}
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["runs"][0]["label"] == "run"
    for path in out["files"]:
        assert ET.parse(path).getroot().tag.endswith("svg")
    assert compare_runs([run, run], FAST)["runs"][1]["label"] == "run (2)"


def test_redundancy_and_matches_reach_the_reports(analysed: tuple[Path, dict], tmp_path: Path) -> None:
    """`miner analyze`'s redundancy clusters and `miner match` (a run against an identical copy) land in the
    catalog and on the unit page and overview: every unit matches itself with r = 1."""
    from miner.cli.main import main
    from miner.report.build import model_report, unit_report
    from miner.report.render import render_html, render_markdown

    src, _ = analysed
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    other = tmp_path / "twin"
    shutil.copytree(src, other, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    assert main(["analyze", str(run), "--n-init", "2", "--chance-permutations", "20", "--tsne-iterations", "250"]) == 0
    assert main(["match", str(run), str(other)]) == 0
    with open_catalog(run) as con:
        shares = con.execute("SELECT count(*), min(redundant_share), max(redundant_share) FROM layer_redundancy"
                             ).fetchall()[0]
        self_matched = con.execute("""SELECT count(*) FILTER (m.best_unit = m.unit_id AND abs(m.corr - 1) < 1e-3),
                                             count(*) FROM unit_matches m JOIN units u USING (unit_id)
                                      WHERE m.corr IS NOT NULL""").fetchall()[0]
    assert shares[0] == 6 and 0.0 <= shares[1] <= shares[2] <= 1.0
    assert self_matched[1] > 0 and self_matched[0] >= 0.95 * self_matched[1]
    unit = unit_report(run, "3:17", n_sentences=2, with_activations=False)
    assert unit.causal is not None and unit.causal.redundancy is not None and unit.causal.matches
    match = unit.causal.matches[0]
    assert match.other_run == "tiny" and match.best_label == "3:17" and match.corr == pytest.approx(1.0, abs=1e-3)
    html = render_html(unit, tmp_path / "pages").read_text()
    assert "Best match in other runs" in html and "Redundancy" in html
    overview = model_report(run)
    assert overview.causal is not None and overview.causal.redundancy and len(overview.causal.redundancy) == 6
    assert overview.causal.matches and {m.unmatched for m in overview.causal.matches} == {0}
    md = render_markdown(overview, tmp_path / "md").read_text()
    assert "Redundancy, other models, ablations" in md
