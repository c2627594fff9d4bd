"""End to end against the real daemon process (`palyra-ops daemon` subprocess on loopback)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
from typing import Any

import httpx

from tests.conftest import REPO, free_port


def routine(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": meta, "spec": spec}


def channel(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "palyra/v1", "kind": "Channel", "metadata": {"name": name}, "spec": spec}


EVERY_1S = {"kind": "schedule", "schedule": {"every": "1s"}}


def test_every_second_routine_delivers_to_a_file_and_a_webhook(daemon, receiver) -> None:
    out = daemon.paths.state_root / "deliveries" / "out" / "runs.jsonl"
    os.environ.pop("E2E_HOOK_TOKEN", None)
    daemon.write("tick.yaml", [
        channel("file-out", {"type": "file", "path": "out/runs.jsonl"}),  # under <state root>/deliveries
        channel("hook-out", {"type": "webhook", "url": receiver.url, "headers": {"X-Team": "sre"}}),
        routine("to-file", {"prompt": "file me", "trigger": EVERY_1S,
                            "delivery": {"mode": "specific_channel", "channel": "file-out"}}),
        routine("to-hook", {"prompt": "post me", "trigger": EVERY_1S,
                            "delivery": {"mode": "specific_channel", "channel": "hook-out"}}),
    ])
    daemon.apply()
    daemon.wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 3 and len(receiver.bodies) >= 3,
                    timeout=8, what="three deliveries each")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["routine_id"] for x in lines} == {"to-file"} and lines[0]["status"] == "succeeded"
    assert lines[0]["output"].startswith("file me [trigger=schedule scheduled_at=")
    assert receiver.bodies[0]["routine_id"] == "to-hook" and receiver.headers[0]["X-Team"] == "sre"
    runs = daemon.runs("to-file")
    done = [r for r in runs if r["status"] == "succeeded"]
    assert all(r["delivery_status"] == "delivered" for r in done)
    # exact one-second cadence, each occurrence once, dispatched promptly (apply woke the scheduler)
    sched = [r["scheduled_at_ms"] for r in runs]
    assert sched == sorted(set(sched)) and all(b - a == 1000 for a, b in zip(sched, sched[1:], strict=False))
    assert all(r["received_at_ms"] - r["scheduled_at_ms"] < 1000 for r in runs if r["received_at_ms"])


def test_failed_webhook_delivery_is_visible_on_the_run(daemon) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    daemon.write("x.yaml", [
        channel("dead", {"type": "webhook", "url": dead, "retries": 1, "timeout": "1s"}),
        routine("m", {"prompt": "p", "trigger": {"kind": "manual"},
                      "delivery": {"mode": "specific_channel", "channel": "dead"}}),
    ])
    daemon.apply()
    r = daemon.client().post("/console/v1/routines/dispatch", json={"routine_id": "m"})
    assert r.status_code == 202, r.text
    run = daemon.wait_for(lambda: [x for x in daemon.runs("m") if x["status"] == "succeeded"], what="run end")[0]
    assert run["delivery_status"] == "failed"
    assert run["delivery_error"].startswith(f"webhook {dead}: ") and run["delivery_error"].endswith("(2 attempts)")


def test_concurrency_policies_with_slow_runs(daemon) -> None:
    slow = {"echo-sleep": "2500ms"}
    daemon.write("c.yaml", [
        routine(f"c-{p.replace('_', '-')}", {"prompt": "slow", "trigger": EVERY_1S, "policies": {"concurrency": p}}, slow)
        for p in ("allow", "forbid", "replace", "queue_one")
    ])
    daemon.apply()
    time.sleep(5.5)
    daemon.stop()
    by = {p: daemon.runs(f"c-{p}") for p in ("allow", "forbid", "replace", "queue-one")}
    st = {p: [r["status"] for r in rows] for p, rows in by.items()}
    # allow: overlapping runs, some finished while others ran
    assert st["allow"].count("succeeded") >= 1 and "skipped" not in st["allow"]
    allow = [r for r in by["allow"] if r["status"] == "succeeded"]
    assert any(r["started_at_ms"] < allow[0]["finished_at_ms"] for r in by["allow"][1:] if r["started_at_ms"])
    # forbid: the first ran to the end, the next two were skipped with the reason
    assert st["forbid"][:4] == ["succeeded", "skipped", "skipped", "succeeded"] or st["forbid"][:3] == [
        "succeeded", "skipped", "skipped"]
    assert by["forbid"][1]["reason"] == f"concurrency: forbid (run {by['forbid'][0]['run_id']} is active)"
    # replace: every run but the last was cancelled by its successor (really cancelled: never finished)
    rep = by["replace"]
    assert st["replace"][:-1] == ["cancelled"] * (len(rep) - 1) and len(rep) >= 4
    assert all(r["reason"] == f"replaced: superseded by run {n['run_id']}" for r, n in zip(rep, rep[1:], strict=False))
    assert all(r["output"] is None for r in rep[:-1])
    # queue_one: one queued behind the active run, further triggers skipped
    q = by["queue-one"]
    assert st["queue-one"][0] == "succeeded" and "skipped" in st["queue-one"]
    assert any(r["reason"] and r["reason"].startswith("concurrency: queue_one (run ") for r in q)
    assert q[1]["started_at_ms"] >= q[0]["finished_at_ms"]
    # the graceful stop cancelled what still ran, with the reason; nothing is left active
    everything = daemon.runs()
    assert not [r for r in everything if r["status"] in ("accepted", "running")]
    assert {r["reason"] for r in everything if r["status"] == "cancelled"} <= {
        "daemon_shutdown", *(r["reason"] for r in rep)}


def test_before_first_run_waits_for_approval(daemon) -> None:
    daemon.write("a.yaml", [routine("needs-ok", {"prompt": "p", "trigger": EVERY_1S, "approval": "before_first_run"})])
    daemon.apply()
    first = daemon.wait_for(lambda: [r for r in daemon.runs("needs-ok") if r["status"] == "awaiting_approval"],
                            what="awaiting_approval")[0]
    time.sleep(1.5)
    rows = daemon.runs("needs-ok")
    assert rows[0]["status"] == "awaiting_approval" and all(r["status"] == "skipped" for r in rows[1:])
    assert all(r["reason"].startswith("awaiting_approval: approval ") for r in rows[1:])
    c = daemon.client()
    (ap,) = c.get("/console/v1/approvals").json()["items"]
    assert c.post(f"/console/v1/approvals/{ap['approval_id']}/approve").status_code == 200
    daemon.wait_for(lambda: daemon.runs("needs-ok")[0]["status"] == "succeeded", what="approved run")
    n = len(daemon.runs("needs-ok"))
    daemon.wait_for(lambda: len(daemon.runs("needs-ok")) >= n + 2, what="later runs")
    later = [r["status"] for r in daemon.runs("needs-ok")[n:]]
    assert set(later) <= {"succeeded", "running", "accepted"} and "succeeded" in later, later
    assert first["run_id"] == daemon.runs("needs-ok")[0]["run_id"]


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_webhook_signature_is_verified_and_a_bad_one_runs_nothing(daemon_factory) -> None:
    d = daemon_factory(config={"integrations": {"github": {"secret": {"env": "GH_SECRET"}}}},
                       env={"GH_SECRET": "s3cret"})
    d.write("w.yaml", [routine("on-push", {"prompt": "push!", "trigger": {"kind": "webhook",
                                                                         "webhook": {"integration": "github", "event": "push"}}})])
    d.apply()
    c = d.client()
    body = json.dumps({"ref": "main"}).encode()
    bad = c.post("/webhooks/github", content=body, headers={"X-Hub-Signature-256": sign("wrong", body),
                                                            "X-GitHub-Event": "push"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "bad_signature"
    missing = c.post("/webhooks/github", content=body, headers={"X-GitHub-Event": "push"})
    assert missing.status_code == 401
    time.sleep(0.3)
    assert d.runs("on-push") == []
    other = c.post("/webhooks/github", content=body, headers={"X-Hub-Signature-256": sign("s3cret", body),
                                                              "X-GitHub-Event": "issues"})
    assert other.status_code == 202 and other.json()["runs"] == []
    ok = c.post("/webhooks/github", content=body, headers={"X-Hub-Signature-256": sign("s3cret", body),
                                                           "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"})
    assert ok.status_code == 202 and len(ok.json()["runs"]) == 1
    again = c.post("/webhooks/github", content=body, headers={"X-Hub-Signature-256": sign("s3cret", body),
                                                              "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"})
    assert again.json()["runs"][0]["status"] == "skipped"  # the delivery id is the dedupe key
    run = d.wait_for(lambda: [r for r in d.runs("on-push") if r["status"] == "succeeded"], what="webhook run")[0]
    assert run["trigger_kind"] == "webhook" and '"body":{"ref":"main"}' in run["output"]


def test_hook_events_and_daemon_started_system_event(daemon) -> None:
    daemon.write("h.yaml", [
        routine("on-deploy", {"prompt": "deployed", "trigger": {"kind": "hook", "event": "deploy.done"}}),
        routine("on-start", {"prompt": "hello", "trigger": {"kind": "system_event", "event": "daemon.started"}}),
    ])
    daemon.apply()
    r = daemon.client().post("/console/v1/events/deploy.done", json={"version": "1.2"})
    assert r.status_code == 202 and r.json()["runs"][0]["routine_id"] == "on-deploy"
    daemon.wait_for(lambda: [x for x in daemon.runs("on-deploy") if x["status"] == "succeeded"], what="hook run")
    daemon.restart()
    daemon.wait_for(lambda: [x for x in daemon.runs("on-start") if x["status"] == "succeeded"], what="started event")


def test_sigkill_crash_recovery(daemon) -> None:
    daemon.write("k.yaml", [
        routine("busy", {"prompt": "busy", "trigger": EVERY_1S, "policies": {"misfire_grace": "1s"}},
                {"echo-sleep": "30s"}),
        routine("beat", {"prompt": "beat", "trigger": EVERY_1S, "policies": {"misfire_grace": "1s"}}),
    ])
    daemon.apply()
    daemon.wait_for(lambda: [r for r in daemon.runs("busy") if r["status"] == "running"], what="an active run")
    time.sleep(1.2)
    daemon.kill()
    killed_at = int(time.time() * 1000)
    active_before = [r["run_id"] for r in daemon.runs() if r["status"] in ("accepted", "running")]
    assert active_before
    time.sleep(3.5)  # occurrences fall due while the daemon is down
    daemon.restart()
    daemon.wait_for(lambda: [r for r in daemon.runs("beat") if r["created_at_ms"] > killed_at + 3000], what="resumed")
    daemon.stop()
    runs = {r["run_id"]: r for r in daemon.runs()}
    for rid in active_before:
        assert runs[rid]["status"] == "failed" and runs[rid]["reason"] == "daemon_restart"
    for name in ("busy", "beat"):
        rows = daemon.runs(name)
        keys = [r["occurrence_key"] for r in rows if r["occurrence_key"]]
        assert len(keys) == len(set(keys)), "an occurrence was dispatched twice"
        # no record missing: every second from the first occurrence to the last is a run or a recorded skip
        covered = set()
        for r in rows:
            covered.add(r["scheduled_at_ms"])
            covered.update(json.loads(r["skipped_times"] or "[]"))
        first, last = min(covered), max(covered)
        assert covered == set(range(first, last + 1, 1000))
        # fire_once: after the outage exactly one run stood for the missed seconds
        recovered = [r for r in rows if r["skipped_count"]]
        assert len(recovered) == 1 and recovered[0]["skipped_count"] >= 2
    assert not [r for r in runs.values() if r["status"] in ("accepted", "running")]


def test_token_file_mode_and_token_command(daemon) -> None:
    p = daemon.paths.state_root / "token"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    out = subprocess.run([sys.executable, "-m", "palyra_ops", "token"], env=daemon.env, capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == daemon.token


def test_non_loopback_bind_is_refused_without_allow_remote(tmp_path) -> None:
    env = {**os.environ, "PALYRA_STATE_ROOT": str(tmp_path / "s"), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "palyra_ops", "daemon", "--listen", f"0.0.0.0:{free_port()}",
                          "--journal", str(tmp_path / "j.sqlite3")], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "refusing to listen on 0.0.0.0:" in out.stderr and "--allow-remote" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "j.sqlite3").exists()


def test_sigterm_cancels_and_records_active_runs(daemon) -> None:
    daemon.write("s.yaml", [routine("long", {"prompt": "p", "trigger": {"kind": "manual"}}, {"echo-sleep": "60s"})])
    daemon.apply()
    r = daemon.client().post("/console/v1/routines/dispatch", json={"routine_id": "long"})
    assert r.status_code == 202
    assert daemon.stop() == 0
    (row,) = daemon.runs("long")
    assert row["status"] == "cancelled" and row["reason"] == "daemon_shutdown"
    assert httpx.get  # the process is gone; nothing else to check over HTTP


def test_watch_reloads_the_directory_on_save(daemon_factory) -> None:
    d = daemon_factory(extra_args=["--watch"])
    d.write("w.yaml", [routine("saved", {"prompt": "p", "trigger": EVERY_1S})])
    d.wait_for(lambda: [r for r in d.runs("saved") if r["status"] == "succeeded"], timeout=8, what="watched routine")
    status = d.client().get("/console/v1/system/status").json()
    assert status["watcher"]["enabled"] is not False


def test_a_second_daemon_on_a_busy_port_fails_cleanly_and_leaves_runs_alone(daemon) -> None:
    daemon.write("s.yaml", [routine("long", {"prompt": "p", "trigger": {"kind": "manual"}}, {"echo-sleep": "30s"})])
    daemon.apply()
    assert daemon.client().post("/console/v1/routines/dispatch", json={"routine_id": "long"}).status_code == 202
    out = subprocess.run([sys.executable, "-m", "palyra_ops", "daemon", "--listen", f"127.0.0.1:{daemon.paths.port}",
                          "--journal", str(daemon.paths.journal)], env=daemon.env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"cannot listen on 127.0.0.1:{daemon.paths.port}: Address already in use" in out.stderr
    assert daemon.runs("long")[0]["status"] == "running"  # the first daemon's run was not "recovered"
