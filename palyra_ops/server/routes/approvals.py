"""Approvals (SPEC §6): the gates a routine with `approval:` waits at, decided from the console."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops import views
from palyra_ops.errors import Conflict, InvalidInput, NotFound, Unavailable
from palyra_ops.server.operation import ApiRoute, Operation, Param, Reply, ref
from palyra_ops.server.params import path_param, query_choice
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of, gateway_of, wake

APPROVAL_STATES = ("pending", "approved", "denied", "cancelled")
APPROVAL_ID = path_param("approval_id", "The approval's id.")


async def list_approvals(request: Request) -> Response:
    state = query_choice(request, "state", (*APPROVAL_STATES, "all")) or "pending"
    rows = ctx_of(request).journal.list_approvals(None if state == "all" else state)
    return JSONResponse({"items": [views.approval_view(r) for r in rows]})


async def _decide(request: Request, approve: bool) -> Response:
    ctx = ctx_of(request)
    approval_id = request.path_params["approval_id"]
    if ctx.journal.get_approval(approval_id) is None:
        raise NotFound(f"no approval {approval_id!r}")
    await gateway_of(ctx).decide_approval(approval_id, approve, by="console")
    wake(ctx)
    row = ctx.journal.get_approval(approval_id) or {}
    return JSONResponse(views.approval_view(row))


async def approve(request: Request) -> Response:
    return await _decide(request, True)


async def deny(request: Request) -> Response:
    return await _decide(request, False)


_DECIDED = {200: Reply("The decided approval.", ref("Approval"))}

ROUTES = [
    ApiRoute("/approvals", list_approvals, method="GET", operation=Operation(
        summary="Approvals",
        params=(Param("state", "query", "pending (default), approved, denied, cancelled or all.",
                      {"type": "string", "enum": [*APPROVAL_STATES, "all"], "default": "pending"}),),
        replies={200: Reply("Oldest first.", {"type": "object",
                                              "properties": {"items": {"type": "array", "items": ref("Approval")}}})},
        raises=(InvalidInput,),
    )),
    ApiRoute("/approvals/{approval_id}/approve", approve, method="POST", operation=Operation(
        summary="Approve: enables a before_enable routine, releases a before_first_run run",
        params=(APPROVAL_ID,), replies=_DECIDED, raises=(NotFound, Conflict, Unavailable),
    )),
    ApiRoute("/approvals/{approval_id}/deny", deny, method="POST", operation=Operation(
        summary="Deny: the routine stays disabled, or the waiting run is recorded denied",
        params=(APPROVAL_ID,), replies=_DECIDED, raises=(NotFound, Conflict, Unavailable),
    )),
]
