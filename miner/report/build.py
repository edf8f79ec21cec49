"""Neuron reports: build a report record from a run's catalog, then render it (HTML, Markdown, JSON).

Data generation is separate from rendering: `unit_report` / `model_report` return plain records
(miner.report.records) built with SQL over the catalog (plus the unit's token activations, recomputed with
the model on demand); `render_html` / `render_markdown` / `render_json` (miner.report.render) turn a record
into files with Jinja templates shipped in miner/report/templates (HTML autoescaped: corpus text is untrusted).

    unit_report("runs/demo", "3:232")     # hidden layer 3, unit 232 ("mlp:3:232" for an mlp unit)
    unit_report("runs/demo", 1000)        # by unit_id
    write_model_report("runs/demo", "reports/demo")
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from miner import __version__
from miner.errors import InputError
from miner.outputs import check_output_folder
from miner.report.causal.queries import model_causal, unit_causal
from miner.report.explanation import model_scores, unit_scores
from miner.report.probing.queries import concept_probing, unit_probe_ranks
from miner.report.records import (
    ActivationInfo,
    ClusterInfo,
    DirectionSignature,
    Exemplar,
    ExemplarBand,
    LayerSummary,
    MetadataField,
    MetadataValue,
    ModelReport,
    PatternRow,
    Placement,
    PosRatio,
    RankingEntry,
    RunInfo,
    SentenceEntry,
    TypicalSentence,
    UnitDistribution,
    UnitIndexRow,
    UnitRef,
    UnitReport,
)
from miner.report.render import page_stem, render_html, render_json, render_markdown
from miner.run.catalog import open_catalog, read_run_manifest

log = logging.getLogger(__name__)

STEP2_VIEWS = ("signatures", "unit_stats", "unit_metadata")
# Sentence columns that are not metadata.
_NOT_METADATA = {"sentence_id", "text", "n_tokens", "doc_id", "n_model_tokens", "truncated"}
_FIELD_ORDER = ["domain", "sentiment", "source", "topic", "party", "author", "title"]
_UNIT_SPEC = re.compile(r"(?:(?P<site>hidden|mlp):)?(?P<layer>\d+):(?P<idx>\d+)")
FORMATS = ("html", "md", "json")


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE database_name = 'catalog'").fetchall()}


def _run_info(run_dir: Path, manifest: dict) -> RunInfo:
    job, model = manifest.get("job", {}), manifest.get("model", {})
    return RunInfo(
        run_dir=str(Path(run_dir).resolve()), name=job.get("name", ""), model=str(job.get("model", "")),
        model_path=str(model.get("path", "")), model_type=str(model.get("model_type", "")),
        init=str(model.get("init", job.get("init", "pretrained"))), init_seed=int(model.get("init_seed", job.get("init_seed", 0))),
        n_layers=int(model.get("layers", 0)), sites=list(job.get("sites", ["hidden"])), top_n=int(job.get("top_n", 0)),
        aggregation=str(job.get("aggregation", "mean")), max_length=int(job.get("max_length", 0)),
        sentences=int(manifest.get("stats", {}).get("sentences", 0)), units=int(manifest.get("units", 0)),
        corpus_path=str(manifest.get("corpus", {}).get("path", "")), weights_sha256=model.get("weights_sha256"),
        code_version=manifest.get("code_version"),
    )


def _open(run_dir: Path) -> tuple[dict, duckdb.DuckDBPyConnection, set[str]]:
    """Manifest, catalog connection and view names of a run that has finished step 2."""
    manifest = read_run_manifest(Path(run_dir))
    con = open_catalog(Path(run_dir))
    views = _views(con)
    missing = [v for v in STEP2_VIEWS if v not in views]
    if missing:
        con.close()
        raise InputError(f"{run_dir}: no {missing[0]} table (step 2 has not run); run `miner signatures {run_dir}` first")
    return manifest, con, views


def resolve_unit(con: duckdb.DuckDBPyConnection, unit: str | int) -> UnitRef:
    """A unit of the run from a unit_id ("1000", 1000) or "LAYER:IDX" (hidden site) / "SITE:LAYER:IDX".

    Example: "3:232" -> UnitRef(unit_id=1000, site="hidden", layer=3, idx=232) on MiniLM.
    Anything not in the run is one clear InputError.
    """
    text = str(unit).strip()
    if isinstance(unit, int) or text.isdigit():
        uid = int(text)
        rows = _rows(con, "SELECT unit_id, site, layer, idx FROM units WHERE unit_id = ?", [uid])
        if not rows:
            n = con.execute("SELECT count(*) FROM units").fetchall()[0][0]
            raise InputError(f"unit {uid}: no such unit_id; the run has unit ids 0..{n - 1}")
        return UnitRef(**rows[0])
    m = _UNIT_SPEC.fullmatch(text)
    if not m:
        raise InputError(f"unit {text!r}: not a unit id or LAYER:IDX (e.g. 1000, 3:17, mlp:3:17)")
    site, layer, idx = m["site"] or "hidden", int(m["layer"]), int(m["idx"])
    layers = _rows(con, "SELECT layer, max(idx) AS top FROM units WHERE site = ? GROUP BY layer ORDER BY layer", [site])
    if not layers:
        sites = ", ".join(r[0] for r in con.execute("SELECT DISTINCT site FROM units ORDER BY site").fetchall())
        raise InputError(f"unit {text}: site {site} was not mined (sites: {sites})")
    by_layer = {r["layer"]: r["top"] for r in layers}
    if layer not in by_layer:
        have = ", ".join(str(k) for k in by_layer)
        raise InputError(f"unit {text}: layer {layer} is not in the run ({site} layers: {have})")
    if idx > by_layer[layer]:
        raise InputError(f"unit {text}: index {idx} is out of range ({site} layer {layer} has units 0..{by_layer[layer]})")
    rows = _rows(con, "SELECT unit_id, site, layer, idx FROM units WHERE site = ? AND layer = ? AND idx = ?",
                 [site, layer, idx])
    return UnitRef(**rows[0])


def _metadata_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    cols = [r[0] for r in con.execute("DESCRIBE sentences").fetchall()]
    meta = [c for c in cols if c not in _NOT_METADATA]
    return sorted(meta, key=lambda c: (_FIELD_ORDER.index(c) if c in _FIELD_ORDER else len(_FIELD_ORDER), c))


def _sentences(con: duckdb.DuckDBPyConnection, unit_id: int, direction: str, n: int, meta: list[str]) -> list[SentenceEntry]:
    cols = ", ".join(f's."{c}"' for c in meta)
    rows = _rows(con, f"""SELECT t.rank, t.sentence_id, t.score, s.text, t.peak_position, t.peak_token, t.peak_score,
                                 s.n_model_tokens, s.truncated{', ' + cols if cols else ''}
                          FROM top_sentences t JOIN sentences s USING (sentence_id)
                          WHERE t.unit_id = ? AND t.direction = ? AND t.rank <= ? ORDER BY t.rank""",
                 [unit_id, direction, n])
    return [SentenceEntry(rank=r["rank"], sentence_id=r["sentence_id"], score=r["score"], text=r["text"],
                          peak_position=r["peak_position"], peak_token=r["peak_token"], peak_score=r["peak_score"],
                          metadata={c: (None if r[c] is None else str(r[c])) for c in meta},
                          n_model_tokens=r["n_model_tokens"], truncated=r["truncated"]) for r in rows]


def _direction(con: duckdb.DuckDBPyConnection, unit_id: int, direction: str, n: int, meta: list[str]) -> DirectionSignature:
    stats = _rows(con, "SELECT * FROM unit_stats WHERE unit_id = ? AND direction = ?", [unit_id, direction])
    st = stats[0] if stats else {}
    sig = _rows(con, """SELECT kind, rank, pattern, support, share, background_support, background_share, rel_freq
                        FROM signatures WHERE unit_id = ? AND direction = ? ORDER BY kind, rank""", [unit_id, direction])
    by_kind: dict[str, list[PatternRow]] = {"word": [], "word_pattern": [], "pos_pattern": []}
    for r in sig:
        by_kind.setdefault(r.pop("kind"), []).append(PatternRow(**r))
    ratios = []
    for name in ("noun", "verb", "adj"):
        ratio, rel = st.get(f"{name}_ratio"), st.get(f"{name}_rel")
        ratios.append(PosRatio(name, ratio, ratio / rel if ratio is not None and rel else None, rel))
    fields: dict[str, list[MetadataValue]] = {}
    for r in _rows(con, """SELECT field, value, count, share, corpus_share, rel_share FROM unit_metadata
                           WHERE unit_id = ? AND direction = ? ORDER BY field, count DESC, value NULLS LAST""",
                   [unit_id, direction]):
        fields.setdefault(r.pop("field"), []).append(MetadataValue(**r))
    order = sorted(fields, key=lambda f: (_FIELD_ORDER.index(f) if f in _FIELD_ORDER else len(_FIELD_ORDER), f))
    typical = None
    if st.get("typical_sentence_id") is not None:
        text = con.execute("SELECT text FROM sentences WHERE sentence_id = ?", [st["typical_sentence_id"]]).fetchall()
        typical = TypicalSentence(st["typical_sentence_id"], text[0][0] if text else "", st.get("typical_distance"))
    n_sent, smax, smin = con.execute("""SELECT count(*), max(score), min(score) FROM top_sentences
                                        WHERE unit_id = ? AND direction = ?""", [unit_id, direction]).fetchall()[0]
    return DirectionSignature(
        direction=direction, n_sentences=int(st.get("n_sentences") or n_sent), score_max=smax, score_min=smin,
        words=by_kind["word"], word_patterns=by_kind["word_pattern"], pos_patterns=by_kind["pos_pattern"],
        pos_ratios=ratios, pos_selectivity=st.get("pos_selectivity"), pos_selectivity_tag=st.get("pos_selectivity_tag"),
        avg_length=st.get("avg_length"), sentiment_n=st.get("sentiment_n"), sentiment_mean=st.get("sentiment_mean"),
        sentiment_std=st.get("sentiment_std"), metadata=[MetadataField(f, fields[f]) for f in order], typical=typical,
        sentences=_sentences(con, unit_id, direction, n, meta),
        pos_selectivity_ptb=st.get("pos_selectivity_ptb"), pos_selectivity_ptb_tag=st.get("pos_selectivity_ptb_tag"),
    )


def _placement(con: duckdb.DuckDBPyConnection, views: set[str], unit: UnitRef) -> Placement:
    n = con.execute("SELECT count(*) FROM units WHERE site = ? AND layer = ?", [unit.site, unit.layer]).fetchall()[0][0]
    place = Placement(layer_units=int(n))
    if "unit_clusters" in views:
        place.analysis_available = True
        has_match = "matched_layer" in {r[0] for r in con.execute("DESCRIBE unit_clusters").fetchall()}
        matched = "matched_layer" if has_match else "NULL AS matched_layer"
        for r in _rows(con, f"""SELECT direction, cluster, {matched} FROM unit_clusters WHERE unit_id = ?
                                ORDER BY direction DESC""", [unit.unit_id]):
            counts = _rows(con, """SELECT layer, count(*) AS n FROM unit_clusters WHERE direction = ? AND cluster = ?
                                   GROUP BY layer ORDER BY layer""", [r["direction"], r["cluster"]])
            place.clusters.append(ClusterInfo(r["direction"], int(r["cluster"]), sum(c["n"] for c in counts),
                                              {str(c["layer"]): int(c["n"]) for c in counts}, r["matched_layer"]))
    if "layer_rankings" in views:
        place.analysis_available = True
        for r in _rows(con, """WITH r AS (
                                   SELECT *, count(*) OVER (PARTITION BY direction, metric) AS n_ranked,
                                          row_number() OVER (PARTITION BY direction, metric, layer
                                                             ORDER BY rank, unit_id) AS layer_rank,
                                          count(*) OVER (PARTITION BY direction, metric, layer) AS layer_n
                                   FROM layer_rankings)
                               SELECT direction, metric, layer, value, rank, percentile, n_ranked, layer_rank, layer_n
                               FROM r WHERE unit_id = ? ORDER BY direction DESC, metric""", [unit.unit_id]):
            place.rankings.append(RankingEntry(**r))
    return place


def _add_activations(report: UnitReport, device: str) -> None:
    """Recompute the shown sentences' token activations with the model (loaded once per process)."""
    from miner.report.activations import aggregate, cached_model, token_activations

    started = time.perf_counter()
    run = report.run
    entries = [s for d in report.directions for s in d.sentences]
    texts = {s.sentence_id: s.text for s in entries}
    if not texts:
        report.activations = ActivationInfo(computed=False, note="no sentences to show")
        return
    loaded = cached_model(Path(run.model_path), run.init, run.init_seed, device)
    acts = token_activations(loaded, report.unit, list(texts), list(texts.values()), run.max_length)
    max_abs, max_diff = 0.0, 0.0
    for s in entries:
        s.tokens, s.words = acts[s.sentence_id]
        s.recomputed_score = aggregate(s.tokens, run.aggregation)
        if s.recomputed_score is not None:
            max_diff = max(max_diff, abs(s.recomputed_score - s.score))
        max_abs = max([max_abs, *(abs(t.activation) for t in s.tokens)])
    report.activations = ActivationInfo(computed=True, device=str(loaded.device), max_abs=max_abs,
                                        max_score_diff=max_diff, seconds=round(time.perf_counter() - started, 3))
    if max_diff > 1e-3 * max(1.0, max_abs):
        report.activations.note = (f"recomputed scores differ from the stored ones by up to {max_diff:.3g}: "
                                   "the model or its settings changed since mining")
        log.warning("%s", report.activations.note)


