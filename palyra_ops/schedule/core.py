"""Schedules: validation, next fire instants under the DST rules of SPEC §5, notes, preview.

All functions are pure: instants in and out are integer Unix milliseconds and nothing reads the clock,
so the scheduler, `plan`, the HTTP preview route and the CLI compute the same fire times from the same
inputs. The rules (written up with examples in docs/scheduling.md):

* A *fixed-time* cron (one minute value and one hour value) fires once per matching local date. If the
  wall time falls in a spring-forward gap it fires at the first instant after the gap (`gap: shift`) or
  not that day (`gap: skip`); if it falls in a repeated hour it fires at the first occurrence
  (`fold: first`), the second (`last`) or both (`both`).
* Any other cron fires at every instant whose local wall-clock time matches it: wall times inside a gap
  do not exist and do not fire, wall times in a repeated hour fire once per occurrence. This keeps
  `*/30 * * * *` exactly 30 real minutes apart across both changes.
* `every` fires at `anchor + k * every` for k >= 1, where the anchor is the instant the schedule was
  applied (never at the anchor itself: applying a schedule must not fire it, SPEC §5).
* `at` fires once, at its instant, if that is still ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from palyra_ops.clock import MAX_INSTANT_MS, check_instant, parse_rfc3339, rfc3339, to_ms
from palyra_ops.durations import ROUTINE_DURATION_BOUNDS, duration_problem, parse_duration_ms
from palyra_ops.errors import PalyraError
from palyra_ops.schedule.cron import Cron, CronError, compile_cron, next_wall_minute
from palyra_ops.schedule.zones import (
    DAY_MS,
    MINUTE_MS,
    check_timezone,
    format_wall,
    is_fixed,
    offset_ms,
    resolve_wall,
    resolve_zone,
    segment_end,
    transitions_between,
    wall_datetime,
    zone_label,
)

DST_GAP_POLICIES = ("shift", "skip")
DST_FOLD_POLICIES = ("first", "last", "both")
MIN_EVERY_MS = ROUTINE_DURATION_BOUNDS["every"][0]
MAX_PREVIEW_COUNT = 1000
#: cron search range: datetime covers years 1..9999; keep a day of margin for offsets
_FIRST_MS = int(datetime(1, 1, 3, tzinfo=UTC).timestamp()) * 1000
_LAST_MS = int(datetime(9999, 12, 1, tzinfo=UTC).timestamp()) * 1000


def check_schedule(schedule: dict) -> list[tuple[str, str]]:
    """Semantic problems of a `trigger.schedule` mapping as (key, message); [] when it is usable.

    The key is the mapping key at fault (`cron`, `every`, `at`, `timezone`), or "" for the mapping as a
    whole. A past `at` is not an error here (it is a note): validity must not depend on the clock.
    """
    if not isinstance(schedule, dict):
        return [("", "must be a mapping with one of cron, every, at")]
    problems: list[tuple[str, str]] = []
    present = [k for k in _KIND_PROBLEMS if schedule.get(k) is not None]
    if not present:
        problems.append(("", "needs exactly one of cron, every, at"))
    elif len(present) > 1:
        problems.append(("", f"needs exactly one of cron, every, at; got {' and '.join(present)}"))
    for key in present:
        problems.extend((key, m) for m in _KIND_PROBLEMS[key](schedule[key]))
    tz = schedule.get("timezone", "utc")
    message = check_timezone("utc" if tz is None else tz) if isinstance(tz, str | None) else f"must be a string, got {tz!r}"
    if message:
        problems.append(("timezone", message))
    return problems


def _cron_problems(expr: Any) -> list[str]:
    if not isinstance(expr, str):
        return [f"must be a string, got {expr!r}"]
    try:
        cron = compile_cron(expr)
    except CronError as exc:
        return [f"{expr!r} is not a valid cron expression: {exc}"]
    return [f"{expr!r} never fires"] if cron.never else []


def _every_problems(value: Any) -> list[str]:
    problem = duration_problem("every", value)
    return [problem] if problem else []


def _at_problems(value: Any) -> list[str]:
    try:
        _at_ms(value)
    except ValueError as exc:
        return [str(exc)]
    return []


#: the schedule kinds, in the order their problems are reported, and what is wrong with a value
_KIND_PROBLEMS: dict[str, Callable[[Any], list[str]]] = {"cron": _cron_problems, "every": _every_problems, "at": _at_problems}


def _at_ms(value: Any) -> int:
    """`at` as an instant in the valid range (clock.MIN_INSTANT_MS..MAX_INSTANT_MS); YAML loaded
    by other means than ours may already have turned an unquoted timestamp into a datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"'{value.isoformat()}' has no UTC offset")
        return check_instant(to_ms(value), value.isoformat())
    if isinstance(value, date):
        raise ValueError(f"'{value.isoformat()}' is a date; a date-time with a UTC offset is required")
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 date-time string, got {value!r}")
    return parse_rfc3339(value)


