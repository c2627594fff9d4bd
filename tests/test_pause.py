"""Pause / resume and pause_after_failures (SPEC §12).

In-process on a FakeClock for exact instants (the real scheduler and gateway, no HTTP), then the
real daemon for the API, the CLI, plan and status.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from minute_clock import T0, every_minute, t

from palyra_ops import pause
from palyra_ops.cli import main
from palyra_ops.errors import NotFound


async def at(rt: Any, minutes: float) -> None:
    rt.clock.set(t(minutes))
    await rt.tick()
    await rt.gateway.drain()


def test_a_paused_routine_records_its_due_times_as_skipped_and_resume_continues(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        every_minute(rt, "tick")
        await at(rt, 1)
        assert rt.statuses("tick") == ["succeeded"]
        state = pause.pause(rt.journal, "tick", note="maintenance window", by="user:ops")
        assert (state.paused, state.note, state.by, state.at_ms) == (True, "maintenance window", "user:ops", t(1))
        await at(rt, 2)
        await at(rt, 3)
        runs = rt.runs("tick")
        assert [(r["scheduled_at_ms"], r["status"], r["reason"]) for r in runs[1:]] == [
            (t(2), "skipped", "paused: maintenance window"), (t(3), "skipped", "paused: maintenance window")]
        # an operator's own run still goes through while paused
        manual = await rt.gateway.dispatch("tick")
        await rt.gateway.drain()
        assert rt.journal.get_run(manual["run_id"])["status"] == "succeeded"
        pause.resume(rt.journal, "tick")
        await at(rt, 4)
        last = rt.runs("tick")[-1]
        # resume continues from the next due time: the paused times are not replayed
        assert (last["scheduled_at_ms"], last["status"]) == (t(4), "succeeded")
        assert [r["scheduled_at_ms"] for r in rt.runs("tick") if r["trigger_kind"] == "schedule"] == [
            t(1), t(2), t(3), t(4)]
        job = rt.journal.get_job("tick")
        assert (job["paused"], job["pause_note"], job["paused_by"], job["paused_at_ms"]) == (0, None, None, None)

    asyncio.run(main_())


def test_pause_without_a_note_and_of_an_unknown_routine(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        every_minute(rt, "tick")
        pause.pause(rt.journal, "tick", note=None, by="console")
        await at(rt, 1)
        assert [(r["status"], r["reason"]) for r in rt.runs("tick")] == [("skipped", "paused")]
        with pytest.raises(NotFound, match="routine 'ghost' does not exist"):
            pause.pause(rt.journal, "ghost", note=None, by="console")
        with pytest.raises(NotFound, match="routine 'ghost' does not exist"):
            pause.resume(rt.journal, "ghost")

    asyncio.run(main_())


def test_three_failures_in_a_row_pause_the_routine_with_an_event(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        every_minute(rt, "flaky", labels={"echo-fail": "always"}, policies={"pause_after_failures": 3})
        rt.routine("pager", trigger={"kind": "system_event", "event": "routine.paused"})
        for minute in (1, 2, 3):
            await at(rt, minute)
        assert rt.statuses("flaky") == ["failed", "failed", "failed"]
        job = rt.journal.get_job("flaky")
        assert (job["paused"], job["paused_by"], job["consecutive_failures"]) == (1, "system:daemon", 3)
        assert job["pause_note"] == "3 consecutive failed runs (pause_after_failures: 3)"
        (event_run,) = rt.runs("pager")
        payload = json.loads(event_run["trigger_payload"])
        assert payload["event"] == "routine.paused"
        assert payload["data"] == {"routine_id": "flaky", "run_id": rt.runs("flaky")[2]["run_id"],
                                   "note": "3 consecutive failed runs (pause_after_failures: 3)", "by": "system:daemon"}
        await at(rt, 4)
        assert rt.runs("flaky")[-1]["reason"] == "paused: 3 consecutive failed runs (pause_after_failures: 3)"
        # resume starts the count again
        pause.resume(rt.journal, "flaky")
        assert rt.journal.get_job("flaky")["consecutive_failures"] == 0

    asyncio.run(main_())


def test_a_success_resets_the_failure_count_and_retries_count_once(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        failing = {"labels": {"echo-fail": "always"}, "policies": {"pause_after_failures": 2}}
        every_minute(rt, "r", **failing)
        await at(rt, 1)
        assert rt.journal.get_job("r")["consecutive_failures"] == 1
        every_minute(rt, "r", policies={"pause_after_failures": 2})  # fixed: the next run succeeds
        await at(rt, 2)
        assert rt.statuses("r") == ["failed", "succeeded"]
        assert rt.journal.get_job("r")["consecutive_failures"] == 0
        # a run whose first attempt fails and whose retry fails is ONE failure, not two
        every_minute(rt, "r", labels={"echo-fail": "always"},
                     policies={"pause_after_failures": 2, "retry": {"max_attempts": 2, "backoff": "1s"}})
        rt.clock.set(t(3))
        await rt.scheduler.tick()  # no drain here: the retry waits on the fake clock
        await rt.advance(2_000)
        await rt.gateway.drain()
        assert rt.statuses("r")[-2:] == ["failed", "failed"]
        job = rt.journal.get_job("r")
        assert (job["consecutive_failures"], job["paused"]) == (1, 0)

    asyncio.run(main_())


# -- the real daemon: API, CLI, plan, status ------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], daemon: Any, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--url", daemon.base_url, "--token", daemon.token])
    out, err = capsys.readouterr()
    return code, out, err


ROUTINE = {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "beat"},
           "spec": {"prompt": "beat", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}}}


def test_pause_and_resume_through_the_api_cli_plan_and_status(daemon: Any, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.write("beat.yaml", ROUTINE)
    daemon.apply()
    daemon.wait_for(lambda: any(r["status"] == "succeeded" for r in daemon.runs("beat")), what="a first run")
    code, out, err = cli(capsys, daemon, "cron", "pause", "beat", "--note", "db migration")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "paused routine beat: db migration"
    c = daemon.client()
    view = c.get("/console/v1/routines/beat").json()
    assert view["paused"] is True and view["pause"]["note"] == "db migration" and view["pause"]["by"] == "console"
    paused_at = daemon.runs("beat")[-1]["created_at_ms"]

    def skipped_paused() -> Any:
        return [r for r in daemon.runs("beat") if r["reason"] == "paused: db migration"]

    daemon.wait_for(lambda: len(skipped_paused()) >= 2, what="due times recorded as paused")
    assert all(r["status"] == "skipped" and r["trigger_kind"] == "schedule" for r in skipped_paused())

    # plan shows it, never as a change; status shows it beside the sync state
    monkeypatch.setenv("PALYRA_STATE_ROOT", str(daemon.paths.state_root))
    code = main(["plan", "--dir", str(daemon.paths.dir), "--journal", str(daemon.paths.journal), "--output", "json"])
    out, err = capsys.readouterr()
    plan = json.loads(out)
    assert code == 0 and plan["has_changes"] is False
    assert any(w.startswith("routine 'beat' is paused (db migration) by console since ") for w in plan["warnings"])
    code = main(["status", "--dir", str(daemon.paths.dir), "--journal", str(daemon.paths.journal),
                 "--detailed-exitcode", "--url", daemon.base_url, "--token", daemon.token])
    out, err = capsys.readouterr()
    assert code == 0, err  # Synced: pause is not drift
    assert "Paused (runtime state; `palyra-ops cron resume NAME`):\n  beat: db migration  (by console since " in out

    code, out, err = cli(capsys, daemon, "cron", "resume", "beat")
    assert code == 0 and out.startswith("resumed routine beat\n  next run: "), err
    assert c.get("/console/v1/routines/beat").json()["pause"] is None
    daemon.wait_for(lambda: daemon.runs("beat")[-1]["status"] == "succeeded"
                    and daemon.runs("beat")[-1]["created_at_ms"] > paused_at, what="a run after resume")

    # bad input: a clear 4xx, nothing changes
    assert c.post("/console/v1/routines/beat/pause", json={"note": 5}).status_code == 400
    assert c.post("/console/v1/routines/beat/pause", json={"why": "x"}).status_code == 400
    assert c.post("/console/v1/routines/beat/pause", json={"note": "x" * 501}).json()["error"]["message"] == (
        "note: at most 500 characters")
    assert c.post("/console/v1/routines/beat/resume", json={"now": True}).status_code == 400
    assert c.post("/console/v1/routines/ghost/pause", json={}).status_code == 404
    assert c.get("/console/v1/routines/beat").json()["paused"] is False
    code, _, err = cli(capsys, daemon, "cron", "pause", "ghost")
    assert code == 1 and err == "palyra-ops: routine 'ghost' does not exist\n"

