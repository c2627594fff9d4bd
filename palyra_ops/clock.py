"""Injectable time.

Scheduling code never calls `time.time()` directly; it takes a `Clock`, so tests can drive DST days,
outages and backlogs deterministically while the daemon uses the system clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, tzinfo
from typing import Protocol


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
    if dt.tzinfo is None:
        raise ValueError("naive datetime: an offset or zone is required")
    return int(dt.timestamp() * 1000) if dt.microsecond % 1000 else int(dt.timestamp()) * 1000 + dt.microsecond // 1000


def from_ms(ms: int, tz: tzinfo = UTC) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def rfc3339(ms: int | None, tz: tzinfo = UTC) -> str | None:
    """RFC 3339 with offset (never `Z`-less naive), milliseconds only when non-zero."""
    if ms is None:
        return None
    dt = from_ms(ms, tz)
    if ms % 1000:
        return dt.isoformat(timespec="milliseconds")
    return dt.isoformat(timespec="seconds")


def parse_rfc3339(text: str) -> int:
    """Parse RFC 3339 text that carries an offset (or `Z`); raises ValueError otherwise."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return to_ms(dt)
