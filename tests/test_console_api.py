"""Console API routes over a real temp journal (SPEC §6).

The app here is the daemon's own `create_app(ctx)`, served in process, with a real SQLite journal and
the real reconcile/schedule/source code; only the gateway and scheduler are stubs (they are the
daemon's runtime, exercised end to end in test_console_e2e.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from palyra_ops import reconcile
from palyra_ops.clock import FakeClock, to_ms
from palyra_ops.context import DaemonContext
from palyra_ops.journal import open_journal
from palyra_ops.model import Resource
from palyra_ops.openapi import described_routes
from palyra_ops.server import create_app

TOKEN = "console-token"
NOW = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)


class StubGateway:
    """Records dispatches as accepted runs; decides approvals in the journal. No execution."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal
        self.calls: list[tuple[Any, ...]] = []

    async def dispatch(self, routine_id: str, *, trigger_kind: str = "manual", trigger_payload: Any = None,
                       dedupe_key: str | None = None, traceparent: str | None = None) -> dict[str, Any] | None:
        self.calls.append(("dispatch", routine_id, trigger_kind, trigger_payload, dedupe_key))
        run_id = self.journal.insert_run(routine_id=routine_id, trigger_kind=trigger_kind,
                                         trigger_payload=trigger_payload, dedupe_key=dedupe_key, status="accepted")
        return self.journal.get_run(run_id) if run_id else None

    async def decide_approval(self, approval_id: str, approve: bool, by: str) -> dict[str, Any]:
        self.calls.append(("decide", approval_id, approve, by))
        with self.journal.transaction() as c:
            self.journal.decide_approval(c, approval_id, "approved" if approve else "denied", by)
        return self.journal.get_approval(approval_id) or {}


class StubScheduler:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def status(self) -> dict[str, Any]:
        return {"last_tick": "2026-03-01T07:29:59+00:00", "due_backlog": 0, "running": 0}