def unit_report(run_dir: Path | str, unit: str | int, n_sentences: int = 20, with_activations: bool = True,
                device: str = "cpu") -> UnitReport:
    """The report record of one unit: signature per direction, its first n_sentences sentences (with token
    activations recomputed by the model when with_activations), and its place in the model."""
    run_dir = Path(run_dir)
    if n_sentences < 0:
        raise InputError(f"n_sentences: must be >= 0, got {n_sentences}")
    manifest, con, views = _open(run_dir)
    try:
        ref = resolve_unit(con, unit)
        meta = _metadata_columns(con)
        directions = [r[0] for r in con.execute("""SELECT DISTINCT direction FROM top_sentences WHERE unit_id = ?
                                                   ORDER BY direction DESC""", [ref.unit_id]).fetchall()]
        report = UnitReport(
            run=_run_info(run_dir, manifest), unit=ref,
            directions=[_direction(con, ref.unit_id, d, n_sentences, meta) for d in directions],
            placement=_placement(con, views, ref), activations=ActivationInfo(computed=False),
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"), code_version=__version__,
            probes=unit_probe_ranks(con, views, ref.unit_id), causal=unit_causal(con, views, ref.unit_id),
            distribution=_distribution(con, views, ref.unit_id),
            scores=unit_scores(con, views, ref.unit_id, _held_out(manifest)))
    finally:
        con.close()
    if with_activations:
        _add_activations(report, device)
    else:
        report.activations.note = "token activations not computed (--no-activations)"
    return report


