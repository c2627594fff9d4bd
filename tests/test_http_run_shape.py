"""Every route that shows a run shows the SPEC §6 run object (rendered by `views.run_view`), never a
journal row (`*_ms` integers, payloads as JSON text)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from palyra_ops import views
from palyra_ops.clock import parse_rfc3339

SPEC_KEYS = {"run_id", "routine_id", "scheduled_at", "started_at", "finished_at", "attempt", "status", "reason"}


def _doc(name: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "palyra/v1", "kind": "Routine", "metadata": {"name": name},
            "spec": {"prompt": name, "trigger": trigger}}


def assert_run_shape(run: dict[str, Any], *, routine: str, trigger_kind: str, payload: Any = None) -> None:
    assert SPEC_KEYS <= set(run), set(run)
    assert not [k for k in run if k.endswith("_ms")], run
    assert run["routine_id"] == routine and run["trigger_kind"] == trigger_kind
    assert run["scheduled_at"] is None  # manual and event runs have no nominal instant
    for key in ("started_at", "finished_at", "created_at"):
        if run[key] is not None:
            assert isinstance(run[key], str) and datetime.fromisoformat(run[key]).tzinfo is not None, (key, run[key])
            parse_rfc3339(run[key])
    assert isinstance(run["attempt"], int) and run["status"] in views_statuses()
    assert run["reason"] is None or run["status"] in views.REASON_STATUSES
    if payload is not None:
        assert run["trigger_payload"] == payload  # decoded, not a JSON string


def views_statuses() -> set[str]:
    return {"accepted", "running", "succeeded", "failed", "skipped", "throttled", "denied", "cancelled",
            "awaiting_approval"}


def test_every_route_that_returns_a_run_renders_the_spec_shape(daemon_factory) -> None:
    d = daemon_factory(config={"integrations": {"gh": {"secret": {"env": "SHAPE_SECRET"}}}}, env={"SHAPE_SECRET": "k"})
    d.write("r.yaml", [_doc("m", {"kind": "manual"}), _doc("h", {"kind": "hook", "event": "deploy"}),
                       _doc("w", {"kind": "webhook", "webhook": {"integration": "gh"}})])
    d.apply()
    c = d.client()

    r = c.post("/console/v1/routines/dispatch", json={"routine_id": "m", "trigger_payload": {"why": "now"}})
    assert r.status_code == 202
    assert_run_shape(r.json(), routine="m", trigger_kind="manual", payload={"why": "now"})

    r = c.post("/console/v1/events/deploy", json={"v": 2})
    assert r.status_code == 202 and len(r.json()["runs"]) == 1
    assert_run_shape(r.json()["runs"][0], routine="h", trigger_kind="hook", payload={"event": "deploy", "data": {"v": 2}})

    body = b'{"ref":"main"}'
    sig = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    r = c.post("/webhooks/gh", content=body, headers={"X-Hub-Signature-256": sig, "X-GitHub-Event": "push"})
    assert r.status_code == 202 and len(r.json()["runs"]) == 1
    assert_run_shape(r.json()["runs"][0], routine="w", trigger_kind="webhook",
                     payload={"integration": "gh", "event": "push", "body": {"ref": "main"}})

    d.wait_for(lambda: all(x["status"] == "succeeded" for x in d.runs()) and len(d.runs()) == 3, what="runs done")
    for name, kind in (("m", "manual"), ("h", "hook"), ("w", "webhook")):
        [listed] = c.get(f"/console/v1/routines/{name}/runs").json()["items"]
        assert_run_shape(listed, routine=name, trigger_kind=kind)
        detail = c.get(f"/console/v1/routines/{name}").json()["last_run"]
        assert_run_shape(detail, routine=name, trigger_kind=kind)
        assert detail == listed


def test_run_view_is_the_one_renderer_and_leaves_a_rendered_run_alone() -> None:
    row = {"run_id": "01A", "routine_id": "r", "trigger_kind": "schedule", "scheduled_at_ms": 1_767_225_600_000,
           "started_at_ms": 1_767_225_600_500, "finished_at_ms": None, "attempt": 2, "status": "failed",
           "reason": "boom", "trigger_payload": '{"a": [1]}', "skipped_times": "[1767225540000]", "skipped_count": 1,
           "created_at_ms": 1_767_225_600_000}
    view = views.run_view(row)
    assert view["scheduled_at"] == "2026-01-01T00:00:00+00:00" and view["started_at"] == "2026-01-01T00:00:00.500+00:00"
    assert view["trigger_payload"] == {"a": [1]} and view["skipped_times"] == ["2025-12-31T23:59:00+00:00"]
    assert views.run_view(view) == view  # a run the gateway already rendered (the loopback answer)


def test_scalar_trigger_payloads_round_trip_exactly(daemon) -> None:
    """A 20-digit integer payload used to reach SQLite as an int (OverflowError → 500)."""
    daemon.write("m.yaml", [_doc("m", {"kind": "manual"})])
    daemon.apply()
    c = daemon.client()
    for payload in (2**64, -(2**70), "plain", 1.5, True, [1, "a"], {"a": None}):
        r = c.post("/console/v1/routines/dispatch", json={"routine_id": "m", "trigger_payload": payload})
        assert r.status_code == 202, (payload, r.text)
        assert r.json()["trigger_payload"] == payload
        run_id = r.json()["run_id"]
        runs = c.get("/console/v1/routines/m/runs").json()["items"]
        assert next(x for x in runs if x["run_id"] == run_id)["trigger_payload"] == payload
