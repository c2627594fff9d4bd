"""What the console computes about fire times (server/ui/firetimes.py), on a real journal with an
injected clock: a routine's upcoming runs with DST notes and jitter, and the 24 h herd picture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palyra_ops.clock import FakeClock, parse_rfc3339
from palyra_ops.journal import Journal, open_journal
from palyra_ops.model import Resource
from palyra_ops.reconcile import upsert_resource
from palyra_ops.schedule import jitter_offset_ms
from palyra_ops.server.ui import firetimes

NOW = parse_rfc3339("2026-03-28T12:00:00+00:00")  # the day before Europe/Prague springs forward


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = open_journal(tmp_path / "j.sqlite3", clock=FakeClock(NOW))
    try:
        yield j
    finally:
        j.close()


def put(j: Journal, name: str, schedule: dict[str, Any], **policies: Any) -> None:
    spec: dict[str, Any] = {"prompt": "p", "trigger": {"kind": "schedule", "schedule": schedule}}
    if policies:
        spec["policies"] = policies
    upsert_resource(j, Resource.from_spec("Routine", name, spec))


def timeline(j: Journal, now: int = NOW) -> firetimes.Timeline:
    jobs = {x["routine_id"]: x for x in j.jobs_by_trigger(("schedule",))}
    return firetimes.day_timeline(j.list_resources("Routine"), jobs, now)


def test_upcoming_shows_the_spring_forward_shift_and_its_note(journal: Journal) -> None:
    put(journal, "nightly", {"cron": "30 2 * * *", "timezone": "Europe/Prague"})
    up = firetimes.upcoming(journal.get_resource("Routine", "nightly"), journal.get_job("nightly"), NOW, count=3)
    assert up is not None and up.jitter_ms == 0
    assert [f["due_local"] for f in up.fires] == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night: gap shift to the first instant after
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert [f["due_utc"] for f in up.fires][0] == "2026-03-29T01:00:00+00:00"
    assert len(up.notes) == 1 and "2026-03-29" in up.notes[0] and "gap" in up.notes[0].lower()


def test_upcoming_applies_the_routines_jitter(journal: Journal) -> None:
    put(journal, "spread", {"cron": "0 * * * *", "timezone": "utc"}, jitter="10m")
    up = firetimes.upcoming(journal.get_resource("Routine", "spread"), journal.get_job("spread"), NOW, count=2)
    assert up is not None and up.jitter_ms == 600_000
    first = parse_rfc3339("2026-03-28T13:00:00+00:00")
    expected = first + jitter_offset_ms("spread", first, 600_000)
    assert up.fires[0]["nominal"] == "2026-03-28T13:00:00+00:00"
    assert parse_rfc3339(up.fires[0]["due_utc"]) == expected
    assert up.fires[0]["jitter_ms"] == expected - first


def test_upcoming_notes_the_routines_quiet_hours(journal: Journal) -> None:
    spec = {"prompt": "p", "trigger": {"kind": "schedule", "schedule": {"cron": "0 * * * *", "timezone": "utc"}},
            "quiet_hours": {"start": "13:30", "end": "15:30", "timezone": "utc", "action": "skip"}}
    upsert_resource(journal, Resource.from_spec("Routine", "hushed", spec))
    up = firetimes.upcoming(journal.get_resource("Routine", "hushed"), journal.get_job("hushed"), NOW, count=4)
    assert up is not None
    assert [n for n in up.notes if "quiet hours" in n] == [
        "2026-03-28T14:00:00+00:00 falls in quiet hours 13:30–15:30 UTC; it will be skipped",
        "2026-03-28T15:00:00+00:00 falls in quiet hours 13:30–15:30 UTC; it will be skipped",
    ]


def test_a_herd_is_found_and_jitter_breaks_it(journal: Journal) -> None:
    for i in range(4):
        put(journal, f"herd-{i}", {"cron": "0 * * * *", "timezone": "utc"})
    put(journal, "alone", {"cron": "17 3 * * *", "timezone": "utc"})
    tl = timeline(journal)
    assert tl.routines == 5 and tl.total == 4 * 24 + 1 and not tl.truncated
    assert len(tl.herds) == 10  # the ten biggest (all 24 hours are herds of 4)
    assert tl.herds[0].at_utc == "2026-03-28T13:00:00+00:00" and tl.herds[0].count == 4
    assert tl.herds[0].routines == ["herd-0", "herd-1", "herd-2", "herd-3"]
    assert len(tl.herd_buckets) == 24 and tl.peak == 4
    assert tl.start_ms == NOW  # already on a five-minute boundary
    svg = firetimes.svg_bars(tl)
    assert sum(1 for b in svg["bars"] if b["herd"]) == 24 and len(svg["bars"]) == 25
    for i in range(4):
        put(journal, f"herd-{i}", {"cron": "0 * * * *", "timezone": "utc"}, jitter="20m")
    tl = timeline(journal)
    hours = [NOW + h * 3_600_000 for h in range(1, 25)]
    due = [n + jitter_offset_ms(f"herd-{i}", n, 1_200_000) for i in range(4) for n in hours]
    assert tl.total == sum(1 for t in due if t <= NOW + firetimes.DAY_MS) + 1  # past the window: not shown
    assert tl.herds == []


def test_disabled_routines_are_left_out_and_every_uses_its_anchor(journal: Journal) -> None:
    put(journal, "often", {"every": "10m"})
    spec = {"prompt": "p", "enabled": False, "trigger": {"kind": "schedule", "schedule": {"cron": "* * * * *"}}}
    upsert_resource(journal, Resource.from_spec("Routine", "off", spec))
    tl = timeline(journal, NOW + 7 * 60_000)  # 7 minutes after the anchor
    assert tl.routines == 1 and tl.total == 24 * 6  # 12:10, 12:20, ... 12:00 the next day
    assert tl.start_ms == NOW + 5 * 60_000
    assert tl.buckets[0] == 0 and tl.buckets[1] == 1  # 12:05-12:10 empty; 12:10 is in the next bucket


def test_a_huge_fleet_is_cut_off_not_slow(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firetimes, "MAX_FIRES", 100)
    put(journal, "a", {"cron": "*/5 * * * *"})
    put(journal, "b", {"cron": "*/7 * * * *"})
    tl = timeline(journal)
    assert tl.truncated and tl.total == 100 and tl.routines == 1
