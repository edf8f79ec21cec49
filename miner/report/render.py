"""Render report records to files: HTML (Jinja, autoescaped), Markdown and JSON.

Corpus text is untrusted. HTML templates are autoescaped; data handed to page scripts is a JSON island
(`<script type="application/json">`, with <, > and & written as \\u escapes) that the scripts read with
JSON.parse and write into the page with textContent only; a Content-Security-Policy allows exactly the
page's own scripts and styles (by SHA-256 hash when inlined), so even a template bug could not run a
script from the corpus. Markdown escapes every character Markdown or HTML would interpret.

File names inside out_dir: unit-<unit_id>.{html,md,json}, model.{html,md,json}, assets/ (shared assets
and the SVGs referenced by Markdown).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from miner import atomic
from miner.report.records import ModelReport, Plot, SentenceEntry, UnitReport

OVERVIEW = "model"
ASSETS = "assets"
LEVELS = 10
"""Colour steps per sign of the activation scale."""


def unit_stem(unit_id: int) -> str:
    return f"unit-{unit_id}"


def _asset(name: str) -> str:
    return resources.files("miner.report").joinpath("templates", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def fmt_num(value: float | None, digits: int = 3) -> str:
    """Short number: None/NaN -> "–", 0.0123456 -> "0.0123", 1234.5 -> "1,234"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(1, digits - 1)}f}".rstrip("0").rstrip(".")


def fmt_pct(value: float | None, digits: int = 1) -> str:
    """0.2345 -> "23.5%"; None -> "–"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}%"


def level(activation: float, max_abs: float | None) -> int:
    """Signed colour step of an activation on the unit's scale: -LEVELS..LEVELS (0 = uncoloured).

    Example: level(1.0, 2.0) -> 5; level(-2.0, 2.0) -> -10; level(0.05, 2.0) -> 1.
    """
    if not max_abs or activation == 0 or math.isnan(activation):
        return 0
    step = min(LEVELS, max(1, math.ceil(abs(activation) / max_abs * LEVELS)))
    return step if activation > 0 else -step


def bar_scale(rows: list, *attrs: str) -> float:
    """The largest value of these attributes over rows (a table's bar scale); 1.0 if there is none.

    Example: rows with share 0.1, 0.3 and background_share 0.2 -> 0.3.
    """
    values = [v for r in rows for a in attrs if (v := getattr(r, a)) is not None and not math.isnan(v)]
    return max(values) if values and max(values) > 0 else 1.0


def act_class(activation: float, max_abs: float | None) -> str:
    lv = level(activation, max_abs)
    return "" if lv == 0 else f"a a{'p' if lv > 0 else 'n'}{abs(lv)}"


def segments(sentence: SentenceEntry) -> list[dict[str, Any]]:
    """The sentence text cut into plain runs and model-token runs (with their activation), in order.

    Example: "how much money" with tokens how(0:3) much(4:8) money(9:14) ->
    [how 1.1] [" "] [much 1.3] [" "] [money 2.3]. Text past the last token (truncated input) comes back
    as a plain run with cut=True. Without character offsets the tokens are listed, separated by spaces.
    """
    def seg(text: str, act: float | None = None, token: str | None = None, cut: bool = False) -> dict[str, Any]:
        return {"text": text, "act": act, "token": token, "cut": cut}

    toks = sentence.tokens
    if not toks:
        return [seg(sentence.text)]
    if any(t.start is None for t in toks):
        out = []
        for i, t in enumerate(toks):
            if i:
                out.append(seg(" "))
            out.append(seg(t.token.removeprefix("##"), t.activation, t.token))
        return out
    text, pos, out = sentence.text, 0, []
    spans = sorted(((t.start, t.end or 0, t) for t in toks if t.start is not None), key=lambda s: s[:2])
    for start, end, t in spans:  # every token has offsets here (checked above)
        if start < pos or end <= start:
            continue
        if start > pos:
            out.append(seg(text[pos:start]))
        out.append(seg(text[start:end], t.activation, t.token))
        pos = end
    if pos < len(text):
        out.append(seg(text[pos:], cut=bool(sentence.truncated)))
    return out


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(value: object) -> str:
    """Text safe inside a Markdown paragraph or table cell: HTML characters as entities, Markdown
    punctuation backslash-escaped, line breaks as spaces.

    Example: "<script>a|b*c" -> "&lt;script&gt;a\\|b\\*c".
    """
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def md_sentence(sentence: SentenceEntry, max_abs: float | None, strong: float = 0.5) -> str:
    """A sentence in Markdown; whitespace-separated chunks holding a word whose activation is at least
    `strong` of the unit's largest |activation| (same sign as the sentence's score) are bold, neighbours
    merged, so every ** sits next to whitespace or the sentence's ends (valid CommonMark emphasis).

    Example: "@united flighted delayed for hours." with @, united, flighted strong ->
    "**@united flighted** delayed for hours."
    """
    text = sentence.text
    if not sentence.words or not max_abs:
        return md_escape(text)
    sign = 1 if sentence.score >= 0 else -1
    hot = [(w.start, w.end) for w in sentence.words
           if sign * w.activation >= strong * max_abs and any(c.isalnum() for c in w.text)]
    chunks = [(m.start(), m.end(), any(a < m.end() and b > m.start() for a, b in hot))
              for m in re.finditer(r"\S+", text)]
    out, pos, i = [], 0, 0
    while i < len(chunks):
        start, end, bold = chunks[i]
        j = i
        while bold and j + 1 < len(chunks) and chunks[j + 1][2]:
            j += 1
        end = chunks[j][1]
        out.append(md_escape(text[pos:start]))
        piece = md_escape(text[start:end])
        out.append(f"**{piece}**" if bold else piece)
        pos, i = end, j + 1
    out.append(md_escape(text[pos:]))
    return "".join(out)


@functools.lru_cache(maxsize=2)
def _env(html: bool) -> jinja2.Environment:
    """The Jinja environment (one per output kind and process: templates compile once)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("miner.report", "templates"), autoescape=html,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "separators": (",", ":")}
    env.filters.update(num=fmt_num, pct=fmt_pct, md=md_escape)
    env.globals.update(act_class=act_class, bar_scale=bar_scale, segments=segments, level=level, md_sentence=md_sentence,
                       unit_stem=unit_stem, LEVELS=LEVELS)
    return env


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode()


