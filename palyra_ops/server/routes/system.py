"""The daemon about itself: scheduler, watcher, maintenance tasks, journal, last apply; and the
OpenAPI document of this API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops import views
from palyra_ops.clock import rfc3339
from palyra_ops.server.operation import ApiRoute, Operation, Reply, ref
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of


async def system_status(request: Request) -> Response:
    ctx = ctx_of(request)
    journal = ctx.journal
    now = ctx.clock.now_ms()
    scheduler = ctx.scheduler.status() if ctx.scheduler is not None else None
    watcher = ctx.watcher.status() if ctx.watcher is not None else None
    return JSONResponse(
        {
            "now": rfc3339(now),
            "daemon": {
                "started_at": rfc3339(ctx.started_at_ms or None),
                "uptime_seconds": (now - ctx.started_at_ms) / 1000 if ctx.started_at_ms else None,
                "base_url": ctx.base_url or None,
            },
            "scheduler": scheduler,
            "watcher": watcher if watcher is not None else {"enabled": False},
            "tasks": ctx.extras.get("tasks", {}),
            "journal": {
                "path": str(journal.path),
                "lineage": journal.lineage(),
                "serial": journal.serial(),
                "runs_by_status": journal.count_runs_by_status(),
                "active_runs": len(journal.active_runs()),
                "pending_approvals": len(journal.list_approvals("pending")),
            },
            "last_apply": views.apply_log_view(journal.last_apply()),
        }
    )


async def openapi(request: Request) -> Response:
    from palyra_ops.openapi import build_openapi  # the generator reads the route table this module is in

    return JSONResponse(build_openapi())


ROUTES = [
    ApiRoute("/system/status", system_status, method="GET", operation=Operation(
        summary="Scheduler health, last tick, maintenance tasks, watcher state, journal identity, last apply",
        replies={200: Reply("Daemon status.", ref("SystemStatus"))},
    )),
    ApiRoute("/openapi.json", openapi, method="GET", operation=Operation(
        summary="This document",
        replies={200: Reply("OpenAPI 3.1 document.")},
    )),
]
