"""Every gate and run policy of SPEC §5 on a FakeClock, for manual, event and scheduled triggers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from palyra_ops.clock import to_ms
from palyra_ops.errors import Conflict, NotFound, PalyraError
from palyra_ops.server.errors import http_status

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
S = 1000
M = 60_000


def t(sec: float) -> int:
    return to_ms(T0) + int(sec * 1000)


def slow(rt, name: str, concurrency: str, seconds: int = 10, **spec) -> None:
    rt.routine(name, labels={"echo-sleep": f"{seconds}s"}, policies={"concurrency": concurrency, **spec.pop("policies", {})},
               **spec)


def run(main) -> None:
    asyncio.run(main())


# -- concurrency ------------------------------------------------------------------------------------


def test_forbid_records_a_skipped_run_while_one_is_active(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        slow(rt, "r", "forbid")
        a = await rt.gateway.dispatch("r")
        await rt.advance(2 * S)
        b = await rt.gateway.dispatch("r")
        assert a["status"] == "running" and b["status"] == "skipped"
        assert b["reason"] == f"concurrency: forbid (run {a['run_id']} is active)"
        assert b["finished_at_ms"] == t(2)
        await rt.advance(10 * S)
        assert rt.statuses("r") == ["succeeded", "skipped"]
        assert rt.runs("r")[0]["finished_at_ms"] == t(10)

    run(main)


def test_allow_starts_another_run(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        slow(rt, "r", "allow")
        await rt.gateway.dispatch("r")
        await rt.advance(3 * S)
        b = await rt.gateway.dispatch("r")
        assert b["status"] == "running"
        await rt.advance(20 * S)
        runs = rt.runs("r")
        assert [(r["status"], r["started_at_ms"], r["finished_at_ms"]) for r in runs] == [
            ("succeeded", t(0), t(10)), ("succeeded", t(3), t(13))]

    run(main)


def test_replace_cancels_the_active_run_and_starts_the_new_one(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        slow(rt, "r", "replace")
        a = await rt.gateway.dispatch("r")
        await rt.advance(4 * S)
        b = await rt.gateway.dispatch("r")
        await rt.advance(0)
        first, second = rt.runs("r")
        assert first["status"] == "cancelled" and first["finished_at_ms"] == t(4)
        assert first["reason"] == f"replaced: superseded by run {b['run_id']}"
        assert second["status"] == "running" and a["run_id"] == first["run_id"]
        await rt.advance(10 * S)
        assert rt.statuses("r") == ["cancelled", "succeeded"]
        assert rt.runs("r")[1]["finished_at_ms"] == t(14)

    run(main)


def test_queue_one_keeps_one_pending_run_and_starts_it_when_the_active_one_ends(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        slow(rt, "r", "queue_one")
        await rt.gateway.dispatch("r")
        b = await rt.gateway.dispatch("r")
        c = await rt.gateway.dispatch("r")
        assert b["status"] == "accepted"
        assert c["status"] == "skipped" and c["reason"] == f"concurrency: queue_one (run {b['run_id']} is already queued)"
        await rt.advance(10 * S)
        assert rt.statuses("r") == ["succeeded", "running", "skipped"]
        assert rt.runs("r")[1]["started_at_ms"] == t(10)
        await rt.advance(10 * S)
        assert rt.statuses("r") == ["succeeded", "succeeded", "skipped"]

    run(main)


def test_scheduled_triggers_pass_the_concurrency_gate_too(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("s", labels={"echo-sleep": "90s"}, trigger={"kind": "schedule", "schedule": {"every": "1m"}})
        await rt.run_until(t(3 * 60 + 1))
        runs = rt.runs("s")
        assert [(r["scheduled_at_ms"], r["status"]) for r in runs] == [
            (t(60), "succeeded"), (t(120), "skipped"), (t(180), "running")]
        assert runs[1]["reason"] == f"concurrency: forbid (run {runs[0]['run_id']} is active)"

    run(main)


# -- retries and timeout ----------------------------------------------------------------------------


def test_retries_use_capped_exponential_backoff_and_record_each_attempt(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("f", labels={"echo-fail": "3"}, policies={"retry": {"max_attempts": 4, "backoff": "20s"}})
        first = await rt.gateway.dispatch("f")
        await rt.advance(10 * M)
        runs = rt.runs("f")
        assert [(r["attempt"], r["status"], r["started_at_ms"]) for r in runs] == [
            (1, "failed", t(0)), (2, "failed", t(20)), (3, "failed", t(60)), (4, "succeeded", t(120))]
        # backoff 20s, 40s, then 80s capped at 60s
        assert [r["not_before_ms"] for r in runs] == [None, t(20), t(60), t(120)]
        assert all(r["first_run_id"] == first["run_id"] for r in runs[1:])
        assert runs[0]["reason"] == "echo backend: failing as asked by label echo-fail=3"

    run(main)


def test_last_failed_attempt_is_final_and_emits_routine_failed(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("f", labels={"echo-fail": "always"}, policies={"retry": {"max_attempts": 2, "backoff": "1s"}})
        rt.routine("on-fail", trigger={"kind": "system_event", "event": "routine.failed"})
        await rt.gateway.dispatch("f")
        await rt.advance(5 * S)
        await rt.gateway.drain()
        assert rt.statuses("f") == ["failed", "failed"]
        (ev,) = rt.runs("on-fail")
        assert ev["status"] == "succeeded" and ev["trigger_kind"] == "system_event"
        assert '"routine.failed"' in ev["trigger_payload"] and rt.runs("f")[1]["run_id"] in ev["trigger_payload"]

    run(main)


def test_timeout_cancels_the_attempt_and_fails_it(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("slow", labels={"echo-sleep": "5m"}, policies={"timeout": "30s"})
        await rt.gateway.dispatch("slow")
        await rt.advance(31 * S)
        (r,) = rt.runs("slow")
        assert r["status"] == "failed" and r["reason"] == "timeout: the run exceeded 30s"
        assert r["finished_at_ms"] == t(30)

    run(main)


def test_denied_runs_are_not_retried(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.put("Policy", "nobody", {"rules": [{"effect": "deny", "principals": ["user:*"], "actions": ["routine.run"]}]})
        rt.routine("p", owner="user:alice", policies={"retry": {"max_attempts": 3}})
        r = await rt.gateway.dispatch("p")
        await rt.advance(M)
        assert r["status"] == "denied" and r["policy_rule"] == "policy nobody rule 1"
        assert r["reason"].startswith("policy: routine.run denied for user:alice")
        assert rt.statuses("p") == ["denied"]

    run(main)


# -- cooldown, quiet hours, dedupe, disabled ------------------------------------------------------


def test_cooldown_throttles_triggers_too_soon_after_the_last_start(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("c", policies={"cooldown": "5m"})
        await rt.gateway.dispatch("c")
        await rt.advance(M)
        b = await rt.gateway.dispatch("c")
        assert b["status"] == "throttled" and b["reason"] == "cooldown: last run started 1m ago (cooldown 5m)"
        await rt.advance(4 * M)
        c = await rt.gateway.dispatch("c")
        assert c["status"] == "running"
        await rt.advance(0)
        assert rt.statuses("c") == ["succeeded", "throttled", "succeeded"]

    run(main)


def test_cooldown_applies_to_scheduled_triggers(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("c", trigger={"kind": "schedule", "schedule": {"every": "1m"}}, policies={"cooldown": "150s"})
        await rt.run_until(t(6 * 60))
        assert [(r["scheduled_at_ms"], r["status"]) for r in rt.runs("c")] == [
            (t(60), "succeeded"), (t(120), "throttled"), (t(180), "throttled"), (t(240), "succeeded"),
            (t(300), "throttled"), (t(360), "throttled")]

    run(main)


QUIET = {"start": "22:00", "end": "07:00", "timezone": "Europe/Prague"}


def test_quiet_hours_skip(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(datetime(2026, 3, 2, 21, 30, tzinfo=UTC))  # 22:30 in Prague
        rt.routine("q", quiet_hours={**QUIET, "action": "skip"})
        r = await rt.gateway.dispatch("q")
        assert r["status"] == "skipped" and r["reason"] == "quiet_hours"
        rt.clock.set(datetime(2026, 3, 3, 6, 0, tzinfo=UTC))  # 07:00 Prague: the window ended
        assert (await rt.gateway.dispatch("q"))["status"] == "running"

    run(main)


def test_quiet_hours_defer_runs_once_when_the_window_ends(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(datetime(2026, 3, 2, 21, 30, tzinfo=UTC))
        rt.routine("q", quiet_hours={**QUIET, "action": "defer"})
        a = await rt.gateway.dispatch("q")
        await rt.advance(M)
        b = await rt.gateway.dispatch("q")
        end = to_ms(datetime(2026, 3, 3, 6, 0, tzinfo=UTC))
        assert a["status"] == "accepted" and a["not_before_ms"] == end
        assert b["status"] == "skipped"
        assert b["reason"] == f"quiet_hours: run {a['run_id']} is already deferred to the window end"
        await rt.advance(end - rt.clock.now_ms())
        first = rt.runs("q")[0]
        assert first["status"] == "succeeded" and first["started_at_ms"] == end

    run(main)


def test_dedupe_key_drops_repeats(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("d", trigger={"kind": "hook", "event": "deploy"}, policies={"concurrency": "allow"})
        a = await rt.gateway.emit_event("deploy", {"v": 1}, kinds=("hook",), dedupe_key="build-7")
        b = await rt.gateway.emit_event("deploy", {"v": 1}, kinds=("hook",), dedupe_key="build-7")
        c = await rt.gateway.emit_event("deploy", {"v": 2}, kinds=("hook",), dedupe_key="build-8")
        assert [x[0]["status"] for x in (a, b, c)] == ["running", "skipped", "running"]
        assert b[0]["reason"] == f"duplicate: dedupe key 'build-7' was already used by run {a[0]['run_id']}"
        assert a[0]["trigger_kind"] == "hook"

    run(main)


def test_disabled_routine_records_a_skipped_run(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("off", enabled=False)
        r = await rt.gateway.dispatch("off")
        assert r["status"] == "skipped" and r["reason"] == "disabled"

    run(main)


def test_gates_run_in_spec_order(runtime_factory) -> None:
    """disabled before approval before dedupe before cooldown before quiet hours before policy."""

    async def main() -> None:
        rt = runtime_factory(datetime(2026, 3, 2, 21, 30, tzinfo=UTC))
        rt.put("Policy", "deny-all", {"rules": [{"effect": "deny", "principals": ["*"], "actions": ["*"]}]})
        rt.routine("g", policies={"cooldown": "1h"}, quiet_hours={**QUIET, "action": "skip"})
        r1 = await rt.gateway.dispatch("g", dedupe_key="k")
        assert (r1["status"], r1["reason"]) == ("skipped", "quiet_hours")  # quiet hours before policy
        rt.clock.set(datetime(2026, 3, 3, 12, 0, tzinfo=UTC))
        r2 = await rt.gateway.dispatch("g", dedupe_key="k")
        assert r2["status"] == "skipped" and r2["reason"].startswith("duplicate")  # dedupe before quiet/policy
        r3 = await rt.gateway.dispatch("g")
        assert r3["status"] == "denied" and r3["policy_rule"] == "policy deny-all rule 1"

    run(main)


# -- approvals ------------------------------------------------------------------------------------


def test_before_first_run_waits_for_approval_then_runs(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("a", approval="before_first_run")
        r = await rt.gateway.dispatch("a")
        assert r["status"] == "awaiting_approval"
        (ap,) = rt.journal.list_approvals()
        assert ap["kind"] == "before_first_run" and ap["run_id"] == r["run_id"]
        again = await rt.gateway.dispatch("a")
        assert again["status"] == "skipped"
        assert again["reason"] == f"awaiting_approval: approval {ap['approval_id']} is still pending"
        out = await rt.gateway.decide_approval(ap["approval_id"], True, by="user:ops")
        assert out["state"] == "approved" and out["decided_by"] == "user:ops" and out["run"]["status"] == "running"
        await rt.advance(0)
        assert rt.statuses("a") == ["succeeded", "skipped"]
        assert (await rt.gateway.dispatch("a"))["status"] == "running"  # no second approval
        with pytest.raises(Conflict):
            await rt.gateway.decide_approval(ap["approval_id"], True, by="user:ops")

    run(main)


def test_before_first_run_denied(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("a", approval="before_first_run")
        r = await rt.gateway.dispatch("a")
        out = await rt.gateway.decide_approval(r["approval_id"], False, by="user:ops")
        assert out["run"]["status"] == "denied" and out["run"]["reason"] == "approval_denied: denied by user:ops"
        later = await rt.gateway.dispatch("a")
        assert later["status"] == "denied"

    run(main)


def test_before_enable_keeps_the_routine_off_until_approved(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("e", approval="before_enable", trigger={"kind": "schedule", "schedule": {"every": "1m"}})
        await rt.run_until(t(150))
        assert rt.runs("e") == []
        r = await rt.gateway.dispatch("e")
        assert r["status"] == "skipped" and r["reason"] == "disabled: awaiting before_enable approval"
        (ap,) = rt.journal.list_approvals()
        await rt.gateway.decide_approval(ap["approval_id"], True, by="user:ops")
        job = rt.journal.get_job("e")
        assert job["enabled"] == 1 and job["next_run_at_unix_ms"] == t(210)  # from the approval, not the past
        await rt.run_until(t(280))
        assert [(x["scheduled_at_ms"], x["status"]) for x in rt.runs("e")[1:]] == [(t(210), "succeeded"), (t(270), "succeeded")]

    run(main)


def test_unknown_routine_and_approval_are_not_found(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        with pytest.raises(NotFound):
            await rt.gateway.dispatch("nope")
        with pytest.raises(NotFound):
            await rt.gateway.decide_approval("01ARZ3NDEKTSV4RRFFQ69G5FAV", True, by="x")
        rt.routine("m")
        with pytest.raises(PalyraError, match="trigger_kind 'cron' is not one of"):
            await rt.gateway.dispatch("m", trigger_kind="cron")

    run(main)


def test_spoofed_system_daemon_message_is_refused(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("m")
        msg = rt.gateway.message_for(rt.gateway.routine("m"), trigger_kind="manual")
        with pytest.raises(PalyraError) as e:
            await rt.gateway.handle_message(msg, internal=False)
        assert http_status(e.value) == 403
        with pytest.raises(PalyraError) as e:
            await rt.gateway.handle_message({**msg, "principal": "user:alice"}, internal=False)
        assert http_status(e.value) == 403 and "dispatched by system:daemon only" in e.value.message
        assert rt.runs() == []

    run(main)
