"""`miner serve` latency on a real run, in process (Starlette's test client: the app's own time, no network);
prints JSON.

Issue 17: p50 / p95 of a unit page first rendered and cached, of a search (words, SQL, metadata), and of try your
text for 1 sentence and for 10 sentences (target: within 1 s for one sentence on 2 cores); the pages per second
of `miner report --all` come from its own output (--export-out writes every page of the run there; off by default).
Unit pages are rendered with token activations, as `miner serve` does by default. The model is loaded before the
timings (the server loads it at start).

Usage: python benchmarks/serve_latency.py --run runs/demo [--requests 20] [--export-out /tmp/site] [--out F]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from json_out import add_out_options, check_out, emit
from starlette.testclient import TestClient

from miner.report.export import write_all_pages
from miner.run.catalog import read_run_table
from miner.serve.app import Server, create_app

SENTENCES = [
    "The stock market fell sharply after the announcement.", "lol this is the best thing ever!!",
    "Photosynthesis converts light energy into chemical energy.", "I will not vote for that bill, Mr. Speaker.",
    "To be, or not to be, that is the question.", "The film was a tedious, overlong mess.",
    "Can you tell me where the station is?", "Researchers found no link between the two.",
    "We won the match 3-1 on Saturday.", "Thank you so much for the kind words!",
]


def timed(client: TestClient, method: str, url: str, **kw: object) -> float:
    t = time.perf_counter()
    got = client.request(method, url, **kw)
    seconds = time.perf_counter() - t
    if got.status_code != 200:
        raise SystemExit(f"error: {method} {url} -> {got.status_code}: {got.text[:300]}")
    return seconds


def stats(seconds: list[float]) -> dict:
    a = np.asarray(seconds)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(a, 95)) * 1000, 1), "max_ms": round(float(a.max()) * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--export-out", type=Path, default=None,
                    help="also time `miner report --all` into this folder (its pages replaced; never a run folder)")
    add_out_options(ap)
    args = ap.parse_args()
    check_out(args)
    server = Server([args.run])
    slug = next(iter(server.runs))
    client = TestClient(create_app(server))
    t = time.perf_counter()
    server.probe(server.runs[slug]).run_text(["warm up"], None, 1)
    load = time.perf_counter() - t
    n_units = read_run_table(args.run, "units", columns=["unit_id"]).num_rows
    units = np.random.default_rng(0).choice(n_units, size=min(args.requests, n_units), replace=False).tolist()
    first = [timed(client, "GET", f"/r/{slug}/unit-{u}.html") for u in units]
    cached = [timed(client, "GET", f"/r/{slug}/unit-{u}.html") for u in units]
    words = ["lol", "market, stock", "film", "vote", "thank you", "question"]
    search = [timed(client, "GET", f"/r/{slug}/search", params={"words": words[i % len(words)]})
              for i in range(args.requests)]
    sql = [timed(client, "GET", f"/r/{slug}/search", params={
        "sql": "SELECT unit_id, pos_selectivity FROM unit_stats WHERE direction = 'top' ORDER BY 2 DESC LIMIT 50"})
           for _ in range(args.requests)]
    one = [timed(client, "POST", f"/api/r/{slug}/try", json={"text": SENTENCES[i % 10], "unit": str(units[i % len(units)])})
           for i in range(args.requests)]
    ten = [timed(client, "POST", f"/api/r/{slug}/try", json={"text": "\n".join(SENTENCES), "unit": str(units[0])})
           for _ in range(max(args.requests // 2, 1))]
    report = {"benchmark": "serve_latency", "run": str(args.run), "units": n_units,
              "model_load_seconds": round(load, 2), "unit_page_first": stats(first), "unit_page_cached": stats(cached),
              "search_words": stats(search), "search_sql": stats(sql), "try_1_sentence": stats(one),
              "try_10_sentences": stats(ten), "try_1_sentence_target_ms": 1000}
    if args.export_out is not None:
        summary = write_all_pages(args.run, args.export_out, ("html",), force=True, parts=2)
        report["report_all"] = {"pages": summary.pages, "seconds": summary.seconds,
                                "pages_per_second": summary.pages_per_second, "formats": ["html"],
                                "activations": True, "ray_tasks": 2}
    emit(report, args)


if __name__ == "__main__":
    main()