class Api:
    """A synchronous face over httpx's ASGI transport (the project runs tests without pytest-asyncio)."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")

    def request(self, method: str, path: str, *, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.loop.run_until_complete(self.client.request(method, path, headers=headers, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Api, DaemonContext]]:
    clock = FakeClock(NOW)
    journal = open_journal(tmp_path / "journal.sqlite3", clock=clock)
    ctx = DaemonContext(journal=journal, clock=clock, config=None, token=TOKEN, internal_token="internal-secret",
                        gateway=StubGateway(journal), scheduler=StubScheduler(), started_at_ms=to_ms(NOW) - 60_000)
    api = Api(create_app(ctx))
    yield api, ctx
    api.close()
    journal.close()


def schedule_spec(cron: str = "0 9 * * *", tz: str = "Europe/Prague", **extra: Any) -> dict[str, Any]:
    return {"prompt": "Summarize", "trigger": {"kind": "schedule", "schedule": {"cron": cron, "timezone": tz}}, **extra}


def upsert(api: Api, name: str, spec: dict[str, Any] | None = None, **extra: Any) -> httpx.Response:
    return api.post("/console/v1/routines/upsert", {"name": name, "spec": spec or schedule_spec(), **extra})


def put_managed(ctx: DaemonContext, name: str, spec: dict[str, Any]) -> None:
    """A routine as apply leaves it: managed, applied_hash = hash."""
    res = Resource.from_spec("Routine", name, spec)
    with ctx.journal.transaction() as c:
        ctx.journal.put_resource(c, kind="Routine", name=name, body=res.body, hash=res.hash, managed=True,
                                 applied_hash=res.hash, source_file="team/sre.yaml")


def error_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    return body["error"]


# -- auth --------------------------------------------------------------------------------------------


def _concrete(path: str) -> str:
    return path.replace("{routine_id}", "daily").replace("{approval_id}", "01J0000000000000000000000A")


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in described_routes() if p.startswith("/console/v1/")])
def test_every_route_refuses_missing_and_wrong_token(env: tuple[Api, DaemonContext], method: str, path: str) -> None:
    api, ctx = env
    upsert(api, "daily")
    runs_before = ctx.journal.count_runs_by_status()
    serial_before = ctx.journal.serial()
    for token, message in ((None, "missing bearer token"), ("wrong", "invalid bearer token")):
        resp = api.request(method, _concrete(path), token=token, json={"enabled": False})
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == 'Bearer realm="palyra"'
        assert error_of(resp) == {"code": "unauthorized", "message": message}
    resp = api.request(method, _concrete(path), headers={"Authorization": f"Basic {TOKEN}"}, token=None)
    assert resp.status_code == 401
    assert ctx.journal.count_runs_by_status() == runs_before
    assert ctx.journal.serial() == serial_before


# -- upsert ------------------------------------------------------------------------------------------


def test_upsert_creates_unmanaged_routine_with_next_run_from_now(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    resp = upsert(api, "daily", description="Morning digest", labels={"team": "sre"})
    assert resp.status_code == 201
    view = resp.json()
    assert view["created"] is True
    assert (view["managed"], view["drift"], view["source_file"]) == (False, False, None)
    assert view["next_run_at"] == "2026-03-01T08:00:00+00:00"
    assert view["next_run_at_local"] == "2026-03-01T09:00:00+01:00"
    assert view["state"] == "Pending"
    assert view["description"] == "Morning digest"
    assert view["labels"] == {"team": "sre"}
    assert view["spec"]["policies"]["concurrency"] == "forbid"  # canonical: defaults filled
    assert ctx.scheduler.wakes == 1
    assert ctx.journal.serial() == 1
    # same body again: an update (200), nothing fires
    again = upsert(api, "daily", description="Morning digest", labels={"team": "sre"})
    assert again.status_code == 200 and again.json()["created"] is False
    assert ctx.journal.count_runs_by_status() == {}


def test_upsert_of_managed_routine_marks_drift(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    put_managed(ctx, "sre-report", schedule_spec())
    resp = upsert(api, "sre-report", schedule_spec(cron="30 9 * * *"))
    assert resp.status_code == 200
    view = resp.json()
    assert (view["managed"], view["drift"], view["source_file"]) == (True, True, "team/sre.yaml")
    assert view["schedule"] == {"cron": "30 9 * * *", "timezone": "Europe/Prague"}


def test_upsert_reports_every_error_as_validate_words_it(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    spec = {"prompt": "x", "policies": {"concurrency": "sometimes", "retry": {"max_attempts": 40}},
            "trigger": {"kind": "schedule", "schedule": {"cron": "0 9 * * *", "every": "5m"}}, "colour": "red"}
    resp = api.post("/console/v1/routines/upsert", {"name": "Bad_Name", "spec": spec, "owner": "me"})
    assert resp.status_code == 422
    err = error_of(resp)
    assert err["code"] == "invalid"
    assert err["message"] == "6 validation errors"
    details = {d["path"]: d["message"] for d in err["details"]}
    assert details == {
        "name": "'Bad_Name' is not a valid name (lowercase letters, digits, '.', '_' or '-', 1-63 characters, "
                "starting and ending with a letter or digit)",
        "owner": "unknown field (expected one of: name, spec, description, labels)",
        "spec.colour": details["spec.colour"],
        "spec.policies.concurrency": "'sometimes' is not one of allow, forbid, replace, queue_one",
        "spec.policies.retry.max_attempts": "40 is greater than the maximum of 16",
        "spec.trigger.schedule.every": "exactly one of cron, every, at is allowed, found cron, every",
    }
    assert details["spec.colour"].startswith("unknown field; expected one of the known fields: enabled, owner")
    assert ctx.journal.list_resources("Routine") == []
    assert ctx.journal.serial() == 0


def test_upsert_semantic_errors(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    spec = schedule_spec(cron="61 9 * * *", tz="Europe/Pragu",
                         quiet_hours={"start": "22:00", "end": "07:00", "timezone": "Mars/Base"},
                         delivery={"mode": "specific_channel", "channel": "sre-reports"})
    resp = upsert(api, "daily", spec)
    assert resp.status_code == 422
    assert error_of(resp)["details"] == [
        {"path": "spec.quiet_hours.timezone", "message": "unknown time zone 'Mars/Base'"},
        {"path": "spec.trigger.schedule.cron",
         "message": "'61 9 * * *' is not a valid cron expression: minute field '61' is out of range 0-59"},
        {"path": "spec.trigger.schedule.timezone", "message": "unknown time zone 'Europe/Pragu'"},
    ]
    # a good schedule but a channel that does not exist
    resp = upsert(api, "daily", schedule_spec(delivery={"mode": "specific_channel", "channel": "sre-reports"}))
    assert resp.status_code == 422
    assert error_of(resp)["details"] == [
        {"path": "spec.delivery.channel", "message": "no Channel named 'sre-reports' in the journal"}
    ]
    assert ctx.journal.serial() == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b"", "request body must be a JSON object"),
    ],
)
def test_bad_json_is_400(env: tuple[Api, DaemonContext], body: bytes, message: str) -> None:
    api, _ = env
    resp = api.post("/console/v1/routines/upsert", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert error_of(resp) == {"code": "bad_request", "message": message}


# -- list / get --------------------------------------------------------------------------------------


def test_list_paginates_and_filters(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    for name in ("e-five", "a-one", "c-three", "b-two", "d-four"):
        assert upsert(api, name).status_code == 201
    upsert(api, "hooked", {"prompt": "x", "channel": "cli:alice", "trigger": {"kind": "hook", "event": "deploy"}})
    reconcile.set_enabled(ctx.journal, "c-three", False)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/console/v1/routines", params=params).json()
        seen += [v["name"] for v in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a-one", "b-two", "c-three", "d-four", "e-five", "hooked"]
    assert pages == 3

    def names(**params: Any) -> list[str]:
        resp = api.get("/console/v1/routines", params=params)
        assert resp.status_code == 200, resp.text
        return [v["name"] for v in resp.json()["items"]]

    assert names(trigger_kind="hook") == ["hooked"]
    assert names(enabled="false") == ["c-three"]
    assert names(enabled="true", trigger_kind="schedule") == ["a-one", "b-two", "d-four", "e-five"]
    assert names(channel="cli:alice") == ["hooked"]
    assert api.get("/console/v1/routines", params={"limit": 6}).json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit: must be between 1 and 500, got 0"),
        ({"limit": "501"}, "limit: must be between 1 and 500, got 501"),
        ({"limit": "ten"}, "limit: 'ten' is not an integer"),
        ({"cursor": "garbage!"}, "cursor: not a cursor returned by this listing"),
        ({"enabled": "maybe"}, "enabled: 'maybe' is not a boolean (true or false)"),
        ({"trigger_kind": "cron"}, "trigger_kind: 'cron' is not one of schedule, hook, webhook, system_event, manual"),
    ],
)
def test_list_bad_parameters(env: tuple[Api, DaemonContext], params: dict[str, str], message: str) -> None:
    api, _ = env
    resp = api.get("/console/v1/routines", params=params)
    assert resp.status_code == 400
    assert error_of(resp) == {"code": "bad_request", "message": message}


def test_get_routine_and_unknown(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    upsert(api, "daily")
    run_id = ctx.journal.insert_run(routine_id="daily", trigger_kind="manual", status="succeeded",
                                    started_at_ms=to_ms(NOW), finished_at_ms=to_ms(NOW) + 1500, output="done")
    view = api.get("/console/v1/routines/daily").json()
    assert view["last_run"]["run_id"] == run_id
    assert view["last_run"]["finished_at"] == "2026-03-01T07:30:01.500+00:00"
    assert view["spec"]["prompt"] == "Summarize"
    resp = api.get("/console/v1/routines/nope")
    assert resp.status_code == 404
    assert error_of(resp) == {"code": "not_found", "message": "no routine 'nope'"}


# -- enable / delete ---------------------------------------------------------------------------------


def test_enable_disable_and_delete(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    upsert(api, "daily")
    view = api.post("/console/v1/routines/daily/enabled", {"enabled": False}).json()
    assert (view["enabled"], view["effective_enabled"], view["state"]) == (False, False, "Disabled")
    view = api.post("/console/v1/routines/daily/enabled", {"enabled": True}).json()
    assert (view["enabled"], view["state"], view["next_run_at"]) == (True, "Pending", "2026-03-01T08:00:00+00:00")
    for bad in ({"enabled": "yes"}, {}, {"enabled": True, "x": 1}):
        resp = api.post("/console/v1/routines/daily/enabled", bad)
        assert resp.status_code == 400
        assert error_of(resp)["message"] == 'body must be {"enabled": true} or {"enabled": false}'
    assert api.post("/console/v1/routines/nope/enabled", {"enabled": True}).status_code == 404

    resp = api.post("/console/v1/routines/daily/delete")
    assert resp.status_code == 200 and resp.json() == {"deleted": "daily", "managed": False}
    assert api.get("/console/v1/routines/daily").status_code == 404
    assert ctx.journal.get_job("daily") is None
    assert api.post("/console/v1/routines/daily/delete").status_code == 404


# -- runs and dispatch -------------------------------------------------------------------------------


def test_runs_newest_first_paginated_with_spec_fields(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    upsert(api, "daily")
    j = ctx.journal
    nominal = to_ms(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    ids = []
    for i in range(5):
        ctx.clock.advance(1000)
        ids.append(j.insert_run(routine_id="daily", trigger_kind="schedule", occurrence_key=f"daily|{nominal + i}",
                                scheduled_at_ms=nominal + i * 60_000, status="succeeded", reason="leftover",
                                started_at_ms=nominal + i * 60_000 + 5, finished_at_ms=nominal + i * 60_000 + 900))
    skipped = j.insert_run(routine_id="daily", trigger_kind="manual", scheduled_at_ms=nominal, status="throttled",
                           reason="cooldown", skipped_count=2, skipped_times=[nominal - 60_000, nominal])
    page = api.get("/console/v1/routines/daily/runs", params={"limit": 4}).json()
    assert [r["run_id"] for r in page["items"]] == [skipped, ids[4], ids[3], ids[2]]
    first = page["items"][0]
    assert first == {
        "run_id": skipped, "routine_id": "daily", "scheduled_at": None, "started_at": None, "finished_at": None,
        "attempt": 1, "status": "throttled", "reason": "cooldown", "trigger_kind": "manual", "trigger_payload": None,
        "dedupe_key": None, "first_run_id": None, "policy_rule": None, "delivery_status": None,
        "delivery_error": None, "skipped_count": 2,
        "skipped_times": ["2026-03-01T07:59:00+00:00", "2026-03-01T08:00:00+00:00"],
        "created_at": "2026-03-01T07:30:05+00:00", "output": None,
    }
    second = page["items"][1]
    assert (second["scheduled_at"], second["started_at"], second["finished_at"]) == (
        "2026-03-01T08:04:00+00:00", "2026-03-01T08:04:00.005+00:00", "2026-03-01T08:04:00.900+00:00")
    assert second["reason"] is None  # succeeded runs never carry a reason
    rest = api.get("/console/v1/routines/daily/runs", params={"limit": 4, "cursor": page["next_cursor"]}).json()
    assert [r["run_id"] for r in rest["items"]] == [ids[1], ids[0]]
    assert rest["next_cursor"] is None
    only = api.get("/console/v1/routines/daily/runs", params={"status": "throttled"}).json()
    assert [r["run_id"] for r in only["items"]] == [skipped]
    assert api.get("/console/v1/routines/nope/runs").status_code == 404


def test_dispatch(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    upsert(api, "daily")
    resp = api.post("/console/v1/routines/dispatch", {"routine_id": "daily", "trigger_payload": {"why": "test"},
                                                      "dedupe_key": "k1"})
    assert resp.status_code == 202
    run = resp.json()
    assert (run["routine_id"], run["status"], run["trigger_kind"], run["scheduled_at"]) == ("daily", "accepted", "manual", None)
    assert run["trigger_payload"] == {"why": "test"}
    assert ctx.gateway.calls == [("dispatch", "daily", "manual", {"why": "test"}, "k1")]
    dup = api.post("/console/v1/routines/dispatch", {"routine_id": "daily", "dedupe_key": "k1"})
    assert dup.status_code == 409 and error_of(dup)["code"] == "duplicate"
    resp = api.post("/console/v1/routines/dispatch", {"routine_id": "nope"})
    assert resp.status_code == 404 and error_of(resp) == {"code": "not_found", "message": "no routine 'nope'"}
    for body, message in (
        ({}, "routine_id: required (the routine's name)"),
        ({"routine_id": "daily", "trigger_kind": "cron"},
         "trigger_kind: 'cron' is not one of schedule, hook, webhook, system_event, manual"),
        ({"routine_id": "daily", "extra": 1},
         "unknown field 'extra' (expected routine_id, trigger_kind, trigger_payload, dedupe_key)"),
    ):
        resp = api.post("/console/v1/routines/dispatch", body)
        assert resp.status_code == 400 and error_of(resp)["message"] == message
    assert len(ctx.gateway.calls) == 2


# -- schedule preview --------------------------------------------------------------------------------


def test_schedule_preview_both_shapes(env: tuple[Api, DaemonContext]) -> None:
    api, _ = env
    expected = {
        "fire_times": ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
        "notes": ["2026-03-29: 02:30 does not exist in Europe/Prague (DST gap); fires at 03:00+02:00"],
    }
    a = api.post("/console/v1/routines/schedule-preview",
                 {"expr": "30 2 * * *", "timezone": "Europe/Prague", "from": "2026-03-28T00:00:00Z", "count": 3})
    b = api.post("/console/v1/routines/schedule-preview",
                 {"schedule": {"cron": "30 2 * * *", "timezone": "Europe/Prague"}, "from": "2026-03-28T00:00:00Z", "count": 3})
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json() == expected
    skip = api.post("/console/v1/routines/schedule-preview",
                    {"expr": "30 2 * * *", "timezone": "Europe/Prague", "from": "2026-03-28T00:00:00Z", "count": 2,
                     "dst": {"gap": "skip"}}).json()
    assert skip["fire_times"] == ["2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00"]
    every = api.post("/console/v1/routines/schedule-preview", {"schedule": {"every": "15m"}, "count": 2}).json()
    assert every["fire_times"] == ["2026-03-01T07:45:00+00:00", "2026-03-01T08:00:00+00:00"]  # from now (FakeClock)


def test_schedule_preview_errors(env: tuple[Api, DaemonContext]) -> None:
    api, _ = env
    resp = api.post("/console/v1/routines/schedule-preview", {"expr": "61 * * * *"})
    assert resp.status_code == 422
    err = error_of(resp)
    assert err["code"] == "invalid"
    assert err["details"] == [{"path": "expr", "message": err["details"][0]["message"]}]
    assert "'61 * * * *' is not a valid cron expression" in err["details"][0]["message"]
    for body, message in (
        ({}, "either schedule or expr is required"),
        ({"schedule": {"cron": "* * * * *", "every": "1m"}}, "schedule: exactly one of cron, every, at is required"),
        ({"expr": "* * * * *", "count": 0}, "count: must be an integer between 1 and 100"),
        ({"expr": "* * * * *", "from": "2026-03-01T00:00:00"}, "from: '2026-03-01T00:00:00' has no UTC offset"),
    ):
        resp = api.post("/console/v1/routines/schedule-preview", body)
        assert resp.status_code == 400, body
        assert error_of(resp) == {"code": "bad_request", "message": message}


# -- cron status, approvals, system status ------------------------------------------------------------


def test_cron_status_states(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    upsert(api, "pending")
    upsert(api, "due", schedule_spec(cron="0 8 * * *", tz="utc"))
    upsert(api, "running", schedule_spec(cron="*/5 * * * *", tz="utc"))
    upsert(api, "off", schedule_spec(enabled=False))
    upsert(api, "manual-one", {"prompt": "x", "trigger": {"kind": "manual"}})
    ctx.journal.insert_run(routine_id="running", trigger_kind="schedule", status="running", started_at_ms=to_ms(NOW))
    ctx.clock.advance(31 * 60_000)  # 08:01 UTC: "due" (08:00) is now due, "pending" (08:00 UTC = 09:00 Prague) too
    ctx.journal.update_job("pending", next_run_at_unix_ms=to_ms(datetime(2026, 3, 2, 8, 0, tzinfo=UTC)))
    data = api.get("/console/v1/cron/status").json()
    assert data["now"] == "2026-03-01T08:01:00+00:00"
    rows = {r["routine_id"]: r for r in data["items"]}
    assert list(rows) == ["due", "off", "pending", "running"]  # schedule routines only, by name
    assert {k: r["state"] for k, r in rows.items()} == {
        "due": "Due", "off": "Disabled", "pending": "Pending", "running": "Running"}
    assert (rows["pending"]["next_run_at"], rows["pending"]["next_run_at_local"]) == (
        "2026-03-02T08:00:00+00:00", "2026-03-02T09:00:00+01:00")
    assert rows["due"]["schedule"] == "0 8 * * *"
    assert rows["pending"]["timezone"] == "Europe/Prague"


def test_approvals_list_and_decide(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    upsert(api, "daily")
    with ctx.journal.transaction() as c:
        a1 = ctx.journal.add_approval(c, routine_id="daily", kind="before_enable")
        a2 = ctx.journal.add_approval(c, routine_id="daily", kind="before_first_run", run_id="01RUN")
    items = api.get("/console/v1/approvals").json()["items"]
    assert [(a["approval_id"], a["kind"], a["state"], a["run_id"]) for a in items] == [
        (a1, "before_enable", "pending", None), (a2, "before_first_run", "pending", "01RUN")]
    assert items[0]["created_at"] == "2026-03-01T07:30:00+00:00"
    view = api.post(f"/console/v1/approvals/{a1}/approve").json()
    assert (view["state"], view["decided_by"]) == ("approved", "console")
    view = api.post(f"/console/v1/approvals/{a2}/deny").json()
    assert view["state"] == "denied"
    assert ctx.gateway.calls == [("decide", a1, True, "console"), ("decide", a2, False, "console")]
    assert api.get("/console/v1/approvals").json()["items"] == []
    assert len(api.get("/console/v1/approvals", params={"state": "all"}).json()["items"]) == 2
    resp = api.post("/console/v1/approvals/nope/approve")
    assert resp.status_code == 404 and error_of(resp) == {"code": "not_found", "message": "no approval 'nope'"}
    assert api.get("/console/v1/approvals", params={"state": "maybe"}).status_code == 400


def test_system_status(env: tuple[Api, DaemonContext]) -> None:
    api, ctx = env
    upsert(api, "daily")
    ctx.tasks = {"memory.retention": {"last_run": "2026-03-01T07:25:00+00:00", "ok": True}}
    data = api.get("/console/v1/system/status").json()
    assert data["scheduler"] == StubScheduler().status()
    assert data["watcher"] == {"enabled": False}
    assert data["tasks"] == ctx.tasks
    assert data["daemon"]["started_at"] == "2026-03-01T07:29:00+00:00"
    assert data["daemon"]["uptime_seconds"] == 60.0
    assert data["journal"]["serial"] == 1
    assert data["journal"]["lineage"] == ctx.journal.lineage()
    assert data["last_apply"] is None


def test_internal_token_is_accepted_like_the_server_middleware(env: tuple[Api, DaemonContext]) -> None:
    api, _ = env
    assert api.get("/console/v1/routines", token="internal-secret").status_code == 200


def test_json_body_for_enable_in_text_form_is_refused(env: tuple[Api, DaemonContext]) -> None:
    api, _ = env
    upsert(api, "daily")
    resp = api.post("/console/v1/routines/daily/enabled", content=json.dumps(True).encode())
    assert resp.status_code == 400
    assert error_of(resp)["message"] == "request body must be a JSON object"


def test_openapi_is_served_behind_the_token(env: tuple[Api, DaemonContext]) -> None:
    from palyra_ops.openapi import build_openapi

    api, _ = env
    assert api.get("/console/v1/openapi.json").json() == json.loads(json.dumps(build_openapi()))
    assert api.get("/console/v1/openapi.json", token=None).status_code == 401
