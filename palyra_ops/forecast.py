"""Forecast: every routine's runs over a window, the busiest seconds, herds, and routines that never run.

Pure (SPEC §12): routines, a window and a start instant in, a `Forecast` value out; the caller reads
the clock. The instants come from the scheduler's own pieces (`Schedule.next_after`/`fires_between`
with the routine's DST policy and `every` anchor, `jitter_offset_ms` for the due time, `QuietHours`
for the quiet-hours gate), so a forecast says what the daemon will do, not a re-derivation of it.

What a run is here, per SPEC §5: a scheduled trigger is dispatched at its due time (nominal instant +
the routine's deterministic jitter); inside quiet hours it is skipped (`action: skip`), or with
`action: defer` the first trigger of a window runs once at the window's end and the rest of that
window are skipped (the gateway keeps one deferred run per routine). Runtime gates that depend on
history (cooldown, concurrency, approval) are not forecast.

Cost is bounded by sharing: nominal instants are computed once per distinct schedule (fleets share a
few dozen), `every` progressions are numpy ranges, counting is one `bincount` over the window's seconds,
and only routines with jitter or quiet hours get per-routine arrays. A 10,000-routine fleet over 24 h
takes well under a second (bench/bench_forecast.py, figures in bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, TypeVar

import numpy as np

from palyra_ops.clock import MAX_INSTANT_MS
from palyra_ops.durations import format_duration_ms, parse_duration_ms
from palyra_ops.errors import PalyraError
from palyra_ops.model import Routine
from palyra_ops.schedule import QuietHours, Schedule, compile_cron, jitter_offset_ms
from palyra_ops.schedule.cron import CronError
from palyra_ops.schedule.policies import jitter_offsets_ms
from palyra_ops.schedule.zones import resolve_zone, transitions_between, zone_label

#: the few jitter spellings of a directory, parsed once each
duration_ms = lru_cache(maxsize=256)(parse_duration_ms)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DEFAULT_HOURS = 24
MAX_HOURS = 24 * 7
#: runs due in one second from which that second is a herd (SPEC §12)
DEFAULT_HERD_MIN = 10
DEFAULT_TOP = 5
#: how far ahead "can never run" looks for one fire time outside quiet hours (a year and DST both ways)
NEVER_HORIZON_MS = 400 * DAY_MS
#: ... and how many fire times it tests at most (an `every: 1m` routine tests a day, not a year)
NEVER_MAX_FIRES = 5_000
#: herd seconds whose members are looked at (the biggest first); more are counted, not listed
MAX_HERD_SECONDS = 500
#: herds listed, each with its jitter suggestion (the biggest first)
MAX_HERDS = 20
#: a never-runs check of a cron looks at this long after its first fire, plus around each DST change
NEVER_SAMPLE_MS = 14 * DAY_MS
#: jitter values a suggestion is rounded up to (ms): what an operator would write
NICE_JITTER_MS = tuple(s * 1000 for s in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800,
                                          3600, 7200, 10800, 14400, 21600, 43200))


@dataclass(frozen=True)
class Timing:
    """What the forecast reads of one enabled schedule routine (the fields `plan_job` and the
    quiet-hours gate read of a `Routine`)."""

    name: str
    schedule: Mapping[str, Any]
    dst: Mapping[str, str]
    jitter_ms: int = 0
    quiet_hours: Mapping[str, Any] | None = None
    anchor_ms: int | None = None  # the job's `every` anchor; None: as if applied at the start

    @classmethod
    def of(cls, routine: Routine, job: Mapping[str, Any] | None = None) -> Timing | None:
        """None for a routine the scheduler never fires on its own (disabled, paused, not a schedule)."""
        if routine.schedule is None or not routine.enabled:
            return None
        if job is not None and (not job.get("enabled", 1) or job.get("paused")):
            return None
        return cls(routine.name, routine.schedule, routine.policies.dst, routine.policies.jitter_ms,
                   routine.quiet_hours, job.get("anchor_ms") if job else None)

    @classmethod
    def of_body(cls, name: str, body: Mapping[str, Any], anchor_ms: int | None = None) -> Timing | None:
        """`of(Routine.from_resource(...))` reading only these fields (plan does this for every routine:
        the full model is most of the cost at 10,000). tests/test_forecast.py holds the two equal."""
        spec = body.get("spec") or {}
        trigger = spec.get("trigger") or {}
        if trigger.get("kind") != "schedule" or not trigger.get("schedule") or not spec.get("enabled", True):
            return None
        p = spec.get("policies") or {}
        return cls(name, trigger["schedule"], {"gap": "shift", "fold": "first", **(p.get("dst") or {})},
                   duration_ms(p.get("jitter", "0s")), spec.get("quiet_hours"), anchor_ms)


@dataclass
class RoutineRuns:
    """One routine's runs in the window: dispatch instants (ms, ascending) and what quiet hours did."""

    name: str
    timezone: str
    jitter_ms: int
    due: np.ndarray  # int64 instants the scheduler dispatches a run at, ascending (deferred runs too)
    #: the scheduled (not deferred) runs: due instants ascending, and each one's nominal instant
    scheduled_due: np.ndarray
    scheduled_nominal: np.ndarray
    quiet_skipped: int = 0  # triggers dropped by quiet hours (skip, or a window already deferred)
    deferred: int = 0  # triggers moved to a quiet window's end (that run may fall after the window)
    key: tuple[Any, ...] = ()


