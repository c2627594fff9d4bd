"""Health and metrics: the two routes a supervisor or Prometheus polls."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from palyra_ops.clock import rfc3339
from palyra_ops.context import DaemonContext
from palyra_ops.journal import filesystem_problem
from palyra_ops.server.operation import ApiRoute, Auth, Operation, Reply
from palyra_ops.server.responses import JSONResponse
from palyra_ops.server.routes.common import ctx_of


def health_problems(ctx: DaemonContext) -> list[dict[str, Any]]:
    """What keeps the daemon from doing its job right now, worst first; empty when healthy.

    The journal's own verdict (its last writes failed: full, read-only, unavailable), else what its
    file system says (full or mounted read-only, before a write even fails), then the scheduler's
    current trouble and run records still waiting to be written. Each clears by itself once the
    cause is gone (the scheduler probes the journal while a fault stands).
    """
    out: list[dict[str, Any]] = []
    journal = ctx.journal
    fault = getattr(journal, "fault", None)
    if fault is None:
        fault = filesystem_problem(journal.path)
        since = None
    else:
        since = rfc3339(journal.fault_since_ms())
    if fault is not None:
        out.append({"component": "journal", "code": fault.code, "message": fault.message, "since": since})
    sched = ctx.scheduler
    if sched is not None and getattr(sched, "fault", None):
        out.append({"component": "scheduler", "code": "scheduler_paused",
                    "message": f"scheduler paused, retrying every {sched.backoff_s:g} s: {sched.fault}",
                    "since": rfc3339(sched.fault_since_ms)})
    held = ctx.gateway.unwritten_count() if ctx.gateway is not None else 0
    if held:
        out.append({"component": "gateway", "code": "runs_unrecorded",
                    "message": f"{held} run record(s) wait for the journal to be writable", "since": None})
    return out


async def healthz(request: Request) -> Response:
    """200 `{"status": "ok"}`, or 503 naming what is wrong (SPEC §6: errors say what and why)."""
    problems = health_problems(ctx_of(request))
    if not problems:
        return JSONResponse({"status": "ok"})
    first = problems[0]
    return JSONResponse({"status": "unavailable", "error": {"code": first["code"], "message": first["message"]},
                         "problems": problems}, status_code=503)


async def metrics(request: Request) -> Response:
    ctx = ctx_of(request)
    text = ctx.gateway.metrics.render(ctx.journal.job_times()) if ctx.gateway is not None else ""
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


_PROBLEMS = {
    "type": "object",
    "required": ["status", "error", "problems"],
    "properties": {
        "status": {"const": "unavailable"},
        "error": {"type": "object", "required": ["code", "message"],
                  "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
        "problems": {"type": "array", "items": {
            "type": "object",
            "required": ["component", "code", "message"],
            "properties": {
                "component": {"enum": ["journal", "scheduler", "gateway"]},
                "code": {"type": "string", "description": "e.g. journal_full, journal_readonly, "
                                                          "journal_unavailable, scheduler_paused"},
                "message": {"type": "string"},
                "since": {"type": ["string", "null"], "format": "date-time"},
            },
        }},
    },
}

ROUTES = [
    ApiRoute("/healthz", healthz, method="GET", operation=Operation(
        summary="Liveness (no token needed)",
        auth=Auth.PUBLIC,
        replies={
            200: Reply("Alive and working.", {"type": "object", "properties": {"status": {"const": "ok"}}}),
            503: Reply("Running but not working: the journal cannot be written (full, read-only, unavailable) or "
                       "the scheduler is paused; `error` is the first problem. Clears by itself once the cause "
                       "is gone.", _PROBLEMS),
        },
    )),
    ApiRoute("/metrics", metrics, method="GET", operation=Operation(
        summary="Prometheus text format: runs by status, dispatch lag, due backlog, gate outcomes",
        replies={200: Reply("Metrics.", {"type": "string"}, media_type="text/plain")},
    )),
]
