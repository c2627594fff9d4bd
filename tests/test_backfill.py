"""Backfill (SPEC §12): exactly the missing instants of a range, oldest first, through the gates.

In-process on a FakeClock (real scheduler dispatch path and gateway), then the real daemon for the
API and the CLI.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from palyra_ops.backfill import MAX_INSTANTS, claim_backfill, plan_backfill
from palyra_ops.cli import main
from palyra_ops.clock import rfc3339, to_ms
from palyra_ops.errors import InvalidInput
from palyra_ops.model import Routine

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
H = 3_600_000


def t(hours: float) -> int:
    return to_ms(T0) + int(hours * H)


def hourly(rt: Any, name: str, **spec: Any) -> Routine:
    rt.routine(name, trigger={"kind": "schedule", "schedule": {"cron": "0 * * * *"}}, **spec)
    return Routine.from_resource(rt.journal.get_resource("Routine", name))


async def backfill(rt: Any, routine: Routine, start: int, end: int) -> list[tuple[int, str]]:
    plan = plan_backfill(rt.journal, routine, start, end, rt.clock.now_ms())
    claimed = claim_backfill(rt.journal, plan, daemon_id="test-daemon")
    rt.scheduler.dispatch_claimed([rt.gateway.message_for(routine, trigger_kind="backfill", scheduled_at_ms=n, run_id=i,
                                                          catch_up=plan.in_order) for n, i in claimed],
                                  in_order=plan.in_order)
    return claimed


def test_backfill_runs_exactly_the_missing_instants_oldest_first_without_overlap(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        routine = hourly(rt, "report", labels={"echo-sleep": "10m"})  # forbid (the default), 10 min per run
        # the scheduler ran 03:00 and 04:00 (the daemon was down before)
        for hour in (3, 4):
            rt.clock.set(t(hour))
            await rt.scheduler.tick()
            await rt.advance(11 * 60_000)
        assert [(r["scheduled_at_ms"], r["status"]) for r in rt.runs("report")] == [
            (t(3), "succeeded"), (t(4), "succeeded")]
        rt.clock.set(t(5) - 60_000)  # 04:59: the range is all in the past
        plan = plan_backfill(rt.journal, routine, t(0), t(4.5), rt.clock.now_ms())
        assert (plan.instants, plan.already, plan.in_order) == ([t(0), t(1), t(2)], [t(3), t(4)], True)
        claimed = await backfill(rt, routine, t(0), t(4.5))
        assert [n for n, _ in claimed] == [t(0), t(1), t(2)]
        await rt.advance(35 * 60_000)
        runs = [r for r in rt.runs("report") if r["trigger_kind"] == "backfill"]
        assert [(r["scheduled_at_ms"], r["status"], r["occurrence_key"]) for r in runs] == [
            (t(n), "succeeded", f"report|{t(n)}") for n in (0, 1, 2)]
        # one after the other, oldest first: forbid never overlapped, and skipped none
        for a, b in zip(runs, runs[1:], strict=False):
            assert a["finished_at_ms"] <= b["started_at_ms"]
        # the same backfill again runs nothing: every instant of the range has its run now
        again = plan_backfill(rt.journal, routine, t(0), t(4.5), rt.clock.now_ms())
        assert (again.instants, again.already) == ([], [t(0), t(1), t(2), t(3), t(4)])
        assert await backfill(rt, routine, t(0), t(4.5)) == []

    asyncio.run(main_())


def test_allow_sends_at_once_and_a_paused_routine_still_backfills(runtime_factory) -> None:
    async def main_() -> None:
        from palyra_ops import pause

        rt = runtime_factory(T0)
        routine = hourly(rt, "par", labels={"echo-sleep": "10m"}, policies={"concurrency": "allow"})
        pause.pause(rt.journal, "par", note="quiet week", by="user:ops")
        rt.clock.set(t(3) + 1)
        await rt.tick()  # 03:00 is due: recorded as paused
        assert [(r["scheduled_at_ms"], r["reason"]) for r in rt.runs("par")] == [(t(3), "paused: quiet week")]
        plan = plan_backfill(rt.journal, routine, t(0), t(3), rt.clock.now_ms())
        assert (plan.instants, plan.already, plan.in_order) == ([t(0), t(1), t(2)], [t(3)], False)
        await backfill(rt, routine, t(0), t(3))
        await rt.advance(1_000)
        running = [r for r in rt.runs("par") if r["trigger_kind"] == "backfill"]
        assert [r["status"] for r in running] == ["running"] * 3  # allow: all three at once
        await rt.advance(11 * 60_000)
        assert [r["status"] for r in rt.runs("par") if r["trigger_kind"] == "backfill"] == ["succeeded"] * 3

    asyncio.run(main_())


def test_backfill_refuses_what_cannot_be_meant(runtime_factory) -> None:
    rt = runtime_factory(T0)
    routine = hourly(rt, "r")
    now = t(100)
    with pytest.raises(InvalidInput, match="^--from is after --to$"):
        plan_backfill(rt.journal, routine, t(2), t(1), now)
    with pytest.raises(InvalidInput, match="--to is in the future"):
        plan_backfill(rt.journal, routine, t(1), t(101), now)
    with pytest.raises(InvalidInput, match=f"more than {MAX_INSTANTS} instants of 'r'"):
        plan_backfill(rt.journal, routine, t(-2000), t(0), now)
    assert len(plan_backfill(rt.journal, routine, t(-999), t(0), now).instants) == MAX_INSTANTS
    rt.routine("m")  # manual trigger
    manual = Routine.from_resource(rt.journal.get_resource("Routine", "m"))
    with pytest.raises(InvalidInput, match="routine 'm' has no schedule"):
        plan_backfill(rt.journal, manual, t(0), t(1), now)


# -- the real daemon --------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], daemon: Any, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--url", daemon.base_url, "--token", daemon.token])
    out, err = capsys.readouterr()
    return code, out, err


def test_backfill_cli_and_api_on_the_real_daemon(daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.write("m.yaml", {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "minutely"},
                            "spec": {"prompt": "tick", "trigger": {"kind": "schedule", "schedule": {"cron": "* * * * *"}}}})
    daemon.apply()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = rfc3339(to_ms(now) - 5 * 60_000), rfc3339(to_ms(now) - 3 * 60_000)
    code, out, err = cli(capsys, daemon, "backfill", "minutely", "--from", start, "--to", end, "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == f"backfill of minutely from {start} to {end} (dry run): would run 3 instants, one after the other"
    code, out, err = cli(capsys, daemon, "backfill", "minutely", "--from", start, "--to", end, "--output", "json")
    assert code == 0, err
    result = json.loads(out)
    assert [r["scheduled_at"] for r in result["runs"]] == [rfc3339(to_ms(now) - m * 60_000) for m in (5, 4, 3)]

    def finished() -> Any:
        rows = [r for r in daemon.runs("minutely") if r["trigger_kind"] == "backfill"]
        return rows if len(rows) == 3 and all(r["status"] == "succeeded" for r in rows) else None

    rows = daemon.wait_for(finished, what="three backfilled runs")
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in result["runs"]]
    code, out, err = cli(capsys, daemon, "cron", "logs", "minutely", "--output", "json")
    assert code == 0, err
    assert sorted(r["trigger_kind"] for r in json.loads(out) if r["trigger_kind"] == "backfill") == ["backfill"] * 3
    # again: nothing left to run in that range
    code, out, err = cli(capsys, daemon, "backfill", "minutely", "--from", start, "--to", end)
    assert code == 0 and out.splitlines()[0].startswith("backfill of minutely from ") and ": 0 runs sent" in out, err
    assert "already run, left alone: 3 instants" in out

    c = daemon.client()
    path = "/console/v1/routines/minutely/backfill"
    assert c.post(path, json={"from": "yesterday", "to": end}).json()["error"]["message"].startswith(
        "from: 'yesterday' is not an RFC 3339 date-time")
    assert c.post(path, json={"from": start}).status_code == 400
    assert c.post(path, json={"from": start, "to": end, "dry_run": "yes"}).status_code == 400
    assert c.post(path, json={"from": start, "to": end, "extra": 1}).status_code == 400
    assert c.post("/console/v1/routines/ghost/backfill", json={"from": start, "to": end}).status_code == 404
    code, _, err = cli(capsys, daemon, "backfill", "minutely", "--from", end, "--to", start)
    assert (code, err) == (1, "palyra-ops: --from is after --to\n")