@dataclass(frozen=True)
class Schedule:
    """One routine's schedule in a form the time math can use; build it with `from_spec`."""

    cron: str | None
    every_ms: int | None
    at_ms: int | None
    timezone: str = "utc"
    dst_gap: str = "shift"
    dst_fold: str = "first"

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.cron, self.every_ms, self.at_ms)) != 1:
            raise PalyraError("a schedule needs exactly one of cron, every, at")
        if self.every_ms is not None and self.every_ms < 1:
            raise PalyraError("every must be positive")
        if self.dst_gap not in DST_GAP_POLICIES:
            raise PalyraError(
                f"policies.dst.gap: {self.dst_gap!r} is not one of {', '.join(DST_GAP_POLICIES)}"
            )
        if self.dst_fold not in DST_FOLD_POLICIES:
            raise PalyraError(
                f"policies.dst.fold: {self.dst_fold!r} is not one of {', '.join(DST_FOLD_POLICIES)}"
            )

    @classmethod
    def from_spec(cls, schedule: dict, dst: dict | None = None) -> Schedule:
        """Build from `trigger.schedule` (+ `policies.dst`); raises PalyraError naming the first problem."""
        problems = check_schedule(schedule)
        if problems:
            key, message = problems[0]
            raise PalyraError(f"{key}: {message}" if key else f"schedule: {message}")
        dst = dst or {}
        tz = schedule.get("timezone") or "utc"
        return cls(
            cron=schedule["cron"] if schedule.get("cron") is not None else None,
            every_ms=parse_duration_ms(schedule["every"]) if schedule.get("every") is not None else None,
            at_ms=_at_ms(schedule["at"]) if schedule.get("at") is not None else None,
            timezone=tz,
            dst_gap=dst.get("gap") or "shift",
            dst_fold=dst.get("fold") or "first",
        )

    # -- fire times -------------------------------------------------------------------------------

    def next_after(self, after_ms: int, anchor_ms: int | None = None) -> int | None:
        """First nominal fire instant strictly after `after_ms`; None when it never fires again."""
        if self.at_ms is not None:
            return self.at_ms if self.at_ms > after_ms else None
        if self.every_ms is not None:
            anchor = after_ms if anchor_ms is None else anchor_ms
            if after_ms < anchor:
                nxt = anchor + self.every_ms
            else:
                nxt = anchor + ((after_ms - anchor) // self.every_ms + 1) * self.every_ms
            return nxt if nxt <= MAX_INSTANT_MS else None  # past the calendar: never again
        cron = compile_cron(self.cron)  # type: ignore[arg-type]
        zone = resolve_zone(self.timezone)
        if after_ms >= _LAST_MS:
            return None  # beyond what datetime can represent
        after_ms = max(after_ms, _FIRST_MS)
        if cron.fixed_time and not is_fixed(zone):
            nxt = _next_fixed(cron, zone, after_ms, self.dst_gap, self.dst_fold)
        else:
            nxt = _next_matching(cron, zone, after_ms)
        return nxt if nxt is not None and nxt <= MAX_INSTANT_MS else None

    def fires_between(
        self, after_ms: int, until_ms: int, anchor_ms: int | None = None, limit: int = 10_000
    ) -> list[int]:
        """Nominal instants in (after_ms, until_ms], at most `limit` of them (earliest first)."""
        anchor = after_ms if anchor_ms is None else anchor_ms
        out: list[int] = []
        if self.every_ms is not None:
            nxt = self.next_after(after_ms, anchor)
            until_ms = min(until_ms, MAX_INSTANT_MS)
            while nxt is not None and nxt <= until_ms and len(out) < limit:
                out.append(nxt)
                nxt += self.every_ms
            return out
        cur = after_ms
        while len(out) < limit:
            nxt = self.next_after(cur, anchor)
            if nxt is None or nxt > until_ms:
                break
            out.append(nxt)
            cur = nxt
        return out

    def next_n(self, after_ms: int, count: int, anchor_ms: int | None = None) -> list[int]:
        anchor = after_ms if anchor_ms is None else anchor_ms
        out: list[int] = []
        cur = after_ms
        while len(out) < count:
            nxt = self.next_after(cur, anchor)
            if nxt is None:
                break
            out.append(nxt)
            cur = nxt
        return out

    def fingerprint(self) -> str:
        """Identifies what the schedule does, not how it is spelled.

        `@daily` and `0 0 * * *` are equal; the zone is left out of `every`/`at` (instants do not
        depend on it) and the DST policy is only part of a fixed-time cron's identity, because nothing
        else reads it. So a plan shows a schedule change only when fire times can differ.
        """
        if self.at_ms is not None:
            return f"at:{self.at_ms}"
        if self.every_ms is not None:
            return f"every:{self.every_ms}ms"
        cron = compile_cron(self.cron)  # type: ignore[arg-type]
        fp = f"cron:{cron.canonical}|tz:{self.timezone}"
        if cron.fixed_time:
            fp += f"|dst:{self.dst_gap},{self.dst_fold}"
        return fp

    @property
    def kind(self) -> str:
        return "cron" if self.cron is not None else "every" if self.every_ms is not None else "at"


def _next_matching(cron: Cron, zone: Any, after_ms: int) -> int | None:
    """Instant matching: walk constant-offset segments, searching wall time inside each.

    Within a segment wall time and instants differ by one constant, so the naive next match converts
    exactly; a match beyond the segment's end is discarded and the search restarts at the segment end
    with the new offset. That makes gap walls unreachable and repeated walls reachable twice, which is
    precisely "keeps its real-time cadence".
    """
    t = probe = after_ms
    for _ in range(10_000):
        off = offset_ms(zone, probe)
        end = segment_end(zone, probe)
        w = next_wall_minute(cron, (t + off) // MINUTE_MS)
        if w is None:
            return None
        instant = w * MINUTE_MS - off
        if end is None or instant < end:
            return instant
        # continue strictly after end - 1 (i.e. from `end` on) with the offset that starts at `end`
        t, probe = end - 1, end
    return None  # pragma: no cover - only for a zone changing offset every few minutes


def _pick(kind: str, instants: list[int], gap: str, fold: str) -> list[int]:
    if kind == "gap":
        return instants if gap == "shift" else []
    if kind == "fold":
        return {"first": instants[:1], "last": instants[1:], "both": instants}[fold]
    return instants


def _next_fixed(cron: Cron, zone: Any, after_ms: int, gap: str, fold: str) -> int | None:
    """Fixed-time crons: resolve each matching local date's single wall time per the DST policy."""
    day = (after_ms + offset_ms(zone, after_ms)) // DAY_MS - 1  # a day early: fold/shift move instants
    w = next_wall_minute(cron, day * 1440 - 1)
    for _ in range(100_000):
        if w is None:
            return None
        kind, instants = resolve_wall(zone, w)
        for instant in _pick(kind, instants, gap, fold):
            if instant > after_ms:
                return instant
        w = next_wall_minute(cron, w)
    return None  # pragma: no cover


# -- notes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """Something an operator should know about upcoming fire times (shown by plan and preview)."""

    kind: str  # "dst_gap" | "dst_fold" | "quiet_hours" | "past"
    at_ms: int
    message: str


def notes_for(
    schedule: Schedule,
    fires: list[int],
    quiet_hours: dict | Any | None = None,
    *,
    after_ms: int | None = None,
) -> list[Note]:
    """Notes about DST days, quiet hours and a past `at` for the given fire instants, by time.

    `after_ms` is where the preview started (default: just before the first fire); DST days between it
    and the last fire are examined, so a `gap: skip` day, which has no fire of its own, is still noted.
    `quiet_hours` is the routine's `quiet_hours` mapping or a QuietHours.
    """
    from palyra_ops.schedule.policies import QuietHours

    notes: list[Note] = []
    zone = resolve_zone(schedule.timezone)
    label = zone_label(schedule.timezone, zone)
    if schedule.at_ms is not None:
        past = schedule.at_ms not in fires and (after_ms is None or schedule.at_ms <= after_ms)
        if past:
            when = rfc3339(schedule.at_ms, zone)
            notes.append(
                Note("past", schedule.at_ms, f"{when} is in the past; this schedule will not fire again")
            )
    if schedule.cron is not None and fires and not is_fixed(zone):
        start = fires[0] - 1 if after_ms is None else min(after_ms, fires[0] - 1)
        cron = compile_cron(schedule.cron)
        if cron.fixed_time:
            notes.extend(_fixed_dst_notes(schedule, cron, zone, label, start, fires[-1]))
        else:
            notes.extend(_cadence_dst_notes(cron, zone, label, start, fires[-1]))
    if quiet_hours is not None:
        qh = quiet_hours if isinstance(quiet_hours, QuietHours) else QuietHours.from_spec(quiet_hours)
        window = f"{qh.start}–{qh.end} {zone_label(qh.timezone, resolve_zone(qh.timezone))}"
        for f in fires:
            if qh.contains(f):
                when = rfc3339(f, zone)
                if qh.action == "defer":
                    then = rfc3339(qh.window_end_after(f), zone)
                    msg = f"{when} falls in quiet hours {window}; it is deferred to {then}"
                else:
                    msg = f"{when} falls in quiet hours {window}; it will be skipped"
                notes.append(Note("quiet_hours", f, msg))
    notes.sort(key=lambda n: n.at_ms)
    return notes


def _fixed_dst_notes(
    schedule: Schedule, cron: Cron, zone: Any, label: str, start: int, end: int
) -> list[Note]:
    out: list[Note] = []
    day = (start + offset_ms(zone, start)) // DAY_MS - 1
    w = next_wall_minute(cron, day * 1440 - 1)
    while w is not None:
        kind, instants = resolve_wall(zone, w)
        if instants[0] > end:
            break
        wall = wall_datetime(w)
        head = f"{wall:%Y-%m-%d}: {wall:%H:%M}"
        if kind == "gap" and instants[0] > start:
            if schedule.dst_gap == "shift":
                tail = f"fires at {format_wall(zone, instants[0])}"
            else:
                tail = "no run that day (gap: skip)"
            out.append(Note("dst_gap", instants[0], f"{head} does not exist in {label} (DST gap); {tail}"))
        elif kind == "fold" and start < instants[0] and instants[0] <= end:
            first, second = (format_wall(zone, i) for i in instants)
            if schedule.dst_fold == "both":
                tail = f"fires twice, at {first} and {second} (fold: both)"
            elif schedule.dst_fold == "last":
                tail = f"fires once, at {second} (fold: last)"
            else:
                tail = f"fires once, at {first} (fold: first)"
            out.append(Note("dst_fold", instants[0], f"{head} occurs twice in {label} (DST fold); {tail}"))
        w = next_wall_minute(cron, w)
    return out


def _cadence_dst_notes(cron: Cron, zone: Any, label: str, start: int, end: int) -> list[Note]:
    """For instant-matching crons, note a change only when some matching wall time is affected."""
    out: list[Note] = []
    for t in transitions_between(zone, start, end):
        before, after = offset_ms(zone, t - 1), offset_ms(zone, t)
        lo, hi = t + min(before, after), t + max(before, after)  # the skipped or repeated wall range
        nw = next_wall_minute(cron, lo // MINUTE_MS - 1)
        if nw is None or nw * MINUTE_MS >= hi:
            continue
        a, b = wall_datetime(lo // MINUTE_MS), wall_datetime(hi // MINUTE_MS)
        if after > before:
            msg = (
                f"{a:%Y-%m-%d}: clocks in {label} jump from {a:%H:%M} to {b:%H:%M} (DST gap); "
                f"matching times in between do not exist and do not fire"
            )
            out.append(Note("dst_gap", t, msg))
        else:
            msg = (
                f"{a:%Y-%m-%d}: {a:%H:%M}–{b:%H:%M} occurs twice in {label} (DST fold); "
                f"matching times in it fire in both occurrences"
            )
            out.append(Note("dst_fold", t, msg))
    return out


# -- preview --------------------------------------------------------------------------------------


def parse_expr(expr: str, timezone: str = "utc") -> dict:
    """`palyra-ops schedule` syntax (a cron expression, `every:DURATION`, `at:RFC3339`) as a mapping."""
    if not isinstance(expr, str) or not expr.strip():
        raise PalyraError(
            "empty schedule expression: expected a cron expression, every:DURATION or at:RFC3339"
        )
    text = expr.strip()
    if text.startswith("every:"):
        return {"every": text[len("every:") :].strip(), "timezone": timezone}
    if text.startswith("at:"):
        return {"at": text[len("at:") :].strip(), "timezone": timezone}
    return {"cron": text, "timezone": timezone}


def preview(
    expr: str,
    timezone: str = "utc",
    from_ms: int | None = None,
    count: int = 5,
    dst: dict | None = None,
    quiet_hours: dict | None = None,
) -> dict:
    """Next `count` fire times after `from_ms`, as RFC 3339 in the schedule's zone, plus notes.

    `from_ms` is required (this module never reads the clock); it is also the `every` anchor, i.e. a
    preview shows what applying the schedule at `from_ms` would do.
    """
    if from_ms is None:
        raise ValueError("preview() needs from_ms: pass clock.now_ms() for 'from now'")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PREVIEW_COUNT:
        raise PalyraError(f"count must be between 1 and {MAX_PREVIEW_COUNT}, got {count!r}")
    spec = parse_expr(expr, timezone)
    problems = check_schedule(spec)
    if problems:
        raise PalyraError("; ".join(f"{key}: {msg}" if key else msg for key, msg in problems))
    if dst:
        for key, allowed in (("gap", DST_GAP_POLICIES), ("fold", DST_FOLD_POLICIES)):
            if dst.get(key) is not None and dst[key] not in allowed:
                raise PalyraError(f"dst.{key}: {dst[key]!r} is not one of {', '.join(allowed)}")
    schedule = Schedule.from_spec(spec, dst)
    zone = resolve_zone(schedule.timezone)
    fires = schedule.next_n(from_ms, count, anchor_ms=from_ms)
    notes = notes_for(schedule, fires, quiet_hours, after_ms=from_ms)
    return {
        "fire_times": [rfc3339(f, zone) for f in fires],
        "notes": [n.message for n in notes],
    }
