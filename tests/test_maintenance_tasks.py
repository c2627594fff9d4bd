"""The daemon's periodic task runner: runs off the loop, never overlaps, reports health."""

from __future__ import annotations

import asyncio
import threading
import time

from palyra_ops.clock import SystemClock
from palyra_ops.maintenance import MaintenanceTasks


def test_tasks_run_periodically_in_threads_and_report_health() -> None:
    loop_thread = threading.get_ident()
    seen_threads: list[int] = []
    calls = {"slow": 0}

    def ok() -> dict:
        seen_threads.append(threading.get_ident())
        return {"freed": 3}

    def slow() -> None:
        calls["slow"] += 1
        time.sleep(0.25)  # longer than its interval: must not overlap with itself

    def boom() -> None:
        raise RuntimeError("disk on fire")

    async def scenario() -> MaintenanceTasks:
        tasks = MaintenanceTasks(SystemClock())
        tasks.add("ok", 40, ok, first_run_ms=0)
        tasks.add("slow", 20, slow, first_run_ms=0)
        tasks.add("boom", 40, boom, first_run_ms=0)
        tasks.add("off", 0, ok)
        runner = asyncio.ensure_future(tasks.run_forever())
        await asyncio.sleep(0.4)
        tasks.stop()
        await asyncio.wait_for(runner, 5)
        await asyncio.sleep(0.3)  # let in-flight threads finish
        return tasks

    tasks = asyncio.run(scenario())
    h = tasks.health
    assert h["ok"]["outcome"] == "ok" and h["ok"]["detail"] == {"freed": 3} and h["ok"]["runs"] >= 3
    assert loop_thread not in seen_threads
    assert h["boom"]["outcome"] == "failed" and h["boom"]["detail"] == "RuntimeError: disk on fire"
    assert h["off"] == {**h["off"], "enabled": False, "runs": 0, "next_run_at": None}
    assert 1 <= calls["slow"] <= 2  # 0.4 s / 0.25 s per run, never two at once
    assert h["ok"]["last_run_at"].endswith("+00:00") and h["ok"]["duration_ms"] >= 0
