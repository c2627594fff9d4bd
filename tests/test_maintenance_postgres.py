"""Maintenance on one daemon at a time on a PostgreSQL journal (SPEC §11, issue 10 point 5).

Two handles on one database stand for two daemons: the journal's `maintenance_lock` is held by one
at a time (an advisory lock, tried, never waited for), and two task runners sharing the journal
never run one task at the same moment — the one that finds the lock taken records `skipped`.
"""

from __future__ import annotations

import asyncio
import threading
import time

from palyra_ops.clock import SystemClock
from palyra_ops.journal import open_journal
from palyra_ops.maintenance import MaintenanceTasks


def test_the_maintenance_lock_is_held_by_one_handle_at_a_time(pg_url: str, tmp_path) -> None:
    with open_journal(pg_url) as a, open_journal(pg_url) as b:
        with a.maintenance_lock("memory.maintain") as got_a:
            assert got_a is True
            t0 = time.monotonic()
            with b.maintenance_lock("memory.maintain") as got_b:
                assert got_b is False  # a peer has it: not waited for
            assert time.monotonic() - t0 < 2
            with b.maintenance_lock("skills.audit") as other:
                assert other is True  # per task
        with b.maintenance_lock("memory.maintain") as again:
            assert again is True  # released with the block
    with open_journal(tmp_path / "j.sqlite3") as lite, lite.maintenance_lock("x") as got:
        assert got is True  # SQLite: one daemon holds the journal


def test_two_daemons_task_runners_never_run_one_task_at_once(pg_url: str) -> None:
    running = 0
    peak = 0
    ran = {"a": 0, "b": 0}
    guard = threading.Lock()

    def task(who: str) -> None:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
            ran[who] += 1
        time.sleep(0.15)
        with guard:
            running -= 1

    async def scenario(ja, jb) -> tuple[MaintenanceTasks, MaintenanceTasks]:
        ta = MaintenanceTasks(SystemClock(), exclusive=ja.maintenance_lock)
        tb = MaintenanceTasks(SystemClock(), exclusive=jb.maintenance_lock)
        ta.add("retention", 20, lambda: task("a"), first_run_ms=0)
        tb.add("retention", 20, lambda: task("b"), first_run_ms=0)
        runners = [asyncio.ensure_future(t.run_forever()) for t in (ta, tb)]
        await asyncio.sleep(1.5)
        for t in (ta, tb):
            t.stop()
        await asyncio.wait_for(asyncio.gather(*runners), 10)
        await asyncio.sleep(0.5)  # in-flight runs finish
        return ta, tb

    with open_journal(pg_url) as ja, open_journal(pg_url) as jb:
        ta, tb = asyncio.run(scenario(ja, jb))
    assert peak == 1, "two daemons ran one maintenance task at the same time"
    assert ran["a"] + ran["b"] >= 3
    outcomes = {ta.health["retention"]["outcome"], tb.health["retention"]["outcome"]}
    assert outcomes <= {"ok", "skipped"}
    skipped = [t for t in (ta, tb) if t.health["retention"]["outcome"] == "skipped"]
    assert all(t.health["retention"]["detail"] == "running on another daemon" for t in skipped)
