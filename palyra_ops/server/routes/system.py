"""The daemon about itself: scheduler, watcher, maintenance tasks, journal, last apply; and the
OpenAPI document of this API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops import syncstatus
from palyra_ops.context import DaemonContext
from palyra_ops.server.operation import ApiRoute, Operation, Reply, ref
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of


def daemon_status(ctx: DaemonContext) -> dict[str, Any]:
    """The one `system_status` of `syncstatus` (shared with `palyra-ops status`, the watcher and the
    web console's system page)."""
    return syncstatus.system_status(
        ctx.journal,
        now_ms=ctx.clock.now_ms(),
        started_at_ms=ctx.started_at_ms,
        base_url=ctx.base_url,
        scheduler=ctx.scheduler.status() if ctx.scheduler is not None else None,
        watcher=ctx.watcher.status() if ctx.watcher is not None else None,
        tasks=ctx.tasks,
        daemon_id=ctx.daemon_id,
    )


async def system_status(request: Request) -> Response:
    return JSONResponse(daemon_status(ctx_of(request)))


async def openapi(request: Request) -> Response:
    from palyra_ops.openapi import build_openapi  # the generator reads the route table this module is in

    return JSONResponse(build_openapi())


ROUTES = [
    ApiRoute("/system/status", system_status, method="GET", operation=Operation(
        summary="Scheduler health, last tick, maintenance tasks, watcher state, journal identity, the daemons on"
                " the journal with their heartbeats, last apply",
        replies={200: Reply("Daemon status.", ref("SystemStatus"))},
    )),
    ApiRoute("/openapi.json", openapi, method="GET", operation=Operation(
        summary="This document",
        replies={200: Reply("OpenAPI 3.1 document.")},
    )),
]
