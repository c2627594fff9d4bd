"""Duration strings (`500ms`, `30s`, `1h30m`, `1d`) as used throughout routine files.

Durations are kept as written in the canonical model (so a plan shows what the user wrote) and
parsed to integer milliseconds where time math needs them.

Valid range (docs/format.md): the syntax is ASCII only and matched in full (`30s\\n` and `٣٠s` are not
durations), and a duration is at most `MAX_DURATION_MS` (36500d, about 100 years) wherever it is
written, so `now ± duration` stays a date Python, SQLite and JSON can all represent; routine and
channel durations have the tighter per-field bounds of `ROUTINE_DURATION_BOUNDS`. A number with
more digits than any valid duration has is refused before it is converted (Python refuses to turn
strings of over 4,300 digits into an int, and would take quadratic time on long ones anyway).
"""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)", re.ASCII)
#: the schema uses the same pattern, so anything the schema accepts parses here. `[0-9]`, not `\d`
#: (Unicode digits in Python), and `$(?!\n)`: in Python's `re.search` (jsonschema) a bare `$` also
#: matches before a final newline; in ECMA regex (editors) the lookahead is a no-op.
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$(?!\n)"
_FULL = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d))+", re.ASCII)
#: the longest duration accepted anywhere (memory ttl, `since=`, daemon intervals, ...)
MAX_DURATION_MS = 36_500 * 86_400_000
#: no valid duration has a number this long (36500d is 3153600000000ms: 13 digits)
_MAX_DIGITS = 16
#: (minimum, maximum) in ms of each duration field of a routine or channel spec
MAX_ROUTINE_DURATION_MS = 366 * 86_400_000
ROUTINE_DURATION_BOUNDS: dict[str, tuple[int, int]] = {
    "every": (1000, MAX_ROUTINE_DURATION_MS),
    "misfire_grace": (0, MAX_ROUTINE_DURATION_MS),
    "retry.backoff": (0, MAX_ROUTINE_DURATION_MS),
    "jitter": (0, MAX_ROUTINE_DURATION_MS),
    "cooldown": (0, MAX_ROUTINE_DURATION_MS),
    "timeout": (1, MAX_ROUTINE_DURATION_MS),
    "channel.timeout": (1, MAX_ROUTINE_DURATION_MS),
}


class DurationError(ValueError):
    """Not a duration string. A ValueError, so every caller's existing handling applies."""


class DurationRangeError(DurationError):
    """A well-formed duration outside its valid range."""


def show(text: str) -> str:
    """`repr` of user text, shortened: a 5,000-digit value must not become a 5,000-character message."""
    if len(text) <= 40:
        return repr(text)
    return repr(text[:24] + "…") + f" ({len(text)} characters)"


def parse_duration_ms(text: str, *, max_ms: int = MAX_DURATION_MS) -> int:
    """Parse a duration string to milliseconds.

    Raises DurationError for anything but the full ASCII syntax, DurationRangeError above `max_ms`.
    """
    if not isinstance(text, str) or not _FULL.fullmatch(text):
        shown = show(text) if isinstance(text, str) else repr(text)
        raise DurationError(f"invalid duration {shown}: expected e.g. 500ms, 30s, 5m, 2h, 1d or 1h30m")
    parts = _PART.findall(text)
    if any(len(n) > _MAX_DIGITS for n, _ in parts):
        raise DurationRangeError(f"duration {show(text)} is too long (at most {format_duration_ms(max_ms)})")
    ms = sum(int(n) * _UNIT_MS[u] for n, u in parts)
    if ms > max_ms:
        raise DurationRangeError(f"duration {show(text)} is too long (at most {format_duration_ms(max_ms)})")
    return ms


_PROBLEMS: dict[tuple[str, str], str | None] = {}
_PROBLEMS_MAX = 4096


def duration_problem(field: str, value: object) -> str | None:
    """Why `value` is not valid for routine/channel duration `field` (a ROUTINE_DURATION_BOUNDS key).

    Memoised for short texts: validating a directory asks about the same few spellings (`30s`,
    `10m`) five times per routine."""
    if not isinstance(value, str) or len(value) > 64:
        return _duration_problem(field, value)
    key = (field, value)
    if key in _PROBLEMS:
        return _PROBLEMS[key]
    problem = _duration_problem(field, value)
    if len(_PROBLEMS) < _PROBLEMS_MAX:
        _PROBLEMS[key] = problem
    return problem


def _duration_problem(field: str, value: object) -> str | None:
    lo, hi = ROUTINE_DURATION_BOUNDS[field]
    try:
        ms = parse_duration_ms(value, max_ms=hi)  # type: ignore[arg-type]
    except DurationRangeError:
        return f"{show(value)} is too long: at most {format_duration_ms(hi)}"  # type: ignore[arg-type]
    except DurationError as exc:
        return str(exc)
    if ms < lo:
        return f"must be at least {format_duration_ms(lo)}"
    return None


def format_duration_ms(ms: int) -> str:
    """Render milliseconds back in the same notation (largest units first)."""
    if ms == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNIT_MS[unit]
        if ms >= size:
            n, ms = divmod(ms, size)
            out.append(f"{n}{unit}")
    return "".join(out)
