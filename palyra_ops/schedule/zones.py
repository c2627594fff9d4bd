"""Time zones as the scheduler needs them: name resolution, offsets, and where the offset changes.

Everything works on integer Unix milliseconds and "wall minutes" (minutes since 1970-01-01 00:00 of a
naive local calendar), because cron expressions describe local wall-clock times while the journal
stores instants. The mapping between the two is the only place DST can bite, so it lives here, in one
place, and is done with `zoneinfo` alone (no private attributes), which keeps it correct for every
tzdata release and Python version.

`zoneinfo` does not expose a zone's transition list, so transitions are found by probing offsets once
per (zone, year) and bisecting to the exact second; the result is cached. Real transitions are at
least weeks apart, so a daily probe cannot miss one (two changes within 24 h that cancel out are not
representable in tzdata's modern rules and would not matter to a schedule anyway).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

MINUTE_MS = 60_000
DAY_MS = 86_400_000
_EPOCH_NAIVE = datetime(1970, 1, 1)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

#: the instants (seconds) datetime can show in any zone: a day inside years 1 and 9999
_FIRST_S = int((datetime(1, 1, 2) - _EPOCH_NAIVE).total_seconds())
_LAST_S = int((datetime(9999, 12, 30) - _EPOCH_NAIVE).total_seconds())
#: a segment bound used when a zone has no transition in the next two years (fixed offset zones)
_NO_TRANSITION_YEARS = 2


def resolve_zone(name: str) -> tzinfo:
    """Turn a routine's `timezone` value into a tzinfo; raises ValueError with a user-facing message.

    `utc` is the fixed UTC zone (fast path: no transitions to look up), `local` is the machine's zone
    (from `TZ`, else `/etc/localtime`), anything else must be an IANA name known to the system tz
    database or the `tzdata` package.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"time zone must be a non-empty string, got {name!r}")
    if name == "utc":
        return UTC
    if name == "local":
        return _local_zone(os.environ.get("TZ"))
    return _iana_zone(name)


def check_timezone(name: str) -> str | None:
    """The error message for an unusable zone name, or None when it resolves."""
    try:
        resolve_zone(name)
    except ValueError as exc:
        return str(exc)
    return None


def zone_label(name: str, zone: tzinfo) -> str:
    """How notes name a zone: the IANA name, with the real zone spelled out for `local`."""
    if name == "local":
        key = getattr(zone, "key", None)
        return f"local ({key})" if key else "local"
    return "UTC" if name == "utc" else name


@lru_cache(maxsize=512)
def _iana_zone(name: str) -> tzinfo:
    # ZoneInfo accepts some path-like keys and raises ValueError for others; refuse them up front so
    # the message is the same for every bad name and nothing outside the tz database is ever opened.
    if name.startswith("/") or ".." in name.split("/") or "\\" in name or "\x00" in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, IsADirectoryError):
        hint = _suggest(name)
        raise ValueError(
            f"unknown time zone {name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
        ) from None


def _suggest(name: str) -> str | None:
    """A case-insensitive match, because `europe/prague` is the typo people actually make."""
    lowered = name.lower()
    for candidate in sorted(_known_zones()):
        if candidate.lower() == lowered:
            return candidate
    return None


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


