"""A routine with a `skill` runs in the wasmtime sandbox through the same gateway pipeline."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from palyra_ops.skills.sandbox import SkillRunner
from palyra_ops.skills.store import SkillStore
from tests.skills.kit import build, new_key

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_skill_routine_runs_in_the_sandbox_and_quarantine_denies_it(runtime_factory, tmp_path) -> None:
    key, pub = new_key()
    store = SkillStore(tmp_path / "state")
    store.trust.add("acme", pub)
    store.install(build("upper", tmp_path / "pkgs", key=key))
    runner = SkillRunner(store, tmp_path / "cache")

    async def main() -> None:
        rt = runtime_factory(T0)
        rt.gateway.skill_runner, rt.gateway.skill_store = runner, store
        rt.routine("shout", prompt="hello", skill={"id": "upper", "input": {"x": 1}})
        r = await rt.gateway.dispatch("shout")
        await rt.gateway.drain()
        row = rt.journal.get_run(r["run_id"])
        assert row["status"] == "succeeded", row["reason"]
        sent = json.loads(row["output"].lower())
        assert sent == {"prompt": "hello", "trigger": {"kind": "manual", "scheduled_at": None, "payload": None},
                        "input": {"x": 1}}
        store.quarantine("upper", "test")
        r2 = await rt.gateway.dispatch("shout")
        await rt.gateway.drain()
        row2 = rt.journal.get_run(r2["run_id"])
        assert row2["status"] == "denied" and "quarantined" in row2["reason"]
        assert row2["policy_rule"] == "quarantine"

    try:
        asyncio.run(main())
    finally:
        runner.close()


def test_skill_routine_without_skills_support_fails_with_a_reason(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("s", skill={"id": "missing"})
        r = await rt.gateway.dispatch("s")
        await rt.gateway.drain()
        row = rt.journal.get_run(r["run_id"])
        assert row["status"] == "failed"
        assert row["reason"] == "skill 'missing': skills are not available in this daemon"

    asyncio.run(main())
