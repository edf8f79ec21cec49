"""The `miner` verbs: each parses nothing itself, imports its stage lazily (so `--help` stays light) and prints the result."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from miner.cli.options import model_from_args
from miner.config import JobSpec, PrepareOptions, RedundancyOptions, RunOptions, validate_model
from miner.errors import ConfigError

log = logging.getLogger(__name__)


def cmd_prepare(ns: argparse.Namespace) -> int:
    from miner.corpus.prepare import prepare_corpus

    opts = model_from_args(PrepareOptions, ns)
    run = model_from_args(RunOptions, ns)
    manifest = prepare_corpus([Path(p) for p in ns.inputs], Path(ns.out), opts, run,  # type: ignore[arg-type]
                              after=Path(ns.after) if ns.after else None)
    print(f"{ns.out}: {manifest.sentences:,} sentences, {manifest.tokens:,} tokens, {len(manifest.shards)} shards")
    return 0


def cmd_fetch(ns: argparse.Namespace) -> int:
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


def cmd_info(ns: argparse.Namespace) -> int:
    from miner.corpus.info import corpus_summary, format_summary

    summary = corpus_summary(Path(ns.corpus))
    print(json.dumps(summary, indent=2) if ns.json else format_summary(summary))
    return 0


def cmd_mine(ns: argparse.Namespace) -> int:
    from miner.config import load_job, resolve_job_paths
    from miner.mining.driver import run_mining

    job, base = load_job(Path(ns.job))
    overrides = {k: v for k, v in vars(ns).items() if k in ("workers", "batch_size", "max_sentences") and v is not None}
    if overrides:
        job = validate_model(type(job), {**job.model_dump(), **overrides}, "option")
    vectors = resolve_job_paths(job, base, Path.cwd()).vectors  # before mining: a Ray job's cwd may go away
    manifest = run_mining(job, base, address=ns.address, executor=ns.executor, stop_after_blocks=ns.stop_after_blocks,
                          allow_other_hardware=ns.allow_other_hardware)
    if manifest.get("status") != "complete":
        print(f"stopped after block {manifest['next_block']}/{manifest['blocks']}; re-run to resume")
        return 0
    out = Path(manifest["job"].get("output") or "")
    print(f"mined {manifest['stats']['sentences']:,} sentences into {manifest['units']:,} units x "
          f"{manifest['job']['top_n']:,}; run folder: {manifest.get('run_dir', out)}")
    if manifest.get("append"):
        _refresh_after_append(Path(manifest["run_dir"]), manifest["append"], job.model_copy(update={"vectors": vectors}),
                              ns)
    return 0


def _refresh_after_append(run_dir: Path, record: dict, job: JobSpec, ns: argparse.Namespace) -> None:
    """After an append: step 2 (and the analysis) again where the run had it, else the catalog; the stages that
    need their own job sections or commands are named."""
    from miner.run.catalog import build_catalog
    from miner.signatures.stage import run_abstract

    added = int(record.get("added_sentences", 0))
    print(f"appended {added:,} sentences (blocks {record['from_blocks']}+) to {run_dir}")
    later = set(record.get("later_stages", []))
    if "step2" in later:
        run_abstract(run_dir, job.annotate, job.signatures, job.vectors, executor=ns.executor, address=ns.address,
                     scores=job.scores)
        print("step 2 refreshed")
        if "analysis" in later:
            from miner.analysis.stage import run_analysis

            run_analysis(run_dir, job.analysis)
            if "redundancy" in later:
                _redundancy(run_dir, job.analysis.redundancy)
            print("analysis refreshed")
    elif later or record.get("removed"):
        build_catalog(run_dir)
    rerun = sorted(later - {"step2", "scores", "analysis", "redundancy"})
    if rerun:
        print(f"removed as stale, run again for the longer corpus: {', '.join(rerun)} "
              "(`miner probe JOB`, `miner ablate JOB`, `miner match ...`)")


def cmd_signatures(ns: argparse.Namespace) -> int:
    from miner.config import AnnotateOptions, ScoreOptions, SignatureOptions, VectorOptions
    from miner.signatures.stage import run_abstract

    asked = ns.scores or any(name in vars(ns) for name in ScoreOptions.model_fields)
    summary = run_abstract(Path(ns.run), model_from_args(AnnotateOptions, ns), model_from_args(SignatureOptions, ns),
                           model_from_args(VectorOptions, ns), executor=ns.executor, address=ns.address,
                           scores=model_from_args(ScoreOptions, ns) if asked else None)
    print(f"signatures for {summary.units:,} units in {summary.seconds['total']:.0f} s; catalog: {summary.catalog}")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from miner.config import load_job, resolve_job_paths
    from miner.mining.driver import run_mining
    from miner.signatures.stage import run_abstract, step2_done

    job, base = load_job(Path(ns.job))
    vectors = resolve_job_paths(job, base, Path.cwd()).vectors  # before mining: a Ray job's cwd may go away
    manifest = run_mining(job, base, address=ns.address, executor=ns.executor,
                          allow_other_hardware=ns.allow_other_hardware)
    if manifest.get("status") != "complete":
        print(f"stopped after block {manifest['next_block']}/{manifest['blocks']}; re-run to resume")
        return 0
    run_dir = Path(manifest["run_dir"])
    if not step2_done(run_dir) or ns.redo_signatures:
        run_abstract(run_dir, job.annotate, job.signatures, vectors, executor=ns.executor, address=ns.address,
                     scores=job.scores)
        from miner.analysis.stage import run_analysis

        run_analysis(run_dir, job.analysis)
        _redundancy(run_dir, job.analysis.redundancy)
    if job.probe is not None:
        from miner.probing.stage import format_summary, run_probing

        summary = run_probing(run_dir, resolve_job_paths(job, base, Path.cwd()), executor=ns.executor,
                              address=ns.address)
        print(format_summary(summary))
    if job.ablate is not None:
        from miner.intervene.stage import run_ablation

        ablation = run_ablation(run_dir, resolve_job_paths(job, base, Path.cwd()), executor=ns.executor,
                                address=ns.address)
        print(f"ablation: {ablation['variants']} unit sets on {ablation['sentences']} held-out sentences")
    print(f"run folder: {run_dir}")
    print(f'try: miner sql {run_dir} "SELECT layer, count(*) AS units FROM units GROUP BY layer ORDER BY layer"')
    return 0


def cmd_probe(ns: argparse.Namespace) -> int:
    from miner.config import load_job, resolve_job_paths
    from miner.probing.stage import format_summary, run_probing

    job, base = load_job(Path(ns.job))
    job = resolve_job_paths(job, base, Path.cwd())
    if job.probe is None:
        raise ConfigError(f"{ns.job}: no probe section (add `probe: {{concepts: [...]}}`; see jobs/demo.yaml)")
    assert job.output is not None
    summary = run_probing(job.output, job, executor=ns.executor, address=ns.address, redo=ns.redo)
    print(format_summary(summary))
    print(f'try: miner sql {job.output} "SELECT probe_id, test_accuracy, majority_accuracy, selectivity FROM probes"')
    return 0


def cmd_ablate(ns: argparse.Namespace) -> int:
    from miner.config import load_job, resolve_job_paths
    from miner.intervene.stage import run_ablation

    job, base = load_job(Path(ns.job))
    job = resolve_job_paths(job, base, Path.cwd())
    if job.ablate is None:
        raise ConfigError(f"{ns.job}: no ablate section (add `ablate: {{sets: [...]}}`; see README)")
    assert job.output is not None
    summary = run_ablation(job.output, job, executor=ns.executor, address=ns.address, redo=ns.redo)
    print(f"ablation: {summary['variants']} unit sets on {summary['sentences']} held-out sentences "
          f"({summary['task']}, mode {summary['mode']})")
    for plot in summary.get("plots") or []:
        print(f"plot: {Path(job.output) / plot}")
    if str(summary.get("output_view", "")).startswith("skipped"):
        print(f"output view {summary['output_view']}")
    print(f'try: miner sql {job.output} "SELECT variant, kind, units, metric, clean, ablated FROM ablation_effects"')
    return 0


def cmd_sql(ns: argparse.Namespace) -> int:
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


def cmd_analyze(ns: argparse.Namespace) -> int:
    from miner.analysis.stage import run_analysis
    from miner.config import AnalysisOptions

    options = model_from_args(AnalysisOptions, ns)
    summary = run_analysis(Path(ns.run), options)
    acc = summary.get("accuracy")
    print(f"clustering accuracy {acc:.3f} (chance {summary.get('chance_accuracy', float('nan')):.3f}); "
          f"tables: {', '.join(summary.get('tables', []))}")
    redundancy = _redundancy(Path(ns.run), options.redundancy)
    if redundancy is not None:
        print(f"redundant units: {redundancy['redundant_share']:.1%} of {redundancy['units']} "
              f"(|r| >= {redundancy['threshold']:g}, {redundancy['linkage']} linkage)")
    return 0


def _redundancy(run_dir: Path, options: RedundancyOptions | None) -> dict | None:
    """Redundancy clusters after the analysis, when the run has a score sample and is small enough to cluster;
    otherwise the reason is logged and nothing is written."""
    from miner.correlate.stage import run_redundancy
    from miner.run.catalog import read_run_manifest

    if options is None:
        return None
    manifest = read_run_manifest(run_dir)
    if not (manifest.get("sample") or {}).get("rows"):
        log.info("%s: no score sample (mined with sample.sentences 0, or before mining kept one): redundancy "
                 "skipped", run_dir)
        return None
    units = int(manifest.get("units") or 0)
    if units > options.max_units:
        log.warning("%s: %d units, more than redundancy.max_units %d: redundancy skipped", run_dir, units,
                    options.max_units)
        return None
    return run_redundancy(run_dir, options)


def cmd_compare(ns: argparse.Namespace) -> int:
    from miner.analysis.compare import compare_runs, write_comparison

    runs = [Path(r) for r in ns.runs]
    if ns.out:
        result = write_comparison(runs, Path(ns.out), force=ns.force)
        print(f"comparison written to {ns.out}: {', '.join(Path(f).name for f in result.get('files', []))}")
    else:
        print(json.dumps(compare_runs(runs), indent=2, default=str))
    return 0


def cmd_match(ns: argparse.Namespace) -> int:
    from miner.config.correlate import MatchOptions
    from miner.correlate.stage import run_match

    summary = run_match(Path(ns.run), [Path(o) for o in ns.others], model_from_args(MatchOptions, ns))
    for other in summary["others"]:
        med = other["median_abs_corr"]
        print(f"{other['name']} ({other['run']}): {other['shared_sentences']} shared sentences, median |r| of the "
              f"best match {'-' if med is None else f'{med:.3f}'}")
    print(f"{summary['rows']} rows written to {Path(ns.run) / 'unit_matches.parquet'}")
    return 0


def cmd_concepts(ns: argparse.Namespace) -> int:
    from miner.query.concepts import concept_search
    from miner.query.formats import format_csv, format_json, format_table

    if not ns.words and not ns.where:
        raise ConfigError("concepts: give --words and/or --where")
    table = concept_search(Path(ns.run), ns.words, ns.where, ns.direction, ns.top, ns.match)
    fmt = {"table": format_table, "csv": format_csv, "json": format_json}[ns.format]
    sys.stdout.write(fmt(table))
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from miner.report.build import default_report_folder, write_model_report, write_unit_report

    if not ns.unit and not ns.model and not ns.all:
        raise ConfigError("report: give --unit UNIT ..., --model and/or --all")
    out = Path(ns.out) if ns.out else default_report_folder(Path(ns.run))
    if ns.all:
        import os

        from miner.report.export import write_all_pages

        if ns.unit:
            raise ConfigError("report: --all writes every unit; leave out --unit")
        if ns.workers < 0:
            raise ConfigError(f"--workers: must be >= 0, got {ns.workers}")
        summary = write_all_pages(Path(ns.run), out, ns.format, ns.sentences, not ns.no_activations, ns.device,
                                  ns.force, parts=ns.workers or os.cpu_count() or 1)
        print(f"wrote {summary.pages:,} unit pages and the overview into {summary.out_dir} in {summary.seconds:.0f} s "
              f"({summary.pages_per_second:.1f} pages/s); open {summary.out_dir / 'model.html'}")
        return 0
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


def cmd_serve(ns: argparse.Namespace) -> int:
    from miner.serve.app import serve

    if not 0 < ns.port < 65536:
        raise ConfigError(f"--port: {ns.port} is not a TCP port (1..65535)")
    print(f"serving {len(ns.run)} run(s) on http://{ns.host}:{ns.port}/ (Ctrl-C stops)", flush=True)
    serve([Path(r) for r in ns.run], host=ns.host, port=ns.port, device=ns.device,
          activations=not ns.no_activations)
    return 0


def cmd_submit(ns: argparse.Namespace) -> int:
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


def cmd_jobs(ns: argparse.Namespace) -> int:
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

