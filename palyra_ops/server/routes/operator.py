"""Operator control beyond the anchors (SPEC §12): backfill a range, explain a run.

Thin like every route module: the decisions are `palyra_ops.backfill` and `palyra_ops.explain`; the
runs go out through the scheduler's dispatch path and the gateway like any other.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops import backfill
from palyra_ops.clock import InstantError, parse_rfc3339, rfc3339
from palyra_ops.errors import InvalidInput, NotFound, Unavailable
from palyra_ops.model import Routine
from palyra_ops.server.body import read_object
from palyra_ops.server.operation import ApiRoute, Operation, Reply
from palyra_ops.server.params import path_param
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of, gateway_of, routine_of

ROUTINE_ID = path_param("routine_id", "The routine's name (metadata.name).")


def _instant(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key)
    if not isinstance(value, str):
        raise InvalidInput(f"{key}: an RFC 3339 date-time with offset is required (e.g. 2026-12-01T00:00:00Z)")
    try:
        return parse_rfc3339(value)
    except InstantError as exc:
        raise InvalidInput(f"{key}: {exc}") from None


async def backfill_routine(request: Request) -> Response:
    ctx = ctx_of(request)
    routine_id = request.path_params["routine_id"]
    payload = await read_object(request)
    if set(payload) - {"from", "to", "dry_run"} or not isinstance(payload.get("dry_run", False), bool):
        raise InvalidInput('body must be {"from": RFC3339, "to": RFC3339, "dry_run": bool}')
    start, end = _instant(payload, "from"), _instant(payload, "to")
    routine = Routine.from_resource(routine_of(ctx, routine_id))
    plan = backfill.plan_backfill(ctx.journal, routine, start, end, ctx.clock.now_ms())
    runs: list[dict[str, Any]] = []
    if not payload.get("dry_run"):
        gateway, scheduler = gateway_of(ctx), ctx.scheduler
        if scheduler is None:
            raise Unavailable("the scheduler is not running")
        claimed = backfill.claim_backfill(ctx.journal, plan, daemon_id=ctx.daemon_id or "")
        scheduler.dispatch_claimed([gateway.message_for(routine, trigger_kind="backfill", scheduled_at_ms=n,
                                                        run_id=run_id, catch_up=plan.in_order)
                                    for n, run_id in claimed], in_order=plan.in_order)
        runs = [{"run_id": run_id, "scheduled_at": rfc3339(n)} for n, run_id in claimed]
    return JSONResponse({
        "routine_id": routine_id, "from": rfc3339(start), "to": rfc3339(end), "dry_run": bool(payload.get("dry_run")),
        "instants": [rfc3339(n) for n in plan.instants], "already_run": [rfc3339(n) for n in plan.already],
        "in_order": plan.in_order, "runs": runs,
    }, status_code=200 if payload.get("dry_run") else 202)


_TIMES = {"type": "array", "items": {"type": "string", "format": "date-time"}}

ROUTES = [
    ApiRoute("/routines/{routine_id}/backfill", backfill_routine, method="POST", operation=Operation(
        summary="Backfill a range of a routine's past instants",
        description="The routine's nominal instants in [from, to] (its schedule, anchor, zone and DST rules) that "
                    "have no run yet are claimed on their occurrence keys and run through the normal gates, oldest "
                    f"first; one after the other unless its concurrency is `allow`. At most {backfill.MAX_INSTANTS} "
                    "instants; `to` may not be in the future. `dry_run` lists them and runs nothing.",
        params=(ROUTINE_ID,),
        body={"type": "object", "required": ["from", "to"], "additionalProperties": False,
              "properties": {"from": {"type": "string", "format": "date-time"},
                             "to": {"type": "string", "format": "date-time"}, "dry_run": {"type": "boolean"}}},
        replies={
            200: Reply("The dry run: what would run.", {"type": "object"}),
            202: Reply("Claimed and sent: `runs` are the run ids, `already_run` the instants left alone.", {
                "type": "object",
                "properties": {"routine_id": {"type": "string"}, "instants": _TIMES, "already_run": _TIMES,
                               "in_order": {"type": "boolean"}, "dry_run": {"type": "boolean"},
                               "runs": {"type": "array", "items": {"type": "object", "properties": {
                                   "run_id": {"type": "string"}, "scheduled_at": {"type": "string"}}}}}}),
        },
        raises=(InvalidInput, NotFound, Unavailable),
    )),
]
