"""Every route of the daemon's app refuses a missing or wrong token (SPEC §6), on the real daemon.

The route list comes from the app itself (`create_app(...).routes`), so a route added later by any
area is covered without editing this file.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from palyra_ops.clock import SystemClock
from palyra_ops.context import DaemonContext
from palyra_ops.journal import open_journal
from palyra_ops.server import PUBLIC_PATHS, create_app


def app_routes(tmp: Path) -> list[tuple[str, str]]:
    with open_journal(tmp / "routes.sqlite3") as j:
        ctx = DaemonContext(journal=j, clock=SystemClock(), config=None, token="t", internal_token="i")
        app = create_app(ctx)
        out: list[tuple[str, str]] = []

        def walk(routes, prefix: str = "") -> None:
            for r in routes:
                if isinstance(r, Mount):
                    walk(r.routes, prefix + r.path)
                elif isinstance(r, Route):
                    path = re.sub(r"\{[^}:]+(:[^}]+)?\}", "x", prefix + r.path)
                    for m in sorted(r.methods or {"GET"}):
                        if m != "HEAD":
                            out.append((m, path))

        walk(app.routes)
    return out


def test_every_route_but_healthz_refuses_missing_or_wrong_tokens(daemon, tmp_path) -> None:
    routes = app_routes(tmp_path)
    paths = {p for _, p in routes}
    for required in ("/healthz", "/metrics", "/gateway/v1/messages", "/webhooks/x", "/console/v1/events/x"):
        assert required in paths
    assert len(routes) >= 5
    with httpx.Client(base_url=daemon.base_url, timeout=10) as c:
        for method, path in routes:
            if path in PUBLIC_PATHS:
                assert c.request(method, path).status_code == 200
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {daemon.token}"},
                            {"Authorization": f"Bearer {daemon.token}x"}):
                r = c.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")
        # unknown routes are not a way around it either
        assert c.get("/nope").status_code == 401


def test_errors_are_json_with_the_right_status(daemon) -> None:
    c = daemon.client()
    r = c.get("/nope")
    assert r.status_code == 404 and r.json() == {"error": {"code": "not_found", "message": "no route /nope"}}
    r = c.get("/gateway/v1/messages")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = c.post("/gateway/v1/messages", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = c.post("/gateway/v1/messages", json={"text": "hi"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "message needs a principal (e.g. user:alice)"


def test_healthz_and_metrics(daemon) -> None:
    assert httpx.get(daemon.base_url + "/healthz").json() == {"status": "ok"}
    text = daemon.client().get("/metrics").text
    for name in ("palyra_runs_total", "palyra_dispatch_lag_seconds_bucket", "palyra_due_backlog",
                 "palyra_gate_outcomes_total"):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text


@pytest.mark.parametrize("principal", ["system:daemon"])
def test_spoofed_system_daemon_is_refused_with_the_console_token(daemon, principal) -> None:
    c = daemon.client()
    r = c.post("/gateway/v1/messages", json={"principal": principal, "device_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                                             "routine_id": "x", "text": "hi"})
    assert r.status_code == 403
    assert r.json()["error"] == {"code": "forbidden",
                                 "message": "system:daemon messages need the daemon's internal credential"}
    # a user message goes through the same pipeline and gets the backend's answer
    r = c.post("/gateway/v1/messages", json={"principal": "user:alice", "text": "hello"})
    assert r.status_code == 200 and r.json()["output"] == "hello [trigger=message]" and r.json()["received_at_ms"] > 0