def _write_plot_assets(plots: list[Plot], out_dir: Path) -> dict[str, str]:
    """Write each plot to out_dir/assets/<name>.svg; returns name -> relative path."""
    folder = out_dir / ASSETS
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for p in plots:
        _write(folder / f"{p.name}.svg", p.svg)
        paths[p.name] = f"{ASSETS}/{p.name}.svg"
    return paths


def _write(path: Path, text: str) -> Path:
    atomic.write_text(path, text)
    return path


def _page_assets(out_dir: Path, self_contained: bool) -> dict[str, Any]:
    """CSS/JS either inline (with the CSP hashes that allow exactly them) or as shared files in assets/."""
    css, guard, script = _asset("report.css"), _asset("guard.js"), _asset("report.js")
    if self_contained:
        csp = (f"default-src 'none'; style-src {_sha256(css)}; script-src {_sha256(guard)} {_sha256(script)}; "
               "img-src data:; base-uri 'none'; form-action 'none'")
        return {"inline": True, "css": Markup(css), "guard": Markup(guard), "script": Markup(script), "csp": csp}
    folder = out_dir / ASSETS
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("report.css", css), ("guard.js", guard), ("report.js", script)):
        _write(folder / name, text)
    csp = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    return {"inline": False, "csp": csp, "assets": ASSETS}


SERVED_CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; base-uri 'none'; "
              "form-action 'self'")
"""The Content-Security-Policy of pages `miner serve` renders (shared assets from /assets, forms to itself); the
server's header adds frame-ancestors, which a <meta> policy cannot carry."""


def _context(report: UnitReport | ModelReport, out_dir: Path | None, page: dict[str, Any],
             link_overview: bool | None, pages: set[int] | None = None) -> dict[str, Any]:
    """The template context; `out_dir` None renders for the server (every unit has a page, images inline)."""
    ctx: dict[str, Any] = {"r": report, "page": page, "overview": f"{OVERVIEW}.html"}
    if isinstance(report, UnitReport):
        exists = out_dir is None or (out_dir / f"{OVERVIEW}.html").exists()
        ctx["link_overview"] = exists if link_overview is None else link_overview
        ctx["max_abs"] = report.activations.max_abs
    else:
        if pages is None:
            pages = ({u.unit_id for u in report.units} if out_dir is None else
                     {int(m.group(1)) for p in out_dir.glob("unit-*.html")
                      if (m := re.fullmatch(r"unit-(\d+)\.html", p.name))})
        cols = ["unit_id", "site", "layer", "idx", "dominant_domain", "dominant_domain_share", "sentiment_mean",
                "sentiment_std", "pos_selectivity", "pos_selectivity_tag", "noun_rel", "verb_rel", "adj_rel",
                "avg_length", "top_words", "cluster"]
        rows = [[getattr(u, c) for c in cols] + [u.unit_id in pages] for u in report.units]
        ctx["index"] = {"columns": [*cols, "page"], "rows": _clean(rows)}
        ctx["pages"] = pages
        if page["inline"] or out_dir is None:
            ctx["images"] = {p.name: svg_data_uri(p.svg) for p in report.all_plots()}
        else:
            ctx["images"] = _write_plot_assets(report.all_plots(), out_dir)
    return ctx


