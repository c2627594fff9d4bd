"""Schedules without running anything: the next fire times of a schedule, and every schedule
routine's state (SPEC §6)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from palyra_ops import views
from palyra_ops.clock import parse_rfc3339, rfc3339
from palyra_ops.errors import Diagnostic, InvalidInput, PalyraError, ValidationFailed
from palyra_ops.schedule import preview
from palyra_ops.server.body import read_object
from palyra_ops.server.operation import ApiRoute, Operation, Reply, ref
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of
from palyra_ops.server.routes.routines import active_counts

MAX_PREVIEW_COUNT = 100


def _preview_expr(payload: dict[str, Any]) -> tuple[str, str]:
    """Accept either the routine-file shape (`schedule: {cron|every|at, timezone}`) or the CLI's
    (`expr` + `timezone`), so a console can preview exactly what it is about to upsert."""
    if "schedule" in payload:
        schedule = payload["schedule"]
        if not isinstance(schedule, dict):
            raise InvalidInput("schedule: must be an object with one of cron, every, at")
        keys = [k for k in ("cron", "every", "at") if k in schedule]
        if len(keys) != 1:
            raise InvalidInput("schedule: exactly one of cron, every, at is required")
        key = keys[0]
        value = schedule[key]
        if not isinstance(value, str):
            raise InvalidInput(f"schedule.{key}: must be a string")
        expr = value if key == "cron" else f"{key}:{value}"
        timezone = schedule.get("timezone", payload.get("timezone", "utc"))
    elif "expr" in payload:
        expr = payload["expr"]
        if not isinstance(expr, str):
            raise InvalidInput("expr: must be a string (cron expression, every:DURATION or at:RFC3339)")
        timezone = payload.get("timezone", "utc")
    else:
        raise InvalidInput("either schedule or expr is required")
    if not isinstance(timezone, str):
        raise InvalidInput("timezone: must be a string")
    return expr, timezone


def _preview_window(payload: dict[str, Any], now_ms: int) -> tuple[int, int, dict[str, Any] | None]:
    """count, from (ms) and dst of a preview request."""
    count = payload.get("count", 5)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW_COUNT:
        raise InvalidInput(f"count: must be an integer between 1 and {MAX_PREVIEW_COUNT}")
    from_text = payload.get("from")
    from_ms = now_ms
    if from_text is not None:
        try:
            from_ms = parse_rfc3339(str(from_text))
        except ValueError as exc:
            raise InvalidInput(f"from: {exc}") from None
    dst = payload.get("dst")
    if dst is not None and not isinstance(dst, dict):
        raise InvalidInput("dst: must be an object like {\"gap\": \"shift\", \"fold\": \"first\"}")
    return count, from_ms, dst


async def schedule_preview(request: Request) -> Response:
    payload = await read_object(request)
    expr, timezone = _preview_expr(payload)
    count, from_ms, dst = _preview_window(payload, ctx_of(request).clock.now_ms())
    try:
        result = preview(expr, timezone, from_ms=from_ms, count=count, dst=dst)
    except (PalyraError, ValueError) as exc:
        field = "expr" if "expr" in payload else "schedule"
        message = exc.message if isinstance(exc, PalyraError) else str(exc)
        raise ValidationFailed([Diagnostic(file="request", line=0, column=0, path=field, message=message)]) from None
    return JSONResponse(result)


async def cron_status(request: Request) -> Response:
    ctx = ctx_of(request)
    journal = ctx.journal
    jobs = {j["routine_id"]: j for j in journal.list_jobs()}
    active = active_counts(ctx)
    now = ctx.clock.now_ms()
    items = [
        views.cron_status_view(res, jobs.get(res.name), now_ms=now, active_runs=active[res.name])
        for res in journal.list_resources("Routine")
        if (res.body.get("spec", {}).get("trigger") or {}).get("kind") == "schedule"
    ]
    return JSONResponse({"now": rfc3339(now), "items": items})


ROUTES = [
    ApiRoute("/routines/schedule-preview", schedule_preview, method="POST", operation=Operation(
        summary="Next fire times of a schedule, with DST notes",
        body=ref("SchedulePreviewRequest"),
        replies={200: Reply("Fire times in the schedule's zone.", ref("SchedulePreview"))},
        raises=(InvalidInput, ValidationFailed),
    )),
    ApiRoute("/cron/status", cron_status, method="GET", operation=Operation(
        summary="Every schedule routine: state (Pending/Due/Running/Disabled/Finalized), next run local and UTC, "
                "last status",
        replies={200: Reply("Scheduled routines by name.", ref("CronStatus"))},
    )),
]