_QUANTILE_LABELS = {"q001": "0.1%", "q010": "1%", "q050": "5%", "q100": "10%", "q250": "25%", "q500": "50%",
                    "q750": "75%", "q900": "90%", "q950": "95%", "q990": "99%", "q999": "99.9%"}


def _distribution(con: duckdb.DuckDBPyConnection, views: set[str], unit_id: int) -> UnitDistribution | None:
    """The unit's quantiles (unit_distribution), moments and exemplars (unit_exemplars + the sample's text)."""
    if "unit_distribution" not in views:
        return None
    rows = _rows(con, "SELECT * FROM unit_distribution WHERE unit_id = ?", [unit_id])
    if not rows:
        return None
    d = rows[0]
    moments = _rows(con, "SELECT mean, std FROM unit_moments WHERE unit_id = ?", [unit_id]) \
        if "unit_moments" in views else []
    bands: dict[str, list[Exemplar]] = {}
    if "unit_exemplars" in views:
        has_text = "sample_sentences" in views and "text" in {
            r[0] for r in con.execute("DESCRIBE sample_sentences").fetchall()}
        text = "s.text" if has_text else "NULL"
        join = "LEFT JOIN sample_sentences s USING (sentence_id)" if has_text else ""
        for r in _rows(con, f"""SELECT e.band, e.rank, e.sentence_id, e.score, e.quantile, {text} AS text
                                FROM unit_exemplars e {join} WHERE e.unit_id = ?
                                ORDER BY e.band = 'random', e.quantile DESC, e.rank""", [unit_id]):
            bands.setdefault(r.pop("band"), []).append(Exemplar(**r))
    ordered = sorted(bands, key=lambda b: (b == "random", -max(e.quantile for e in bands[b])))
    return UnitDistribution(
        sentences=int(d["sentences"]), quantiles=[(label, d.get(col)) for col, label in _QUANTILE_LABELS.items()],
        mean=moments[0]["mean"] if moments else None, std=moments[0]["std"] if moments else None,
        top_kept_share=d.get("top_kept_share"), bands=[ExemplarBand(b, sorted(bands[b], key=lambda e: e.rank))
                                                       for b in ordered])


