"""Reports on a real run (MiniLM, step 2 done), opened in headless Chromium (Debian's `chromium` package).

A queue sentence of one unit is replaced by a script tag before step 2, so the corpus text the pages show
is hostile. Checks: real MiniLM token activations reproduce the stored scores and peaks; the unit page and
the overview load with no console message, no script error and no CSP violation (the pages' own guard
script records those in <html data-errors>, and Chromium's console log goes to stderr); the script
sentence shows as text; the overview's index filters from the URL hash. A screenshot of each page is
written (path printed; copied to reports/screenshots/ when MINER_SCREENSHOTS is set).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from miner.config import AnnotateOptions, VectorOptions
from miner.report.build import unit_report, write_model_report, write_unit_report
from miner.run.catalog import open_catalog
from miner.signatures.stage import run_abstract

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script> was typed into a tweet."
HOSTILE_UNIT = 1000  # hidden layer 3, unit 232 of MiniLM: its rank-1 top sentence becomes SCRIPT
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def run(tiny_run: Path, tiny_fasttext: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tiny_run with one queue sentence replaced by a script tag, then step 2."""
    out = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("checkpoint", "catalog.duckdb"))
    top = pq.read_table(out / "top_sentences.parquet")
    first = top.filter(pc.and_(pc.and_(pc.equal(top["unit_id"], HOSTILE_UNIT), pc.equal(top["direction"], "top")),
                               pc.equal(top["rank"], 1)))
    target = first["sentence_id"][0].as_py()
    sentences = pq.read_table(out / "sentences.parquet")
    texts = [SCRIPT if sid == target else t for sid, t in zip(sentences["sentence_id"].to_pylist(),
                                                               sentences["text"].to_pylist())]
    sentences = sentences.set_column(sentences.schema.get_field_index("text"), "text", pa.array(texts))
    pq.write_table(sentences, out / "sentences.parquet")
    run_abstract(out, AnnotateOptions(background_size=1500), vectors=VectorOptions(model=tiny_fasttext), executor="inline")
    return out


def test_minilm_token_activations_reproduce_stored_scores(run: Path) -> None:
    for spec in ("1:0", "6:383", "4:17"):
        report = unit_report(run, spec, n_sentences=5)
        assert report.activations.computed and report.activations.max_score_diff < 1e-5, spec
        for d in report.directions:
            for s in d.sentences:
                values = np.array([t.activation for t in s.tokens])
                assert abs(values.mean() - s.score) < 1e-5
                assert abs((values.max() if d.direction == "top" else values.min()) - s.peak_score) < 1e-5
                assert [t.token for t in s.tokens if t.position == s.peak_position] == [s.peak_token]
                assert all(not (t.token.startswith("[") and t.token.endswith("]")) for t in s.tokens)
                assert all(s.text[w.start:w.end] == w.text for w in s.words)


class _Dom(HTMLParser):
    """Root/body attributes, script elements, and the text of each sentence (<div class="text">)."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, dict] = {}
        self.scripts: list[dict] = []
        self.sentences: list[str] = []
        self.rows = 0
        self._depth = 0
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag in ("html", "body"):
            self.attrs[tag] = a
        if tag == "script":
            self.scripts.append(a)
        if tag == "tbody" and a.get("id") == "index-body":
            self._in_body = True
        if tag == "tr" and self._in_body:
            self.rows += 1
        if self._depth:
            self._depth += tag == "div"
        elif tag == "div" and a.get("class") == "text":
            self._depth = 1
            self.sentences.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "div":
            self._depth -= 1
        if tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.sentences[-1] += data


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    if profile.exists():
        shutil.rmtree(profile)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def _load(url: str, tmp_path: Path) -> tuple[str, _Dom]:
    """Open a page headless; returns its serialised DOM after the scripts ran, and the parsed DOM.
    Fails on any console message (errors, CSP violations, stray logs)."""
    done = _chromium(["--dump-dom", url], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = _Dom()
    dom.feed(done.stdout)
    assert dom.attrs["body"].get("data-ready") == "ok", dom.attrs
    assert "data-errors" not in dom.attrs["html"], dom.attrs["html"]["data-errors"]
    return done.stdout, dom


def _screenshot(url: str, name: str, tmp_path: Path) -> Path:
    shot = tmp_path / f"{name}.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real, non-blank page
    print(f"screenshot: {shot}")
    target = os.environ.get("MINER_SCREENSHOTS")
    if target:
        folder = Path(target) if target not in ("1", "true", "yes") else REPO / "reports" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / shot.name)
        print(f"screenshot copied: {folder / shot.name}")
    return shot


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_pages_render_in_chromium(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    unit_page = write_unit_report(run, HOSTILE_UNIT, out, formats=("html",), link_overview=True)[0]
    other_page = write_unit_report(run, "1:0", out, formats=("html",), link_overview=True)[0]
    overview = write_model_report(run, out, formats=("html",))[0]

    dom_text, dom = _load(unit_page.as_uri(), tmp_path)
    assert SCRIPT in dom.sentences  # the hostile sentence reads as text
    plain = re.sub(r"</?span[^>]*>", "", dom_text)  # the serialised DOM without the token colouring
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in plain
    assert len(dom.scripts) == 2 and all("src" not in s for s in dom.scripts)  # only the page's own scripts
    assert "<script>alert" not in dom_text
    _screenshot(unit_page.as_uri(), "report-unit", tmp_path)

    _load(other_page.as_uri(), tmp_path)

    dom_text, dom = _load(overview.as_uri(), tmp_path)
    assert len(dom.scripts) == 3 and dom.rows == 200  # first page of the 2,304-unit index
    assert "2,304 of 2,304 units" in dom_text
    text, dom = _load(overview.as_uri() + "#q=3:232", tmp_path)  # filters come from the URL hash
    assert "1 of 2,304 units" in text and dom.rows == 1 and 'href="unit-1000.html"' in text
    text, dom = _load(overview.as_uri() + "#layer=hidden:3&sort=-pos_selectivity", tmp_path)
    assert "384 of 2,304 units" in text and dom.rows == 200
    con = open_catalog(run)
    best = con.execute("""SELECT u.layer || ':' || u.idx FROM unit_stats s JOIN units u USING (unit_id)
                          WHERE s.direction = 'top' AND u.layer = 3 ORDER BY s.pos_selectivity DESC, u.unit_id
                          LIMIT 1""").fetchall()[0][0]
    con.close()
    first_row = text.split('id="index-body">', 1)[1].split("</tr>", 1)[0]
    assert re.sub(r"<[^>]+>", " ", first_row).split()[0] == best
    text, dom = _load(overview.as_uri() + "#layer=hidden:6&q=zzzz-no-such-word", tmp_path)
    assert "0 of 2,304 units" in text and dom.rows == 0
    _screenshot(overview.as_uri(), "report-overview", tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_shared_assets_pages_render_in_chromium(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    unit_page = write_unit_report(run, HOSTILE_UNIT, out, formats=("html",), self_contained=False, n_sentences=5,
                                  with_activations=False)[0]
    overview = write_model_report(run, out, formats=("html",), self_contained=False)[0]
    _, dom = _load(unit_page.as_uri(), tmp_path)
    assert SCRIPT in dom.sentences and all(s.get("src", "").startswith("assets/") for s in dom.scripts)
    text, _ = _load(overview.as_uri(), tmp_path)
    assert "2,304 of 2,304 units" in text
