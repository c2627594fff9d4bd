"""Pure time math for schedules: fire instants, DST rules, notes, preview and run-policy arithmetic.

No I/O beyond loading tz data and no wall clock: every function takes instants as integer Unix
milliseconds, so the scheduler, plan, the HTTP preview route and the CLI agree by construction and tests
can pin exact fire times. docs/scheduling.md describes the semantics chosen here, with examples.
"""

from __future__ import annotations

from palyra_ops.schedule.core import (
    DST_FOLD_POLICIES,
    DST_GAP_POLICIES,
    MIN_EVERY_MS,
    Note,
    Schedule,
    check_schedule,
    notes_for,
    parse_expr,
    preview,
)
from palyra_ops.schedule.cron import CronError, compile_cron
from palyra_ops.schedule.policies import (
    MISFIRE_POLICIES,
    QUIET_ACTIONS,
    RETRY_CAP_MS,
    MisfireDecision,
    QuietHours,
    check_quiet_hours,
    jitter_offset_ms,
    resolve_misfire,
    retry_delay_ms,
)
from palyra_ops.schedule.zones import check_timezone, resolve_zone

__all__ = [
    "DST_FOLD_POLICIES",
    "DST_GAP_POLICIES",
    "MIN_EVERY_MS",
    "MISFIRE_POLICIES",
    "QUIET_ACTIONS",
    "RETRY_CAP_MS",
    "CronError",
    "MisfireDecision",
    "Note",
    "QuietHours",
    "Schedule",
    "check_quiet_hours",
    "check_schedule",
    "check_timezone",
    "compile_cron",
    "jitter_offset_ms",
    "notes_for",
    "parse_expr",
    "preview",
    "resolve_misfire",
    "resolve_zone",
    "retry_delay_ms",
]