def _convergence(con: duckdb.DuckDBPyConnection, views: set[str]) -> dict[str, Any] | None:
    if "convergence" not in views:
        return None
    out: dict[str, Any] = {}
    for d in ("top", "bottom"):
        rows = _rows(con, """SELECT sentences_seen, update_rate FROM convergence WHERE site = 'all' AND direction = ?
                             ORDER BY sentences_seen""", [d])
        if rows:
            fixed = next((r["sentences_seen"] for r in rows[1:] if r["update_rate"] <= 0.04), None)
            out[d] = {"final_update_rate": rows[-1]["update_rate"], "sentences_seen": rows[-1]["sentences_seen"],
                      "blocks": len(rows), "sentences_to_96pct_fixed": fixed}
    return out or None


def _index(con: duckdb.DuckDBPyConnection, views: set[str]) -> list[UnitIndexRow]:
    cluster = ("(SELECT cluster FROM unit_clusters c WHERE c.unit_id = u.unit_id AND c.direction = 'top' LIMIT 1)"
               if "unit_clusters" in views else "NULL")
    stat_cols = {r[0] for r in con.execute("DESCRIBE unit_stats").fetchall()}
    dom = ("s.dominant_domain, s.dominant_domain_share" if "dominant_domain" in stat_cols
           else "NULL AS dominant_domain, NULL AS dominant_domain_share")
    rows = _rows(con, f"""
        WITH w AS (SELECT unit_id, list(pattern ORDER BY rank) AS top_words FROM signatures
                   WHERE direction = 'top' AND kind = 'word' AND rank <= 5 GROUP BY unit_id)
        SELECT u.unit_id, u.site, u.layer, u.idx, {dom}, s.sentiment_mean, s.sentiment_std,
               s.pos_selectivity, s.pos_selectivity_tag, s.noun_rel, s.verb_rel, s.adj_rel, s.avg_length,
               coalesce(w.top_words, []) AS top_words, {cluster} AS cluster
        FROM units u LEFT JOIN unit_stats s ON s.unit_id = u.unit_id AND s.direction = 'top'
        LEFT JOIN w ON w.unit_id = u.unit_id ORDER BY u.unit_id""")
    return [UnitIndexRow(**r) for r in rows]


