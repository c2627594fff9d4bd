"""Duration strings (`500ms`, `30s`, `1h30m`, `1d`) as used throughout routine files.

Durations are kept as written in the canonical model (so a plan shows what the user wrote) and
parsed to integer milliseconds where time math needs them.
"""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
#: the schema uses the same pattern, so anything the schema accepts parses here
DURATION_PATTERN = r"^(\d+(ms|s|m|h|d))+$"
_FULL = re.compile(DURATION_PATTERN)


def parse_duration_ms(text: str) -> int:
    """Parse a duration string to milliseconds; raises ValueError with the offending text."""
    if not isinstance(text, str) or not _FULL.match(text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 500ms, 30s, 5m, 2h, 1d or 1h30m")
    return sum(int(n) * _UNIT_MS[u] for n, u in _PART.findall(text))


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
