"""Run policies that are pure time math: jitter, quiet hours, misfire resolution, retry backoff.

Kept beside the fire-time code so the scheduler, plan notes and tests share one definition of each
rule (the daemon records the outcome; these functions only decide it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from palyra_ops.clock import MAX_INSTANT_MS, MIN_INSTANT_MS
from palyra_ops.durations import duration_problem
from palyra_ops.enums import Misfire, QuietAction
from palyra_ops.errors import PalyraError
from palyra_ops.schedule.zones import DAY_MS, check_timezone, offset_ms, resolve_wall, resolve_zone

try:  # CPython's own SHA-256: for these 30-byte inputs a fifth cheaper per call than OpenSSL's
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - other interpreters, Python >= 3.12 (_sha2)
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment]

RETRY_CAP_MS = 60_000
QUIET_ACTIONS = tuple(QuietAction)
MISFIRE_POLICIES = tuple(Misfire)
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)  # fullmatch: no "22:00\n", no "٢٢:00"


def jitter_offset_ms(routine_id: str, nominal_ms: int, jitter_ms: int) -> int:
    """Deterministic delay in [0, jitter_ms] for one occurrence.

    Derived from SHA-256 of (routine, nominal instant) rather than `hash()` or a RNG, so every
    scheduler process (and a restarted one) delays the same occurrence by the same amount, which keeps
    the dedupe key and the recorded "scheduled at" stable. 64 bits of hash make the modulo bias
    negligible for any realistic jitter.
    """
    if jitter_ms <= 0:
        return 0
    digest = _sha256(b"%b\x00%d" % (routine_id.encode(), nominal_ms)).digest()  # "{id}\0{decimal ms}"
    return int.from_bytes(digest[:8], "big") % (jitter_ms + 1)


def jitter_offsets_ms(routine_id: str, nominal_ms: Iterable[int], jitter_ms: int) -> list[int]:
    """`jitter_offset_ms` of many occurrences of one routine (the forecast hashes a day of them);
    tests/test_schedule_policies.py holds the two equal."""
    if jitter_ms <= 0:
        return [0 for _ in nominal_ms]
    prefix, sha, modulus, of = f"{routine_id}\x00".encode(), _sha256, jitter_ms + 1, int.from_bytes
    return [of(sha(b"%b%d" % (prefix, n)).digest()[:8], "big") % modulus for n in nominal_ms]


def retry_delay_ms(backoff_ms: int, attempt: int) -> int:
    """Delay before retrying after failed attempt `attempt` (1-based): backoff * 2**(attempt-1), max 60 s."""
    if backoff_ms <= 0:
        return 0
    exponent = max(attempt, 1) - 1
    if exponent >= 32:  # avoid building huge integers; any such delay is capped anyway
        return RETRY_CAP_MS
    return min(backoff_ms * (1 << exponent), RETRY_CAP_MS)


@dataclass(frozen=True)
class MisfireDecision:
    run: list[int]  # nominal instants to run now, in order
    skipped: list[int]  # nominal instants recorded as skipped (misfire)
    #: the runs are a catch-up backlog: they go out one after the other, in order (a property of
    #: how they run, not of which instants; left out of equality)
    in_order: bool = field(default=False, compare=False)


def resolve_misfire(policy: str, missed: list[int], max_catch_up: int, *,
                    on_time: Sequence[int] = ()) -> MisfireDecision:
    """The whole misfire decision for a job's due instants: `missed` are later than their grace,
    `on_time` are not (the scheduler splits them by its clock; everything else is decided here).

    Nothing missed: the on-time instants run. ignore: the missed ones are skipped, the on-time ones
    run. fire_once: one run stands for all of them (the latest, since it is the nearest to "now" and
    its inputs are the freshest); catch_up: each runs in order when there are at most `max_catch_up`,
    else the backlog collapses like fire_once (a long outage should not unleash a burst of stale runs).
    """
    if policy not in MISFIRE_POLICIES:
        raise ValueError(f"unknown misfire policy {policy!r} (expected one of {', '.join(MISFIRE_POLICIES)})")
    missed = sorted(missed)
    due = sorted([*missed, *on_time])
    if not missed:
        run, skipped = due, []
    elif policy == Misfire.IGNORE:
        run, skipped = sorted(on_time), missed
    elif policy == Misfire.CATCH_UP and len(due) <= max_catch_up:
        run, skipped = due, []
    else:  # fire_once, or a catch-up backlog too long to replay
        run, skipped = [due[-1]], due[:-1]
    return MisfireDecision(run=run, skipped=skipped, in_order=policy == Misfire.CATCH_UP and len(run) > 1)


def check_policies(policies: dict) -> list[tuple[tuple[str, ...], str]]:
    """Range problems of a routine's `policies` durations as (sub-path, message).

    The schema checks their syntax; the bounds (durations.ROUTINE_DURATION_BOUNDS, docs/format.md)
    are checked here so the message can say what the limit is.
    """
    out: list[tuple[tuple[str, ...], str]] = []
    for key in ("misfire_grace", "jitter", "cooldown", "timeout"):
        if isinstance(policies.get(key), str):
            message = duration_problem(key, policies[key])
            if message:
                out.append(((key,), message))
    retry = policies.get("retry")
    if isinstance(retry, dict) and isinstance(retry.get("backoff"), str):
        message = duration_problem("retry.backoff", retry["backoff"])
        if message:
            out.append((("retry", "backoff"), message))
    return out


def check_quiet_hours(q: dict) -> list[tuple[str, str]]:
    """Problems of a `quiet_hours` mapping as (key, message), like check_schedule."""
    if not isinstance(q, dict):
        return [("", "must be a mapping with start and end")]
    problems: list[tuple[str, str]] = []
    for key in ("start", "end"):
        value = q.get(key)
        if value is None:
            problems.append((key, "is required (HH:MM)"))
        elif not isinstance(value, str) or not _HHMM.fullmatch(value):
            problems.append((key, f"{value!r} is not a time of day HH:MM (00:00 to 23:59)"))
    if not problems and q["start"] == q["end"]:
        problems.append(("end", f"equals start ({q['start']!r}): the window would be empty"))
    tz = q.get("timezone", "utc")
    message = check_timezone(tz) if isinstance(tz, str) else f"must be a string, got {tz!r}"
    if message:
        problems.append(("timezone", message))
    action = q.get("action", "skip")
    if action not in QUIET_ACTIONS:
        problems.append(("action", f"{action!r} is not one of {', '.join(QUIET_ACTIONS)}"))
    return problems


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True)
class QuietHours:
    """A daily local-time window in which scheduled triggers are skipped or deferred.

    Each day's window is a real interval [start, end) of instants: start and end are resolved on their
    local date like a fixed-time cron with the default DST policy (a time in a gap means the first
    instant after the gap, a repeated time means its first occurrence). So a window is never entered
    twice in one night, and on a DST night it is an hour shorter or longer in real time, as the clock
    on the wall says. `start > end` wraps midnight (22:00-07:00 ends on the next date). `start == end`
    is an empty window (never quiet); check_quiet_hours reports it as an error.
    """

    start: str
    end: str
    timezone: str = "utc"
    action: str = "skip"

    @classmethod
    def from_spec(cls, q: dict) -> QuietHours:
        problems = check_quiet_hours(q)
        if problems:
            key, message = problems[0]
            raise PalyraError(f"quiet_hours.{key}: {message}" if key else f"quiet_hours: {message}")
        return cls(
            start=q["start"],
            end=q["end"],
            timezone=q.get("timezone") or "utc",
            action=q.get("action") or "skip",
        )

    def _window_at(self, instant_ms: int) -> tuple[int, int] | None:
        start, end = _minutes(self.start), _minutes(self.end)
        if start == end or not MIN_INSTANT_MS <= instant_ms <= MAX_INSTANT_MS:
            return None  # empty, or an instant past the calendar (no night there to be quiet in)
        zone = resolve_zone(self.timezone)
        day = (instant_ms + offset_ms(zone, instant_ms)) // DAY_MS
        for d in (day - 1, day, day + 1):
            s = _first_instant(zone, d * 1440 + start)
            e = _first_instant(zone, (d if start < end else d + 1) * 1440 + end)
            if s <= instant_ms < e:
                return s, e
        return None

    def contains(self, instant_ms: int) -> bool:
        """Start inclusive, end exclusive."""
        return self._window_at(instant_ms) is not None

    def windows_between(self, after_ms: int, until_ms: int) -> list[tuple[int, int]]:
        """Every window [start, end) that overlaps (after_ms, until_ms], in order.

        The same per-date resolution as `contains`, done once for a range: the forecast tests
        hundreds of thousands of instants against a few windows (palyra_ops/forecast.py).
        """
        start, end = _minutes(self.start), _minutes(self.end)
        lo, hi = max(after_ms, MIN_INSTANT_MS), min(until_ms, MAX_INSTANT_MS)
        if start == end or hi < lo:
            return []
        zone = resolve_zone(self.timezone)
        out: list[tuple[int, int]] = []
        first_day = (lo + offset_ms(zone, lo)) // DAY_MS - 1
        last_day = (hi + offset_ms(zone, hi)) // DAY_MS + 1
        for d in range(first_day, last_day + 1):
            s = _first_instant(zone, d * 1440 + start)
            e = _first_instant(zone, (d if start < end else d + 1) * 1440 + end)
            if e > after_ms and s <= until_ms:
                out.append((s, e))
        return out

    def window_end_after(self, instant_ms: int) -> int:
        """When the window holding `instant_ms` ends (the deferred run time); the instant itself if none."""
        window = self._window_at(instant_ms)
        return window[1] if window else instant_ms


def _first_instant(zone: object, wall_minute: int) -> int:
    """Where a wall time first reads as reached: its instant, a gap's end, or a fold's first occurrence."""
    _kind, instants = resolve_wall(zone, wall_minute)  # type: ignore[arg-type]
    return instants[0]