def _layers(con: duckdb.DuckDBPyConnection, index: list[UnitIndexRow]) -> list[LayerSummary]:
    rows = _rows(con, """SELECT u.site, u.layer, count(*) AS units, avg(s.pos_selectivity) AS sel,
                                avg(s.sentiment_std) AS sstd, avg(s.avg_length) AS len
                         FROM units u LEFT JOIN unit_stats s ON s.unit_id = u.unit_id AND s.direction = 'top'
                         GROUP BY u.site, u.layer ORDER BY u.site DESC, u.layer""")
    out = []
    for r in rows:
        counts: dict[str, int] = {}
        for u in index:
            if u.site == r["site"] and u.layer == r["layer"] and u.dominant_domain is not None:
                counts[u.dominant_domain] = counts.get(u.dominant_domain, 0) + 1
        top = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(LayerSummary(r["site"], int(r["layer"]), int(r["units"]), r["sel"], r["sstd"], r["len"], top))
    return out


def model_report(run_dir: Path | str) -> ModelReport:
    """The overview record of a run: model, corpus and job; clustering accuracy and plots (after
    `miner analyze`); convergence; per-layer summaries; probing (when the run has probe tables); and an
    index row for every unit."""
    from miner.report.plots import overview_plots
    from miner.report.probing.plots import concept_plots

    run_dir = Path(run_dir)
    manifest, con, views = _open(run_dir)
    analysis = manifest.get("analysis")
    listed = analysis.get("plots") if isinstance(analysis, dict) and isinstance(analysis.get("plots"), list) else None
    try:
        index = _index(con, views)
        layers = _layers(con, index)
        convergence = _convergence(con, views)
        plots, missing = overview_plots(run_dir, con, views, listed)
        probing = concept_probing(con, views)
        causal = model_causal(con, views)
        scores = model_scores(con, views, _held_out(manifest))
    finally:
        con.close()
    for concept in probing or []:
        concept.plots = concept_plots(concept)
    if not analysis:
        missing.insert(0, "clustering accuracy: run `miner analyze` first")
    timings = {"mining": manifest.get("timings", {}), "step2": manifest.get("step2", {}).get("seconds", {})}
    if isinstance(analysis, dict) and "seconds" in analysis:
        timings["analysis"] = analysis["seconds"]
    return ModelReport(run=_run_info(run_dir, manifest), analysis=analysis or None, missing=missing, plots=plots,
                       layers=layers, units=index, convergence=convergence, timings=timings,
                       generated_at=datetime.now(UTC).isoformat(timespec="seconds"), code_version=__version__,
                       probing=probing, causal=causal, scores=scores)


