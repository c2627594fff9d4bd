"""JSON shapes of runs, routines, jobs and approvals, built from journal rows (the API's views).

The console API and every `--output json` of the CLI show these objects, so they are the public
contract of SPEC §6 ("a run, wherever the API or `--output json` shows one, is an object with at
least ..."). Keeping the rendering in one module means the HTTP layer and the CLI cannot drift apart,
and the journal's column names (`*_ms` integers) never leak to users: every instant leaves here as
RFC 3339 text with an offset.
"""

from __future__ import annotations

import json
from datetime import UTC, tzinfo
from typing import Any

from palyra_ops.clock import rfc3339
from palyra_ops.schedule import resolve_zone

#: statuses whose run carries a `reason` (SPEC §6: "why it was skipped, throttled, denied, failed or
#: cancelled; null otherwise")
REASON_STATUSES = frozenset({"skipped", "throttled", "denied", "failed", "cancelled"})

#: trigger kinds that have no nominal scheduled instant (SPEC §6: scheduled_at null for them)
UNSCHEDULED_TRIGGERS = frozenset({"manual", "hook", "webhook", "system_event"})

#: job states shown by `cron status` (SPEC §5 job lifecycle, plus the two an operator also needs)
STATES = ("Pending", "Due", "Running", "Disabled", "Finalized")


def _json_field(value: Any) -> Any:
    """Columns stored as JSON text (payloads, skipped times) come back as structures."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def zone(name: str | None) -> tzinfo:
    """The tzinfo of a routine's `timezone` field; falls back to UTC for anything unresolvable.

    Rendering must never fail on a stored routine, so an unknown zone (which validation should have
    refused anyway) shows times in UTC rather than raising.
    """
    if not name or name.lower() == "utc":
        return UTC
    try:
        return resolve_zone(name)
    except ValueError:
        return UTC


# -- runs ------------------------------------------------------------------------------------------


def run_view(row: dict[str, Any]) -> dict[str, Any]:
    """A run record as the API shows it (SPEC §6): the one place a journal run row becomes public.

    Runs started through the gateway's loopback call (dispatch, webhooks, hooks in a running daemon)
    come back as the gateway's HTTP answer, which this function already rendered; such a run is
    returned as it is, so callers need not know which path the run took.
    """
    if "started_at_ms" not in row and "started_at" in row:
        return row
    status = row.get("status")
    trigger_kind = row.get("trigger_kind")
    scheduled_ms = row.get("scheduled_at_ms")
    if trigger_kind in UNSCHEDULED_TRIGGERS:
        scheduled_ms = None
    skipped_times = _json_field(row.get("skipped_times")) or []
    return {
        "run_id": row.get("run_id"),
        "routine_id": row.get("routine_id"),
        "scheduled_at": rfc3339(scheduled_ms),
        "started_at": rfc3339(row.get("started_at_ms")),
        "finished_at": rfc3339(row.get("finished_at_ms")),
        "attempt": row.get("attempt", 1),
        "status": status,
        "reason": row.get("reason") if status in REASON_STATUSES else None,
        "trigger_kind": trigger_kind,
        "trigger_payload": _json_field(row.get("trigger_payload")),
        "dedupe_key": row.get("dedupe_key"),
        "first_run_id": row.get("first_run_id"),
        "policy_rule": row.get("policy_rule"),
        "delivery_status": row.get("delivery_status"),
        "delivery_error": row.get("delivery_error"),
        "skipped_count": row.get("skipped_count") or 0,
        "skipped_times": [rfc3339(t) if isinstance(t, int) else t for t in skipped_times],
        "created_at": rfc3339(row.get("created_at_ms")),
        "output": row.get("output"),
    }


# -- jobs and routines -----------------------------------------------------------------------------


def job_state(job: dict[str, Any] | None, active_runs: int, now_ms: int) -> str:
    """Where a routine is in the SPEC §5 lifecycle, as `cron status` shows it.

    Running wins over everything (a disabled routine can still have a run finishing); a job with no
    next run (a past one-shot `at`, or a non-schedule trigger) is Finalized: nothing will fire it.
    """
    if active_runs > 0:
        return "Running"
    if job is None:
        return "Finalized"
    if not job.get("enabled", 1):
        return "Disabled"
    nxt = job.get("next_run_at_unix_ms")
    if nxt is None:
        return "Finalized"
    return "Due" if nxt <= now_ms else "Pending"


def last_run_summary(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last run as the job row remembers it, without reading the runs table."""
    if not job or not job.get("last_run_id"):
        return None
    return {
        "run_id": job.get("last_run_id"),
        "status": job.get("last_status"),
        "started_at": rfc3339(job.get("last_started_at_ms")),
        "finished_at": rfc3339(job.get("last_finished_at_ms")),
    }


def _schedule_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    trigger = spec.get("trigger") or {}
    return trigger.get("schedule") if trigger.get("kind") == "schedule" else None


