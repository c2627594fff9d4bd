"""Integers typed by people (query parameters, CLI flags, config values): ASCII digits, in full.

Python's `int()` accepts more than an operator means: `int("٣")` is 3, `int(" 7\n")` is 7,
`int("1_000")` is 1000, and a string of over 4,300 digits raises a ValueError whose message talks
about `sys.set_int_max_str_digits`. Every user-facing integer goes through `parse_int` instead, which
accepts an optional `-` and ASCII digits only and checks the range before converting.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from palyra_ops.clock import InstantRangeError, parse_rfc3339
from palyra_ops.durations import DurationRangeError, parse_duration_ms

_INT = re.compile(r"-?[0-9]+", re.ASCII)


class IntegerError(ValueError):
    """Not an integer in range. A ValueError, so every caller's existing handling applies."""


def parse_int(text: str, lo: int, hi: int, what: str = "value") -> int:
    """`text` as an int in lo..hi; IntegerError naming `what` otherwise."""
    if not isinstance(text, str) or not _INT.fullmatch(text):
        shown = repr(text) if not isinstance(text, str) or len(text) <= 40 else repr(text[:24] + "…")
        raise IntegerError(f"{what}: {shown} is not an integer")
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > max(len(str(abs(lo))), len(str(abs(hi)))):
        raise IntegerError(f"{what}: must be between {lo} and {hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise IntegerError(f"{what}: must be between {lo} and {hi}, got {value}")
    return value


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def cli_int(lo: int = INT64_MIN, hi: int = INT64_MAX) -> Callable[[str], int]:
    """An argparse `type=` for parse_int: a bad value is argparse's one-line usage error (the
    commands check their own, tighter, ranges afterwards)."""
    import argparse

    def convert(text: str) -> int:
        try:
            return parse_int(text, lo, hi, "value")
        except IntegerError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None

    return convert


# a `+02:00` offset sent unencoded in a query string arrives as ` 02:00` (`+` means a space there)
_SPACED_OFFSET = re.compile(r"([0-9]) ([0-9][0-9]:?[0-9][0-9])$(?!\n)", re.ASCII)


def parse_when(text: str, now_ms: int, what: str, *, from_query: bool = False) -> int:
    """An instant typed by a person, as `--since` and `?since=` take it: RFC 3339 with an offset, or
    a duration meaning that long ago (`24h`). ValueError naming `what` otherwise.

    `from_query`: the text came from a query string, so an offset whose `+` became a space is read
    back as the offset it was meant to be rather than refused.
    """
    try:
        return now_ms - parse_duration_ms(text)
    except DurationRangeError as exc:
        raise ValueError(f"{what}: {exc}") from None
    except ValueError:
        pass
    try:
        return parse_rfc3339(_SPACED_OFFSET.sub(r"\1+\2", text) if from_query else text)
    except InstantRangeError as exc:
        raise ValueError(f"{what}: {exc}") from None
    except ValueError:
        raise ValueError(f"{what}: {text!r} is neither an RFC 3339 instant with offset nor a duration like 24h") from None
