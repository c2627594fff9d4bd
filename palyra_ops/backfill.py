"""Backfill (SPEC §12): run a routine's past nominal instants on purpose, through the normal gates.

Temporal's schedule backfill and Airflow's "run a missed date" are the models. The instants come from
the same schedule code the scheduler uses (anchor, time zone, DST rules); an instant that already
has a run on its occurrence key — run, skipped or backfilled before — is left alone, and the runs a
backfill makes carry that key too, so running the same backfill twice runs nothing the second time
and the scheduler can never claim one of them again.

Runs go out oldest first. Unless the routine allows concurrent runs they go one after the other
(queued in order behind whatever runs, like a catch-up backlog), so `forbid` never overlaps and
never skips a backfilled instant; with `allow` they are sent at once. Trigger kind `backfill`: a
paused routine still runs them (an operator asked), every other gate applies as to any run.
"""

from __future__ import annotations

from dataclasses import dataclass

from palyra_ops.enums import Concurrency, RunStatus, RunTrigger
from palyra_ops.errors import InvalidInput
from palyra_ops.journal import Journal
from palyra_ops.model import Routine
from palyra_ops.schedule import Schedule

#: instants one backfill may cover: a bigger range is a mistake more often than a plan
MAX_INSTANTS = 1000


@dataclass(frozen=True)
class BackfillPlan:
    routine_id: str
    start_ms: int
    end_ms: int
    #: nominal instants to run, oldest first
    instants: list[int]
    #: instants of the range that already have a run (skipped by this backfill)
    already: list[int]
    #: sent one after the other (every concurrency policy but `allow`)
    in_order: bool


def plan_backfill(journal: Journal, routine: Routine, start_ms: int, end_ms: int, now_ms: int) -> BackfillPlan:
    """Which instants of [start_ms, end_ms] a backfill runs; refuses what cannot be meant."""
    name = routine.name
    if routine.schedule is None:
        raise InvalidInput(f"routine {name!r} has no schedule (trigger {routine.trigger_kind}): backfill runs a "
                           "schedule's past instants; `palyra-ops cron run-now` runs it once")
    if start_ms > end_ms:
        raise InvalidInput("--from is after --to")
    if end_ms > now_ms:
        raise InvalidInput("--to is in the future: backfill runs past instants, the scheduler runs the rest")
    job = journal.get_job(name)
    anchor = job.get("anchor_ms") if job else None
    fires = Schedule.from_spec(routine.schedule, routine.policies.dst).fires_between(
        start_ms - 1, end_ms, anchor, limit=MAX_INSTANTS + 1)
    if len(fires) > MAX_INSTANTS:
        raise InvalidInput(f"the range holds more than {MAX_INSTANTS} instants of {name!r}; backfill at most "
                           f"{MAX_INSTANTS} at a time (narrow --from/--to)")
    claimed = journal.claimed_instants(name, start_ms, end_ms)
    return BackfillPlan(name, start_ms, end_ms, instants=[n for n in fires if n not in claimed],
                        already=[n for n in fires if n in claimed],
                        in_order=routine.policies.concurrency != Concurrency.ALLOW)


def claim_backfill(journal: Journal, plan: BackfillPlan, *, daemon_id: str) -> list[tuple[int, str]]:
    """Insert the backfill's runs on their occurrence keys in one transaction; (instant, run id) for
    each one this call claimed (an instant the scheduler or another backfill took meanwhile is not)."""
    now = journal.clock.now_ms()
    out: list[tuple[int, str]] = []
    with journal.transaction() as c:
        for n in plan.instants:
            run_id = journal.insert_run(c, routine_id=plan.routine_id, occurrence_key=f"{plan.routine_id}|{n}",
                                        scheduled_at_ms=n, trigger_kind=RunTrigger.BACKFILL,
                                        status=RunStatus.ACCEPTED, attempt=1, daemon_id=daemon_id, created_at_ms=now)
            if run_id is not None:
                out.append((n, run_id))
    return out