@dataclass
class Second:
    """A second of the window and the runs due in it."""

    at_ms: int
    runs: int
    routines: list[str]  # distinct, in name order


@dataclass
class Herd:
    """Routines due together in one or more seconds (the same set each time), and a jitter to spread them."""

    runs: int  # runs due in the herd's biggest second
    seconds: list[int]  # the herd's seconds (ms, ascending)
    routines: list[str]
    jitter_ms: int | None  # suggested `policies.jitter` for its routines; None when jitter cannot help
    max_after: int | None  # the most runs of these routines in any second with that jitter
    note: str = ""


@dataclass
class NeverRuns:
    """A routine that will not run: one warning instead of one quiet-hours line per fire time."""

    name: str
    kind: str  # "no_date" | "past" | "no_fire" | "quiet_hours" | "invalid"
    message: str


@dataclass
class Forecast:
    start_ms: int
    end_ms: int
    herd_min: int
    routines: list[RoutineRuns]
    busiest: list[Second]
    herds: list[Herd]  # the biggest MAX_HERDS
    never: list[NeverRuns]
    herd_seconds: int = 0  # all seconds at or above herd_min
    herd_groups: int = 0  # herds found among the biggest MAX_HERD_SECONDS herd seconds (`herds` lists some)
    skipped: int = 0  # routines the forecast does not cover (not schedule, disabled, paused)

    @property
    def total_runs(self) -> int:
        return sum(len(r.due) for r in self.routines)

    @property
    def hours(self) -> int:
        return (self.end_ms - self.start_ms) // HOUR_MS


# -- building ----------------------------------------------------------------------------------------


_R = TypeVar("_R")


class Splitter(Protocol):
    """`[work(i) for i in range(n)]`, maybe computed on more than one core (`source.parallel.run_split`)."""

    def __call__(self, n: int, work: Callable[[int], _R]) -> list[_R]: ...


#: one routine's share of a forecast: its runs (None when it never fires) and its never-runs warnings
Outcome = tuple[RoutineRuns | None, list[NeverRuns]]
#: routines per unit of work a `Splitter` hands out (small enough that both cores finish together)
SPLIT_CHUNK = 250


