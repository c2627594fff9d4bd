"""What happens to a claimed run when its loopback dispatch fails or the daemon stops first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from palyra_ops.clock import to_ms
from palyra_ops.errors import Unavailable

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_a_failed_dispatch_is_recorded_on_the_claimed_run(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("r", trigger={"kind": "schedule", "schedule": {"every": "1m"}})

        async def refuse(msg):
            raise Unavailable("gateway answered HTTP 503")

        rt.scheduler.send = refuse
        rt.clock.set(to_ms(T0) + 60_000)
        assert await rt.tick() == 1
        (r,) = rt.runs("r")
        assert r["status"] == "failed" and r["reason"] == "dispatch_failed: gateway answered HTTP 503"
        assert rt.scheduler.status()["dispatch_errors_total"] == 1
        assert "palyra_dispatch_errors_total 1" in rt.gateway.metrics.render()

    asyncio.run(main())


def test_stopping_before_dispatch_cancels_the_claimed_runs(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        for i in range(3):
            rt.routine(f"r{i}", trigger={"kind": "schedule", "schedule": {"every": "1m"}})
        gate = asyncio.Event()

        async def stuck(msg):
            await gate.wait()

        rt.scheduler.send = stuck
        rt.clock.set(to_ms(T0) + 60_000)
        await rt.scheduler.tick()
        await asyncio.sleep(0)
        await rt.scheduler.stop()
        assert rt.statuses() == ["cancelled"] * 3
        assert {r["reason"] for r in rt.runs()} == {"daemon_shutdown"}

    asyncio.run(main())


def test_status_reports_backlog_and_next_due(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("r", trigger={"kind": "schedule", "schedule": {"every": "1m"}})
        st = rt.scheduler.status()
        assert st["next_due_at"] == "2026-03-02T08:01:00+00:00" and st["due_backlog"] == 0
        rt.clock.set(to_ms(T0) + 61_000)
        assert rt.scheduler.status()["due_backlog"] == 1
        await rt.tick()
        st = rt.scheduler.status()
        assert st["due_backlog"] == 0 and st["claimed_total"] == 1 and st["last_tick_at"] == "2026-03-02T08:01:01+00:00"

    asyncio.run(main())
