"""Memory inside the running daemon (SPEC §9): run outputs kept as items, the maintenance and backfill
tasks on their configured intervals, the `memory.maintenance.run` system event, the console memory
routes and the task health in system status. Real daemon processes on loopback (`daemon_factory`);
the intervals are configured short so nothing here waits minutes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from palyra_ops.clock import SystemClock
from palyra_ops.context import DaemonContext
from palyra_ops.journal import open_journal
from palyra_ops.server import create_app

MEM = "/console/v1/memory"


def routine(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": meta, "spec": spec}


MANUAL = {"kind": "manual"}


def dispatch(c: httpx.Client, name: str) -> str:
    r = c.post("/console/v1/routines/dispatch", json={"routine_id": name})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def payload(run: dict[str, Any]) -> dict[str, Any]:
    raw = run.get("trigger_payload")
    return (json.loads(raw) if isinstance(raw, str) else raw) or {}


def finished(daemon: Any, name: str) -> list[dict[str, Any]]:
    return [r for r in daemon.runs(name) if r["status"] in ("succeeded", "failed")]


def test_run_outputs_become_memory_items_searchable_through_the_api(daemon_factory) -> None:
    d = daemon_factory(config={"memory": {"intervals": {"backfill": "1s"}}})
    d.write("mem.yaml", [
        routine("payments-digest", {"prompt": "Nightly digest: payments cluster certificate expires in 3 days",
                                    "trigger": MANUAL, "delivery": {"mode": "local_only"}}),
        routine("audit-quiet", {"prompt": "Disk usage on build runners is at 71 percent", "trigger": MANUAL,
                                "delivery": {"mode": "specific_channel", "channel": "nowhere-needed",
                                             "silent_policy": "audit_only"}}),
        routine("local-broken", {"prompt": "never kept", "trigger": MANUAL, "delivery": {"mode": "local_only"}},
                labels={"echo-fail": "always"}),
        {"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": "nowhere-needed"},
         "spec": {"type": "log"}},
    ])
    d.apply()
    c = d.client()
    d.wait_for(lambda: c.get("/console/v1/routines/payments-digest").status_code == 200, what="apply picked up")
    run_id = dispatch(c, "payments-digest")
    audit_run = dispatch(c, "audit-quiet")
    dispatch(c, "local-broken")
    for name in ("payments-digest", "audit-quiet", "local-broken"):
        d.wait_for(lambda name=name: finished(d, name), what=f"{name} finished")
    assert [r["status"] for r in finished(d, "local-broken")] == ["failed"]

    # kept: the local_only and audit_only successes, with their routine, run and delivery source
    items = c.get(f"{MEM}/items").json()["items"]
    got = sorted((i["routine_id"], i["run_id"], i["source"]) for i in items)
    assert got == [("audit-quiet", audit_run, "delivery:audit_only"),
                   ("payments-digest", run_id, "delivery:local_only")]
    kept = next(i for i in items if i["run_id"] == run_id)
    assert kept["text"] == "Nightly digest: payments cluster certificate expires in 3 days [trigger=manual]"

    # an item added through the API, then everything embedded by the 1 s backfill task
    r = c.post(f"{MEM}/items", json={"text": "Rotated the TLS certificate of the payments gateway",
                                     "routine_id": "by-hand", "ttl": "7d"})
    assert r.status_code == 201, r.text
    added = r.json()
    assert (added["source"], added["routine_id"], added["run_id"], added["embedding"]) == ("api", "by-hand", None, None)
    assert added["expires_at"] is not None

    def searched() -> dict[str, Any] | None:
        body = c.get(f"{MEM}/search", params={"q": "payments certificate expiry", "k": 5}).json()
        return body if body["pending"] == 0 and len(body["results"]) == 3 else None

    body = d.wait_for(searched, timeout=15, what="backfill embedded every item")
    top = body["results"][0]
    assert (top["routine_id"], top["run_id"], top["source"]) == ("payments-digest", run_id, "delivery:local_only")
    assert 0 < top["score"] <= 1 and top["score"] >= body["results"][1]["score"]
    assert body["results"][-1]["routine_id"] == "audit-quiet"  # nothing in common with the query
    assert body["model"]["model"] == "palyra-hashing-ngram"

    # filters: routine, and a time window (RFC 3339 or a duration ago)
    only = c.get(f"{MEM}/search", params={"q": "certificate", "routine": "by-hand"}).json()["results"]
    assert [i["id"] for i in only] == [added["id"]]
    assert c.get(f"{MEM}/search", params={"q": "certificate", "since": "1h"}).json()["results"]
    assert c.get(f"{MEM}/search", params={"q": "certificate", "until": "1h"}).json()["results"] == []
    # an unencoded "+00:00" reaches the server as " 00:00": still read as the offset meant
    assert len(c.get(f"{MEM}/items?since=2000-01-01T00:00:00+00:00").json()["items"]) == 3

    # paging through items, newest first, with opaque cursors
    first = c.get(f"{MEM}/items", params={"limit": 2}).json()
    assert first["items"][0]["id"] == added["id"] and first["next_cursor"]
    rest = c.get(f"{MEM}/items", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None

    # bad input: a clear 400, nothing stored
    bad = {
        ("GET", f"{MEM}/search", None, None): "q: required (the text to search for)",
        ("GET", f"{MEM}/search?q=x&k=0", None, None): "k: must be between 1 and 1000, got 0",
        ("GET", f"{MEM}/search?q=x&k=ten", None, None): "k: 'ten' is not an integer",
        ("GET", f"{MEM}/search?q=x&since=yesterday", None, None):
            "since: 'yesterday' is neither an RFC 3339 instant with offset nor a duration like 24h",
        ("GET", f"{MEM}/items?cursor=abc", None, None): "cursor: not a cursor returned by this listing",
        ("POST", f"{MEM}/items", "text", ""): "text: required, a non-empty string",
        ("POST", f"{MEM}/items", "colour", "red"): "unknown field 'colour' (expected text, routine_id, run_id, ttl)",
        ("POST", f"{MEM}/items", "ttl", "soon"): None,
    }
    for (method, url, key, value), message in bad.items():
        payload = {"text": "x", key: value} if key and key != "text" else ({"text": value} if key else None)
        r = c.request(method, url, json=payload)
        assert r.status_code == 400, (url, payload, r.text)
        if message is not None:
            assert r.json()["error"]["message"] == message
        else:
            assert r.json()["error"]["message"].startswith("ttl: ")
    assert len(c.get(f"{MEM}/items").json()["items"]) == 3


def test_maintenance_event_reaches_a_system_event_routine_and_status_shows_task_health(daemon_factory) -> None:
    d = daemon_factory(config={"memory": {"retention": {"max_items": 2},
                                          "intervals": {"maintenance": "1s", "backfill": "1s"}}})
    d.write("react.yaml", [routine("after-maintenance", {"prompt": "memory maintenance ran",
                                                         "trigger": {"kind": "system_event",
                                                                     "event": "memory.maintenance.run"}})])
    d.apply()
    c = d.client()
    for text in ("first note", "second note", "third note"):
        assert c.post(f"{MEM}/items", json={"text": text}).status_code == 201

    # retention (max_items 2) deletes the oldest; the event carries the counts to the routine
    def deleting_run() -> dict[str, Any] | None:
        for run in d.runs("after-maintenance"):
            data = payload(run).get("data") or {}
            if data.get("deleted_max_items") == 1:
                return run
        return None

    run = d.wait_for(deleting_run, timeout=15, what="a memory.maintenance.run event run that deleted one item")
    assert run["trigger_kind"] == "system_event"
    event = payload(run)
    assert event["event"] == "memory.maintenance.run"
    assert event["data"]["deleted"] == 1 and event["data"]["optimized"] is True
    d.wait_for(lambda: finished(d, "after-maintenance"), what="the event run finished")
    assert [i["text"] for i in c.get(f"{MEM}/items").json()["items"]] == ["third note", "second note"]

    # task health: last run, duration, outcome, next run, for both memory tasks
    def healthy() -> dict[str, Any] | None:
        tasks = c.get("/console/v1/system/status").json()["tasks"]
        mem = {k: v for k, v in tasks.items() if k.startswith("memory.")}
        ok = len(mem) == 2 and all(t["runs"] >= 1 and t["outcome"] == "ok" for t in mem.values())
        return tasks if ok else None

    tasks = d.wait_for(healthy, timeout=10, what="both memory tasks ran")
    for name in ("memory.maintain", "memory.backfill"):
        t = tasks[name]
        assert t["interval_ms"] == 1000 and t["enabled"] is True
        assert t["last_run_at"] and t["next_run_at"] and t["next_run_at"] > t["last_run_at"]
        assert isinstance(t["duration_ms"], float) and t["duration_ms"] >= 0
    assert "deleted_max_items" in tasks["memory.maintain"]["detail"]
    assert "embedded" in tasks["memory.backfill"]["detail"]
    # the scheduler kept going meanwhile: the daemon answers and shows its scheduler
    assert c.get("/console/v1/system/status").json()["scheduler"] is not None


def test_memory_routes_without_the_memory_service_answer_503(tmp_path: Any) -> None:
    async def main() -> None:
        journal = open_journal(tmp_path / "j.sqlite3")
        ctx = DaemonContext(journal=journal, clock=SystemClock(), config=None, token="t", internal_token="i")
        transport = httpx.ASGITransport(app=create_app(ctx))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                         headers={"Authorization": "Bearer t"}) as c:
                for method, url in (("GET", f"{MEM}/search?q=x"), ("GET", f"{MEM}/items"), ("POST", f"{MEM}/items")):
                    r = await c.request(method, url, json={"text": "x"} if method == "POST" else None)
                    assert r.status_code == 503, (url, r.text)
                    assert r.json() == {"error": {"code": "unavailable",
                                                  "message": "the memory service is not running in this daemon"}}
                r = await c.get(f"{MEM}/items", headers={"Authorization": "Bearer wrong"})
                assert r.status_code == 401
        finally:
            journal.close()

    asyncio.run(main())


def test_stopping_the_daemon_ends_a_running_backfill_child(daemon_factory) -> None:
    import sqlite3
    import time

    d = daemon_factory(config={"memory": {"intervals": {"backfill": "1s"}}})
    text = " ".join(f"word{i}" for i in range(200))  # long texts: the backfill takes seconds
    conn = sqlite3.connect(d.paths.journal)
    with conn:
        conn.executemany("INSERT INTO journal_memory_items (id, routine_id, run_id, source, text, created_at_ms, "
                         "expires_at_ms, bytes) VALUES (?, NULL, NULL, 'api', ?, ?, NULL, ?)",
                         [(f"01BENCH{i:019d}", f"{i} {text}", 1_700_000_000_000 + i, len(text)) for i in range(20_000)])
    conn.close()
    c = d.client()

    def embedding_started() -> bool:
        body = c.get(f"{MEM}/search", params={"q": "word7"}).json()
        return 0 < body["pending"] < 20_000

    d.wait_for(embedding_started, timeout=20, interval=0.2, what="the backfill child embedding")
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 8
    log = d.log()
    assert "Traceback" not in log, log[-3000:]
