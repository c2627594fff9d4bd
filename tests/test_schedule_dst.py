"""SPEC §5 DST acceptance: exact fire instants across gaps and repeated hours in several zones."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, timedelta

import pytest

from palyra_ops.clock import parse_rfc3339, rfc3339
from palyra_ops.schedule import Schedule, check_schedule, notes_for, preview, resolve_zone
from palyra_ops.schedule.zones import transitions_in_year


def ms(text: str) -> int:
    return parse_rfc3339(text)


def fires(expr: str, tz: str, start: str, end: str, dst: dict | None = None) -> list[str]:
    s = Schedule.from_spec({"cron": expr, "timezone": tz}, dst)
    zone = resolve_zone(tz)
    return [rfc3339(f, zone) for f in s.fires_between(ms(start), ms(end))]


# -- fixed-time cron in Europe/Prague ---------------------------------------------------------------


def test_prague_fixed_time_spring_forward_shifts_to_end_of_gap() -> None:
    assert fires("30 2 * * *", "Europe/Prague", "2026-03-28T00:00:00+01:00", "2026-03-30T23:59:00+02:00") == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_prague_fixed_time_fall_back_fires_once_at_first_occurrence() -> None:
    assert fires("30 2 * * *", "Europe/Prague", "2026-10-24T00:00:00+02:00", "2026-10-26T23:59:00+01:00") == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_prague_fold_both_fires_twice() -> None:
    got = fires(
        "30 2 * * *",
        "Europe/Prague",
        "2026-10-25T00:00:00+02:00",
        "2026-10-25T23:59:00+01:00",
        {"fold": "both"},
    )
    assert got == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]
    # the two are one real hour apart
    assert ms(got[1]) - ms(got[0]) == 3_600_000


def test_prague_fold_last_fires_at_second_occurrence() -> None:
    got = fires(
        "30 2 * * *",
        "Europe/Prague",
        "2026-10-25T00:00:00+02:00",
        "2026-10-25T23:59:00+01:00",
        {"fold": "last"},
    )
    assert got == ["2026-10-25T02:30:00+01:00"]


def test_prague_gap_skip_has_no_fire_that_day() -> None:
    got = fires(
        "30 2 * * *",
        "Europe/Prague",
        "2026-03-28T12:00:00+01:00",
        "2026-03-30T12:00:00+02:00",
        {"gap": "skip"},
    )
    assert got == ["2026-03-30T02:30:00+02:00"]


def test_fixed_time_at_the_gap_start_shifts_to_the_transition_instant() -> None:
    # 02:00 itself is the first wall minute that does not exist
    got = fires("0 2 * * *", "Europe/Prague", "2026-03-29T00:00:00+01:00", "2026-03-29T23:00:00+02:00")
    assert got == ["2026-03-29T03:00:00+02:00"]


def test_fixed_time_next_after_from_inside_the_fold() -> None:
    s = Schedule.from_spec({"cron": "30 2 * * *", "timezone": "Europe/Prague"}, {"fold": "last"})
    # asked from the first 02:45 (+02:00): the second 02:30 (+01:00) is still ahead
    assert rfc3339(s.next_after(ms("2026-10-25T02:45:00+02:00")), resolve_zone("Europe/Prague")) == (
        "2026-10-25T02:30:00+01:00"
    )
    s_first = Schedule.from_spec({"cron": "30 2 * * *", "timezone": "Europe/Prague"})
    assert rfc3339(s_first.next_after(ms("2026-10-25T02:45:00+02:00")), resolve_zone("Europe/Prague")) == (
        "2026-10-26T02:30:00+01:00"
    )


def test_fixed_time_weekday_cron_across_both_changes_keeps_local_time() -> None:
    got = fires("0 9 * * 1-5", "Europe/Prague", "2026-03-26T00:00:00Z", "2026-03-31T00:00:00Z")
    assert got == [
        "2026-03-26T09:00:00+01:00",
        "2026-03-27T09:00:00+01:00",
        "2026-03-30T09:00:00+02:00",
    ]


# -- cadence crons ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [("2026-03-28T22:00:00Z", "2026-03-29T04:00:00Z"), ("2026-10-24T22:00:00Z", "2026-10-25T04:00:00Z")],
)
def test_every_30_minutes_keeps_real_time_cadence_in_prague(start: str, end: str) -> None:
    s = Schedule.from_spec({"cron": "*/30 * * * *", "timezone": "Europe/Prague"})
    got = s.fires_between(ms(start), ms(end))
    assert len(got) == 12
    assert all(b - a == 1_800_000 for a, b in zip(got, got[1:], strict=False))
    assert got[0] == ms(start) + 1_800_000


def test_every_30_minutes_in_prague_exact_wall_times() -> None:
    assert fires(
        "*/30 * * * *", "Europe/Prague", "2026-03-29T01:00:00+01:00", "2026-03-29T03:30:00+02:00"
    ) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00 and 02:30 do not exist
        "2026-03-29T03:30:00+02:00",
    ]
    assert fires(
        "*/30 * * * *", "Europe/Prague", "2026-10-25T01:45:00+02:00", "2026-10-25T03:00:00+01:00"
    ) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",  # the repeated hour fires again
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_hourly_in_new_york_fall_back_fires_both_1am() -> None:
    assert fires(
        "0 * * * *", "America/New_York", "2026-11-01T00:30:00-04:00", "2026-11-01T03:00:00-05:00"
    ) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]


# -- America/New_York -------------------------------------------------------------------------------


def test_new_york_spring_forward_2026_03_08() -> None:
    assert fires(
        "30 2 * * *", "America/New_York", "2026-03-07T00:00:00-05:00", "2026-03-09T23:00:00-04:00"
    ) == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]


def test_new_york_fall_back_2026_11_01_policies() -> None:
    window = ("2026-11-01T00:00:00-04:00", "2026-11-01T23:00:00-05:00")
    assert fires("30 1 * * *", "America/New_York", *window) == ["2026-11-01T01:30:00-04:00"]
    assert fires("30 1 * * *", "America/New_York", *window, {"fold": "last"}) == ["2026-11-01T01:30:00-05:00"]
    assert fires("30 1 * * *", "America/New_York", *window, {"fold": "both"}) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
    ]


def test_new_york_cadence_every_15_minutes() -> None:
    for start in ("2026-03-08T05:00:00Z", "2026-11-01T04:00:00Z"):
        s = Schedule.from_spec({"cron": "*/15 * * * *", "timezone": "America/New_York"})
        got = s.next_n(ms(start), 16)
        assert all(b - a == 900_000 for a, b in zip(got, got[1:], strict=False))


# -- Australia/Lord_Howe: a 30-minute shift ---------------------------------------------------------


def test_lord_howe_transitions_are_what_zoneinfo_says() -> None:
    zone = resolve_zone("Australia/Lord_Howe")
    trans = transitions_in_year(zone, 2026)
    assert [rfc3339(t) for t in trans] == ["2026-04-04T15:00:00+00:00", "2026-10-03T15:30:00+00:00"]
    for t in trans:
        before = (rfc3339(t - 1000, zone) or "")[-6:]
        after = (rfc3339(t, zone) or "")[-6:]
        assert {before, after} == {"+11:00", "+10:30"}


def test_lord_howe_gap_shift_and_fold_both() -> None:
    # 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11:00)
    assert fires(
        "15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30", "2026-10-05T12:00:00+11:00"
    ) == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]
    # 2026-04-05: 02:00 (+11:00) falls back to 01:30 (+10:30); 01:30-02:00 repeats
    assert fires(
        "45 1 * * *",
        "Australia/Lord_Howe",
        "2026-04-05T00:00:00+11:00",
        "2026-04-05T12:00:00+10:30",
        {"fold": "both"},
    ) == ["2026-04-05T01:45:00+11:00", "2026-04-05T01:45:00+10:30"]
    # a wall time outside the 30-minute fold is not affected
    assert fires(
        "15 1 * * *",
        "Australia/Lord_Howe",
        "2026-04-05T00:00:00+11:00",
        "2026-04-05T12:00:00+10:30",
        {"fold": "both"},
    ) == ["2026-04-05T01:15:00+11:00"]


def test_lord_howe_every_30_minutes_cadence() -> None:
    s = Schedule.from_spec({"cron": "*/30 * * * *", "timezone": "Australia/Lord_Howe"})
    zone = resolve_zone("Australia/Lord_Howe")
    spring = s.fires_between(ms("2026-10-04T01:00:00+10:30"), ms("2026-10-04T03:00:00+11:00"))
    assert [rfc3339(f, zone) for f in spring] == [
        "2026-10-04T01:30:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-04T03:00:00+11:00",
    ]
    autumn = s.fires_between(ms("2026-04-05T01:00:00+11:00"), ms("2026-04-05T02:00:00+10:30"))
    assert [rfc3339(f, zone) for f in autumn] == [
        "2026-04-05T01:30:00+11:00",
        "2026-04-05T01:30:00+10:30",
        "2026-04-05T02:00:00+10:30",
    ]
    for got in (spring, autumn):
        assert all(b - a == 1_800_000 for a, b in zip(got, got[1:], strict=False))


# -- calendar edge cases ----------------------------------------------------------------------------


def test_leap_day_cron_from_november_2026_waits_until_2028() -> None:
    s = Schedule.from_spec({"cron": "0 12 29 2 *"})
    assert [rfc3339(f) for f in s.next_n(ms("2026-11-27T00:00:00Z"), 2)] == [
        "2028-02-29T12:00:00+00:00",
        "2032-02-29T12:00:00+00:00",
    ]


def test_february_31_never_fires_and_is_a_check_error() -> None:
    assert check_schedule({"cron": "0 0 31 2 *"}) == [("cron", "'0 0 31 2 *' never fires")]
    assert check_schedule({"cron": "0 0 30,31 2,4 *"}) == []  # April 30 exists


def test_at_in_the_past_never_fires_and_gets_a_past_note() -> None:
    s = Schedule.from_spec({"at": "2026-01-01T09:00:00+01:00", "timezone": "Europe/Prague"})
    now = ms("2026-11-27T00:00:00Z")
    assert s.next_after(now) is None
    assert s.next_after(ms("2026-01-01T07:59:59.999Z")) == ms("2026-01-01T08:00:00Z")
    notes = notes_for(s, [], after_ms=now)
    assert [(n.kind, n.message) for n in notes] == [
        ("past", "2026-01-01T09:00:00+01:00 is in the past; this schedule will not fire again")
    ]


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", ["2026-11-27T11:00:00+00:00", "2026-11-27T12:00:00+00:00"]),
        ("@daily", ["2026-11-28T00:00:00+00:00", "2026-11-29T00:00:00+00:00"]),
        ("@midnight", ["2026-11-28T00:00:00+00:00", "2026-11-29T00:00:00+00:00"]),
        ("@weekly", ["2026-11-29T00:00:00+00:00", "2026-12-06T00:00:00+00:00"]),
        ("@monthly", ["2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
        ("@yearly", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
        ("@annually", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    ],
)
def test_macros(macro: str, expected: list[str]) -> None:
    s = Schedule.from_spec({"cron": macro})
    assert [rfc3339(f) for f in s.next_n(ms("2026-11-27T10:30:00Z"), 2)] == expected


def test_daily_macro_in_a_dst_zone_is_fixed_time() -> None:
    # Havana springs forward at midnight: 00:00 does not exist on 2026-03-08
    got = fires("@daily", "America/Havana", "2026-03-07T12:00:00-05:00", "2026-03-09T12:00:00-04:00")
    assert got == ["2026-03-08T01:00:00-04:00", "2026-03-09T00:00:00-04:00"]


# -- local zone -------------------------------------------------------------------------------------


def test_local_zone_resolves_and_follows_tz_env() -> None:
    assert resolve_zone("local") is not None
    code = (
        "from palyra_ops.schedule import preview;"
        "import json;"
        "from palyra_ops.clock import parse_rfc3339 as p;"
        "print(json.dumps(preview('30 2 * * *', 'local', p('2026-03-28T12:00:00Z'), 2)))"
    )
    env = dict(os.environ, TZ="Europe/Prague")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == (
        '{"fire_times": ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"], '
        '"notes": ["2026-03-29: 02:30 does not exist in local (Europe/Prague) (DST gap); fires at 03:00+02:00"]}'
    )


# -- notes ------------------------------------------------------------------------------------------


def test_preview_notes_for_gap_fold_and_skip() -> None:
    start = ms("2026-03-28T00:00:00Z")
    assert preview("30 2 * * *", "Europe/Prague", start, 2) == {
        "fire_times": ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00"],
        "notes": ["2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00"],
    }
    assert preview("30 2 * * *", "Europe/Prague", start, 2, {"gap": "skip"}) == {
        "fire_times": ["2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00"],
        "notes": ["2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); no run that day (gap: skip)"],
    }
    assert preview("30 2 * * *", "Europe/Prague", ms("2026-10-25T00:00:00Z"), 2, {"fold": "both"}) == {
        "fire_times": ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"],
        "notes": [
            "2026-10-25: 02:30 occurs twice in Europe/Prague (DST fold); "
            "fires twice, at 02:30+02:00 and 02:30+01:00 (fold: both)"
        ],
    }
    assert preview("*/30 * * * *", "Europe/Prague", ms("2026-03-29T00:45:00Z"), 2) == {
        "fire_times": ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"],
        "notes": [
            "2026-03-29: clocks in Europe/Prague jump from 02:00 to 03:00 (DST gap); "
            "matching times in between do not exist and do not fire"
        ],
    }


def test_no_dst_notes_when_the_change_misses_the_cron() -> None:
    # business hours never meet the 02:00-03:00 change
    out = preview("0 9-17 * * *", "Europe/Prague", ms("2026-03-28T20:00:00Z"), 12)
    assert out["notes"] == []
    assert out["fire_times"][0] == "2026-03-29T09:00:00+02:00"


def test_utc_has_no_transitions() -> None:
    assert transitions_in_year(UTC, 2026) == ()
    assert transitions_in_year(resolve_zone("Etc/UTC"), 2026) == ()
    assert timedelta(0) == resolve_zone("utc").utcoffset(None)


# -- brute force: every UTC minute around each change, checked against croniter.match ---------------

BRUTE_ZONES = [
    ("Europe/Prague", "2026-03-29T00:00:00Z"),
    ("Europe/Prague", "2026-10-25T00:00:00Z"),
    ("America/New_York", "2026-03-08T06:00:00Z"),
    ("America/New_York", "2026-11-01T05:00:00Z"),
    ("Australia/Lord_Howe", "2026-04-04T14:00:00Z"),
    ("Australia/Lord_Howe", "2026-10-03T14:00:00Z"),
]


@pytest.mark.parametrize(("tz", "around"), BRUTE_ZONES)
@pytest.mark.parametrize("expr", ["*/30 * * * *", "*/7 * * * *", "0 * * * *", "15,45 1-3 * * *", "0 */2 * * *"])
def test_cadence_crons_match_brute_force(tz: str, around: str, expr: str) -> None:
    from croniter import croniter

    zone = resolve_zone(tz)
    start = ms(around) - 6 * 3_600_000
    end = ms(around) + 6 * 3_600_000
    expected = []
    for t in range(start + 60_000, end + 1, 60_000):
        wall = datetime_from(t, zone)
        if croniter.match(expr, wall.replace(tzinfo=None)):
            expected.append(t)
    assert Schedule.from_spec({"cron": expr, "timezone": tz}).fires_between(start, end) == expected


def datetime_from(t: int, zone: object):  # noqa: ANN201 - tiny local helper
    from datetime import datetime

    return datetime.fromtimestamp(t / 1000, zone)  # type: ignore[arg-type]


@pytest.mark.parametrize(("tz", "around"), BRUTE_ZONES)
@pytest.mark.parametrize("hhmm", ["01:15", "01:45", "02:00", "02:15", "02:30", "02:59", "03:00"])
@pytest.mark.parametrize(("gap", "fold"), [("shift", "first"), ("skip", "last"), ("shift", "both")])
def test_fixed_time_crons_match_brute_force(tz: str, around: str, hhmm: str, gap: str, fold: str) -> None:
    zone = resolve_zone(tz)
    start = ms(around) - 12 * 3_600_000
    end = ms(around) + 12 * 3_600_000
    h, m = (int(x) for x in hhmm.split(":"))
    by_date: dict[str, list[int]] = {}
    first_after: dict[str, int] = {}
    for t in range(start - 86_400_000, end + 86_400_000, 60_000):
        wall = datetime_from(t, zone)
        day = wall.strftime("%Y-%m-%d")
        if (wall.hour, wall.minute) == (h, m):
            by_date.setdefault(day, []).append(t)
        if (wall.hour, wall.minute) > (h, m) and day not in first_after:
            first_after[day] = t
    expected: list[int] = []
    for day in sorted(set(by_date) | set(first_after)):
        hits = by_date.get(day, [])
        if len(hits) == 1:
            expected += hits
        elif len(hits) == 2:
            expected += {"first": hits[:1], "last": hits[1:], "both": hits}[fold]
        elif gap == "shift" and day in first_after:
            expected.append(first_after[day])
    expected = [t for t in expected if start < t <= end]
    s = Schedule.from_spec({"cron": f"{m} {h} * * *", "timezone": tz}, {"gap": gap, "fold": fold})
    assert s.fires_between(start, end) == expected
