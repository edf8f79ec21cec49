"""`miner report RUN --all` on a small real run (a tiny random BERT, 64 units): every unit page and the overview
with shared assets, every index link resolving to a written page, the same pages for 1 or 2 Ray tasks, and an
existing page refused before anything is written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from miner.config import AnnotateOptions, JobSpec, VectorOptions
from miner.errors import OutputConflictError
from miner.mining.driver import run_mining
from miner.report.export import write_all_pages
from miner.signatures.stage import run_abstract
from tests.support.builders import tiny_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_run(tiny_corpus: Path, tiny_fasttext: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("export")
    model = tiny_model(base / "model", "bert", layers=2, hidden=32)
    job = JobSpec(name="small", model=str(model), corpus=tiny_corpus, output=base / "run", top_n=5, max_sentences=200,
                  threads_per_worker=2)
    run_mining(job, base, executor="inline")
    run_abstract(base / "run", AnnotateOptions(background_size=200), vectors=VectorOptions(model=tiny_fasttext),
                 executor="inline")
    return base / "run"


def test_every_page_is_written_and_linked(small_run: Path, tmp_path: Path) -> None:
    import ray

    one = write_all_pages(small_run, tmp_path / "one", ("html", "json"), n_sentences=5, with_activations=False, parts=1)
    assert one.pages == 64 and one.pages_per_second > 0
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        two = write_all_pages(small_run, tmp_path / "two", ("html", "json"), n_sentences=5, with_activations=False,
                              parts=2)
    finally:
        ray.shutdown()
    assert two.pages == 64
    for folder in (tmp_path / "one", tmp_path / "two"):
        assert {p.name for p in (folder / "assets").iterdir()} >= {"report.css", "guard.js", "report.js"}
        pages = sorted(folder.glob("unit-*.html"))
        assert len(pages) == 64
        model = (folder / "model.html").read_text()
        rows = json.loads(re.search(r'id="units-data">(.*?)</script>', model, re.S).group(1))["rows"]
        assert all(row[-1] for row in rows)  # the index links every unit to its page
        assert 'href="model.html"' in pages[0].read_text() and "<style>" not in pages[0].read_text()
    for page in (tmp_path / "one").glob("unit-*.json"):
        a, b = (json.loads((f / page.name).read_text()) for f in (tmp_path / "one", tmp_path / "two"))
        a.pop("generated_at"), b.pop("generated_at")
        assert a == b, page.name
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").iterdir() if p.is_file()}
    with pytest.raises(OutputConflictError, match="exists"):
        write_all_pages(small_run, tmp_path / "one", ("html", "json"), parts=1)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "one").iterdir() if p.is_file()} == before


def test_the_cli_prints_pages_per_second(small_run: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "miner.cli", "report", str(small_run), "--all", "--workers", "1",
                           "--sentences", "5", "--format", "html", "--out", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"wrote 64 unit pages and the overview .* pages/s\)", done.stdout)
    pages = list((tmp_path / "site").glob("unit-*.html"))
    assert len(pages) == 64 and all('class="a a' in p.read_text() for p in pages[:3])  # tokens coloured
