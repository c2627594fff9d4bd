"""Pause and resume (SPEC §12): runtime state of a routine's job, kept apart from its definition.

A paused routine stays scheduled — its due times are still claimed, so each is recorded (status
`skipped`, reason `paused: NOTE`) and nothing is replayed on resume (Temporal's paused schedules
behave the same). A manual dispatch (`cron run-now`) and a backfill still run: they are explicit
operator actions. Pause lives only in the journal's job row, so plan never reports it as drift and
apply never clears it; plan and status show it.

`pause_after_failures: N` pauses after N consecutive final failures (a retried attempt that later
succeeds is not one); the gateway calls `note_failure` / `note_success` and emits `routine.paused`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from palyra_ops.clock import rfc3339
from palyra_ops.errors import NotFound
from palyra_ops.journal import JobRecord, Journal

PAUSED_EVENT = "routine.paused"
#: triggers an operator gives by hand: they run whether or not the routine is paused
OPERATOR_TRIGGERS = ("manual", "backfill")


@dataclass(frozen=True)
class PauseState:
    paused: bool
    note: str | None
    by: str | None
    at_ms: int | None

    @classmethod
    def of(cls, job: JobRecord | None) -> PauseState:
        if not job or not job.get("paused"):
            return cls(False, None, None, None)
        return cls(True, job.get("pause_note"), job.get("paused_by"), job.get("paused_at_ms"))

    def reason(self) -> str:
        """The reason a skipped run records."""
        return f"paused: {self.note}" if self.note else "paused"


def _job(journal: Journal, name: str) -> JobRecord:
    if journal.get_resource("Routine", name) is None:
        raise NotFound(f"routine {name!r} does not exist")
    job = journal.get_job(name)
    if job is None:
        raise NotFound(f"routine {name!r} has no job yet (apply it first)")
    return job


def pause(journal: Journal, name: str, *, note: str | None, by: str) -> PauseState:
    """Pause (again: the note and who are replaced). Idempotent by name."""
    _job(journal, name)
    now = journal.clock.now_ms()
    journal.update_job(name, paused=1, pause_note=note or None, paused_by=by, paused_at_ms=now)
    return PauseState(True, note or None, by, now)


def resume(journal: Journal, name: str) -> PauseState:
    """Resume: the next due time runs as usual; the failure count starts again from zero."""
    _job(journal, name)
    journal.update_job(name, paused=0, pause_note=None, paused_by=None, paused_at_ms=None, consecutive_failures=0)
    return PauseState(False, None, None, None)


def note_failure(journal: Journal, name: str, threshold: int | None) -> PauseState | None:
    """Count a final failure; pause and return the new state when it reaches `threshold`."""
    job = journal.get_job(name)
    if job is None:
        return None
    failures = int(job.get("consecutive_failures") or 0) + 1
    if threshold is not None and failures >= threshold and not job.get("paused"):
        note = f"{failures} consecutive failed runs (pause_after_failures: {threshold})"
        now = journal.clock.now_ms()
        journal.update_job(name, consecutive_failures=failures, paused=1, pause_note=note,
                           paused_by="system:daemon", paused_at_ms=now)
        return PauseState(True, note, "system:daemon", now)
    journal.update_job(name, consecutive_failures=failures)
    return None


def paused_warnings(jobs: Mapping[str, JobRecord], names: Collection[str]) -> list[str]:
    """Plan's note for each paused routine it covers: shown, never a change (apply keeps it paused)."""
    out = []
    for name in sorted(n for n in names if jobs.get(n, {}).get("paused")):
        st = PauseState.of(jobs[name])
        out.append(f"routine {name!r} is paused" + (f" ({st.note})" if st.note else "")
                   + f" by {st.by or '?'} since {rfc3339(st.at_ms) or '?'}: runtime state, apply keeps it paused "
                     "(`palyra-ops cron resume` starts it again)")
    return out
