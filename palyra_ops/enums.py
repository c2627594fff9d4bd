"""The closed vocabularies of routines and runs, as `StrEnum`s.

A leaf module (it imports nothing of the project), so `schedule/`, `model`, `journal/` and the
gateway share one definition instead of comparing string literals in several places. Members are
`str`s: rows read from the journal and bodies written by older versions compare equal without
conversion. tests/test_enums.py holds each enum to the JSON Schema that publishes the same set.
"""

from __future__ import annotations

from enum import StrEnum


class TriggerKind(StrEnum):
    SCHEDULE = "schedule"
    HOOK = "hook"
    WEBHOOK = "webhook"
    SYSTEM_EVENT = "system_event"
    MANUAL = "manual"


#: what started a run: a routine's own trigger kinds, and `backfill` (an operator running past
#: instants on purpose, SPEC §12) — built from TriggerKind so the two cannot drift apart
RunTrigger = StrEnum("RunTrigger", [*((m.name, m.value) for m in TriggerKind), ("BACKFILL", "backfill")])


class Concurrency(StrEnum):
    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"
    QUEUE_ONE = "queue_one"


class Misfire(StrEnum):
    FIRE_ONCE = "fire_once"
    IGNORE = "ignore"
    CATCH_UP = "catch_up"


class QuietAction(StrEnum):
    SKIP = "skip"
    DEFER = "defer"


class ApprovalMode(StrEnum):
    NONE = "none"
    BEFORE_ENABLE = "before_enable"
    BEFORE_FIRST_RUN = "before_first_run"


class DeliveryMode(StrEnum):
    SAME_CHANNEL = "same_channel"
    SPECIFIC_CHANNEL = "specific_channel"
    LOCAL_ONLY = "local_only"
    LOGS_ONLY = "logs_only"


class SilentPolicy(StrEnum):
    NOISY = "noisy"
    FAILURE_ONLY = "failure_only"
    AUDIT_ONLY = "audit_only"


class RunStatus(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    THROTTLED = "throttled"
    DENIED = "denied"
    CANCELLED = "cancelled"
    AWAITING_APPROVAL = "awaiting_approval"


#: a run the daemon still owns (start-up recovery finalizes these of a daemon that is gone)
ACTIVE_STATUSES: tuple[RunStatus, ...] = (RunStatus.ACCEPTED, RunStatus.RUNNING)
#: a run that will not change again
FINAL_STATUSES: tuple[RunStatus, ...] = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED,
                                         RunStatus.THROTTLED, RunStatus.DENIED, RunStatus.CANCELLED)


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
