"""The operator's other pages: the next 24 h, sync status, approvals, the system (SPEC §13).

Each reads what its API route reads: `routes.system.daemon_status` (= `GET /console/v1/system/status`),
the watcher's own status or `syncstatus.directory_status` (= `palyra-ops status`) for sync, the
journal's approvals rendered by `views.approval_view`, and decisions through `gateway.decide_approval`
as `POST /console/v1/approvals/{id}/approve|deny` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from palyra_ops import syncstatus, views
from palyra_ops.context import DaemonContext
from palyra_ops.errors import NotFound, PalyraError
from palyra_ops.server.routes.common import ctx_of, gateway_of, wake
from palyra_ops.server.routes.system import daemon_status
from palyra_ops.server.ui import firetimes
from palyra_ops.server.ui.listing import RoutineIndex
from palyra_ops.server.ui.pages import done, fragment
from palyra_ops.server.ui.render import html, page

DECIDED_SHOWN = 50


@page
async def timeline(request: Request) -> Response:
    ctx = ctx_of(request)
    index: RoutineIndex = request.scope["state"]["ui_index"]
    entries, _ = index.entries(ctx)
    jobs = {j["routine_id"]: j for j in ctx.journal.jobs_by_trigger(("schedule",))}
    now = ctx.clock.now_ms()
    # the picture only changes with the routines (the index drops its memo), their jobs' enabled /
    # paused / anchor, or the five-minute bucket: computed once for those, not per page view
    key = ("timeline", now - now % firetimes.BUCKET_MS,
           hash(tuple((j["routine_id"], j.get("enabled"), j.get("paused"), j.get("anchor_ms")) for j in jobs.values())))
    result = index.memo.get(key)
    if result is None:
        result = await run_in_threadpool(firetimes.day_timeline, [e.resource for e in entries], jobs, now)
        index.memo = {k: v for k, v in index.memo.items() if k[0] != "timeline"} | {key: result}
    return html(request, "timeline.html", tl=result, svg=firetimes.svg_bars(result), herd_min=firetimes.HERD_MIN,
                max_fires=firetimes.MAX_FIRES, per_routine=firetimes.MAX_FIRES_PER_ROUTINE)


def _known_skills(ctx: DaemonContext) -> set[str] | None:
    store = ctx.skill_store
    return store.ids() if store is not None else None


def sync_report(ctx: DaemonContext) -> dict[str, Any]:
    """The watcher's last reconcile when it runs; otherwise what `palyra-ops status` would say."""
    if ctx.watcher is not None:
        status = ctx.watcher.status()
        return {"source": "watcher", "state": status["state"], "files": status.get("files", {}), "watcher": status,
                "error": status.get("last_error"), "out_of_sync": [], "directory": status.get("directory")}
    directory = getattr(ctx.config, "dir", None)
    if directory is None:
        return {"source": "none", "state": None, "files": {}, "watcher": None, "error": "the daemon has no routine "
                "directory (--dir)", "out_of_sync": [], "directory": None}
    report = syncstatus.directory_status(Path(directory), ctx.journal.location, known_skills=_known_skills(ctx),
                                         clock=ctx.clock)
    files = {f["file"]: {"state": syncstatus.SyncState.INVALID, "diagnostics": f["diagnostics"], "objects": []}
             for f in report.get("invalid_files", [])}
    return {"source": "status", "state": report["state"], "files": files, "watcher": None,
            "error": report.get("error"), "out_of_sync": report.get("out_of_sync", []),
            "directory": report["dir"], "diagnostics": report.get("diagnostics", [])}


@page
async def sync(request: Request) -> Response:
    ctx = ctx_of(request)
    try:
        report = await run_in_threadpool(sync_report, ctx)
    except PalyraError as exc:
        report = {"source": "status", "state": syncstatus.SyncState.ERROR, "files": {}, "watcher": None,
                  "error": exc.message, "out_of_sync": [], "directory": getattr(ctx.config, "dir", None)}
    return html(request, "sync.html", rep=report)


def _approvals(ctx: DaemonContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [views.approval_view(r) for r in ctx.journal.list_approvals(None)]
    pending = [a for a in rows if a["state"] == "pending"]
    decided = [a for a in rows if a["state"] != "pending"][-DECIDED_SHOWN:][::-1]
    return pending, decided


@page
async def approvals(request: Request) -> Response:
    pending, decided = _approvals(ctx_of(request))
    return html(request, "approvals.html", pending=pending, decided=decided)


@page
async def approvals_rows(request: Request) -> Response:
    pending, _ = _approvals(ctx_of(request))
    return fragment(request, "_approval_rows.html", pending=pending)


async def _decide(request: Request, approve: bool) -> Response:
    ctx = ctx_of(request)
    approval_id = request.path_params["approval_id"]
    row = ctx.journal.get_approval(approval_id)
    if row is None:
        raise NotFound(f"no approval {approval_id!r}")
    await gateway_of(ctx).decide_approval(approval_id, approve, by="console")
    wake(ctx)
    verb = "approved" if approve else "denied"
    return done(request, "/approvals", f"Approval {approval_id} ({row['routine_id']}, {row['kind']}) {verb}")


@page
async def approve(request: Request) -> Response:
    return await _decide(request, True)


@page
async def deny(request: Request) -> Response:
    return await _decide(request, False)


def _skills(ctx: DaemonContext) -> list[dict[str, Any]]:
    store = ctx.skill_store
    return [s.to_json() for s in store.list()] if store is not None else []


def _lag_ms(status: dict[str, Any], now_ms: int) -> int | None:
    """How late the scheduler is: the oldest due time it has not dispatched yet (0 when none is due)."""
    sched = status.get("scheduler") or {}
    nxt = sched.get("next_due_ms")
    if nxt is None:
        return 0 if sched else None
    return max(0, now_ms - nxt)


@page
async def system(request: Request) -> Response:
    ctx = ctx_of(request)
    status = daemon_status(ctx)
    now = ctx.clock.now_ms()
    return html(request, "system.html", st=status, lag_ms=_lag_ms(status, now), skills=_skills(ctx),
                daemon_id=ctx.daemon_id)


ROUTES = [
    Route("/timeline", timeline, methods=["GET"]),
    Route("/sync", sync, methods=["GET"]),
    Route("/approvals", approvals, methods=["GET"]),
    Route("/live/approvals", approvals_rows, methods=["GET"]),
    Route("/approvals/{approval_id}/approve", approve, methods=["POST"]),
    Route("/approvals/{approval_id}/deny", deny, methods=["POST"]),
    Route("/system", system, methods=["GET"]),
]
