"""The console API and the cron/approvals CLI against the REAL daemon (subprocess on loopback)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from palyra_ops.cli import main
from palyra_ops.openapi import build_openapi


def cli(capsys: pytest.CaptureFixture[str], daemon: Any, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--url", daemon.base_url, "--token", daemon.token])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], daemon: Any, *argv: str) -> Any:
    code, out, err = cli(capsys, daemon, *argv, "--output", "json")
    assert code == 0, err
    return json.loads(out)


def test_cron_add_run_now_logs(daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, daemon, "cron", "add", "digest", "--cron", "0 9 * * *", "--timezone", "Europe/Prague",
                         "--prompt", "Summarize yesterday")
    assert code == 0, err
    assert out.startswith("created routine digest (unmanaged)\n")
    run = cli_json(capsys, daemon, "cron", "run-now", "digest")
    assert (run["routine_id"], run["trigger_kind"], run["scheduled_at"]) == ("digest", "manual", None)

    def finished() -> Any:
        runs = cli_json(capsys, daemon, "cron", "logs", "digest")
        return runs if runs and runs[0]["status"] == "succeeded" else None

    [logged] = daemon.wait_for(finished, what="the manual run to succeed")
    assert logged["run_id"] == run["run_id"]
    assert logged["reason"] is None and logged["attempt"] == 1
    assert logged["output"].startswith("Summarize yesterday")
    assert logged["started_at"] and logged["finished_at"]
    code, out, _ = cli(capsys, daemon, "cron", "logs", "digest")
    assert run["run_id"] in out and "succeeded" in out
    status = cli_json(capsys, daemon, "cron", "status")
    assert [(s["routine_id"], s["state"], s["last_status"]) for s in status] == [("digest", "Pending", "succeeded")]
    assert status[0]["next_run_at_local"].endswith(("T09:00:00+01:00", "T09:00:00+02:00"))


def test_scheduled_runs_show_with_scheduled_at(daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    c = daemon.client()
    resp = c.post("/console/v1/routines/upsert", json={
        "name": "beat", "spec": {"prompt": "ping", "trigger": {"kind": "schedule", "schedule": {"every": "1s"}}}})
    assert resp.status_code == 201, resp.text

    def two_runs() -> Any:
        items = c.get("/console/v1/routines/beat/runs").json()["items"]
        done = [r for r in items if r["status"] == "succeeded"]
        return done if len(done) >= 2 else None

    runs = daemon.wait_for(two_runs, timeout=8, what="two scheduled runs")
    assert all(r["trigger_kind"] == "schedule" and r["scheduled_at"] for r in runs)
    assert runs[0]["scheduled_at"] > runs[1]["scheduled_at"]  # newest first
    # disabling through the CLI stops it
    code, out, _ = cli(capsys, daemon, "cron", "disable", "beat")
    assert code == 0 and out.startswith("disabled routine beat\n")
    view = c.get("/console/v1/routines/beat").json()
    assert (view["effective_enabled"], view["state"]) == (False, "Disabled")


def test_approvals_before_first_run_and_before_enable(daemon: Any, capsys: pytest.CaptureFixture[str]) -> None:
    c = daemon.client()
    for name in ("gated", "refused"):
        resp = c.post("/console/v1/routines/upsert", json={
            "name": name, "spec": {"prompt": name, "approval": "before_first_run", "trigger": {"kind": "manual"}}})
        assert resp.status_code == 201, resp.text
    gated = c.post("/console/v1/routines/dispatch", json={"routine_id": "gated"}).json()
    refused = c.post("/console/v1/routines/dispatch", json={"routine_id": "refused"}).json()
    assert gated["status"] == refused["status"] == "awaiting_approval"

    pending = cli_json(capsys, daemon, "approvals", "list")
    by_routine = {a["routine_id"]: a for a in pending}
    assert set(by_routine) == {"gated", "refused"}
    assert by_routine["gated"]["kind"] == "before_first_run"
    assert by_routine["gated"]["run_id"] == gated["run_id"]

    code, out, err = cli(capsys, daemon, "approvals", "approve", by_routine["gated"]["approval_id"])
    assert code == 0, err
    assert out == f"approved before_first_run approval {by_routine['gated']['approval_id']} of routine gated\n"
    code, out, err = cli(capsys, daemon, "approvals", "deny", by_routine["refused"]["approval_id"])
    assert code == 0, err

    def final(name: str, run_id: str) -> Any:
        def check() -> Any:
            items = c.get(f"/console/v1/routines/{name}/runs").json()["items"]
            row = next((r for r in items if r["run_id"] == run_id), None)
            return row if row and row["status"] not in ("awaiting_approval", "accepted", "running") else None
        return daemon.wait_for(check, what=f"{name} to finish")

    assert final("gated", gated["run_id"])["status"] == "succeeded"
    denied = final("refused", refused["run_id"])
    assert denied["status"] == "denied" and denied["reason"]
    assert cli_json(capsys, daemon, "approvals", "list") == []
    # deciding twice is a conflict, reported with the server's message
    code, _, err = cli(capsys, daemon, "approvals", "approve", by_routine["gated"]["approval_id"])
    assert code == 1 and err.startswith("palyra-ops: ")

    # before_enable: stored disabled with a pending approval; approving enables it
    resp = c.post("/console/v1/routines/upsert", json={
        "name": "guarded", "spec": {"prompt": "x", "approval": "before_enable",
                                    "trigger": {"kind": "schedule", "schedule": {"cron": "0 9 * * *"}}}})
    view = resp.json()
    assert (view["enabled"], view["effective_enabled"], view["approval_state"], view["state"]) == (
        True, False, "pending", "Disabled")
    [approval] = c.get("/console/v1/approvals").json()["items"]
    assert approval["kind"] == "before_enable"
    assert c.post(f"/console/v1/approvals/{approval['approval_id']}/approve").status_code == 200
    view = c.get("/console/v1/routines/guarded").json()
    assert (view["effective_enabled"], view["approval_state"], view["state"]) == (True, "approved", "Pending")


def test_every_described_route_refuses_missing_or_wrong_token(daemon: Any) -> None:
    import httpx

    doc = build_openapi()
    with httpx.Client(base_url=daemon.base_url, timeout=10) as c:
        for path, ops in doc["paths"].items():
            concrete = path.replace("{", "").replace("}", "")
            for method in ops:
                for headers, message in (({}, "missing bearer token"),
                                         ({"Authorization": "Bearer wrong"}, "invalid bearer token")):
                    resp = c.request(method.upper(), concrete, headers=headers)
                    if path == "/healthz":
                        assert resp.status_code == 200
                        continue
                    assert resp.status_code == 401, (method, path)
                    assert resp.json() == {"error": {"code": "unauthorized", "message": message}}
    assert daemon.runs() == []


def test_errors_are_json_with_the_right_status(daemon: Any) -> None:
    c = daemon.client()
    resp = c.get("/console/v1/routines/nope")
    assert (resp.status_code, resp.json()) == (404, {"error": {"code": "not_found", "message": "no routine 'nope'"}})
    resp = c.post("/console/v1/routines/upsert", content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_request"
    resp = c.post("/console/v1/routines/upsert", json={"name": "x", "spec": {"prompt": "p", "trigger": {"kind": "sometimes"}}})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "invalid"
    assert err["details"] == [{"path": "spec.trigger.kind",
                               "message": "'sometimes' is not one of schedule, hook, webhook, system_event, manual"}]
    resp = c.post("/console/v1/routines/dispatch", json={"routine_id": "nope"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_dispatch_dedupe_key_records_a_skipped_run(daemon: Any) -> None:
    c = daemon.client()
    c.post("/console/v1/routines/upsert", json={"name": "m", "spec": {"prompt": "p", "trigger": {"kind": "manual"}}})
    first = c.post("/console/v1/routines/dispatch", json={"routine_id": "m", "dedupe_key": "deploy-42"})
    second = c.post("/console/v1/routines/dispatch", json={"routine_id": "m", "dedupe_key": "deploy-42"})
    assert first.status_code == second.status_code == 202
    run = second.json()
    assert run["status"] == "skipped"
    assert run["reason"] == f"duplicate: dedupe key 'deploy-42' was already used by run {first.json()['run_id']}"


def test_upsert_over_applied_routine_shows_drift(daemon: Any) -> None:
    daemon.write("sre.yaml", {
        "apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": "report"},
        "spec": {"prompt": "Report", "trigger": {"kind": "schedule", "schedule": {"cron": "0 9 * * 1-5", "timezone": "Europe/Prague"}}},
    })
    daemon.apply()
    c = daemon.client()
    view = c.get("/console/v1/routines/report").json()
    assert (view["managed"], view["drift"], view["source_file"]) == (True, False, "sre.yaml")
    resp = c.post("/console/v1/routines/upsert", json={
        "name": "report", "spec": {"prompt": "Report (edited)", "trigger": {"kind": "schedule", "schedule": {"cron": "30 9 * * 1-5", "timezone": "Europe/Prague"}}}})
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert (view["managed"], view["drift"], view["created"]) == (True, True, False)
    assert view["next_run_at_local"].endswith(("T09:30:00+01:00", "T09:30:00+02:00"))
    listed = c.get("/console/v1/routines").json()["items"]
    assert [(v["name"], v["managed"], v["drift"]) for v in listed] == [("report", True, True)]
    status = c.get("/console/v1/system/status").json()
    assert status["last_apply"]["origin"] == "test"
    assert status["scheduler"] is not None
    assert status["journal"]["serial"] >= 2
