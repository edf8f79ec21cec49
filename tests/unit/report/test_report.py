"""Reports on a tiny real run (random BERT, hidden + mlp units, random init) with hand-made step-2 tables:
the record equals the catalog, token activations reproduce the stored scores and peaks, HTML and Markdown
escape corpus text, unit ids are resolved or refused with one clear line."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner.cli import REPORT_FORMATS, build_parser
from miner.errors import ConfigError, InputError, OutputConflictError
from miner.report.build import (
    FORMATS,
    model_report,
    render_html,
    render_json,
    render_markdown,
    resolve_unit,
    unit_report,
    write_model_report,
    write_unit_report,
)
from miner.report.records import SentenceEntry, WordActivation
from miner.report.render import (
    fmt_num,
    fmt_pct,
    level,
    md_escape,
    md_sentence,
    segments,
)
from miner.run.catalog import build_catalog, open_catalog
from tests.support.builders import SENTENCES, tiny_model, write_job, write_jsonl

SCRIPT = "<script>alert(1)</script> is what the attacker typed."
MARKDOWN_HOSTILE = "A | pipe, *stars*, _under_ and [a link](http://example.com) & more."
EVIL_PATTERN = "<img src=x onerror=alert(2)>"
TOP_N = 4


def _step2_tables(run: Path) -> None:
    """Write signatures, unit_stats and unit_metadata for every queue of a run (values derived from ids, so
    every number is checkable), with a hostile word pattern in unit 0's top signature."""
    top = pq.read_table(run / "top_sentences.parquet").to_pandas()
    sentences = pq.read_table(run / "sentences.parquet").to_pandas().set_index("sentence_id")
    sig, stats, meta = [], [], []
    for (unit, direction), queue in top.groupby(["unit_id", "direction"]):
        n = len(queue)
        for kind in ("word", "word_pattern", "pos_pattern"):
            for rank in range(1, 4):
                pattern = {"word": f"w{unit}x{rank}", "word_pattern": f"a{rank} b{unit}",
                           "pos_pattern": f"NN VB{'D' * rank}"}[kind]
                if unit == 0 and direction == "top" and kind == "word" and rank == 1:
                    pattern = EVIL_PATTERN
                support = 1 + (unit + rank) % n
                sig.append({"unit_id": unit, "direction": direction, "kind": kind, "rank": rank, "pattern": pattern,
                            "length": 1 if kind == "word" else 2, "support": support, "share": support / n,
                            "background_support": rank + 1, "background_share": (rank + 1) / 50,
                            "rel_freq": (support / n) / ((rank + 1) / 50)})
        domains = sentences.loc[queue.sentence_id, "domain"].value_counts()
        for value, count in domains.items():
            meta.append({"unit_id": unit, "direction": direction, "field": "domain", "value": value, "count": int(count),
                         "share": count / n, "corpus_share": 1 / 3, "rel_share": 3 * count / n})
        meta.append({"unit_id": unit, "direction": direction, "field": "sentiment", "value": None, "count": n,
                     "share": 1.0, "corpus_share": 1.0, "rel_share": 1.0})
        stats.append({"unit_id": unit, "direction": direction, "n_sentences": n, "avg_length": 5.0 + unit % 7,
                      "noun_ratio": 0.25, "noun_rel": 1.25, "verb_ratio": 0.1, "verb_rel": 0.5, "adj_ratio": 0.05,
                      "adj_rel": float("nan"), "pos_selectivity": 9.0 if unit == 0 else 1.0 + unit / 1000,
                      "pos_selectivity_tag": "NN",
                      "sentiment_n": 0, "sentiment_mean": None, "sentiment_std": None,
                      "dominant_domain": domains.index[0], "dominant_domain_share": domains.iloc[0] / n,
                      "typical_sentence_id": int(queue.sentence_id.iloc[-1]), "typical_distance": 0.5})
    for name, rows in (("signatures", sig), ("unit_stats", stats), ("unit_metadata", meta)):
        pq.write_table(pa.Table.from_pylist(rows), run / f"{name}.parquet")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete tiny run: 14 sentences (one with a script tag), random BERT, sites hidden + mlp, N = 4."""
    from miner.config import PrepareOptions, RunOptions, load_job
    from miner.corpus.prepare import prepare_corpus
    from miner.mining.driver import run_mining

    base = tmp_path_factory.mktemp("report-run")
    texts = [*SENTENCES, SCRIPT, MARKDOWN_HOSTILE, "Short one here.", "Another rather long sentence " * 12 + "ends."]
    rows = [{"text": t, "domain": ["news", "social", "wiki"][i % 3]} for i, t in enumerate(texts)]
    prepare_corpus([write_jsonl(base / "docs.jsonl", rows)], base / "corpus", PrepareOptions(), RunOptions(workers=1))
    model = tiny_model(base / "model", "bert")
    job = write_job(base / "job.yaml", name="tiny-report", model=str(model), corpus=str(base / "corpus"), output="run",
                    sites=["hidden", "mlp"], top_n=TOP_N, batch_size=4, block_size=8, init="random", init_seed=7,
                    max_length=24, checkpoint_seconds=0)
    spec, where = load_job(job)
    manifest = run_mining(spec, where, executor="inline")
    out = Path(manifest["run_dir"])
    _step2_tables(out)
    build_catalog(out)
    return out


def _units_holding(run: Path, text_start: str) -> list[int]:
    con = open_catalog(run)
    try:
        return [r[0] for r in con.execute("""SELECT DISTINCT unit_id FROM unit_top WHERE starts_with(text, ?)
                                             ORDER BY unit_id""", [text_start]).fetchall()]
    finally:
        con.close()


def test_helpers_examples() -> None:
    assert level(1.0, 2.0) == 5 and level(-2.0, 2.0) == -10 and level(0.05, 2.0) == 1 and level(0.0, 2.0) == 0
    assert fmt_num(None) == "–" and fmt_num(1234.5) == "1,234" and fmt_num(0.0123456) == "0.0123"
    assert fmt_pct(0.2345) == "23.4%" or fmt_pct(0.2345) == "23.5%"
    assert md_escape("<script>a|b*c") == "&lt;script&gt;a\\|b\\*c"
    assert md_escape("line\nbreak") == "line break"
    text = "@united flighted delayed for hours."
    spans = [(0, 1, 2.0), (1, 7, 1.5), (8, 16, 1.2), (17, 24, 0.1), (25, 28, 0.2), (29, 34, 0.3), (34, 35, 3.0)]
    words = [WordActivation(text[a:b], a, b, v, [text[a:b]]) for a, b, v in spans]
    s = SentenceEntry(1, 0, 1.0, text, 1, "@", 2.0, {}, words=words)
    assert md_sentence(s, 2.0) == "**@united flighted** delayed for hours."  # punctuation alone is not bold


def test_resolve_unit_forms(run: Path) -> None:
    con = open_catalog(run)
    try:
        first_mlp = con.execute("SELECT min(unit_id) FROM units WHERE site = 'mlp' AND layer = 2").fetchall()[0][0]
        assert resolve_unit(con, "1:5").unit_id == 5 and resolve_unit(con, "hidden:1:5").unit_id == 5
        assert resolve_unit(con, 33).label == "2:1" and resolve_unit(con, "33").label == "2:1"
        assert resolve_unit(con, "mlp:2:7").unit_id == first_mlp + 7
        for spec, message in [("99999", "no such unit_id"), ("3:1", "layer 3 is not in the run"),
                              ("1:32", "index 32 is out of range"), ("mlp:0:1", "layer 0 is not in the run"),
                              ("banana", "not a unit id or LAYER:IDX"), ("-1", "not a unit id"),
                              ("attn:1:1", "not a unit id")]:
            with pytest.raises(InputError, match=message) as err:
                resolve_unit(con, spec)
            assert "\n" not in str(err.value)
    finally:
        con.close()


def test_run_without_step2_is_one_clear_error(run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("signatures.parquet", "unit_stats.parquet",
                                                              "unit_metadata.parquet", "catalog.duckdb", "checkpoint"))
    with pytest.raises(InputError, match="miner signatures"):
        unit_report(bare, "1:0", with_activations=False)
    with pytest.raises(InputError, match="miner signatures"):
        model_report(bare)
    with pytest.raises(InputError, match="not a mining run|no such run folder"):
        unit_report(tmp_path / "nothing", "1:0")


@pytest.mark.parametrize("spec", ["1:3", "2:30", "mlp:1:5", "mlp:2:127"])
def test_token_activations_reproduce_stored_scores_and_peaks(run: Path, spec: str) -> None:
    report = unit_report(run, spec, n_sentences=TOP_N)
    assert report.activations.computed and report.activations.max_score_diff < 1e-5
    for d in report.directions:
        assert len(d.sentences) == TOP_N
        for s in d.sentences:
            values = np.array([t.activation for t in s.tokens])
            assert abs(values.mean() - s.score) < 1e-5
            assert abs(s.recomputed_score - s.score) < 1e-5
            peak = values.max() if d.direction == "top" else values.min()
            assert abs(peak - s.peak_score) < 1e-5
            at = next(t for t in s.tokens if t.position == s.peak_position)
            assert abs(at.activation - s.peak_score) < 1e-5 and at.token == s.peak_token
            assert all(t.token not in ("[CLS]", "[SEP]", "[PAD]") for t in s.tokens)
            assert len(s.tokens) == s.n_model_tokens - 2  # [CLS] and [SEP] excluded
            assert "".join(w.text for w in s.words).replace(" ", "") in s.text.replace(" ", "")


def test_truncated_sentence_shows_the_cut(run: Path) -> None:
    unit = _units_holding(run, "Another rather long")[0]
    report = unit_report(run, unit, n_sentences=TOP_N)
    s = next(s for d in report.directions for s in d.sentences if s.text.startswith("Another"))
    assert s.truncated and len(s.tokens) == 24 - 2 and abs(s.recomputed_score - s.score) < 1e-5
    segs = segments(s)
    assert segs[-1]["cut"] and segs[-1]["act"] is None and "".join(g["text"] for g in segs) == s.text


def test_report_json_matches_the_catalog(run: Path, tmp_path: Path) -> None:
    report = unit_report(run, "2:9", n_sentences=3, with_activations=False)
    data = json.loads(render_json(report, tmp_path).read_text())
    uid = data["unit"]["unit_id"]
    con = open_catalog(run)
    try:
        assert (uid, "hidden", 2, 9) == con.execute("SELECT * FROM units WHERE unit_id = ?", [uid]).fetchall()[0]
        for d in data["directions"]:
            args = [uid, d["direction"]]
            for kind, key in (("word", "words"), ("word_pattern", "word_patterns"), ("pos_pattern", "pos_patterns")):
                sql = con.execute("""SELECT rank, pattern, support, share, background_support, background_share, rel_freq
                                     FROM signatures WHERE unit_id = ? AND direction = ? AND kind = ? ORDER BY rank""",
                                  [*args, kind]).fetchall()
                assert [tuple(r.values()) for r in d[key]] == sql
            st = con.execute("SELECT * FROM unit_stats WHERE unit_id = ? AND direction = ?", args).df().iloc[0]
            assert d["avg_length"] == st.avg_length and d["pos_selectivity"] == st.pos_selectivity
            assert d["n_sentences"] == st.n_sentences and d["pos_selectivity_tag"] == st.pos_selectivity_tag
            ratios = {r["name"]: r for r in d["pos_ratios"]}
            assert ratios["noun"]["ratio"] == st.noun_ratio and ratios["noun"]["rel"] == st.noun_rel
            assert ratios["adj"]["rel"] is None  # NaN in the table -> null in JSON
            assert d["typical"]["sentence_id"] == st.typical_sentence_id
            meta = con.execute("""SELECT field, value, count, share, corpus_share, rel_share FROM unit_metadata
                                  WHERE unit_id = ? AND direction = ? ORDER BY field, count DESC, value""", args).fetchall()
            got = sorted((f["field"], v["value"], v["count"], v["share"], v["corpus_share"], v["rel_share"])
                         for f in d["metadata"] for v in f["values"])
            assert got == sorted(meta, key=lambda r: (r[0], r[1] or ""))
            queue = con.execute("""SELECT rank, sentence_id, score, text, peak_position, peak_token, peak_score
                                   FROM unit_top WHERE unit_id = ? AND direction = ? AND rank <= 3 ORDER BY rank""",
                                args).fetchall()
            got = [(s["rank"], s["sentence_id"], s["score"], s["text"], s["peak_position"], s["peak_token"],
                    s["peak_score"]) for s in d["sentences"]]
            assert got == [tuple(float(x) if isinstance(x, np.floating) else x for x in r) for r in queue]
            smax, smin = con.execute("SELECT max(score), min(score) FROM top_sentences WHERE unit_id = ? AND direction = ?",
                                     args).fetchall()[0]
            assert (d["score_max"], d["score_min"]) == (smax, smin)
    finally:
        con.close()
    assert data["placement"]["analysis_available"] is False and data["activations"]["computed"] is False


def test_unit_page_shows_the_distribution_and_exemplars(run: Path, tmp_path: Path) -> None:
    report = unit_report(run, "2:9", n_sentences=3, with_activations=False)
    data = json.loads(render_json(report, tmp_path).read_text())
    uid = data["unit"]["unit_id"]
    con = open_catalog(run)
    try:
        row = con.execute("SELECT * FROM unit_distribution WHERE unit_id = ?", [uid]).df().iloc[0]
        assert [v for _, v in data["distribution"]["quantiles"]] == [row[c] for c in row.index if c.startswith("q")]
        ex = con.execute("""SELECT band, rank, sentence_id, score, quantile, text FROM unit_exemplars
                            JOIN sample_sentences USING (sentence_id) WHERE unit_id = ?""", [uid]).fetchall()
    finally:
        con.close()
    got = [(b["band"], e["rank"], e["sentence_id"], e["score"], e["quantile"], e["text"])
           for b in data["distribution"]["bands"] for e in b["sentences"]]
    assert sorted(got) == sorted((r[0], r[1], r[2], float(r[3]), r[4], r[5]) for r in ex) and got
    assert data["distribution"]["bands"][-1]["band"] == "random"
    html = render_html(report, tmp_path).read_text()
    assert "Activation distribution" in html and "Exemplars across the range" in html
    md = render_markdown(report, tmp_path).read_text().splitlines()
    at = md.index(next(line for line in md if line.startswith("| 0.1% |")))
    assert md[at + 1].startswith("|---:|") and md[at + 2].count("|") == md[at].count("|") == 12


def test_a_direction_without_characteristic_items_says_so(run: Path, tmp_path: Path) -> None:
    report = unit_report(run, "2:9", n_sentences=1, with_activations=False)
    html = render_html(report, tmp_path).read_text()
    assert "No characteristic word or pattern" not in html or not all(
        d.words or d.word_patterns or d.pos_patterns for d in report.directions)
    for d in report.directions:
        d.words, d.word_patterns, d.pos_patterns = [], [], []
    html = render_html(report, tmp_path).read_text()
    assert html.count("No characteristic word or pattern") == len(report.directions) > 0
    assert "none characteristic" in render_markdown(report, tmp_path).read_text()


class _Tags(HTMLParser):
    """Collects start tags and the text of <script> and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.raw: dict[str, list[str]] = {"script": [], "style": []}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in self.raw else None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.raw[self._in].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _check_page(html: str, n_scripts: int) -> _Tags:
    page = _Tags()
    page.feed(html)
    scripts = [a for t, a in page.tags if t == "script"]
    assert len(scripts) == n_scripts
    assert not [t for t, a in page.tags if any(k.startswith("on") for k in a)]  # no event-handler attributes
    assert not [t for t, _ in page.tags if t in ("img", "iframe", "object", "embed")
                and "onerror" in html.split("<" + t, 1)[-1].split(">", 1)[0]]
    csp = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp
    for kind in ("script", "style"):
        for body in page.raw[kind]:
            if body.strip() and not body.lstrip().startswith("{"):  # executable inline code: allowed by hash
                assert _sha(body) in csp, kind
    return page


