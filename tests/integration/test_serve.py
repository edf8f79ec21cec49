"""`miner serve` on a real tiny run: every route's status codes, limits and 404s through Starlette's test client;
try-your-text reproduces the stored scores; hostile corpus and user text stay text."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from miner.serve.app import Server, create_app
from miner.serve.try_text import Limits

from .conftest import SCRIPT_SENTENCE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(served_run: Path) -> Server:
    return Server([served_run, served_run], activations=True, limits=Limits(max_chars=500, max_sentences=4))


@pytest.fixture(scope="module")
def client(server: Server) -> TestClient:
    return TestClient(create_app(server))


def test_runs_overview_and_assets(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200 and 'href="/r/tiny/model.html"' in home.text and 'href="/compare"' in home.text
    page = client.get("/r/tiny/model.html")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and page.headers["x-frame-options"] == "DENY"
    assert '"page"' in page.text and "How well is each unit explained?" in page.text
    island = re.search(r'<script type="application/json" id="units-data">(.*?)</script>', page.text, re.S)
    assert island and island.group(1).count(",true]") == 2304  # every unit of the index has a page
    assert client.get("/r/tiny", follow_redirects=False).headers["location"] == "/r/tiny/model.html"
    for name, kind in (("report.css", "text/css"), ("guard.js", "text/javascript"), ("report.js", "text/javascript")):
        asset = client.get(f"/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert client.get("/assets/../manifest.json").status_code == 404
    assert client.get("/assets/secret.txt").status_code == 404


def test_any_unit_page_with_navigation_escaping_and_cache(client: TestClient, server: Server) -> None:
    page = client.get("/r/tiny/unit-5.html")
    assert page.status_code == 200 and "<h1><span class=\"kind\">Unit</span> <span class=\"mono\">1:5</span>" in page.text
    assert 'title="&lt; · ' in page.text and "<script>alert(1)" not in page.text  # the corpus' script tag, as tokens
    for key, target in (("ArrowLeft", 4), ("ArrowRight", 6), ("ArrowDown", 389)):
        assert f'data-key="{key}" rel="' in page.text and f'href="unit-{target}.html"' in page.text
    assert 'data-key="ArrowUp"' not in page.text  # layer 1 has no layer below in the run
    assert 'href="/r/tiny-2/unit-5.html"' in page.text  # the same LAYER:IDX in the other served run
    assert "How good is this explanation?" in page.text
    assert ("unit", "tiny", 5) in server.cache._pages and client.get("/r/tiny/unit-5.html").text == page.text
    assert client.get("/r/tiny/unit/1:5", follow_redirects=False).headers["location"] == "/r/tiny/unit-5.html"
    assert client.get("/r/tiny/unit/2303").status_code == 200


@pytest.mark.parametrize("url", ["/r/nope/model.html", "/r/tiny/unit-2304.html", "/r/tiny/unit-x.html",
                                 "/r/tiny/unit/9:9", "/r/tiny/unit/1:999", "/nowhere", "/api/r/tiny/units/99999"])
def test_unknown_runs_and_units_are_404_pages(client: TestClient, url: str) -> None:
    got = client.get(url)
    assert got.status_code == 404 and "Traceback" not in got.text
    if url.startswith("/api/"):
        assert "error" in got.json()
    else:
        assert "error-message" in got.text or "Not Found" in got.text


def test_search_by_words_sql_and_metadata(client: TestClient) -> None:
    words = client.get("/r/tiny/search", params={"words": "the, a"})
    assert words.status_code == 200 and words.text.count('href="/r/tiny/unit-') >= 20
    sql = client.get("/r/tiny/search", params={
        "sql": "SELECT unit_id, simulation FROM unit_scores WHERE direction = 'top' ORDER BY simulation DESC LIMIT 7"})
    assert sql.status_code == 200 and sql.text.count('href="/r/tiny/unit-') == 7
    api = client.get("/api/r/tiny/search", params={"field": "domain", "value": "encyclopedia", "min_share": "0.2"})
    assert api.status_code == 200 and all(u["share"] >= 0.2 for u in api.json()["units"])
    for params, message in (({"sql": "DROP TABLE units"}, "DROP statements are not allowed"),
                            ({"sql": "SELECT 1 AS x"}, "must return a unit_id column"),
                            ({"field": "domain", "value": "x", "min_share": "2"}, "min_share"),
                            ({"words": "x" * 600}, "at most 500 characters")):
        bad = client.get("/r/tiny/search", params=params)
        assert bad.status_code == 400 and message in bad.text, params


def test_try_your_text_reproduces_stored_scores_and_is_bounded(client: TestClient, served_run: Path) -> None:
    top = pq.read_table(served_run / "top_sentences.parquet").to_pandas()
    texts = pq.read_table(served_run / "sentences.parquet").to_pandas().set_index("sentence_id").text
    row = top[(top.unit_id == 17) & (top.direction == "top") & (top["rank"] == 1)].iloc[0]
    got = client.post("/api/r/tiny/try", json={"text": texts[row.sentence_id], "unit": "1:17"})
    assert got.status_code == 200
    body = got.json()
    assert body["sentences"][0]["score"] == pytest.approx(row.score, abs=1e-4)
    assert len(body["sentences"][0]["tokens"]) > 0 and len(body["top"]) == 20
    assert [u["z"] for u in body["top"]] == sorted((u["z"] for u in body["top"]), reverse=True)
    page = client.post("/r/tiny/try", data={"text": f"{SCRIPT_SENTENCE}\nthe market fell today", "unit": "1:17"})
    assert page.status_code == 200 and re.search(r'<span class="a a[pn]\d+"', page.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert(1)" not in page.text
    assert page.text.count('<tr><td><a href="/r/tiny/unit-') == 20
    for data, message in (({"text": "a\nb\nc\nd\ne"}, "at most 4 per request"), ({"text": "x" * 501}, "at most 500"),
                          ({"text": "hello", "unit": "9:9"}, "layer 9 is not in the run")):
        bad = client.post("/r/tiny/try", data=data)
        assert bad.status_code == 400 and message in bad.text, data
    assert client.post("/api/r/tiny/try", content=b"not json").status_code == 400
    assert client.get("/r/tiny/try").status_code == 200  # the form alone


def test_compare_and_the_cli_binds_to_loopback_by_default(client: TestClient) -> None:
    from miner.cli.parser import build_parser

    page = client.get("/compare")
    assert page.status_code == 200 and "median simulation score" in page.text and "<img" in page.text
    ns = build_parser().parse_args(["serve", "runs/x"])
    assert ns.host == "127.0.0.1" and ns.port == 8000
