"""Cron expressions compiled once into sets, and "next matching wall minute" on a naive calendar.

Semantics are Vixie/Debian cron's (SPEC §5), and the values of every field are expanded here, term by
term, from a strict ASCII grammar. croniter (a required library, SPEC §1) still parses each expression
as a second, independent parser: an expression must satisfy both. Its *values* are not used, because
croniter >= 5 mis-expands single-value ranges (`croniter.expand("57-57 * * * *")` is `*` in 5.0.1,
6.0.0 and 7.0.0, so is `0 23-23 * * *`, `5-5/2` becomes `*/2`, and `50-10` wraps around), and because
its expansion loses what Vixie's day rule needs: whether a day field *starts with* `*`.

The day rule (Vixie's DOM_STAR/DOW_STAR): a day matches if day-of-month **and** day-of-week match when
either field starts with `*`, and if day-of-month **or** day-of-week matches otherwise. So
`0 0 */2 * 1` fires on Mondays that are odd days, `0 0 13 * 5` on every 13th and every Friday.

The search for the next match is done on plain integers: the scheduler must map wall times to instants
itself to get the DST rules of SPEC §5 right, and an integer search over precomputed sets is several
times faster than iterating croniter objects, which matters when a plan previews 10,000 routines.
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
#: (name, lowest, highest) per field; day-of-week allows 7 (Sunday) as Vixie cron does
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
)
# Full-match, ASCII-only grammar (re.ASCII: `[a-z]` under IGNORECASE must not admit e.g. 'ſ' or 'K').
_VALUE = r"[0-9]+|[a-z]+"
_RANGE_TERM = re.compile(rf"(?P<a>\*|{_VALUE})(?:-(?P<b>{_VALUE}))?(?:/(?P<step>[0-9]+))?", re.ASCII | re.I)
_NTH_TERM = re.compile(rf"(?P<wd>{_VALUE})#(?P<n>[0-9]+)", re.ASCII | re.I)  # 5#2: second Friday
_LAST_WD_TERM = re.compile(r"l(?P<wd>[0-9]+)", re.ASCII | re.I)  # L5: last Friday (croniter's spelling)
_FIELD_CHARS = re.compile(r"[0-9A-Za-z*,/#-]+", re.ASCII)
_NEAREST_WEEKDAY = re.compile(r"(^|[,\-/])([0-9]+w|w[0-9]*|lw)", re.ASCII | re.I)
_HASHED = re.compile(r"(^|[,\-/(])h", re.ASCII | re.I)
#: digits beyond this are out of range whatever they say (and never reach int() on a huge string)
_MAX_DIGITS = 4
#: how far ahead a search looks before declaring "does not fire again" (covers Feb 29 on a weekday)
_SEARCH_MONTHS = 12 * 100
_MAX_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class CronError(ValueError):
    """A cron expression that does not parse; the message is the detail after "is not valid: "."""


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: one value set per field plus what Vixie's day rule looks at."""

    expr: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    times: tuple[int, ...]  # minute-of-day values, ascending
    dom: frozenset[int]  # plain day-of-month values (empty when the field is only `L`)
    dom_last: bool  # `L`: the last day of the month
    months: frozenset[int]
    dow: frozenset[int]  # plain weekdays, 0 = Sunday (empty when the field is only occurrences)
    nth: tuple[tuple[int, tuple[int | str, ...]], ...]  # weekday -> occurrences (1..5 or "l")
    day_and: bool  # a day field starts with `*`: both must match (else either)
    never: bool  # statically impossible (e.g. Feb 31)
    wild: bool  # the minute or the hour field starts with `*` (Debian cron's "wildcard job")

    @property
    def fixed_time(self) -> bool:
        """SPEC §5's "fixed-time" routine: a specific minute and hour, so at most one fire per day.

        A wildcard or step field keeps real-time cadence even when it expands to one value
        (`37 */30 * * *` is 00:37 only, but written as a step): that is also where Debian cron draws
        its line between wildcard and fixed-time jobs.
        """
        return not self.wild and len(self.minutes) == 1 and len(self.hours) == 1

    @property
    def canonical(self) -> str:
        """Equal for expressions with equal meaning (`@daily` == `0 0 * * *`, `MON` == `1`)."""

        def fmt(values: frozenset[int] | tuple[int, ...], full: int) -> str:
            return "*" if len(values) == full else ",".join(str(v) for v in sorted(values))

        dom_full = len(self.dom) == 31 and not self.dom_last
        dow_full = len(self.dow) == 7 and not self.nth
        dom = ",".join([str(d) for d in sorted(self.dom)] + (["L"] if self.dom_last else []))
        dow = ",".join(str(d) for d in sorted(self.dow))
        if self.nth:
            dow = ",".join(f"{wd}#{','.join(str(n) for n in ns)}" for wd, ns in self.nth)
        if dom_full:
            dom = "*"
        if dow_full:
            dow = "*"
        days = f"{dom} {fmt(self.months, 12)} {dow}"
        if not self.day_and and (dom_full or dow_full):
            days = f"* {fmt(self.months, 12)} *"  # either-rule with one side always true: every day
        elif self.day_and and not dom_full and not dow_full:
            days += " &"  # both restricted but ANDed (`*/2 * 1`): differs from the OR of `1-31/2 * 1`
        return f"{fmt(self.minutes, 60)} {fmt(self.hours, 24)} {days}"


