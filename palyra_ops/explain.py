"""`palyra-ops explain NAME [--at T | --run ID]`: why a routine did or did not run (SPEC §12).

Kubernetes users read controller logs to answer this; here the answer is assembled from what the
journal recorded and the same code the scheduler and gateway run: the schedule match (nominal instant
at or before T, with the routine's anchor, zone and DST rules), jitter, whether the occurrence was
claimed and how late (the misfire decision), then each gate in SPEC order with its verdict.

A gate's verdict comes from the run record when there is one: the gate that stopped a run wrote its
reason with the gate's prefix (`quiet_hours`, `cooldown: …`, `policy: …`, `concurrency: …`), so the
deciding gate is read, not guessed; gates before it passed, gates after it were not reached. With
no record (nothing claimed the instant) the static gates are evaluated now with the scheduler's own
functions (enabled, pause, quiet hours, policy) and the claim step says why nothing ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from palyra_ops.clock import rfc3339
from palyra_ops.enums import RunStatus
from palyra_ops.errors import InvalidInput, NotFound
from palyra_ops.journal import JobRecord, Journal, RunRecord
from palyra_ops.model import Routine
from palyra_ops.pause import PauseState
from palyra_ops.schedule import QuietHours, Schedule, jitter_offset_ms

#: the gates in SPEC §5 order (pause is checked with `disabled`, shown on its own line)
GATES = ("disabled", "paused", "approval", "dedupe", "cooldown", "quiet_hours", "policy", "concurrency")
#: reason prefixes the gateway writes, by the gate that wrote them
_PREFIXES = (("disabled", "disabled"), ("paused", "paused"), ("awaiting_approval", "approval"),
             ("approval_denied", "approval"), ("duplicate", "dedupe"), ("cooldown", "cooldown"),
             ("quiet_hours", "quiet_hours"), ("policy", "policy"), ("concurrency", "concurrency"),
             ("misfire", "misfire"), ("routine_deleted", "disabled"))

PASS, STOP, NOT_REACHED, UNKNOWN = "pass", "stop", "not reached", "unknown"


@dataclass
class Step:
    step: str
    verdict: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"step": self.step, "verdict": self.verdict, "detail": self.detail}


@dataclass
class Explanation:
    routine_id: str
    at_ms: int | None
    nominal_ms: int | None
    due_ms: int | None
    run: RunRecord | None
    steps: list[Step] = field(default_factory=list)
    #: the step that decided the outcome (a gate, `misfire`, `claim`, `schedule`), or None: it ran
    decided_by: str | None = None
    outcome: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"routine_id": self.routine_id, "at": rfc3339(self.at_ms), "nominal": rfc3339(self.nominal_ms),
                "due": rfc3339(self.due_ms), "run_id": self.run["run_id"] if self.run else None,
                "decided_by": self.decided_by, "outcome": self.outcome, "steps": [s.to_json() for s in self.steps]}


def gate_of(run: RunRecord) -> str | None:
    """The gate that stopped a run, from the reason it wrote; None for a run no gate stopped."""
    if run["status"] == RunStatus.AWAITING_APPROVAL:
        return "approval"
    reason = run.get("reason") or ""
    if run["status"] not in (RunStatus.SKIPPED, RunStatus.THROTTLED, RunStatus.DENIED) and not reason.startswith(
            ("routine_deleted",)):
        return None
    for prefix, gate in _PREFIXES:
        if reason.startswith(prefix):
            return gate
    return None


def explain(journal: Journal, name: str, *, at_ms: int | None = None, run_id: str | None = None,
            now_ms: int) -> Explanation:
    stored = journal.get_resource("Routine", name)
    if stored is None:
        raise NotFound(f"routine {name!r} does not exist")
    routine = Routine.from_resource(stored)
    job = journal.get_job(name)
    if run_id is not None:
        run = journal.get_run(run_id)
        if run is None or run["routine_id"] != name:
            raise NotFound(f"run {run_id!r} of routine {name!r} does not exist")
        ex = Explanation(name, None, run.get("scheduled_at_ms"), None, run)
        ex.steps.append(Step("trigger", PASS, f"{run['trigger_kind']} run {run['run_id']}, attempt {run['attempt']}, "
                                              f"created {rfc3339(run['created_at_ms'])}"))
        _gates_from_run(ex, routine, job, run)
        return ex
    if routine.schedule is None:
        raise InvalidInput(f"routine {name!r} has no schedule (trigger {routine.trigger_kind}): "
                           "explain one of its runs with --run RUN_ID")
    return _explain_instant(journal, routine, job, at_ms if at_ms is not None else now_ms, now_ms,
                            at_given=at_ms is not None)


def _explain_instant(journal: Journal, routine: Routine, job: JobRecord | None, at: int, now: int, *,
                     at_given: bool) -> Explanation:
    assert routine.schedule is not None
    name, p = routine.name, routine.policies
    schedule = Schedule.from_spec(routine.schedule, p.dst)
    anchor = job.get("anchor_ms") if job else None
    ex = Explanation(name, at, None, None, None)
    if not at_given and job and job.get("last_nominal_ms") is not None:
        nominal: int | None = int(job["last_nominal_ms"])  # its last due time
    else:
        nominal = _latest_at_or_before(schedule, at, anchor)
    spelled = _spelled(routine.schedule)
    if nominal is None:
        nxt = schedule.next_after(at, anchor)
        before = (f" (it is before the routine's anchor {rfc3339(anchor)}: its schedule took effect then, and an "
                  "apply or edit never replays earlier times)" if anchor is not None and at < anchor else "")
        ex.steps.append(Step("schedule", STOP, f"{spelled} has no fire time at or before {rfc3339(at)}{before}"
                                               + (f"; the first is {rfc3339(nxt)}" if nxt is not None else "")))
        ex.decided_by, ex.outcome = "schedule", "not due yet"
        return ex
    ex.nominal_ms = nominal
    exact = " (exactly T)" if nominal == at else f" (the latest fire time at or before {rfc3339(at)})"
    ex.steps.append(Step("schedule", PASS, f"{spelled} fires at {rfc3339(nominal)}{exact}"))
    due = nominal + jitter_offset_ms(name, nominal, p.jitter_ms)
    ex.due_ms = due
    ex.steps.append(Step("jitter", PASS, f"+{(due - nominal) / 1000:g} s (jitter {p.jitter_ms / 1000:g} s): due at "
                                         f"{rfc3339(due)}" if p.jitter_ms else "none: due at the nominal instant"))
    run, standing_in = _run_for(journal, name, nominal)
    if run is None and standing_in is not None:
        ex.run = standing_in
        ex.steps.append(Step("misfire", STOP, f"skipped by misfire ({p.misfire}): run {standing_in['run_id']} at "
                                              f"{rfc3339(standing_in.get('scheduled_at_ms'))} stands for it"))
        ex.decided_by, ex.outcome = "misfire", "skipped (misfire)"
        return ex
    if run is None:
        _no_claim(ex, routine, job, nominal, due, now, anchor)
        return ex
    ex.run = run
    late = run["created_at_ms"] - due
    ex.steps.append(Step("claim", PASS, f"claimed as run {run['run_id']} at {rfc3339(run['created_at_ms'])}"
                                        f" ({late} ms after its due time)" if late > 0 else
                         f"claimed as run {run['run_id']} at {rfc3339(run['created_at_ms'])}"))
    if (run.get("reason") or "").startswith("misfire"):
        ex.steps.append(Step("misfire", STOP, run["reason"] or ""))
        ex.decided_by, ex.outcome = "misfire", "skipped (misfire)"
        return ex
    grace = p.misfire_grace_ms
    ex.steps.append(Step("misfire", PASS, f"on time (claimed within misfire_grace {grace / 1000:g} s)" if late <= grace
                         else f"late beyond misfire_grace {grace / 1000:g} s; {p.misfire} ran this instant"))
    _gates_from_run(ex, routine, job, run)
    return ex


def _gates_from_run(ex: Explanation, routine: Routine, job: JobRecord | None, run: RunRecord) -> None:
    gate = gate_of(run)
    reason = run.get("reason") or ""
    reached = True
    for g in GATES:
        if not reached:
            ex.steps.append(Step(g, NOT_REACHED, ""))
        elif g == gate:
            ex.steps.append(Step(g, STOP, f"{run['status']}: {reason}" if reason else run["status"]))
            reached = False
        else:
            ex.steps.append(Step(g, PASS, _pass_detail(g, routine, run)))
    status = run["status"]
    if gate is not None:
        ex.decided_by, ex.outcome = gate, f"{status} by the {gate} gate"
    else:
        ex.decided_by = None
        ex.outcome = f"it ran: {status}" + (f" ({reason})" if reason else "")
        ex.steps.append(Step("execution", PASS if status == RunStatus.SUCCEEDED else STOP,
                             f"{status}" + (f": {reason}" if reason else "")
                             + (f"; delivery {run['delivery_status']}" if run.get("delivery_status") else "")))


def _pass_detail(gate: str, routine: Routine, run: RunRecord) -> str:
    if gate == "approval":
        return f"approval {routine.approval}"
    if gate == "dedupe":
        return f"key {run['dedupe_key']!r} was free" if run.get("dedupe_key") else "no dedupe key"
    if gate == "cooldown":
        return f"cooldown {routine.policies.cooldown_ms / 1000:g} s" if routine.policies.cooldown_ms else "no cooldown"
    if gate == "quiet_hours":
        if run.get("not_before_ms"):
            return f"deferred to the end of quiet hours, {rfc3339(run['not_before_ms'])}"
        return "outside quiet hours" if routine.quiet_hours else "no quiet hours"
    if gate == "policy":
        return f"allowed by {run['policy_rule']}" if run.get("policy_rule") else "allowed"
    if gate == "concurrency":
        return f"{routine.policies.concurrency}"
    return ""


def _no_claim(ex: Explanation, routine: Routine, job: JobRecord | None, nominal: int, due: int, now: int,
              anchor: int | None) -> None:
    """Nothing claimed the instant: say why, and what the static gates would decide now."""
    if due > now:
        ex.steps.append(Step("claim", NOT_REACHED, f"due at {rfc3339(due)}, still in the future"))
        ex.decided_by, ex.outcome = "claim", "not due yet"
        return
    if job is None:
        ex.steps.append(Step("claim", STOP, "the routine has no job in this journal (not applied)"))
        ex.decided_by, ex.outcome = "claim", "never claimed"
        return
    if anchor is not None and nominal < anchor:
        why = (f"the instant is before the routine's anchor {rfc3339(anchor)} (its schedule took effect then: "
               "an apply or edit never replays earlier times; `palyra-ops backfill` runs them on purpose)")
    elif not job.get("enabled", 1):
        why = "the job was disabled, so the scheduler does not claim it"
    else:
        why = ("no daemon claimed it: none was running at its due time, or the schedule changed since; "
               f"the job's next run is {rfc3339(job.get('next_run_at_unix_ms')) or 'none'}")
    ex.steps.append(Step("claim", STOP, why))
    ex.decided_by, ex.outcome = "claim", "never claimed"
    # the static gates as they stand now, with the gateway's own checks
    ex.steps.append(Step("disabled", PASS if routine.enabled and job.get("enabled", 1) else STOP,
                         "enabled now" if routine.enabled and job.get("enabled", 1) else "disabled now"))
    pause = PauseState.of(job)
    ex.steps.append(Step("paused", STOP if pause.paused else PASS, pause.reason() + " now" if pause.paused else "not paused"))
    if routine.quiet_hours:
        inside = QuietHours.from_spec(routine.quiet_hours).contains(due)
        ex.steps.append(Step("quiet_hours", STOP if inside else PASS,
                             "the due time is inside quiet hours" if inside else "the due time is outside quiet hours"))


def _latest_at_or_before(schedule: Schedule, at: int, anchor: int | None) -> int | None:
    """The schedule's last fire instant at or before `at` (cron fires at most once a minute, every
    once per interval: a look-back of a bounded window finds it without walking from the epoch)."""
    if schedule.at_ms is not None:
        return schedule.at_ms if schedule.at_ms <= at else None
    if schedule.every_ms is not None:
        base = anchor if anchor is not None else at
        if at < base:
            return None
        return base + ((at - base) // schedule.every_ms) * schedule.every_ms
    window = 60_000
    while window <= 400 * 86_400_000:  # a yearly cron (`0 0 29 2 *`) needs up to eight years: see below
        fires = schedule.fires_between(at - window, at, anchor, limit=100_000)
        if fires:
            return fires[-1]
        window *= 8
    fires = schedule.fires_between(at - 9 * 366 * 86_400_000, at, anchor, limit=100_000)
    return fires[-1] if fires else None


def _run_for(journal: Journal, name: str, nominal: int) -> tuple[RunRecord | None, RunRecord | None]:
    """The run claimed on (name, nominal), else a misfire run whose skipped times list it: one pass
    over the routine's occurrence history."""
    standing = None
    for r in journal.runs_with_occurrences(name):
        if r.get("occurrence_key") == f"{name}|{nominal}":
            return r, None
        times = r.get("skipped_times")
        if times and nominal in (json.loads(times) if isinstance(times, str) else times):
            standing = r
    return None, standing


def _spelled(schedule: dict[str, Any]) -> str:
    if "cron" in schedule:
        return f"cron {schedule['cron']!r} ({schedule.get('timezone', 'utc')})"
    if "every" in schedule:
        return f"every {schedule['every']}"
    return f"at {schedule.get('at')}"


__all__ = ["GATES", "Explanation", "Step", "explain", "gate_of"]
