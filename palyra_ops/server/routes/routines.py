"""Routines and their runs (SPEC §6, §12): list, one, upsert, dispatch, enable, pause/resume, delete, runs.

Handlers are thin on purpose: parse the request, call the library (`reconcile`, the gateway and
scheduler on the `DaemonContext`), render with `views`. Anything that decides what the journal
should contain lives in those libraries, so the CLI, apply and the API cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops import pause, reconcile, views
from palyra_ops.context import DaemonContext
from palyra_ops.errors import Conflict, InvalidInput, NotFound, Unavailable, ValidationFailed
from palyra_ops.server.body import read_object
from palyra_ops.server.operation import ApiRoute, Operation, Param, Reply, ref
from palyra_ops.server.params import (
    CURSOR,
    LIMIT,
    encode_cursor,
    path_param,
    query_bool,
    query_choice,
    query_cursor,
    query_limit,
)
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import RUN_STATUSES, TRIGGER_KINDS, ctx_of, gateway_of, routine_of, wake
from palyra_ops.server.routes.validation import routine_from_payload

DISPATCH_FIELDS = ("routine_id", "trigger_kind", "trigger_payload", "dedupe_key")
ROUTINE_ID = path_param("routine_id", "The routine's name (metadata.name).")


def active_counts(ctx: DaemonContext) -> Counter[str]:
    return Counter(r["routine_id"] for r in ctx.journal.active_runs())


def routine_detail(ctx: DaemonContext, routine_id: str) -> dict[str, Any]:
    res = routine_of(ctx, routine_id)
    journal = ctx.journal
    job = journal.get_job(routine_id)
    last = journal.get_run(job["last_run_id"]) if job and job.get("last_run_id") else None
    if last is None:
        recent = journal.list_runs(routine_id, limit=1)
        last = recent[0] if recent else None
    return views.routine_view(res, job, now_ms=ctx.clock.now_ms(), active_runs=len(journal.active_runs(routine_id)),
                              last_run=last, detail=True)


def _listed(view: dict[str, Any], spec: dict[str, Any], trigger_kind: str | None, enabled: bool | None,
            channel: str | None) -> bool:
    """Whether a routine passes the listing's filters (they combine with AND)."""
    if trigger_kind is not None and view["trigger_kind"] != trigger_kind:
        return False
    if enabled is not None and view["effective_enabled"] != enabled:
        return False
    delivery = spec.get("delivery") or {}
    return channel is None or channel in (view["channel"], delivery.get("channel"), delivery.get("failure_channel"))


async def list_routines(request: Request) -> Response:
    ctx = ctx_of(request)
    limit = query_limit(request)
    after = query_cursor(request, "routines")
    trigger_kind = query_choice(request, "trigger_kind", TRIGGER_KINDS)
    enabled = query_bool(request, "enabled")
    channel = request.query_params.get("channel")
    journal = ctx.journal
    jobs = {j["routine_id"]: j for j in journal.list_jobs()}
    active = active_counts(ctx)
    now = ctx.clock.now_ms()
    items: list[dict[str, Any]] = []
    next_cursor = None
    for res in journal.list_resources("Routine"):  # sorted by name: the paging key
        if after is not None and res.name <= after:
            continue
        view = views.routine_view(res, jobs.get(res.name), now_ms=now, active_runs=active[res.name])
        if not _listed(view, res.body.get("spec", {}), trigger_kind, enabled, channel):
            continue
        if len(items) == limit:
            next_cursor = encode_cursor("routines", items[-1]["name"])
            break
        items.append(view)
    return JSONResponse({"items": items, "next_cursor": next_cursor})


async def get_routine(request: Request) -> Response:
    return JSONResponse(routine_detail(ctx_of(request), request.path_params["routine_id"]))


async def upsert_routine(request: Request) -> Response:
    ctx = ctx_of(request)
    payload = await read_object(request)
    resource = routine_from_payload(payload, ctx)
    _, created = reconcile.upsert_resource(ctx.journal, resource, origin="api")
    wake(ctx)
    view = routine_detail(ctx, resource.name)
    view["created"] = created
    return JSONResponse(view, status_code=201 if created else 200)


