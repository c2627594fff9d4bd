"""Cron expressions compiled once into sets, and "next matching wall minute" on a naive calendar.

croniter does the parsing (field syntax, names, ranges, steps, `L`, `#`, macros) through
`croniter.expand`; the search for the next match is done here on plain integers. Two reasons: the
scheduler must map wall times to instants itself anyway to get the DST rules of SPEC §5 right (which
croniter's own tz handling does not implement), and an integer search over precomputed sets is several
times faster than iterating croniter objects, which matters when a plan previews 10,000 routines.

Semantics follow croniter (hence Vixie cron): when both day-of-month and day-of-week are restricted,
a day matches if either does.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from croniter import croniter

from palyra_ops.schedule.zones import EPOCH_ORDINAL

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_NEAREST_WEEKDAY = re.compile(r"(^|[,\-/])(\d+w|w\d*|lw)", re.IGNORECASE)
_HASHED = re.compile(r"(^|[,\-/(])h", re.IGNORECASE)
#: how far ahead a search looks before declaring "does not fire again" (covers Feb 29 on a weekday)
_SEARCH_MONTHS = 12 * 100
_MAX_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class CronError(ValueError):
    """A cron expression that does not parse; the message is the detail after "is not valid: "."""


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression. Day fields keep None for "every day" so the OR rule can see it."""

    expr: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    times: tuple[int, ...]  # minute-of-day values, ascending
    dom: frozenset[int] | None  # None = unrestricted
    dom_last: bool  # `L`: the last day of the month
    months: frozenset[int]
    dow: frozenset[int] | None  # 0 = Sunday; None = unrestricted
    nth: tuple[tuple[int, tuple[int | str, ...]], ...]  # weekday -> occurrences (1..5 or "l")
    never: bool  # statically impossible (e.g. Feb 31)

    @property
    def fixed_time(self) -> bool:
        """SPEC §5's "fixed-time" routine: one minute and one hour, so at most one fire per day."""
        return len(self.minutes) == 1 and len(self.hours) == 1

    @property
    def canonical(self) -> str:
        """Equal for expressions with equal meaning (`@daily` == `0 0 * * *`, `MON` == `1`)."""

        def fmt(values: object, full: int) -> str:
            if values is None or len(values) == full:  # type: ignore[arg-type]
                return "*"
            return ",".join(str(v) for v in sorted(values))  # type: ignore[call-overload]

        dom = "*"
        if self.dom is not None or self.dom_last:
            dom = ",".join([str(d) for d in sorted(self.dom or ())] + (["L"] if self.dom_last else []))
        dow = fmt(self.dow, -1)
        if self.nth:
            dow = ",".join(f"{wd}#{','.join(str(n) for n in ns)}" for wd, ns in self.nth)
        return f"{fmt(self.minutes, 60)} {fmt(self.hours, 24)} {dom} {fmt(self.months, 12)} {dow}"


def _field_problem(index: int, value: str) -> str:
    name, lo, hi = _FIELDS[index]
    probe = ["*"] * 5
    probe[index] = value
    try:
        croniter.expand(" ".join(probe))
    except Exception as exc:  # croniter raises several unrelated types for bad fields
        text = str(exc)
        if "out of range" in text or "out of bands" in text:
            return f"{name} field {value!r} is out of range {lo}-{hi}"
        if "step" in text:
            return f"{name} field {value!r} has a step of 0"
        return f"{name} field {value!r} is not a number, name, range, list or step in {lo}-{hi}"
    return ""