@lru_cache(maxsize=8)
def _local_zone(tz_env: str | None) -> tzinfo:
    """The machine's zone, keyed by `$TZ` so a changed environment is honoured.

    A DST-aware ZoneInfo is preferred over `datetime.astimezone()`'s fixed offset, which would be right
    only until the next transition.
    """
    if tz_env:
        spec = tz_env[1:] if tz_env.startswith(":") else tz_env
        if spec.startswith("/"):
            try:
                with open(spec, "rb") as fh:
                    return ZoneInfo.from_file(fh, key=spec)
            except (OSError, ValueError):
                pass
        else:
            try:
                return ZoneInfo(spec)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                pass
        # a POSIX rule string such as "CET-1CEST,M3.5.0,M10.5.0/3": fall through to the system view
    localtime = Path("/etc/localtime")
    try:
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with localtime.open("rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        pass
    if tz_env:
        import time

        return timezone(timedelta(seconds=-time.timezone))
    return UTC


def is_fixed(zone: tzinfo) -> bool:
    """True when the zone's offset never changes, so wall time maps to instants by one subtraction."""
    return zone is UTC or isinstance(zone, timezone)


def offset_ms(zone: tzinfo, instant_ms: int) -> int:
    """UTC offset in effect at an instant (transitions fall on whole seconds, so seconds suffice)."""
    if zone is UTC:
        return 0
    if isinstance(zone, timezone):
        off = zone.utcoffset(None)
        return int(off.total_seconds() * 1000)
    # beyond what datetime can hold, the offset at the edge stands in: no OverflowError from here
    second = min(max(instant_ms // 1000, _FIRST_S), _LAST_S)
    dt = datetime.fromtimestamp(second, zone)
    off = dt.utcoffset()
    assert off is not None
    return (off.days * 86_400 + off.seconds) * 1000 + off.microseconds // 1000


def wall_ms(zone: tzinfo, instant_ms: int) -> int:
    """Local wall-clock reading of an instant, as milliseconds on the naive local calendar."""
    return instant_ms + offset_ms(zone, instant_ms)


def wall_datetime(wall_minute: int) -> datetime:
    return _EPOCH_NAIVE + timedelta(minutes=wall_minute)


def _offset_s(zone: tzinfo, second: int) -> int:
    off = datetime.fromtimestamp(min(max(second, _FIRST_S), _LAST_S), zone).utcoffset()
    assert off is not None
    return off.days * 86_400 + off.seconds


@lru_cache(maxsize=2048)
def transitions_in_year(zone: tzinfo, year: int) -> tuple[int, ...]:
    """Instants (ms) in UTC-year `year` at which the zone's UTC offset changes."""
    if is_fixed(zone):
        return ()
    try:
        start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
        end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    except (ValueError, OverflowError):
        return ()
    out: list[int] = []
    # start one second early so a change at exactly 00:00:00Z on Jan 1 is seen by this year
    prev_s = start - 1
    prev_off = _offset_s(zone, prev_s)
    probe = prev_s
    while probe < end - 1:
        probe = min(probe + 86_400, end - 1)
        off = _offset_s(zone, probe)
        if off != prev_off:
            lo, hi = prev_s, probe  # offset(lo) == prev_off, offset(hi) != prev_off
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset_s(zone, mid) == prev_off:
                    lo = mid
                else:
                    hi = mid
            out.append(hi * 1000)
            prev_off = off
        prev_s = probe
    return tuple(out)


def _utc_year(instant_ms: int) -> int:
    return (datetime(1970, 1, 1) + timedelta(milliseconds=instant_ms)).year


def next_transition_after(zone: tzinfo, instant_ms: int, years: int = _NO_TRANSITION_YEARS) -> int | None:
    """The first real offset change strictly after `instant_ms`, looking `years` UTC years ahead."""
    if is_fixed(zone):
        return None
    year = _utc_year(instant_ms)
    for y in range(year, year + years + 1):
        trans = transitions_in_year(zone, y)
        i = bisect_right(trans, instant_ms)
        if i < len(trans):
            return trans[i]
    return None


def segment_end(zone: tzinfo, instant_ms: int) -> int | None:
    """An instant > `instant_ms` before which the offset stays what it is at `instant_ms`.

    Either the next transition or, for zones that have none coming, a far bound so callers' loops
    stay finite; None for fixed zones (the offset never changes).
    """
    if is_fixed(zone):
        return None
    nxt = next_transition_after(zone, instant_ms)
    if nxt is not None:
        return nxt
    year = _utc_year(instant_ms) + _NO_TRANSITION_YEARS + 1
    return int(datetime(min(year, 9999), 1, 1, tzinfo=UTC).timestamp()) * 1000


def transitions_between(zone: tzinfo, after_ms: int, until_ms: int) -> list[int]:
    """Real offset changes in (after_ms, until_ms]."""
    out: list[int] = []
    if is_fixed(zone) or until_ms <= after_ms:
        return out
    for y in range(_utc_year(after_ms), _utc_year(until_ms) + 1):
        out.extend(t for t in transitions_in_year(zone, y) if after_ms < t <= until_ms)
    return out


def resolve_wall(zone: tzinfo, wall_minute: int) -> tuple[str, list[int]]:
    """Map one local wall-clock minute to instants.

    Returns ("ok", [instant]), ("fold", [first, second]) when the wall time happens twice (fall back),
    or ("gap", [transition]) when it does not exist (spring forward); the gap's transition instant is
    the first instant after the gap, i.e. where `gap: shift` lands.
    """
    w_ms = wall_minute * MINUTE_MS
    if is_fixed(zone):
        return "ok", [w_ms - offset_ms(zone, 0)]
    naive = wall_datetime(wall_minute)
    o0 = naive.replace(tzinfo=zone).utcoffset()
    o1 = naive.replace(tzinfo=zone, fold=1).utcoffset()
    assert o0 is not None and o1 is not None
    i0 = w_ms - int(o0.total_seconds()) * 1000
    i1 = w_ms - int(o1.total_seconds()) * 1000
    if i0 == i1:
        return "ok", [i0]
    if i0 < i1:
        return "fold", [i0, i1]
    # PEP 495: in a gap fold=0 reads the time with the offset before the change, fold=1 with the one
    # after, so the change happens in (i1, i0].
    trans = next_transition_after(zone, i1)
    if trans is None or trans > i0:  # pragma: no cover - tzdata without the probed transition
        trans = i0
    return "gap", [trans]


def format_wall(zone: tzinfo, instant_ms: int) -> str:
    """`03:00+02:00`: a time of day with the offset, which is what tells two fold instants apart."""
    dt = datetime.fromtimestamp(instant_ms // 1000, zone)
    off = dt.strftime("%z")
    return f"{dt:%H:%M}{off[:3]}:{off[3:5]}" if off else f"{dt:%H:%M}"


def local_date(zone: tzinfo, instant_ms: int) -> date:
    return date.fromordinal(EPOCH_ORDINAL + wall_ms(zone, instant_ms) // DAY_MS)
