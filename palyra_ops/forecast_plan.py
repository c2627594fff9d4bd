"""Plan's forecast warnings (SPEC §12): herds holding a changed routine, changed routines that never
run — and the one-line herd description the forecast's text view shares.

Kept apart from `forecast` (the computation) because plan reads a plan's changes, not timings: it
builds the timings from the desired state and the journal's anchors, then asks `forecast` twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from palyra_ops.durations import format_duration_ms
from palyra_ops.forecast import DEFAULT_HOURS, Herd, Timing, forecast

#: herds plan warns about (the biggest first); `palyra-ops forecast` lists them all
PLAN_HERDS = 5
#: above this many planned routines plan leaves the forecast to `palyra-ops forecast` (it would cost
#: a few seconds at 100,000, where plan itself is tuned to a few seconds)
PLAN_MAX_ROUTINES = 20_000
_QUIET_NOTE = " falls in quiet hours "  # schedule.core.notes_for's per-fire quiet-hours note


def names_text(routines: Sequence[str], show: int = 5) -> str:
    head = ", ".join(routines[:show])
    return head + (f" and {len(routines) - show} more" if len(routines) > show else "")


def describe_herd(h: Herd) -> str:
    """One line for a herd: the forecast's text view and plan's warning."""
    from palyra_ops.clock import rfc3339

    when = rfc3339(h.seconds[0])
    at = f"at {when}" if len(h.seconds) == 1 else f"in {len(h.seconds)} seconds of the window, first {when}"
    head = f"{h.runs} runs due in the same second {at} ({names_text(h.routines)})"
    if h.jitter_ms is None:
        return f"{head}: {h.note}"
    tail = f"; {h.note}" if h.note else ""
    return (f"{head}: set policies.jitter: {format_duration_ms(h.jitter_ms)} on them "
            f"(at most {h.max_after} in any second then{tail})")


def plan_warnings(everything: Sequence[Any], selected: Sequence[Any], desired: Mapping[tuple[str, str], Any],
                  jobs: Mapping[str, Any], now_ms: int) -> list[str]:
    """Herds and never-runs among the routines a plan covers, as plan warnings (SPEC §12).

    Only when the plan changes a routine, and only about herds holding a changed routine and
    changed routines that never run, so an unchanged fleet does not repeat the same warnings on every
    plan. `selected` are the changes the plan keeps (`--target`/`--exclude`), `everything` all of
    them: a targeted routine joining a herd of untargeted ones is still warned about. The forecast is
    of the whole desired state over the next 24 h: a routine whose schedule changes
    counts `every` from now (apply re-anchors it), others from their job's anchor. A never-runs
    routine's per-fire quiet-hours notes are dropped from its schedule preview: the one warning says it.
    """
    routines = [c for c in everything if c.kind == "Routine" and c.action not in ("delete", "unmanaged")]
    changed = {c.name for c in selected if c.kind == "Routine" and c.is_change and c.action != "delete"}
    if not changed:
        return []
    if len(routines) > PLAN_MAX_ROUTINES:
        return [f"no forecast for {len(routines)} routines in one plan (more than {PLAN_MAX_ROUTINES}); "
                "run `palyra-ops forecast` for herds and routines that never run"]
    try:
        return _plan_warnings(routines, changed, desired, jobs, now_ms)
    except Exception as exc:  # noqa: BLE001 - advisory: a plan (and the watcher's reconcile) must not fail for it
        return [f"no forecast: {exc}"]


def _plan_warnings(routines: list[Any], changed: set[str], desired: Mapping[tuple[str, str], Any],
                   jobs: Mapping[str, Any], now_ms: int) -> list[str]:
    timings = []
    for c in routines:
        res = desired.get(("Routine", c.name))
        if res is None:  # a kept object (its file is invalid): what it will do is unknown
            continue
        job = jobs.get(c.moved_from or c.name)
        if job is not None and job.get("paused"):
            continue
        keeps_anchor = job is not None and c.schedule is None  # apply keeps the anchor of an untouched schedule
        t = Timing.of_body(c.name, res.core, job.get("anchor_ms") if keeps_anchor and job else None)
        if t is not None:
            timings.append(t)
    # herds of routines without jitter: no hashing, nominal instants shared per schedule (a cold plan
    # of 10,000 must stay cheap); routines with a jitter are spread already, `forecast` counts them too
    f = forecast([t for t in timings if not t.jitter_ms], now_ms, DEFAULT_HOURS)
    quiet = forecast([t for t in timings if t.name in changed and t.quiet_hours], now_ms, DEFAULT_HOURS)
    never = {n.name: n for n in quiet.never}
    for c in routines:
        if c.name in never and c.schedule is not None:
            c.schedule = replace(c.schedule, notes=[n for n in c.schedule.notes if _QUIET_NOTE not in n])
    herds = [h for h in f.herds if changed.intersection(h.routines)]
    out = [n.message for n in never.values()]
    out += [f"herd: {describe_herd(h)}" for h in herds[:PLAN_HERDS]]
    if len(herds) > PLAN_HERDS:
        out.append(f"{len(herds) - PLAN_HERDS} more herds hold routines of this plan; see `palyra-ops forecast`")
    return out
