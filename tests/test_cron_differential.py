"""Cron semantics equal Debian/Vixie cron (SPEC §5): differential test against cronsim, plus pins.

The differential part runs a few hundred random cases with a fixed seed (bench/cron_differential.py
runs 100,000); tests/cron_oracle.py explains how cases are compared and which DST differences from
cronsim are documented policy choices or cronsim quirks.
"""

from __future__ import annotations

from datetime import UTC, datetime

import cron_oracle
import pytest

from palyra_ops.clock import parse_rfc3339, rfc3339
from palyra_ops.schedule import CronError, Schedule, check_schedule, compile_cron
from palyra_ops.schedule import cron as cron_module


def ms(text: str) -> int:
    return parse_rfc3339(text)


def fires(expr: str, start: str, n: int = 4, tz: str = "utc") -> list[str | None]:
    s = Schedule.from_spec({"cron": expr, "timezone": tz})
    zone = cron_oracle.ZoneInfo(tz) if tz != "utc" else UTC
    return [rfc3339(f, zone) for f in s.next_n(ms(start), n)]


def test_differential_against_cronsim_fixed_seed() -> None:
    result = cron_oracle.run(400, seed=20260309)
    assert result.mismatches == []
    assert set(result.classes) <= {"exact", "dst_exact", "both_invalid", *cron_oracle.DST_CLASSES}
    # the sample must really exercise all three comparisons
    assert result.classes["exact"] > 100
    assert result.classes["dst_exact"] > 100
    assert result.classes["both_invalid"] > 5


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # single-value ranges: croniter >= 5 expands these to '*' (every minute / hour / day)
        ("57-57 * * * *", "2026-01-01T00:00:00Z", ["2026-01-01T00:57:00+00:00", "2026-01-01T01:57:00+00:00"]),
        ("57-57/1 * * * *", "2026-01-01T00:00:00Z", ["2026-01-01T00:57:00+00:00", "2026-01-01T01:57:00+00:00"]),
        ("5-5/2 * * * *", "2026-01-01T00:00:00Z", ["2026-01-01T00:05:00+00:00", "2026-01-01T01:05:00+00:00"]),
        ("0 23-23 * * *", "2026-01-01T00:00:00Z", ["2026-01-01T23:00:00+00:00", "2026-01-02T23:00:00+00:00"]),
        ("0 0 31-31 * *", "2026-01-01T00:00:00Z", ["2026-01-31T00:00:00+00:00", "2026-03-31T00:00:00+00:00"]),
        ("0 0 * * 5-5", "2026-01-01T00:00:00Z", ["2026-01-02T00:00:00+00:00", "2026-01-09T00:00:00+00:00"]),
        # Vixie's day rule: a day field starting with '*' makes both fields apply (AND) ...
        ("0 0 */2 * 1", "2026-01-01T00:00:00Z", ["2026-01-05T00:00:00+00:00", "2026-01-19T00:00:00+00:00"]),
        # ... while the same days written without '*' make either field enough (OR)
        ("0 0 1-31/2 * 1", "2026-01-01T00:00:00Z", ["2026-01-03T00:00:00+00:00", "2026-01-05T00:00:00+00:00"]),
        ("0 0 13 * 5", "2026-02-01T00:00:00Z", ["2026-02-06T00:00:00+00:00", "2026-02-13T00:00:00+00:00"]),
        ("0 0 * * 7", "2026-01-01T00:00:00Z", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
        ("0 12 * JAN-feb/1 Sun", "2026-01-30T00:00:00Z", ["2026-02-01T12:00:00+00:00", "2026-02-08T12:00:00+00:00"]),
        # `a/n` runs to the field's end; in day-of-week that end is 7, i.e. Sunday
        ("0 0 * * 5/2", "2026-01-01T00:00:00Z", ["2026-01-02T00:00:00+00:00", "2026-01-04T00:00:00+00:00"]),
        ("@hourly", "2026-01-01T00:30:00Z", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
    ],
)
def test_vixie_semantics_pinned(expr: str, start: str, expected: list[str]) -> None:
    assert fires(expr, start, 2) == expected
    tz = UTC
    theirs = cron_oracle.cronsim_fires(expr, "utc", ms(start), 2)
    assert [datetime.fromtimestamp(t / 1000, tz).isoformat() for t in theirs] == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("50-10 * * * *", "minute field '50-10' is a backward range; write it as a list of ranges"),
        (
            "0 0 * * fri-mon",
            "day-of-week field 'fri-mon' is a backward range; write it as a list of ranges (a week-end is 6-7 or sat,sun)",
        ),
        ("0 0 ? * *", "'?' is not Vixie cron syntax; write '*'"),
        ("0 0 * * monday", "day-of-week field 'monday' is not a number, name, range, list or step in 0-7"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty list element"),
        ("*-5 * * * *", "minute field '*-5' is not a number, name, range, list or step in 0-59"),
        ("\u0665 * * * *", "minute field '\u0665': character '\u0665' is not cron syntax"),  # Arabic-Indic 5
        ("0\u00a09 * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("* * * * *\n", "day-of-week field '*\\n': character '\\n' is not cron syntax"),
        ("99999 * * * *", "minute field '99999' is out of range 0-59"),
        (f"*/{'9' * 5000} * * * *", f"minute field '*/{'9' * 5000}' is out of range 0-59"),
        ("0 0 * * 5#6", "day-of-week field '5#6': the occurrence after '#' must be 1-5"),
    ],
)
def test_refused_with_a_clear_message(expr: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        compile_cron(expr)
    assert str(info.value) == message


def test_values_never_come_from_croniter_and_its_refusal_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard: croniter parses (second opinion), our expansion gives the values."""
    uncached = compile_cron.__wrapped__  # type: ignore[attr-defined]

    def expand_like_croniter_7(expr: str) -> tuple[list[list[object]], dict]:
        return [["*"]] * 5, {}  # what croniter 5..7 answers for "57-57 * * * *"

    monkeypatch.setattr(cron_module.croniter, "expand", staticmethod(expand_like_croniter_7))
    c = uncached("57-57 * * * *")
    assert c.minutes == (57,) and c.hours == tuple(range(24))

    def refuse(expr: str) -> None:
        raise ValueError("[57-57 * * * *] is not acceptable")

    monkeypatch.setattr(cron_module.croniter, "expand", staticmethod(refuse))
    with pytest.raises(CronError, match=r"^not accepted by croniter: \[57-57 \* \* \* \*\] is not acceptable$"):
        uncached("57-57 * * * *")


def test_canonical_form_tells_the_day_rules_apart() -> None:
    assert compile_cron("0 0 */2 * 1").canonical != compile_cron("0 0 1-31/2 * 1").canonical
    assert compile_cron("0 0 1-31 * 1").canonical == compile_cron("0 0 * * *").canonical  # OR: every day
    assert compile_cron("0 0 * * 1").canonical == "0 0 * * 1"
    assert compile_cron("0 0 13 * 5").canonical == "0 0 13 * 5"
    assert compile_cron("57-57 * * * *").canonical == "57 * * * *"


def test_a_step_hour_keeps_cadence_even_when_it_expands_to_one_value() -> None:
    # America/Havana jumps from 00:00 to 01:00 on 2026-03-08. `30 */24` is 00:30 only, but written
    # as a step (Debian: a wildcard job), so it keeps real-time cadence: no 00:30 that day.
    assert not compile_cron("30 */24 * * *").fixed_time
    assert fires("30 */24 * * *", "2026-03-07T00:00:00-05:00", 2, "America/Havana") == [
        "2026-03-07T00:30:00-05:00",
        "2026-03-09T00:30:00-04:00",
    ]
    # written as a specific hour it is fixed-time: shifted to the end of the gap (gap: shift)
    assert compile_cron("30 0 * * *").fixed_time
    assert fires("30 0 * * *", "2026-03-07T00:00:00-05:00", 2, "America/Havana") == [
        "2026-03-07T00:30:00-05:00",
        "2026-03-08T01:00:00-04:00",
    ]


def test_check_schedule_reports_the_new_refusals() -> None:
    assert check_schedule({"cron": "57-57 * * * *"}) == []
    assert check_schedule({"cron": "0 0 30 2 */3"}) == [("cron", "'0 0 30 2 */3' never fires")]
    assert check_schedule({"cron": "0 0 ? * MON"}) == [
        ("cron", "'0 0 ? * MON' is not a valid cron expression: '?' is not Vixie cron syntax; write '*'")
    ]