def _number(index: int, term: str, text: str, *, step: bool = False) -> int:
    """One number or name of `term`; messages quote the term, as written."""
    name, lo, hi = _FIELDS[index]
    if not text.isdigit():  # ASCII-only already (the term regexes are re.ASCII)
        value = None if step else _NAMES[index].get(text.lower())
        if value is None:
            raise CronError(f"{name} field {term!r} is not a number, name, range, list or step in {lo}-{hi}")
        return value
    if len(text) > _MAX_DIGITS:  # never int() a huge digit string
        raise CronError(f"{name} field {term!r} is out of range {lo}-{hi}")
    value = int(text)
    if step:
        if value == 0:
            raise CronError(f"{name} field {term!r} has a step of 0")
        return value
    if not lo <= value <= hi:
        raise CronError(f"{name} field {term!r} is out of range {lo}-{hi}")
    return value


def _expand_term(index: int, term: str) -> set[int]:
    """One list element (`*`, `5`, `mon`, `1-5`, `*/15`, `10-50/20`, `5/15`) → its values."""
    name, lo, hi = _FIELDS[index]
    m = _RANGE_TERM.fullmatch(term)
    if m is None or (m.group("a") == "*" and m.group("b") is not None):
        raise CronError(f"{name} field {term!r} is not a number, name, range, list or step in {lo}-{hi}")
    a, b, step_text = m.group("a"), m.group("b"), m.group("step")
    step = _number(index, term, step_text, step=True) if step_text is not None else 1
    if a == "*":
        start, end = lo, hi
    else:
        start = _number(index, term, a)
        # `a/n` means a-HIGHEST/n (croniter, cronie and cronsim agree; Vixie itself refuses it)
        end = _number(index, term, b) if b is not None else (hi if step_text is not None else start)
    if start > end:
        hint = " (a week-end is 6-7 or sat,sun)" if index == 4 else ""
        raise CronError(f"{name} field {term!r} is a backward range; write it as a list of ranges{hint}")
    return set(range(start, end + 1, step))


def _expand_field(index: int, text: str) -> tuple[set[int], bool, dict[int, set[int | str]]]:
    """A whole field → (plain values, `L` seen, weekday occurrences)."""
    name, lo, hi = _FIELDS[index]
    if not _FIELD_CHARS.fullmatch(text):
        bad = next((c for c in text if not _FIELD_CHARS.fullmatch(c)), text[:1])
        raise CronError(f"{name} field {text!r}: character {bad!r} is not cron syntax")
    values: set[int] = set()
    last = False
    nth: dict[int, set[int | str]] = {}
    for term in text.split(","):
        if term == "":
            raise CronError(f"{name} field {text!r} has an empty list element")
        if index == 2 and term.lower() == "l":
            last = True
            continue
        if index == 4:
            m = _NTH_TERM.fullmatch(term)
            if m is not None:
                digits = m.group("n")
                if len(digits) > 1 or not 1 <= int(digits) <= 5:
                    raise CronError(f"{name} field {term!r}: the occurrence after '#' must be 1-5")
                nth.setdefault(_number(index, term, m.group("wd")) % 7, set()).add(int(digits))
                continue
            m = _LAST_WD_TERM.fullmatch(term)
            if m is not None:
                nth.setdefault(_number(index, term, m.group("wd")) % 7, set()).add("l")
                continue
        values |= _expand_term(index, term)
    return values, last, nth


def _croniter_refuses(text: str) -> str:
    """croniter's verdict on the whole expression: "" when it parses, else its complaint."""
    try:
        croniter.expand(text)
    except Exception as exc:  # croniter raises several unrelated types for bad fields
        return str(exc) or type(exc).__name__
    return ""