@lru_cache(maxsize=4096)
def compile_cron(expr: str) -> Cron:
    """Parse a 5-field expression or macro; raises CronError saying which field is wrong and why."""
    if not isinstance(expr, str):
        raise CronError(f"expected a string, got {type(expr).__name__}")
    text = " ".join(expr.split())
    if not text:
        raise CronError("the expression is empty")
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise CronError(f"unknown macro {text!r} (expected one of {', '.join(_MACROS)})")
        text = _MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    if _NEAREST_WEEKDAY.search(fields[2]):
        raise CronError(f"day-of-month field {fields[2]!r}: nearest-weekday 'W' is not supported")
    for i, f in enumerate(fields):
        if _HASHED.search(f):
            raise CronError(
                f"{_FIELDS[i][0]} field {f!r}: hashed 'H' values are not supported; use policies.jitter"
            )
    try:
        expanded, nth_map = croniter.expand(text)
    except Exception as exc:
        for i, f in enumerate(fields):
            problem = _field_problem(i, f)
            if problem:
                raise CronError(problem) from None
        raise CronError(str(exc)) from None

    def ints(values: list) -> tuple[int, ...]:
        return tuple(sorted(int(v) for v in values if v not in ("*", "l")))

    minutes = tuple(range(60)) if expanded[0] == ["*"] else ints(expanded[0])
    hours = tuple(range(24)) if expanded[1] == ["*"] else ints(expanded[1])
    months = frozenset(range(1, 13)) if expanded[3] == ["*"] else frozenset(ints(expanded[3]))
    dom: frozenset[int] | None = None
    dom_last = False
    if expanded[2] != ["*"]:
        dom = frozenset(ints(expanded[2]))
        dom_last = "l" in expanded[2]
    dow: frozenset[int] | None = None
    if expanded[4] != ["*"]:
        dow = frozenset(d % 7 for d in ints(expanded[4]))
    nth: tuple[tuple[int, tuple[int | str, ...]], ...] = ()
    if nth_map:
        if dom is not None or dom_last:
            raise CronError("day-of-week '#'/'L' occurrences cannot be combined with a day-of-month")
        nth = tuple(
            sorted(
                (int(wd) % 7, tuple(sorted(ns, key=lambda n: (isinstance(n, str), str(n)))))
                for wd, ns in nth_map.items()
            )
        )
        plain = (dow or frozenset()) - {wd for wd, _ in nth}
        if plain:
            raise CronError("day-of-week field mixes plain weekdays with '#'/'L' occurrences")
        dow = None
    times = tuple(h * 60 + m for h in hours for m in minutes)
    never = False
    if dom is not None and not dom_last and dow is None and not nth:
        never = not any(d <= _MAX_MONTH_DAYS[m] for m in months for d in dom)
    return Cron(
        expr=expr,
        minutes=minutes,
        hours=hours,
        times=times,
        dom=dom,
        dom_last=dom_last,
        months=months,
        dow=dow,
        nth=nth,
        never=never,
    )


@lru_cache(maxsize=16384)
def month_days(cron: Cron, year: int, month: int) -> tuple[int, ...]:
    """Days of one month on which the cron's day rules match, ascending."""
    first_wd, ndays = calendar.monthrange(year, month)  # Monday = 0
    first_wd = (first_wd + 1) % 7  # cron: Sunday = 0
    dom_restricted = cron.dom is not None or cron.dom_last
    dow_restricted = cron.dow is not None or bool(cron.nth)
    out = []
    nth = dict(cron.nth)
    for d in range(1, ndays + 1):
        wd = (first_wd + d - 1) % 7
        dom_ok = (cron.dom is not None and d in cron.dom) or (cron.dom_last and d == ndays)
        if cron.nth:
            occ = nth.get(wd, ())
            dow_ok = bool(occ) and (((d - 1) // 7 + 1) in occ or ("l" in occ and d + 7 > ndays))
        else:
            dow_ok = cron.dow is not None and wd in cron.dow
        if dom_restricted and dow_restricted:
            ok = dom_ok or dow_ok
        elif dom_restricted:
            ok = dom_ok
        elif dow_restricted:
            ok = dow_ok
        else:
            ok = True
        if ok:
            out.append(d)
    return tuple(out)


def next_wall_minute(cron: Cron, after_minute: int) -> int | None:
    """Smallest wall minute > `after_minute` (minutes since 1970-01-01 on a naive calendar) that matches.

    None when nothing matches within 100 years (an impossible date such as Feb 31).
    """
    if cron.never:
        return None
    m = after_minute + 1
    day, mod = divmod(m, 1440)
    try:
        d0 = date.fromordinal(EPOCH_ORDINAL + day)
    except (ValueError, OverflowError):
        return None
    y, mo, d = d0.year, d0.month, d0.day
    times = cron.times
    for _ in range(_SEARCH_MONTHS):
        if mo in cron.months:
            days = month_days(cron, y, mo)
            i = bisect_left(days, d)
            if i < len(days):
                if days[i] == d:
                    j = bisect_left(times, mod)
                    if j < len(times):
                        return _day_index(y, mo, d) * 1440 + times[j]
                    i += 1
                if i < len(days):
                    return _day_index(y, mo, days[i]) * 1440 + times[0]
        mo += 1
        if mo == 13:
            mo, y = 1, y + 1
            if y > 9999:
                return None
        d, mod = 1, 0
    return None


def _day_index(y: int, mo: int, d: int) -> int:
    return date(y, mo, d).toordinal() - EPOCH_ORDINAL
