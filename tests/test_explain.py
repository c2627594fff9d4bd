"""`explain` (SPEC §12) names the deciding step for a run stopped by each gate, by misfire, or never
claimed — from the records the real scheduler and gateway wrote on a FakeClock — and the CLI prints it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from minute_clock import T0, every_minute, t

from palyra_ops import pause
from palyra_ops.cli import main
from palyra_ops.clock import rfc3339
from palyra_ops.errors import InvalidInput, NotFound
from palyra_ops.explain import GATES, explain


async def at(rt: Any, minutes: float) -> None:
    rt.clock.set(t(minutes))
    await rt.scheduler.tick()
    await rt.advance(0)


def verdicts(ex: Any) -> dict[str, str]:
    return {s.step: s.verdict for s in ex.steps}


def assert_decided(ex: Any, gate: str) -> None:
    assert ex.decided_by == gate, [s.to_json() for s in ex.steps]
    v = verdicts(ex)
    i = GATES.index(gate)
    assert all(v[g] == "pass" for g in GATES[:i]), v
    assert v[gate] == "stop"
    assert all(v[g] == "not reached" for g in GATES[i + 1:]), v


def test_explain_names_the_gate_that_stopped_each_scheduled_run(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        rt.put("Policy", "nobody", {"rules": [{"effect": "deny", "principals": ["user:*"], "actions": ["routine.run"]},
                                              {"effect": "allow", "principals": ["system:daemon"], "actions": ["*"]}]})
        every_minute(rt, "paused")
        every_minute(rt, "gated", approval="before_first_run")
        every_minute(rt, "cool", policies={"cooldown": "1h"})
        every_minute(rt, "hushed", quiet_hours={"start": "08:00", "end": "09:00", "timezone": "utc"})
        every_minute(rt, "denied", owner="user:alice")
        every_minute(rt, "busy", labels={"echo-sleep": "5m"})  # forbid
        every_minute(rt, "fine")
        pause.pause(rt.journal, "paused", note="audit", by="user:ops")
        await at(rt, 1)
        await at(rt, 2)
        now = rt.clock.now_ms()
        cases = {"paused": "paused", "gated": "approval", "hushed": "quiet_hours", "denied": "policy"}
        for name, gate in cases.items():
            ex = explain(rt.journal, name, at_ms=t(1), now_ms=now)
            assert ex.nominal_ms == t(1) and ex.run is not None
            assert_decided(ex, gate)
        assert explain(rt.journal, "paused", at_ms=t(1), now_ms=now).outcome == "skipped by the paused gate"
        ex = explain(rt.journal, "cool", at_ms=t(2), now_ms=now)  # 08:01 ran, 08:02 is inside the cooldown
        assert_decided(ex, "cooldown")
        assert [s.detail for s in ex.steps if s.step == "cooldown"][0].startswith("throttled: cooldown: last run started")
        ex = explain(rt.journal, "busy", at_ms=t(2) + 30_000, now_ms=now)  # between fire times: the latest before
        assert ex.nominal_ms == t(2)
        assert_decided(ex, "concurrency")
        ex = explain(rt.journal, "fine", at_ms=t(1), now_ms=now)
        assert (ex.decided_by, ex.outcome) == (None, "it ran: succeeded")
        assert set(verdicts(ex)[g] for g in GATES) == {"pass"} and verdicts(ex)["execution"] == "pass"

    asyncio.run(main_())


def test_explain_a_manual_run_stopped_by_disabled_or_dedupe(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        rt.routine("off", enabled=False)
        rt.routine("once")
        off = await rt.gateway.dispatch("off")
        await rt.gateway.dispatch("once", dedupe_key="k1")
        dup = await rt.gateway.dispatch("once", dedupe_key="k1")
        await rt.advance(1_000)
        assert_decided(explain(rt.journal, "off", run_id=off["run_id"], now_ms=rt.clock.now_ms()), "disabled")
        assert_decided(explain(rt.journal, "once", run_id=dup["run_id"], now_ms=rt.clock.now_ms()), "dedupe")
        with pytest.raises(NotFound, match="run 'nope' of routine 'once' does not exist"):
            explain(rt.journal, "once", run_id="nope", now_ms=rt.clock.now_ms())
        with pytest.raises(InvalidInput, match="routine 'once' has no schedule"):
            explain(rt.journal, "once", now_ms=rt.clock.now_ms())

    asyncio.run(main_())


def test_explain_misfire_and_never_claimed(runtime_factory) -> None:
    async def main_() -> None:
        rt = runtime_factory(T0)
        every_minute(rt, "late")  # fire_once, misfire_grace 30s
        await at(rt, 5)  # the daemon was "down" 08:01..08:04: one run at 08:05 stands for the rest
        now = rt.clock.now_ms()
        ex = explain(rt.journal, "late", at_ms=t(2), now_ms=now)
        assert ex.decided_by == "misfire" and ex.run is not None and ex.run["scheduled_at_ms"] == t(5)
        ex = explain(rt.journal, "late", at_ms=t(-30), now_ms=now)  # before the routine was applied
        assert ex.decided_by == "schedule" and "before the routine's anchor" in verdicts_detail(ex, "schedule")
        ex = explain(rt.journal, "late", at_ms=t(9), now_ms=now)  # in the future
        assert (ex.decided_by, ex.outcome) == ("claim", "not due yet")
        # default: its last due time
        ex = explain(rt.journal, "late", now_ms=now)
        assert ex.nominal_ms == t(5) and ex.outcome == "it ran: succeeded"
        with pytest.raises(NotFound, match="routine 'ghost' does not exist"):
            explain(rt.journal, "ghost", now_ms=now)

    asyncio.run(main_())


def verdicts_detail(ex: Any, step: str) -> str:
    return next(s.detail for s in ex.steps if s.step == step)


def test_explain_cli_text_json_and_errors(runtime_factory, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rt = runtime_factory(T0)

    async def setup() -> None:
        every_minute(rt, "hushed", quiet_hours={"start": "08:00", "end": "09:00", "timezone": "utc"})
        await at(rt, 1)

    asyncio.run(setup())
    journal = str(Path(rt.tmp) / "journal.sqlite3")
    monkeypatch.delenv("PALYRA_JOURNAL", raising=False)
    code = main(["explain", "hushed", "--at", rfc3339(t(1)), "--journal", journal])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"routine hushed, occurrence {rfc3339(t(1))}, run {rt.runs('hushed')[0]['run_id']}"
    assert "  quiet_hours  STOP         skipped: quiet_hours" in lines
    assert lines[-1] == "result: skipped by the quiet_hours gate (decided by quiet_hours)"
    code = main(["explain", "hushed", "--at", rfc3339(t(1)), "--journal", journal, "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["decided_by"] == "quiet_hours" and doc["nominal"] == rfc3339(t(1))
    code = main(["explain", "hushed", "--at", "noon", "--journal", journal])
    assert (code, capsys.readouterr().err) == (1, "palyra-ops: --at: 'noon' is not an RFC 3339 date-time "
                                                  "(expected e.g. 2026-12-24T18:00:00+01:00)\n")
    code = main(["explain", "ghost", "--journal", journal])
    assert (code, capsys.readouterr().err) == (1, "palyra-ops: routine 'ghost' does not exist\n")
    code = main(["explain", "hushed", "--journal", str(Path(rt.tmp) / "none.sqlite3")])
    assert code == 1 and "does not exist (nothing has been applied there)" in capsys.readouterr().err
