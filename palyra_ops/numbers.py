"""Integers typed by people (query parameters, CLI flags, config values): ASCII digits, in full.

Python's `int()` accepts more than an operator means: `int("٣")` is 3, `int(" 7\n")` is 7,
`int("1_000")` is 1000, and a string of over 4,300 digits raises a ValueError whose message talks
about `sys.set_int_max_str_digits`. Every user-facing integer goes through `parse_int` instead, which
accepts an optional `-` and ASCII digits only and checks the range before converting.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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
