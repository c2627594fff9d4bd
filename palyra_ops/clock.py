"""Injectable time.

Scheduling code never calls `time.time()` directly; it takes a `Clock`, so tests can drive DST days,
outages and backlogs deterministically while the daemon uses the system clock.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from palyra_ops.durations import show

#: Valid instants (docs/format.md): 1970-01-01T00:00:00Z up to, not including, 9999-12-31T00:00:00Z.
#: The day of margin keeps the local reading of every valid instant in any UTC offset (all are under
#: 24 h) inside year 9999, the last year `datetime` has; nothing valid lies before the Unix epoch.
MIN_INSTANT_MS = 0
MAX_INSTANT_MS = 253_402_214_400_000 - 1  # 9999-12-30T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# RFC 3339 date-time, ASCII only, matched in full (the schema's `at` pattern says the same)
_RFC3339 = re.compile(
    r"(?P<dt>[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2})(?P<frac>\.[0-9]+)?"
    r"(?P<off>[Zz]|[+-][0-9]{2}:[0-9]{2})?",
    re.ASCII,
)


class InstantError(ValueError):
    """Not a usable instant. A ValueError, so every caller's existing handling applies."""


class InstantRangeError(InstantError):
    """A well-formed instant outside MIN_INSTANT_MS..MAX_INSTANT_MS."""


def check_instant(ms: int, text: str | None = None) -> int:
    """`ms` itself when it is a valid instant; InstantRangeError (naming `text`) otherwise."""
    if not MIN_INSTANT_MS <= ms <= MAX_INSTANT_MS:
        what = show(text) if text is not None else "the instant"
        raise InstantRangeError(
            f"{what} is out of range: instants must lie between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z"
        )
    return ms


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current instant as integer Unix milliseconds."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | int) -> None:
        self._ms = start if isinstance(start, int) else to_ms(start)

    def now_ms(self) -> int:
        return self._ms

    def set(self, when: datetime | int) -> None:
        self._ms = when if isinstance(when, int) else to_ms(when)

    def advance(self, ms: int) -> None:
        self._ms += ms


def to_ms(dt: datetime) -> int:
    """Unix milliseconds (sub-millisecond digits truncated); exact integer arithmetic, no overflow."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: an offset or zone is required")
    return (dt - _EPOCH) // _MS


def from_ms(ms: int, tz: tzinfo = UTC) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000, tz)
    except (OverflowError, OSError, ValueError):
        raise InstantRangeError(f"{ms} ms is not a representable instant") from None


def rfc3339(ms: int | None, tz: tzinfo = UTC) -> str | None:
    """RFC 3339 with offset (never `Z`-less naive), milliseconds only when non-zero."""
    if ms is None:
        return None
    dt = from_ms(ms, tz)
    if ms % 1000:
        return dt.isoformat(timespec="milliseconds")
    return dt.isoformat(timespec="seconds")


def parse_rfc3339(text: str) -> int:
    """RFC 3339 text with an offset (or `Z`) → Unix ms within the valid range.

    Raises InstantError saying what is wrong (no offset, not RFC 3339, not a real date), and
    InstantRangeError for instants outside MIN_INSTANT_MS..MAX_INSTANT_MS.
    """
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        shown = show(text) if isinstance(text, str) else repr(text)
        raise InstantError(f"{shown} is not an RFC 3339 date-time (expected e.g. 2026-12-24T18:00:00+01:00)")
    if m.group("off") is None:
        raise InstantError(f"{show(text)} has no UTC offset")
    off = m.group("off")
    if off not in "Zz" and (int(off[1:3]) > 23 or int(off[4:6]) > 59):
        raise InstantError(f"{show(text)} has no valid UTC offset ({off}; offsets run from -23:59 to +23:59)")
    iso = m.group("dt") + (m.group("frac") or "")[:7] + ("+00:00" if off in "Zz" else off)
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError as exc:  # month 13, Feb 30, hour 24, offset +24:00, ...
        raise InstantError(f"{show(text)} is not a valid date-time: {exc}") from None
    return check_instant(to_ms(dt), text)
