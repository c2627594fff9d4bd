"""The scheduler across DST days (Europe/Prague), driven tick by tick on a FakeClock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from palyra_ops.clock import rfc3339, to_ms


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return to_ms(datetime(y, mo, d, h, mi, tzinfo=UTC))


def fired(rt, name: str) -> list[str]:
    return [rfc3339(r["scheduled_at_ms"]) for r in rt.runs(name)]


def test_fixed_time_routine_fires_once_per_day_across_spring_forward(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(utc(2026, 3, 28, 12))
        rt.routine("d", trigger={"kind": "schedule", "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Prague"}})
        rt.routine("skip", trigger={"kind": "schedule", "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Prague"}},
                   policies={"dst": {"gap": "skip"}})
        await rt.run_until(utc(2026, 3, 31, 12))
        # 02:30 does not exist on 2026-03-29: gap shift fires at 03:00 CEST (01:00Z)
        assert fired(rt, "d") == ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00", "2026-03-31T00:30:00+00:00"]
        assert fired(rt, "skip") == ["2026-03-30T00:30:00+00:00", "2026-03-31T00:30:00+00:00"]
        assert all(r["started_at_ms"] == r["scheduled_at_ms"] for r in rt.runs())

    asyncio.run(main())


def test_fixed_time_routine_fires_once_in_the_repeated_hour_unless_fold_both(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(utc(2026, 10, 24, 12))
        sched = {"cron": "30 2 * * *", "timezone": "Europe/Prague"}
        rt.routine("first", trigger={"kind": "schedule", "schedule": sched})
        rt.routine("last", trigger={"kind": "schedule", "schedule": sched}, policies={"dst": {"fold": "last"}})
        rt.routine("both", trigger={"kind": "schedule", "schedule": sched}, policies={"dst": {"fold": "both"}})
        await rt.run_until(utc(2026, 10, 26, 12))
        assert fired(rt, "first") == ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        assert fired(rt, "last") == ["2026-10-25T01:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        assert fired(rt, "both") == ["2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00", "2026-10-26T01:30:00+00:00"]

    asyncio.run(main())


def test_cadence_routine_keeps_real_time_spacing_through_fall_back(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(utc(2026, 10, 24, 23, 50))
        rt.routine("c", trigger={"kind": "schedule", "schedule": {"cron": "*/30 * * * *", "timezone": "Europe/Prague"}})
        await rt.run_until(utc(2026, 10, 25, 2, 1))
        assert fired(rt, "c") == [
            "2026-10-25T00:00:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-25T01:00:00+00:00",
            "2026-10-25T01:30:00+00:00", "2026-10-25T02:00:00+00:00"]

    asyncio.run(main())


def test_daemon_down_over_the_dst_gap_fires_once_for_the_missed_day(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(utc(2026, 3, 28, 12))
        rt.routine("d", trigger={"kind": "schedule", "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Prague"}})
        rt.clock.set(utc(2026, 3, 30, 6))  # down over both 03-29 01:00Z and 03-30 00:30Z
        await rt.tick()
        (r,) = rt.runs("d")
        assert rfc3339(r["scheduled_at_ms"]) == "2026-03-30T00:30:00+00:00"
        assert r["skipped_count"] == 1 and r["skipped_times"] == f"[{utc(2026, 3, 29, 1)}]"

    asyncio.run(main())
