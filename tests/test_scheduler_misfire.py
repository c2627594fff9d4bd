"""Scheduler on a FakeClock: exact fire times, outage backlogs per misfire policy, jitter, claims."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from palyra_ops.clock import to_ms
from palyra_ops.schedule import jitter_offset_ms

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def at(h: int, m: int, s: int = 0, day: int = 2, month: int = 3) -> int:
    return to_ms(datetime(2026, month, day, h, m, s, tzinfo=UTC))


def every_minute(rt, name: str = "r", **policies) -> None:
    rt.routine(name, trigger={"kind": "schedule", "schedule": {"every": "1m"}}, policies=policies)


def test_every_fires_at_exact_instants_and_records_each_run(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        every_minute(rt)
        await rt.run_until(at(8, 3, 30))
        runs = rt.runs("r")
        assert [r["scheduled_at_ms"] for r in runs] == [at(8, 1), at(8, 2), at(8, 3)]
        assert [r["started_at_ms"] for r in runs] == [at(8, 1), at(8, 2), at(8, 3)]
        assert [r["status"] for r in runs] == ["succeeded"] * 3
        assert [r["occurrence_key"] for r in runs] == [f"r|{at(8, m)}" for m in (1, 2, 3)]
        assert all(r["reason"] is None and r["attempt"] == 1 for r in runs)
        job = rt.journal.get_job("r")
        assert job["next_run_at_unix_ms"] == at(8, 4) and job["last_nominal_ms"] == at(8, 3)

    asyncio.run(main())


async def _outage(rt, policy: str, *, until: int, max_catch_up: int = 3) -> None:
    every_minute(rt, misfire=policy, misfire_grace="30s", max_catch_up=max_catch_up)
    await rt.run_until(at(8, 3, 30))  # 08:01..08:03 ran
    rt.clock.set(until)  # the daemon was down from 08:03:30 until `until`
    await rt.tick()


def test_fire_once_runs_once_for_the_backlog_and_records_the_skipped_times(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        await _outage(rt, "fire_once", until=at(8, 10, 45))
        runs = rt.runs("r")[3:]
        assert len(runs) == 1
        (r,) = runs
        assert r["scheduled_at_ms"] == at(8, 10) and r["status"] == "succeeded"
        assert r["started_at_ms"] == at(8, 10, 45)
        assert r["skipped_count"] == 6
        assert json.loads(r["skipped_times"]) == [at(8, m) for m in range(4, 10)]
        assert rt.journal.get_job("r")["next_run_at_unix_ms"] == at(8, 11)
        await rt.run_until(at(8, 12, 10))
        assert [x["scheduled_at_ms"] for x in rt.runs("r")[4:]] == [at(8, 11), at(8, 12)]

    asyncio.run(main())


def test_ignore_skips_every_missed_time_and_waits_for_the_next(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        await _outage(rt, "ignore", until=at(8, 10, 45))
        runs = rt.runs("r")[3:]
        assert [(r["status"], r["scheduled_at_ms"]) for r in runs] == [("skipped", at(8, 10))]
        assert runs[0]["reason"] == "misfire: ignored 7 missed times (later than misfire_grace)"
        assert runs[0]["skipped_count"] == 7
        assert json.loads(runs[0]["skipped_times"]) == [at(8, m) for m in range(4, 11)]
        assert runs[0]["started_at_ms"] is None
        await rt.run_until(at(8, 11, 10))
        assert [(r["status"], r["scheduled_at_ms"]) for r in rt.runs("r")[4:]] == [("succeeded", at(8, 11))]

    asyncio.run(main())


def test_ignore_still_runs_an_occurrence_within_grace(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        await _outage(rt, "ignore", until=at(8, 10, 20))  # 08:10 is 20 s late: on time
        runs = rt.runs("r")[3:]
        assert [(r["status"], r["scheduled_at_ms"]) for r in runs] == [("skipped", at(8, 9)), ("succeeded", at(8, 10))]
        assert runs[0]["skipped_count"] == 6

    asyncio.run(main())


def test_catch_up_runs_each_missed_time_in_order_up_to_the_limit(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        await _outage(rt, "catch_up", until=at(8, 6, 45))  # 08:04, 08:05, 08:06 missed: 3 <= max_catch_up
        runs = rt.runs("r")[3:]
        assert [(r["status"], r["scheduled_at_ms"]) for r in runs] == [
            ("succeeded", at(8, 4)), ("succeeded", at(8, 5)), ("succeeded", at(8, 6))]
        assert all(r["skipped_count"] == 0 for r in runs)
        # in order, one after the other (catch-up runs never overlap, even under concurrency forbid)
        assert runs[0]["finished_at_ms"] <= runs[1]["started_at_ms"] <= runs[2]["started_at_ms"]

    asyncio.run(main())


def test_catch_up_collapses_a_longer_backlog_to_one_run(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        await _outage(rt, "catch_up", until=at(8, 10, 45))
        runs = rt.runs("r")[3:]
        assert [(r["status"], r["scheduled_at_ms"]) for r in runs] == [("succeeded", at(8, 10))]
        assert runs[0]["skipped_count"] == 6

    asyncio.run(main())


def test_a_late_tick_within_grace_is_not_a_misfire(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        every_minute(rt, misfire="ignore", misfire_grace="30s")
        rt.clock.set(at(8, 1, 29))
        await rt.tick()
        (r,) = rt.runs("r")
        assert r["status"] == "succeeded" and r["scheduled_at_ms"] == at(8, 1) and r["skipped_count"] == 0

    asyncio.run(main())


def test_long_outage_of_a_one_second_routine_is_counted_not_replayed(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("fast", trigger={"kind": "schedule", "schedule": {"every": "1s"}})
        rt.clock.set(at(10, 0, 0))  # two hours down
        await rt.tick()
        (r,) = rt.runs("fast")
        assert r["scheduled_at_ms"] == at(10, 0) and r["skipped_count"] == 7199
        assert len(json.loads(r["skipped_times"])) == 1000  # the list is capped; the count is exact
        assert rt.journal.get_job("fast")["next_run_at_unix_ms"] == at(10, 0, 1)

    asyncio.run(main())


def test_jitter_delays_each_occurrence_deterministically_and_keeps_the_nominal_key(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        every_minute(rt, "j", jitter="30s")
        await rt.run_until(at(8, 4))
        runs = rt.runs("j")
        nominals = [at(8, 1), at(8, 2), at(8, 3)]
        offsets = [jitter_offset_ms("j", n, 30_000) for n in nominals]
        assert [r["scheduled_at_ms"] for r in runs] == nominals
        assert [r["started_at_ms"] for r in runs] == [n + o for n, o in zip(nominals, offsets, strict=True)]
        assert all(0 <= o <= 30_000 for o in offsets) and len(set(offsets)) > 1

    asyncio.run(main())


def test_editing_a_schedule_never_fires_by_itself_or_replays_the_past(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        every_minute(rt)
        await rt.run_until(at(8, 2, 30))
        rt.clock.set(at(8, 2, 40))
        rt.routine("r", trigger={"kind": "schedule", "schedule": {"every": "5m"}})  # the edit
        await rt.tick()
        assert len(rt.runs("r")) == 2
        await rt.run_until(at(8, 8))
        assert [r["scheduled_at_ms"] for r in rt.runs("r")[2:]] == [at(8, 7, 40)]

    asyncio.run(main())


def test_one_shot_at_fires_once_and_the_job_stops(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("once", trigger={"kind": "schedule", "schedule": {"at": "2026-03-02T10:00:00+01:00"}})
        await rt.run_until(at(12, 0))
        assert [r["scheduled_at_ms"] for r in rt.runs("once")] == [at(9, 0)]
        assert rt.journal.get_job("once")["next_run_at_unix_ms"] is None

    asyncio.run(main())


def test_two_schedulers_on_one_journal_never_dispatch_an_occurrence_twice(runtime_factory, tmp_path) -> None:
    from palyra_ops.gateway import Gateway
    from palyra_ops.journal import open_journal
    from palyra_ops.scheduler import Scheduler

    async def main() -> None:
        rt = runtime_factory(T0)
        for i in range(5):
            every_minute(rt, f"r{i}")
        other_journal = open_journal(rt.journal.path, clock=rt.clock)
        other_gw = Gateway(other_journal, rt.clock, sleep_until=rt.timers.sleep_until, daemon_id="other")
        other = Scheduler(other_journal, rt.clock, gateway=other_gw, daemon_id="other")
        rt.clock.set(at(8, 1))
        stale = other_journal.due_jobs(rt.clock.now_ms())  # B read the due jobs ...
        await rt.tick()  # ... A claims them ...
        orig = other_journal.due_jobs
        other_journal.due_jobs = lambda now, limit=64: stale if orig(now, limit) == [] and stale else orig(now, limit)
        claimed = await other.tick()  # ... and B, working on its stale read, must claim nothing
        stale = []
        assert claimed == 0
        runs = rt.runs()
        assert len(runs) == 5 and len({r["occurrence_key"] for r in runs}) == 5
        await other_gw.drain()
        other_journal.close()

    asyncio.run(main())


def test_claim_is_compare_and_swap_on_the_job_position(runtime_factory) -> None:
    rt = runtime_factory(T0)
    every_minute(rt)
    row = {"routine_id": "r", "occurrence_key": f"r|{at(8, 1)}", "scheduled_at_ms": at(8, 1),
           "trigger_kind": "schedule", "status": "accepted"}
    assert rt.journal.claim_occurrences([("r", at(8, 0)), ][:0]) == []
    assert rt.journal.claim_occurrences([("r", at(8, 0), [row], {"next_run_at_unix_ms": at(8, 2)})]) == [None]
    ok = rt.journal.claim_occurrences([("r", at(8, 1), [row], {"next_run_at_unix_ms": at(8, 2)})])
    assert ok is not None and ok[0] is not None and ok[0][0] is not None
    # the same occurrence again (a restarted scheduler that somehow saw the old position): not inserted
    rt.journal.update_job("r", next_run_at_unix_ms=at(8, 1))
    again = rt.journal.claim_occurrences([("r", at(8, 1), [dict(row)], {"next_run_at_unix_ms": at(8, 2)})])
    assert again == [[None]]
    assert len(rt.runs("r")) == 1
