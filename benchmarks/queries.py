"""Latency of the README's ten queries (miner.query.examples.QUERIES) on a run's catalog; prints JSON.

Usage: python benchmarks/queries.py RUN [--repeat 20] [--out FILE.json]

Per query: p50/p95 milliseconds of execute + fetch to Arrow on an open sandboxed read-only connection
(what a Python user or the duckdb shell sees), and p50 of the whole `miner sql` path (run_query: guard,
catalog freshness check, connect, execute, format as a table). Queries whose views the run lacks (the
signature tables before step 2) are skipped, and the JSON says which views were missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import duckdb
from json_out import add_out_options, check_out, emit

from miner.query.examples import QUERIES
from miner.query.sandbox import sandboxed_connection
from miner.query.sql import run_query
from miner.run.catalog import ensure_catalog


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(run_dir: Path, repeat: int) -> dict:
    ensure_catalog(run_dir)
    con = sandboxed_connection(run_dir)
    views = {row[0] for row in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    sizes = {name: con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
             for name in ("units", "top_sentences", "sentences") if name in views}
    results = []
    for query in QUERIES:
        entry: dict = {"title": query.title}
        missing = [t for t in query.tables if t not in views]
        if missing:
            entry["skipped"] = f"missing tables: {', '.join(missing)}"
            results.append(entry)
            continue
        con.sql(query.sql).to_arrow_table()  # warm-up (file metadata, caches)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            table = con.sql(query.sql).to_arrow_table()
            times.append((time.perf_counter() - t0) * 1000)
        full = []
        for _ in range(max(3, repeat // 4)):
            t0 = time.perf_counter()
            run_query(run_dir, query.sql, "table")
            full.append((time.perf_counter() - t0) * 1000)
        entry.update(rows=table.num_rows, p50_ms=round(statistics.median(times), 2),
                     p95_ms=round(_percentile(times, 0.95), 2), miner_sql_p50_ms=round(statistics.median(full), 2))
        results.append(entry)
    con.close()
    timed = [r["p50_ms"] for r in results if "p50_ms" in r]
    return {
        "benchmark": "catalog_queries", "run": str(run_dir.resolve()), "repeat": repeat, "table_rows": sizes,
        "duckdb": duckdb.__version__, "cpus": os.cpu_count(), "machine": platform.machine(),
        "queries": results, "timed": len(timed), "skipped": len(results) - len(timed),
        "max_p50_ms": max(timed) if timed else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (with mining output)")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions per query")
    add_out_options(parser)
    ns = parser.parse_args(argv)
    check_out(ns)
    report = bench(ns.run, ns.repeat)
    emit(report, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