def _dispatch_args(payload: dict[str, Any]) -> tuple[str, str, str | None]:
    routine_id = payload.get("routine_id")
    if not isinstance(routine_id, str) or not routine_id:
        raise InvalidInput("routine_id: required (the routine's name)")
    trigger_kind = payload.get("trigger_kind", "manual")
    if trigger_kind not in TRIGGER_KINDS:
        raise InvalidInput(f"trigger_kind: {trigger_kind!r} is not one of {', '.join(TRIGGER_KINDS)}")
    dedupe_key = payload.get("dedupe_key")
    if dedupe_key is not None and not isinstance(dedupe_key, str):
        raise InvalidInput("dedupe_key: must be a string")
    unknown = set(payload) - set(DISPATCH_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r} (expected {', '.join(DISPATCH_FIELDS)})")
    return routine_id, trigger_kind, dedupe_key


async def dispatch_routine(request: Request) -> Response:
    ctx = ctx_of(request)
    payload = await read_object(request)
    routine_id, trigger_kind, dedupe_key = _dispatch_args(payload)
    routine_of(ctx, routine_id)
    run = await gateway_of(ctx).dispatch(routine_id, trigger_kind=trigger_kind,
                                         trigger_payload=payload.get("trigger_payload"), dedupe_key=dedupe_key,
                                         traceparent=request.headers.get("traceparent"))
    if not run:
        raise Conflict(f"a run of {routine_id!r} with dedupe key {dedupe_key!r} already exists", code="duplicate")
    return JSONResponse(views.run_view(run), status_code=202)


async def set_enabled(request: Request) -> Response:
    ctx = ctx_of(request)
    routine_id = request.path_params["routine_id"]
    payload = await read_object(request)
    enabled = payload.get("enabled")
    if not isinstance(enabled, bool) or set(payload) != {"enabled"}:
        raise InvalidInput('body must be {"enabled": true} or {"enabled": false}')
    routine_of(ctx, routine_id)
    reconcile.set_enabled(ctx.journal, routine_id, enabled)
    wake(ctx)
    return JSONResponse(routine_detail(ctx, routine_id))


MAX_NOTE = 500


async def pause_routine(request: Request) -> Response:
    ctx = ctx_of(request)
    routine_id = request.path_params["routine_id"]
    payload = await read_object(request)
    note = payload.get("note")
    if set(payload) - {"note"} or not (note is None or isinstance(note, str)):
        raise InvalidInput('body must be {} or {"note": "why"}')
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidInput(f"note: at most {MAX_NOTE} characters")
    pause.pause(ctx.journal, routine_id, note=note, by="console")
    wake(ctx)
    return JSONResponse(routine_detail(ctx, routine_id))


async def resume_routine(request: Request) -> Response:
    ctx = ctx_of(request)
    routine_id = request.path_params["routine_id"]
    if await read_object(request):
        raise InvalidInput("body must be {}")
    pause.resume(ctx.journal, routine_id)
    wake(ctx)
    return JSONResponse(routine_detail(ctx, routine_id))


async def delete_routine(request: Request) -> Response:
    ctx = ctx_of(request)
    routine_id = request.path_params["routine_id"]
    res = routine_of(ctx, routine_id)
    reconcile.delete_resource(ctx.journal, "Routine", routine_id)
    wake(ctx)
    return JSONResponse({"deleted": routine_id, "managed": res.managed})


async def list_runs(request: Request) -> Response:
    ctx = ctx_of(request)
    routine_id = request.path_params["routine_id"]
    limit = query_limit(request)
    before = query_cursor(request, "runs")
    status = query_choice(request, "status", RUN_STATUSES)
    journal = ctx.journal
    rows = journal.list_runs(routine_id, status=status, limit=limit + 1, before_run_id=before)
    if not rows and before is None and journal.get_resource("Routine", routine_id) is None:
        raise NotFound(f"no routine {routine_id!r}")
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor("runs", rows[-1]["run_id"]) if more else None
    return JSONResponse({"items": [views.run_view(r) for r in rows], "next_cursor": next_cursor})