def html_text(report: UnitReport | ModelReport, nav: dict[str, Any] | None = None, assets: str = "/assets") -> str:
    """The report as one HTML page for `miner serve`: shared assets under `assets`, every unit linked, and
    `nav` (neighbouring units and layers, the same unit in other runs, search) in the header."""
    page = {"inline": False, "csp": SERVED_CSP, "assets": assets, "served": True}
    name = "unit.html.j2" if isinstance(report, UnitReport) else "model.html.j2"
    ctx = _context(report, None, page, True)
    ctx["nav"] = nav
    return _env(True).get_template(name).render(ctx)


def asset_text(name: str) -> str:
    """A shared asset (report.css, guard.js, report.js) as served."""
    if name not in ("report.css", "guard.js", "report.js"):
        raise KeyError(name)
    return _asset(name)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None (JSON has no NaN), recursively; floats rounded to 6 significant digits."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else float(f"{value:.6g}")
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively, without rounding (the JSON record keeps catalog values exactly)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def page_stem(report: UnitReport | ModelReport) -> str:
    """The file name of a report's pages without extension: unit-<unit_id> or model."""
    return unit_stem(report.unit.unit_id) if isinstance(report, UnitReport) else OVERVIEW


def render_html(report: UnitReport | ModelReport, out_dir: Path, self_contained: bool = True,
                link_overview: bool | None = None) -> Path:
    """Write the report as HTML into out_dir (unit-<id>.html or model.html); returns the file.

    self_contained: CSS, scripts and images inside the page (data: URIs); else shared files in out_dir/assets/.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "unit.html.j2" if isinstance(report, UnitReport) else "model.html.j2"
    ctx = _context(report, out_dir, _page_assets(out_dir, self_contained), link_overview)
    html = _env(True).get_template(name).render(ctx)
    return _write(out_dir / f"{page_stem(report)}.html", html)


def render_markdown(report: UnitReport | ModelReport, out_dir: Path, link_overview: bool | None = None) -> Path:
    """Write the report as Markdown into out_dir; the overview's plots go to out_dir/assets/*.svg."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, Any] = {"r": report, "overview": f"{OVERVIEW}.md"}
    if isinstance(report, UnitReport):
        ctx["link_overview"] = (out_dir / f"{OVERVIEW}.md").exists() if link_overview is None else link_overview
        ctx["max_abs"] = report.activations.max_abs
        name = "unit.md.j2"
    else:
        ctx["images"] = _write_plot_assets(report.all_plots(), out_dir)
        ctx["pages"] = {int(m.group(1)) for p in out_dir.glob("unit-*.md") if (m := re.fullmatch(r"unit-(\d+)\.md", p.name))}
        name = "model.md.j2"
    return _write(out_dir / f"{page_stem(report)}.md", _env(False).get_template(name).render(ctx))


def render_json(report: UnitReport | ModelReport, out_dir: Path) -> Path:
    """Write the report record as JSON (NaN as null) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(report.to_dict()), indent=1, ensure_ascii=False, allow_nan=False)
    return _write(out_dir / f"{page_stem(report)}.json", text + "\n")


SERVE_DEFAULTS: dict[str, Any] = {"run": None, "form": {}, "error": None, "results": None, "columns": [], "how": None,
                                  "result": None, "unit": None, "summaries": {}, "limits": None, "runs": [],
                                  "rows": [], "plots": [], "message": None}


def serve_page(page: str, title: str, kind: str = "", **ctx: Any) -> str:
    """One of `miner serve`'s own pages (runs, search, try, compare, error) as HTML (autoescaped, SERVED_CSP)."""
    values = {**SERVE_DEFAULTS, **ctx, "page": page, "title": title, "kind": kind, "csp": SERVED_CSP}
    return _env(True).get_template("serve.html.j2").render(values)
