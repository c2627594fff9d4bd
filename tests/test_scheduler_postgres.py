"""Two schedulers on one PostgreSQL journal, one with its clock 60 s ahead (issue 10, acceptance).

In process and in real time: each scheduler has its own store handle, gateway and clock, as two
daemons on two machines would. The one whose clock runs ahead must neither fire an occurrence before
its instant (by the true clock) nor fire one the other already fired; between them every instant
of the run is fired exactly once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from palyra_ops.clock import SystemClock
from palyra_ops.gateway import Gateway
from palyra_ops.journal import open_journal
from palyra_ops.messages import RunMessage
from palyra_ops.model import Resource
from palyra_ops.reconcile import upsert_resource
from palyra_ops.scheduler import Scheduler


class OffsetClock:
    """The system clock off by `offset_ms` (a machine whose clock is wrong)."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


def _run_schedulers(pg_url: str, clocks: dict[str, Any], seconds: float) -> list[tuple[str, int, int]]:
    """Run one scheduler per clock on the journal for `seconds`; what each dispatched, and when."""
    fired: list[tuple[str, int, int]] = []  # (scheduler, nominal instant, true wall time at dispatch)

    with open_journal(pg_url) as setup:
        upsert_resource(setup, Resource.from_spec("Routine", "tick", {
            "prompt": "tick", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}}), origin="test")

    async def main() -> None:
        schedulers: list[Scheduler] = []
        gateways: list[Gateway] = []
        handles = []
        for name, clock in clocks.items():
            j = open_journal(pg_url, clock=clock)
            handles.append(j)
            gw = Gateway(j, clock, daemon_id=name)
            gateways.append(gw)

            def recorder(gw: Gateway, name: str) -> Any:
                async def send(msg: RunMessage) -> Any:
                    fired.append((name, int(msg["trigger"]["scheduled_at_ms"] or 0), time.time_ns() // 1_000_000))
                    return await gw.send(msg)
                return send

            schedulers.append(Scheduler(j, clock, gateway=gw, daemon_id=name, send=recorder(gw, name), lead_ms=5))
        loops = [asyncio.ensure_future(s.run_forever()) for s in schedulers]
        await asyncio.sleep(seconds)
        for s in schedulers:
            await s.stop()
        await asyncio.gather(*loops, return_exceptions=True)
        for gw in gateways:
            await gw.shutdown()
        for j in handles:
            j.close()

    asyncio.run(main())
    return fired


def _check(pg_url: str, fired: list[tuple[str, int, int]]) -> None:
    assert len(fired) >= 3, fired
    early = [(who, n, wall) for who, n, wall in fired if wall < n - 10]  # 10 ms: the claim lead and rounding
    assert early == [], early
    instants = [n for _, n, _ in fired]
    assert len(instants) == len(set(instants)), f"an instant fired twice: {sorted(instants)}"
    with open_journal(pg_url) as j:
        runs = j.runs_with_occurrences("tick")
    nominal = sorted(r["scheduled_at_ms"] for r in runs)
    assert nominal == sorted(instants)
    assert all(b - a == 1000 for a, b in zip(nominal, nominal[1:], strict=False)), nominal  # none missing


def test_a_scheduler_60s_ahead_neither_fires_early_nor_twice(pg_url: str) -> None:
    """Beside a scheduler with a true clock: the database's clock decides, not the fastest machine."""
    fired = _run_schedulers(pg_url, {"ahead": OffsetClock(60_000), "true": SystemClock()}, 5)
    _check(pg_url, fired)


def test_a_scheduler_60s_ahead_alone_fires_every_instant_on_time(pg_url: str) -> None:
    """Alone, it still fires: it plans with the database's now, not its own (nor never)."""
    fired = _run_schedulers(pg_url, {"ahead": OffsetClock(60_000)}, 4)
    _check(pg_url, fired)
    late = [(n, wall) for _, n, wall in fired[1:] if wall - n > 900]
    assert late == [], late
