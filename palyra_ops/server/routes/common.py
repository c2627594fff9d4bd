"""What several route modules need from the daemon context."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from palyra_ops.context import DaemonContext
from palyra_ops.enums import RunTrigger, TriggerKind
from palyra_ops.errors import NotFound, Unavailable
from palyra_ops.journal import StoredResource

if TYPE_CHECKING:
    from palyra_ops.gateway import Gateway

TRIGGER_KINDS = tuple(TriggerKind)
#: what can start a run: a routine trigger, or an operator's backfill
RUN_TRIGGERS = tuple(RunTrigger)
RUN_STATUSES = ("accepted", "running", "succeeded", "failed", "skipped", "throttled", "denied", "cancelled",
                "awaiting_approval")


def ctx_of(request: Request) -> DaemonContext:
    ctx: DaemonContext = request.app.state.ctx
    return ctx


def gateway_of(ctx: DaemonContext) -> Gateway:
    if ctx.gateway is None:
        raise Unavailable("the gateway is not running")
    return ctx.gateway


def routine_of(ctx: DaemonContext, routine_id: str) -> StoredResource:
    res = ctx.journal.get_resource("Routine", routine_id)
    if res is None:
        raise NotFound(f"no routine {routine_id!r}")
    return res


def wake(ctx: DaemonContext) -> None:
    """A change to routines or approvals can move the next due time: let the scheduler look now."""
    scheduler = ctx.scheduler
    if scheduler is not None and hasattr(scheduler, "wake"):
        scheduler.wake()
