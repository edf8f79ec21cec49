"""Probe sections of the reports, on one small real run with probe tables (tiny random BERT, synthetic corpus,
`miner run` with a probe section, inline executor): the unit page's ranks equal neuron_rankings, the
overview's Dalvi table equals probe_accuracy, the layer distribution equals a SQL group-by, the plots are
valid SVG; a run without probe tables renders without a Probes section (and without the JSON keys)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from miner.cli import main
from miner.report.build import model_report, unit_report, write_model_report, write_unit_report
from miner.report.render import fmt_pct
from miner.run.catalog import build_catalog, open_catalog
from tests.support.builders import make_corpus, tiny_model, write_job

PROBE_FILES = ("probes", "probe_accuracy", "neuron_rankings", "probe_subsets", "probe_examples")
RANKINGS = ["lca", "probeless"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run with probe tables: 200 sentences, tiny BERT (2 layers of 32), a token and a sentence concept."""
    base = tmp_path_factory.mktemp("probe-report")
    corpus = make_corpus(base / "c", n=200)
    model = tiny_model(base / "m", "bert")
    concepts = [{"name": "pos", "kind": "tags"}, {"name": "sentiment", "kind": "metadata", "field": "sentiment"}]
    job = write_job(base / "job.yaml", name="probe-report", model=str(model), corpus=str(corpus),
                    output=str(base / "run"), top_n=3, threads_per_worker=2,
                    probe={"concepts": concepts, "max_per_class": 10, "rare_classes": "drop", "min_per_class": 3,
                           "l1_grid": [0.0], "l2_grid": [0.0], "rankings": RANKINGS, "epochs": 3})
    assert main(["run", str(job), "--executor", "inline"]) == 0
    return base / "run"