ROUTES = [
    ApiRoute("/routines", list_routines, method="GET", operation=Operation(
        summary="List routines",
        description="Sorted by name. Filters combine with AND.",
        params=(
            Param("trigger_kind", "query", "Only this trigger kind.", {"type": "string", "enum": list(TRIGGER_KINDS)}),
            Param("enabled", "query", "Only effectively enabled (true) or disabled (false) routines.", {"type": "boolean"}),
            Param("channel", "query", "Only routines whose origin channel, delivery channel or failure channel is this.",
                  {"type": "string"}),
            LIMIT, CURSOR,
        ),
        replies={200: Reply("One page of routines.", ref("RoutinePage"))},
        raises=(InvalidInput,),
    )),
    ApiRoute("/routines/upsert", upsert_routine, method="POST", operation=Operation(
        summary="Create or update a routine",
        description="Validated like a routine file (JSON Schema + semantic checks). A new routine is unmanaged; "
                    "a managed one shows as drift until the next apply restores the git version. The next run "
                    "is recomputed from now; an upsert never fires a run by itself.",
        body=ref("UpsertRequest"),
        replies={200: Reply("Updated.", ref("RoutineDetail")), 201: Reply("Created.", ref("RoutineDetail"))},
        raises=(InvalidInput, ValidationFailed),
    )),
    ApiRoute("/routines/dispatch", dispatch_routine, method="POST", operation=Operation(
        summary="Run a routine now",
        description="The run passes the same gates as a scheduled one; the response is the run as accepted "
                    "(or as stopped by a gate, with its reason).",
        body=ref("DispatchRequest"),
        replies={202: Reply("The run record.", ref("Run"))},
        raises=(InvalidInput, NotFound, Conflict, Unavailable),
    )),
]

#: after the literal paths above: `/routines/upsert` is that resource, not a routine named "upsert"
ROUTINE_ROUTES = [
    ApiRoute("/routines/{routine_id}", get_routine, method="GET", operation=Operation(
        summary="One routine: definition, state, next run, last run, source file, managed/drift",
        params=(ROUTINE_ID,),
        replies={200: Reply("The routine.", ref("RoutineDetail"))},
        raises=(NotFound,),
    )),
    ApiRoute("/routines/{routine_id}/enabled", set_enabled, method="POST", operation=Operation(
        summary="Enable or disable a routine",
        params=(ROUTINE_ID,),
        body={"type": "object", "required": ["enabled"], "additionalProperties": False,
              "properties": {"enabled": {"type": "boolean"}}},
        replies={200: Reply("The routine after the change.", ref("RoutineDetail"))},
        raises=(InvalidInput, NotFound),
    )),
    ApiRoute("/routines/{routine_id}/pause", pause_routine, method="POST", operation=Operation(
        summary="Pause a routine",
        description="It stays scheduled; each due time is recorded as a skipped run (reason `paused: NOTE`) "
                    "until it is resumed. A manual dispatch and a backfill still run. Pause is runtime state: "
                    "plan and status show it, apply leaves it alone. Pausing again replaces the note.",
        params=(ROUTINE_ID,),
        body={"type": "object", "additionalProperties": False,
              "properties": {"note": {"type": "string", "maxLength": MAX_NOTE}}},
        replies={200: Reply("The routine after the change.", ref("RoutineDetail"))},
        raises=(InvalidInput, NotFound),
    )),
    ApiRoute("/routines/{routine_id}/resume", resume_routine, method="POST", operation=Operation(
        summary="Resume a paused routine",
        description="The next due time runs as usual; times due while it was paused are not replayed "
                    "(`palyra-ops backfill` runs them on purpose). Resuming a routine that is not paused changes nothing.",
        params=(ROUTINE_ID,),
        body={"type": "object", "additionalProperties": False, "properties": {}},
        replies={200: Reply("The routine after the change.", ref("RoutineDetail"))},
        raises=(InvalidInput, NotFound),
    )),
    ApiRoute("/routines/{routine_id}/delete", delete_routine, method="POST", operation=Operation(
        summary="Delete a routine",
        description="A managed routine comes back at the next apply while it is still in the directory.",
        params=(ROUTINE_ID,),
        replies={200: Reply("Deleted.", {"type": "object", "properties": {"deleted": {"type": "string"},
                                                                          "managed": {"type": "boolean"}}})},
        raises=(NotFound,),
    )),
    ApiRoute("/routines/{routine_id}/runs", list_runs, method="GET", operation=Operation(
        summary="A routine's runs, newest first",
        params=(ROUTINE_ID, Param("status", "query", "Only runs with this status.",
                                  {"type": "string", "enum": list(RUN_STATUSES)}), LIMIT, CURSOR),
        replies={200: Reply("One page of runs.", ref("RunPage"))},
        raises=(InvalidInput, NotFound),
    )),
]
