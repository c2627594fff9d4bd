"""The routines list and a routine's page, with their live fragments and actions (SPEC §13).

Reads go through the API's own functions (`routes.routines.routine_detail`, `views.run_view`, the
journal's read methods); actions call what the API's routes call (`gateway.dispatch`,
`reconcile.set_enabled`, then `wake`), so a button here and `palyra-ops cron run-now` cannot differ.
Every action is a POST form (the gate has checked its CSRF token) answered with a 303 back to the
page and a flash message; `console.js` posts the same forms in the background (`X-Palyra-Async`)
and shows the message without leaving the page, which is how a run appears live after "Run now".
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from palyra_ops import pause as pausing
from palyra_ops import reconcile, views
from palyra_ops.context import DaemonContext
from palyra_ops.errors import Conflict, InvalidInput
from palyra_ops.server.params import query_int
from palyra_ops.server.routes.common import RUN_STATUSES, TRIGGER_KINDS, ctx_of, gateway_of, routine_of, wake
from palyra_ops.server.routes.routines import routine_detail
from palyra_ops.server.ui import firetimes
from palyra_ops.server.ui.listing import DEFAULT_LIMIT, MAX_LIMIT, RoutineIndex, routine_page
from palyra_ops.server.ui.render import html, page, redirect
from palyra_ops.server.ui.session import Session

RUNS_SHOWN = 50
ASYNC_HEADER = "x-palyra-async"


def choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    """A filter from the page's form: empty means any; anything else must be one of `choices`."""
    value = request.query_params.get(name) or None
    if value is not None and value not in choices:
        raise InvalidInput(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def _filters(request: Request) -> dict[str, Any]:
    return {
        "trigger_kind": choice(request, "trigger_kind", TRIGGER_KINDS),
        "state": choice(request, "state", views.STATES),
        "channel": request.query_params.get("channel") or None,
        "after": request.query_params.get("after") or None,
        "limit": query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    }


def _index(request: Request) -> RoutineIndex:
    index: RoutineIndex = request.scope["state"]["ui_index"]
    return index


def fragment(request: Request, template: str, **values: Any) -> Response:
    """A live fragment with an ETag of its body: an unchanged one answers 304 and costs the page
    nothing to apply."""
    response = html(request, template, **values)
    etag = '"' + hashlib.sha256(response.body).hexdigest()[:32] + '"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return response


def done(request: Request, path: str, message: str, kind: str = "ok") -> Response:
    """After an action: the message as text for a background post, else a redirect that shows it."""
    if request.headers.get(ASYNC_HEADER):
        return PlainTextResponse(message)
    session: Session = request.scope["state"]["ui_session"]
    session.flash.append((kind, message))
    return redirect(path)


# -- the routines list ---------------------------------------------------------------------------------


@page
async def routines_list(request: Request) -> Response:
    ctx = ctx_of(request)
    filters = _filters(request)
    result = routine_page(ctx, _index(request), **filters)
    params = {k: v for k, v in filters.items() if k not in ("after",) and v is not None}
    if params.get("limit") == DEFAULT_LIMIT:
        params.pop("limit")
    return html(request, "routines.html", page=result, filters=filters, params=params,
                trigger_kinds=TRIGGER_KINDS, states=views.STATES)


@page
async def routines_rows(request: Request) -> Response:
    filters = _filters(request)
    result = routine_page(ctx_of(request), _index(request), **filters)
    return fragment(request, "_routine_rows.html", page=result)


# -- one routine -------------------------------------------------------------------------------------


def definition_yaml(stored: Any) -> str:
    """The routine as a file would hold it (canonical: every default filled in)."""
    body = stored.body
    doc = {"apiVersion": "palyra/v1", "kind": "Routine",
           "metadata": {"name": stored.name, **body.get("metadata", {})}, "spec": body.get("spec", {})}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def _runs(ctx: DaemonContext, name: str, status: str | None) -> list[dict[str, Any]]:
    return [views.run_view(r) for r in ctx.journal.list_runs(name, status=status, limit=RUNS_SHOWN)]


@page
async def routine_page_view(request: Request) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    detail = routine_detail(ctx, name)
    stored = routine_of(ctx, name)
    job = ctx.journal.get_job(name)
    status = choice(request, "status", RUN_STATUSES)
    last_apply = views.apply_log_view(ctx.journal.last_apply())
    return html(
        request, "routine.html", r=detail, job=job or {}, yaml_text=definition_yaml(stored),
        runs=_runs(ctx, name, status), status=status, statuses=RUN_STATUSES,
        upcoming=firetimes.upcoming(stored, job, ctx.clock.now_ms()),
        last_apply=last_apply,
    )


@page
async def routine_runs_rows(request: Request) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    routine_of(ctx, name)
    status = choice(request, "status", RUN_STATUSES)
    return fragment(request, "_run_rows.html", runs=_runs(ctx, name, status))


@page
async def routine_state(request: Request) -> Response:
    """The routine's state block (state, next run, last run, badges), refreshed live."""
    ctx = ctx_of(request)
    name = request.path_params["name"]
    return fragment(request, "_routine_state.html", r=routine_detail(ctx, name), job=ctx.journal.get_job(name) or {})


@page
async def run_now(request: Request) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    routine_of(ctx, name)
    run = await gateway_of(ctx).dispatch(name, trigger_kind="manual", trigger_payload=None, dedupe_key=None)
    if not run:
        raise Conflict(f"a run of {name!r} was refused as a duplicate", code="duplicate")
    view = views.run_view(run)
    reason = f" ({view['reason']})" if view.get("reason") else ""
    return done(request, f"/routines/{name}", f"Run {view['run_id']} of {name}: {view['status']}{reason}")


async def _set_enabled(request: Request, enabled: bool) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    routine_of(ctx, name)
    reconcile.set_enabled(ctx.journal, name, enabled)
    wake(ctx)
    return done(request, f"/routines/{name}", f"{name} {'enabled' if enabled else 'disabled'}")


@page
async def enable(request: Request) -> Response:
    return await _set_enabled(request, True)


@page
async def disable(request: Request) -> Response:
    return await _set_enabled(request, False)


async def _set_paused(request: Request, paused: bool) -> Response:
    ctx = ctx_of(request)
    name = request.path_params["name"]
    routine_of(ctx, name)
    note = request.scope["state"]["ui_form"].get("note") or None
    if paused:
        pausing.pause(ctx.journal, name, note=note, by="console")
    else:
        pausing.resume(ctx.journal, name)
    wake(ctx)
    return done(request, f"/routines/{name}", f"{name} {'paused' if paused else 'resumed'}")


@page
async def pause(request: Request) -> Response:
    return await _set_paused(request, True)


@page
async def resume(request: Request) -> Response:
    return await _set_paused(request, False)


ROUTES = [
    Route("/", routines_list, methods=["GET"]),
    Route("/live/routines", routines_rows, methods=["GET"]),
    Route("/routines/{name}", routine_page_view, methods=["GET"]),
    Route("/live/routines/{name}/runs", routine_runs_rows, methods=["GET"]),
    Route("/live/routines/{name}/state", routine_state, methods=["GET"]),
    Route("/routines/{name}/run", run_now, methods=["POST"]),
    Route("/routines/{name}/enable", enable, methods=["POST"]),
    Route("/routines/{name}/disable", disable, methods=["POST"]),
    Route("/routines/{name}/pause", pause, methods=["POST"]),
    Route("/routines/{name}/resume", resume, methods=["POST"]),
]
