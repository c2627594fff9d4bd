"""Jitter, quiet hours, misfire resolution and retry backoff (SPEC §2, §5)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from palyra_ops.clock import parse_rfc3339, rfc3339
from palyra_ops.errors import PalyraError
from palyra_ops.schedule import (
    MisfireDecision,
    QuietHours,
    Schedule,
    check_quiet_hours,
    jitter_offset_ms,
    notes_for,
    resolve_misfire,
    resolve_zone,
    retry_delay_ms,
)


def ms(text: str) -> int:
    return parse_rfc3339(text)


# -- jitter -----------------------------------------------------------------------------------------


def test_jitter_is_deterministic_bounded_and_spread() -> None:
    nominal = ms("2026-11-27T09:00:00Z")
    values = [jitter_offset_ms("daily-report", nominal + i * 60_000, 30_000) for i in range(2000)]
    assert values == [jitter_offset_ms("daily-report", nominal + i * 60_000, 30_000) for i in range(2000)]
    assert all(0 <= v <= 30_000 for v in values)
    # uniform-ish: every tenth of the range is hit, none grossly over-represented
    buckets = [0] * 10
    for v in values:
        buckets[min(v * 10 // 30_001, 9)] += 1
    assert min(buckets) > 120 and max(buckets) < 300
    assert jitter_offset_ms("a", nominal, 30_000) != jitter_offset_ms("b", nominal, 30_000)
    assert jitter_offset_ms("a", nominal, 0) == 0
    assert jitter_offset_ms("a", nominal, -5) == 0
    assert {jitter_offset_ms("a", nominal + i, 1) for i in range(50)} == {0, 1}


def test_jitter_is_stable_across_processes_and_releases() -> None:
    # pinned: a change here would re-time every deployed routine's runs
    assert jitter_offset_ms("daily-report", 1_795_770_000_000, 30_000) == _PINNED
    code = "from palyra_ops.schedule import jitter_offset_ms; print(jitter_offset_ms('daily-report', 1795770000000, 30000))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert int(out.stdout) == _PINNED


_PINNED = 335  # sha256("daily-report\x001795770000000")[:8] mod 30001


# -- quiet hours ------------------------------------------------------------------------------------


def test_quiet_hours_wrapping_midnight() -> None:
    q = QuietHours.from_spec({"start": "22:00", "end": "07:00", "timezone": "utc"})
    assert not q.contains(ms("2026-11-27T21:59:59.999Z"))
    assert q.contains(ms("2026-11-27T22:00:00Z"))  # start inclusive
    assert q.contains(ms("2026-11-28T03:00:00Z"))
    assert q.contains(ms("2026-11-28T06:59:59.999Z"))
    assert not q.contains(ms("2026-11-28T07:00:00Z"))  # end exclusive
    assert not q.contains(ms("2026-11-28T12:00:00Z"))
    assert q.window_end_after(ms("2026-11-27T23:00:00Z")) == ms("2026-11-28T07:00:00Z")
    assert q.window_end_after(ms("2026-11-28T01:00:00Z")) == ms("2026-11-28T07:00:00Z")
    assert q.window_end_after(ms("2026-11-28T12:00:00Z")) == ms("2026-11-28T12:00:00Z")


def test_quiet_hours_not_wrapping() -> None:
    q = QuietHours.from_spec(
        {"start": "12:00", "end": "13:30", "timezone": "Europe/Prague", "action": "defer"}
    )
    assert q.action == "defer"
    assert q.contains(ms("2026-11-27T12:00:00+01:00"))
    assert not q.contains(ms("2026-11-27T13:30:00+01:00"))
    assert not q.contains(ms("2026-11-27T11:59:00+01:00"))
    assert q.window_end_after(ms("2026-11-27T12:10:00+01:00")) == ms("2026-11-27T13:30:00+01:00")


def test_quiet_hours_on_dst_nights_follow_the_wall_clock() -> None:
    q = QuietHours.from_spec(
        {"start": "22:00", "end": "07:00", "timezone": "Europe/Prague", "action": "defer"}
    )
    zone = resolve_zone("Europe/Prague")
    # spring: 22:00+01:00 .. 07:00+02:00 is 8 real hours
    assert q.contains(ms("2026-03-28T22:00:00+01:00"))
    assert q.contains(ms("2026-03-29T06:59:00+02:00"))
    assert not q.contains(ms("2026-03-29T07:00:00+02:00"))
    assert rfc3339(q.window_end_after(ms("2026-03-29T01:30:00+01:00")), zone) == "2026-03-29T07:00:00+02:00"
    # autumn: 22:00+02:00 .. 07:00+01:00 is 10 real hours, and the repeated hour is inside
    assert q.contains(ms("2026-10-25T02:30:00+02:00"))
    assert q.contains(ms("2026-10-25T02:30:00+01:00"))
    assert not q.contains(ms("2026-10-25T07:00:00+01:00"))
    assert (
        q.window_end_after(ms("2026-10-24T22:00:00+02:00")) - ms("2026-10-24T22:00:00+02:00")
        == 10 * 3_600_000
    )


def test_quiet_hours_edges_inside_a_dst_change() -> None:
    zone = resolve_zone("Europe/Prague")
    # end in the gap: the window ends at the first instant after the gap
    q = QuietHours.from_spec({"start": "01:00", "end": "02:30", "timezone": "Europe/Prague"})
    assert q.window_end_after(ms("2026-03-29T01:15:00+01:00")) == ms("2026-03-29T03:00:00+02:00")
    assert not q.contains(ms("2026-03-29T03:00:00+02:00"))
    # end in the repeated hour: the window ends at its first occurrence and is not re-entered
    q2 = QuietHours.from_spec({"start": "01:00", "end": "02:30", "timezone": "Europe/Prague"})
    assert rfc3339(q2.window_end_after(ms("2026-10-25T01:30:00+02:00")), zone) == "2026-10-25T02:30:00+02:00"
    assert not q2.contains(ms("2026-10-25T02:10:00+01:00"))
    # a window wholly inside the gap does not exist that night
    q3 = QuietHours.from_spec({"start": "02:10", "end": "02:50", "timezone": "Europe/Prague"})
    assert not any(q3.contains(ms("2026-03-29T00:00:00Z") + i * 60_000) for i in range(180))
    assert q3.contains(ms("2026-03-30T02:20:00+02:00"))


def test_quiet_hours_validation() -> None:
    assert check_quiet_hours({"start": "22:00", "end": "07:00"}) == []
    assert check_quiet_hours(
        {"start": "7:00", "end": "24:00", "timezone": "Mars/Base", "action": "later"}
    ) == [
        ("start", "'7:00' is not a time of day HH:MM (00:00 to 23:59)"),
        ("end", "'24:00' is not a time of day HH:MM (00:00 to 23:59)"),
        ("timezone", "unknown time zone 'Mars/Base'"),
        ("action", "'later' is not one of skip, defer"),
    ]
    assert check_quiet_hours({"start": "08:00", "end": "08:00"}) == [
        ("end", "equals start ('08:00'): the window would be empty")
    ]
    assert check_quiet_hours({"end": "08:00"}) == [("start", "is required (HH:MM)")]
    with pytest.raises(PalyraError, match=r"^quiet_hours.start: '25:00' is not a time of day"):
        QuietHours.from_spec({"start": "25:00", "end": "07:00"})
    # built directly with equal ends: an empty window, never quiet
    assert not QuietHours("08:00", "08:00").contains(ms("2026-11-27T08:00:00Z"))


def test_quiet_hours_skip_notes() -> None:
    s = Schedule.from_spec({"cron": "30 6 * * *", "timezone": "Europe/Prague"})
    fires = s.next_n(ms("2026-11-27T00:00:00Z"), 1)
    notes = notes_for(s, fires, {"start": "22:00", "end": "07:00", "timezone": "Europe/Prague"})
    assert [(n.kind, n.message) for n in notes] == [
        (
            "quiet_hours",
            "2026-11-27T06:30:00+01:00 falls in quiet hours 22:00–07:00 Europe/Prague; it will be skipped",
        )
    ]


# -- misfire ----------------------------------------------------------------------------------------

MISSED = [1000, 2000, 3000, 4000]


def test_misfire_fire_once_runs_the_latest_for_all() -> None:
    assert resolve_misfire("fire_once", MISSED, 3) == MisfireDecision(run=[4000], skipped=[1000, 2000, 3000])
    assert resolve_misfire("fire_once", [5], 3) == MisfireDecision(run=[5], skipped=[])


def test_misfire_ignore_skips_everything() -> None:
    assert resolve_misfire("ignore", MISSED, 3) == MisfireDecision(run=[], skipped=MISSED)


def test_misfire_catch_up_runs_each_up_to_the_limit_else_collapses() -> None:
    assert resolve_misfire("catch_up", MISSED[:3], 3) == MisfireDecision(run=[1000, 2000, 3000], skipped=[])
    assert resolve_misfire("catch_up", MISSED, 3) == MisfireDecision(run=[4000], skipped=[1000, 2000, 3000])
    assert resolve_misfire("catch_up", MISSED, 0) == MisfireDecision(run=[4000], skipped=[1000, 2000, 3000])


def test_misfire_edge_cases() -> None:
    for policy in ("fire_once", "ignore", "catch_up"):
        assert resolve_misfire(policy, [], 3) == MisfireDecision(run=[], skipped=[])
    assert resolve_misfire("catch_up", [3000, 1000], 3).run == [1000, 3000]
    with pytest.raises(ValueError, match="unknown misfire policy 'sometimes'"):
        resolve_misfire("sometimes", MISSED, 3)


# -- retry ------------------------------------------------------------------------------------------


def test_retry_delay_doubles_and_caps_at_60s() -> None:
    assert [retry_delay_ms(10_000, a) for a in range(1, 6)] == [10_000, 20_000, 40_000, 60_000, 60_000]
    assert retry_delay_ms(500, 1) == 500
    assert retry_delay_ms(500, 16) == 60_000
    assert retry_delay_ms(90_000, 1) == 60_000
    assert retry_delay_ms(1, 10_000) == 60_000
    assert retry_delay_ms(0, 3) == 0


def test_resolve_misfire_owns_the_whole_decision_on_time_and_late() -> None:
    # nothing late: the on-time instants run, in order; a catch_up pair goes out one after the other
    d = resolve_misfire("catch_up", [], 3, on_time=[2000, 1000])
    assert (d.run, d.skipped, d.in_order) == ([1000, 2000], [], True)
    # ignore: the late ones are skipped, the on-time one still runs
    d = resolve_misfire("ignore", [1000, 2000], 3, on_time=[3000])
    assert (d.run, d.skipped, d.in_order) == ([3000], [1000, 2000], False)
    # fire_once: one run (the latest instant, on time or not) stands for all
    d = resolve_misfire("fire_once", [1000, 2000], 3, on_time=[3000])
    assert (d.run, d.skipped, d.in_order) == ([3000], [1000, 2000], False)
    # catch_up within max_catch_up replays late and on-time instants in order
    d = resolve_misfire("catch_up", [1000], 3, on_time=[2000])
    assert (d.run, d.skipped, d.in_order) == ([1000, 2000], [], True)
    # a catch-up backlog beyond max_catch_up collapses like fire_once
    d = resolve_misfire("catch_up", [1000, 2000, 3000], 3, on_time=[4000])
    assert (d.run, d.skipped, d.in_order) == ([4000], [1000, 2000, 3000], False)
    with pytest.raises(ValueError, match="unknown misfire policy 'sometimes'"):
        resolve_misfire("sometimes", [], 3)


def test_bulk_jitter_is_the_single_one_and_the_documented_formula() -> None:
    import hashlib

    from palyra_ops.schedule.policies import jitter_offsets_ms

    nominal = [ms("2026-11-27T09:00:00Z") + i * 61_000 for i in range(500)] + [0, 7, -1_000]
    for name, jitter in (("daily-report", 30_000), ("ünïcode-routine", 1), ("x", 86_400_000)):
        reference = [int.from_bytes(hashlib.sha256(f"{name}\x00{n}".encode()).digest()[:8], "big") % (jitter + 1)
                     for n in nominal]
        assert jitter_offsets_ms(name, nominal, jitter) == reference
        assert [jitter_offset_ms(name, n, jitter) for n in nominal] == reference