def schedule_zone(schedule: dict[str, Any] | None) -> tuple[str, tzinfo]:
    """The zone a schedule's times are shown in, and its label.

    A one-shot `at: 2027-03-01T09:00:00+01:00` is written with its own offset, and `timezone` (whose
    default is utc) does not apply to it: it is shown in that offset unless a zone other than utc was
    given explicitly. Everything else uses `timezone`.
    """
    schedule = schedule or {}
    name = schedule.get("timezone") or "utc"
    at = schedule.get("at")
    if isinstance(at, str) and name.lower() == "utc":
        from datetime import datetime

        try:
            offset = datetime.fromisoformat(at.replace("Z", "+00:00").replace("z", "+00:00")).tzinfo
        except ValueError:
            offset = None
        if offset is not None:
            delta = offset.utcoffset(None)
            if delta:
                total = int(delta.total_seconds()) // 60
                sign, total = ("+" if total >= 0 else "-"), abs(total)
                return f"{sign}{total // 60:02d}:{total % 60:02d}", offset
    return name, zone(name)


def routine_view(
    resource: Any,
    job: dict[str, Any] | None,
    *,
    now_ms: int,
    active_runs: int = 0,
    last_run: dict[str, Any] | None = None,
    detail: bool = False,
) -> dict[str, Any]:
    """A routine with its runtime state; `detail` adds the whole definition.

    `resource` is a journal `StoredResource`. `last_run` (a run row) replaces the job-row summary
    when the caller read it (the detail route does).
    """
    body = resource.body
    spec = body.get("spec", {})
    meta = body.get("metadata", {})
    schedule = _schedule_of(spec)
    tz = schedule_zone(schedule)[1] if schedule else UTC
    next_ms = job.get("next_run_at_unix_ms") if job else None
    view: dict[str, Any] = {
        "id": resource.name,
        "name": resource.name,
        "description": meta.get("description"),
        "labels": meta.get("labels") or {},
        "trigger_kind": (spec.get("trigger") or {}).get("kind"),
        "schedule": schedule,
        "owner": spec.get("owner"),
        "channel": spec.get("channel"),
        "enabled": bool(spec.get("enabled", True)),
        "effective_enabled": bool(job.get("enabled", 1)) if job else bool(spec.get("enabled", True)),
        "paused": bool(job.get("paused")) if job else False,
        "pause": ({"note": job.get("pause_note"), "by": job.get("paused_by"), "at": rfc3339(job.get("paused_at_ms"))}
                  if job and job.get("paused") else None),
        "approval_state": job.get("approval_state", "none") if job else "none",
        "state": job_state(job, active_runs, now_ms),
        "active_runs": active_runs,
        "next_run_at": rfc3339(next_ms),
        "next_run_at_local": rfc3339(next_ms, tz),
        "last_run": run_view(last_run) if last_run else last_run_summary(job),
        "managed": resource.managed,
        "drift": resource.drifted,
        "source_file": resource.source_file,
        "hash": resource.hash,
        "created_at": rfc3339(resource.created_at_ms),
        "updated_at": rfc3339(resource.updated_at_ms),
    }
    if detail:
        view["spec"] = spec
        view["metadata"] = meta
    return view


def cron_status_view(resource: Any, job: dict[str, Any] | None, *, now_ms: int, active_runs: int = 0) -> dict[str, Any]:
    """One line of `cron status`: state, next run in the routine's zone and in UTC, last status."""
    spec = resource.body.get("spec", {})
    schedule = _schedule_of(spec) or {}
    tz_name, tz = schedule_zone(schedule)
    next_ms = job.get("next_run_at_unix_ms") if job else None
    expr = schedule.get("cron") or (f"every {schedule['every']}" if "every" in schedule else None)
    if expr is None and "at" in schedule:
        expr = f"at {schedule['at']}"
    return {
        "routine_id": resource.name,
        "schedule": expr,
        "timezone": tz_name,
        "enabled": bool(job.get("enabled", 1)) if job else bool(spec.get("enabled", True)),
        "state": job_state(job, active_runs, now_ms),
        "next_run_at": rfc3339(next_ms),
        "next_run_at_local": rfc3339(next_ms, tz),
        "last_status": job.get("last_status") if job else None,
        "last_run_id": job.get("last_run_id") if job else None,
        "last_started_at": rfc3339(job.get("last_started_at_ms")) if job else None,
        "managed": resource.managed,
        "drift": resource.drifted,
    }


# -- approvals -------------------------------------------------------------------------------------


def approval_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "approval_id": row.get("approval_id"),
        "routine_id": row.get("routine_id"),
        "kind": row.get("kind"),
        "run_id": row.get("run_id"),
        "state": row.get("state"),
        "created_at": rfc3339(row.get("created_at_ms")),
        "decided_at": rfc3339(row.get("decided_at_ms")),
        "decided_by": row.get("decided_by"),
    }


def apply_log_view(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "applied_at": rfc3339(row.get("applied_at_ms")),
        "serial": row.get("serial"),
        "source_dir": row.get("source_dir"),
        "added": row.get("added"),
        "changed": row.get("changed"),
        "deleted": row.get("deleted"),
        "git_commit": row.get("git_commit"),
        "git_dirty": None if row.get("git_dirty") is None else bool(row.get("git_dirty")),
        "origin": row.get("origin"),
    }
