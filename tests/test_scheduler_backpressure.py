"""Overload is graceful (issue 14): the scheduler claims only what it can dispatch soon, a backlog
held back past `misfire_grace` follows the misfire policy when it is claimed, and both are visible.

A FakeClock runtime with a send that blocks until the test lets it go stands for a gateway that
cannot keep up, so every count below is exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime

from palyra_ops.clock import to_ms
from palyra_ops.messages import RunMessage
from palyra_ops.scheduler import Scheduler

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def at(h: int, m: int, s: int = 0) -> int:
    return to_ms(datetime(2026, 3, 2, h, m, s, tzinfo=UTC))


class Gate:
    """A send that holds every call until `open()`; records what reached it, in order."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self.sent: list[str] = []
        self.event = asyncio.Event()

    async def __call__(self, msg: RunMessage) -> Mapping[str, object]:
        await self.event.wait()
        self.sent.append(f"{msg['routine_id']}@{msg['trigger']['scheduled_at_ms']}")
        return await self.rt.gateway.send(msg)

    def open(self) -> None:
        self.event.set()


def setup(rt, n: int, *, in_flight: int, claim_ahead: int, **policies) -> Gate:
    gate = Gate(rt)
    rt.scheduler = Scheduler(rt.journal, rt.clock, gateway=rt.gateway, daemon_id="test-daemon",
                             max_in_flight=in_flight, claim_ahead=claim_ahead, send=gate)
    for i in range(n):
        rt.routine(f"r{i}", trigger={"kind": "schedule", "schedule": {"every": "1m"}}, policies=policies)
    return gate


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def test_claims_stop_at_the_dispatch_capacity_and_the_rest_stays_due(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        gate = setup(rt, 10, in_flight=2, claim_ahead=4)
        rt.clock.set(at(8, 1))
        # 2 in flight (held at the gate) + 4 claimed and waiting for a slot; 4 stay due in the journal
        assert await rt.scheduler.tick() == 6
        await settle()
        assert len(rt.runs()) == 6 and rt.statuses() == ["accepted"] * 6
        assert len(rt.scheduler._unsent) == 4
        st = rt.scheduler.status()
        assert st["claimed_unsent"] == 4 and st["backpressured"] is True and st["due_backlog"] == 4
        assert rt.gateway.metrics.due_backlog == 4 and rt.gateway.metrics.claimed_unsent == 4
        assert "palyra_claimed_unsent 4" in rt.gateway.metrics.render()
        assert await rt.scheduler.tick() == 0  # still full: nothing more is claimed
        assert len(rt.runs()) == 6
        gate.open()
        await rt.scheduler.drain()
        await settle()
        assert rt.scheduler.status()["claimed_unsent"] == 0
        assert await rt.scheduler.tick() == 4
        await rt.scheduler.drain()
        await settle()
        runs = rt.runs()
        assert sorted(r["routine_id"] for r in runs) == sorted(f"r{i}" for i in range(10))
        assert {r["scheduled_at_ms"] for r in runs} == {at(8, 1)}
        assert [r["status"] for r in runs] == ["succeeded"] * 10
        assert len(gate.sent) == 10 and rt.scheduler.status()["backpressured"] is False
        await rt.close()

    asyncio.run(main())


async def _play_held_back(rt, gate: Gate, until: int) -> tuple[set[str], list[dict]]:
    """3 routines on `every: 1m`, 1 slot + 1 waiting: at 08:01 two are claimed (one at the gate, one
    waiting), the third stays due; the gateway is stuck until `until`. Returns the routines claimed
    on time and the runs after 08:01."""
    rt.clock.set(at(8, 1))
    assert await rt.scheduler.tick() == 2
    rt.clock.set(until)  # the gateway stayed stuck until then
    gate.open()
    await rt.scheduler.drain()
    await settle()
    for _ in range(4):
        await rt.scheduler.tick()
        await rt.scheduler.drain()
        await settle()
    on_time = [r for r in rt.runs() if r["scheduled_at_ms"] == at(8, 1)]
    assert [r["status"] for r in on_time] == ["succeeded"] * 2
    return {r["routine_id"] for r in on_time}, [r for r in rt.runs() if r["scheduled_at_ms"] != at(8, 1)]


def test_a_backlog_held_past_misfire_grace_follows_fire_once(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        gate = setup(rt, 3, in_flight=1, claim_ahead=1, misfire="fire_once", misfire_grace="30s")
        first, later = await _play_held_back(rt, gate, at(8, 3, 45))
        (held,) = {"r0", "r1", "r2"} - first
        # one run each for 08:03; the times before it, later than the 30 s grace, were shed and recorded
        assert sorted((r["routine_id"], r["status"], r["scheduled_at_ms"], r["skipped_count"]) for r in later) == sorted(
            [(rid, "succeeded", at(8, 3), 1) for rid in first] + [(held, "succeeded", at(8, 3), 2)])
        for r in later:
            want = [at(8, 2)] if r["routine_id"] in first else [at(8, 1), at(8, 2)]
            assert json.loads(r["skipped_times"]) == want
        assert rt.gateway.metrics.missed == {"fire_once": 4}
        assert 'palyra_missed_runs_total{policy="fire_once"} 4' in rt.gateway.metrics.render()
        assert rt.scheduler.status()["misfire_shed_total"] == 4
        assert rt.scheduler.status()["backpressured"] is False
        await rt.close()

    asyncio.run(main())


def test_a_backlog_held_past_misfire_grace_follows_ignore(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        gate = setup(rt, 3, in_flight=1, claim_ahead=1, misfire="ignore", misfire_grace="30s")
        first, later = await _play_held_back(rt, gate, at(8, 2, 40))
        (held,) = {"r0", "r1", "r2"} - first
        # nothing runs for a missed time: one skipped record each names what was dropped
        assert sorted((r["routine_id"], r["status"], r["scheduled_at_ms"], r["skipped_count"]) for r in later) == sorted(
            [(rid, "skipped", at(8, 2), 1) for rid in first] + [(held, "skipped", at(8, 2), 2)])
        assert rt.gateway.metrics.missed == {"ignore": 4}
        await rt.close()

    asyncio.run(main())


def test_stop_cancels_the_claimed_but_unsent_runs_and_frees_the_capacity(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        setup(rt, 5, in_flight=1, claim_ahead=3)
        rt.clock.set(at(8, 1))
        assert await rt.scheduler.tick() == 4  # 1 at the gate, 3 waiting for the slot
        await settle()
        await rt.scheduler.stop()
        assert rt.scheduler.status()["claimed_unsent"] == 0
        assert sorted(rt.statuses()) == ["cancelled"] * 4
        assert {r["reason"] for r in rt.runs()} == {"daemon_shutdown"}
        await rt.close()

    asyncio.run(main())


def test_on_time_instants_claimed_together_run_once_under_forbid(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        gate = Gate(rt)
        rt.scheduler = Scheduler(rt.journal, rt.clock, gateway=rt.gateway, daemon_id="test-daemon",
                                 max_in_flight=1, claim_ahead=1, send=gate)
        for i in range(3):
            rt.routine(f"r{i}", trigger={"kind": "schedule", "schedule": {"every": "10s"}},
                       policies={"misfire_grace": "60s"})  # concurrency: forbid (the default)
        rt.clock.set(at(8, 0, 10))
        assert await rt.scheduler.tick() == 2
        rt.clock.set(at(8, 0, 45))  # held back 35 s: within the grace, so nothing is a misfire
        gate.open()
        await rt.scheduler.drain()
        await settle()
        for _ in range(4):
            await rt.scheduler.tick()
            await rt.scheduler.drain()
            await settle()
        first = {r["routine_id"] for r in rt.runs() if r["scheduled_at_ms"] == at(8, 0, 10) and r["status"] == "succeeded"}
        (held,) = {"r0", "r1", "r2"} - first
        why = "concurrency: forbid (claimed together with the run for 2026-03-02T08:00:40+00:00, which runs instead)"
        later = [r for r in rt.runs() if (r["routine_id"], r["scheduled_at_ms"]) not in {(f, at(8, 0, 10)) for f in first}]
        want = [(rid, at(8, 0, s), "skipped", why) for rid in first for s in (20, 30)]
        want += [(held, at(8, 0, s), "skipped", why) for s in (10, 20, 30)]
        want += [(rid, at(8, 0, 40), "succeeded", None) for rid in ("r0", "r1", "r2")]
        assert sorted((r["routine_id"], r["scheduled_at_ms"], r["status"], r["reason"]) for r in later) == sorted(want)
        assert all(r["skipped_count"] in (None, 0) for r in later)
        assert rt.gateway.metrics.missed == {}
        assert rt.gateway.metrics.gates[("concurrency", "skipped")] == 7
        assert len(gate.sent) == 5  # 2 on time + 3 latest: no call made only to be skipped
        await rt.close()

    asyncio.run(main())


def test_runs_claimed_ahead_of_their_instant_are_bounded_and_not_backpressure(runtime_factory, monkeypatch) -> None:
    """The daemon claims a herd up to `lead_ms` before it is due (issue 14): those runs wait for their
    instant outside the backpressure count, at most `early_max` of them; records carry the real time."""
    async def main() -> None:
        rt = runtime_factory(T0)
        gate = Gate(rt)
        rt.scheduler = Scheduler(rt.journal, rt.clock, gateway=rt.gateway, daemon_id="test-daemon",
                                 max_in_flight=1, claim_ahead=1, send=gate, lead_ms=60_000, early_max=3)
        for i in range(5):
            rt.routine(f"r{i}", trigger={"kind": "schedule", "schedule": {"every": "1m"}})
        rt.clock.set(at(8, 0, 30))  # every routine is due at 8:01, within the lead
        instant = asyncio.Event()  # the sends wait for the wall clock's instant: here, for the test

        async def until(t: float) -> None:
            await instant.wait()

        monkeypatch.setattr("palyra_ops.scheduler._sleep_until_wall", until)
        monkeypatch.setattr("palyra_ops.scheduler_batch._sleep_until_wall", until)
        assert await rt.scheduler.tick() == 3  # early_max, although claim_ahead is 1
        await settle()
        st = rt.scheduler.status()
        assert st["claimed_early"] == 3 and st["claimed_unsent"] == 0 and st["backpressured"] is False
        assert {r["created_at_ms"] for r in rt.runs()} == {at(8, 0, 30)}  # the claim's real time
        assert await rt.scheduler.tick() == 0  # the early slots are full
        instant.set()
        await settle()
        st = rt.scheduler.status()  # due now: one sent (held at the gate), two wait for the slot
        assert st["claimed_early"] == 0 and st["claimed_unsent"] == 2
        assert await rt.scheduler.tick() == 0 and rt.scheduler.status()["backpressured"] is True
        gate.open()
        await rt.scheduler.drain()
        await settle()
        assert rt.scheduler.status()["claimed_early"] == 0
        assert await rt.scheduler.tick() == 2
        await rt.scheduler.drain()
        await settle()
        assert len(gate.sent) == 5 and len({r["occurrence_key"] for r in rt.runs()}) == 5

    asyncio.run(main())