def _held_out(manifest: dict) -> float | None:
    """The held-out share of a scored run (manifest "scores" record)."""
    record = manifest.get("scores") or {}
    return (record.get("split") or {}).get("held_out")


def _render(report: UnitReport | ModelReport, out_dir: Path, formats: tuple[str, ...] | list[str],
            self_contained: bool, link_overview: bool | None = None, force: bool = False) -> list[Path]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"format {bad[0]!r}: unknown; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    # Pages are never written into a run or corpus folder, nor over an existing page unless forced; the
    # shared assets/ files are the same for every page and are rewritten freely.
    check_output_folder(out_dir, [f"{page_stem(report)}.{fmt}" for fmt in formats], force)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        if fmt == "html":
            paths.append(render_html(report, out_dir, self_contained=self_contained, link_overview=link_overview))
        elif fmt == "md":
            paths.append(render_markdown(report, out_dir, link_overview=link_overview))
        else:
            paths.append(render_json(report, out_dir))
    return paths


def write_unit_report(run_dir: Path | str, unit: str | int, out_dir: Path | str,
                      formats: tuple[str, ...] | list[str] = FORMATS, self_contained: bool = True,
                      n_sentences: int = 20, with_activations: bool = True, device: str = "cpu",
                      link_overview: bool | None = None, force: bool = False) -> list[Path]:
    """Build one unit's report and write it as unit-<unit_id>.html/.md/.json into out_dir.

    The page links to the overview (model.html in out_dir) when link_overview, or, if None, when it exists.
    out_dir may not lie in a run or corpus folder; existing pages are replaced only with `force`.
    """
    check_output_folder(Path(out_dir), force=True)  # refuse a folder inside the run before building anything
    report = unit_report(run_dir, unit, n_sentences, with_activations, device)
    return _render(report, Path(out_dir), formats, self_contained, link_overview, force)


def write_model_report(run_dir: Path | str, out_dir: Path | str, formats: tuple[str, ...] | list[str] = FORMATS,
                       self_contained: bool = True, force: bool = False) -> list[Path]:
    """Build the model overview and write it as model.html/.md/.json into out_dir (unit pages already in
    out_dir are linked from the index); existing overview files are replaced only with `force`."""
    check_output_folder(Path(out_dir), force=True)
    return _render(model_report(run_dir), Path(out_dir), formats, self_contained, force=force)


def default_report_folder(run_dir: Path) -> Path:
    """Where `miner report` writes when --out is not given: reports/<run folder name> under the current folder
    (never inside the run: commands that read a run do not write into it).

    Example: runs/demo -> reports/demo
    """
    return Path("reports") / Path(run_dir).resolve().name


__all__ = ["default_report_folder", "model_report", "render_html", "render_json", "render_markdown", "resolve_unit",
           "unit_report", "write_model_report", "write_unit_report"]
