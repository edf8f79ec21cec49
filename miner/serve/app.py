"""`miner serve`: the runs as a local web app (Starlette), read-only.

Routes (every run under /r/<slug>/, its folder name):
  /                                 the served runs; /compare puts them side by side
  /r/<run>/model.html               the model overview (as `miner report --model`), every unit linked
  /r/<run>/unit-<id>.html           any unit's page, rendered on demand from the catalog and cached, with
                                    links (and arrow keys) to the neighbouring units and layers and to the
                                    same LAYER:IDX in the other runs; /r/<run>/unit/<LAYER:IDX> redirects there
  /r/<run>/search                   by words (precision / recall / IoU, as `miner concepts`), by SQL returning
                                    unit_id (the `miner sql` sandbox) or by a metadata share of the top queue
  /r/<run>/try                      your text: the unit's token activations and the units it excites most
  /api/...                          the same as JSON: /api/runs, /api/r/<run>/units/<id>, /api/r/<run>/search,
                                    /api/r/<run>/try (POST {"text", "unit"})
Pages carry the static reports' Content-Security-Policy (as a header too); corpus and user text are escaped by
the same templates. Unknown runs and units are 404 pages; bad input is a 400 page naming the field.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from miner.errors import InputError, MinerError
from miner.report.build import model_report, unit_report
from miner.report.records import UnitRef
from miner.report.render import SERVED_CSP, asset_text, html_text, json_safe, serve_page
from miner.serve.runs import PageCache, ServedRun, load_run, neighbours
from miner.serve.search import SearchForm, search_units, signature_summaries
from miner.serve.try_text import Limits, TextProbe, split_text

ASSET_TYPES = {"report.css": "text/css; charset=utf-8", "guard.js": "text/javascript; charset=utf-8",
               "report.js": "text/javascript; charset=utf-8"}
HEADERS = {"Content-Security-Policy": SERVED_CSP + "; frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


class Server:
    """The served runs and what they share: the page cache, the model lock and the request bounds."""

    def __init__(self, run_dirs: list[Path], device: str = "cpu", activations: bool = True,
                 limits: Limits | None = None, cache_size: int = 256) -> None:
        if not run_dirs:
            raise InputError("serve: give at least one run folder")
        self.runs: dict[str, ServedRun] = {}
        for path in run_dirs:
            run = load_run(Path(path), set(self.runs))
            self.runs[run.slug] = run
        self.device = device
        self.activations = activations
        self.limits = limits or Limits()
        self.cache = PageCache(cache_size)
        self.model_lock = threading.Lock()
        self.probes: dict[str, TextProbe] = {}
        self.slots = asyncio.Semaphore(self.limits.concurrent)

    def run(self, slug: str) -> ServedRun:
        run = self.runs.get(slug)
        if run is None:
            raise HTTPException(404, f"no run named {slug!r} is served here (runs: {', '.join(self.runs)})")
        return run

    def unit(self, run: ServedRun, unit_id: int) -> int:
        if not run.has(unit_id):
            raise HTTPException(404, f"run {run.slug} has no unit_id {unit_id} (it has 0..{len(run.unit_ids) - 1})")
        return unit_id

    def nav(self, run: ServedRun, unit_id: int) -> dict[str, Any]:
        near = neighbours(run, unit_id)
        titles = {"prev": "previous unit", "next": "next unit", "up": "same index, layer below",
                  "down": "same index, layer above"}
        out: dict[str, Any] = {k: ({"href": f"unit-{u}.html", "label": run.label(u), "title": titles[k]}
                                   if u is not None else None) for k, u in near.items()}
        place = (run.sites[unit_id], int(run.layers[unit_id]), int(run.idxs[unit_id]))
        out["others"] = [{"run": other.name, "href": f"/r/{other.slug}/unit-{other.place[place]}.html",
                          "label": run.label(unit_id)}
                         for other in self.runs.values() if other is not run and place in other.place]
        out["search"], out["try"] = "search", f"try?unit={quote(run.label(unit_id))}"
        return out

    def unit_page(self, run: ServedRun, unit_id: int) -> str:
        key = ("unit", run.slug, unit_id)
        page = self.cache.get(key)
        if page is None:
            with self.model_lock:
                report = unit_report(run.path, unit_id, with_activations=self.activations, device=self.device)
            page = html_text(report, self.nav(run, unit_id))
            self.cache.put(key, page)
        return page

    def overview(self, run: ServedRun) -> str:
        key = ("model", run.slug)
        page = self.cache.get(key)
        if page is None:
            page = html_text(model_report(run.path))
            self.cache.put(key, page)
        return page

    def probe(self, run: ServedRun) -> TextProbe:
        if run.slug not in self.probes:
            self.probes[run.slug] = TextProbe(run, self.device, self.model_lock)
        return self.probes[run.slug]

    async def try_text(self, run: ServedRun, text: str, unit: str) -> tuple[Any, UnitRef | None]:
        """Bounded: at most `limits.concurrent` at once; a request that waits over 30 s gets 503."""
        sentences = split_text(text, self.limits)
        ref = None
        if unit.strip():
            uid = run.resolve(unit)
            ref = UnitRef(uid, run.sites[uid], int(run.layers[uid]), int(run.idxs[uid]))
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout=30)
        except TimeoutError:
            raise HTTPException(503, "the server is busy with other texts; try again") from None
        try:
            result = await run_in_threadpool(self.probe(run).run_text, sentences, ref, self.limits.top_units)
        finally:
            self.slots.release()
        return result, ref


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HTTPException(404, f"{what} {value!r} is not a number") from None


def create_app(server: Server) -> Starlette:
    """The Starlette app over a `Server`."""

    async def runs_page(request: Request) -> Response:
        return _html(serve_page("runs", "Served runs", "neuron-miner", runs=list(server.runs.values())))

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSET_TYPES:
            raise HTTPException(404, f"no asset {name!r}")
        return Response(asset_text(name), media_type=ASSET_TYPES[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def run_root(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        return RedirectResponse(f"/r/{run.slug}/model.html", status_code=302)

    async def overview(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        return _html(await run_in_threadpool(server.overview, run))

    async def unit_page(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        uid = server.unit(run, _int(request.path_params["uid"], "unit id"))
        return _html(await run_in_threadpool(server.unit_page, run, uid))

    async def unit_by_label(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        try:
            uid = run.resolve(request.path_params["spec"])
        except InputError as exc:
            raise HTTPException(404, str(exc)) from None
        return RedirectResponse(f"/r/{run.slug}/unit-{uid}.html", status_code=302)

    def _search(run: ServedRun, params: dict[str, str]) -> dict[str, Any]:
        form = SearchForm.from_params(params)
        if form.empty:
            return {"form": form.as_dict(), "results": None}
        found = search_units(run, form)
        return {"form": form.as_dict(), **found}

    async def search(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        params = dict(request.query_params)
        try:
            found = await run_in_threadpool(_search, run, params)
        except MinerError as exc:
            return _html(serve_page("search", f"Search {run.name}", "Search", run=run,
                                    form=SearchForm.from_params(params, strict=False).as_dict(), error=str(exc)), 400)
        return _html(serve_page("search", f"Search {run.name}", "Search", run=run, **found))

    async def try_page(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        if request.method == "POST":
            body = (await request.body()).decode("utf-8", errors="replace")
            params = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        else:
            params = dict(request.query_params)
        form = {"text": params.get("text", ""), "unit": params.get("unit", "")}
        ctx: dict[str, Any] = {"run": run, "form": form, "limits": server.limits}
        if form["text"].strip():
            try:
                result, ref = await server.try_text(run, form["text"], form["unit"])
            except InputError as exc:
                return _html(serve_page("try", f"Try your text on {run.name}", "Try", error=str(exc), **ctx), 400)
            ctx.update(result=result, unit=ref and {"unit_id": ref.unit_id, "label": ref.label},
                       summaries=await run_in_threadpool(signature_summaries, run, [h.unit_id for h in result.top]))
        return _html(serve_page("try", f"Try your text on {run.name}", "Try", **ctx))

    async def compare(request: Request) -> Response:
        from miner.serve.compare import compare_context

        return _html(serve_page("compare", "Runs side by side", "Compare",
                                **await run_in_threadpool(compare_context, list(server.runs.values()))))

    async def api_runs(request: Request) -> Response:
        return JSONResponse([{"slug": r.slug, "name": r.name, "path": str(r.path), "units": len(r.unit_ids)}
                             for r in server.runs.values()])

    async def api_unit(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        uid = server.unit(run, _int(request.path_params["uid"], "unit id"))
        report = await run_in_threadpool(unit_report, run.path, uid, 20, False)
        return Response(json.dumps(json_safe(report.to_dict())), media_type="application/json")

    async def api_search(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        try:
            found = await run_in_threadpool(_search, run, dict(request.query_params))
        except MinerError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rows = found.get("results") or []
        return JSONResponse({"how": found.get("how"), "units": [
            {"unit_id": r["unit_id"], "label": r["label"], **{k: json_safe(v) for k, v in r["cells"].items()}}
            for r in rows]})

    async def api_try(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get("text", ""), str):
                raise InputError("body: a JSON object with a text string (and optionally a unit)")
            result, ref = await server.try_text(run, body.get("text", ""), str(body.get("unit") or ""))
        except (InputError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(json_safe({
            "unit": ref and {"unit_id": ref.unit_id, "label": ref.label},
            "sentences": [{"text": s.text, "score": s.score,
                           "tokens": [{"token": t.token, "start": t.start, "end": t.end, "activation": t.activation}
                                      for t in s.tokens or []]} for s in result.sentences],
            "top": [{"unit_id": h.unit_id, "label": h.label, "score": h.score, "z": h.z} for h in result.top]}))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status_code=status)
        title = "Not found" if status == 404 else f"Error {status}"
        return _html(serve_page("error", title, "neuron-miner", message=detail), status)

    async def bad_input(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400)
        return _html(serve_page("error", "Bad request", "neuron-miner", message=str(exc)), 400)

    routes = [
        Route("/", runs_page), Route("/assets/{name}", asset), Route("/compare", compare), Route("/favicon.ico", favicon),
        Route("/r/{run}", run_root), Route("/r/{run}/", run_root), Route("/r/{run}/model.html", overview),
        Route("/r/{run}/unit-{uid}.html", unit_page), Route("/r/{run}/unit/{spec:path}", unit_by_label),
        Route("/r/{run}/search", search), Route("/r/{run}/try", try_page, methods=["GET", "POST"]),
        Route("/api/runs", api_runs), Route("/api/r/{run}/units/{uid}", api_unit),
        Route("/api/r/{run}/search", api_search), Route("/api/r/{run}/try", api_try, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, MinerError: bad_input})


def serve(run_dirs: list[Path], host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          activations: bool = True) -> None:
    """Check the runs, then serve them until interrupted (uvicorn, one process)."""
    import uvicorn

    server = Server(run_dirs, device=device, activations=activations)
    for run in server.runs.values():  # the model loaded once, before the first request
        server.probe(run).run_text(["warm up"], None, 1)
    uvicorn.run(create_app(server), host=host, port=port, log_level="info", access_log=False)
