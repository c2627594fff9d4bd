"""Fire times the console shows: a routine's next ones, and the next 24 h of all of them (the herds).

Computed with the scheduler's own pieces — `Schedule.from_spec` with the routine's DST policy, the
job's `every` anchor, `jitter_offset_ms` for the due time, `notes_for` for DST and quiet-hour notes —
so what the page shows is what the scheduler will do, not a re-derivation.

The 24 h picture is a histogram of due times in 288 five-minute buckets, drawn as inline SVG by the
server (no script, no library). A herd is a second at which several routines are due at once
(SPEC §12's forecast calls these collisions; `jitter` spreads them). Work is bounded: at most
`MAX_FIRES` fire times in all, with the cut-off shown on the page rather than a slow page.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from palyra_ops import views
from palyra_ops.clock import rfc3339
from palyra_ops.durations import parse_duration_ms
from palyra_ops.journal import StoredResource
from palyra_ops.model import Routine
from palyra_ops.schedule import Schedule, jitter_offset_ms
from palyra_ops.schedule.core import notes_for

DAY_MS = 24 * 3600 * 1000
BUCKET_MS = 5 * 60 * 1000
#: five-minute buckets on wall-clock boundaries: the first starts at or before now, so 24 h spans 289
BUCKETS = DAY_MS // BUCKET_MS + 1
#: nominal fire times computed for one timeline at most (distinct schedules; 1,000 distinct ones
#: every 15 min is 96,000)
MAX_FIRES = 200_000
#: per routine (an `every: 1s` routine alone would otherwise be 86,400)
MAX_FIRES_PER_ROUTINE = 2_000
#: routines due in the same second from which the second counts as a herd
HERD_MIN = 3


@dataclass
class Upcoming:
    fires: list[dict[str, Any]]
    notes: list[str]
    jitter_ms: int


def upcoming(resource: StoredResource, job: dict[str, Any] | None, now_ms: int, count: int = 10) -> Upcoming | None:
    """The next `count` runs of a schedule routine (None for other triggers), nominal and due."""
    routine = Routine.from_resource(resource)
    if routine.schedule is None:
        return None
    schedule = Schedule.from_spec(routine.schedule, routine.policies.dst)
    _, zone = views.schedule_zone(routine.schedule)
    anchor = job.get("anchor_ms") if job else None
    nominal = schedule.next_n(now_ms, count, anchor_ms=anchor)
    jitter = routine.policies.jitter_ms
    quiet = routine.quiet_hours  # spec.quiet_hours (it is not one of the policies)
    notes = [n.message for n in notes_for(schedule, nominal, quiet, after_ms=now_ms)]
    fires = []
    for n in nominal:
        due = n + jitter_offset_ms(routine.name, n, jitter)
        fires.append({"nominal": rfc3339(n, zone), "due_local": rfc3339(due, zone), "due_utc": rfc3339(due),
                      "jitter_ms": due - n})
    return Upcoming(fires, notes, jitter)


@dataclass
class Herd:
    at_utc: str
    count: int
    routines: list[str]
    bucket: int


@dataclass
class Timeline:
    start_ms: int
    buckets: list[int]
    total: int
    routines: int
    truncated: bool
    herds: list[Herd]
    busiest: list[tuple[str, int]] = field(default_factory=list)  # (bucket start UTC, fires)
    #: every bucket holding a herd second (the table lists only the biggest herds)
    herd_buckets: set[int] = field(default_factory=set)

    @property
    def peak(self) -> int:
        return max(self.buckets) if self.buckets else 0


def _timing(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], str] | None:
    """A schedule routine's schedule, DST policy and jitter text, read straight from its canonical
    spec (the same fields `Routine.from_resource` reads; a full Routine per routine would be most of
    the page's time at 10,000)."""
    trigger = spec.get("trigger") or {}
    if trigger.get("kind") != "schedule" or not trigger.get("schedule"):
        return None
    policies = spec.get("policies") or {}
    return trigger["schedule"], {"gap": "shift", "fold": "first", **(policies.get("dst") or {})}, \
        str(policies.get("jitter", "0s"))


def day_timeline(resources: list[StoredResource], jobs: dict[str, dict[str, Any]], now_ms: int) -> Timeline:
    """Due times of every enabled schedule routine in (now, now + 24 h]; `start_ms` of the result is
    the first bucket's start (now, rounded down to five minutes).

    Nominal instants are computed once per distinct schedule — routines with the same schedule, DST
    policy and (for `every`) anchor fire at the same instants, and fleets share a few dozen crons; a
    routine without jitter then only adds its count, one with jitter gets its own due times."""
    until = now_ms + DAY_MS
    start = now_ms - now_ms % BUCKET_MS
    buckets = [0] * BUCKETS
    per_second: Counter[int] = Counter()
    who: defaultdict[int, list[str]] = defaultdict(list)
    nominal: dict[tuple[Any, ...], list[int]] = {}
    plain: defaultdict[tuple[Any, ...], list[str]] = defaultdict(list)  # schedule key -> routines without jitter
    jittered: list[tuple[str, tuple[Any, ...], int]] = []
    jitters: dict[str, int] = {}
    computed = routines = 0
    truncated = False
    for res in resources:
        job = jobs.get(res.name)
        if job is None or not job.get("enabled", 1) or job.get("paused"):
            continue
        timing = _timing(res.body.get("spec", {}))
        if timing is None:
            continue
        sched, dst, jitter_text = timing
        anchor = job.get("anchor_ms") if "every" in sched else None
        key = (sched.get("cron"), sched.get("every"), sched.get("at"), sched.get("timezone"), dst["gap"], dst["fold"],
               anchor)
        if key not in nominal:
            budget = min(MAX_FIRES_PER_ROUTINE, MAX_FIRES - computed)
            if budget <= 0:
                truncated = True
                continue
            try:
                schedule = Schedule.from_spec(sched, dst)
            except Exception:  # noqa: BLE001 - a schedule that no longer parses is parked by the scheduler too
                continue
            fires = schedule.fires_between(now_ms, until, job.get("anchor_ms"), limit=budget + 1)
            if len(fires) > budget:
                fires, truncated = fires[:budget], True
            nominal[key] = fires
            computed += len(fires)
        routines += 1
        if jitter_text not in jitters:
            jitters[jitter_text] = parse_duration_ms(jitter_text)
        if jitters[jitter_text]:
            jittered.append((res.name, key, jitters[jitter_text]))
        else:
            plain[key].append(res.name)
    for key, names in plain.items():
        weight = len(names)
        for due in nominal[key]:
            buckets[(due - start) // BUCKET_MS] += weight
            second = due // 1000
            per_second[second] += weight
            if len(who[second]) < 5:
                who[second].extend(names[: 5 - len(who[second])])
    for name, key, jitter in jittered:
        for n in nominal[key]:
            due = n + jitter_offset_ms(name, n, jitter)
            if due > until:
                continue
            buckets[(due - start) // BUCKET_MS] += 1
            second = due // 1000
            per_second[second] += 1
            if len(who[second]) < 5:
                who[second].append(name)
    total = sum(buckets)

    def bucket(second: int) -> int:
        return max(0, (second * 1000 - start) // BUCKET_MS)

    herds = [Herd(rfc3339(s * 1000) or "", c, who[s], bucket(s)) for s, c in per_second.most_common(10) if c >= HERD_MIN]
    ranked = sorted(range(BUCKETS), key=lambda i: (-buckets[i], i))[:5]
    busiest = [(rfc3339(start + i * BUCKET_MS) or "", buckets[i]) for i in ranked if buckets[i]]
    herd_buckets = {bucket(s) for s, c in per_second.items() if c >= HERD_MIN}
    return Timeline(start, buckets, total, routines, truncated, herds, busiest, herd_buckets)


def svg_bars(timeline: Timeline, width: int = 960, height: int = 180) -> dict[str, Any]:
    """Geometry of the histogram for the template: one bar per bucket, hour ticks, herd buckets marked."""
    peak = timeline.peak or 1
    plot_h = height - 30
    bar_w = width / BUCKETS
    herd_buckets = timeline.herd_buckets
    bars = []
    for i, n in enumerate(timeline.buckets):
        if not n:
            continue
        h = max(1.0, plot_h * n / peak)
        bars.append({"x": round(i * bar_w, 2), "y": round(plot_h - h, 2), "w": round(max(bar_w - 0.5, 0.5), 2),
                     "h": round(h, 2), "n": n, "herd": i in herd_buckets,
                     "at": rfc3339(timeline.start_ms + i * BUCKET_MS)})
    ticks = []
    first_hour = (timeline.start_ms // 3_600_000 + 1) * 3_600_000
    for k in range(24):
        t = first_hour + k * 3_600_000
        x = (t - timeline.start_ms) / (BUCKETS * BUCKET_MS) * width
        if x <= width:
            label = (rfc3339(t) or "")[11:16] if k % 3 == 0 and 20 <= x <= width - 20 else ""
            ticks.append({"x": round(x, 2), "label": label})
    return {"width": width, "height": height, "plot_h": plot_h, "bars": bars, "ticks": ticks, "peak": peak}