@pytest.fixture(scope="module")
def old_run(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run without its probe tables (as a run from before the probing stage)."""
    out = tmp_path_factory.mktemp("old") / "run"
    skip = {f"{name}.parquet" for name in PROBE_FILES} | {"probing", "catalog.duckdb"}
    shutil.copytree(run, out, ignore=lambda _, names: [n for n in names if n in skip])
    build_catalog(out)
    return out


@pytest.fixture(scope="module")
def pages(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pages")
    write_model_report(run, out)
    write_unit_report(run, _unit(run), out, with_activations=False)
    return out


def _sql(run: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = open_catalog(run)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _unit(run: Path) -> int:
    """A unit of layer 2 that ranks high for some class (so best-class and overall ranks differ in places)."""
    return int(_sql(run, """SELECT unit_id FROM neuron_rankings WHERE class IS NOT NULL ORDER BY rank, unit_id
                            LIMIT 1""")[0][0])


def _expected_ranks(run: Path, unit_id: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Brute force: the unit's overall row and every per-class row, best picked in Python."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for probe_id, method, rank, score in _sql(run, """SELECT probe_id, method, rank, score FROM neuron_rankings
                                                        WHERE unit_id = ? AND class IS NULL""", [unit_id]):
        n = _sql(run, "SELECT count(*) FROM neuron_rankings WHERE probe_id = ? AND method = ? AND class IS NULL",
                 [probe_id, method])[0][0]
        per_class = _sql(run, """SELECT class, rank FROM neuron_rankings WHERE probe_id = ? AND method = ?
                                 AND unit_id = ? AND class IS NOT NULL""", [probe_id, method, unit_id])
        best_class, best_rank = min(per_class, key=lambda cr: (cr[1], cr[0]))
        out[(probe_id, method)] = {"rank": rank, "score": score, "n_ranked": n, "best_class": best_class,
                                   "best_class_rank": best_rank}
    return out


def test_unit_probe_ranks_equal_neuron_rankings(run: Path, pages: Path) -> None:
    unit_id = _unit(run)
    expected = _expected_ranks(run, unit_id)
    assert {m for _, m in expected} == set(RANKINGS) and {p for p, _ in expected} == {"pos:all", "sentiment:all"}
    record = unit_report(run, unit_id, with_activations=False)
    assert record.probes is not None
    got = {(p.probe_id, p.method): {"rank": p.rank, "score": p.score, "n_ranked": p.n_ranked,
                                    "best_class": p.best_class, "best_class_rank": p.best_class_rank}
           for p in record.probes}
    assert got == expected
    accuracy = dict(_sql(run, "SELECT probe_id, test_accuracy FROM probes WHERE scope = 'all'"))
    assert all(p.test_accuracy == accuracy[p.probe_id] for p in record.probes)

    data = json.loads((pages / f"unit-{unit_id}.json").read_text())
    assert {(p["probe_id"], p["method"]): p["rank"] for p in data["probes"]} == {k: v["rank"] for k, v in expected.items()}
    html = (pages / f"unit-{unit_id}.html").read_text()
    assert '<h2 id="probes">Probes</h2>' in html
    rows = re.findall(r'<tr data-probe="([^"]+)" data-method="([^"]+)">.*?<td class="n rank"><b>([\d,]+)</b>.*?'
                      r'<td class="best-class">([^<]*)</td><td class="n class-rank">([\d,]+)', html)
    assert {(p, m): (int(r.replace(",", "")), c, int(cr.replace(",", ""))) for p, m, r, c, cr in rows} == {
        k: (v["rank"], v["best_class"], v["best_class_rank"]) for k, v in expected.items()}
    md = (pages / f"unit-{unit_id}.md").read_text()
    assert "## Probes" in md
    for (probe_id, method), v in expected.items():
        concept = probe_id.split(":")[0]
        assert f"| {concept} | {method} | {v['rank']} | {v['n_ranked']} |" in md


def test_overview_table_equals_probe_accuracy(run: Path, pages: Path) -> None:
    record = model_report(run)
    assert record.probing is not None and [c.concept for c in record.probing] == ["pos", "sentiment"]
    for concept in record.probing:
        pid = concept.probe_id
        acc = {(e, k, r): a for e, k, r, a in _sql(run, """SELECT evaluation, ranking, k_percent, test_accuracy
                                                            FROM probe_accuracy WHERE probe_id = ? AND class IS NULL""",
                                                      [pid])}
        assert concept.all_accuracy == acc[("all", None, 100.0)]
        assert {e.ranking for e in concept.evaluations} == set(RANKINGS)
        for e in concept.evaluations:
            assert (e.top, e.random, e.bottom) == (acc[("top", e.ranking, e.k_percent)],
                                                   acc[("random", e.ranking, e.k_percent)],
                                                   acc[("bottom", e.ranking, e.k_percent)])
        probe = _sql(run, """SELECT test_accuracy, majority_accuracy, control_accuracy, selectivity FROM probes
                             WHERE probe_id = ?""", [pid])[0]
        assert (concept.test_accuracy, concept.majority_accuracy, concept.control_accuracy,
                concept.selectivity) == probe
        subsets = dict(_sql(run, "SELECT ranking, units FROM probe_subsets WHERE probe_id = ?", [pid]))
        assert {s.ranking: s.units for s in concept.subsets} == subsets
        layers = _sql(run, """SELECT site, layer, test_accuracy FROM probes WHERE concept = ? AND scope = 'layer'
                              ORDER BY site DESC, layer""", [concept.concept])
        assert [(lp.site, lp.layer, lp.test_accuracy) for lp in concept.layers] == layers and len(layers) == 2

    html = (pages / "model.html").read_text()
    assert '<h2 id="probing">Probing</h2>' in html
    pos = html[html.index('id="probe-pos"'):html.index('id="probe-sentiment"')]
    for e in record.probing[0].evaluations:
        row = re.search(rf'<tr data-ranking="{e.ranking}" data-k="[^"]+">(.*?)</tr>', pos)
        assert row is not None
        assert f'<td class="n top"><b>{fmt_pct(e.top)}</b></td>' in row.group(1)
        assert f'<td class="n random">{fmt_pct(e.random)}</td>' in row.group(1)
        assert f'<td class="n bottom">{fmt_pct(e.bottom)}</td>' in row.group(1)
        assert f'<td class="n all">{fmt_pct(record.probing[0].all_accuracy)}</td>' in row.group(1)
    data = json.loads((pages / "model.json").read_text())
    assert [e["top"] for e in data["probing"][0]["evaluations"]] == [e.top for e in record.probing[0].evaluations]
    assert "svg" not in data["probing"][0]["plots"][0]
    assert "## Probing" in (pages / "model.md").read_text()


def test_layer_distribution_equals_group_by(run: Path) -> None:
    record = model_report(run)
    assert record.probing is not None
    for concept in record.probing:
        expected = {(m, s, la): n for m, s, la, n in _sql(run, """
            SELECT r.method, u.site, u.layer, count(*) FROM neuron_rankings r JOIN units u USING (unit_id)
            JOIN probe_subsets s ON s.probe_id = r.probe_id AND s.ranking = r.method
            WHERE r.probe_id = ? AND r.class IS NULL AND r.rank <= s.units GROUP BY ALL""", [concept.probe_id])}
        got = {(c.ranking, c.site, c.layer): c.count for c in concept.subset_layers}
        assert {k: v for k, v in got.items() if v} == expected
        assert len(got) == len(RANKINGS) * 2  # every layer listed, zeros included
        assert all(sum(c.count for c in concept.subset_layers if c.ranking == s.ranking) == s.units
                   for s in concept.subsets)


def _svg_root(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    return root


def test_probe_plots_are_valid_svg(run: Path, pages: Path) -> None:
    record = model_report(run)
    assert record.probing is not None
    names = [p.name for c in record.probing for p in c.plots]
    assert names == ["probe-layers-pos", "probe-subset-pos", "probe-layers-sentiment", "probe-subset-sentiment"]
    for plot in (p for c in record.probing for p in c.plots):
        _svg_root(plot.svg)
        assert (pages / "assets" / f"{plot.name}.svg").is_file()  # Markdown's images
    html = (pages / "model.html").read_text()
    inlined = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="[^"]*(?:accuracy per layer|'
                         r'minimal-subset units per layer)"', html)
    assert len(inlined) == 4
    for b64 in inlined:
        _svg_root(base64.b64decode(b64).decode("utf-8"))
    md = (pages / "model.md").read_text()
    assert "](assets/probe-subset-pos.svg)" in md


def test_run_without_probe_tables_has_no_probes_section(old_run: Path, tmp_path: Path) -> None:
    unit_id = int(_sql(old_run, "SELECT min(unit_id) FROM units")[0][0])
    assert unit_report(old_run, unit_id, with_activations=False).probes is None
    assert model_report(old_run).probing is None
    write_model_report(old_run, tmp_path)
    write_unit_report(old_run, unit_id, tmp_path, with_activations=False)
    for name in (f"unit-{unit_id}", "model"):
        html, md = (tmp_path / f"{name}.html").read_text(), (tmp_path / f"{name}.md").read_text()
        assert "Probes" not in html and "Probing" not in html and "## Probes" not in md and "## Probing" not in md
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert "probes" not in data and "probing" not in data
    assert not list((tmp_path / "assets").glob("probe-*.svg"))