class _SentenceTexts(HTMLParser):
    """The text content (entities decoded) of every <div class="text"> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self._depth:
            self._depth += tag == "div"
        elif tag == "div" and ("class", "text") in attrs:
            self._depth = 1
            self.texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "div":
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.texts[-1] += data


def test_html_escapes_untrusted_text(run: Path, tmp_path: Path) -> None:
    unit = _units_holding(run, "<script>")[0]
    for with_activations in (False, True):
        report = unit_report(run, unit, n_sentences=TOP_N, with_activations=with_activations)
        html = render_html(report, tmp_path).read_text()
        assert "<script>alert" not in html and "alert(1)</script>" not in html
        _check_page(html, n_scripts=2)
        shown = _SentenceTexts()
        shown.feed(html)
        assert SCRIPT in shown.texts  # the sentence reads as text, tags and all
        if with_activations:
            assert '<span class="a an' in html or '<span class="a ap' in html  # coloured tokens
            assert 'title="&lt; · ' in html  # with their value in a tooltip
        else:
            assert "&lt;script&gt;alert(1)&lt;/script&gt; is what the attacker typed." in html


def test_overview_index_is_an_escaped_json_island(run: Path, tmp_path: Path) -> None:
    report = model_report(run)
    assert len(report.units) == 2 * 32 + 2 * 128
    assert any("miner analyze" in m for m in report.missing)
    row0 = next(u for u in report.units if u.unit_id == 0)
    assert row0.top_words[0] == EVIL_PATTERN
    html = render_html(report, tmp_path).read_text()
    assert EVIL_PATTERN not in html and "<img src=x" not in html
    page = _check_page(html, n_scripts=3)
    island = [a for t, a in page.tags if t == "script" and a.get("type") == "application/json"]
    assert island and island[0]["id"] == "units-data"
    body = html.split('id="units-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(body)
    assert len(data["rows"]) == len(report.units) and "\\u003cimg" in body
    assert data["rows"][0][data["columns"].index("top_words")][0] == EVIL_PATTERN


def test_markdown_escapes_and_keeps_tables_intact(run: Path, tmp_path: Path) -> None:
    unit = _units_holding(run, "A | pipe")[0]
    md = render_markdown(unit_report(run, unit, n_sentences=TOP_N), tmp_path).read_text()
    stored = MARKDOWN_HOSTILE  # the corpus collapses repeated symbols, but not inside a URL
    assert "A \\| pipe, \\*stars\\*, \\_under\\_ and \\[a link\\](http://example.com) &amp; more." == md_escape(stored)
    assert md_escape(stored) in md.replace("**", "")
    for line in md.splitlines():
        if line.startswith("| ") and "rank" not in line and "---" not in line and "pipe" in line:
            cells = re.split(r"(?<!\\)\|", line)
            assert len(cells) == 7, line  # 5 columns: the escaped pipe did not split the row
    script_unit = _units_holding(run, "<script>")[0]
    md = render_markdown(unit_report(run, script_unit, n_sentences=TOP_N, with_activations=False), tmp_path).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "<script" not in md
    overview = render_markdown(model_report(run), tmp_path).read_text()
    assert "&lt;img src=x onerror=alert(2)&gt;" in overview and "<img" not in overview


def test_shared_assets_and_links(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    paths = write_unit_report(run, "1:2", out, self_contained=False, n_sentences=2, with_activations=False)
    assert [p.name for p in paths] == ["unit-2.html", "unit-2.md", "unit-2.json"]
    html = paths[0].read_text()
    assert 'href="assets/report.css"' in html and 'src="assets/report.js"' in html and "model.html" not in html
    assert (out / "assets" / "report.js").exists() and (out / "assets" / "guard.js").exists()
    model = write_model_report(run, out, formats=("html", "md"), self_contained=False)
    html = model[0].read_text()
    data = json.loads(html.split('id="units-data">', 1)[1].split("</script>", 1)[0])
    pages = dict(zip((r[0] for r in data["rows"]), (r[-1] for r in data["rows"])))
    assert pages[2] is True and pages[3] is False  # unit pages already in the folder are linked
    assert "<style>" not in html and (out / "assets" / "convergence.svg").exists() == ('src="assets/convergence.svg"' in html)
    with pytest.raises(OutputConflictError, match="unit-2.html: exists"):  # pages are not replaced unless forced
        write_unit_report(run, 2, out, formats=("html",), n_sentences=1, with_activations=False)
    again = write_unit_report(run, 2, out, formats=("html",), n_sentences=1, with_activations=False,
                              force=True)[0].read_text()
    assert 'href="model.html"' in again  # the overview now exists: the unit page links to it


def test_cli_report_formats_match_the_renderer() -> None:
    assert REPORT_FORMATS == FORMATS


def test_report_never_writes_into_the_run(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for target in (run, run / "reports", run / "checkpoint" / "x"):
        with pytest.raises(OutputConflictError, match="inside the run folder"):
            write_model_report(run, target, formats=("json",))
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    monkeypatch.chdir(tmp_path)  # the default folder is reports/<run name> under the current folder
    parser = build_parser()
    ns = parser.parse_args(["report", str(run), "--model", "--format", "json"])
    assert ns.func(ns) == 0
    assert (tmp_path / "reports" / run.name / "model.json").exists()


def test_report_command(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    ns = parser.parse_args(["report", str(run), "--unit", "1:1", "mlp:1:0", "--model", "--out", str(tmp_path / "r"),
                            "--format", "html", "json", "--sentences", "2"])
    assert ns.func(ns) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(Path(p).name for p in printed)
    assert names == sorted(["unit-1.html", "unit-1.json", "unit-64.html", "unit-64.json", "model.html", "model.json"])
    assert 'href="model.html"' in (tmp_path / "r" / "unit-1.html").read_text()
    ns = parser.parse_args(["report", str(run)])
    with pytest.raises(ConfigError, match="--unit UNIT ..., --model and/or --all"):
        ns.func(ns)
    ns = parser.parse_args(["report", str(run), "--unit", "9:9", "--out", str(tmp_path / "r")])
    with pytest.raises(InputError, match="layer 9"):
        ns.func(ns)
    ns = parser.parse_args(["report", str(run), "--model", "--out", str(tmp_path / "r"), "--format", "json"])
    with pytest.raises(OutputConflictError, match="model.json: exists"):
        ns.func(ns)
    ns = parser.parse_args(["report", str(run), "--model", "--out", str(tmp_path / "r"), "--format", "json", "--force"])
    assert ns.func(ns) == 0


def test_analysis_tables_are_used_when_present(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("catalog.duckdb", "checkpoint"))
    units = pq.read_table(copy / "units.parquet").to_pandas()
    rng = np.random.default_rng(0)
    n = len(units)
    layer = units.layer.astype("int16")
    cluster = (units.unit_id % 2).astype("int32")
    pq.write_table(pa.table({"unit_id": units.unit_id, "direction": ["top"] * n, "cluster": cluster, "layer": layer,
                             "matched_layer": (cluster + 1).astype("int16")}), copy / "unit_clusters.parquet")
    pq.write_table(pa.table({"unit_id": units.unit_id, "direction": ["top"] * n, "x": rng.normal(size=n),
                             "y": rng.normal(size=n), "layer": layer}), copy / "unit_map.parquet")
    value = rng.random(n)
    rank = (-value).argsort().argsort() + 1
    pq.write_table(pa.table({"unit_id": units.unit_id, "direction": ["top"] * n, "layer": layer,
                             "metric": ["pos_selectivity"] * n, "value": value, "rank": rank,
                             "percentile": 100 * (n - rank) / (n - 1)}), copy / "layer_rankings.parquet")
    pq.write_table(pa.table({"direction": ["top"] * 2, "metric": ["pos_selectivity"] * 2, "layer": [1, 2],
                             "n": [32, 32], "min": [0.0, 0.1], "q1": [0.2, 0.3], "median": [0.5, 0.5],
                             "q3": [0.7, 0.8], "max": [1.0, 1.2], "mean": [0.5, 0.55]}),
                   copy / "layer_distribution.parquet")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["analysis"] = {"accuracy": 0.25, "k": 2}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = unit_report(copy, "2:3", n_sentences=1, with_activations=False)
    assert report.placement.analysis_available
    [cl] = report.placement.clusters
    assert cl.cluster == (32 + 3) % 2 and cl.matched_layer == cl.cluster + 1
    assert cl.size == n // 2 and sum(cl.layer_counts.values()) == n // 2
    [rk] = report.placement.rankings
    uid = 32 + 3
    in_layer = units.unit_id[(units.layer == 2) & (value > value[uid])].size + 1
    assert (rk.metric, rk.layer, rk.rank, rk.n_ranked, rk.layer_rank, rk.layer_n) == (
        "pos_selectivity", 2, rank[uid], n, in_layer, int((units.layer == 2).sum()))
    assert rk.percentile == pytest.approx(100 * (n - rank[uid]) / (n - 1))
    overview = model_report(copy)
    assert overview.analysis == {"accuracy": 0.25, "k": 2} and not any("analyze" in m for m in overview.missing)
    assert [p.name for p in overview.plots] == ["unit_map", "convergence", "layer_boxes-pos_selectivity-top"]
    assert all(p.svg.lstrip().startswith(("<?xml", "<svg")) and p.source == "report" for p in overview.plots)
    assert overview.units[35].cluster == 1
    html = render_html(overview, tmp_path / "out").read_text()
    assert html.count('src="data:image/svg+xml;base64,') == 3 and "25.0%" in html
    (copy / "plots").mkdir()
    (copy / "plots" / "unit_map_top.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><text>t-SNE</text></svg>')
    manifest["analysis"]["plots"] = ["plots/unit_map_top.svg", "plots/missing.svg"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    plots = {p.name: p for p in model_report(copy).plots}
    assert plots["unit_map_top"].source == "analysis" and "t-SNE" in plots["unit_map_top"].svg
    assert plots["unit_map_top"].title == "Unit map (top)" and "unit_map" not in plots