def forecast(timings: Iterable[Timing], start_ms: int, hours: int = DEFAULT_HOURS, *,
             herd_min: int = DEFAULT_HERD_MIN, top: int = DEFAULT_TOP, skipped: int = 0,
             split: Splitter | None = None) -> Forecast:
    """The runs of `timings` in (start_ms, start_ms + hours], their busiest seconds and herds, and
    the routines among them that can never run.

    The per-routine part (nominal instants, jitter, quiet hours) is independent per routine, so a
    CLI caller may pass `split` to compute it on two cores: at 10,000 routines it is most of the
    time. The result is the same either way (the outcomes are concatenated in routine order).
    """
    f = Forecaster(start_ms, hours)
    items = list(timings)

    def chunk(i: int) -> list[Outcome]:
        return [f.outcome(t) for t in items[i * SPLIT_CHUNK:(i + 1) * SPLIT_CHUNK]]

    n_chunks = -(-len(items) // SPLIT_CHUNK)
    parts = split(n_chunks, chunk) if split is not None and n_chunks > 1 else [chunk(i) for i in range(n_chunks)]
    return f.finish((o for part in parts for o in part), herd_min=herd_min, top=top, skipped=skipped, split=split)


class Forecaster:
    """A forecast in two steps: `outcome` per routine (anywhere: a CLI computes it in whichever
    process checked the routine's file, `load_directory`'s `prepare`, where that file's schedules are
    already compiled), then `finish` over all outcomes in routine order (counting, busiest, herds)."""

    def __init__(self, start_ms: int, hours: int = DEFAULT_HOURS) -> None:
        if not 1 <= hours <= MAX_HOURS:
            raise PalyraError(f"hours must be between 1 and {MAX_HOURS}, got {hours}")
        self.start_ms = start_ms
        self.end_ms = start_ms + hours * HOUR_MS
        self._nominal: dict[tuple[Any, ...], np.ndarray | NeverRuns] = {}  # per distinct schedule
        self._schedules: dict[tuple[Any, ...], Schedule] = {}

    def outcome(self, t: Timing) -> Outcome:
        key = _key(t)
        if key not in self._nominal:
            self._nominal[key] = _nominal(t, key, self.start_ms, self.end_ms, self._schedules)
        fires = self._nominal[key]
        if isinstance(fires, NeverRuns):
            return None, [NeverRuns(t.name, fires.kind, f"routine \"{t.name}\" {fires.message}")]
        r = _runs(t, key, fires, self.start_ms, self.end_ms)
        if t.quiet_hours is not None and not len(r.due):
            checked = _never_in_quiet(t, self._schedules[key], self.start_ms)
            if checked:
                return r, [NeverRuns(t.name, "quiet_hours", _quiet_message(t, checked))]
        return r, []

    def finish(self, outcomes: Iterable[Outcome], *, herd_min: int = DEFAULT_HERD_MIN, top: int = DEFAULT_TOP,
               skipped: int = 0, split: Splitter | None = None) -> Forecast:
        runs: list[RoutineRuns] = []
        never: list[NeverRuns] = []
        for r, warned in outcomes:
            if r is not None:
                runs.append(r)
            never.extend(warned)
        start_ms, end_ms = self.start_ms, self.end_ms
        seconds, owners, counts = _count(runs, start_ms, end_ms)
        busiest = _busiest(runs, seconds, owners, counts, start_ms, top)
        herds, herd_seconds, groups = _herds(runs, seconds, owners, counts, start_ms, herd_min, self._schedules, split)
        return Forecast(start_ms, end_ms, herd_min, runs, busiest, herds, never, herd_seconds, groups, skipped)


def _key(t: Timing) -> tuple[Any, ...]:
    s = t.schedule
    anchor = t.anchor_ms if s.get("every") is not None else None
    return (s.get("cron"), s.get("every"), s.get("at"), s.get("timezone") or "utc",
            t.dst.get("gap") or "shift", t.dst.get("fold") or "first", anchor)


def _nominal(t: Timing, key: tuple[Any, ...], start_ms: int, end_ms: int,
             schedules: dict[tuple[Any, ...], Schedule]) -> np.ndarray | NeverRuns:
    """Nominal instants in the window for one distinct schedule, or why it never fires."""
    try:
        sched = Schedule.from_spec(dict(t.schedule), dict(t.dst))
    except PalyraError as exc:
        return _unusable(t, exc)
    schedules[key] = sched
    anchor = start_ms if t.anchor_ms is None else t.anchor_ms
    first = sched.next_after(start_ms, anchor)
    if first is None:
        if sched.at_ms is not None:
            return NeverRuns(t.name, "past", f"will never run again: its at time {t.schedule.get('at')} is in the past")
        return NeverRuns(t.name, "no_fire", f"can never run: {_describe(t)} has no fire time after the start")
    if first > end_ms:
        return np.empty(0, dtype=np.int64)
    if sched.every_ms is not None:  # the arithmetic of fires_between, as one numpy range
        return np.arange(first, min(end_ms, MAX_INSTANT_MS) + 1, sched.every_ms, dtype=np.int64)
    fires = sched.fires_between(start_ms, end_ms, anchor, limit=MAX_HOURS * 60 + 1)
    return np.array(fires, dtype=np.int64)


def _unusable(t: Timing, exc: PalyraError) -> NeverRuns:
    cron = t.schedule.get("cron")
    if isinstance(cron, str):
        try:
            if compile_cron(cron).never:
                return NeverRuns(t.name, "no_date", f"can never run: cron {cron!r} matches no date in any year")
        except CronError:
            pass
    return NeverRuns(t.name, "invalid", f"can never run: its schedule is unusable: {exc.message}")


def _describe(t: Timing) -> str:
    s = t.schedule
    kind = next((k for k in ("cron", "every", "at") if s.get(k) is not None), "schedule")
    return f"{kind} {s.get(kind)!r}" + (f" in {s['timezone']}" if s.get("timezone") else "")


@lru_cache(maxsize=1024)
def _windows(qh: QuietHours, after_ms: int, until_ms: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = qh.windows_between(after_ms, until_ms)
    return (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))


def _quiet(q: Mapping[str, Any]) -> QuietHours:
    return _quiet_cached(tuple(sorted(q.items())))


@lru_cache(maxsize=1024)
def _quiet_cached(items: tuple[tuple[str, Any], ...]) -> QuietHours:
    return QuietHours.from_spec(dict(items))


def _window_index(instants: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each instant the index of the quiet window [start, end) holding it, else -1."""
    if not len(starts) or not len(instants):
        return np.full(len(instants), -1, dtype=np.int64)
    idx = np.searchsorted(starts, instants, side="right") - 1
    inside = (idx >= 0) & (instants < ends[np.maximum(idx, 0)])
    return np.where(inside, idx, -1)


def _jittered(name: str, nominal: np.ndarray, jitter_ms: int) -> np.ndarray:
    if not jitter_ms or not len(nominal):
        return nominal
    return nominal + np.array(jitter_offsets_ms(name, nominal.tolist(), jitter_ms), dtype=np.int64)


def _runs(t: Timing, key: tuple[Any, ...], fires: np.ndarray, start_ms: int, end_ms: int) -> RoutineRuns:
    tz = t.schedule.get("timezone") or "utc"
    due = _jittered(t.name, fires, t.jitter_ms)
    nominal = fires
    if t.jitter_ms and len(due):  # a due time jittered past the window's end runs after it
        keep = due <= end_ms
        order = np.argsort(due[keep], kind="stable")
        due, nominal = due[keep][order], fires[keep][order]
    r = RoutineRuns(t.name, tz, t.jitter_ms, due, due, nominal, key=key)
    if t.quiet_hours is None or not len(due):
        return r
    qh = _quiet(t.quiet_hours)
    starts, ends = _windows(qh, start_ms - DAY_MS, end_ms + DAY_MS)
    idx = _window_index(due, starts, ends)
    inside = idx >= 0
    if not inside.any():
        return r
    r.due = r.scheduled_due = due[~inside]
    r.scheduled_nominal = nominal[~inside]
    if qh.action == "defer":
        windows = np.unique(idx[inside])
        r.deferred = len(windows)
        r.quiet_skipped = int(inside.sum()) - len(windows)
        later = ends[windows]
        r.due = np.sort(np.concatenate([r.scheduled_due, later[later <= end_ms]]))
    else:
        r.quiet_skipped = int(inside.sum())
    return r


def _never_in_quiet(t: Timing, sched: Schedule, start_ms: int) -> int:
    """How many days ahead were checked when every due time in them falls in skip-quiet hours; 0 when
    the routine runs (or defers, which runs) at least once.

    Exact without listing a year of fire times: a cron matches the same times of day on every day it
    matches, and quiet hours are the same times of day every day, so which of its fires are quiet can
    only change where a UTC offset does (either zone). A cron is therefore checked over two weeks from
    its first fire and around each DST change in NEVER_HORIZON_MS; an `every` (whose time of day
    drifts) over all its fire times, at most NEVER_MAX_FIRES. With jitter the sample is conclusive
    only when each [nominal, nominal + jitter] lies inside one window; else every fire is checked.
    """
    qh = _quiet(t.quiet_hours or {})
    if qh.action == "defer":
        return 0
    anchor = start_ms if t.anchor_ms is None else t.anchor_ms
    horizon = start_ms + NEVER_HORIZON_MS
    first = sched.next_after(start_ms, anchor)
    if first is None or first > horizon:
        return 0  # no fire in the horizon at all (a yearly or far `at`): not the quiet hours' doing
    if sched.every_ms is not None:
        last = min(horizon, first + (NEVER_MAX_FIRES - 1) * sched.every_ms)
        nominal = np.arange(first, last + 1, sched.every_ms, dtype=np.int64)
    else:
        parts = [sched.fires_between(start_ms, min(horizon, first + NEVER_SAMPLE_MS), anchor, limit=NEVER_MAX_FIRES)]
        zones = {sched.timezone, qh.timezone}
        for tr in sorted({x for z in zones for x in transitions_between(resolve_zone(z), start_ms, horizon)}):
            parts.append(sched.fires_between(max(start_ms, tr - 2 * DAY_MS), min(horizon, tr + 2 * DAY_MS), anchor,
                                             limit=NEVER_MAX_FIRES))
        nominal = np.unique(np.array([f for part in parts for f in part], dtype=np.int64))
        last = horizon
    starts, ends = _windows(qh, start_ms - DAY_MS, last + t.jitter_ms + DAY_MS)
    if (_window_index(_jittered(t.name, nominal, t.jitter_ms), starts, ends) < 0).any():
        return 0
    if t.jitter_ms and sched.every_ms is None:
        lo, hi = _window_index(nominal, starts, ends), _window_index(nominal + t.jitter_ms, starts, ends)
        if not (lo == hi).all():  # some due time could leave the window on a day not sampled: check all
            nominal = np.array(sched.fires_between(start_ms, horizon, anchor, limit=NEVER_MAX_FIRES), dtype=np.int64)
            last = int(nominal[-1])
            if (_window_index(_jittered(t.name, nominal, t.jitter_ms), starts, ends) < 0).any():
                return 0
    return max(1, -(-(last - start_ms) // DAY_MS))


def _quiet_message(t: Timing, days: int) -> str:
    qh = _quiet(t.quiet_hours or {})
    window = f"{qh.start}–{qh.end} {zone_label(qh.timezone, resolve_zone(qh.timezone))}"
    return (f"routine \"{t.name}\" can never run: every fire time of its {_describe(t)} in the next "
            f"{days} days falls in quiet hours {window} (action skip); "
            "move the schedule or the window, or use action: defer")


# -- counting ----------------------------------------------------------------------------------------


def _count(runs: list[RoutineRuns], start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run's second (relative to the window's first), its routine's index, and runs per second."""
    base = start_ms // 1000
    width = end_ms // 1000 - base + 1
    lengths = np.fromiter((len(r.due) for r in runs), dtype=np.int64, count=len(runs))
    if not lengths.sum():
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.zeros(width, dtype=np.int64)
    seconds = np.concatenate([r.due for r in runs if len(r.due)]) // 1000 - base
    owners = np.repeat(np.arange(len(runs), dtype=np.int64), lengths)
    return seconds, owners, np.bincount(seconds, minlength=width)


def _members(runs: list[RoutineRuns], seconds: np.ndarray, owners: np.ndarray,
             wanted: np.ndarray) -> dict[int, np.ndarray]:
    """Routine indexes due in each wanted second (relative seconds), distinct and ascending."""
    pick = np.isin(seconds, wanted)
    secs, who = seconds[pick], owners[pick]
    order = np.lexsort((who, secs))
    secs, who = secs[order], who[order]
    out: dict[int, np.ndarray] = {}
    bounds = np.flatnonzero(np.diff(secs)) + 1
    for part_s, part_w in zip(np.split(secs, bounds), np.split(who, bounds), strict=True):
        if len(part_s):
            out[int(part_s[0])] = np.unique(part_w)
    return out


def _names(runs: list[RoutineRuns], idx: np.ndarray) -> list[str]:
    return sorted(runs[int(i)].name for i in idx)


def _busiest(runs: list[RoutineRuns], seconds: np.ndarray, owners: np.ndarray, counts: np.ndarray,
             start_ms: int, top: int) -> list[Second]:
    if not counts.any() or top <= 0:
        return []
    ranked = np.argsort(-counts, kind="stable")[:top]
    ranked = ranked[counts[ranked] > 0]
    members = _members(runs, seconds, owners, ranked)
    base = start_ms // 1000
    return [Second((base + int(s)) * 1000, int(counts[s]), _names(runs, members[int(s)])) for s in ranked]


def _herds(runs: list[RoutineRuns], seconds: np.ndarray, owners: np.ndarray, counts: np.ndarray,
           start_ms: int, herd_min: int, schedules: dict[tuple[Any, ...], Schedule],
           split: Splitter | None = None) -> tuple[list[Herd], int, int]:
    """Herd seconds grouped by who is in them: an hourly herd is one herd with 24 seconds. Each listed
    herd's jitter check hashes every member's due time (a directory's shared anchors make herds of
    thousands), so `split` may spread the herds over two cores."""
    hot = np.flatnonzero(counts >= herd_min)
    if not len(hot):
        return [], 0, 0
    listed = hot[np.argsort(-counts[hot], kind="stable")[:MAX_HERD_SECONDS]]
    members = _members(runs, seconds, owners, np.sort(listed))
    groups: dict[bytes, list[int]] = {}
    for s, who in members.items():
        groups.setdefault(who.tobytes(), []).append(s)
    base = start_ms // 1000
    ranked = sorted(((int(max(counts[s] for s in secs)), sorted(secs), blob) for blob, secs in groups.items()),
                    key=lambda g: (-g[0], g[1][0]))
    listed_herds = ranked[:MAX_HERDS]

    def suggestion(i: int) -> tuple[int | None, int | None, str]:
        _, secs, blob = listed_herds[i]
        who = np.frombuffer(blob, dtype=np.int64)
        return suggest_jitter([runs[int(k)] for k in who], (base + secs[0]) * 1000, herd_min, schedules)

    n = len(listed_herds)
    suggested = split(n, suggestion) if split is not None and n > 1 else [suggestion(i) for i in range(n)]
    herds = []
    for (biggest, secs, blob), (jitter, after, note) in zip(listed_herds, suggested, strict=True):
        who = np.frombuffer(blob, dtype=np.int64)
        herds.append(Herd(biggest, [(base + s) * 1000 for s in secs], _names(runs, who), jitter, after, note))
    return herds, len(hot), len(groups)


# -- the jitter suggestion ---------------------------------------------------------------------------


def suggest_jitter(members: list[RoutineRuns], second_ms: int, herd_min: int,
                   schedules: dict[tuple[Any, ...], Schedule]) -> tuple[int | None, int | None, str]:
    """A `policies.jitter` that spreads a herd of N runs due in one second, and what it achieves.

    Jitter delays each occurrence by a deterministic amount in [0, J] (`jitter_offset_ms`: SHA-256 of
    routine and nominal instant, so roughly uniform), which spreads N runs over J/1 s + 1 seconds.
    Aiming at one run per second on average gives J = (N - 1) s, rounded up to a value an operator
    would write (5s, 30s, 1m, 5m, ...). A routine's jitter should stay below half the interval between
    two of its fire times (a longer one lets an occurrence overtake the next), so members that fire
    more often than every 2 J get half their interval instead (rounded down, at least 1 s) and the note
    says how many. The result is then checked with the scheduler's own `jitter_offset_ms` on the
    herd's actual nominal instants: `max_after` is the most runs left in any one second. Deferred
    runs (quiet hours' end) are not jittered, so a herd of those gets no suggestion.
    """
    picked: list[tuple[str, int, tuple[Any, ...]]] = []
    for r in members:
        i = int(r.scheduled_due.searchsorted(second_ms))  # the method: a herd has thousands of members
        if i < len(r.scheduled_due) and r.scheduled_due[i] // 1000 == second_ms // 1000:
            picked.append((r.name, int(r.scheduled_nominal[i]), r.key))
    if len(picked) < 2:
        return None, None, "runs deferred to the end of quiet hours; jitter does not spread them"
    target = (len(picked) - 1) * 1000
    jitter = next((n for n in NICE_JITTER_MS if n >= target), target)
    gaps = _gaps(members, schedules)
    own = {key: _capped(jitter, gap // 2) for key, gap in gaps.items()}
    due = [(n + jitter_offset_ms(name, n, own[key])) // 1000 for name, n, key in picked]
    after = int(np.bincount(np.array(due, dtype=np.int64) - min(due)).max())
    shorter = sum(1 for _, _, key in picked if own[key] < jitter)
    if shorter == len(picked):
        return max(own[key] for _, _, key in picked), after, "capped at half the interval between fire times"
    note = (f"{shorter} of them fire more often than every {format_duration_ms(2 * jitter)}: "
            "give those half their interval") if shorter else ""
    return jitter, after, note


def _capped(jitter: int, cap: int) -> int:
    if jitter <= cap:
        return jitter
    return max((n for n in NICE_JITTER_MS if n <= cap), default=max(cap, 1000))


def _gaps(members: list[RoutineRuns], schedules: dict[tuple[Any, ...], Schedule]) -> dict[tuple[Any, ...], int]:
    """The shortest interval between two nominal fire times, per distinct schedule of the members."""
    gaps: dict[tuple[Any, ...], int] = {}
    for r in members:
        if r.key in gaps:
            continue
        fires = np.unique(r.scheduled_nominal)
        if len(fires) >= 2:
            gaps[r.key] = int(np.diff(fires).min())
        elif len(fires) == 1 and (sched := _schedule_of(r.key, schedules)) is not None:
            nxt = sched.next_after(int(fires[0]), r.key[-1] if r.key[-1] is not None else int(fires[0]))
            gaps[r.key] = (nxt - int(fires[0])) if nxt is not None else DAY_MS
        else:
            gaps[r.key] = DAY_MS
    return gaps



def _schedule_of(key: tuple[Any, ...], schedules: dict[tuple[Any, ...], Schedule]) -> Schedule | None:
    """The schedule behind a `_key`: built here when another process computed its runs (`split`)."""
    if key in schedules:
        return schedules[key]
    cron, every, at, tz, gap, fold, _anchor = key
    spec = {k: v for k, v in (("cron", cron), ("every", every), ("at", at)) if v is not None}
    try:
        schedules[key] = Schedule.from_spec({**spec, "timezone": tz}, {"gap": gap, "fold": fold})
    except PalyraError:
        return None
    return schedules[key]
