"""Delivery to Channels: file, webhook (env secrets, retries), log; modes, failure routing, silence."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

from tests.conftest import free_port

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


async def dispatch(rt, name: str) -> dict[str, Any]:
    r = await rt.gateway.dispatch(name)
    await rt.gateway.drain()
    return rt.journal.get_run(r["run_id"])


def test_file_channel_appends_one_json_line_per_run(runtime_factory, tmp_path) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.gateway.deliverer.file_root = tmp_path  # the daemon's delivery.file_root
        path = tmp_path / "sub" / "out.jsonl"
        rt.put("Channel", "f", {"type": "file", "path": str(path)})
        rt.routine("r", delivery={"mode": "specific_channel", "channel": "f"})
        a = await dispatch(rt, "r")
        b = await dispatch(rt, "r")
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert [x["run_id"] for x in lines] == [a["run_id"], b["run_id"]]
        assert lines[0] == {"routine_id": "r", "run_id": a["run_id"], "status": "succeeded", "attempt": 1,
                            "trigger_kind": "manual", "scheduled_at": None, "owner": "system:daemon",
                            "origin_channel": "system:cron", "output": "run r [trigger=manual]", "reason": None,
                            "delivered_at": "2026-03-02T08:00:00+00:00"}
        assert a["delivery_status"] == "delivered" and a["delivery_error"] is None

    asyncio.run(main())


def test_webhook_channel_resolves_env_secrets_at_delivery(runtime_factory, receiver, monkeypatch) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.put("Channel", "w", {"type": "webhook", "url": receiver.url,
                                "headers": {"Authorization": {"env": "HOOK_TOKEN"}, "X-Static": "yes"}})
        rt.routine("r", delivery={"mode": "specific_channel", "channel": "w"})
        monkeypatch.delenv("HOOK_TOKEN", raising=False)
        missing = await dispatch(rt, "r")
        assert missing["status"] == "succeeded" and missing["delivery_status"] == "failed"
        assert missing["delivery_error"] == "header Authorization: environment variable HOOK_TOKEN is not set"
        monkeypatch.setenv("HOOK_TOKEN", "Bearer abc")
        ok = await dispatch(rt, "r")
        assert ok["delivery_status"] == "delivered"
        assert receiver.headers[-1]["Authorization"] == "Bearer abc" and receiver.headers[-1]["X-Static"] == "yes"
        assert receiver.bodies[-1]["run_id"] == ok["run_id"]

    asyncio.run(main())


def test_webhook_retries_server_errors_but_not_client_errors(runtime_factory, receiver) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.put("Channel", "w", {"type": "webhook", "url": receiver.url, "retries": 2})
        rt.routine("r", delivery={"mode": "specific_channel", "channel": "w"})
        receiver.status = 503
        r = await dispatch(rt, "r")
        assert r["delivery_error"] == f"webhook {receiver.url}: HTTP 503 (3 attempts)" and len(receiver.bodies) == 3
        receiver.status = 400
        r = await dispatch(rt, "r")
        assert r["delivery_error"] == f"webhook {receiver.url}: HTTP 400 (1 attempt)" and len(receiver.bodies) == 4
        dead = f"http://127.0.0.1:{free_port()}/x"
        rt.put("Channel", "dead", {"type": "webhook", "url": dead, "retries": 0})
        rt.routine("d", delivery={"mode": "specific_channel", "channel": "dead"})
        r = await dispatch(rt, "d")
        assert r["delivery_status"] == "failed" and r["delivery_error"].startswith(f"webhook {dead}: ")

    asyncio.run(main())


def test_failures_go_to_the_failure_channel(runtime_factory, tmp_path) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.gateway.deliverer.file_root = tmp_path  # the daemon's delivery.file_root
        rt.put("Channel", "main", {"type": "file", "path": str(tmp_path / "main.jsonl")})
        rt.put("Channel", "pager", {"type": "file", "path": str(tmp_path / "pager.jsonl")})
        delivery = {"mode": "specific_channel", "channel": "main", "failure_mode": "specific_channel",
                    "failure_channel": "pager"}
        rt.routine("ok", delivery=delivery)
        rt.routine("bad", delivery=delivery, labels={"echo-fail": "always"})
        await dispatch(rt, "ok")
        bad = await dispatch(rt, "bad")
        main_lines = [json.loads(x) for x in (tmp_path / "main.jsonl").read_text().splitlines()]
        pager = [json.loads(x) for x in (tmp_path / "pager.jsonl").read_text().splitlines()]
        assert [x["routine_id"] for x in main_lines] == ["ok"]
        assert [(x["routine_id"], x["status"]) for x in pager] == [("bad", "failed")]
        assert pager[0]["reason"] == bad["reason"] == "echo backend: failing as asked by label echo-fail=always"
        assert bad["delivery_status"] == "delivered"

    asyncio.run(main())


def test_silent_policies(runtime_factory, tmp_path) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.gateway.deliverer.file_root = tmp_path  # the daemon's delivery.file_root
        rt.put("Channel", "c", {"type": "file", "path": str(tmp_path / "c.jsonl")})
        for policy in ("noisy", "failure_only", "audit_only"):
            d = {"mode": "specific_channel", "channel": "c", "silent_policy": policy}
            rt.routine(f"{policy.replace('_', '-')}-ok", delivery=d)
            rt.routine(f"{policy.replace('_', '-')}-bad", delivery=d, labels={"echo-fail": "always"})
        got = {}
        for name in ("noisy-ok", "noisy-bad", "failure-only-ok", "failure-only-bad", "audit-only-ok", "audit-only-bad"):
            got[name] = (await dispatch(rt, name))["delivery_status"]
        lines = [json.loads(x)["routine_id"] for x in (tmp_path / "c.jsonl").read_text().splitlines()]
        assert lines == ["noisy-ok", "noisy-bad", "failure-only-bad"]
        assert got == {"noisy-ok": "delivered", "noisy-bad": "delivered", "failure-only-ok": "suppressed",
                       "failure-only-bad": "delivered", "audit-only-ok": "suppressed", "audit-only-bad": "suppressed"}

    asyncio.run(main())


def test_same_channel_logs_only_and_log_channels(runtime_factory, tmp_path, caplog) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.put("Channel", "ops-log", {"type": "log", "level": "warning"})
        rt.routine("to-origin-channel", channel="ops-log", delivery={"mode": "same_channel"})
        rt.routine("to-cli", channel="cli:alice", delivery={"mode": "same_channel"})
        rt.routine("quiet")  # default logs_only
        with caplog.at_level(logging.INFO, logger="palyra_ops.output"):
            a = await dispatch(rt, "to-origin-channel")
            b = await dispatch(rt, "to-cli")
            c = await dispatch(rt, "quiet")
        assert (a["delivery_status"], b["delivery_status"], c["delivery_status"]) == ("delivered", "logged", "logged")
        warn = [r for r in caplog.records if r.levelno == logging.WARNING and "[ops-log]" in r.getMessage()]
        assert len(warn) == 1 and a["run_id"] in warn[0].getMessage()

    asyncio.run(main())


def test_missing_channel_and_denied_channel(runtime_factory) -> None:
    async def main() -> None:
        rt = runtime_factory(T0)
        rt.routine("r", delivery={"mode": "specific_channel", "channel": "gone"})
        r = await dispatch(rt, "r")
        assert (r["delivery_status"], r["delivery_error"]) == ("failed", "channel 'gone' does not exist")
        rt.put("Channel", "secret", {"type": "log"})
        rt.put("Policy", "p", {"rules": [
            {"effect": "allow", "principals": ["*"], "actions": ["routine.run"]},
            {"effect": "deny", "principals": ["*"], "actions": ["channel.deliver:secret"]}]})
        rt.routine("s", delivery={"mode": "specific_channel", "channel": "secret"})
        s = await dispatch(rt, "s")
        assert s["status"] == "succeeded" and s["delivery_status"] == "denied"
        assert s["delivery_error"].endswith("(policy p rule 2)")

    asyncio.run(main())


def test_local_only_keeps_the_output_as_a_memory_item(runtime_factory) -> None:
    from palyra_ops.memory.service import MemoryService

    async def main() -> None:
        rt = runtime_factory(T0)
        mem = MemoryService(rt.journal.path, clock=rt.clock)
        rt.gateway.deliverer.memory = mem
        rt.routine("keep", delivery={"mode": "local_only"})
        r = await dispatch(rt, "keep")
        assert r["delivery_status"] == "local"
        (item,) = mem.list(routine_id="keep").items
        assert item.run_id == r["run_id"] and item.text == "run keep [trigger=manual]"
        mem.close()

    asyncio.run(main())