def _split_fields(expr: object) -> list[str]:
    """The five fields of an expression or macro, refusing what is not Vixie cron syntax."""
    if not isinstance(expr, str):
        raise CronError(f"expected a string, got {type(expr).__name__}")
    text = expr.strip(" \t")
    if not text:
        raise CronError("the expression is empty")
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise CronError(f"unknown macro {text!r} (expected one of {', '.join(_MACROS)})")
        text = _MACROS[text.lower()]
    fields = re.split(r"[ \t]+", text)
    if len(fields) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    for i, f in enumerate(fields):
        if _HASHED.search(f):
            raise CronError(f"{_FIELDS[i][0]} field {f!r}: hashed 'H' values are not supported; use policies.jitter")
    if _NEAREST_WEEKDAY.search(fields[2]):
        raise CronError(f"day-of-month field {fields[2]!r}: nearest-weekday 'W' is not supported")
    if "?" in text:
        raise CronError("'?' is not Vixie cron syntax; write '*'")
    return fields


def _occurrences(fields: list[str], dow: frozenset[int], nth_map: dict[int, set[int | str]]) -> tuple[tuple[int, tuple[int | str, ...]], ...]:
    """Day-of-week '#'/'L' occurrences in a canonical order, where they stand alone."""
    if not nth_map:
        return ()
    if not fields[2].startswith("*"):
        raise CronError("day-of-week '#'/'L' occurrences cannot be combined with a day-of-month")
    if dow:
        raise CronError("day-of-week field mixes plain weekdays with '#'/'L' occurrences")
    return tuple(
        sorted((wd, tuple(sorted(ns, key=lambda n: (isinstance(n, str), str(n))))) for wd, ns in nth_map.items())
    )


@lru_cache(maxsize=4096)
def compile_cron(expr: str) -> Cron:
    """Parse a 5-field expression or macro; raises CronError saying which field is wrong and why."""
    fields = _split_fields(expr)
    expanded = [_expand_field(i, f) for i, f in enumerate(fields)]
    complaint = _croniter_refuses(" ".join(fields))
    if complaint:  # our grammar accepted it, the second parser did not: refuse rather than guess
        raise CronError(f"not accepted by croniter: {complaint}")
    minutes = tuple(sorted(expanded[0][0]))
    hours = tuple(sorted(expanded[1][0]))
    dom, dom_last = frozenset(expanded[2][0]), expanded[2][1]
    months = frozenset(expanded[3][0])
    dow = frozenset(d % 7 for d in expanded[4][0])
    nth = _occurrences(fields, dow, expanded[4][2])
    day_and = fields[2].startswith("*") or fields[4].startswith("*")
    # ANDed days need a day-of-month that some chosen month has (`0 0 30 2 *`, `0 0 31 4,6 *`)
    never = day_and and not dom_last and not any(d <= _MAX_MONTH_DAYS[m] for m in months for d in dom)
    return Cron(
        expr=expr,
        minutes=minutes,
        hours=hours,
        times=tuple(h * 60 + m for h in hours for m in minutes),
        dom=dom,
        dom_last=dom_last,
        months=months,
        dow=dow,
        nth=nth,
        day_and=day_and,
        never=never,
        wild=fields[0].startswith("*") or fields[1].startswith("*"),
    )


@lru_cache(maxsize=16384)
def month_days(cron: Cron, year: int, month: int) -> tuple[int, ...]:
    """Days of one month on which the cron's day rules match, ascending."""
    first_wd, ndays = calendar.monthrange(year, month)  # Monday = 0
    first_wd = (first_wd + 1) % 7  # cron: Sunday = 0
    out = []
    nth = dict(cron.nth)
    for d in range(1, ndays + 1):
        wd = (first_wd + d - 1) % 7
        dom_ok = d in cron.dom or (cron.dom_last and d == ndays)
        dow_ok = wd in cron.dow
        if not dow_ok and nth:
            occ = nth.get(wd, ())
            dow_ok = ((d - 1) // 7 + 1) in occ or ("l" in occ and d + 7 > ndays)
        if (dom_ok and dow_ok) if cron.day_and else (dom_ok or dow_ok):
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
    for _ in range(_SEARCH_MONTHS):
        found = _first_in_month(cron, y, mo, d, mod) if mo in cron.months else None
        if found is not None:
            return found
        mo += 1
        if mo == 13:
            mo, y = 1, y + 1
            if y > 9999:
                return None
        d, mod = 1, 0
    return None


def _first_in_month(cron: Cron, y: int, mo: int, d: int, mod: int) -> int | None:
    """The first matching wall minute of month y-mo from day `d` at minute-of-day `mod` on."""
    days = month_days(cron, y, mo)
    times = cron.times
    i = bisect_left(days, d)
    if i < len(days) and days[i] == d:
        j = bisect_left(times, mod)
        if j < len(times):
            return _day_index(y, mo, d) * 1440 + times[j]
        i += 1
    return _day_index(y, mo, days[i]) * 1440 + times[0] if i < len(days) else None


def _day_index(y: int, mo: int, d: int) -> int:
    return date(y, mo, d).toordinal() - EPOCH_ORDINAL
