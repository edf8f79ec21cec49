"""Peak memory and wall time of `miner sql` on big results, per output format; prints JSON.

Usage: python benchmarks/sql_stream.py [--run RUN] [--rows 1000000 10000000] [--out FILE.json]

Each case runs `miner sql RUN "SELECT i, i * 0.5 AS x, 'text ' || i AS s FROM range(N) t(i)"` in a child
process (this checkout's code), writing to --out in a temporary folder, or to stdout sent to /dev/null, and
reads the child's peak resident memory from os.wait4. Streaming results keep that flat in N: compare
the figures for 1M and 10M rows (`growth_mb` is the 10M peak minus the 1M peak). `baseline` is `SELECT 1`:
the interpreter with DuckDB and pyarrow loaded. Without --run a tiny run (three small tables and a catalog)
is built in the temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from json_out import add_out_options, check_out, emit

REPO = Path(__file__).resolve().parents[1]
QUERY = "SELECT i, i * 0.5 AS x, 'text ' || i AS s FROM range({n}) t(i)"
# (case name, --format, extra options, where the result goes)
CASES = [
    ("csv", "csv", [], "out"),
    ("json", "json", [], "out"),
    ("parquet", "parquet", [], "out"),
    ("table_all", "table", ["--max-rows", "0"], "out"),
    ("table_all_stdout", "table", ["--max-rows", "0"], "stdout"),
    ("table_default", "table", [], "out"),
    ("table_default_stdout", "table", [], "stdout"),
]


def build_run(folder: Path) -> Path:
    """A minimal complete run (manifest, units, sentences, top_sentences) with its catalog."""
    from miner.run.catalog import ensure_catalog

    folder.mkdir(parents=True)
    pq.write_table(pa.table({"unit_id": pa.array([0, 1], pa.int32()), "site": ["hidden"] * 2, "layer": [1, 2],
                             "idx": [0, 0]}), folder / "units.parquet")
    pq.write_table(pa.table({"sentence_id": [0], "text": ["a cat"]}), folder / "sentences.parquet")
    pq.write_table(pa.table({"unit_id": pa.array([0], pa.int32()), "direction": ["top"], "rank": [1],
                             "score": [0.5], "sentence_id": [0], "peak_position": [1], "peak_token": ["cat"],
                             "peak_score": [0.5]}), folder / "top_sentences.parquet")
    (folder / "manifest.json").write_text(json.dumps({"status": "complete", "fingerprint": "bench", "job": {}}))
    ensure_catalog(folder)
    return folder


def measure(args: list[str], stdout_to_null: bool) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit status) of `python -m miner.cli ARGS` run from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(os.devnull, "w") as null:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "miner.cli", *args], cwd=REPO, env=env,
                                 stdout=null if stdout_to_null else subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        print(f"{args}: exit {child.returncode}: {child.stderr.read().decode().strip()}", file=sys.stderr)
    child.stderr.close()
    return round(usage.ru_maxrss / 1024, 1), round(wall, 2), child.returncode


def run_case(run: Path, work: Path, fmt: str, extra: list[str], target: str, rows: int) -> dict:
    """One `miner sql` child; the --out file (if any) is removed afterwards."""
    out = work / f"result.{fmt}"
    out.unlink(missing_ok=True)
    args = ["sql", str(run), QUERY.format(n=rows), "--format", fmt, *extra]
    if target == "out":
        args += ["--out", str(out)]
    peak, wall, code = measure(args, stdout_to_null=target == "stdout")
    entry = {"rows": rows, "peak_rss_mb": peak, "wall_s": wall, "exit": code}
    if out.exists():
        entry["out_mb"] = round(out.stat().st_size / 2**20, 1)
        out.unlink()
    return entry


def bench(run: Path | None, rows: list[int], work: Path) -> dict:
    run = run or build_run(work / "run")
    baseline, _, _ = measure(["sql", str(run), "SELECT 1"], stdout_to_null=True)
    cases: dict[str, dict] = {}
    for name, fmt, extra, target in CASES:
        results = [run_case(run, work, fmt, extra, target, n) for n in rows]
        cases[name] = {"format": fmt, "options": extra, "to": target, "results": results,
                       "growth_mb": round(results[-1]["peak_rss_mb"] - results[0]["peak_rss_mb"], 1)}
        print(f"{name}: " + ", ".join(f"{r['rows']:,} rows {r['peak_rss_mb']} MB {r['wall_s']} s" for r in results),
              file=sys.stderr)
    return {
        "benchmark": "sql_stream", "query": QUERY, "rows": rows, "baseline_rss_mb": baseline,
        "max_growth_mb": max(c["growth_mb"] for c in cases.values()), "cases": cases,
        "duckdb": duckdb.__version__, "pyarrow": pa.__version__, "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing run folder (default: build a tiny one)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000], help="result sizes")
    add_out_options(parser)
    ns = parser.parse_args(argv)
    check_out(ns)
    with tempfile.TemporaryDirectory(prefix="sql-stream-") as tmp:
        report = bench(ns.run, sorted(ns.rows), Path(tmp))
    emit(report, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
